//! `customer`: how the destination modules read a canonical customer event.
//! A library shared by the vendor modules (not a module itself). See README.md.
//!
//! * [`Kind`] / [`Action`]: what happened, from the topic's last segment
//!   (`customer.<banner>.email_changed`) and the event's `op`.
//! * [`Fields`] / [`Profile`]: the customer's identifiers and attributes,
//!   read from `after` (CDC) or `data` (application events) by configurable
//!   candidate paths; the config keys are the same in every module.
//! * [`hash`], [`url`]: SHA-256 of normalised identifiers, percent-encoding.

use std::collections::BTreeMap;

use switchyard_guest::{normalize, Config, ConfigError, Event, Op, Value};

/// The kind of customer change, from the topic's last segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Created,
    EmailChanged,
    PhoneChanged,
    AddressChanged,
    ConsentChanged,
    TierChanged,
    /// `subscription_changed`, or any `subscription_<state>` (`subscription_cancelled`).
    SubscriptionChanged,
    DeletionRequested,
    /// Any other topic (CDC `customer.<banner>.update`, `…insert`, …): a profile update.
    Other,
}

impl Kind {
    /// The kind of `ev`: its topic's last segment; CDC inserts and snapshots
    /// of an unknown topic count as `created`.
    pub fn of(ev: &Event) -> Kind {
        let last = ev.topic.rsplit('.').next().unwrap_or_default();
        match last {
            "created" => Kind::Created,
            "email_changed" => Kind::EmailChanged,
            "phone_changed" => Kind::PhoneChanged,
            "address_changed" => Kind::AddressChanged,
            "consent_changed" => Kind::ConsentChanged,
            "tier_changed" => Kind::TierChanged,
            "deletion_requested" => Kind::DeletionRequested,
            s if s.starts_with("subscription_") => Kind::SubscriptionChanged,
            _ if matches!(ev.op, Op::Insert | Op::Snapshot) => Kind::Created,
            _ => Kind::Other,
        }
    }

    /// The canonical name (`email_changed`); `other` for [`Kind::Other`].
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::EmailChanged => "email_changed",
            Kind::PhoneChanged => "phone_changed",
            Kind::AddressChanged => "address_changed",
            Kind::ConsentChanged => "consent_changed",
            Kind::TierChanged => "tier_changed",
            Kind::SubscriptionChanged => "subscription_changed",
            Kind::DeletionRequested => "deletion_requested",
            Kind::Other => "other",
        }
    }
}

/// What a destination does with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create or update the profile.
    Upsert(Kind),
    /// Erase the person (`customer.*.deletion_requested`).
    Delete,
    /// Send nothing, for this reason (logged by the module).
    Skip(String),
}

/// The action for `ev`. A CDC `delete`/`soft_delete` of a row is not a
/// deletion request (the row may be archived, merged, re-created): it is
/// skipped; erasure needs the explicit `deletion_requested` event.
pub fn action(ev: &Event) -> Action {
    match Kind::of(ev) {
        Kind::DeletionRequested => Action::Delete,
        _ if matches!(ev.op, Op::Delete | Op::SoftDelete) => Action::Skip(format!(
            "a {} event is a row deletion, not a deletion request (send customer.<banner>.deletion_requested)",
            ev.op
        )),
        k => Action::Upsert(k),
    }
}

/// A postal address (only the parts present are `Some`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Address {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: Option<String>,
}

impl Address {
    pub fn is_empty(&self) -> bool {
        *self == Address::default()
    }
}

/// What one event says about the customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// The event's `account_id`, or the configured `external_id_field`.
    pub external_id: Option<String>,
    /// Trimmed, as written (values without `@` are ignored).
    pub email: Option<String>,
    /// E.164 digits without `+` (`15550109999`).
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub address: Option<Address>,
    /// Loyalty tier (`tier_field`).
    pub tier: Option<String>,
    /// Subscription state (`subscription_field`; for a `subscription_<state>`
    /// topic without one, `<state>`).
    pub subscription: Option<String>,
    /// Consent per channel, from the event's `consent` (`granted`/`denied`/`unknown`).
    pub consent: BTreeMap<String, String>,
    /// The configured `properties` (key = path as written).
    pub properties: BTreeMap<String, Value>,
}

impl Profile {
    /// `+` E.164 (`+15550109999`).
    pub fn phone_e164(&self) -> Option<String> {
        self.phone.as_ref().map(|d| format!("+{d}"))
    }

    /// Consent state of `channel`, if the event carries one.
    pub fn consent(&self, channel: &str) -> Option<&str> {
        self.consent.get(channel).map(String::as_str)
    }
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

/// Where each field is read from (the config keys every destination module shares).
#[derive(Debug, Clone)]
pub struct Fields {
    part: Part,
    email: Vec<String>,
    phone: Vec<String>,
    first_name: Vec<String>,
    last_name: Vec<String>,
    address: Vec<String>,
    tier: Vec<String>,
    subscription: Vec<String>,
    external_id: Option<String>,
    properties: Properties,
    phone_country_code: Option<String>,
}

/// Config keys read by [`Fields::from_config`].
pub const FIELD_KEYS: &[&str] = &[
    "source",
    "email_field",
    "phone_field",
    "first_name_field",
    "last_name_field",
    "address_field",
    "tier_field",
    "subscription_field",
    "external_id_field",
    "properties",
    "phone_country_code",
];

/// Refuse keys that are neither in [`FIELD_KEYS`] nor in `own`.
pub fn check_keys(cfg: &Config, own: &[&str]) -> Result<(), ConfigError> {
    if let Some((key, _)) = cfg
        .iter()
        .find(|(k, _)| !FIELD_KEYS.contains(k) && !own.contains(k))
    {
        let all: Vec<&str> = FIELD_KEYS.iter().chain(own).copied().collect();
        return Err(ConfigError::new(
            key,
            format!("unknown key; expected one of {}", all.join(", ")),
        ));
    }
    Ok(())
}

fn paths(cfg: &Config, key: &str, default: &str) -> Result<Vec<String>, ConfigError> {
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
pub fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A non-empty scalar as trimmed text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// First candidate path holding a non-empty scalar, as text.
pub fn first_text(payload: Option<&Value>, candidates: &[String]) -> Option<String> {
    let payload = payload?;
    candidates.iter().find_map(|c| text(at(payload, c)?))
}

fn pick(obj: &Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| text(obj.get(n)?))
}

impl Fields {
    /// Parse the shared keys (see README.md for their defaults).
    pub fn from_config(cfg: &Config) -> Result<Fields, ConfigError> {
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
            Some(_) => Properties::Fields(paths(cfg, "properties", "")?),
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
        Ok(Fields {
            part,
            email: paths(cfg, "email_field", "email")?,
            phone: paths(cfg, "phone_field", "phone_number, phone, mobile")?,
            first_name: paths(cfg, "first_name_field", "first_name, firstname, given_name")?,
            last_name: paths(cfg, "last_name_field", "last_name, lastname, family_name")?,
            address: paths(cfg, "address_field", "address")?,
            tier: paths(cfg, "tier_field", "tier, loyalty_tier")?,
            subscription: paths(
                cfg,
                "subscription_field",
                "subscription_status, subscription.status",
            )?,
            external_id: paths(cfg, "external_id_field", "")?.into_iter().next(),
            properties,
            phone_country_code,
        })
    }

    /// The payload fields are read from: `after`, else `data` (per `source`).
    pub fn payload<'a>(&self, ev: &'a Event) -> Option<&'a Value> {
        match self.part {
            Part::Auto => ev.payload(),
            Part::After => ev.after.as_ref(),
            Part::Data => ev.data.as_ref(),
        }
    }

    /// The paths the identifiers are read from, for error messages:
    /// `email (email), phone (phone_number, phone, mobile)`.
    pub fn describe_identifiers(&self) -> String {
        format!(
            "email ({}), phone ({})",
            self.email.join(", "),
            self.phone.join(", ")
        )
    }

    /// Read the profile of `ev`.
    pub fn profile(&self, ev: &Event) -> Profile {
        let payload = self.payload(ev);
        let email = first_text(payload, &self.email).filter(|e| e.contains('@'));
        let phone = first_text(payload, &self.phone)
            .map(|p| normalize::phone_digits(&p, self.phone_country_code.as_deref()))
            .filter(|d| !d.is_empty());
        let external_id = match &self.external_id {
            Some(path) => first_text(payload, std::slice::from_ref(path)),
            None => Some(ev.account_id.clone()).filter(|a| !a.is_empty()),
        };
        let address = payload
            .and_then(|p| self.address.iter().find_map(|c| at(p, c)))
            .and_then(|a| {
                let addr = match a {
                    Value::Object(_) => Address {
                        line1: pick(a, &["line1", "address1", "street", "street_address"]),
                        line2: pick(a, &["line2", "address2"]),
                        city: pick(a, &["city", "locality"]),
                        region: pick(a, &["region", "state", "province"]),
                        postal_code: pick(a, &["postal_code", "zip", "zip_code", "postcode"]),
                        country: pick(a, &["country", "country_code"]),
                    },
                    v => Address {
                        line1: text(v),
                        ..Address::default()
                    },
                };
                (!addr.is_empty()).then_some(addr)
            });
        let subscription = first_text(payload, &self.subscription).or_else(|| {
            let last = ev.topic.rsplit('.').next().unwrap_or_default();
            last.strip_prefix("subscription_")
                .filter(|s| !s.is_empty() && *s != "changed")
                .map(str::to_string)
        });
        Profile {
            external_id,
            email,
            phone,
            first_name: first_text(payload, &self.first_name),
            last_name: first_text(payload, &self.last_name),
            address,
            tier: first_text(payload, &self.tier),
            subscription,
            consent: ev
                .consent
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            properties: self.properties(payload),
        }
    }

    fn properties(&self, payload: Option<&Value>) -> BTreeMap<String, Value> {
        let mut props = BTreeMap::new();
        let Some(payload) = payload else { return props };
        match &self.properties {
            Properties::None => {}
            Properties::All => {
                let mapped: Vec<&String> = [
                    &self.email,
                    &self.phone,
                    &self.first_name,
                    &self.last_name,
                    &self.address,
                    &self.tier,
                    &self.subscription,
                ]
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
}

/// SHA-256 of normalised identifiers, as the ad platforms expect.
pub mod hash {
    use sha2::{Digest, Sha256};

    /// Lowercase hex SHA-256 of `s`.
    pub fn sha256_hex(s: &str) -> String {
        let d = Sha256::digest(s.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Email trimmed and lowercased, hashed.
    pub fn email(raw: &str) -> String {
        sha256_hex(&switchyard_guest::normalize::email(raw))
    }
}

/// Percent-encoding (RFC 3986 unreserved characters kept).
pub mod url {
    fn encode(s: &str, space_plus: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    out.push(b as char)
                }
                b' ' if space_plus => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    /// One path segment (`a/b@c` → `a%2Fb%40c`).
    pub fn segment(s: &str) -> String {
        encode(s, false)
    }

    /// `application/x-www-form-urlencoded` body of `pairs` (space as `+`).
    pub fn form<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{}={}", encode(k, true), encode(v, true)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_guest::json;

    fn ev(topic: &str, op: &str, after: Value) -> Event {
        let mut e = Event::from_json(&format!(
            r#"{{"id":"e1","topic":"{topic}","op":"{op}","account_id":"42"}}"#
        ))
        .unwrap();
        e.after = Some(after);
        e
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    #[test]
    fn kinds_and_actions() {
        let k = |t: &str, op: &str| Kind::of(&ev(t, op, json!({})));
        assert_eq!(k("customer.a.created", "event"), Kind::Created);
        assert_eq!(k("customer.a.email_changed", "update"), Kind::EmailChanged);
        assert_eq!(k("customer.a.phone_changed", "event"), Kind::PhoneChanged);
        assert_eq!(
            k("customer.a.address_changed", "event"),
            Kind::AddressChanged
        );
        assert_eq!(
            k("customer.a.consent_changed", "event"),
            Kind::ConsentChanged
        );
        assert_eq!(k("customer.a.tier_changed", "event"), Kind::TierChanged);
        assert_eq!(
            k("customer.a.subscription_changed", "event"),
            Kind::SubscriptionChanged
        );
        assert_eq!(
            k("customer.a.subscription_cancelled", "event"),
            Kind::SubscriptionChanged
        );
        assert_eq!(
            k("customer.a.deletion_requested", "event"),
            Kind::DeletionRequested
        );
        assert_eq!(k("customer.a.insert", "insert"), Kind::Created);
        assert_eq!(k("customer.a.update", "update"), Kind::Other);
        assert_eq!(
            action(&ev("customer.a.deletion_requested", "event", json!({}))),
            Action::Delete
        );
        assert!(
            matches!(action(&ev("customer.a.delete", "delete", json!({}))), Action::Skip(r) if r.contains("not a deletion request"))
        );
        assert_eq!(
            action(&ev("customer.a.tier_changed", "update", json!({}))),
            Action::Upsert(Kind::TierChanged)
        );
    }

    #[test]
    fn profile_defaults() {
        let mut e = ev(
            "customer.a.subscription_cancelled",
            "event",
            json!({"email":" Ada@X.com ","phone":"+1 (555) 010-9999","first_name":"Ada","last_name":"L",
                   "address":{"street":"1 Main St","city":"Leeds","state":"WY","zip":"LS1","country":"GB"},"tier":"gold","plan":"p"}),
        );
        e.consent.insert("email".into(), "granted".into());
        let p = fields(&[("properties", "plan")]).profile(&e);
        assert_eq!(p.external_id.as_deref(), Some("42"));
        assert_eq!(p.email.as_deref(), Some("Ada@X.com"));
        assert_eq!(p.phone.as_deref(), Some("15550109999"));
        assert_eq!(p.phone_e164().as_deref(), Some("+15550109999"));
        let a = p.address.clone().unwrap();
        assert_eq!(
            (a.line1.as_deref(), a.city.as_deref(), a.region.as_deref()),
            (Some("1 Main St"), Some("Leeds"), Some("WY"))
        );
        assert_eq!(
            (a.postal_code.as_deref(), a.country.as_deref(), a.line2),
            (Some("LS1"), Some("GB"), None)
        );
        assert_eq!(p.tier.as_deref(), Some("gold"));
        assert_eq!(p.subscription.as_deref(), Some("cancelled"));
        assert_eq!(p.consent("email"), Some("granted"));
        assert_eq!(p.properties.get("plan"), Some(&json!("p")));
        // An explicit field wins over the topic.
        let p = fields(&[]).profile(&ev(
            "customer.a.subscription_changed",
            "event",
            json!({"subscription":{"status":"paused"}}),
        ));
        assert_eq!(p.subscription.as_deref(), Some("paused"));
        let p = fields(&[]).profile(&ev("customer.a.subscription_changed", "event", json!({})));
        assert_eq!(p.subscription, None);
        let p = fields(&[]).profile(&ev("customer.a.updated", "event", json!({"email":"nope"})));
        assert_eq!(p.email, None);
    }

    #[test]
    fn hashes_and_encoding() {
        assert_eq!(
            hash::sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash::email("  Jane@Example.COM "),
            hash::sha256_hex("jane@example.com")
        );
        assert_eq!(url::segment("a/b@c d"), "a%2Fb%40c%20d");
        assert_eq!(
            url::form([("To", "+1555"), ("Body", "Hi there & bye")]),
            "To=%2B1555&Body=Hi+there+%26+bye"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let cfg = Config::from_pairs([("api_key", "x")]);
        assert!(check_keys(&cfg, &["list_id"])
            .unwrap_err()
            .to_string()
            .starts_with("config `api_key`: unknown key"));
        assert!(check_keys(
            &Config::from_pairs([("list_id", "x"), ("email_field", "e")]),
            &["list_id"]
        )
        .is_ok());
        assert!(Fields::from_config(&Config::from_pairs([("source", "before")])).is_err());
        assert!(Fields::from_config(&Config::from_pairs([("phone_country_code", "x")])).is_err());
    }
}

/// What a destination's mapping gives for one event: the vendor's item
/// (what a batch would collect) or why the event is dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    Send(T),
    Skip(String),
}

/// Audience membership (ad platforms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Add,
    Remove,
}

/// Whether `ev` adds the person to an ad audience or removes them, by the
/// consent of `channel` (`ads`): a deletion request or `denied` removes,
/// `granted` adds, anything else (unknown, absent) is skipped with a reason.
pub fn membership(ev: &Event, p: &Profile, channel: &str) -> Outcome<Membership> {
    match action(ev) {
        Action::Skip(r) => Outcome::Skip(r),
        Action::Delete => Outcome::Send(Membership::Remove),
        Action::Upsert(_) => match p.consent(channel) {
            Some("granted") => Outcome::Send(Membership::Add),
            Some("denied") => Outcome::Send(Membership::Remove),
            Some(other) => Outcome::Skip(format!(
                "no {channel} consent (consent.{channel} = {other})"
            )),
            None => Outcome::Skip(format!(
                "no {channel} consent (the event has no consent.{channel})"
            )),
        },
    }
}

/// Unix seconds of an RFC 3339 time (`2026-11-30T10:00:00.123Z`,
/// `…+01:00`); `None` if it is not one.
pub fn unix_seconds(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let v = o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + s - offset)
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn rfc3339_to_unix() {
        use super::unix_seconds as u;
        assert_eq!(u("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(u("2026-11-30T10:00:00Z"), Some(1_796_032_800));
        assert_eq!(u("2026-11-30T10:00:00.123456Z"), Some(1_796_032_800));
        assert_eq!(u("2026-11-30T11:30:00+01:30"), Some(1_796_032_800));
        assert_eq!(u("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(u("2026-11-30"), None);
        assert_eq!(u("2026-13-30T10:00:00Z"), None);
        assert_eq!(u("2026-11-30T10:00:00"), None);
    }
}
