//! `meta-audiences`: customer events → Meta Custom Audience membership:
//! `POST /{audience_id}/users` (add) and `DELETE /{audience_id}/users`
//! (remove), body `{"payload": {"schema": [...], "data": [[...]]}}` with
//! SHA-256 of the normalised email and phone. See README.md.

use customer::{check_keys, hash, membership, Fields, Membership, Outcome};
use switchyard_guest::{
    json, log, transform, Batch, Config, ConfigError, Error, Event, Output, State, Value,
};

static MAPPING: State<Mapping> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    MAPPING.set(Mapping::from_config(cfg)?);
    Ok(())
}

#[transform(init = init, batch = batch)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    let m = MAPPING.get();
    match m.item(&ev)? {
        Outcome::Send(item) => Ok(vec![m.request(&item)?]),
        Outcome::Skip(reason) => {
            log::info!(
                "meta-audiences: skipped event {} ({}): {reason}",
                ev.id,
                ev.topic
            );
            Ok(vec![])
        }
    }
}

/// Meta's limit: rows per `/{audience_id}/users` request.
pub const MAX_ROWS: usize = 10_000;

/// Meta answers a batch with counts (`num_received`,
/// `num_invalid_entries`) and samples, not per-row results: no
/// `batch_response`, the status decides for every event.
fn batch(events: Vec<Event>, _cfg: &Config) -> Result<Batch, Error> {
    MAPPING.get().batch(&events)
}

/// One event's audience change: add or remove one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub op: Membership,
    /// Schema keys of the row (`EMAIL`, `PHONE`).
    pub schema: Vec<&'static str>,
    /// The row: lowercase hex SHA-256 per schema key.
    pub row: Vec<String>,
}

const OWN: &[&str] = &["audience_id", "consent_channel"];

#[derive(Debug)]
pub struct Mapping {
    fields: Fields,
    audience_id: String,
    channel: String,
}

/// Meta's phone normalisation: digits only, with the country code, no `+`
/// or leading zeros (the shared `phone_field`/`phone_country_code` reading).
pub fn phone_hash(digits: &str) -> String {
    hash::sha256_hex(digits.trim_start_matches('0'))
}

impl Mapping {
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        check_keys(cfg, OWN)?;
        let audience_id = cfg.require("audience_id")?.trim().to_string();
        if !audience_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(ConfigError::new(
                "audience_id",
                format!("{audience_id:?} is not a Custom Audience id (digits)"),
            ));
        }
        Ok(Mapping {
            fields: Fields::from_config(cfg)?,
            audience_id,
            channel: cfg.get_or("consent_channel", "ads").trim().to_string(),
        })
    }

    pub fn item(&self, ev: &Event) -> Result<Outcome<Item>, Error> {
        let p = self.fields.profile(ev);
        let op = match membership(ev, &p, &self.channel) {
            Outcome::Send(op) => op,
            Outcome::Skip(r) => return Ok(Outcome::Skip(r)),
        };
        let (mut schema, mut row) = (Vec::new(), Vec::new());
        if let Some(e) = &p.email {
            schema.push("EMAIL");
            row.push(hash::email(e));
        }
        if let Some(d) = &p.phone {
            schema.push("PHONE");
            row.push(phone_hash(d));
        }
        if row.is_empty() {
            return match op {
                Membership::Add => Ok(Outcome::Skip(format!(
                    "nothing to match on: no {}",
                    self.fields.describe_identifiers()
                ))),
                Membership::Remove => Err(Error::fatal(format!(
                    "cannot remove from the audience: no {}",
                    self.fields.describe_identifiers()
                ))),
            };
        }
        Ok(Outcome::Send(Item { op, schema, row }))
    }

    /// The `payload` of one item.
    pub fn payload(item: &Item) -> Value {
        json!({ "schema": item.schema, "data": [item.row] })
    }

    /// Rows of several events, one request per (add/remove, schema) with up
    /// to 10 000 rows: Meta requires every row of a request to follow its
    /// `schema`.
    pub fn batch(&self, events: &[Event]) -> Result<Batch, Error> {
        let mut b = Batch::default();
        let mut groups: Vec<((Membership, Vec<&'static str>), Vec<(usize, Vec<String>)>)> =
            Vec::new();
        for (i, ev) in events.iter().enumerate() {
            match self.item(ev) {
                Ok(Outcome::Send(item)) => {
                    let key = (item.op, item.schema);
                    match groups.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, rows)) => rows.push((i, item.row)),
                        None => groups.push((key, vec![(i, item.row)])),
                    }
                }
                Ok(Outcome::Skip(reason)) => log::info!(
                    "meta-audiences: skipped event {} ({}): {reason}",
                    ev.id,
                    ev.topic
                ),
                Err(e) => b = b.fail(i, e),
            }
        }
        for ((op, schema), rows) in groups {
            for chunk in rows.chunks(MAX_ROWS) {
                let data: Vec<&Vec<String>> = chunk.iter().map(|(_, r)| r).collect();
                let method = match op {
                    Membership::Add => "POST",
                    Membership::Remove => "DELETE",
                };
                let out = Output::json(&json!({ "payload": { "schema": schema, "data": data } }))?
                    .method(method)
                    .path(format!("/{}/users", self.audience_id));
                b = b.request(out, chunk.iter().map(|(i, _)| *i));
            }
        }
        Ok(b)
    }

    pub fn request(&self, item: &Item) -> Result<Output, Error> {
        let method = match item.op {
            Membership::Add => "POST",
            Membership::Remove => "DELETE",
        };
        Ok(Output::json(&json!({ "payload": Self::payload(item) }))?
            .method(method)
            .path(format!("/{}/users", self.audience_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use customer::hash::sha256_hex;

    fn mapping(pairs: &[(&str, &str)]) -> Mapping {
        let mut all = vec![("audience_id", "23850000000000001")];
        all.extend_from_slice(pairs);
        Mapping::from_config(&Config::from_pairs(all)).unwrap()
    }

    fn ev(topic: &str, data: Value, ads: Option<&str>) -> Event {
        let mut e = Event::from_json(&format!(
            r#"{{"id":"e1","topic":"{topic}","op":"event","account_id":"42"}}"#
        ))
        .unwrap();
        e.data = Some(data);
        if let Some(a) = ads {
            e.consent.insert("ads".into(), a.into());
        }
        e
    }

    fn req(m: &Mapping, e: &Event) -> switchyard_guest::Request {
        let Outcome::Send(item) = m.item(e).unwrap() else {
            panic!("skipped")
        };
        m.request(&item).unwrap().as_request().unwrap().clone()
    }

    #[test]
    fn add_with_normalised_hashes() {
        let m = mapping(&[]);
        let r = req(
            &m,
            &ev(
                "customer.a.created",
                json!({"email":"  Ada.L@Example.COM ","phone":"+44 7700-900123"}),
                Some("granted"),
            ),
        );
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (Some("POST"), Some("/23850000000000001/users"))
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"payload":{"schema":["EMAIL","PHONE"],"data":[[sha256_hex("ada.l@example.com"), sha256_hex("447700900123")]]}})
        );
        let m = mapping(&[("phone_country_code", "1")]);
        let r = req(
            &m,
            &ev(
                "customer.a.phone_changed",
                json!({"phone":"(555) 010-9999"}),
                Some("granted"),
            ),
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"payload":{"schema":["PHONE"],"data":[[sha256_hex("15550109999")]]}})
        );
    }

    #[test]
    fn remove_on_denied_or_deletion_and_skip_without_consent() {
        let m = mapping(&[]);
        for e in [
            ev(
                "customer.a.consent_changed",
                json!({"email":"a@b.c"}),
                Some("denied"),
            ),
            ev(
                "customer.a.deletion_requested",
                json!({"email":"a@b.c"}),
                None,
            ),
        ] {
            let r = req(&m, &e);
            assert_eq!(
                (r.method.as_deref(), r.path.as_deref()),
                (Some("DELETE"), Some("/23850000000000001/users"))
            );
            assert_eq!(
                r.json().unwrap(),
                json!({"payload":{"schema":["EMAIL"],"data":[[sha256_hex("a@b.c")]]}})
            );
        }
        assert!(
            matches!(m.item(&ev("customer.a.created", json!({"email":"a@b.c"}), None)).unwrap(), Outcome::Skip(r) if r.contains("no ads consent"))
        );
        assert!(
            matches!(m.item(&ev("customer.a.tier_changed", json!({"tier":"g"}), Some("granted"))).unwrap(), Outcome::Skip(r) if r.contains("nothing to match"))
        );
        assert!(
            !m.item(&ev("customer.a.deletion_requested", json!({}), None))
                .unwrap_err()
                .retryable
        );
        let m = mapping(&[("consent_channel", "marketing")]);
        assert!(matches!(
            m.item(&ev(
                "customer.a.created",
                json!({"email":"a@b.c"}),
                Some("granted")
            ))
            .unwrap(),
            Outcome::Skip(_)
        ));
    }

    #[test]
    fn batch_groups_rows_by_operation_and_schema() {
        let m = mapping(&[]);
        let events = vec![
            ev(
                "customer.a.created",
                json!({"email":"a@x.com"}),
                Some("granted"),
            ),
            ev(
                "customer.a.created",
                json!({"email":"b@x.com","phone":"+1 555 0100"}),
                Some("granted"),
            ),
            ev(
                "customer.a.created",
                json!({"email":"c@x.com"}),
                Some("granted"),
            ),
            ev(
                "customer.a.consent_changed",
                json!({"email":"d@x.com"}),
                Some("denied"),
            ),
            ev("customer.a.created", json!({"email":"e@x.com"}), None),
        ];
        let b = m.batch(&events).unwrap();
        assert_eq!(b.requests.len(), 3);
        let r = b.requests[0].request.as_request().unwrap();
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (Some("POST"), Some("/23850000000000001/users"))
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"payload":{"schema":["EMAIL"],"data":[[sha256_hex("a@x.com")],[sha256_hex("c@x.com")]]}})
        );
        assert_eq!(b.requests[0].items, vec![0, 2]);
        assert_eq!(b.requests[1].items, vec![1]);
        let r = b.requests[2].request.as_request().unwrap();
        assert_eq!(r.method.as_deref(), Some("DELETE"));
        assert_eq!(b.requests[2].items, vec![3]);
        assert!(b.failed.is_empty());
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |p: &[(&str, &str)]| {
            Mapping::from_config(&Config::from_pairs(p.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[]).starts_with("config `audience_id`: is required"));
        assert!(err(&[("audience_id", "act_1")]).starts_with("config `audience_id`"));
        assert!(err(&[("audience_id", "1"), ("access_token", "x")])
            .starts_with("config `access_token`: unknown key"));
    }
}
