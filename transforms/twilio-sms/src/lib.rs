//! `twilio-sms`: transactional texts through Twilio Programmable Messaging
//! (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded),
//! only for people whose SMS consent is `granted`. See README.md.

use customer::{action, at, check_keys, url, Action, Fields, Kind, Outcome};
use switchyard_guest::{log, transform, Config, ConfigError, Error, Event, Output, State, Value};

static MAPPING: State<Mapping> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    MAPPING.set(Mapping::from_config(cfg)?);
    Ok(())
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    let m = MAPPING.get();
    match m.item(&ev)? {
        Outcome::Send(msg) => Ok(vec![m.request(&msg)]),
        Outcome::Skip(reason) => {
            log::info!(
                "twilio-sms: dropped event {} ({}): {reason}",
                ev.id,
                ev.topic
            );
            Ok(vec![])
        }
    }
}

/// One text: recipient (`+` E.164) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub to: String,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sender {
    From(String),
    Service(String),
}

const OWN: &[&str] = &[
    "account_sid",
    "from",
    "messaging_service_sid",
    "consent_channel",
    "body_field",
];

#[derive(Debug)]
pub struct Mapping {
    fields: Fields,
    account_sid: String,
    sender: Sender,
    channel: String,
    body_field: String,
    /// `template.<kind>` → text with `{path}` placeholders.
    templates: Vec<(String, String)>,
}

impl Mapping {
    pub fn from_config(cfg: &Config) -> Result<Mapping, ConfigError> {
        let own_or_template = |k: &str| OWN.contains(&k) || k.starts_with("template.");
        let templates: Vec<(String, String)> = cfg
            .with_prefix("template.")
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let keys: Vec<&str> = cfg
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !own_or_template(k))
            .collect();
        check_keys(&Config::from_pairs(keys.iter().map(|k| (*k, ""))), &[])?;
        let account_sid = cfg.require("account_sid")?.trim().to_string();
        if !(account_sid.starts_with("AC")
            && account_sid.len() == 34
            && account_sid[2..].chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(ConfigError::new(
                "account_sid",
                format!("{account_sid:?} is not a Twilio Account SID (AC + 32 hex digits)"),
            ));
        }
        let sender =
            match (
                cfg.get("from").map(str::trim),
                cfg.get("messaging_service_sid").map(str::trim),
            ) {
                (Some(f), None) if !f.is_empty() => Sender::From(f.to_string()),
                (None, Some(s)) if s.starts_with("MG") => Sender::Service(s.to_string()),
                (None, Some(s)) => {
                    return Err(ConfigError::new(
                        "messaging_service_sid",
                        format!("{s:?} is not a Messaging Service SID (MG…)"),
                    ))
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        "from",
                        "set either `from` or `messaging_service_sid`, not both",
                    ))
                }
                _ => return Err(ConfigError::new(
                    "from",
                    "is required (a sender number like +15017122661), or `messaging_service_sid`",
                )),
            };
        for (k, t) in &templates {
            if k.is_empty() || t.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("template.{k}"),
                    "needs a kind name and a non-empty text",
                ));
            }
            placeholders(t).map_err(|m| ConfigError::new(format!("template.{k}"), m))?;
        }
        Ok(Mapping {
            fields: Fields::from_config(cfg)?,
            account_sid,
            sender,
            channel: cfg.get_or("consent_channel", "sms").trim().to_string(),
            body_field: cfg.get_or("body_field", "sms_body").trim().to_string(),
            templates,
        })
    }

    /// The text for `ev`, or why none is sent (no consent, no number, no text).
    pub fn item(&self, ev: &Event) -> Result<Outcome<Message>, Error> {
        let kind = match action(ev) {
            Action::Skip(r) => return Ok(Outcome::Skip(r)),
            Action::Delete => return Ok(Outcome::Skip("a deletion request sends no text".into())),
            Action::Upsert(k) => k,
        };
        let p = self.fields.profile(ev);
        match p.consent(&self.channel) {
            Some("granted") => {}
            Some(other) => {
                return Ok(Outcome::Skip(format!(
                    "no SMS consent (consent.{} = {other})",
                    self.channel
                )))
            }
            None => {
                return Ok(Outcome::Skip(format!(
                    "no SMS consent (the event has no consent.{})",
                    self.channel
                )))
            }
        }
        let Some(to) = p.phone_e164() else {
            return Ok(Outcome::Skip(format!(
                "no phone number in {}",
                self.fields.describe_identifiers()
            )));
        };
        let payload = self.fields.payload(ev);
        let name = if kind == Kind::Other {
            ev.topic.rsplit('.').next().unwrap_or_default()
        } else {
            kind.as_str()
        };
        let text =
            match payload.and_then(|v| at(v, &self.body_field)) {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                _ => match self.templates.iter().find(|(k, _)| {
                    k == name || k == ev.topic.rsplit('.').next().unwrap_or_default()
                }) {
                    Some((_, t)) => render(t, payload)?,
                    None => {
                        return Ok(Outcome::Skip(format!(
                            "no text: no `{}` in the event and no template.{name}",
                            self.body_field
                        )))
                    }
                },
            };
        Ok(Outcome::Send(Message { to, body: text }))
    }

    /// The form-encoded `Messages.json` request.
    pub fn request(&self, m: &Message) -> Output {
        let (k, v) = match &self.sender {
            Sender::From(f) => ("From", f.as_str()),
            Sender::Service(s) => ("MessagingServiceSid", s.as_str()),
        };
        let body = url::form([("To", m.to.as_str()), (k, v), ("Body", m.body.as_str())]);
        Output::request(body, "application/x-www-form-urlencoded")
            .method("POST")
            .path(format!(
                "/2010-04-01/Accounts/{}/Messages.json",
                self.account_sid
            ))
    }
}

/// The `{path}` placeholders of a template (`{{` is a literal `{`).
fn placeholders(t: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        if rest[i..].starts_with("{{") {
            rest = &rest[i + 2..];
            continue;
        }
        let Some(j) = rest[i..].find('}') else {
            return Err("unclosed `{`".into());
        };
        let name = &rest[i + 1..i + j];
        if name.is_empty() || name.split('.').any(str::is_empty) {
            return Err(format!("{{{name}}} is not a field path"));
        }
        out.push(name.to_string());
        rest = &rest[i + j + 1..];
    }
    Ok(out)
}

/// `t` with each `{path}` replaced by that payload field; a missing field is fatal.
fn render(t: &str, payload: Option<&Value>) -> Result<String, Error> {
    let mut s = t.to_string();
    for name in placeholders(t).map_err(Error::fatal)? {
        let v = payload.and_then(|p| at(p, &name)).and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        });
        let Some(v) = v else {
            return Err(Error::fatal(format!(
                "template field `{name}` is missing from the event"
            )));
        };
        s = s.replacen(&format!("{{{name}}}"), &v, 1);
    }
    Ok(s.replace("{{", "{"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_guest::json;

    const SID: &str = "AC0123456789abcdef0123456789abcdef";

    fn mapping(pairs: &[(&str, &str)]) -> Mapping {
        let mut all = vec![("account_sid", SID)];
        all.extend_from_slice(pairs);
        Mapping::from_config(&Config::from_pairs(all)).unwrap()
    }

    fn ev(topic: &str, data: Value, sms: Option<&str>) -> Event {
        let mut e = Event::from_json(&format!(
            r#"{{"id":"e1","topic":"{topic}","op":"event","account_id":"42"}}"#
        ))
        .unwrap();
        e.data = Some(data);
        if let Some(s) = sms {
            e.consent.insert("sms".into(), s.into());
        }
        e
    }

    #[test]
    fn templated_text_is_form_encoded() {
        let m = mapping(&[
            ("from", "+15017122661"),
            (
                "template.tier_changed",
                "Hi {first_name}, you are now {tier} & more!",
            ),
        ]);
        let Outcome::Send(msg) = m
            .item(&ev(
                "customer.a.tier_changed",
                json!({"phone":"+1 555 010 9999","first_name":"Ada","tier":"Gold"}),
                Some("granted"),
            ))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            msg,
            Message {
                to: "+15550109999".into(),
                body: "Hi Ada, you are now Gold & more!".into()
            }
        );
        let out = m.request(&msg);
        let r = out.as_request().unwrap();
        assert_eq!(
            (r.method.as_deref(), r.path.as_deref()),
            (
                Some("POST"),
                Some(format!("/2010-04-01/Accounts/{SID}/Messages.json").as_str())
            )
        );
        assert_eq!(r.content_type, "application/x-www-form-urlencoded");
        assert_eq!(
            String::from_utf8(r.body.clone()).unwrap(),
            "To=%2B15550109999&From=%2B15017122661&Body=Hi+Ada%2C+you+are+now+Gold+%26+more%21"
        );
    }

    #[test]
    fn body_field_wins_and_messaging_service() {
        let m = mapping(&[(
            "messaging_service_sid",
            "MG00000000000000000000000000000000",
        )]);
        let Outcome::Send(msg) = m
            .item(&ev(
                "customer.a.order_shipped",
                json!({"phone":"+15550109999","sms_body":"Shipped!"}),
                Some("granted"),
            ))
            .unwrap()
        else {
            panic!()
        };
        let out = m.request(&msg);
        assert_eq!(
            String::from_utf8(out.as_request().unwrap().body.clone()).unwrap(),
            "To=%2B15550109999&MessagingServiceSid=MG00000000000000000000000000000000&Body=Shipped%21"
        );
    }

    #[test]
    fn consent_gate_and_other_drops_name_their_reason() {
        let m = mapping(&[("from", "+15017122661"), ("template.created", "Welcome")]);
        let skip = |e: Event| match m.item(&e).unwrap() {
            Outcome::Skip(r) => r,
            o => panic!("{o:?}"),
        };
        assert_eq!(
            skip(ev(
                "customer.a.created",
                json!({"phone":"+15550109999"}),
                Some("denied")
            )),
            "no SMS consent (consent.sms = denied)"
        );
        assert_eq!(
            skip(ev(
                "customer.a.created",
                json!({"phone":"+15550109999"}),
                None
            )),
            "no SMS consent (the event has no consent.sms)"
        );
        assert!(skip(ev("customer.a.created", json!({}), Some("granted")))
            .starts_with("no phone number"));
        assert!(skip(ev(
            "customer.a.tier_changed",
            json!({"phone":"+15550109999"}),
            Some("granted")
        ))
        .contains("no template.tier_changed"));
        assert!(skip(ev(
            "customer.a.deletion_requested",
            json!({"phone":"+15550109999"}),
            Some("granted")
        ))
        .contains("deletion"));
        let m = mapping(&[("from", "+1"), ("template.created", "Hi {first_name}")]);
        let err = m
            .item(&ev(
                "customer.a.created",
                json!({"phone":"+15550109999"}),
                Some("granted"),
            ))
            .unwrap_err();
        assert!(!err.retryable && err.message.contains("first_name"));
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |p: &[(&str, &str)]| {
            Mapping::from_config(&Config::from_pairs(p.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("from", "+1")]).starts_with("config `account_sid`: is required"));
        assert!(err(&[("account_sid", "AC1"), ("from", "+1")]).starts_with("config `account_sid`"));
        assert!(err(&[("account_sid", SID)]).starts_with("config `from`"));
        assert!(err(&[
            ("account_sid", SID),
            ("from", "+1"),
            ("messaging_service_sid", "MG1")
        ])
        .starts_with("config `from`"));
        assert!(err(&[
            ("account_sid", SID),
            ("from", "+1"),
            ("template.x", "Hi {a")
        ])
        .starts_with("config `template.x`"));
        assert!(
            err(&[("account_sid", SID), ("from", "+1"), ("auth_token", "x")])
                .starts_with("config `auth_token`: unknown key")
        );
    }
}
