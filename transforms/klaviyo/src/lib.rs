//! `klaviyo`: customer events → Klaviyo (JSON:API): profile import
//! (`POST /api/profile-import`), subscriptions and suppression for
//! `consent_changed` (`/api/profile-subscription-bulk-create-jobs`,
//! `…-delete-jobs`, `/api/profile-suppression-bulk-create-jobs`) and
//! data-privacy deletion for `deletion_requested`
//! (`/api/data-privacy-deletion-jobs`). See README.md.

use switchyard_guest::{
    json, log, normalize, transform, Config, ConfigError, Error, Event, Op, Output, State, Value,
};

static MAPPING: State<Mapping> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    MAPPING.set(Mapping::from_config(cfg)?);
    Ok(())
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    MAPPING.get().outputs(&ev)
}

/// One Klaviyo call (each body is the JSON:API document for one profile).
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// `POST /api/profile-import`.
    Import(Value),
    /// `POST /api/profile-subscription-bulk-create-jobs`.
    Subscribe(Value),
    /// `POST /api/profile-subscription-bulk-delete-jobs`.
    Unsubscribe(Value),
    /// `POST /api/profile-suppression-bulk-create-jobs`.
    Suppress(Value),
    /// `POST /api/data-privacy-deletion-jobs`.
    Delete(Value),
}

impl Job {
    /// `import`, `subscribe`, `unsubscribe`, `suppress`, `delete`.
    pub fn name(&self) -> &'static str {
        match self {
            Job::Import(_) => "import",
            Job::Subscribe(_) => "subscribe",
            Job::Unsubscribe(_) => "unsubscribe",
            Job::Suppress(_) => "suppress",
            Job::Delete(_) => "delete",
        }
    }

    pub fn path(&self) -> &'static str {
        match self {
            Job::Import(_) => "/api/profile-import",
            Job::Subscribe(_) => "/api/profile-subscription-bulk-create-jobs",
            Job::Unsubscribe(_) => "/api/profile-subscription-bulk-delete-jobs",
            Job::Suppress(_) => "/api/profile-suppression-bulk-create-jobs",
            Job::Delete(_) => "/api/data-privacy-deletion-jobs",
        }
    }

    pub fn body(&self) -> &Value {
        match self {
            Job::Import(b)
            | Job::Subscribe(b)
            | Job::Unsubscribe(b)
            | Job::Suppress(b)
            | Job::Delete(b) => b,
        }
    }
}

/// What one event becomes: calls in order, or nothing (with the reason).
#[derive(Debug, PartialEq)]
pub enum Jobs {
    Send(Vec<Job>),
    Skip(String),
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
    list_id: Option<String>,
    suppress_on_email_denied: bool,
}

const KNOWN: &[&str] = &[
    "list_id",
    "email_denied",
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
    let list = if cfg.get(key).is_some() {
        cfg.list(key)
    } else {
        Config::from_pairs([(key, default)]).list(key)
    };
    if let Some(bad) = list.iter().find(|f| f.split('.').any(str::is_empty)) {
        return Err(ConfigError::new(
            key,
            format!("{bad:?} is not a field path"),
        ));
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
            return Err(ConfigError::new(
                key,
                format!("unknown key; expected one of {}", KNOWN.join(", ")),
            ));
        }
        let part = match cfg.get_or("source", "auto").trim() {
            "auto" => Part::Auto,
            "after" => Part::After,
            "data" => Part::Data,
            other => {
                return Err(ConfigError::new(
                    "source",
                    format!("{other:?}: expected auto, after or data"),
                ))
            }
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
                    return Err(ConfigError::new(
                        "phone_country_code",
                        format!("{cc:?} is not a calling code like 1 or 44"),
                    ));
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
            list_id: cfg
                .get("list_id")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
            suppress_on_email_denied: match cfg.get_or("email_denied", "unsubscribe").trim() {
                "unsubscribe" => false,
                "suppress" => true,
                o => {
                    return Err(ConfigError::new(
                        "email_denied",
                        format!("{o:?}: expected unsubscribe or suppress"),
                    ))
                }
            },
        })
    }

    /// Email (with `@`) and `+` E.164 phone of `ev`.
    fn contact(&self, ev: &Event) -> (Option<String>, Option<String>) {
        let payload = self.payload(ev);
        let email = first_text(payload, &self.email).filter(|e| e.contains('@'));
        let phone = first_text(payload, &self.phone)
            .map(|p| normalize::phone_digits(&p, self.phone_country_code.as_deref()))
            .filter(|d| !d.is_empty())
            .map(|d| format!("+{d}"));
        (email, phone)
    }

    /// The Klaviyo calls for `ev`: `deletion_requested` → a data-privacy
    /// deletion; `consent_changed` → subscribe / unsubscribe (or suppress)
    /// per channel; everything else → the profile import of [`Mapping::profile`].
    pub fn jobs(&self, ev: &Event) -> Result<Jobs, Error> {
        match customer::Kind::of(ev) {
            customer::Kind::DeletionRequested => {
                // Klaviyo takes exactly one identifier: email, else phone.
                let (email, phone) = self.contact(ev);
                let attrs = match (email, phone) {
                    (Some(e), _) => json!({ "email": e }),
                    (None, Some(p)) => json!({ "phone_number": p }),
                    (None, None) => {
                        return Err(Error::fatal(format!(
                            "cannot request a deletion: no email ({}) or phone ({}); Klaviyo deletes by email, phone or its own profile id",
                            self.email.join(", "),
                            self.phone.join(", ")
                        )))
                    }
                };
                Ok(Jobs::Send(vec![Job::Delete(
                    json!({"data": {"type": "data-privacy-deletion-job",
                    "attributes": {"profile": {"data": {"type": "profile", "attributes": attrs}}}}}),
                )]))
            }
            customer::Kind::ConsentChanged if !matches!(ev.op, Op::Delete | Op::SoftDelete) => {
                self.consent_jobs(ev)
            }
            _ => Ok(match self.profile(ev)? {
                Outcome::Import(b) => Jobs::Send(vec![Job::Import(b)]),
                Outcome::Skip(r) => Jobs::Skip(r),
            }),
        }
    }

    fn consent_jobs(&self, ev: &Event) -> Result<Jobs, Error> {
        let (email, phone) = self.contact(ev);
        let (mut sub, mut unsub, mut notes) = (serde_json_map(), serde_json_map(), Vec::new());
        for (channel, id) in [("email", &email), ("sms", &phone)] {
            let Some(state) = ev.consent(channel) else {
                continue;
            };
            if id.is_none() {
                notes.push(format!(
                    "consent.{channel} = {state} but no {}",
                    if channel == "sms" { "phone" } else { "email" }
                ));
                continue;
            }
            match state {
                "granted" if self.list_id.is_some() => {
                    sub.insert(
                        channel.into(),
                        json!({"marketing": {"consent": "SUBSCRIBED"}}),
                    );
                }
                "granted" => notes.push(format!(
                    "consent.{channel} = granted but no `list_id` to subscribe to"
                )),
                "denied" => {
                    unsub.insert(
                        channel.into(),
                        json!({"marketing": {"consent": "UNSUBSCRIBED"}}),
                    );
                }
                other => notes.push(format!("consent.{channel} = {other}")),
            }
        }
        let profile = |subs: &switchyard_guest::serde_json::Map<String, Value>, with_subs: bool| {
            let mut a = serde_json_map();
            if subs.contains_key("email") {
                a.insert("email".into(), json!(email));
            }
            if subs.contains_key("sms") {
                a.insert("phone_number".into(), json!(phone));
            }
            if with_subs {
                a.insert("subscriptions".into(), Value::Object(subs.clone()));
            }
            json!({"data": [{"type": "profile", "attributes": a}]})
        };
        let list = self
            .list_id
            .as_ref()
            .map(|id| json!({"list": {"data": {"type": "list", "id": id}}}));
        let mut jobs = Vec::new();
        if !sub.is_empty() {
            jobs.push(Job::Subscribe(
                json!({"data": {"type": "profile-subscription-bulk-create-job",
                "attributes": {"profiles": profile(&sub, true), "historical_import": false},
                "relationships": list.clone().expect("subscribe needs list_id")}}),
            ));
        }
        if self.suppress_on_email_denied && unsub.contains_key("email") {
            let mut only_email = serde_json_map();
            only_email.insert("email".into(), Value::Null);
            jobs.push(Job::Suppress(
                json!({"data": {"type": "profile-suppression-bulk-create-job",
                "attributes": {"profiles": profile(&only_email, false)}}}),
            ));
            unsub.remove("email");
        }
        if !unsub.is_empty() {
            let mut body = json!({"data": {"type": "profile-subscription-bulk-delete-job",
                "attributes": {"profiles": profile(&unsub, true)}}});
            if let Some(l) = &list {
                body["data"]["relationships"] = l.clone();
            }
            jobs.push(Job::Unsubscribe(body));
        }
        if jobs.is_empty() {
            let why = if notes.is_empty() {
                "no email or sms consent in the event".to_string()
            } else {
                notes.join("; ")
            };
            return Ok(Jobs::Skip(format!("no subscription change: {why}")));
        }
        for n in &notes {
            log::info!("klaviyo: event {}: {n}", ev.id);
        }
        Ok(Jobs::Send(jobs))
    }

    /// The requests for `ev` (none when skipped; the reason is logged). A
    /// second call for the same event gets its own idempotency key
    /// (`Idempotency-Key: <event id>:<job>`): an endpoint or proxy that
    /// honours the key must not take it for a retry of the first.
    pub fn outputs(&self, ev: &Event) -> Result<Vec<Output>, Error> {
        match self.jobs(ev)? {
            Jobs::Skip(reason) => {
                log::info!("klaviyo: skipped event {} ({}): {reason}", ev.id, ev.topic);
                Ok(vec![])
            }
            Jobs::Send(jobs) => jobs
                .iter()
                .enumerate()
                .map(|(i, j)| {
                    let out = self.job_request(j)?;
                    Ok(if i == 0 {
                        out
                    } else {
                        out.header("Idempotency-Key", format!("{}:{}", ev.id, j.name()))
                    })
                })
                .collect(),
        }
    }

    /// The request for one job.
    pub fn job_request(&self, job: &Job) -> Result<Output, Error> {
        Ok(self.request(job.body())?.path(job.path()))
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
            return Ok(Outcome::Skip(format!(
                "{} events do not import profiles",
                ev.op
            )));
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
            let ext = self
                .external_id
                .clone()
                .unwrap_or_else(|| "account_id".into());
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
        Ok(Outcome::Import(
            json!({ "data": { "type": "profile", "attributes": attrs } }),
        ))
    }

    fn properties(
        &self,
        payload: Option<&Value>,
    ) -> switchyard_guest::serde_json::Map<String, Value> {
        let mut props = serde_json_map();
        let Some(payload) = payload else { return props };
        match &self.properties {
            Properties::None => {}
            Properties::All => {
                let mapped: Vec<&String> =
                    [&self.email, &self.phone, &self.first_name, &self.last_name]
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
        let mut e = Event::from_json(&format!(
            r#"{{"id":"e1","topic":"customer.updated","op":"{op}","account_id":"42"}}"#
        ))
        .unwrap();
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
        e.data = Some(
            json!({"customer_id": 9001, "tier": "gold", "contact": {"email": "a@b.c", "mobile": "07700 900123", "city": "Leeds"}}),
        );
        let a = attrs(m.profile(&e).unwrap());
        assert_eq!(
            a,
            json!({"email":"a@b.c","phone_number":"+447700900123","external_id":"9001","properties":{"tier":"gold","contact.city":"Leeds"}})
        );
        let all = mapping(&[("properties", "*")]);
        let a = attrs(
            all.profile(&ev(
                "insert",
                json!({"email":"a@b.c","tier":"gold","n":null}),
            ))
            .unwrap(),
        );
        assert_eq!(a["properties"], json!({"tier":"gold"}));
    }

    #[test]
    fn request_shape() {
        let m = mapping(&[]);
        let Outcome::Import(body) = m.profile(&ev("insert", json!({"email":"a@b.c"}))).unwrap()
        else {
            panic!()
        };
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
            assert!(matches!(
                m.profile(&ev(op, json!({"email":"a@b.c"}))).unwrap(),
                Outcome::Skip(_)
            ));
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
        let err = |pairs: &[(&str, &str)]| {
            Mapping::from_config(&Config::from_pairs(pairs.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("source", "before")]).starts_with("config `source`"));
        assert!(err(&[("email_field", "a..b")]).starts_with("config `email_field`"));
        assert!(err(&[("phone_country_code", "x")]).starts_with("config `phone_country_code`"));
        assert!(err(&[("api_key", "x")]).starts_with("config `api_key`: unknown key"));
        assert!(err(&[("email_denied", "delete")]).starts_with("config `email_denied`"));
    }

    fn consent_ev(email: Option<&str>, sms: Option<&str>) -> Event {
        let mut e = ev(
            "event",
            json!({"email": "ada@x.com", "phone": "+1 555 010 9999"}),
        );
        e.topic = "customer.a.consent_changed".into();
        if let Some(s) = email {
            e.consent.insert("email".into(), s.into());
        }
        if let Some(s) = sms {
            e.consent.insert("sms".into(), s.into());
        }
        e
    }

    fn sent(j: Jobs) -> Vec<Job> {
        match j {
            Jobs::Send(v) => v,
            Jobs::Skip(r) => panic!("skipped: {r}"),
        }
    }

    #[test]
    fn consent_subscribes_and_unsubscribes_per_channel() {
        let m = mapping(&[("list_id", "Y6nRLr")]);
        let jobs = sent(
            m.jobs(&consent_ev(Some("granted"), Some("denied")))
                .unwrap(),
        );
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].path(), "/api/profile-subscription-bulk-create-jobs");
        assert_eq!(
            jobs[0].body(),
            &json!({"data":{"type":"profile-subscription-bulk-create-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":
                {"email":"ada@x.com","subscriptions":{"email":{"marketing":{"consent":"SUBSCRIBED"}}}}}]},"historical_import":false},
                "relationships":{"list":{"data":{"type":"list","id":"Y6nRLr"}}}}})
        );
        assert_eq!(jobs[1].path(), "/api/profile-subscription-bulk-delete-jobs");
        assert_eq!(
            jobs[1].body(),
            &json!({"data":{"type":"profile-subscription-bulk-delete-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":
                {"phone_number":"+15550109999","subscriptions":{"sms":{"marketing":{"consent":"UNSUBSCRIBED"}}}}}]}},
                "relationships":{"list":{"data":{"type":"list","id":"Y6nRLr"}}}}})
        );
        let outs = m
            .outputs(&consent_ev(Some("granted"), Some("denied")))
            .unwrap();
        assert_eq!(outs.len(), 2);
        let (first, r) = (outs[0].as_request().unwrap(), outs[1].as_request().unwrap());
        assert_eq!(
            first.path.as_deref(),
            Some("/api/profile-subscription-bulk-create-jobs")
        );
        assert_eq!(
            first.header("idempotency-key"),
            None,
            "the first keeps the router's (the event id)"
        );
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (
                Some("POST"),
                Some("/api/profile-subscription-bulk-delete-jobs")
            )
        );
        assert_eq!(
            (r.header("revision"), r.content_type.as_str()),
            (Some("2024-10-15"), "application/vnd.api+json")
        );
        assert_eq!(r.header("idempotency-key"), Some("e1:unsubscribe"));
    }

    #[test]
    fn suppression_and_skips() {
        let m = mapping(&[("email_denied", "suppress")]);
        let jobs = sent(m.jobs(&consent_ev(Some("denied"), None)).unwrap());
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].path(), "/api/profile-suppression-bulk-create-jobs");
        assert_eq!(
            jobs[0].body(),
            &json!({"data":{"type":"profile-suppression-bulk-create-job","attributes":{"profiles":{"data":[{"type":"profile","attributes":{"email":"ada@x.com"}}]}}}})
        );
        // Granted without a list to subscribe to: nothing to send, and the reason says why.
        match mapping(&[])
            .jobs(&consent_ev(Some("granted"), None))
            .unwrap()
        {
            Jobs::Skip(r) => assert!(r.contains("no `list_id`"), "{r}"),
            j => panic!("{j:?}"),
        }
    }

    #[test]
    fn deletion_request_is_a_data_privacy_job() {
        let m = mapping(&[]);
        let mut e = ev(
            "event",
            json!({"email": "ada@x.com", "phone": "+15550109999"}),
        );
        e.topic = "customer.a.deletion_requested".into();
        let jobs = sent(m.jobs(&e).unwrap());
        assert_eq!(jobs[0].path(), "/api/data-privacy-deletion-jobs");
        assert_eq!(
            jobs[0].body(),
            &json!({"data":{"type":"data-privacy-deletion-job","attributes":{"profile":{"data":{"type":"profile","attributes":{"email":"ada@x.com"}}}}}})
        );
        e.after = Some(json!({"phone": "+15550109999"}));
        assert_eq!(
            sent(m.jobs(&e).unwrap())[0].body()["data"]["attributes"]["profile"]["data"]
                ["attributes"],
            json!({"phone_number":"+15550109999"})
        );
        e.after = Some(json!({}));
        assert!(!m.jobs(&e).unwrap_err().retryable);
        // Other kinds stay profile imports.
        assert!(matches!(
            &sent(m.jobs(&ev("update", json!({"email":"a@b.c"}))).unwrap())[0],
            Job::Import(_)
        ));
    }
}
