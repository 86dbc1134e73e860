//! `webhook`: the canonical event as a CloudEvents 1.0 structured-mode JSON
//! request (`application/cloudevents+json`), or (`format = standard`) as a
//! Standard Webhooks payload `{"type", "timestamp", "data"}` for the router's
//! Standard Webhooks signing (`auth.type = "hmac"`). See README.md.

use switchyard_guest::{json, transform, Config, ConfigError, Error, Event, Output, State, Value};

static SETTINGS: State<Settings> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    SETTINGS.set(Settings::from_config(cfg)?);
    Ok(())
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    Ok(vec![SETTINGS.get().request(&ev)?])
}

/// CloudEvents media type (structured mode, JSON format).
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// Parsed configuration.
#[derive(Debug, Default)]
pub struct Settings {
    standard: bool,
    source_prefix: String,
    type_prefix: String,
    method: Option<String>,
    path: Option<String>,
}

impl Settings {
    /// Parse the config; errors name the offending key.
    pub fn from_config(cfg: &Config) -> Result<Settings, ConfigError> {
        let known = ["format", "source_prefix", "type_prefix", "method", "path"];
        if let Some((key, _)) = cfg.iter().find(|(k, _)| !known.contains(k)) {
            return Err(ConfigError::new(
                key,
                format!("unknown key; expected one of {}", known.join(", ")),
            ));
        }
        let method = match cfg.get("method").map(str::trim) {
            None | Some("") => None,
            Some(m) if m.chars().all(|c| c.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
            Some(m) => {
                return Err(ConfigError::new(
                    "method",
                    format!("{m:?} is not an HTTP method"),
                ))
            }
        };
        let path = match cfg.get("path").map(str::trim) {
            None | Some("") => None,
            Some(p) if p.starts_with('/') => Some(p.to_string()),
            Some(p) => {
                return Err(ConfigError::new(
                    "path",
                    format!("{p:?} must start with `/`"),
                ))
            }
        };
        let standard = match cfg.get_or("format", "cloudevents").trim() {
            "cloudevents" => false,
            "standard" => true,
            f => {
                return Err(ConfigError::new(
                    "format",
                    format!("{f:?}: expected cloudevents or standard"),
                ))
            }
        };
        Ok(Settings {
            standard,
            source_prefix: cfg.get_or("source_prefix", "switchyard/").to_string(),
            type_prefix: cfg.get_or("type_prefix", "").to_string(),
            method,
            path,
        })
    }

    /// The CloudEvent for `ev`.
    pub fn cloudevent(&self, ev: &Event) -> Value {
        let mut ce = json!({
            "specversion": "1.0",
            "id": ev.id,
            "source": format!("{}{}", self.source_prefix, ev.source),
            "type": format!("{}{}", self.type_prefix, ev.topic),
            "datacontenttype": "application/json",
            "data": {
                "op": ev.op.as_str(),
                "key": ev.key,
                "before": ev.before,
                "after": ev.after,
                "data": ev.data,
                "changed": ev.changed,
                "consent": ev.consent,
                "attributes": ev.attributes,
                "commit": ev.commit,
            },
        });
        let obj = ce.as_object_mut().expect("an object");
        // Optional context attributes are omitted rather than empty.
        if !ev.account_id.is_empty() {
            obj.insert("subject".into(), json!(ev.account_id));
        }
        if !ev.occurred_at.is_empty() {
            obj.insert("time".into(), json!(ev.occurred_at));
        }
        if let Some(tp) = &ev.traceparent {
            // Distributed Tracing extension.
            obj.insert("traceparent".into(), json!(tp));
        }
        ce
    }

    /// The Standard Webhooks payload for `ev`: `type` (the topic),
    /// `timestamp` (the source time) and `data` (the canonical event's fields).
    pub fn standard_payload(&self, ev: &Event) -> Value {
        json!({
            "type": format!("{}{}", self.type_prefix, ev.topic),
            "timestamp": if ev.occurred_at.is_empty() { &ev.ingested_at } else { &ev.occurred_at },
            "data": {
                "id": ev.id,
                "account_id": ev.account_id,
                "source": ev.source,
                "op": ev.op.as_str(),
                "key": ev.key,
                "before": ev.before,
                "after": ev.after,
                "data": ev.data,
                "changed": ev.changed,
                "consent": ev.consent,
                "attributes": ev.attributes,
            },
        })
    }

    /// The request for `ev`.
    pub fn request(&self, ev: &Event) -> Result<Output, Error> {
        let mut out = if self.standard {
            Output::request(
                serde_json_bytes(&self.standard_payload(ev)),
                "application/json",
            )
        } else {
            Output::request(serde_json_bytes(&self.cloudevent(ev)), CONTENT_TYPE)
        };
        if let Some(m) = &self.method {
            out = out.method(m.clone());
        }
        if let Some(p) = &self.path {
            out = out.path(p.clone());
        }
        Ok(out)
    }
}

fn serde_json_bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev() -> Event {
        Event::from_json(
            r#"{"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","topic":"customer.banner-a.email_changed","source":"crm",
            "op":"soft_delete","account_id":"42","key":{"id":42},"before":{"email":"a@x.com"},"after":{"email":"b@x.com"},
            "changed":["email"],"occurred_at":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z",
            "commit":{"id":"0/16B3748","seq":3},"trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "consent":{"email":"granted"},"attributes":{"banner":"a"}}"#,
        )
        .unwrap()
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn structured_cloudevent() {
        let out = settings(&[]).request(&ev()).unwrap();
        let req = out.as_request().unwrap();
        assert_eq!(req.content_type, "application/cloudevents+json");
        assert_eq!(req.method, None);
        assert_eq!(req.path, None);
        assert_eq!(
            req.json().unwrap(),
            json!({
                "specversion": "1.0",
                "id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                "source": "switchyard/crm",
                "type": "customer.banner-a.email_changed",
                "subject": "42",
                "time": "2026-01-01T00:00:00Z",
                "datacontenttype": "application/json",
                "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "data": {
                    "op": "soft_delete",
                    "key": {"id": 42},
                    "before": {"email": "a@x.com"},
                    "after": {"email": "b@x.com"},
                    "data": null,
                    "changed": ["email"],
                    "consent": {"email": "granted"},
                    "attributes": {"banner": "a"},
                    "commit": {"id": "0/16B3748", "seq": 3}
                }
            })
        );
    }

    #[test]
    fn optional_attributes_are_omitted_and_config_applies() {
        let mut e = Event::new("order.created", switchyard_guest::Op::Event);
        e.id = "x".into();
        e.source = "shop".into();
        e.data = Some(json!({"total": 10}));
        let out = settings(&[
            ("method", "put"),
            ("path", "/hooks/sy"),
            ("source_prefix", "urn:acme:"),
            ("type_prefix", "com.acme."),
        ])
        .request(&e)
        .unwrap();
        let req = out.as_request().unwrap();
        assert_eq!(req.method.as_deref(), Some("PUT"));
        assert_eq!(req.path.as_deref(), Some("/hooks/sy"));
        let ce = req.json().unwrap();
        assert_eq!(ce["source"], "urn:acme:shop");
        assert_eq!(ce["type"], "com.acme.order.created");
        for absent in ["subject", "time", "traceparent"] {
            assert!(ce.get(absent).is_none(), "{absent}");
        }
        assert_eq!(ce["data"]["data"], json!({"total": 10}));
        assert_eq!(ce["data"]["commit"], Value::Null);
        assert_eq!(ce["data"]["changed"], json!([]));
    }

    #[test]
    fn standard_webhooks_payload() {
        let out = settings(&[("format", "standard"), ("type_prefix", "com.acme.")])
            .request(&ev())
            .unwrap();
        let req = out.as_request().unwrap();
        assert_eq!(req.content_type, "application/json");
        assert!(
            req.headers.is_empty(),
            "signing is the router's (auth.type = \"hmac\")"
        );
        assert_eq!(
            req.json().unwrap(),
            json!({
                "type": "com.acme.customer.banner-a.email_changed",
                "timestamp": "2026-01-01T00:00:00Z",
                "data": {
                    "id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "account_id": "42", "source": "crm", "op": "soft_delete",
                    "key": {"id": 42}, "before": {"email": "a@x.com"}, "after": {"email": "b@x.com"}, "data": null,
                    "changed": ["email"], "consent": {"email": "granted"}, "attributes": {"banner": "a"}
                }
            })
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        assert!(
            Settings::from_config(&Config::from_pairs([("format", "xml")]))
                .unwrap_err()
                .to_string()
                .starts_with("config `format`")
        );
        let err = |pairs: &[(&str, &str)]| {
            Settings::from_config(&Config::from_pairs(pairs.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("path", "hooks")]).starts_with("config `path`"));
        assert!(err(&[("method", "PO ST")]).starts_with("config `method`"));
        assert!(err(&[("url", "x")]).starts_with("config `url`: unknown key"));
    }
}
