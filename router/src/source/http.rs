//! HTTP source: `POST /v1/events` turns application events into canonical
//! events and appends them to the log.
//!
//! Answers (see ARCHITECTURE.md, "Ingest contract"):
//! 202 after Redis acknowledged every event; 400 naming the element and field;
//! 401 no/unknown token; 403 topic not allowed for the source; 413 body or
//! batch too large; 415 content type; 503 + Retry-After while Redis is down.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::event::{self, ConsentState, Event, Op};

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
    fn bad(field: String, message: impl Into<String>) -> Self {
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

/// Token → source mapping, compared in constant time.
pub struct Auth {
    sources: Vec<AuthSource>,
}

pub struct AuthSource {
    name: String,
    token_sha: [u8; 32],
    topics: GlobSet,
}

impl Auth {
    pub fn from_config(config: &Config) -> anyhow::Result<Auth> {
        use anyhow::Context;
        let mut sources = Vec::new();
        for (name, h) in config.http_sources() {
            let token = h
                .load_token()
                .with_context(|| format!("reading the token of source `{name}`"))?;
            let mut b = GlobSetBuilder::new();
            for t in &h.topics {
                b.add(Glob::new(t).with_context(|| format!("sources.{name}.topics: `{t}`"))?);
            }
            sources.push(AuthSource {
                name: name.clone(),
                token_sha: Sha256::digest(token.as_bytes()).into(),
                topics: b.build()?,
            });
        }
        Ok(Auth { sources })
    }

    /// The source whose token matches `authorization` (the header value).
    /// Every configured token is compared, each in constant time, on the
    /// SHA-256 of the presented token (so lengths leak nothing either).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&AuthSource, Reject> {
        let presented = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Reject::new(401, None, "missing `Authorization: Bearer <token>` header")
            })?;
        let sha: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<usize> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if bool::from(s.token_sha.ct_eq(&sha)) {
                found = Some(i);
            }
        }
        match found {
            Some(i) => Ok(&self.sources[i]),
            None => Err(Reject::new(401, None, "unknown token")),
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
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(_)) => {
            return Err(Reject::bad(f("account_id"), "must be 1-256 characters"))
        }
        Some(_) => return Err(Reject::bad(f("account_id"), "must be a string or a number")),
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
    let before = opt_object(&mut m, "before", &f("before"))?;
    let after = opt_object(&mut m, "after", &f("after"))?;
    let data = non_null(m.remove("data"));
    let changed = match m.remove("changed") {
        None | Some(Value::Null) => diff_fields(before.as_ref(), after.as_ref()),
        Some(Value::Array(a)) => a
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
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
    fn client_id_is_kept_and_numbers_are_account_ids() {
        let e = ev(json!({"id": "ord-1", "topic": "t", "account_id": 42})).unwrap();
        assert_eq!(e.id, "ord-1");
        assert_eq!(e.account_id, "42");
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
            let back =
                crate::transform::event_from_wit(crate::transform::event_to_wit(&e)).unwrap();
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
}
