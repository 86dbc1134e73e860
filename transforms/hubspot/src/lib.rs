//! `hubspot`: customer events → HubSpot CRM contacts
//! (`POST /crm/v3/objects/contacts/batch/upsert`, one input) and GDPR delete
//! (`POST /crm/v3/objects/contacts/gdpr-delete`). See README.md.

use customer::{action, check_keys, first_text, Action, Fields, Kind, Outcome, Profile};
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
            log::info!("hubspot: skipped event {} ({}): {reason}", ev.id, ev.topic);
            Ok(vec![])
        }
    }
}

/// One event's HubSpot item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// One element of `batch/upsert`'s `inputs`.
    Upsert(Value),
    /// The `gdpr-delete` body.
    GdprDelete(Value),
}

impl Item {
    pub fn request(&self) -> Result<Output, Error> {
        Ok(match self {
            Item::Upsert(input) => Output::json(&json!({ "inputs": [input] }))?
                .method("POST")
                .path("/crm/v3/objects/contacts/batch/upsert"),
            Item::GdprDelete(body) => Output::json(body)?
                .method("POST")
                .path("/crm/v3/objects/contacts/gdpr-delete"),
        })
    }
}

const OWN: &[&str] = &["id_property", "tier_property", "subscription_property"];

#[derive(Debug)]
pub struct Mapping {
    fields: Fields,
    /// `email` (default) or a unique custom property holding the external id.
    id_property: String,
    tier_property: Option<String>,
    subscription_property: Option<String>,
}

fn prop_name(cfg: &Config, key: &str) -> Result<Option<String>, ConfigError> {
    match cfg.get(key).map(str::trim) {
        None | Some("") => Ok(None),
        Some(p) if p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            Ok(Some(p.to_string()))
        }
        Some(p) => Err(ConfigError::new(
            key,
            format!("{p:?} is not a HubSpot property name (letters, digits, `_`)"),
        )),
    }
}

impl Mapping {
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        check_keys(cfg, OWN)?;
        Ok(Mapping {
            fields: Fields::from_config(cfg)?,
            id_property: prop_name(cfg, "id_property")?.unwrap_or_else(|| "email".into()),
            tier_property: prop_name(cfg, "tier_property")?,
            subscription_property: prop_name(cfg, "subscription_property")?,
        })
    }

    fn by_email(&self) -> bool {
        self.id_property == "email"
    }

    pub fn item(&self, ev: &Event) -> Result<Outcome<Item>, Error> {
        let p = self.fields.profile(ev);
        let id = if self.by_email() {
            p.email.clone()
        } else {
            p.external_id.clone()
        };
        let missing = || {
            let what = if self.by_email() {
                "email"
            } else {
                "external id (account_id or external_id_field)"
            };
            Error::fatal(format!(
                "no HubSpot contact id: {what} for id_property {} is missing",
                self.id_property
            ))
        };
        match action(ev) {
            Action::Skip(r) => Ok(Outcome::Skip(r)),
            Action::Delete => {
                let id = id.ok_or_else(missing)?;
                let mut body = json!({ "objectId": id });
                if !self.by_email() {
                    body["idProperty"] = json!(self.id_property);
                } else {
                    body["idProperty"] = json!("email");
                }
                Ok(Outcome::Send(Item::GdprDelete(body)))
            }
            Action::Upsert(kind) => {
                let mut id = id.ok_or_else(missing)?;
                // An email change upserts the contact found by the old address
                // (by email, the new address would create a second contact).
                if self.by_email() && kind == Kind::EmailChanged {
                    if let Some(old) = first_text(ev.before.as_ref(), &["email".to_string()])
                        .filter(|e| e.contains('@'))
                    {
                        id = old;
                    }
                }
                Ok(Outcome::Send(Item::Upsert(json!({
                    "idProperty": self.id_property,
                    "id": id,
                    "properties": self.properties(&p),
                }))))
            }
        }
    }

    /// Contact properties (HubSpot's default property names).
    fn properties(&self, p: &Profile) -> Value {
        let mut a = switchyard_guest::serde_json::Map::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                a.insert(k.into(), Value::from(v));
            }
        };
        put("email", p.email.clone());
        put("firstname", p.first_name.clone());
        put("lastname", p.last_name.clone());
        put("phone", p.phone_e164());
        if let Some(addr) = &p.address {
            let street = match (&addr.line1, &addr.line2) {
                (Some(l1), Some(l2)) => Some(format!("{l1}, {l2}")),
                (l1, _) => l1.clone(),
            };
            put("address", street);
            put("city", addr.city.clone());
            put("state", addr.region.clone());
            put("zip", addr.postal_code.clone());
            put("country", addr.country.clone());
        }
        if !self.by_email() {
            put(&self.id_property, p.external_id.clone());
        }
        if let Some(tp) = &self.tier_property {
            put(tp, p.tier.clone());
        }
        if let Some(sp) = &self.subscription_property {
            put(sp, p.subscription.clone());
        }
        for (k, v) in &p.properties {
            // HubSpot property values are strings.
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            a.entry(k.clone()).or_insert(Value::String(s));
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

    fn ev(topic: &str, before: Option<Value>, after: Value) -> Event {
        let mut e = Event::from_json(&format!(
            r#"{{"id":"e1","topic":"{topic}","op":"update","account_id":"42"}}"#
        ))
        .unwrap();
        e.before = before;
        e.after = Some(after);
        e
    }

    fn req(o: Outcome<Item>) -> switchyard_guest::Request {
        let Outcome::Send(item) = o else {
            panic!("skipped: {o:?}")
        };
        item.request().unwrap().as_request().unwrap().clone()
    }

    #[test]
    fn upsert_by_email_and_email_change_uses_the_old_address() {
        let m = mapping(&[("tier_property", "loyalty_tier"), ("properties", "points")]);
        let r = req(m
            .item(&ev(
                "customer.a.address_changed",
                None,
                json!({"email":"ada@x.com","first_name":"Ada","phone":"+1 555 010 9999","address":{"line1":"1 Main","line2":"Apt 2","city":"NYC","state":"NY","zip":"10001","country":"US"},"tier":"gold","points":12}),
            ))
            .unwrap());
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (Some("POST"), Some("/crm/v3/objects/contacts/batch/upsert"))
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"inputs":[{"idProperty":"email","id":"ada@x.com","properties":{"email":"ada@x.com","firstname":"Ada","phone":"+15550109999",
                "address":"1 Main, Apt 2","city":"NYC","state":"NY","zip":"10001","country":"US","loyalty_tier":"gold","points":"12"}}]})
        );
        let r = req(m
            .item(&ev(
                "customer.a.email_changed",
                Some(json!({"email":"old@x.com"})),
                json!({"email":"new@x.com"}),
            ))
            .unwrap());
        assert_eq!(r.json().unwrap()["inputs"][0]["id"], "old@x.com");
        assert_eq!(
            r.json().unwrap()["inputs"][0]["properties"]["email"],
            "new@x.com"
        );
    }

    #[test]
    fn custom_id_property_and_gdpr_delete() {
        let m = mapping(&[("id_property", "switchyard_id")]);
        let r = req(m
            .item(&ev("customer.a.tier_changed", None, json!({"tier":"gold"})))
            .unwrap());
        assert_eq!(
            r.json().unwrap(),
            json!({"inputs":[{"idProperty":"switchyard_id","id":"42","properties":{"switchyard_id":"42"}}]})
        );
        let r = req(m
            .item(&ev("customer.a.deletion_requested", None, json!({})))
            .unwrap());
        assert_eq!(
            r.path.as_deref(),
            Some("/crm/v3/objects/contacts/gdpr-delete")
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"objectId":"42","idProperty":"switchyard_id"})
        );
        let r = req(mapping(&[])
            .item(&ev(
                "customer.a.deletion_requested",
                None,
                json!({"email":"a@x.com"}),
            ))
            .unwrap());
        assert_eq!(
            r.json().unwrap(),
            json!({"objectId":"a@x.com","idProperty":"email"})
        );
        let err = mapping(&[])
            .item(&ev("customer.a.tier_changed", None, json!({"tier":"gold"})))
            .unwrap_err();
        assert!(
            !err.retryable && err.message.contains("email"),
            "{}",
            err.message
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |p: &[(&str, &str)]| {
            Mapping::from_config(&Config::from_pairs(p.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("id_property", "a b")]).starts_with("config `id_property`"));
        assert!(err(&[("token", "x")]).starts_with("config `token`: unknown key"));
    }
}
