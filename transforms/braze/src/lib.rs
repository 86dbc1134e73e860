//! `braze`: customer events → Braze `POST /users/track` (attributes) and
//! `POST /users/delete`. See README.md.

use customer::{action, check_keys, Action, Fields, Outcome, Profile};
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
    let m = MAPPING.get();
    match m.item(&ev)? {
        Outcome::Send(item) => Ok(vec![item.request()?]),
        Outcome::Skip(reason) => {
            log::info!("braze: skipped event {} ({}): {reason}", ev.id, ev.topic);
            Ok(vec![])
        }
    }
}

/// One event's contribution to a Braze request.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// One user attributes object of `/users/track`'s `attributes` array.
    Track(Value),
    /// Who to delete: (`external_ids` | `email_addresses`, value) of `/users/delete`.
    Delete(&'static str, String),
}

impl Item {
    /// The request for this one item.
    pub fn request(&self) -> Result<Output, Error> {
        let (path, body) = match self {
            Item::Track(attrs) => ("/users/track", json!({ "attributes": [attrs] })),
            Item::Delete(key, id) => ("/users/delete", json!({ *key: [id] })),
        };
        Ok(Output::json(&body)?.method("POST").path(path))
    }
}

const OWN: &[&str] = &["sms_subscription_group_id", "update_existing_only"];

/// Parsed configuration.
#[derive(Debug)]
pub struct Mapping {
    fields: Fields,
    sms_group: Option<String>,
    update_existing_only: bool,
}

/// Braze's subscription state for a consent value (`unknown` → none).
fn subscribe_state(consent: Option<&str>) -> Option<&'static str> {
    match consent {
        Some("granted") => Some("opted_in"),
        Some("denied") => Some("unsubscribed"),
        _ => None,
    }
}

impl Mapping {
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        check_keys(cfg, OWN)?;
        Ok(Mapping {
            fields: Fields::from_config(cfg)?,
            sms_group: cfg
                .get("sms_subscription_group_id")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
            update_existing_only: cfg.bool("update_existing_only", false)?,
        })
    }

    /// The Braze item for `ev`, or why it is skipped. Fatal if the person has
    /// neither an external id nor an email.
    pub fn item(&self, ev: &Event) -> Result<Outcome<Item>, Error> {
        let p = self.fields.profile(ev);
        match action(ev) {
            Action::Skip(r) => Ok(Outcome::Skip(r)),
            Action::Delete => match (&p.external_id, &p.email) {
                (Some(id), _) => Ok(Outcome::Send(Item::Delete("external_ids", id.clone()))),
                (None, Some(e)) => Ok(Outcome::Send(Item::Delete("email_addresses", e.clone()))),
                (None, None) => Err(self.no_identifier()),
            },
            Action::Upsert(_) => {
                if p.external_id.is_none() && p.email.is_none() {
                    return Err(self.no_identifier());
                }
                Ok(Outcome::Send(Item::Track(self.attributes(&p))))
            }
        }
    }

    fn no_identifier(&self) -> Error {
        Error::fatal("no Braze user identifier: external id (account_id or external_id_field) and email are both missing")
    }

    /// The user attributes object: standard attributes, then custom ones.
    pub fn attributes(&self, p: &Profile) -> Value {
        let mut a = switchyard_guest::serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                a.insert(k.into(), v);
            }
        };
        put("external_id", p.external_id.clone().map(Value::from));
        put("email", p.email.clone().map(Value::from));
        put("phone", p.phone_e164().map(Value::from));
        put("first_name", p.first_name.clone().map(Value::from));
        put("last_name", p.last_name.clone().map(Value::from));
        if let Some(addr) = &p.address {
            put("home_city", addr.city.clone().map(Value::from));
            put("country", addr.country.clone().map(Value::from));
        }
        put(
            "email_subscribe",
            subscribe_state(p.consent("email")).map(Value::from),
        );
        put(
            "push_subscribe",
            subscribe_state(p.consent("push")).map(Value::from),
        );
        if let (Some(group), Some(state)) = (&self.sms_group, p.consent("sms")) {
            let state = match state {
                "granted" => Some("subscribed"),
                "denied" => Some("unsubscribed"),
                _ => None,
            };
            if let Some(state) = state {
                put(
                    "subscription_groups",
                    Some(json!([{"subscription_group_id": group, "subscription_state": state}])),
                );
            }
        }
        put("tier", p.tier.clone().map(Value::from));
        put(
            "subscription_status",
            p.subscription.clone().map(Value::from),
        );
        for (k, v) in &p.properties {
            a.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if self.update_existing_only {
            a.insert("_update_existing_only".into(), Value::Bool(true));
        }
        Value::Object(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(pairs: &[(&str, &str)]) -> Mapping {
        Mapping::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn ev(topic: &str, data: Value, consent: &[(&str, &str)]) -> Event {
        let mut e = Event::from_json(&format!(
            r#"{{"id":"e1","topic":"{topic}","op":"event","account_id":"42"}}"#
        ))
        .unwrap();
        e.data = Some(data);
        for (k, v) in consent {
            e.consent.insert(k.to_string(), v.to_string());
        }
        e
    }

    fn req(o: Outcome<Item>) -> (String, Value) {
        let Outcome::Send(item) = o else {
            panic!("skipped: {o:?}")
        };
        let out = item.request().unwrap();
        let r = out.as_request().unwrap();
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert_eq!(r.content_type, "application/json");
        (r.path.clone().unwrap(), r.json().unwrap())
    }

    #[test]
    fn created_maps_standard_and_custom_attributes() {
        let m = mapping(&[
            ("sms_subscription_group_id", "grp-1"),
            ("properties", "plan"),
        ]);
        let (path, body) = req(m
            .item(&ev(
                "customer.a.created",
                json!({"email":"ada@x.com","phone":"+44 7700 900123","first_name":"Ada","last_name":"L",
                       "address":{"city":"Leeds","country":"GB"},"tier":"gold","plan":"p1"}),
                &[("email", "granted"), ("sms", "denied"), ("push", "unknown")],
            ))
            .unwrap());
        assert_eq!(path, "/users/track");
        assert_eq!(
            body,
            json!({"attributes":[{"external_id":"42","email":"ada@x.com","phone":"+447700900123","first_name":"Ada","last_name":"L",
                "home_city":"Leeds","country":"GB","email_subscribe":"opted_in",
                "subscription_groups":[{"subscription_group_id":"grp-1","subscription_state":"unsubscribed"}],
                "tier":"gold","plan":"p1"}]})
        );
    }

    #[test]
    fn subscription_topic_sets_the_status_and_update_existing_only() {
        let m = mapping(&[("update_existing_only", "true")]);
        let (_, body) = req(m
            .item(&ev(
                "customer.a.subscription_cancelled",
                json!({"plan":"gold"}),
                &[],
            ))
            .unwrap());
        assert_eq!(
            body,
            json!({"attributes":[{"external_id":"42","subscription_status":"cancelled","_update_existing_only":true}]})
        );
    }

    #[test]
    fn deletion_and_row_deletes() {
        let m = mapping(&[]);
        let (path, body) = req(m
            .item(&ev(
                "customer.a.deletion_requested",
                json!({"email":"a@b.c"}),
                &[],
            ))
            .unwrap());
        assert_eq!(
            (path.as_str(), body),
            ("/users/delete", json!({"external_ids":["42"]}))
        );
        let mut e = ev(
            "customer.a.deletion_requested",
            json!({"email":"a@b.c"}),
            &[],
        );
        e.account_id.clear();
        assert_eq!(
            req(m.item(&e).unwrap()).1,
            json!({"email_addresses":["a@b.c"]})
        );
        e.data = Some(json!({}));
        assert!(!m.item(&e).unwrap_err().retryable);
        let mut d = ev("customer.a.delete", json!({}), &[]);
        d.op = switchyard_guest::Op::Delete;
        assert!(matches!(m.item(&d).unwrap(), Outcome::Skip(_)));
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |p: &[(&str, &str)]| {
            Mapping::from_config(&Config::from_pairs(p.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("api_key", "x")]).starts_with("config `api_key`: unknown key"));
        assert!(
            err(&[("update_existing_only", "maybe")]).starts_with("config `update_existing_only`")
        );
    }
}
