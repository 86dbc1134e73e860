//! CloudEvents 1.0 on `POST /v1/events`: the HTTP protocol binding's three
//! modes, each mapped to canonical events through [`to_event`] (so every
//! rule of the native format applies) with errors naming the CloudEvents
//! attribute.
//!
//! - structured: `Content-Type: application/cloudevents+json`, one event;
//! - batch: `Content-Type: application/cloudevents-batch+json`, a JSON array;
//! - binary: `ce-*` headers carry the attributes, the body is the data and
//!   `Content-Type` its `datacontenttype`.
//!
//! Mapping (ARCHITECTURE.md, "Ingest contract"): `type` → topic, the
//! account attribute (`sources.<name>.cloudevents.account_attribute`,
//! default the extension `accountid`) → account id, `id` → event id, `time`
//! → source time, `data` (or `data_base64`, kept as its base64 text) →
//! data, the `traceparent` extension → trace, every other attribute →
//! `attributes["ce.<name>"]` as text.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::{Map, Value};

use super::{to_event, CloudEventsConfig, Converted, Reject};
use switchyard_core::event;

/// How a request carries CloudEvents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
    /// The attributes from the `ce-*` headers (names without the prefix,
    /// values percent-decoded) and the body's `Content-Type`, if any.
    Binary {
        attributes: Vec<(String, String)>,
        content_type: Option<String>,
    },
}

/// The CloudEvents mode of a request, from its headers; `None` for the
/// native format. A `cloudevents` content type in a format other than JSON
/// is 415.
pub fn mode(headers: &HeaderMap) -> Result<Option<Mode>, Reject> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mime = ct
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/cloudevents+json" => return Ok(Some(Mode::Structured)),
        "application/cloudevents-batch+json" => return Ok(Some(Mode::Batch)),
        m if m.starts_with("application/cloudevents") => {
            return Err(Reject::new(
                415,
                None,
                format!(
                    "unsupported CloudEvents format `{m}`; use application/cloudevents+json, \
                     application/cloudevents-batch+json or binary mode (ce-* headers)"
                ),
            ))
        }
        _ => {}
    }
    if !headers.contains_key("ce-specversion") {
        return Ok(None);
    }
    let mut attributes = Vec::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let field = format!("ce-{attr}");
        let raw = value.to_str().map_err(|_| {
            Reject::bad(
                field.clone(),
                "must be visible ASCII (percent-encode the rest)",
            )
        })?;
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Reject::bad(field.clone(), "is not UTF-8 once percent-decoded"))?;
        if attributes.iter().any(|(a, _)| a == attr) {
            return Err(Reject::bad(field, "is given more than once"));
        }
        attributes.push((attr.to_string(), decoded.into_owned()));
    }
    Ok(Some(Mode::Binary {
        attributes,
        content_type: ct,
    }))
}

/// The events of a CloudEvents request body (already decompressed).
pub fn events(
    mode: &Mode,
    body: &Bytes,
    cfg: &CloudEventsConfig,
    source: &str,
    trace: Option<&str>,
    now: DateTime<Utc>,
    max_batch: usize,
) -> Result<Vec<Converted>, Reject> {
    match mode {
        Mode::Structured => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| Reject::new(400, None, format!("body is not valid JSON: {e}")))?;
            let Value::Object(m) = v else {
                return Err(Reject::new(
                    400,
                    None,
                    "a structured CloudEvent must be a JSON object",
                ));
            };
            Ok(vec![convert(
                Json::new("event", m),
                cfg,
                source,
                trace,
                now,
            )?])
        }
        Mode::Batch => {
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| Reject::new(400, None, format!("body is not valid JSON: {e}")))?;
            let Value::Array(items) = v else {
                return Err(Reject::new(
                    400,
                    None,
                    "a CloudEvents batch must be a JSON array",
                ));
            };
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
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let label = format!("events[{i}]");
                    match v {
                        Value::Object(m) => convert(Json::new(&label, m), cfg, source, trace, now),
                        _ => Err(Reject::bad(label, "each CloudEvent must be a JSON object")),
                    }
                })
                .collect()
        }
        Mode::Binary {
            attributes,
            content_type,
        } => {
            let mut m = Map::new();
            for (k, v) in attributes {
                m.insert(k.clone(), Value::String(v.clone()));
            }
            if let Some(ct) = content_type {
                m.insert("datacontenttype".into(), Value::String(ct.clone()));
            }
            let (data, base64) = binary_data(content_type.as_deref(), body)?;
            if let Some(d) = data {
                m.insert(if base64 { "data_base64" } else { "data" }.into(), d);
            }
            Ok(vec![convert(Json::binary(m), cfg, source, trace, now)?])
        }
    }
}

/// Binary mode's body as data: JSON when the content type says so (or is
/// absent and the body parses), else UTF-8 text, else base64 (`true`).
fn binary_data(content_type: Option<&str>, body: &Bytes) -> Result<(Option<Value>, bool), Reject> {
    if body.is_empty() {
        return Ok((None, false));
    }
    let mime = content_type.map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let json_type = mime
        .as_deref()
        .is_some_and(|m| m == "application/json" || m == "text/json" || m.ends_with("+json"));
    if json_type {
        let v = serde_json::from_slice(body).map_err(|e| {
            Reject::bad(
                "body".into(),
                format!("is not valid JSON (Content-Type is JSON): {e}"),
            )
        })?;
        return Ok((Some(v), false));
    }
    if mime.is_none() {
        if let Ok(v) = serde_json::from_slice(body) {
            return Ok((Some(v), false));
        }
    }
    match std::str::from_utf8(body) {
        Ok(s) => Ok((Some(Value::String(s.to_string())), false)),
        Err(_) => {
            use base64::Engine;
            let b = base64::engine::general_purpose::STANDARD.encode(body);
            Ok((Some(Value::String(b)), true))
        }
    }
}

/// A CloudEvent's members and how its errors name them.
struct Json {
    label: String,
    binary: bool,
    m: Map<String, Value>,
}

impl Json {
    fn new(label: &str, m: Map<String, Value>) -> Json {
        Json {
            label: label.to_string(),
            binary: false,
            m,
        }
    }
    fn binary(m: Map<String, Value>) -> Json {
        Json {
            label: "ce".into(),
            binary: true,
            m,
        }
    }
    /// The field naming attribute `attr` in errors.
    fn field(&self, attr: &str) -> String {
        match (self.binary, attr) {
            (true, "data" | "data_base64") => "body".into(),
            (true, "datacontenttype") => "Content-Type".into(),
            (true, a) => format!("ce-{a}"),
            (false, a) => format!("{}.{a}", self.label),
        }
    }
    /// A required string attribute.
    fn required(&mut self, attr: &str) -> Result<String, Reject> {
        match self.m.remove(attr) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::String(_)) => Err(Reject::bad(self.field(attr), "must not be empty")),
            None | Some(Value::Null) => Err(Reject::bad(
                self.field(attr),
                "is required (a CloudEvents 1.0 context attribute)",
            )),
            Some(_) => Err(Reject::bad(self.field(attr), "must be a string")),
        }
    }
}

/// The namespace of ids derived from CloudEvents ids that are not valid
/// event ids (random, fixed forever).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8e0f_4c21_7b3a_4d59_a6e2_1f93_c07d_52b8);

/// Whether `id` is a valid event id as it stands (1-128 of `[A-Za-z0-9._:-]`).
pub fn valid_event_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c))
}

fn convert(
    mut j: Json,
    cfg: &CloudEventsConfig,
    source: &str,
    request_trace: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Converted, Reject> {
    match j.m.remove("specversion") {
        Some(Value::String(v)) if v == "1.0" => {}
        Some(Value::String(v)) => {
            return Err(Reject::bad(
                j.field("specversion"),
                format!(
                    "`{}` is not supported; this endpoint takes CloudEvents 1.0",
                    v.escape_default()
                ),
            ))
        }
        None | Some(Value::Null) => {
            return Err(Reject::bad(j.field("specversion"), "is required (\"1.0\")"))
        }
        Some(_) => {
            return Err(Reject::bad(
                j.field("specversion"),
                "must be the string \"1.0\"",
            ))
        }
    }
    let ce_id = j.required("id")?;
    let ce_source = j.required("source")?;
    let ce_type = j.required("type")?;
    let acct_attr = cfg.account_attribute.as_str();
    let account = match j.m.remove(acct_attr) {
        None | Some(Value::Null) => {
            return Err(Reject::bad(
                j.field(acct_attr),
                format!(
                    "is required: the account id (the attribute named by \
                     sources.{source}.cloudevents.account_attribute)"
                ),
            ))
        }
        Some(v @ (Value::String(_) | Value::Number(_))) => v,
        Some(_) => {
            return Err(Reject::bad(
                j.field(acct_attr),
                "must be a string or an integer",
            ))
        }
    };
    let time = match j.m.remove("time") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(_)) => Some(v),
        Some(_) => return Err(Reject::bad(j.field("time"), "must be an RFC 3339 string")),
    };
    let data = j.m.remove("data").filter(|d| !d.is_null());
    let data_base64 = j.m.remove("data_base64").filter(|d| !d.is_null());
    let (data, base64) = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err(Reject::bad(
                j.field("data_base64"),
                "give either `data` or `data_base64`, not both",
            ))
        }
        (None, Some(Value::String(b))) => {
            // Binary mode's base64 is ours (a body that is not UTF-8).
            if !j.binary {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(&b)
                    .map_err(|e| {
                        Reject::bad(j.field("data_base64"), format!("is not valid base64: {e}"))
                    })?;
            }
            (Some(Value::String(b)), true)
        }
        (None, Some(_)) => {
            return Err(Reject::bad(
                j.field("data_base64"),
                "must be a base64 string",
            ))
        }
        (d, None) => (d, false),
    };
    // The Distributed Tracing extension: this event's trace.
    let trace = match j.m.remove("traceparent") {
        Some(Value::String(t)) if event::valid_traceparent(&t) => Some(t),
        _ => request_trace.map(str::to_string),
    };

    // Every other attribute, as text under `ce.<name>`.
    let mut attributes = Map::new();
    attributes.insert("ce.source".into(), Value::String(ce_source.clone()));
    if base64 {
        attributes.insert("ce.data_base64".into(), Value::String("true".into()));
    }
    let id = if valid_event_id(&ce_id) {
        ce_id
    } else {
        // CloudEvents makes (source, id) unique: derive a valid id from both,
        // the same one on every retry, and keep the original.
        let name = format!("{}:{ce_source}{ce_id}", ce_source.len());
        attributes.insert("ce.id".into(), Value::String(ce_id));
        uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes()).to_string()
    };
    let rest = std::mem::take(&mut j.m);
    for (name, v) in rest {
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid_name {
            return Err(Reject::bad(
                j.field(&name.escape_default().to_string()),
                "is not a CloudEvents attribute name (lowercase letters and digits only)",
            ));
        }
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(Reject::bad(
                    j.field(&name),
                    "must be a string, number or boolean (CloudEvents attributes are scalars)",
                ))
            }
        };
        attributes.insert(format!("ce.{name}"), Value::String(text));
    }

    let mut native = Map::new();
    native.insert("id".into(), Value::String(id));
    native.insert("topic".into(), Value::String(ce_type));
    native.insert("account_id".into(), account);
    if let Some(t) = time {
        native.insert("occurred_at".into(), t);
    }
    if let Some(d) = data {
        native.insert("data".into(), d);
    }
    native.insert("attributes".into(), Value::Object(attributes));
    let event = to_event(
        "event",
        Value::Object(native),
        source,
        trace.as_deref(),
        now,
    )
    .map_err(|r| rename(r, &j, acct_attr))?;
    Ok(Converted {
        topic_field: j.field("type"),
        label: j.label,
        event,
        checked: true,
    })
}

/// A [`to_event`] error (fields `event.<native field>`) renamed to the
/// CloudEvents attribute it came from.
fn rename(mut r: Reject, j: &Json, acct_attr: &str) -> Reject {
    if let Some(f) = r.field.take() {
        let native = f.strip_prefix("event.").unwrap_or(&f);
        let attr = match native {
            "topic" => "type".to_string(),
            "account_id" => acct_attr.to_string(),
            "occurred_at" => "time".to_string(),
            "data" => "data".to_string(),
            a => match a.strip_prefix("attributes.ce.") {
                Some(name) => name.to_string(),
                None if a == "attributes" => "attributes".to_string(),
                None => a.to_string(),
            },
        };
        r.field = Some(j.field(&attr));
        if native == "topic" {
            r.message = format!("{} (the CloudEvents `type` becomes the topic)", r.message);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> CloudEventsConfig {
        CloudEventsConfig::default()
    }

    fn structured(v: Value) -> Result<Vec<Converted>, Reject> {
        let b = Bytes::from(serde_json::to_vec(&v).unwrap());
        events(&Mode::Structured, &b, &cfg(), "web", None, Utc::now(), 100)
    }

    fn batch(v: Value) -> Result<Vec<Converted>, Reject> {
        let b = Bytes::from(serde_json::to_vec(&v).unwrap());
        events(&Mode::Batch, &b, &cfg(), "web", None, Utc::now(), 100)
    }

    fn base() -> Value {
        json!({"specversion": "1.0", "id": "evt-1", "source": "/shop/checkout",
               "type": "com.example.order.placed", "accountid": "42"})
    }

    #[test]
    fn structured_maps_to_the_canonical_event() {
        let mut v = base();
        v["time"] = json!("2026-11-30T10:00:00+01:00");
        v["subject"] = json!("order-7");
        v["datacontenttype"] = json!("application/json");
        v["data"] = json!({"total": 12.5});
        v["priority"] = json!(3);
        v["traceparent"] = json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let e = structured(v).unwrap().remove(0).event;
        assert_eq!(e.id, "evt-1");
        assert_eq!(e.topic, "com.example.order.placed");
        assert_eq!(e.account_id, "42");
        assert_eq!(e.source, "web");
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-11-30T09:00:00+00:00");
        assert_eq!(e.data, Some(json!({"total": 12.5})));
        assert_eq!(
            e.trace.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        let a = |k: &str| e.attributes.get(k).map(String::as_str);
        assert_eq!(a("ce.source"), Some("/shop/checkout"));
        assert_eq!(a("ce.subject"), Some("order-7"));
        assert_eq!(a("ce.datacontenttype"), Some("application/json"));
        assert_eq!(a("ce.priority"), Some("3"));
        assert_eq!(a("ce.accountid"), None, "the account id is not repeated");
        assert_eq!(e.attributes.len(), 4, "{:?}", e.attributes);
    }

    #[test]
    fn ids_outside_the_event_id_set_are_derived_from_source_and_id() {
        let mut v = base();
        v["id"] = json!("urn:order/7 #1");
        let a = structured(v.clone()).unwrap().remove(0).event;
        let b = structured(v.clone()).unwrap().remove(0).event;
        assert_eq!(a.id, b.id, "a retry gets the same id");
        assert_eq!(uuid::Uuid::parse_str(&a.id).unwrap().get_version_num(), 5);
        assert_eq!(a.attributes["ce.id"], "urn:order/7 #1");
        v["source"] = json!("/other");
        assert_ne!(
            structured(v).unwrap()[0].event.id,
            a.id,
            "another source, another event"
        );
    }

    #[test]
    fn errors_name_the_attribute() {
        let with = |k: &str, val: Value| {
            let mut v = base();
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val;
            }
            v
        };
        let cases = [
            (with("type", Value::Null), "events[1].type"),
            (with("type", json!("has space")), "events[1].type"),
            (with("accountid", Value::Null), "events[1].accountid"),
            (with("accountid", json!("4\n2")), "events[1].accountid"),
            (with("accountid", json!(1.5)), "events[1].accountid"),
            (with("specversion", json!("0.3")), "events[1].specversion"),
            (with("specversion", Value::Null), "events[1].specversion"),
            (with("id", json!("")), "events[1].id"),
            (with("source", Value::Null), "events[1].source"),
            (with("time", json!("yesterday")), "events[1].time"),
            (with("Upper", json!("x")), "events[1].Upper"),
            (with("ext", json!({"a": 1})), "events[1].ext"),
            (with("data_base64", json!("***")), "events[1].data_base64"),
        ];
        for (bad, field) in cases {
            let r = batch(json!([base(), bad.clone()])).unwrap_err();
            assert_eq!(r.status, 400, "{bad}");
            assert_eq!(r.field.as_deref(), Some(field), "{bad} → {r:?}");
        }
        assert_eq!(structured(json!([base()])).unwrap_err().status, 400);
        assert_eq!(batch(base()).unwrap_err().status, 400);
        let many = Value::Array(vec![base(); 101]);
        assert_eq!(batch(many).unwrap_err().status, 413);
        assert!(
            batch(json!([])).unwrap().is_empty(),
            "an empty batch is valid"
        );
    }

    #[test]
    fn account_attribute_is_configurable() {
        let cfg = CloudEventsConfig {
            account_attribute: "subject".into(),
        };
        let mut v = base();
        v["subject"] = json!(7);
        let b = Bytes::from(serde_json::to_vec(&v).unwrap());
        let e = events(&Mode::Structured, &b, &cfg, "web", None, Utc::now(), 1).unwrap();
        assert_eq!(e[0].event.account_id, "7");
        assert_eq!(e[0].event.attributes["ce.accountid"], "42");
    }

    #[test]
    fn binary_mode_headers_and_body() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "b-1"),
            ("ce-source", "/app"),
            ("ce-type", "com.example.signup"),
            ("ce-accountid", "acct%207"),
            ("ce-time", "2026-11-30T10:00:00Z"),
            ("content-type", "application/json"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        let m = mode(&h).unwrap().unwrap();
        let body = Bytes::from_static(br#"{"plan":"gold"}"#);
        let e = events(&m, &body, &cfg(), "web", None, Utc::now(), 1)
            .unwrap()
            .remove(0);
        assert_eq!(e.label, "ce");
        assert_eq!(e.topic_field, "ce-type");
        assert_eq!(e.event.account_id, "acct 7");
        assert_eq!(e.event.data, Some(json!({"plan": "gold"})));
        assert_eq!(e.event.attributes["ce.datacontenttype"], "application/json");
        // Data that is not JSON: text, or base64 when not UTF-8.
        h.insert("content-type", "text/plain".parse().unwrap());
        let m = mode(&h).unwrap().unwrap();
        let e = events(
            &m,
            &Bytes::from_static(b"hi"),
            &cfg(),
            "web",
            None,
            Utc::now(),
            1,
        )
        .unwrap();
        assert_eq!(e[0].event.data, Some(json!("hi")));
        let e = events(
            &m,
            &Bytes::from_static(b"\xff\x00"),
            &cfg(),
            "web",
            None,
            Utc::now(),
            1,
        )
        .unwrap();
        assert_eq!(e[0].event.data, Some(json!("/wA=")));
        assert_eq!(e[0].event.attributes["ce.data_base64"], "true");
        // Errors name the header.
        h.remove("ce-type");
        let m = mode(&h).unwrap().unwrap();
        let r = events(&m, &Bytes::new(), &cfg(), "web", None, Utc::now(), 1).unwrap_err();
        assert_eq!(r.field.as_deref(), Some("ce-type"));
        h.insert("ce-type", "t".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let m = mode(&h).unwrap().unwrap();
        let r = events(
            &m,
            &Bytes::from_static(b"{"),
            &cfg(),
            "web",
            None,
            Utc::now(),
            1,
        )
        .unwrap_err();
        assert_eq!(r.field.as_deref(), Some("body"));
    }

    #[test]
    fn modes_by_content_type() {
        let mut h = HeaderMap::new();
        assert_eq!(mode(&h).unwrap(), None);
        h.insert("content-type", "application/json".parse().unwrap());
        assert_eq!(mode(&h).unwrap(), None);
        h.insert(
            "content-type",
            "application/cloudevents+json; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert_eq!(mode(&h).unwrap(), Some(Mode::Structured));
        // ce-* headers are ignored in structured mode.
        h.insert("ce-specversion", "1.0".parse().unwrap());
        assert_eq!(mode(&h).unwrap(), Some(Mode::Structured));
        h.insert(
            "content-type",
            "Application/CloudEvents-Batch+JSON".parse().unwrap(),
        );
        assert_eq!(mode(&h).unwrap(), Some(Mode::Batch));
        h.insert(
            "content-type",
            "application/cloudevents+avro".parse().unwrap(),
        );
        assert_eq!(mode(&h).unwrap_err().status, 415);
    }
}
