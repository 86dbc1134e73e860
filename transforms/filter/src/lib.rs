//! `filter`: keep or drop events by topic, op, consent and field predicates.
//! Kept events pass through unchanged (`Output::event`); dropped ones give
//! zero outputs. See README.md for the config keys.

use switchyard_guest::{
    log, serde_json, transform, Config, ConfigError, Error, Event, Glob, Op, Output, State, Value,
};

static RULES: State<Rules> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    RULES.set(Rules::from_config(cfg)?);
    Ok(())
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    let rules = RULES.get();
    match rules.decide(&ev) {
        Ok(()) => Ok(vec![Output::event(ev)]),
        Err(reason) => {
            if rules.log_drops {
                log::debug!("filter: dropped {} ({}): {reason}", ev.id, ev.topic);
            }
            Ok(vec![])
        }
    }
}

/// Parsed configuration.
#[derive(Debug)]
pub struct Rules {
    topics: Vec<Glob>,
    drop_topics: Vec<Glob>,
    ops: Vec<Op>,
    require_consent: Vec<String>,
    /// All must hold to keep (from `where`, `eq.*`, `ne.*`).
    keep_if: Vec<Predicate>,
    /// Any one holding drops (from `drop_where`).
    drop_if: Vec<Predicate>,
    log_drops: bool,
}

const KNOWN_KEYS: &[&str] = &[
    "topics",
    "drop_topics",
    "ops",
    "require_consent",
    "where",
    "drop_where",
    "log_drops",
];

impl Rules {
    /// Parse and check the config; errors name the offending key.
    pub fn from_config(cfg: &Config) -> Result<Rules, ConfigError> {
        for (key, _) in cfg.iter() {
            if !KNOWN_KEYS.contains(&key) && !key.starts_with("eq.") && !key.starts_with("ne.") {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "unknown key; expected one of {} or eq.<field> / ne.<field>",
                        KNOWN_KEYS.join(", ")
                    ),
                ));
            }
        }
        let ops = cfg
            .list("ops")
            .iter()
            .map(|o| {
                Op::parse(o).ok_or_else(|| ConfigError::new("ops", format!("unknown op {o:?}")))
            })
            .collect::<Result<_, _>>()?;
        let mut keep_if = parse_predicates(cfg, "where")?;
        for (prefix, cmp) in [("eq.", Cmp::Eq), ("ne.", Cmp::Ne)] {
            for (path, value) in cfg.with_prefix(prefix) {
                let key = format!("{prefix}{path}");
                check_path(path).map_err(|m| ConfigError::new(&key, m))?;
                keep_if.push(Predicate {
                    path: path.to_string(),
                    cmp,
                    values: vec![parse_value(value.trim())],
                    glob: None,
                });
            }
        }
        Ok(Rules {
            topics: cfg.glob_list("topics")?,
            drop_topics: cfg.glob_list("drop_topics")?,
            ops,
            require_consent: cfg.list("require_consent"),
            keep_if,
            drop_if: parse_predicates(cfg, "drop_where")?,
            log_drops: cfg.bool("log_drops", false)?,
        })
    }

    /// `Ok(())` to keep the event, `Err(reason)` to drop it.
    pub fn decide(&self, ev: &Event) -> Result<(), String> {
        if !self.topics.is_empty() && !self.topics.iter().any(|g| g.matches(&ev.topic)) {
            return Err("topic matches no `topics` pattern".into());
        }
        if let Some(g) = self.drop_topics.iter().find(|g| g.matches(&ev.topic)) {
            return Err(format!(
                "topic matches drop_topics pattern {:?}",
                g.as_str()
            ));
        }
        if !self.ops.is_empty() && !self.ops.contains(&ev.op) {
            return Err(format!("op {} not in `ops`", ev.op));
        }
        if let Some(ch) = self
            .require_consent
            .iter()
            .find(|ch| !ev.consent_granted(ch))
        {
            return Err(format!("no granted consent for {ch:?}"));
        }
        if let Some(p) = self.keep_if.iter().find(|p| !p.holds(ev)) {
            return Err(format!("`{p}` does not hold"));
        }
        if let Some(p) = self.drop_if.iter().find(|p| p.holds(ev)) {
            return Err(format!("drop_where `{p}` holds"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Glob,
    NotGlob,
    In,
    NotIn,
    Contains,
    Exists,
    Missing,
}

impl Cmp {
    fn as_str(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Glob => "~",
            Cmp::NotGlob => "!~",
            Cmp::In => "in",
            Cmp::NotIn => "not in",
            Cmp::Contains => "contains",
            Cmp::Exists => "exists",
            Cmp::Missing => "missing",
        }
    }
}

/// One field test: `<path> <cmp> <value>`.
#[derive(Debug, Clone)]
struct Predicate {
    path: String,
    cmp: Cmp,
    values: Vec<Value>,
    glob: Option<Glob>,
}

impl std::fmt::Display for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.path, self.cmp.as_str())?;
        let vals: Vec<String> = self.values.iter().map(Value::to_string).collect();
        if !vals.is_empty() {
            write!(f, " {}", vals.join(", "))?;
        }
        Ok(())
    }
}

// Symbolic operators, longest first; word operators need spaces around them.
const SYMBOLS: &[(&str, Cmp)] = &[
    ("==", Cmp::Eq),
    ("!=", Cmp::Ne),
    ("!~", Cmp::NotGlob),
    ("<=", Cmp::Le),
    (">=", Cmp::Ge),
    ("<", Cmp::Lt),
    (">", Cmp::Gt),
    ("~", Cmp::Glob),
];
const WORDS: &[(&str, Cmp)] = &[
    ("not in", Cmp::NotIn),
    ("in", Cmp::In),
    ("contains", Cmp::Contains),
    ("exists", Cmp::Exists),
    ("missing", Cmp::Missing),
];

const ROOTS: &[&str] = &[
    "key",
    "before",
    "after",
    "data",
    "attributes",
    "consent",
    "commit",
];
const SCALARS: &[&str] = &[
    "id",
    "topic",
    "source",
    "op",
    "account_id",
    "occurred_at",
    "ingested_at",
    "traceparent",
    "changed",
];

fn check_path(path: &str) -> Result<(), String> {
    let root = path.split('.').next().unwrap_or("");
    if path.is_empty() {
        return Err("empty field path".into());
    }
    if SCALARS.contains(&path) || ROOTS.contains(&path) {
        return Ok(());
    }
    if ROOTS.contains(&root) && !path.ends_with('.') && !path.contains("..") {
        return Ok(());
    }
    Err(format!(
        "unknown field {path:?}; a path starts with one of {}, {} (e.g. after.country)",
        SCALARS.join(", "),
        ROOTS.join(", ")
    ))
}

/// A literal: JSON if it parses as JSON (`42`, `true`, `null`, `"a b"`),
/// otherwise the text itself as a string.
fn parse_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

fn parse_predicate(text: &str) -> Result<Predicate, String> {
    let text = text.trim();
    let path_end = text
        .find(|c: char| c.is_whitespace() || "=!<>~".contains(c))
        .unwrap_or(text.len());
    let path = &text[..path_end];
    check_path(path)?;
    let rest = text[path_end..].trim_start();
    let (cmp, value) = SYMBOLS
        .iter()
        .find_map(|(sym, cmp)| rest.strip_prefix(sym).map(|v| (*cmp, v)))
        .or_else(|| {
            WORDS.iter().find_map(|(word, cmp)| {
                let v = rest.strip_prefix(word)?;
                (v.is_empty() || v.starts_with(char::is_whitespace)).then_some((*cmp, v))
            })
        })
        .ok_or_else(|| {
            format!("expected an operator after {path:?}: ==, !=, <, <=, >, >=, ~, !~, in, not in, contains, exists, missing")
        })?;
    let value = value.trim();
    let unary = matches!(cmp, Cmp::Exists | Cmp::Missing);
    if unary && !value.is_empty() {
        return Err(format!("`{}` takes no value", cmp.as_str()));
    }
    if !unary && value.is_empty() {
        return Err(format!("`{}` needs a value", cmp.as_str()));
    }
    let values = match cmp {
        Cmp::Exists | Cmp::Missing => vec![],
        Cmp::In | Cmp::NotIn => value.split(',').map(|v| parse_value(v.trim())).collect(),
        _ => vec![parse_value(value)],
    };
    let glob = match cmp {
        Cmp::Glob | Cmp::NotGlob => Some(Glob::new(value).map_err(|e| e.to_string())?),
        _ => None,
    };
    Ok(Predicate {
        path: path.to_string(),
        cmp,
        values,
        glob,
    })
}

fn parse_predicates(cfg: &Config, key: &str) -> Result<Vec<Predicate>, ConfigError> {
    let Some(text) = cfg.get(key) else {
        return Ok(vec![]);
    };
    text.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| parse_predicate(p).map_err(|m| ConfigError::new(key, format!("in `{p}`: {m}"))))
        .collect()
}

/// Text form used for string comparisons (strings without quotes).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Equality that tolerates CDC encodings: numbers compare numerically
/// (`1 == 1.0`), and a string equals a number/bool whose text it is
/// (`"42" == 42`, `"true" == true`).
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(s), n @ Value::Number(_)) | (n @ Value::Number(_), Value::String(s)) => {
            s.trim().parse::<f64>().ok() == number(n)
        }
        (Value::String(s), Value::Bool(x)) | (Value::Bool(x), Value::String(s)) => {
            s.trim() == x.to_string()
        }
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y))
            if x.trim().parse::<f64>().is_err() || y.trim().parse::<f64>().is_err() =>
        {
            Some(x.cmp(y))
        }
        _ => number(a)?.partial_cmp(&number(b)?),
    }
}

impl Predicate {
    fn holds(&self, ev: &Event) -> bool {
        let field = ev.field(&self.path).filter(|v| !v.is_null());
        let Some(field) = field else {
            // An absent (or null) field fails every test but these.
            return matches!(self.cmp, Cmp::Missing | Cmp::Ne | Cmp::NotIn | Cmp::NotGlob);
        };
        let value = self.values.first();
        use std::cmp::Ordering::*;
        match self.cmp {
            Cmp::Exists => true,
            Cmp::Missing => false,
            Cmp::Eq => loose_eq(&field, value.unwrap()),
            Cmp::Ne => !loose_eq(&field, value.unwrap()),
            Cmp::Lt => order(&field, value.unwrap()) == Some(Less),
            Cmp::Le => matches!(order(&field, value.unwrap()), Some(Less | Equal)),
            Cmp::Gt => order(&field, value.unwrap()) == Some(Greater),
            Cmp::Ge => matches!(order(&field, value.unwrap()), Some(Greater | Equal)),
            Cmp::Glob => self.glob.as_ref().unwrap().matches(&text(&field)),
            Cmp::NotGlob => !self.glob.as_ref().unwrap().matches(&text(&field)),
            Cmp::In => self.values.iter().any(|v| loose_eq(&field, v)),
            Cmp::NotIn => !self.values.iter().any(|v| loose_eq(&field, v)),
            Cmp::Contains => match &field {
                Value::Array(items) => items.iter().any(|i| loose_eq(i, value.unwrap())),
                Value::String(s) => s.contains(&text(value.unwrap())),
                Value::Object(m) => m.contains_key(&text(value.unwrap())),
                _ => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(pairs: &[(&str, &str)]) -> Rules {
        Rules::from_config(&Config::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn refuse(pairs: &[(&str, &str)]) -> String {
        Rules::from_config(&Config::from_pairs(pairs.iter().copied()))
            .unwrap_err()
            .to_string()
    }

    fn ev() -> Event {
        Event::from_json(
            r#"{"id":"e1","topic":"customer.banner-a.email_changed","op":"update","account_id":"42",
            "after":{"country":"US","status":"active","age":"42","vip":true,"score":7.5,"tags":["a","b"],"email":"x@y.z","nothing":null},
            "changed":["email"],"consent":{"email":"granted","sms":"denied"},"attributes":{"banner":"a"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn empty_config_keeps_everything() {
        assert_eq!(rules(&[]).decide(&ev()), Ok(()));
    }

    #[test]
    fn topics_and_drop_topics() {
        assert!(rules(&[("topics", "order.*, customer.*.email_changed")])
            .decide(&ev())
            .is_ok());
        assert!(rules(&[("topics", "order.*")]).decide(&ev()).is_err());
        assert!(
            rules(&[("topics", "customer.*"), ("drop_topics", "*.email_changed")])
                .decide(&ev())
                .is_err()
        );
        assert!(rules(&[("drop_topics", "customer.{banner-b,banner-c}.*")])
            .decide(&ev())
            .is_ok());
    }

    #[test]
    fn ops() {
        assert!(rules(&[("ops", "insert, update")]).decide(&ev()).is_ok());
        assert!(rules(&[("ops", "delete,soft-delete")])
            .decide(&ev())
            .is_err());
    }

    #[test]
    fn consent() {
        assert!(rules(&[("require_consent", "email")]).decide(&ev()).is_ok());
        assert!(rules(&[("require_consent", "email,sms")])
            .decide(&ev())
            .is_err());
        assert!(rules(&[("require_consent", "push")]).decide(&ev()).is_err());
    }

    #[test]
    fn where_predicates() {
        let keep = |w: &str| rules(&[("where", w)]).decide(&ev()).is_ok();
        assert!(keep("after.country == US; after.status != closed"));
        assert!(!keep("after.country == US; after.status == closed"));
        assert!(keep("after.country==\"US\""));
        assert!(keep("after.age == 42")); // numeric string vs number
        assert!(keep(
            "after.age > 18; after.age <= 42; after.score < 10; after.score >= 7.5"
        ));
        assert!(!keep("after.age > 42"));
        assert!(keep("after.vip == true"));
        assert!(keep("after.country in US, CA"));
        assert!(!keep("after.country not in US, CA"));
        assert!(keep("after.email ~ *@y.z"));
        assert!(keep("after.email !~ *@example.com"));
        assert!(keep("after.tags contains b"));
        assert!(keep("changed contains email"));
        assert!(keep(
            "after.email exists; after.nothing missing; after.nope missing"
        ));
        assert!(!keep("after.nope exists"));
        assert!(!keep("after.nope == x"));
        assert!(keep("after.nope != x"));
        assert!(keep("topic ~ customer.*; op == update; account_id == 42"));
        assert!(keep("attributes.banner == a; consent.sms == denied"));
    }

    #[test]
    fn eq_ne_keys_and_drop_where() {
        assert!(
            rules(&[("eq.after.country", "US"), ("ne.after.status", "closed")])
                .decide(&ev())
                .is_ok()
        );
        assert!(rules(&[("eq.after.country", "CA")]).decide(&ev()).is_err());
        assert!(
            rules(&[("drop_where", "after.status == closed; after.vip == true")])
                .decide(&ev())
                .is_err()
        );
        assert!(rules(&[("drop_where", "after.status == closed")])
            .decide(&ev())
            .is_ok());
    }

    #[test]
    fn bad_config_is_refused_naming_the_key() {
        assert!(refuse(&[("topics", "customer.[abc")]).starts_with("config `topics`: invalid glob"));
        assert!(refuse(&[("drop_topics", "{a")]).starts_with("config `drop_topics`"));
        assert!(refuse(&[("ops", "upsert")]).starts_with("config `ops`: unknown op"));
        let e = refuse(&[("where", "after.country = US")]);
        assert!(
            e.starts_with("config `where`: in `after.country = US`: expected an operator"),
            "{e}"
        );
        assert!(refuse(&[("where", "country == US")]).contains("unknown field"));
        assert!(refuse(&[("where", "after.x exists 3")]).contains("takes no value"));
        assert!(refuse(&[("where", "after.x ==")]).contains("needs a value"));
        assert!(refuse(&[("drop_where", "after.x ~ [a")]).starts_with("config `drop_where`"));
        assert!(refuse(&[("eq.country", "US")]).starts_with("config `eq.country`"));
        assert!(refuse(&[("topic", "a")]).starts_with("config `topic`: unknown key"));
        assert!(refuse(&[("log_drops", "maybe")]).starts_with("config `log_drops`"));
    }

    #[test]
    fn drop_reason_is_explained() {
        let r = rules(&[("where", "after.country == CA")]);
        assert_eq!(
            r.decide(&ev()).unwrap_err(),
            "`after.country == \"CA\"` does not hold"
        );
    }
}
