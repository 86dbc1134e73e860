//! `klaviyo`: customer events → Klaviyo profile import requests
//! (`POST /api/profile-import`, JSON:API). See README.md.

use switchyard_guest::{json, log, normalize, transform, Config, ConfigError, Error, Event, Op, Output, State, Value};

static MAPPING: State<Mapping> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    MAPPING.set(Mapping::from_config(cfg)?);
    Ok(())
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    let mapping = MAPPING.get();
    match mapping.profile(&ev)? {
        Outcome::Skip(reason) => {
            log::info!("klaviyo: skipped event {} ({}): {reason}", ev.id, ev.topic);
            Ok(vec![])
        }
        Outcome::Import(body) => Ok(vec![mapping.request(&body)?]),
    }
}

/// Default Klaviyo API revision header.
pub const DEFAULT_REVISION: &str = "2024-10-15";
const JSON_API: &str = "application/vnd.api+json";

/// What to do with one event.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Send this profile-import body.
    Import(Value),
    /// Send nothing (drop), for this reason.
    Skip(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Auto,
    After,
    Data,
}

#[derive(Debug, Clone, PartialEq)]
enum Properties {
    None,
    All,
    Fields(Vec<String>),
}

/// Parsed configuration.
#[derive(Debug)]
pub struct Mapping {
    part: Part,
    email: Vec<String>,
    phone: Vec<String>,
    first_name: Vec<String>,
    last_name: Vec<String>,
    external_id: Option<String>,
    properties: Properties,
    phone_country_code: Option<String>,
    revision: String,
}

const KNOWN: &[&str] = &[
    "source",
    "email_field",
    "phone_field",
    "first_name_field",
    "last_name_field",
    "external_id_field",
    "properties",
    "phone_country_code",
    "revision",
];

fn fields(cfg: &Config, key: &str, default: &str) -> Result<Vec<String>, ConfigError> {
    let list = if cfg.get(key).is_some() { cfg.list(key) } else { Config::from_pairs([(key, default)]).list(key) };
    if let Some(bad) = list.iter().find(|f| f.split('.').any(str::is_empty)) {
        return Err(ConfigError::new(key, format!("{bad:?} is not a field path")));
    }
    Ok(list)
}

/// Value at a dotted path inside `v`.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

/// First candidate path holding a non-empty scalar, as text.
fn first_text(payload: Option<&Value>, candidates: &[String]) -> Option<String> {
    let payload = payload?;
    candidates.iter().find_map(|c| match at(payload, c)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

impl Mapping {
    /// Parse and check the config; errors name the offending key.
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        if let Some((key, _)) = cfg.iter().find(|(k, _)| !KNOWN.contains(k)) {
            return Err(ConfigError::new(key, format!("unknown key; expected one of {}", KNOWN.join(", "))));
        }
        let part = match cfg.get_or("source", "auto").trim() {
            "auto" => Part::Auto,
            "after" => Part::After,
            "data" => Part::Data,
            other => return Err(ConfigError::new("source", format!("{other:?}: expected auto, after or data"))),
        };
        let properties = match cfg.get("properties").map(str::trim) {
            None | Some("") => Properties::None,
            Some("*") => Properties::All,
            Some(_) => Properties::Fields(fields(cfg, "properties", "")?),
        };
        let phone_country_code = match cfg.get("phone_country_code").map(str::trim) {
            None | Some("") => None,
            Some(cc) => {
                let d = cc.strip_prefix('+').unwrap_or(cc);
                if d.is_empty() || d.len() > 3 || !d.chars().all(|c| c.is_ascii_digit()) {
                    return Err(ConfigError::new("phone_country_code", format!("{cc:?} is not a calling code like 1 or 44")));
                }
                Some(d.to_string())
            }
        };
        let external_id = fields(cfg, "external_id_field", "")?.into_iter().next();
        Ok(Mapping {
            part,
            email: fields(cfg, "email_field", "email")?,
            phone: fields(cfg, "phone_field", "phone_number, phone, mobile")?,
            first_name: fields(cfg, "first_name_field", "first_name, firstname, given_name")?,
            last_name: fields(cfg, "last_name_field", "last_name, lastname, family_name")?,
            external_id,
            properties,
            phone_country_code,
            revision: cfg.get_or("revision", DEFAULT_REVISION).trim().to_string(),
        })
    }

    fn payload<'a>(&self, ev: &'a Event) -> Option<&'a Value> {
        match self.part {
            Part::Auto => ev.payload(),
            Part::After => ev.after.as_ref(),
            Part::Data => ev.data.as_ref(),
        }
    }

    /// The profile-import body for `ev`, or why it is skipped. A fatal error
    /// if the profile has no identifier at all.
    pub fn profile(&self, ev: &Event) -> Result<Outcome, Error> {
        if matches!(ev.op, Op::Delete | Op::SoftDelete) {
            return Ok(Outcome::Skip(format!("{} events do not import profiles", ev.op)));
        }
        let payload = self.payload(ev);
        let email = first_text(payload, &self.email).filter(|e| {
            let ok = e.contains('@');
            if !ok {
                log::warn!("klaviyo: event {}: ignoring email without `@`", ev.id);
            }
            ok
        });
        let phone = first_text(payload, &self.phone)
            .map(|p| normalize::phone_digits(&p, self.phone_country_code.as_deref()))
            .filter(|d| !d.is_empty())
            .map(|d| format!("+{d}"));
        let external_id = match &self.external_id {
            Some(path) => first_text(payload, std::slice::from_ref(path)),
            None => Some(ev.account_id.clone()).filter(|a| !a.is_empty()),
        };
        if email.is_none() && phone.is_none() && external_id.is_none() {
            let ext = self.external_id.clone().unwrap_or_else(|| "account_id".into());
            return Err(Error::fatal(format!(
                "no profile identifier: email ({}), phone ({}) and external id ({ext}) are all missing",
                self.email.join(", "),
                self.phone.join(", "),
            )));
        }
        let mut attrs = serde_json_map();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                attrs.insert(k.into(), Value::String(v));
            }
        };
        put("email", email);
        put("phone_number", phone);
        put("external_id", external_id);
        put("first_name", first_text(payload, &self.first_name));
        put("last_name", first_text(payload, &self.last_name));
        let props = self.properties(payload);
        if !props.is_empty() {
            attrs.insert("properties".into(), Value::Object(props));
        }
        Ok(Outcome::Import(json!({ "data": { "type": "profile", "attributes": attrs } })))
    }

    fn properties(&self, payload: Option<&Value>) -> switchyard_guest::serde_json::Map<String, Value> {
        let mut props = serde_json_map();
        let Some(payload) = payload else { return props };
        match &self.properties {
            Properties::None => {}
            Properties::All => {
                let mapped: Vec<&String> = [&self.email, &self.phone, &self.first_name, &self.last_name]
                    .into_iter()
                    .flatten()
                    .chain(self.external_id.as_ref())
                    .collect();
                if let Value::Object(m) = payload {
                    for (k, v) in m {
                        if !v.is_null() && !mapped.contains(&k) {
                            props.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            Properties::Fields(fields) => {
                for f in fields {
                    if let Some(v) = at(payload, f).filter(|v| !v.is_null()) {
                        props.insert(f.clone(), v.clone());
                    }
                }
            }
        }
        props
    }

    /// The request carrying `body`.
    pub fn request(&self, body: &Value) -> Result<Output, Error> {
        Ok(Output::json(body)?
            .content_type(JSON_API)
            .method("POST")
            .path("/api/profile-import")
            .header("revision", self.revision.clone())
            .header("accept", JSON_API))
    }
}

fn serde_json_map() -> switchyard_guest::serde_json::Map<String, Value> {
    switchyard_guest::serde_json::Map::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(pairs: &[(&str, &str)]) -> Mapping {
        Mapping::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn ev(op: &str, after: Value) -> Event {
        let mut e = Event::from_json(&format!(r#"{{"id":"e1","topic":"customer.updated","op":"{op}","account_id":"42"}}"#)).unwrap();
        e.after = Some(after);
        e
    }

    fn attrs(o: Outcome) -> Value {
        match o {
            Outcome::Import(b) => {
                assert_eq!(b["data"]["type"], "profile");
                b["data"]["attributes"].clone()
            }
            Outcome::Skip(r) => panic!("skipped: {r}"),
        }
    }

    #[test]
    fn default_mapping() {
        let a = attrs(
            mapping(&[])
                .profile(&ev(
                    "update",
                    json!({"email":" jane@x.com ","phone":"+1 (555) 010-9999","first_name":"Jane","last_name":"Doe","tier":"gold"}),
                ))
                .unwrap(),
        );
        assert_eq!(
            a,
            json!({"email":"jane@x.com","phone_number":"+15550109999","external_id":"42","first_name":"Jane","last_name":"Doe"})
        );
    }

    #[test]
    fn configured_fields_properties_and_data_events() {
        let m = mapping(&[
            ("email_field", "contact.email"),
            ("phone_field", "contact.mobile"),
            ("external_id_field", "customer_id"),
            ("properties", "tier, contact.city"),
            ("phone_country_code", "44"),
        ]);
        let mut e = Event::new("signup", Op::Event);
        e.data = Some(json!({"customer_id": 9001, "tier": "gold", "contact": {"email": "a@b.c", "mobile": "07700 900123", "city": "Leeds"}}));
        let a = attrs(m.profile(&e).unwrap());
        assert_eq!(
            a,
            json!({"email":"a@b.c","phone_number":"+447700900123","external_id":"9001","properties":{"tier":"gold","contact.city":"Leeds"}})
        );
        let all = mapping(&[("properties", "*")]);
        let a = attrs(all.profile(&ev("insert", json!({"email":"a@b.c","tier":"gold","n":null}))).unwrap());
        assert_eq!(a["properties"], json!({"tier":"gold"}));
    }

    #[test]
    fn request_shape() {
        let m = mapping(&[]);
        let Outcome::Import(body) = m.profile(&ev("insert", json!({"email":"a@b.c"}))).unwrap() else { panic!() };
        let out = m.request(&body).unwrap();
        let r = out.as_request().unwrap();
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert_eq!(r.path.as_deref(), Some("/api/profile-import"));
        assert_eq!(r.content_type, "application/vnd.api+json");
        assert_eq!(r.header("revision"), Some("2024-10-15"));
        assert_eq!(r.header("accept"), Some("application/vnd.api+json"));
        assert_eq!(r.json().unwrap()["data"]["attributes"]["email"], "a@b.c");
    }

    #[test]
    fn deletes_are_skipped() {
        let m = mapping(&[]);
        for op in ["delete", "soft_delete"] {
            assert!(matches!(m.profile(&ev(op, json!({"email":"a@b.c"}))).unwrap(), Outcome::Skip(_)));
        }
    }

    #[test]
    fn no_identifier_is_fatal_and_names_fields() {
        let m = mapping(&[]);
        let mut e = ev("update", json!({"email":"not-an-email","first_name":"X"}));
        e.account_id.clear();
        let err = m.profile(&e).unwrap_err();
        assert!(!err.retryable);
        assert_eq!(
            err.message,
            "no profile identifier: email (email), phone (phone_number, phone, mobile) and external id (account_id) are all missing"
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |pairs: &[(&str, &str)]| Mapping::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap_err().to_string();
        assert!(err(&[("source", "before")]).starts_with("config `source`"));
        assert!(err(&[("email_field", "a..b")]).starts_with("config `email_field`"));
        assert!(err(&[("phone_country_code", "x")]).starts_with("config `phone_country_code`"));
        assert!(err(&[("api_key", "x")]).starts_with("config `api_key`: unknown key"));
    }
}
