//! `customerio`: customer events → Customer.io Track API (v1): identify
//! (`PUT /api/v1/customers/{id}`), track (`POST /api/v1/customers/{id}/events`),
//! suppress (`POST /api/v1/customers/{id}/suppress`) or delete
//! (`DELETE /api/v1/customers/{id}`). See README.md.

use customer::{action, check_keys, url, Action, Fields, Kind, Outcome, Profile};
use switchyard_guest::{
    json, log, transform, Config, ConfigError, Error, Event, Output, State, Value,
};

static MAPPING: State<Mapping> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    MAPPING.set(Mapping::from_config(cfg)?);
    Ok(())
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    match MAPPING.get().item(&ev)? {
        Outcome::Send(item) => Ok(vec![item.request()?]),
        Outcome::Skip(reason) => {
            log::info!(
                "customerio: skipped event {} ({}): {reason}",
                ev.id,
                ev.topic
            );
            Ok(vec![])
        }
    }
}

/// One event's Customer.io call, for the person `id`.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Identify {
        id: String,
        attributes: Value,
    },
    /// `timestamp`: Unix seconds of the event's source time (replays and
    /// backfills keep their real time).
    Track {
        id: String,
        name: String,
        data: Value,
        timestamp: Option<i64>,
    },
    Suppress {
        id: String,
    },
    Delete {
        id: String,
    },
}

impl Item {
    pub fn request(&self) -> Result<Output, Error> {
        let base = |id: &str| format!("/api/v1/customers/{}", url::segment(id));
        Ok(match self {
            Item::Identify { id, attributes } => {
                Output::json(attributes)?.method("PUT").path(base(id))
            }
            Item::Track {
                id,
                name,
                data,
                timestamp,
            } => {
                let mut body = json!({"name": name, "data": data});
                if let Some(t) = timestamp {
                    body["timestamp"] = json!(t);
                }
                Output::json(&body)?
                    .method("POST")
                    .path(format!("{}/events", base(id)))
            }
            Item::Suppress { id } => Output::request(Vec::new(), "application/json")
                .method("POST")
                .path(format!("{}/suppress", base(id))),
            Item::Delete { id } => Output::request(Vec::new(), "application/json")
                .method("DELETE")
                .path(base(id)),
        })
    }
}

const OWN: &[&str] = &["track", "on_deletion"];

#[derive(Debug)]
pub struct Mapping {
    fields: Fields,
    /// Kinds sent as track events (by canonical kind name).
    track: Vec<String>,
    suppress: bool,
}

const KINDS: &[&str] = &[
    "created",
    "email_changed",
    "phone_changed",
    "address_changed",
    "consent_changed",
    "tier_changed",
    "subscription_changed",
    "other",
];

impl Mapping {
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        check_keys(cfg, OWN)?;
        let track = if cfg.get("track").is_some() {
            cfg.list("track")
        } else {
            vec!["subscription_changed".to_string()]
        };
        if let Some(bad) = track.iter().find(|k| !KINDS.contains(&k.as_str())) {
            return Err(ConfigError::new(
                "track",
                format!("{bad:?} is not one of {}", KINDS.join(", ")),
            ));
        }
        let suppress = match cfg.get_or("on_deletion", "suppress").trim() {
            "suppress" => true,
            "delete" => false,
            o => {
                return Err(ConfigError::new(
                    "on_deletion",
                    format!("{o:?}: expected suppress or delete"),
                ))
            }
        };
        Ok(Mapping {
            fields: Fields::from_config(cfg)?,
            track,
            suppress,
        })
    }

    pub fn item(&self, ev: &Event) -> Result<Outcome<Item>, Error> {
        let p = self.fields.profile(ev);
        let Some(id) = p.external_id.clone().or_else(|| p.email.clone()) else {
            return match action(ev) {
                Action::Skip(r) => Ok(Outcome::Skip(r)),
                _ => Err(Error::fatal("no Customer.io identifier: account_id (or external_id_field) and email are missing")),
            };
        };
        Ok(match action(ev) {
            Action::Skip(r) => Outcome::Skip(r),
            Action::Delete if self.suppress => Outcome::Send(Item::Suppress { id }),
            Action::Delete => Outcome::Send(Item::Delete { id }),
            Action::Upsert(kind) if self.track.iter().any(|k| k == kind.as_str()) => {
                let name = if kind == Kind::Other {
                    ev.topic.clone()
                } else {
                    ev.topic.rsplit('.').next().unwrap_or_default().to_string()
                };
                let mut data = match self.fields.payload(ev) {
                    Some(Value::Object(m)) => Value::Object(m.clone()),
                    _ => json!({}),
                };
                if let (Some(s), Some(o)) = (&p.subscription, data.as_object_mut()) {
                    o.entry("subscription_status").or_insert_with(|| json!(s));
                }
                Outcome::Send(Item::Track {
                    id,
                    name,
                    data,
                    timestamp: customer::unix_seconds(&ev.occurred_at),
                })
            }
            Action::Upsert(_) => Outcome::Send(Item::Identify {
                id,
                attributes: attributes(&p),
            }),
        })
    }
}

/// Identify attributes: reserved `email`, `unsubscribed`, then the rest.
fn attributes(p: &Profile) -> Value {
    let mut a = switchyard_guest::serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            a.insert(k.into(), v);
        }
    };
    put("email", p.email.clone().map(Value::from));
    put("phone", p.phone_e164().map(Value::from));
    put("first_name", p.first_name.clone().map(Value::from));
    put("last_name", p.last_name.clone().map(Value::from));
    if let Some(addr) = &p.address {
        put("address_line1", addr.line1.clone().map(Value::from));
        put("address_line2", addr.line2.clone().map(Value::from));
        put("city", addr.city.clone().map(Value::from));
        put("region", addr.region.clone().map(Value::from));
        put("postal_code", addr.postal_code.clone().map(Value::from));
        put("country", addr.country.clone().map(Value::from));
    }
    put("tier", p.tier.clone().map(Value::from));
    put(
        "subscription_status",
        p.subscription.clone().map(Value::from),
    );
    match p.consent("email") {
        Some("granted") => put("unsubscribed", Some(Value::Bool(false))),
        Some("denied") => put("unsubscribed", Some(Value::Bool(true))),
        _ => {}
    }
    for (k, v) in &p.properties {
        a.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(pairs: &[(&str, &str)]) -> Mapping {
        Mapping::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn ev(topic: &str, data: Value) -> Event {
        let mut e = Event::from_json(&format!(
            r#"{{"id":"e1","topic":"{topic}","op":"event","account_id":"42"}}"#
        ))
        .unwrap();
        e.data = Some(data);
        e
    }

    fn req(o: Outcome<Item>) -> switchyard_guest::Request {
        let Outcome::Send(item) = o else {
            panic!("skipped: {o:?}")
        };
        item.request().unwrap().as_request().unwrap().clone()
    }

    #[test]
    fn identify_track_and_consent() {
        let mut e = ev(
            "customer.a.consent_changed",
            json!({"email":"ada@x.com","first_name":"Ada"}),
        );
        e.consent.insert("email".into(), "denied".into());
        let r = req(mapping(&[]).item(&e).unwrap());
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (Some("PUT"), Some("/api/v1/customers/42"))
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"email":"ada@x.com","first_name":"Ada","unsubscribed":true})
        );
        let mut e = ev(
            "customer.a.subscription_cancelled",
            json!({"plan":"gold","reason":"moving"}),
        );
        e.occurred_at = "2026-11-30T10:00:00Z".into();
        let r = req(mapping(&[]).item(&e).unwrap());
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (Some("POST"), Some("/api/v1/customers/42/events"))
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"name":"subscription_cancelled","data":{"plan":"gold","reason":"moving","subscription_status":"cancelled"},"timestamp":1796032800})
        );
        // tier_changed is an identify unless configured as a track event.
        let r = req(mapping(&[])
            .item(&ev("customer.a.tier_changed", json!({"tier":"gold"})))
            .unwrap());
        assert_eq!(r.json().unwrap(), json!({"tier":"gold"}));
        let r = req(mapping(&[("track", "tier_changed")])
            .item(&ev("customer.a.tier_changed", json!({"tier":"gold"})))
            .unwrap());
        assert_eq!(
            r.json().unwrap(),
            json!({"name":"tier_changed","data":{"tier":"gold"}})
        );
    }

    #[test]
    fn deletion_suppresses_or_deletes() {
        let e = ev("customer.a.deletion_requested", json!({}));
        let r = req(mapping(&[]).item(&e).unwrap());
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref(), r.body.len()),
            (Some("POST"), Some("/api/v1/customers/42/suppress"), 0)
        );
        let r = req(mapping(&[("on_deletion", "delete")]).item(&e).unwrap());
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (Some("DELETE"), Some("/api/v1/customers/42"))
        );
        let mut e = ev(
            "customer.a.deletion_requested",
            json!({"email":"a/b@x.com"}),
        );
        e.account_id.clear();
        assert_eq!(
            req(mapping(&[]).item(&e).unwrap()).path.as_deref(),
            Some("/api/v1/customers/a%2Fb%40x.com/suppress")
        );
        e.data = Some(json!({}));
        assert!(!mapping(&[]).item(&e).unwrap_err().retryable);
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |p: &[(&str, &str)]| {
            Mapping::from_config(&Config::from_pairs(p.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("track", "orders")]).starts_with("config `track`"));
        assert!(err(&[("on_deletion", "forget")]).starts_with("config `on_deletion`"));
        assert!(err(&[("site_id", "x")]).starts_with("config `site_id`: unknown key"));
    }
}
