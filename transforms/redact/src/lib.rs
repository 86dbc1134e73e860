//! `redact`: drop, hash or mask fields of `key`/`before`/`after`/`data`, then
//! pass the rewritten event on. See README.md for the config keys.

use sha2::{Digest, Sha256};
use switchyard_guest::{
    normalize, transform, Config, ConfigError, Error, Event, Output, State, Value,
};

static PLAN: State<Plan> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    PLAN.set(Plan::from_config(cfg)?);
    Ok(())
}

#[transform(init = init)]
fn transform(mut ev: Event) -> Result<Vec<Output>, Error> {
    PLAN.get().apply(&mut ev);
    Ok(vec![Output::event(ev)])
}

/// How a hashed value is normalised before SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// Trimmed, lowercased.
    Email,
    /// E.164 digits without `+`.
    Phone,
    /// Trimmed, lowercased.
    Name,
    /// As is (non-strings: their JSON text).
    Raw,
}

impl HashKind {
    fn parse(s: &str) -> Option<HashKind> {
        match s.trim().to_ascii_lowercase().as_str() {
            "email" => Some(HashKind::Email),
            "phone" => Some(HashKind::Phone),
            "name" => Some(HashKind::Name),
            "raw" | "none" => Some(HashKind::Raw),
            _ => None,
        }
    }

    /// Guess from the field's last path segment.
    pub fn infer(path: &str) -> HashKind {
        let last = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
        if last.contains("email") {
            HashKind::Email
        } else if last.contains("phone")
            || last.contains("mobile")
            || last == "tel"
            || last == "msisdn"
        {
            HashKind::Phone
        } else if matches!(
            last.as_str(),
            "name"
                | "first_name"
                | "last_name"
                | "firstname"
                | "lastname"
                | "given_name"
                | "family_name"
                | "full_name"
                | "fn"
                | "ln"
                | "middle_name"
        ) {
            HashKind::Name
        } else {
            HashKind::Raw
        }
    }
}

/// A field selector from config: explicit (`after.ssn`) or bare (`ssn`, meaning
/// the field in `before`, `after` and `data`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// As written in the config (the `hash_kind.<name>` key uses it).
    name: String,
    /// Concrete JSON paths.
    paths: Vec<String>,
}

const ROOTS: &[&str] = &["key", "before", "after", "data"];

fn targets(cfg: &Config, key: &str) -> Result<Vec<Target>, ConfigError> {
    cfg.list(key)
        .into_iter()
        .map(|name| {
            if name.split('.').any(str::is_empty) {
                return Err(ConfigError::new(key, format!("{name:?} is not a field path (empty segment)")));
            }
            let root = name.split('.').next().unwrap_or("");
            let paths = if ROOTS.contains(&root) {
                if !name.contains('.') {
                    return Err(ConfigError::new(
                        key,
                        format!("{name:?} names a whole part of the event; name fields inside it (e.g. {name}.email)"),
                    ));
                }
                vec![name.clone()]
            } else {
                ["before", "after", "data"].iter().map(|r| format!("{r}.{name}")).collect()
            };
            Ok(Target { name, paths })
        })
        .collect()
}

/// Parsed configuration.
#[derive(Debug)]
pub struct Plan {
    drop: Vec<Target>,
    hash: Vec<(Target, HashKind)>,
    mask: Vec<Target>,
    mask_keep: usize,
    phone_country_code: Option<String>,
    salt: String,
}

impl Plan {
    /// Parse and check the config; errors name the offending key.
    pub fn from_config(cfg: &Config) -> Result<Plan, ConfigError> {
        let known = [
            "drop",
            "hash",
            "mask",
            "mask_keep",
            "phone_country_code",
            "salt",
        ];
        for (key, _) in cfg.iter() {
            if !known.contains(&key) && !key.starts_with("hash_kind.") {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "unknown key; expected one of {} or hash_kind.<field>",
                        known.join(", ")
                    ),
                ));
            }
        }
        let hash_targets = targets(cfg, "hash")?;
        for (field, _) in cfg.with_prefix("hash_kind.") {
            if !hash_targets.iter().any(|t| t.name == field) {
                return Err(ConfigError::new(
                    format!("hash_kind.{field}"),
                    format!("{field:?} is not listed in `hash`"),
                ));
            }
        }
        let hash = hash_targets
            .into_iter()
            .map(|t| {
                let key = format!("hash_kind.{}", t.name);
                let kind = match cfg.get(&key) {
                    None => HashKind::infer(&t.name),
                    Some(k) => HashKind::parse(k).ok_or_else(|| {
                        ConfigError::new(&key, format!("{k:?}: expected email, phone, name or raw"))
                    })?,
                };
                Ok((t, kind))
            })
            .collect::<Result<_, ConfigError>>()?;
        let phone_country_code = match cfg.get("phone_country_code").map(str::trim) {
            None | Some("") => None,
            Some(cc) => {
                let digits = cc.strip_prefix('+').unwrap_or(cc);
                if digits.is_empty()
                    || digits.len() > 3
                    || !digits.chars().all(|c| c.is_ascii_digit())
                {
                    return Err(ConfigError::new(
                        "phone_country_code",
                        format!("{cc:?} is not a calling code like 1 or 44"),
                    ));
                }
                Some(digits.to_string())
            }
        };
        Ok(Plan {
            drop: targets(cfg, "drop")?,
            hash,
            mask: targets(cfg, "mask")?,
            mask_keep: cfg.parse("mask_keep")?.unwrap_or(4),
            phone_country_code,
            salt: cfg.get_or("salt", "").to_string(),
        })
    }

    /// Rewrite the event: drop, then hash, then mask.
    pub fn apply(&self, ev: &mut Event) {
        for t in &self.drop {
            for p in &t.paths {
                ev.remove_json(p);
            }
        }
        for (t, kind) in &self.hash {
            for p in &t.paths {
                if let Some(v) = ev.json_mut(p) {
                    self.hash_value(v, *kind);
                }
            }
        }
        for t in &self.mask {
            for p in &t.paths {
                if let Some(v) = ev.json_mut(p) {
                    mask_value(v, self.mask_keep);
                }
            }
        }
    }

    fn hash_value(&self, v: &mut Value, kind: HashKind) {
        match v {
            Value::Null => {}
            Value::Array(items) => items.iter_mut().for_each(|i| self.hash_value(i, kind)),
            _ => {
                if let Some(norm) = self.normalise(v, kind).filter(|n| !n.is_empty()) {
                    *v = Value::String(sha256_hex(&format!("{}{norm}", self.salt)));
                }
            }
        }
    }

    /// The text that gets hashed, normalised for `kind`.
    pub fn normalise(&self, v: &Value, kind: HashKind) -> Option<String> {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        };
        Some(match kind {
            HashKind::Email => normalize::email(&text),
            HashKind::Name => normalize::name(&text),
            HashKind::Phone => normalize::phone_digits(&text, self.phone_country_code.as_deref()),
            HashKind::Raw => text,
        })
    }
}

/// Lowercase hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn mask_value(v: &mut Value, keep: usize) {
    let text = match &mut *v {
        Value::Null => return,
        Value::Array(items) => return items.iter_mut().for_each(|i| mask_value(i, keep)),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let chars: Vec<char> = text.chars().collect();
    // Values no longer than `keep` would be shown whole: hide them entirely.
    let tail: String = if chars.len() > keep {
        chars[chars.len() - keep..].iter().collect()
    } else {
        String::new()
    };
    *v = Value::String(format!("****{tail}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_guest::json;

    fn plan(pairs: &[(&str, &str)]) -> Plan {
        Plan::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn ev() -> Event {
        Event::from_json(
            r#"{"id":"e1","topic":"customer.updated","op":"update","key":{"id":7},
            "before":{"email":"OLD@X.COM","ssn":"123-45-6789"},
            "after":{"email":"  Jane.Doe@Example.COM ","phone":"+1 (555) 010-9999","ssn":"123-45-6789",
                     "first_name":" Jane ","card":"4111111111111111","pin":"12","nested":{"dob":"1990-01-01"},
                     "emails":["A@b.c", null],"loyalty":12345678,"nothing":null},
            "data":{"ssn":"x"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn drop_bare_and_explicit() {
        let mut e = ev();
        plan(&[("drop", "ssn, after.nested.dob, after.nope")]).apply(&mut e);
        assert_eq!(e.json("before.ssn"), None);
        assert_eq!(e.json("after.ssn"), None);
        assert_eq!(e.json("data.ssn"), None);
        assert_eq!(e.json("after.nested"), Some(&json!({})));
        assert_eq!(
            e.json("after.email"),
            Some(&json!("  Jane.Doe@Example.COM "))
        );
    }

    #[test]
    fn hash_normalises_by_kind() {
        let mut e = ev();
        plan(&[(
            "hash",
            "email, after.phone, after.first_name, after.emails, after.loyalty, after.nothing",
        )])
        .apply(&mut e);
        assert_eq!(
            e.json("after.email"),
            Some(&json!(sha256_hex("jane.doe@example.com")))
        );
        assert_eq!(
            e.json("before.email"),
            Some(&json!(sha256_hex("old@x.com")))
        );
        assert_eq!(
            e.json("after.phone"),
            Some(&json!(sha256_hex("15550109999")))
        );
        assert_eq!(e.json("after.first_name"), Some(&json!(sha256_hex("jane"))));
        assert_eq!(
            e.json("after.emails"),
            Some(&json!([sha256_hex("a@b.c"), null]))
        );
        assert_eq!(
            e.json("after.loyalty"),
            Some(&json!(sha256_hex("12345678")))
        );
        assert_eq!(e.json("after.nothing"), Some(&Value::Null));
    }

    #[test]
    fn hash_kind_override_salt_and_country_code() {
        let mut e = ev();
        e.after.as_mut().unwrap()["phone"] = json!("(555) 010-9999");
        plan(&[
            ("hash", "after.phone, after.card"),
            ("hash_kind.after.card", "phone"),
            ("phone_country_code", "+1"),
            ("salt", "s:"),
        ])
        .apply(&mut e);
        assert_eq!(
            e.json("after.phone"),
            Some(&json!(sha256_hex("s:15550109999")))
        );
        assert_eq!(
            e.json("after.card"),
            Some(&json!(sha256_hex("s:14111111111111111")))
        );
    }

    #[test]
    fn mask_keeps_last_four() {
        let mut e = ev();
        plan(&[("mask", "after.card, after.pin, after.loyalty")]).apply(&mut e);
        assert_eq!(e.json("after.card"), Some(&json!("****1111")));
        assert_eq!(e.json("after.pin"), Some(&json!("****")));
        assert_eq!(e.json("after.loyalty"), Some(&json!("****5678")));
        let mut e = ev();
        plan(&[("mask", "after.card"), ("mask_keep", "2")]).apply(&mut e);
        assert_eq!(e.json("after.card"), Some(&json!("****11")));
    }

    #[test]
    fn inference() {
        assert_eq!(HashKind::infer("after.work_email"), HashKind::Email);
        assert_eq!(HashKind::infer("mobile_number"), HashKind::Phone);
        assert_eq!(HashKind::infer("after.last_name"), HashKind::Name);
        assert_eq!(HashKind::infer("zip"), HashKind::Raw);
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |pairs: &[(&str, &str)]| {
            Plan::from_config(&Config::from_pairs(pairs.iter().copied()))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("hash", "email"), ("hash_kind.email", "md5")])
            .starts_with("config `hash_kind.email`"));
        assert!(err(&[("hash_kind.phone", "phone")]).contains("not listed in `hash`"));
        assert!(
            err(&[("drop", "after")]).starts_with("config `drop`: \"after\" names a whole part")
        );
        assert!(err(&[("mask", "after..x")]).starts_with("config `mask`"));
        assert!(err(&[("mask_keep", "-1")]).starts_with("config `mask_keep`"));
        assert!(err(&[("phone_country_code", "US")]).starts_with("config `phone_country_code`"));
        assert!(err(&[("hashes", "x")]).starts_with("config `hashes`: unknown key"));
    }
}
