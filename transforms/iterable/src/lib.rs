//! `iterable`: customer events → Iterable `POST /api/users/update` and
//! `DELETE /api/users/byUserId/{userId}` / `DELETE /api/users/{email}`. See README.md.

use customer::{action, check_keys, url, Action, Fields, Outcome, Profile};
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
            log::info!("iterable: skipped event {} ({}): {reason}", ev.id, ev.topic);
            Ok(vec![])
        }
    }
}

/// One event's Iterable item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A `users/update` body (also one element of `users/bulkUpdate`'s `users`).
    Update(Value),
    DeleteByUserId(String),
    DeleteByEmail(String),
}

impl Item {
    pub fn request(&self) -> Result<Output, Error> {
        Ok(match self {
            Item::Update(user) => Output::json(user)?.method("POST").path("/api/users/update"),
            Item::DeleteByUserId(id) => Output::request(Vec::new(), "application/json")
                .method("DELETE")
                .path(format!("/api/users/byUserId/{}", url::segment(id))),
            Item::DeleteByEmail(e) => Output::request(Vec::new(), "application/json")
                .method("DELETE")
                .path(format!("/api/users/{}", url::segment(e))),
        })
    }
}

const OWN: &[&str] = &["identify_by"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdentifyBy {
    UserId,
    Email,
}

#[derive(Debug)]
pub struct Mapping {
    fields: Fields,
    by: IdentifyBy,
}

impl Mapping {
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        check_keys(cfg, OWN)?;
        let by = match cfg.get_or("identify_by", "user_id").trim() {
            "user_id" => IdentifyBy::UserId,
            "email" => IdentifyBy::Email,
            o => {
                return Err(ConfigError::new(
                    "identify_by",
                    format!("{o:?}: expected user_id or email"),
                ))
            }
        };
        Ok(Mapping {
            fields: Fields::from_config(cfg)?,
            by,
        })
    }

    pub fn item(&self, ev: &Event) -> Result<Outcome<Item>, Error> {
        let p = self.fields.profile(ev);
        let user_id = p
            .external_id
            .clone()
            .filter(|_| self.by == IdentifyBy::UserId);
        match action(ev) {
            Action::Skip(r) => Ok(Outcome::Skip(r)),
            Action::Delete => match (user_id, &p.email) {
                (Some(id), _) => Ok(Outcome::Send(Item::DeleteByUserId(id))),
                (None, Some(e)) => Ok(Outcome::Send(Item::DeleteByEmail(e.clone()))),
                (None, None) => Err(self.no_identifier()),
            },
            Action::Upsert(_) => {
                if user_id.is_none() && p.email.is_none() {
                    return Err(self.no_identifier());
                }
                Ok(Outcome::Send(Item::Update(self.user(&p, user_id))))
            }
        }
    }

    fn no_identifier(&self) -> Error {
        let by = if self.by == IdentifyBy::UserId {
            "userId (account_id or external_id_field) and "
        } else {
            ""
        };
        Error::fatal(format!(
            "no Iterable user identifier: {by}email are missing"
        ))
    }

    /// The `users/update` body.
    fn user(&self, p: &Profile, user_id: Option<String>) -> Value {
        let mut fields = switchyard_guest::serde_json::Map::new();
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                fields.insert(k.into(), v);
            }
        };
        put("firstName", p.first_name.clone().map(Value::from));
        put("lastName", p.last_name.clone().map(Value::from));
        put("phoneNumber", p.phone_e164().map(Value::from));
        if let Some(a) = &p.address {
            let mut o = switchyard_guest::serde_json::Map::new();
            for (k, v) in [
                ("line1", &a.line1),
                ("line2", &a.line2),
                ("city", &a.city),
                ("region", &a.region),
                ("postalCode", &a.postal_code),
                ("country", &a.country),
            ] {
                if let Some(v) = v {
                    o.insert(k.into(), Value::from(v.clone()));
                }
            }
            put("address", Some(Value::Object(o)));
        }
        put("tier", p.tier.clone().map(Value::from));
        put(
            "subscriptionStatus",
            p.subscription.clone().map(Value::from),
        );
        if !p.consent.is_empty() {
            put("consent", Some(json!(p.consent)));
        }
        for (k, v) in &p.properties {
            fields.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut user = json!({ "dataFields": fields, "mergeNestedObjects": true });
        let o = user.as_object_mut().expect("object");
        if let Some(e) = &p.email {
            o.insert("email".into(), json!(e));
        }
        if let Some(id) = user_id {
            o.insert("userId".into(), json!(id));
            o.insert("preferUserId".into(), json!(true));
        }
        user
    }
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
    fn update_body() {
        let mut e = ev(
            "customer.a.address_changed",
            json!({"email":"ada@x.com","phone":"(555) 010-9999","address":{"line1":"1 Main","zip":"10001","country":"US"},"tier":"gold"}),
        );
        e.consent.insert("email".into(), "denied".into());
        let r = req(mapping(&[("phone_country_code", "1")]).item(&e).unwrap());
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (Some("POST"), Some("/api/users/update"))
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"email":"ada@x.com","userId":"42","preferUserId":true,"mergeNestedObjects":true,
                   "dataFields":{"phoneNumber":"+15550109999","address":{"line1":"1 Main","postalCode":"10001","country":"US"},
                                 "tier":"gold","consent":{"email":"denied"}}})
        );
        let r = req(mapping(&[("identify_by", "email")])
            .item(&ev("customer.a.email_changed", json!({"email":"b@x.com"})))
            .unwrap());
        assert_eq!(
            r.json().unwrap(),
            json!({"email":"b@x.com","mergeNestedObjects":true,"dataFields":{}})
        );
    }

    #[test]
    fn deletes() {
        let r = req(mapping(&[])
            .item(&ev(
                "customer.a.deletion_requested",
                json!({"email":"a+b@x.com"}),
            ))
            .unwrap());
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref(), r.body.len()),
            (Some("DELETE"), Some("/api/users/byUserId/42"), 0)
        );
        let r = req(mapping(&[("identify_by", "email")])
            .item(&ev(
                "customer.a.deletion_requested",
                json!({"email":"a+b@x.com"}),
            ))
            .unwrap());
        assert_eq!(r.path.as_deref(), Some("/api/users/a%2Bb%40x.com"));
        let err = mapping(&[("identify_by", "email")])
            .item(&ev("customer.a.deletion_requested", json!({})))
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
        assert!(err(&[("identify_by", "phone")]).starts_with("config `identify_by`"));
        assert!(err(&[("api_key", "x")]).starts_with("config `api_key`: unknown key"));
    }
}
