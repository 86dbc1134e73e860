//! `google-customer-match`: customer events → Google Ads Customer Match
//! through an offline user data job:
//! `POST /customers/{customer_id}/offlineUserDataJobs/{job_id}:addOperations`
//! with one `create` (add) or `remove` operation of SHA-256-hashed, normalised
//! email and phone. The job is created and run outside the module (a module
//! never sees responses, and create returns the job id). See README.md.

use customer::{check_keys, hash, membership, Fields, Membership, Outcome};
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
        Outcome::Send(op) => Ok(vec![m.request(&[op])?]),
        Outcome::Skip(reason) => {
            log::info!(
                "google-customer-match: skipped event {} ({}): {reason}",
                ev.id,
                ev.topic
            );
            Ok(vec![])
        }
    }
}

const OWN: &[&str] = &["customer_id", "job_id", "consent_channel"];

#[derive(Debug)]
pub struct Mapping {
    fields: Fields,
    customer_id: String,
    job_id: String,
    channel: String,
}

/// Google's phone normalisation: E.164 with the `+` (`+15550109999`), hashed.
pub fn phone_hash(digits: &str) -> String {
    hash::sha256_hex(&format!("+{}", digits.trim_start_matches('0')))
}

fn digits(cfg: &Config, key: &str, what: &str) -> Result<String, ConfigError> {
    let v: String = cfg
        .require(key)?
        .trim()
        .chars()
        .filter(|c| *c != '-')
        .collect();
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
        return Err(ConfigError::new(
            key,
            format!("{v:?} is not {what} (digits, dashes allowed)"),
        ));
    }
    Ok(v)
}

impl Mapping {
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        check_keys(cfg, OWN)?;
        Ok(Mapping {
            fields: Fields::from_config(cfg)?,
            customer_id: digits(cfg, "customer_id", "a Google Ads customer id")?,
            job_id: digits(cfg, "job_id", "an offline user data job id")?,
            channel: cfg.get_or("consent_channel", "ads").trim().to_string(),
        })
    }

    /// One `OfflineUserDataJobOperation` for `ev` (`{"create": UserData}` or
    /// `{"remove": UserData}`), or why it is skipped.
    pub fn item(&self, ev: &Event) -> Result<Outcome<Value>, Error> {
        let p = self.fields.profile(ev);
        let op = match membership(ev, &p, &self.channel) {
            Outcome::Send(op) => op,
            Outcome::Skip(r) => return Ok(Outcome::Skip(r)),
        };
        let mut ids = Vec::new();
        if let Some(e) = &p.email {
            ids.push(json!({ "hashedEmail": hash::email(e) }));
        }
        if let Some(d) = &p.phone {
            ids.push(json!({ "hashedPhoneNumber": phone_hash(d) }));
        }
        if ids.is_empty() {
            return match op {
                Membership::Add => Ok(Outcome::Skip(format!(
                    "nothing to match on: no {}",
                    self.fields.describe_identifiers()
                ))),
                Membership::Remove => Err(Error::fatal(format!(
                    "cannot remove from the user list: no {}",
                    self.fields.describe_identifiers()
                ))),
            };
        }
        let verb = match op {
            Membership::Add => "create",
            Membership::Remove => "remove",
        };
        Ok(Outcome::Send(json!({ verb: { "userIdentifiers": ids } })))
    }

    /// The `addOperations` request carrying `operations`.
    pub fn request(&self, operations: &[Value]) -> Result<Output, Error> {
        Ok(
            Output::json(&json!({ "enablePartialFailure": true, "operations": operations }))?
                .method("POST")
                .path(format!(
                    "/customers/{}/offlineUserDataJobs/{}:addOperations",
                    self.customer_id, self.job_id
                )),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use customer::hash::sha256_hex;

    fn mapping(pairs: &[(&str, &str)]) -> Mapping {
        let mut all = vec![("customer_id", "123-456-7890"), ("job_id", "555")];
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
        let Outcome::Send(op) = m.item(e).unwrap() else {
            panic!("skipped")
        };
        m.request(&[op]).unwrap().as_request().unwrap().clone()
    }

    #[test]
    fn create_and_remove_operations() {
        let m = mapping(&[("phone_country_code", "1")]);
        let r = req(
            &m,
            &ev(
                "customer.a.created",
                json!({"email":" Ada@Example.com","phone":"555.010.9999"}),
                Some("granted"),
            ),
        );
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (
                Some("POST"),
                Some("/customers/1234567890/offlineUserDataJobs/555:addOperations")
            )
        );
        assert_eq!(
            r.json().unwrap(),
            json!({"enablePartialFailure":true,"operations":[{"create":{"userIdentifiers":[
                {"hashedEmail": sha256_hex("ada@example.com")}, {"hashedPhoneNumber": sha256_hex("+15550109999")}]}}]})
        );
        let r = req(
            &m,
            &ev(
                "customer.a.deletion_requested",
                json!({"email":"a@b.c"}),
                None,
            ),
        );
        assert_eq!(
            r.json().unwrap()["operations"],
            json!([{"remove":{"userIdentifiers":[{"hashedEmail": sha256_hex("a@b.c")}]}}])
        );
        assert!(matches!(
            m.item(&ev(
                "customer.a.created",
                json!({"email":"a@b.c"}),
                Some("unknown")
            ))
            .unwrap(),
            Outcome::Skip(_)
        ));
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |p: &[(&str, &str)]| {
            Mapping::from_config(&Config::from_pairs(p.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("job_id", "1")]).starts_with("config `customer_id`: is required"));
        assert!(err(&[
            ("customer_id", "1"),
            ("job_id", "customers/1/offlineUserDataJobs/2")
        ])
        .starts_with("config `job_id`"));
        assert!(err(&[
            ("customer_id", "1"),
            ("job_id", "2"),
            ("developer_token", "x")
        ])
        .starts_with("config `developer_token`: unknown key"));
    }
}
