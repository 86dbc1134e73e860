//! HTTP source: `POST /v1/events` turns application events into canonical
//! events and appends them to the log.
//!
//! Answers (see ARCHITECTURE.md, "Ingest contract"):
//! 202 after Redis acknowledged every event; 400 naming the element and field
//! (or the `Idempotency-Key` header, or a body that is not valid gzip);
//! 401 no/unknown token; 403 topic not allowed for the source; 408 body too
//! slow; 413 body (also decompressed) or batch too large; 415 content type or
//! encoding; 503 + Retry-After while Redis is down or slow (outcome unknown:
//! retry with the same ids or `Idempotency-Key`).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Map, Value};

use switchyard_core::event::{self, ConsentState, Event, Op};
use switchyard_core::token::{self, TokenDigest};

pub mod cloudevents;
mod config;
pub mod ingest;
pub mod segment;
pub use config::{
    validate_write_keys, CloudEventsConfig, HttpSourceConfig, SegmentAccountId, SegmentConfig,
};
pub use ingest::{json_response, read_body, reject, Ingest, IngestLimits};

/// A rejected request: status and a message that names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub field: Option<String>,
    pub message: String,
}

impl Reject {
    pub fn new(status: u16, field: Option<String>, message: impl Into<String>) -> Self {
        Reject {
            status,
            field,
            message: message.into(),
        }
    }
    pub(crate) fn bad(field: String, message: impl Into<String>) -> Self {
        Reject::new(400, Some(field), message)
    }
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("error".into(), Value::String(self.message.clone()));
        if let Some(f) = &self.field {
            m.insert("field".into(), Value::String(f.clone()));
        }
        Value::Object(m)
    }
}

/// One message of another format (CloudEvents, Segment) turned into a
/// canonical event, with the label its errors use (`event`, `events[i]`,
/// `batch[i]`…) and the field that names its topic (for a 403).
#[derive(Debug)]
pub struct Converted {
    pub label: String,
    pub topic_field: String,
    pub event: Event,
    /// Whether the id came from the client (so a retry may repeat it) and
    /// must be checked against the idempotency window.
    pub checked: bool,
}

/// Token → source mapping (the check is [`switchyard_core::token::check`], shared with
/// the admin routes).
pub struct Auth {
    sources: Vec<AuthSource>,
    /// Segment write keys: (key, index into `sources`).
    write_keys: Vec<(TokenDigest, usize)>,
}

pub struct AuthSource {
    name: String,
    token: TokenDigest,
    topics: GlobSet,
    cloudevents: CloudEventsConfig,
    segment: Option<SegmentConfig>,
    /// `sources.<name>.topic_template`.
    topic_template: Option<crate::cdc_rules::Template>,
}

impl Auth {
    /// The tokens and topics of every HTTP source among `sources`.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a String, &'a crate::SourceConfig)>,
    ) -> anyhow::Result<Auth> {
        use anyhow::Context;
        let http = sources.into_iter().filter_map(|(n, s)| match s {
            crate::SourceConfig::Http(h) => Some((n, h)),
            _ => None,
        });
        let mut sources = Vec::new();
        let mut write_keys = Vec::new();
        let mut seen_keys = std::collections::HashMap::new();
        for (name, h) in http {
            let token = h
                .load_token()
                .with_context(|| format!("reading the token of source `{name}`"))?;
            if let Some(key) = h
                .load_write_key()
                .with_context(|| format!("reading the Segment write key of source `{name}`"))?
            {
                // One key, one source: otherwise which source a request is
                // from would depend on the order of the config.
                if let Some(other) = seen_keys.insert(key.clone(), name.clone()) {
                    anyhow::bail!(
                        "sources.{name}.segment.write_key: the same write key as sources.{other}.segment"
                    );
                }
                write_keys.push((TokenDigest::of(&key), sources.len()));
            }
            let mut b = GlobSetBuilder::new();
            for t in &h.topics {
                b.add(Glob::new(t).with_context(|| format!("sources.{name}.topics: `{t}`"))?);
            }
            sources.push(AuthSource {
                name: name.clone(),
                token: TokenDigest::of(&token),
                topics: b.build()?,
                cloudevents: h.cloudevents.clone(),
                segment: h.segment.clone(),
                topic_template: h
                    .topic_template
                    .as_deref()
                    .map(crate::cdc_rules::Template::parse)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("sources.{name}.topic_template: {e}"))?,
            });
        }
        Ok(Auth {
            sources,
            write_keys,
        })
    }

    /// The source whose Segment write key is the Basic-auth user name of
    /// `authorization` (the header value).
    pub fn authenticate_write_key(
        &self,
        authorization: Option<&str>,
    ) -> Result<&AuthSource, Reject> {
        match token::check_basic_user(authorization, self.write_keys.iter().map(|(k, _)| k)) {
            Ok(i) => Ok(&self.sources[self.write_keys[i].1]),
            Err(e) => Err(Reject::new(401, None, e.to_string())),
        }
    }

    /// The source whose token matches `authorization` (the header value).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&AuthSource, Reject> {
        match token::check(authorization, self.sources.iter().map(|s| &s.token)) {
            Ok(i) => Ok(&self.sources[i]),
            Err(e) => Err(Reject::new(401, None, e.to_string())),
        }
    }
}

impl AuthSource {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Whether this source may publish to `topic` (`sources.<name>.topics`).
    pub fn allows(&self, topic: &str) -> bool {
        self.topics.is_match(topic)
    }
    /// `sources.<name>.cloudevents`.
    pub fn cloudevents(&self) -> &CloudEventsConfig {
        &self.cloudevents
    }
    /// `sources.<name>.segment` (set: this source authenticated with it).
    pub fn segment(&self) -> Option<&SegmentConfig> {
        self.segment.as_ref()
    }

    /// `sources.<name>.topic_template`: the event's topic made from its
    /// fields (`customer.{attributes.banner}.{topic}`). A field that is
    /// missing (or null), or whose value would make an invalid topic, is a
    /// 400 naming it (`events[i].attributes.banner`); nothing is written.
    pub fn apply_topic_template(&self, ev: &mut Event, label: &str) -> Result<(), Reject> {
        let Some(tpl) = &self.topic_template else {
            return Ok(());
        };
        let setting = format!("sources.{}.topic_template", self.name);
        let mut values: Vec<(&str, Value)> = Vec::new();
        for name in tpl.columns() {
            let v = match name {
                "account_id" => Some(Value::String(ev.account_id.clone())),
                "topic" => Some(Value::String(ev.topic.clone())),
                _ => match (name.strip_prefix("attributes."), name.strip_prefix("data.")) {
                    (Some(a), _) => ev.attributes.get(a).cloned().map(Value::String),
                    (_, Some(path)) => ev
                        .data
                        .as_ref()
                        .and_then(|d| path.split('.').try_fold(d, |v, k| v.get(k)))
                        .filter(|v| !v.is_null())
                        .cloned(),
                    _ => None,
                },
            };
            match v {
                Some(Value::String(s)) if s.is_empty() => {
                    return Err(Reject::bad(
                        format!("{label}.{name}"),
                        format!("must not be empty: {setting} makes the topic from it"),
                    ))
                }
                Some(v) => values.push((name, v)),
                None => {
                    return Err(Reject::bad(
                        format!("{label}.{name}"),
                        format!("is required: {setting} makes the topic from it"),
                    ))
                }
            }
        }
        let vars = crate::cdc_rules::Vars {
            op: ev.op,
            table: "",
            schema: "",
            source: &self.name,
        };
        let lookup = |c: &str| values.iter().find(|(n, _)| *n == c).map(|(_, v)| v);
        let topic = tpl.render(&vars, &lookup);
        if event::valid_topic(&topic) {
            ev.topic = topic;
            return Ok(());
        }
        // Name the field whose value has a character no topic may hold (or
        // is empty); for a topic that is only too long, the first field.
        let bad = values
            .iter()
            .find(|(_, v)| match v {
                Value::String(s) => s.is_empty() || !s.chars().all(event::topic_char),
                other => !other.to_string().chars().all(event::topic_char),
            })
            .or(values.first())
            .map(|(n, _)| format!("{label}.{n}"))
            .unwrap_or_else(|| format!("{label}.topic"));
        Err(Reject::bad(
            bad,
            format!(
                "its value would make an invalid topic through {setting} (topics {})",
                event::TOPIC_RULE
            ),
        ))
    }
}

/// Body formats `POST /v1/events` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    NdJson,
}

impl BodyFormat {
    pub fn from_content_type(ct: Option<&str>) -> Result<BodyFormat, Reject> {
        let ct = ct.unwrap_or("");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Ok(BodyFormat::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(BodyFormat::NdJson),
            "" => Err(Reject::new(415, None, "missing Content-Type; use application/json or application/x-ndjson")),
            other => Err(Reject::new(
                415,
                None,
                format!("unsupported Content-Type `{other}`; use application/json or application/x-ndjson"),
            )),
        }
    }
}

/// `Content-Encoding` of a `POST /v1/events` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    /// From the `Content-Encoding` header value (all of its lines joined
    /// with `,`; empty when absent). `identity` and `gzip` (`x-gzip`), once;
    /// anything else is 415 naming the coding.
    pub fn from_header(value: &str) -> Result<Encoding, Reject> {
        let mut out = Encoding::Identity;
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            match coding.to_ascii_lowercase().as_str() {
                "identity" => {}
                "gzip" | "x-gzip" if out == Encoding::Identity => out = Encoding::Gzip,
                _ => {
                    return Err(Reject::new(
                        415,
                        None,
                        format!(
                            "unsupported Content-Encoding `{}`; send the body with `gzip` \
                             (once) or uncompressed",
                            coding.escape_default()
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// Undo the body's `Content-Encoding`. A gzip body is decompressed as a
/// stream that stops at `max` bytes: `server.max_body` limits the
/// decompressed size (413 above it), whatever the compressed size was.
pub fn decode_body(encoding: Encoding, body: Bytes, max: u64) -> Result<Bytes, Reject> {
    use std::io::Read;
    if encoding == Encoding::Identity {
        return Ok(body);
    }
    let not_gzip = |e: String| {
        Reject::new(
            400,
            None,
            format!("body is not valid gzip (Content-Encoding: gzip): {e}"),
        )
    };
    if body.is_empty() {
        return Err(not_gzip("the body is empty".into()));
    }
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max as usize));
    flate2::read::MultiGzDecoder::new(&body[..])
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| not_gzip(e.to_string()))?;
    if out.len() as u64 > max {
        return Err(Reject::new(
            413,
            None,
            format!("body exceeds {max} bytes once decompressed (server.max_body)"),
        ));
    }
    Ok(Bytes::from(out))
}

/// The `Idempotency-Key` request header: 1-255 visible ASCII characters.
pub fn idempotency_key(value: Option<&[u8]>) -> Result<Option<String>, Reject> {
    let Some(v) = value else { return Ok(None) };
    if v.is_empty() || v.len() > 255 || !v.iter().all(|b| b.is_ascii_graphic()) {
        return Err(Reject::new(
            400,
            Some("Idempotency-Key".into()),
            "must be 1-255 visible ASCII characters (no spaces or control characters)",
        ));
    }
    Ok(Some(String::from_utf8_lossy(v).into_owned()))
}

/// The id of the `index`-th element (0 for a single object) of a request
/// from `source` with `Idempotency-Key: key`, for an element without an id:
/// a UUIDv5 of the three, so a retry of the same body gets the same ids and
/// is deduplicated like ids the client sent.
pub fn idempotent_id(source: &str, key: &str, index: usize) -> String {
    /// The namespace of these UUIDv5s (random, fixed forever: changing it
    /// would change every derived id).
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5d1c_3a6e_94b2_4f0e_8c77_2e1b_9a40_d6f3);
    // Length-prefixed source, so (source, key, index) → name is one-to-one.
    let name = format!("{}:{source}{key}/{index}", source.len());
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// Split a body into JSON values, each with the label used in error messages.
/// A single JSON object is labelled `event`; array and NDJSON elements
/// `events[i]`.
pub fn split_body(
    format: BodyFormat,
    body: &Bytes,
    max_batch: usize,
) -> Result<Vec<(String, Value)>, Reject> {
    let items: Vec<(String, Value)> = match format {
        BodyFormat::Json => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| Reject::new(400, None, format!("body is not valid JSON: {e}")))?;
            match v {
                Value::Array(a) => a
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("events[{i}]"), v))
                    .collect(),
                v @ Value::Object(_) => vec![("event".to_string(), v)],
                _ => {
                    return Err(Reject::new(
                        400,
                        None,
                        "body must be a JSON object or an array of objects",
                    ))
                }
            }
        }
        BodyFormat::NdJson => {
            let mut out = Vec::new();
            for (n, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let i = out.len();
                let v: Value = serde_json::from_slice(line).map_err(|e| {
                    Reject::new(
                        400,
                        Some(format!("events[{i}]")),
                        format!("line {} is not valid JSON: {e}", n + 1),
                    )
                })?;
                out.push((format!("events[{i}]"), v));
            }
            out
        }
    };
    if items.is_empty() {
        return Err(Reject::new(400, None, "no events in the body"));
    }
    if items.len() > max_batch {
        return Err(Reject::new(
            413,
            None,
            format!(
                "batch of {} events exceeds the limit of {max_batch} (server.max_batch)",
                items.len()
            ),
        ));
    }
    Ok(items)
}

const FIELDS: &[&str] = &[
    "id",
    "topic",
    "op",
    "account_id",
    "key",
    "before",
    "after",
    "data",
    "changed",
    "occurred_at",
    "consent",
    "attributes",
];

/// Build a canonical event from one posted JSON object.
pub fn to_event(
    label: &str,
    v: Value,
    source: &str,
    trace: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Event, Reject> {
    let Value::Object(mut m) = v else {
        return Err(Reject::bad(
            label.to_string(),
            "each event must be a JSON object",
        ));
    };
    let f = |name: &str| format!("{label}.{name}");
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Reject::bad(
            f(k),
            format!("unknown field `{k}` (allowed: {})", FIELDS.join(", ")),
        ));
    }

    let topic = req_string(&mut m, "topic", &f("topic"))?;
    if topic.len() > 256
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(Reject::bad(
            f("topic"),
            "must be 1-256 characters of letters, digits, '.', '_' or '-'",
        ));
    }
    let account_id = match m.remove("account_id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => {
            identifier(&s, || f("account_id"))?;
            s
        }
        // One account, one text: only integers, in their decimal form (`1`,
        // `-7`). `1.0` or `1e0` would be other accounts than `1`, and big
        // integers beyond 64 bits are not exact: both are refused.
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.to_string(),
            (_, Some(i)) => i.to_string(),
            _ => {
                return Err(Reject::bad(
                    f("account_id"),
                    format!(
                        "`{n}` is not an integer: a numeric account id must be an integer \
                         between -2^63 and 2^64-1 (send any other id as a string)"
                    ),
                ))
            }
        },
        Some(Value::String(_)) => {
            return Err(Reject::bad(f("account_id"), "must be 1-256 characters"))
        }
        Some(_) => {
            return Err(Reject::bad(
                f("account_id"),
                "must be a string or an integer",
            ))
        }
        None => {
            return Err(Reject::bad(
                f("account_id"),
                "is required (the partition key)",
            ))
        }
    };
    let id = match m.remove("id") {
        None | Some(Value::Null) => event::new_id(),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c)) =>
        {
            s
        }
        Some(_) => {
            return Err(Reject::bad(
                f("id"),
                "must be 1-128 characters of letters, digits, '.', '_', ':' or '-'",
            ))
        }
    };
    let op = match m.remove("op") {
        None | Some(Value::Null) => Op::Event,
        Some(Value::String(s)) => Op::parse(&s).ok_or_else(|| {
            let all: Vec<&str> = Op::ALL.iter().map(|o| o.as_str()).collect();
            Reject::bad(
                f("op"),
                format!("`{s}` is not an op (one of: {})", all.join(", ")),
            )
        })?,
        Some(_) => return Err(Reject::bad(f("op"), "must be a string")),
    };
    let key = non_null(m.remove("key"));
    match &key {
        Some(Value::String(k)) => identifier(k, || f("key"))?,
        Some(Value::Object(cols)) => {
            for (col, v) in cols {
                identifier(col, || f("key"))?;
                if let Value::String(v) = v {
                    identifier(v, || format!("{label}.key.{col}"))?;
                }
            }
        }
        _ => {}
    }
    let before = opt_object(&mut m, "before", &f("before"))?;
    let after = opt_object(&mut m, "after", &f("after"))?;
    let data = non_null(m.remove("data"));
    let changed = match m.remove("changed") {
        None | Some(Value::Null) => {
            // Computed field names are identifiers like a given `changed`.
            let changed = diff_fields(before.as_ref(), after.as_ref());
            for c in &changed {
                let side = match &after {
                    Some(Value::Object(a)) if a.contains_key(c) => "after",
                    _ => "before",
                };
                identifier(c, || f(side))?;
            }
            changed
        }
        Some(Value::Array(a)) => a
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => {
                    identifier(&s, || format!("{label}.changed[{i}]"))?;
                    Ok(s)
                }
                _ => Err(Reject::bad(
                    format!("{label}.changed[{i}]"),
                    "must be a string",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Reject::bad(f("changed"), "must be an array of field names")),
    };
    let occurred_at = match m.remove("occurred_at") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => {
            let t = DateTime::parse_from_rfc3339(&s)
                .map_err(|e| {
                    Reject::bad(
                        f("occurred_at"),
                        format!("`{s}` is not an RFC 3339 time: {e}"),
                    )
                })?
                .with_timezone(&Utc);
            // The event carries the time in UTC, and RFC 3339 has only
            // years 0000-9999: `9999-12-31T23:59:59-01:00` would become
            // year 10000, which no consumer or module could parse back.
            if !(0..=9999).contains(&t.year()) {
                return Err(Reject::bad(
                    f("occurred_at"),
                    format!("`{s}` is outside the years 0000-9999 once converted to UTC"),
                ));
            }
            t
        }
        Some(_) => return Err(Reject::bad(f("occurred_at"), "must be an RFC 3339 string")),
    };
    let consent = match m.remove("consent") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(c)) => c
            .into_iter()
            .map(|(ch, v)| match v.as_str().and_then(ConsentState::parse) {
                _ if control_char(&ch).is_some() => Err(control_reject(&ch, f("consent"))),
                Some(s) => Ok((ch, s)),
                None => Err(Reject::bad(
                    format!("{label}.consent.{ch}"),
                    "must be \"granted\", \"denied\" or \"unknown\"",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(Reject::bad(
                f("consent"),
                "must be an object of channel → state",
            ))
        }
    };
    let attributes = match m.remove("attributes") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(a)) => a
            .into_iter()
            .map(|(k, v)| match v {
                _ if control_char(&k).is_some() => Err(control_reject(&k, f("attributes"))),
                Value::String(s) => Ok((k, s)),
                _ => Err(Reject::bad(
                    format!("{label}.attributes.{k}"),
                    "must be a string",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Reject::bad(f("attributes"), "must be an object of strings")),
    };
    Ok(Event {
        id,
        topic,
        source: source.to_string(),
        op,
        account_id,
        key,
        before,
        after,
        data,
        changed,
        occurred_at,
        ingested_at: now,
        commit: None,
        trace: trace
            .filter(|t| event::valid_traceparent(t))
            .map(str::to_string),
        consent,
        attributes,
    })
}

/// The first control character in `s` (U+0000-U+001F, U+007F-U+009F), with
/// its byte offset.
pub fn control_char(s: &str) -> Option<(usize, char)> {
    s.char_indices().find(|(_, c)| c.is_control())
}

/// Identifiers (account ids, keys, field and channel names, attribute keys)
/// end up in log lines, Redis keys and vendors' URLs: control characters
/// (newline, NUL, ESC…) are refused with a 400 naming `field`.
fn identifier(s: &str, field: impl FnOnce() -> String) -> Result<(), Reject> {
    match control_char(s) {
        None => Ok(()),
        Some(_) => Err(control_reject(s, field())),
    }
}

fn control_reject(s: &str, field: String) -> Reject {
    let (at, c) = control_char(s).unwrap_or((0, '\0'));
    Reject::bad(
        field,
        format!(
            "must not contain control characters such as newline, NUL or ESC \
             (found U+{:04X} at byte {at})",
            c as u32
        ),
    )
}

fn req_string(m: &mut Map<String, Value>, name: &str, path: &str) -> Result<String, Reject> {
    match m.remove(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(Reject::bad(path.to_string(), "must not be empty")),
        Some(_) => Err(Reject::bad(path.to_string(), "must be a string")),
        None => Err(Reject::bad(path.to_string(), "is required")),
    }
}

fn opt_object(m: &mut Map<String, Value>, name: &str, path: &str) -> Result<Option<Value>, Reject> {
    match m.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(Reject::bad(
            path.to_string(),
            "must be a JSON object (the entity's fields)",
        )),
    }
}

fn non_null(v: Option<Value>) -> Option<Value> {
    v.filter(|v| !v.is_null())
}

/// Field names whose values differ between `before` and `after`.
pub fn diff_fields(before: Option<&Value>, after: Option<&Value>) -> Vec<String> {
    let (Some(Value::Object(b)), Some(Value::Object(a))) = (before, after) else {
        return Vec::new();
    };
    let mut out: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Result<Event, Reject> {
        to_event("event", v, "web", None, Utc::now())
    }

    #[test]
    fn minimal_event() {
        let e = ev(json!({"topic": "customer.a.signup", "account_id": "42", "data": {"x": 1}}))
            .unwrap();
        assert_eq!(e.op, Op::Event);
        assert_eq!(e.source, "web");
        assert_eq!(e.data, Some(json!({"x": 1})));
        assert!(uuid::Uuid::parse_str(&e.id).unwrap().get_version_num() == 7);
        assert_eq!(e.occurred_at, e.ingested_at);
    }

    #[test]
    fn client_id_is_kept_and_integers_are_account_ids() {
        let e = ev(json!({"id": "ord-1", "topic": "t", "account_id": 42})).unwrap();
        assert_eq!(e.id, "ord-1");
        assert_eq!(e.account_id, "42");
    }

    /// Found by a hostile client: `1.0`, `1e0` and `1` were three accounts.
    #[test]
    fn numeric_account_ids_must_be_integers() {
        for (v, want) in [
            (json!(1), "1"),
            (json!(-7), "-7"),
            (json!(u64::MAX), "18446744073709551615"),
            (json!(i64::MIN), "-9223372036854775808"),
        ] {
            let e = ev(json!({"topic": "t", "account_id": v})).unwrap();
            assert_eq!(e.account_id, want);
        }
        for text in ["1.0", "1e0", "1.5", "-0.0", "18446744073709551616", "1E2"] {
            let v: Value =
                serde_json::from_str(&format!(r#"{{"topic":"t","account_id":{text}}}"#)).unwrap();
            let r = ev(v).unwrap_err();
            assert_eq!(r.status, 400, "{text}");
            assert_eq!(r.field.as_deref(), Some("event.account_id"), "{text}");
            assert!(r.message.contains("is not an integer"), "{text}: {r:?}");
        }
    }

    /// Found by a hostile client: account ids with newline, NUL or ESC were
    /// accepted, and forged lines in the text log.
    #[test]
    fn control_characters_in_identifiers_are_refused() {
        let base = || json!({"topic": "t", "account_id": "1"});
        let with = |k: &str, v: Value| {
            let mut e = base();
            e[k] = v;
            e
        };
        let cases = [
            (with("account_id", json!("42\nforged")), "event.account_id"),
            (with("account_id", json!("a\u{0}")), "event.account_id"),
            (with("account_id", json!("\u{1b}[31m")), "event.account_id"),
            (with("account_id", json!("x\u{7f}")), "event.account_id"),
            (with("account_id", json!("x\u{9b}")), "event.account_id"),
            (with("key", json!("k\r")), "event.key"),
            (with("key", json!({"id\n": 1})), "event.key"),
            (with("key", json!({"id": "1\t"})), "event.key.id"),
            (with("changed", json!(["a", "b\n"])), "event.changed[1]"),
            (
                with("consent", json!({"email\n": "granted"})),
                "event.consent",
            ),
            (
                with("attributes", json!({"a\u{1b}": "x"})),
                "event.attributes",
            ),
        ];
        for (v, field) in cases {
            let r = ev(v.clone()).unwrap_err();
            assert_eq!(r.status, 400, "{v}");
            assert_eq!(r.field.as_deref(), Some(field), "{v} → {r:?}");
            assert!(r.message.contains("control characters"), "{r:?}");
        }
        // Values that are data, not identifiers, may hold anything.
        let e = ev(
            json!({"topic": "t", "account_id": "ü 1", "data": {"note": "a\nb"},
            "attributes": {"k": "line\nbreak"}, "key": {"id": 5}}),
        )
        .unwrap();
        assert_eq!(e.account_id, "ü 1");
    }

    #[test]
    fn content_encoding_gzip_identity_and_others() {
        use std::io::Write;
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(b).unwrap();
            Bytes::from(e.finish().unwrap())
        };
        for h in ["", "identity", " Identity ", "identity, identity"] {
            assert_eq!(
                Encoding::from_header(h).unwrap(),
                Encoding::Identity,
                "{h:?}"
            );
        }
        for h in ["gzip", "GZIP", "x-gzip", "identity, gzip", "gzip,identity"] {
            assert_eq!(Encoding::from_header(h).unwrap(), Encoding::Gzip, "{h:?}");
        }
        for (h, named) in [
            ("br", "`br`"),
            ("deflate", "`deflate`"),
            ("gzip, gzip", "`gzip`"),
            ("gzip, br", "`br`"),
        ] {
            let r = Encoding::from_header(h).unwrap_err();
            assert_eq!(r.status, 415, "{h}");
            assert!(r.message.contains(named), "{h}: {r:?}");
        }
        let body = br#"[{"topic":"t","account_id":"1"}]"#;
        assert_eq!(
            decode_body(Encoding::Gzip, gz(body), 1000).unwrap(),
            &body[..]
        );
        // Two gzip members, one after the other, are one body (RFC 1952).
        let mut two = gz(b"[{\"topic\":\"t\",").to_vec();
        two.extend_from_slice(&gz(b"\"account_id\":\"1\"}]"));
        assert_eq!(
            decode_body(Encoding::Gzip, Bytes::from(two), 1000).unwrap(),
            &body[..]
        );
        assert_eq!(
            decode_body(Encoding::Identity, Bytes::from_static(body), 1).unwrap(),
            &body[..]
        );
        for bad in [Bytes::from_static(body), Bytes::new(), gz(body).slice(..20)] {
            let r = decode_body(Encoding::Gzip, bad, 1000).unwrap_err();
            assert_eq!(r.status, 400);
            assert!(r.message.contains("not valid gzip"), "{r:?}");
        }
        // The limit is on the decompressed size: exactly `max` passes, one more is 413.
        let exact = gz(&vec![b' '; 1000]);
        assert_eq!(
            decode_body(Encoding::Gzip, exact, 1000).unwrap().len(),
            1000
        );
        let bomb = gz(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let r = decode_body(Encoding::Gzip, bomb, 1000).unwrap_err();
        assert_eq!(r.status, 413);
        assert!(
            r.message
                .contains("1000 bytes once decompressed (server.max_body)"),
            "{r:?}"
        );
    }

    #[test]
    fn idempotency_keys_and_derived_ids() {
        assert_eq!(idempotency_key(None).unwrap(), None);
        assert_eq!(
            idempotency_key(Some(b"order-7/retry:1"))
                .unwrap()
                .as_deref(),
            Some("order-7/retry:1")
        );
        for bad in [&b""[..], b"a b", b"a\x01", b"\xc3\xa9", &[b'k'; 256][..]] {
            let r = idempotency_key(Some(bad)).unwrap_err();
            assert_eq!(
                (r.status, r.field.as_deref()),
                (400, Some("Idempotency-Key"))
            );
        }
        let id = idempotent_id("web", "k1", 0);
        assert_eq!(id, idempotent_id("web", "k1", 0), "deterministic");
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 5);
        let all = [
            id.clone(),
            idempotent_id("web", "k1", 1),
            idempotent_id("web", "k2", 0),
            idempotent_id("partner", "k1", 0),
            idempotent_id("web", "k1/1", 0),
            idempotent_id("webk", "1", 0),
        ];
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        // A derived id is a valid event id.
        assert!(ev(json!({"id": id, "topic": "t", "account_id": "1"})).is_ok());
    }

    #[test]
    fn field_names_that_become_changed_must_not_hold_control_characters() {
        // Found by the ingest_body fuzz target: a computed `changed` entry
        // carried a NUL from a key of `after`.
        let r = ev(json!({"topic": "t", "account_id": "1", "op": "update",
            "before": {"email": "a"}, "after": {"\u{0}email": "b"}}))
        .unwrap_err();
        assert_eq!(r.status, 400);
        assert_eq!(r.field.as_deref(), Some("event.after"), "{r:?}");
        assert!(r.message.contains("control characters"), "{r:?}");
        let r = ev(json!({"topic": "t", "account_id": "1", "op": "update",
            "before": {"gone\n": 1}, "after": {}}))
        .unwrap_err();
        assert_eq!(r.field.as_deref(), Some("event.before"), "{r:?}");
    }

    #[test]
    fn changed_is_computed_from_before_and_after() {
        let e = ev(json!({"topic": "t", "account_id": "1", "op": "update",
            "before": {"email": "a", "name": "n", "gone": 1}, "after": {"email": "b", "name": "n"}}))
        .unwrap();
        assert_eq!(e.changed, vec!["email", "gone"]);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"account_id": "1"}), "event.topic"),
            (json!({"topic": "t"}), "event.account_id"),
            (
                json!({"topic": "t", "account_id": "1", "op": "upsert"}),
                "event.op",
            ),
            (
                json!({"topic": "t", "account_id": "1", "occurred_at": "yesterday"}),
                "event.occurred_at",
            ),
            (
                json!({"topic": "t", "account_id": "1", "consent": {"email": "yes"}}),
                "event.consent.email",
            ),
            (
                json!({"topic": "t", "account_id": "1", "acount": 1}),
                "event.acount",
            ),
            (
                json!({"topic": "has space", "account_id": "1"}),
                "event.topic",
            ),
            (
                json!({"topic": "t", "account_id": "1", "after": [1]}),
                "event.after",
            ),
            (
                json!({"topic": "t", "account_id": "1", "attributes": {"a": 1}}),
                "event.attributes.a",
            ),
        ];
        for (v, field) in cases {
            let r = ev(v.clone()).unwrap_err();
            assert_eq!(r.status, 400);
            assert_eq!(r.field.as_deref(), Some(field), "{v} → {r:?}");
        }
    }

    /// Found by the `ingest_body` fuzz target: these were accepted (202),
    /// stored as year 10000 / year -1 in UTC, and then failed the module
    /// boundary and reached consumers as non-RFC-3339 text.
    #[test]
    fn occurred_at_outside_rfc3339_years_in_utc_is_refused() {
        for t in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"] {
            let r = ev(json!({"topic": "t", "account_id": "1", "occurred_at": t})).unwrap_err();
            assert_eq!(r.status, 400);
            assert_eq!(r.field.as_deref(), Some("event.occurred_at"));
            assert_eq!(
                r.message,
                format!("`{t}` is outside the years 0000-9999 once converted to UTC")
            );
        }
        for t in [
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:00:00-00:59",
        ] {
            let e = ev(json!({"topic": "t", "account_id": "1", "occurred_at": t})).unwrap();
            let back = switchyard_wasm_host::event_from_wit(switchyard_wasm_host::event_to_wit(&e))
                .unwrap();
            assert_eq!(back, e, "{t} crosses the module boundary");
        }
    }

    /// Found by the `ingest_body` fuzz target: without serde_json's
    /// `float_roundtrip` these were stored one ULP off what the client sent
    /// (and the stored value changed again at every JSON hop).
    #[test]
    fn numbers_keep_their_exact_value() {
        let b = Bytes::from_static(
            br#"{"topic":"t","account_id":"1","data":{"big":4184467440737095516152,"f":1.5000000001164153}}"#,
        );
        let (label, v) = split_body(BodyFormat::Json, &b, 1).unwrap().remove(0);
        let e = to_event(&label, v, "w", None, Utc::now()).unwrap();
        let data = e.data.as_ref().unwrap();
        assert_eq!(data["big"].as_f64(), Some(4.1844674407370955e21));
        assert_eq!(data["f"].as_f64(), Some(1.5000000001164153));
        let back: Event = serde_json::from_slice(&serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn body_formats() {
        let b = Bytes::from_static(
            b"{\"topic\":\"t\",\"account_id\":\"1\"}\n\n{\"topic\":\"u\",\"account_id\":\"2\"}\n",
        );
        let items = split_body(BodyFormat::NdJson, &b, 10).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].0, "events[1]");
        let arr = Bytes::from_static(b"[{\"a\":1},{\"b\":2},{\"c\":3}]");
        assert_eq!(
            split_body(BodyFormat::Json, &arr, 2).unwrap_err().status,
            413
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("text/plain"))
                .unwrap_err()
                .status,
            415
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")).unwrap(),
            BodyFormat::Json
        );
        assert_eq!(
            split_body(BodyFormat::Json, &Bytes::from_static(b"{"), 2)
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn invalid_traceparent_is_dropped_valid_is_kept() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = to_event(
            "event",
            json!({"topic": "t", "account_id": "1"}),
            "w",
            Some(tp),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(e.trace.as_deref(), Some(tp));
        let e = to_event(
            "event",
            json!({"topic": "t", "account_id": "1"}),
            "w",
            Some("junk"),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(e.trace, None);
    }

    #[test]
    fn topic_template_fills_the_banner_and_names_the_field_of_a_bad_value() {
        let source = |tpl: &str| -> crate::SourceConfig {
            toml::from_str(&format!(
                "type = \"http\"\ntoken = \"a-token-long-enough-0123\"\ntopic_template = \"{tpl}\""
            ))
            .unwrap()
        };
        let sources = BTreeMap::from([(
            "web".to_string(),
            source("customer.{attributes.banner}.{topic}"),
        )]);
        let auth = Auth::from_sources(&sources).unwrap();
        let src = auth
            .authenticate(Some("Bearer a-token-long-enough-0123"))
            .unwrap();
        let posted = |attrs: Value| {
            ev(json!({"topic": "email_changed", "account_id": "1", "attributes": attrs})).unwrap()
        };
        let mut e = posted(json!({"banner": "banner-a"}));
        src.apply_topic_template(&mut e, "event").unwrap();
        assert_eq!(e.topic, "customer.banner-a.email_changed");
        for attrs in [
            json!({"banner": "banner a"}),
            json!({"banner": "a/b"}),
            json!({"banner": ""}),
            json!({"banner": "x".repeat(300)}),
            json!({}),
        ] {
            let mut e = posted(attrs.clone());
            let r = src.apply_topic_template(&mut e, "events[2]").unwrap_err();
            assert_eq!(r.status, 400);
            assert_eq!(
                r.field.as_deref(),
                Some("events[2].attributes.banner"),
                "{attrs}"
            );
            assert_eq!(e.topic, "email_changed", "not changed");
        }
        // `data.<path>`, and the config check of placeholders.
        let sources = BTreeMap::from([(
            "web".to_string(),
            source("order.{data.store.banner}.{topic}"),
        )]);
        let auth = Auth::from_sources(&sources).unwrap();
        let src = auth
            .authenticate(Some("Bearer a-token-long-enough-0123"))
            .unwrap();
        let mut e = ev(json!({"topic": "created", "account_id": "1",
                              "data": {"store": {"banner": "banner-b"}}}))
        .unwrap();
        src.apply_topic_template(&mut e, "event").unwrap();
        assert_eq!(e.topic, "order.banner-b.created");
        let mut errors = Vec::new();
        let crate::SourceConfig::Http(h) = source("customer.{table}.{x}") else {
            unreachable!()
        };
        h.validate("sources.web", &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "sources.web.topic_template");
        assert!(errors[0].message.contains("{table}"), "{errors:?}");
    }
}
