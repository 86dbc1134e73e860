//! `braze`: customer events → Braze `POST /users/track` (attributes) and
//! `POST /users/delete`. See README.md.

use customer::{action, check_keys, Action, Fields, Outcome, Profile};
use switchyard_guest::{
    json, log, transform, Batch, Config, ConfigError, Error, Event, ItemOutcome, Output, Request,
    State, Value,
};

static MAPPING: State<Mapping> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    MAPPING.set(Mapping::from_config(cfg)?);
    Ok(())
}

#[transform(init = init, batch = batch, batch_response = response)]
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

/// Braze's limit: attributes objects per `/users/track` request.
pub const MAX_TRACK: usize = 75;
/// Braze's limit: users per `/users/delete` request.
pub const MAX_DELETE: usize = 50;

fn batch(events: Vec<Event>, _cfg: &Config) -> Result<Batch, Error> {
    MAPPING.get().batch(&events)
}

fn response(req: &Request, items: usize, status: u16, body: &[u8]) -> Vec<ItemOutcome> {
    item_outcomes(req, items, status, body)
}

/// Braze reports "minor errors" of `/users/track` per object: a 2xx with
/// `{"message": "success", "errors": [{"type": "...", "input_array":
/// "attributes", "index": 3}]}`; those objects were not applied (bad data:
/// dead-letter them), the others were. Anything else has no per-item detail:
/// the status decides for every item.
pub fn item_outcomes(req: &Request, items: usize, status: u16, body: &[u8]) -> Vec<ItemOutcome> {
    if req.path.as_deref() != Some("/users/track") || !(200..300).contains(&status) {
        return Vec::new();
    }
    let Ok(v) = switchyard_guest::serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let Some(errors) = v.get("errors").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut out = vec![ItemOutcome::Ok; items];
    for e in errors {
        if e.get("input_array").and_then(Value::as_str) != Some("attributes") {
            continue;
        }
        let Some(i) = e.get("index").and_then(Value::as_u64).map(|i| i as usize) else {
            continue;
        };
        if i < items {
            let why = e.get("type").and_then(Value::as_str).unwrap_or("rejected");
            out[i] = ItemOutcome::Fail(format!("Braze rejected attributes[{i}]: {why}"));
        }
    }
    out
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

    /// Several events in as few requests as Braze allows: `/users/track`
    /// with up to 75 attributes objects, `/users/delete` with up to 50 users.
    pub fn batch(&self, events: &[Event]) -> Result<Batch, Error> {
        let mut b = Batch::default();
        let (mut tracks, mut deletes) = (Vec::new(), Vec::new());
        for (i, ev) in events.iter().enumerate() {
            match self.item(ev) {
                Ok(Outcome::Send(Item::Track(a))) => tracks.push((i, a)),
                Ok(Outcome::Send(Item::Delete(k, id))) => deletes.push((i, k, id)),
                Ok(Outcome::Skip(reason)) => {
                    log::info!("braze: skipped event {} ({}): {reason}", ev.id, ev.topic)
                }
                Err(e) => b = b.fail(i, e),
            }
        }
        for chunk in tracks.chunks(MAX_TRACK) {
            let attrs: Vec<&Value> = chunk.iter().map(|(_, a)| a).collect();
            let out = Output::json(&json!({ "attributes": attrs }))?
                .method("POST")
                .path("/users/track");
            b = b.request(out, chunk.iter().map(|(i, _)| *i));
        }
        for chunk in deletes.chunks(MAX_DELETE) {
            // Items in body order: external ids, then emails.
            let mut body = switchyard_guest::serde_json::Map::new();
            let mut order = Vec::new();
            for key in ["external_ids", "email_addresses"] {
                let ids: Vec<&String> = chunk
                    .iter()
                    .filter(|(_, k, _)| *k == key)
                    .map(|(i, _, id)| {
                        order.push(*i);
                        id
                    })
                    .collect();
                if !ids.is_empty() {
                    body.insert(key.into(), json!(ids));
                }
            }
            let out = Output::json(&Value::Object(body))?
                .method("POST")
                .path("/users/delete");
            b = b.request(out, order);
        }
        Ok(b)
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
    fn batch_groups_tracks_by_75_and_deletes_and_fails_alone() {
        let m = mapping(&[]);
        let mut events: Vec<Event> = (0..80)
            .map(|i| {
                let mut e = ev(
                    "customer.a.created",
                    json!({"email": format!("u{i}@x.com")}),
                    &[],
                );
                e.account_id = format!("a{i}");
                e
            })
            .collect();
        let mut del = ev("customer.a.deletion_requested", json!({}), &[]);
        del.account_id = "gone".into();
        events.push(del);
        let mut bad = ev("customer.a.created", json!({}), &[]);
        bad.account_id.clear();
        events.push(bad);
        let b = m.batch(&events).unwrap();
        assert_eq!(b.requests.len(), 3);
        let r0 = b.requests[0].request.as_request().unwrap();
        assert_eq!(r0.path.as_deref(), Some("/users/track"));
        let body = r0.json().unwrap();
        assert_eq!(body["attributes"].as_array().unwrap().len(), 75);
        assert_eq!(
            body["attributes"][3],
            json!({"external_id":"a3","email":"u3@x.com"})
        );
        assert_eq!(b.requests[0].items, (0..75).collect::<Vec<_>>());
        assert_eq!(b.requests[1].items, (75..80).collect::<Vec<_>>());
        let r2 = b.requests[2].request.as_request().unwrap();
        assert_eq!(
            (r2.path.as_deref(), r2.json().unwrap()),
            (Some("/users/delete"), json!({"external_ids":["gone"]}))
        );
        assert_eq!(b.requests[2].items, vec![80]);
        assert_eq!(b.failed.len(), 1);
        assert_eq!(b.failed[0].0, 81);
    }

    #[test]
    fn minor_errors_fail_their_items_only() {
        let req = Output::json(&json!({"attributes": []}))
            .unwrap()
            .path("/users/track");
        let req = req.as_request().unwrap();
        let body = br#"{"message":"success","errors":[{"type":"'external_id' or 'braze_id' or 'user_alias' is required","input_array":"attributes","index":1}]}"#;
        let o = item_outcomes(req, 3, 201, body);
        assert_eq!(o[0], ItemOutcome::Ok);
        assert!(matches!(&o[1], ItemOutcome::Fail(m) if m.contains("attributes[1]")));
        assert_eq!(o[2], ItemOutcome::Ok);
        assert!(item_outcomes(req, 3, 201, br#"{"message":"success"}"#).is_empty());
        assert!(item_outcomes(req, 3, 400, body).is_empty());
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
