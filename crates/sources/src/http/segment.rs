//! Segment-compatible ingest: `POST /v1/track`, `/v1/identify`, `/v1/page`,
//! `/v1/screen`, `/v1/group`, `/v1/alias` and `/v1/batch`, authenticated by
//! a source's write key (`sources.<name>.segment.write_key`, sent by
//! Segment's libraries as the Basic-auth user name), so those libraries
//! work unchanged with their host pointed at Switchyard. Every message
//! becomes a canonical event through [`to_event`], errors naming the
//! Segment field (`batch[2].userId`).
//!
//! Mapping (ARCHITECTURE.md, "Ingest contract"):
//! - account id: `userId` / `anonymousId` as `segment.account_id` says;
//! - id: `messageId` (kept when it is a valid event id, else a UUIDv5 of
//!   the source and the messageId), so a retried message is a duplicate;
//! - topic: `<topic_prefix>.track.<event slug>` for track, else
//!   `<topic_prefix>.<type>`;
//! - source time: `timestamp`, else `originalTimestamp`;
//! - data: `properties` (track, page, screen) or `traits` (identify, group);
//! - consent: `context.consent.categoryPreferences` (true → granted,
//!   false → denied), category names through `segment.consent_channels`;
//! - attributes: `segment.type`, `segment.event`, `segment.name`,
//!   `segment.category`, `segment.group_id`, `segment.previous_id`,
//!   `segment.user_id`, `segment.anonymous_id`, and the rest of `context`
//!   as JSON text in `segment.context`. `integrations` and the other
//!   top-level fields are dropped.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{to_event, Converted, Reject, SegmentAccountId, SegmentConfig};

/// A Segment endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/<type>`: one message of that type.
    Single(Kind),
    /// `/v1/batch`: `{"batch": [messages]}`, each with its `type`.
    Batch,
}

/// A Segment message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Track,
        Kind::Identify,
        Kind::Page,
        Kind::Screen,
        Kind::Group,
        Kind::Alias,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Identify => "identify",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Group => "group",
            Kind::Alias => "alias",
        }
    }
    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The Segment endpoint at `path`, if it is one.
pub fn route(path: &str) -> Option<Route> {
    let name = path.strip_prefix("/v1/")?;
    if name == "batch" {
        return Some(Route::Batch);
    }
    Kind::parse(name).map(Route::Single)
}

/// Segment's libraries send JSON as `application/json`; analytics.js sends
/// `text/plain` (no CORS preflight). Anything else is 415.
pub fn check_content_type(ct: Option<&str>) -> Result<(), Reject> {
    let mime = ct
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" | "text/plain" | "" => Ok(()),
        other => Err(Reject::new(
            415,
            None,
            format!("unsupported Content-Type `{other}`; Segment messages are application/json"),
        )),
    }
}

/// The events of a Segment request body (already decompressed).
pub fn events(
    route: Route,
    body: &Bytes,
    cfg: &SegmentConfig,
    source: &str,
    trace: Option<&str>,
    now: DateTime<Utc>,
    max_batch: usize,
) -> Result<Vec<Converted>, Reject> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| Reject::new(400, None, format!("body is not valid JSON: {e}")))?;
    let Value::Object(mut body) = v else {
        return Err(Reject::new(400, None, "body must be a JSON object"));
    };
    match route {
        Route::Single(kind) => Ok(vec![convert(
            "",
            Some(kind),
            body,
            cfg,
            source,
            trace,
            now,
        )?]),
        Route::Batch => {
            let Some(Value::Array(items)) = body.remove("batch") else {
                return Err(Reject::bad(
                    "batch".into(),
                    "is required: an array of messages",
                ));
            };
            if items.is_empty() {
                return Err(Reject::bad("batch".into(), "is empty"));
            }
            if items.len() > max_batch {
                return Err(Reject::new(
                    413,
                    None,
                    format!(
                        "batch of {} messages exceeds the limit of {max_batch} (server.max_batch)",
                        items.len()
                    ),
                ));
            }
            // Batch-level `context` applies to every message (a message's
            // own keys win).
            let shared_context = match body.remove("context") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(c)) => c,
                Some(_) => return Err(Reject::bad("context".into(), "must be an object")),
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    let label = format!("batch[{i}]");
                    let Value::Object(mut m) = m else {
                        return Err(Reject::bad(label, "each message must be a JSON object"));
                    };
                    if !shared_context.is_empty() {
                        let ctx = m
                            .entry("context")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(ctx) = ctx {
                            for (k, v) in &shared_context {
                                ctx.entry(k.clone()).or_insert_with(|| v.clone());
                            }
                        }
                    }
                    convert(&label, None, m, cfg, source, trace, now)
                })
                .collect()
        }
    }
}

/// The namespace of ids derived from messageIds that are not valid event
/// ids (random, fixed forever).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x2b7c_91d4_0e58_4a3f_b1c6_7d20_e5f8_9a13);

/// The slug of a track event name in its topic: ASCII letters and digits
/// lowercased, every run of other characters one `_`, none at either end
/// (`"Order Completed"` → `order_completed`).
pub fn slug(event: &str) -> String {
    let mut out = String::with_capacity(event.len());
    let mut gap = false;
    for c in event.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn convert(
    label: &str,
    kind: Option<Kind>,
    mut m: Map<String, Value>,
    cfg: &SegmentConfig,
    source: &str,
    trace: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Converted, Reject> {
    let field = |name: &str| {
        if label.is_empty() {
            name.to_string()
        } else {
            format!("{label}.{name}")
        }
    };
    let kind = match (kind, m.remove("type")) {
        (Some(k), _) => k,
        (None, Some(Value::String(t))) => Kind::parse(&t).ok_or_else(|| {
            Reject::bad(
                field("type"),
                format!(
                    "`{}` is not a Segment message type (track, identify, page, screen, group, alias)",
                    t.escape_default()
                ),
            )
        })?,
        (None, _) => {
            return Err(Reject::bad(
                field("type"),
                "is required (track, identify, page, screen, group, alias)",
            ))
        }
    };
    let id_value = |m: &mut Map<String, Value>, name: &str| -> Result<Option<Value>, Reject> {
        match m.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(v @ (Value::String(_) | Value::Number(_))) => Ok(Some(v)),
            Some(_) => Err(Reject::bad(field(name), "must be a string or a number")),
        }
    };
    let user_id = id_value(&mut m, "userId")?;
    let anonymous_id = id_value(&mut m, "anonymousId")?;
    let (account, account_field) = match cfg.account_id {
        SegmentAccountId::UserIdThenAnonymousId => match (&user_id, &anonymous_id) {
            (Some(u), _) => (Some(u.clone()), "userId"),
            (None, a) => (a.clone(), "anonymousId"),
        },
        SegmentAccountId::AnonymousIdThenUserId => match (&anonymous_id, &user_id) {
            (Some(a), _) => (Some(a.clone()), "anonymousId"),
            (None, u) => (u.clone(), "userId"),
        },
        SegmentAccountId::UserId => (user_id.clone(), "userId"),
        SegmentAccountId::AnonymousId => (anonymous_id.clone(), "anonymousId"),
    };
    let Some(account) = account else {
        let need = match cfg.account_id {
            SegmentAccountId::UserId => "`userId` is required",
            SegmentAccountId::AnonymousId => "`anonymousId` is required",
            _ => "`userId` or `anonymousId` is required",
        };
        return Err(Reject::bad(
            field(account_field),
            format!("{need}: it is the account id (sources.{source}.segment.account_id)"),
        ));
    };

    let mut attributes = Map::new();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    attributes.insert("segment.type".into(), Value::String(kind.as_str().into()));
    if let Some(u) = &user_id {
        attributes.insert("segment.user_id".into(), Value::String(text(u)));
    }
    if let Some(a) = &anonymous_id {
        attributes.insert("segment.anonymous_id".into(), Value::String(text(a)));
    }

    let id = match m.remove("messageId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if super::cloudevents::valid_event_id(&s) => Some(s),
        Some(Value::String(s)) if !s.is_empty() => {
            // Any other messageId: an id derived from it (and the source),
            // the same on every retry.
            let name = format!("{}:{source}{s}", source.len());
            attributes.insert("segment.message_id".into(), Value::String(s));
            Some(uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string())
        }
        Some(_) => {
            return Err(Reject::bad(
                field("messageId"),
                "must be a non-empty string",
            ))
        }
    };

    let (topic, topic_field) = match kind {
        Kind::Track => {
            let event = match m.remove("event") {
                Some(Value::String(e)) if !e.is_empty() => e,
                _ => {
                    return Err(Reject::bad(
                        field("event"),
                        "is required: the name of the tracked event",
                    ))
                }
            };
            let s = slug(&event);
            if s.is_empty() {
                return Err(Reject::bad(
                    field("event"),
                    "has no ASCII letters or digits to make a topic of",
                ));
            }
            attributes.insert("segment.event".into(), Value::String(event));
            (format!("{}.track.{s}", cfg.topic_prefix), "event")
        }
        k => (format!("{}.{}", cfg.topic_prefix, k.as_str()), "type"),
    };
    for (from, to) in [
        ("name", "segment.name"),
        ("category", "segment.category"),
        ("groupId", "segment.group_id"),
        ("previousId", "segment.previous_id"),
    ] {
        match m.remove(from) {
            None | Some(Value::Null) => {}
            Some(v @ (Value::String(_) | Value::Number(_))) => {
                attributes.insert(to.into(), Value::String(text(&v)));
            }
            Some(_) => return Err(Reject::bad(field(from), "must be a string")),
        }
    }
    let data = match kind {
        Kind::Track | Kind::Page | Kind::Screen => m.remove("properties"),
        Kind::Identify | Kind::Group => m.remove("traits"),
        Kind::Alias => None,
    }
    .filter(|d| !d.is_null());

    let (time, time_field) = match (m.remove("timestamp"), m.remove("originalTimestamp")) {
        (Some(t), _) if !t.is_null() => (Some(t), "timestamp"),
        (_, Some(t)) if !t.is_null() => (Some(t), "originalTimestamp"),
        _ => (None, "timestamp"),
    };

    let mut consent = Map::new();
    match m.remove("context") {
        None | Some(Value::Null) => {}
        Some(Value::Object(mut ctx)) => {
            match ctx.remove("consent") {
                None | Some(Value::Null) => {}
                Some(Value::Object(mut c)) => match c.remove("categoryPreferences") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(prefs)) => {
                        for (category, v) in prefs {
                            let state = match v {
                                Value::Bool(true) => "granted",
                                Value::Bool(false) => "denied",
                                Value::Null => "unknown",
                                _ => {
                                    return Err(Reject::bad(
                                        field(&format!(
                                            "context.consent.categoryPreferences.{category}"
                                        )),
                                        "must be true or false",
                                    ))
                                }
                            };
                            let channel = cfg
                                .consent_channels
                                .get(&category)
                                .cloned()
                                .unwrap_or(category);
                            consent.insert(channel, Value::String(state.into()));
                        }
                    }
                    Some(_) => {
                        return Err(Reject::bad(
                            field("context.consent.categoryPreferences"),
                            "must be an object of category → true/false",
                        ))
                    }
                },
                Some(_) => return Err(Reject::bad(field("context.consent"), "must be an object")),
            }
            if !ctx.is_empty() {
                attributes.insert(
                    "segment.context".into(),
                    Value::String(Value::Object(ctx).to_string()),
                );
            }
        }
        Some(_) => return Err(Reject::bad(field("context"), "must be an object")),
    }

    let checked = id.is_some();
    let mut native = Map::new();
    if let Some(id) = id {
        native.insert("id".into(), Value::String(id));
    }
    native.insert("topic".into(), Value::String(topic));
    native.insert("account_id".into(), account);
    if let Some(t) = time {
        native.insert("occurred_at".into(), t);
    }
    if let Some(d) = data {
        native.insert("data".into(), d);
    }
    if !consent.is_empty() {
        native.insert("consent".into(), Value::Object(consent));
    }
    native.insert("attributes".into(), Value::Object(attributes));
    let event = to_event("event", Value::Object(native), source, trace, now).map_err(|mut r| {
        if let Some(f) = r.field.take() {
            let native = f.strip_prefix("event.").unwrap_or(&f);
            let named = match native {
                "topic" => topic_field,
                "account_id" => account_field,
                "occurred_at" => time_field,
                n if n.starts_with("consent") => "context.consent.categoryPreferences",
                n => n,
            };
            r.field = Some(field(named));
        }
        r
    })?;
    Ok(Converted {
        label: if label.is_empty() {
            "message".into()
        } else {
            label.to_string()
        },
        topic_field: field(topic_field),
        event,
        checked,
    })
}

/// Segment's answer shape: `{"success": true}` on 200; on an error
/// `{"success": false, "code", "message"}` (what Segment's libraries read)
/// plus the `error` and `field` of every Switchyard error.
pub fn error_body(r: &Reject) -> Value {
    let mut v = r.to_json();
    let code = match r.status {
        400 => "invalid_request",
        401 => "unauthorized",
        403 => "forbidden",
        408 => "request_timeout",
        413 => "too_large",
        415 => "unsupported_media_type",
        503 => "unavailable",
        _ => "server_error",
    };
    v["success"] = Value::Bool(false);
    v["code"] = Value::String(code.into());
    v["message"] = Value::String(r.message.clone());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> SegmentConfig {
        SegmentConfig {
            write_key: None,
            write_key_file: None,
            account_id: SegmentAccountId::default(),
            topic_prefix: "segment".into(),
            consent_channels: [("Advertising".to_string(), "ads".to_string())].into(),
        }
    }

    fn run(route: Route, v: Value, cfg: &SegmentConfig) -> Result<Vec<Converted>, Reject> {
        let b = Bytes::from(serde_json::to_vec(&v).unwrap());
        events(route, &b, cfg, "web", None, Utc::now(), 10)
    }

    #[test]
    fn routes_and_slugs() {
        assert_eq!(route("/v1/track"), Some(Route::Single(Kind::Track)));
        assert_eq!(route("/v1/alias"), Some(Route::Single(Kind::Alias)));
        assert_eq!(route("/v1/batch"), Some(Route::Batch));
        assert_eq!(route("/v1/events"), None);
        assert_eq!(route("/v1/track/x"), None);
        assert_eq!(slug("Order Completed"), "order_completed");
        assert_eq!(slug("  Signed-Up!! v2 "), "signed_up_v2");
        assert_eq!(slug("café au lait"), "caf_au_lait");
        assert_eq!(slug("!!!"), "");
    }

    #[test]
    fn track_maps_to_the_canonical_event() {
        let v = json!({
            "userId": "u-1", "anonymousId": "anon-9", "event": "Order Completed",
            "messageId": "m-1", "timestamp": "2026-11-30T10:00:00.000+01:00",
            "properties": {"total": 30},
            "context": {"ip": "10.0.0.1", "consent": {"categoryPreferences":
                {"Advertising": false, "Analytics": true}}},
            "integrations": {"All": true}
        });
        let e = run(Route::Single(Kind::Track), v, &cfg())
            .unwrap()
            .remove(0)
            .event;
        assert_eq!(e.id, "m-1");
        assert_eq!(e.topic, "segment.track.order_completed");
        assert_eq!(e.account_id, "u-1");
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-30T09:00:00+00:00");
        assert_eq!(e.data, Some(json!({"total": 30})));
        let consent: Vec<_> = e
            .consent
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(consent, [("Analytics", "granted"), ("ads", "denied")]);
        assert_eq!(e.attributes["segment.event"], "Order Completed");
        assert_eq!(e.attributes["segment.anonymous_id"], "anon-9");
        assert_eq!(e.attributes["segment.context"], r#"{"ip":"10.0.0.1"}"#);
    }

    #[test]
    fn account_id_follows_the_config() {
        let both =
            json!({"type": "identify", "userId": 7, "anonymousId": "a", "traits": {"plan": "x"}});
        let anon = json!({"type": "identify", "anonymousId": "a"});
        let mut c = cfg();
        let acct = |v: &Value, c: &SegmentConfig| {
            run(Route::Batch, json!({"batch": [v]}), c).map(|mut e| e.remove(0).event.account_id)
        };
        assert_eq!(acct(&both, &c).unwrap(), "7");
        assert_eq!(acct(&anon, &c).unwrap(), "a");
        c.account_id = SegmentAccountId::AnonymousIdThenUserId;
        assert_eq!(acct(&both, &c).unwrap(), "a");
        c.account_id = SegmentAccountId::UserId;
        let r = acct(&anon, &c).unwrap_err();
        assert_eq!(r.field.as_deref(), Some("batch[0].userId"), "{r:?}");
        c.account_id = SegmentAccountId::AnonymousId;
        assert_eq!(acct(&both, &c).unwrap(), "a");
    }

    #[test]
    fn batch_context_applies_and_topics_per_type() {
        let v = json!({"batch": [
            {"type": "page", "userId": "1", "name": "Home", "properties": {"path": "/"}},
            {"type": "group", "userId": "1", "groupId": 5, "traits": {"n": 1}, "context": {"locale": "de"}},
            {"type": "alias", "userId": "1", "previousId": "anon"},
        ], "context": {"locale": "en", "app": "x"}, "writeKey": "ignored", "sentAt": "2026-11-30T10:00:00Z"});
        let e = run(Route::Batch, v, &cfg()).unwrap();
        let topics: Vec<_> = e.iter().map(|c| c.event.topic.as_str()).collect();
        assert_eq!(topics, ["segment.page", "segment.group", "segment.alias"]);
        assert_eq!(e[0].event.attributes["segment.name"], "Home");
        assert_eq!(
            e[0].event.attributes["segment.context"],
            r#"{"app":"x","locale":"en"}"#
        );
        assert_eq!(
            e[1].event.attributes["segment.context"],
            r#"{"app":"x","locale":"de"}"#
        );
        assert_eq!(e[1].event.attributes["segment.group_id"], "5");
        assert_eq!(e[2].event.attributes["segment.previous_id"], "anon");
        assert_eq!(e[2].event.data, None);
    }

    #[test]
    fn message_ids_outside_the_event_id_set_are_derived() {
        let v = json!({"userId": "1", "messageId": "ajs next/1 2", "traits": {}});
        let a = run(Route::Single(Kind::Identify), v.clone(), &cfg())
            .unwrap()
            .remove(0)
            .event;
        let b = run(Route::Single(Kind::Identify), v, &cfg())
            .unwrap()
            .remove(0)
            .event;
        assert_eq!(a.id, b.id);
        assert_eq!(uuid::Uuid::parse_str(&a.id).unwrap().get_version_num(), 5);
        assert_eq!(a.attributes["segment.message_id"], "ajs next/1 2");
    }

    #[test]
    fn errors_name_the_segment_field() {
        let cases = [
            (json!({"type": "track", "userId": "1"}), "batch[1].event"),
            (
                json!({"type": "track", "userId": "1", "event": "!!"}),
                "batch[1].event",
            ),
            (json!({"type": "clap", "userId": "1"}), "batch[1].type"),
            (json!({"userId": "1"}), "batch[1].type"),
            (json!({"type": "identify"}), "batch[1].anonymousId"),
            (
                json!({"type": "identify", "userId": "a\nb"}),
                "batch[1].userId",
            ),
            (
                json!({"type": "identify", "userId": {"a": 1}}),
                "batch[1].userId",
            ),
            (
                json!({"type": "identify", "userId": "1", "timestamp": "noon"}),
                "batch[1].timestamp",
            ),
            (
                json!({"type": "identify", "userId": "1", "messageId": 5}),
                "batch[1].messageId",
            ),
            (
                json!({"type": "identify", "userId": "1", "context": {"consent": {"categoryPreferences": {"Ads": "yes"}}}}),
                "batch[1].context.consent.categoryPreferences.Ads",
            ),
            (
                json!({"type": "track", "userId": "1", "event": "x".repeat(300)}),
                "batch[1].event",
            ),
        ];
        let ok = json!({"type": "identify", "userId": "1"});
        for (bad, field) in cases {
            let r = run(Route::Batch, json!({"batch": [ok, bad]}), &cfg()).unwrap_err();
            assert_eq!(r.status, 400, "{bad}");
            assert_eq!(r.field.as_deref(), Some(field), "{bad} → {r:?}");
        }
        let r = run(Route::Single(Kind::Track), json!({"userId": "1"}), &cfg()).unwrap_err();
        assert_eq!(r.field.as_deref(), Some("event"));
        assert_eq!(
            run(Route::Batch, json!({"batch": []}), &cfg())
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            run(Route::Batch, json!({}), &cfg())
                .unwrap_err()
                .field
                .as_deref(),
            Some("batch")
        );
        let many = json!({"batch": vec![ok; 11]});
        assert_eq!(run(Route::Batch, many, &cfg()).unwrap_err().status, 413);
        let body = error_body(&Reject::new(400, Some("batch[0].event".into()), "m"));
        assert_eq!(
            body,
            json!({"success": false, "code": "invalid_request", "message": "m",
            "error": "m", "field": "batch[0].event"})
        );
    }
}
