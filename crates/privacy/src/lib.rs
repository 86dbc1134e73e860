//! `switchyard-privacy`: the host-side policy stage that runs before every
//! consumer's module chain.
//!
//! - [`config`]: `[privacy]` (PII classes, jurisdictions, consent and
//!   deletion topics, audit retention) and a consumer's `policy`;
//! - [`Privacy::evaluate`]: the one pure function — an event, the account's
//!   consent as this consumer has seen it so far, and the consumer's policy
//!   in; the event the consumer may receive (or the rule that filtered it),
//!   each field removed or changed (names only) and the consent decision out.
//!
//! Deny by default: a field a class names that the policy does not grant
//! (or that the jurisdiction ties to a purpose without consent) never leaves
//! in clear. No value of a classified field appears in any reason or name
//! this crate produces: only field paths, class and rule names.

pub mod config;

use std::collections::BTreeMap;

use globset::{Glob, GlobMatcher};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use switchyard_core::event::{ConsentState, Event};

pub use config::{
    Action, ClassConfig, FieldRule, JurisdictionConfig, Normalize, PolicyConfig, PrivacyConfig,
    Unclassified, UnknownConsent,
};

/// What the stage decided for one event and one consumer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send this (possibly modified) event to the module chain.
    Deliver(Event),
    /// Do not send; `rule` names what filtered it (counted and audited).
    Filtered { rule: String },
}

/// One field the policy removed or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Where: `data.email`, `after.phone`, `attributes.zip`.
    pub field: String,
    /// The class that named it (none for an unclassified field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// `drop`, `mask` or `hash`.
    pub action: &'static str,
    /// The rule that decided it.
    pub rule: String,
}

/// The consent decision and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsentDecision {
    /// The consumer's purpose (none: it needs no consent).
    pub purpose: Option<String>,
    /// `granted`, `denied`, `unknown` as stored, or `not needed`.
    pub state: String,
    pub allowed: bool,
    pub reason: String,
}

/// Everything [`Privacy::evaluate`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub decision: Decision,
    pub jurisdiction: Option<String>,
    pub consent: ConsentDecision,
    pub changes: Vec<FieldChange>,
}

/// What an event is to the privacy layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ordinary,
    /// A `consent_topic` event: it updates the store and is itself sent
    /// whatever the consent (the vendor must learn of an opt-out).
    ConsentChange,
    /// A `deletion_topic` event: sent to every consumer whatever the consent.
    Deletion,
}

struct Rule {
    name: String,
    class: String,
    topics: GlobMatcher,
    target: Target,
}

enum Target {
    Path(Vec<String>),
    Column { table: String, column: String },
}

/// `[privacy]`, compiled.
pub struct Privacy {
    pub cfg: PrivacyConfig,
    rules: Vec<Rule>,
    digest: String,
}

impl Privacy {
    /// Compile a validated config (an invalid glob is an error here too).
    pub fn new(cfg: &PrivacyConfig) -> Result<Privacy, globset::Error> {
        let mut rules = Vec::new();
        for (class, c) in &cfg.classes {
            for (i, f) in c.fields.iter().enumerate() {
                let target = match (&f.path, &f.table, &f.column) {
                    (Some(p), _, _) => Target::Path(p.split('.').map(String::from).collect()),
                    (None, Some(t), Some(col)) => Target::Column {
                        table: t.clone(),
                        column: col.clone(),
                    },
                    _ => continue,
                };
                rules.push(Rule {
                    name: format!("privacy.classes.\"{class}\".fields[{i}]"),
                    class: class.clone(),
                    topics: Glob::new(&f.topics)?.compile_matcher(),
                    target,
                });
            }
        }
        let digest = hex(&Sha256::digest(
            serde_json::to_vec(cfg).expect("config serialises"),
        ));
        Ok(Privacy {
            cfg: cfg.clone(),
            rules,
            digest,
        })
    }

    /// The policy's version: a content hash of `[privacy]` and the policy
    /// (12 hex digits), recorded with every audit record.
    pub fn policy_version(&self, policy: Option<&PolicyConfig>) -> String {
        let mut h = Sha256::new();
        h.update(self.digest.as_bytes());
        h.update(serde_json::to_vec(&policy).expect("policy serialises"));
        hex(&h.finalize())[..12].to_string()
    }

    pub fn kind(&self, ev: &Event) -> Kind {
        if ev.topic == self.cfg.deletion_topic {
            Kind::Deletion
        } else if ev.topic == self.cfg.consent_topic {
            Kind::ConsentChange
        } else {
            Kind::Ordinary
        }
    }

    /// The consent changes an event carries: its own `consent` map, and for
    /// a `consent_topic` event also a `consent` object or a
    /// `{purpose, state}` pair in `data` or `after` (CDC rows).
    pub fn consent_updates(&self, ev: &Event) -> BTreeMap<String, ConsentState> {
        let mut out = ev.consent.clone();
        if self.kind(ev) == Kind::ConsentChange {
            for body in [&ev.after, &ev.data].into_iter().flatten() {
                if let Some(m) = body.get("consent").and_then(Value::as_object) {
                    for (k, v) in m {
                        if let Some(s) = v.as_str().and_then(ConsentState::parse) {
                            out.insert(k.clone(), s);
                        }
                    }
                }
                if let (Some(p), Some(s)) = (
                    body.get("purpose").and_then(Value::as_str),
                    body.get("state")
                        .and_then(Value::as_str)
                        .and_then(ConsentState::parse),
                ) {
                    out.insert(p.to_string(), s);
                }
            }
        }
        out
    }

    /// The event's jurisdiction: its attribute, else its source's, else the default.
    pub fn jurisdiction(&self, ev: &Event) -> Option<String> {
        ev.attributes
            .get(&self.cfg.jurisdiction_attribute)
            .filter(|j| self.cfg.jurisdictions.contains_key(*j))
            .or_else(|| self.cfg.source_jurisdictions.get(&ev.source))
            .or(self.cfg.default_jurisdiction.as_ref())
            .cloned()
    }

    /// How `purpose` reads for an event of `jurisdiction`, given `consent`
    /// (the state after this event's own updates): (allowed, state, reason).
    fn reads(
        &self,
        purpose: &str,
        jurisdiction: Option<&str>,
        consent: &BTreeMap<String, ConsentState>,
    ) -> (bool, ConsentState, String) {
        let state = consent
            .get(purpose)
            .copied()
            .unwrap_or(ConsentState::Unknown);
        match state {
            ConsentState::Granted => (true, state, format!("consent to {purpose} is granted")),
            ConsentState::Denied => (false, state, format!("consent to {purpose} is denied")),
            ConsentState::Unknown => {
                let j = jurisdiction.and_then(|j| self.cfg.jurisdictions.get(j).map(|c| (j, c)));
                match j {
                    Some((name, c)) if c.unknown_consent == UnknownConsent::OptOut => (
                        true,
                        state,
                        format!("consent to {purpose} is unknown; {name} is opt-out: unknown reads as granted"),
                    ),
                    Some((name, _)) => (
                        false,
                        state,
                        format!("consent to {purpose} is unknown; {name} is opt-in: unknown reads as denied"),
                    ),
                    None => (
                        false,
                        state,
                        format!("consent to {purpose} is unknown and the event has no jurisdiction: unknown reads as denied"),
                    ),
                }
            }
        }
    }

    /// The policy stage for one event and one consumer. `consent` is the
    /// account's consent as this consumer has seen it, this event's own
    /// updates ([`Privacy::consent_updates`]) already applied.
    pub fn evaluate(
        &self,
        ev: &Event,
        consent: &BTreeMap<String, ConsentState>,
        policy: &PolicyConfig,
    ) -> Evaluation {
        let jurisdiction = self.jurisdiction(ev);
        let kind = self.kind(ev);
        let consent_decision = match &policy.purpose {
            None => ConsentDecision {
                purpose: None,
                state: "not needed".into(),
                allowed: true,
                reason: "the consumer's policy names no purpose".into(),
            },
            Some(p) => {
                let (allowed, state, reason) = self.reads(p, jurisdiction.as_deref(), consent);
                let (allowed, reason) = match kind {
                    Kind::Deletion if !allowed => (
                        true,
                        format!("{reason}; a deletion request goes to every consumer whatever the consent"),
                    ),
                    Kind::ConsentChange if !allowed => (
                        true,
                        format!("{reason}; a consent change itself is sent so the vendor learns of it"),
                    ),
                    _ => (allowed, reason),
                };
                ConsentDecision {
                    purpose: Some(p.clone()),
                    state: state.as_str().into(),
                    allowed,
                    reason,
                }
            }
        };
        if !consent_decision.allowed {
            let rule = format!(
                "consent:{}",
                consent_decision.purpose.as_deref().unwrap_or_default()
            );
            return Evaluation {
                decision: Decision::Filtered { rule },
                jurisdiction,
                consent: consent_decision,
                changes: Vec::new(),
            };
        }

        let mut root = parts(ev);
        // Every classified field present: path -> (class, rule), in rule order.
        let mut found: Vec<(Vec<String>, String, String)> = Vec::new();
        let table = ev.attributes.get("table");
        for r in &self.rules {
            if !r.topics.is_match(&ev.topic) {
                continue;
            }
            match &r.target {
                Target::Path(p) => {
                    for concrete in expand(&root, p) {
                        found.push((concrete, r.class.clone(), r.name.clone()));
                    }
                }
                Target::Column { table: t, column } => {
                    let matches = table.is_some_and(|q| {
                        q == t || q.rsplit_once('.').is_some_and(|(_, name)| name == t)
                    });
                    if !matches {
                        continue;
                    }
                    for part in ["before", "after", "key"] {
                        let p = vec![part.to_string(), column.clone()];
                        if get(&root, &p).is_some() {
                            found.push((p, r.class.clone(), r.name.clone()));
                        }
                    }
                }
            }
        }

        let mut changes = Vec::new();
        for (path, class, rule) in &found {
            let why = if !policy.allow.contains(class) {
                Some(format!(
                    "{rule}: class {class} is not in the consumer's policy.allow"
                ))
            } else {
                let needs = jurisdiction
                    .as_deref()
                    .and_then(|j| self.cfg.jurisdictions.get(j).map(|c| (j, c)))
                    .and_then(|(j, c)| c.requires.get(class).map(|p| (j, p)));
                match needs {
                    Some((j, p)) => {
                        let (ok, state, _) = self.reads(p, Some(j), consent);
                        (!ok).then(|| {
                            format!(
                                "privacy.jurisdictions.{j}.requires.\"{class}\": needs consent to {p} ({})",
                                state.as_str()
                            )
                        })
                    }
                    None => None,
                }
            };
            let Some(why) = why else { continue };
            let normalize = self
                .cfg
                .classes
                .get(class)
                .map(|c| c.normalize)
                .unwrap_or_default();
            if apply(&mut root, path, policy.action, normalize) {
                changes.push(FieldChange {
                    field: path.join("."),
                    class: Some(class.clone()),
                    action: policy.action.as_str(),
                    rule: why,
                });
            }
        }

        if policy.unclassified == Unclassified::Drop {
            for part in ["data", "after", "before"] {
                let Some(Value::Object(m)) = root.get_mut(part) else {
                    continue;
                };
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    let covered = found
                        .iter()
                        .any(|(p, _, _)| p.len() >= 2 && p[0] == part && p[1] == k);
                    if !covered {
                        m.remove(&k);
                        changes.push(FieldChange {
                            field: format!("{part}.{k}"),
                            class: None,
                            action: "drop",
                            rule: "policy.unclassified = \"drop\": no class names this field"
                                .into(),
                        });
                    }
                }
            }
        }

        let mut out = ev.clone();
        write_back(&mut out, root);
        Evaluation {
            decision: Decision::Deliver(out),
            jurisdiction,
            consent: consent_decision,
            changes,
        }
    }
}

/// The parts of an event a path can reach, as one JSON object.
fn parts(ev: &Event) -> Map<String, Value> {
    let mut m = Map::new();
    for (k, v) in [
        ("data", &ev.data),
        ("after", &ev.after),
        ("before", &ev.before),
        ("key", &ev.key),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone());
        }
    }
    if !ev.attributes.is_empty() {
        m.insert(
            "attributes".into(),
            Value::Object(
                ev.attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        );
    }
    m
}

fn write_back(ev: &mut Event, mut m: Map<String, Value>) {
    ev.data = m.remove("data").filter(|v| !v.is_null());
    ev.after = m.remove("after").filter(|v| !v.is_null());
    ev.before = m.remove("before").filter(|v| !v.is_null());
    ev.key = m.remove("key").filter(|v| !v.is_null());
    ev.attributes = match m.remove("attributes") {
        Some(Value::Object(a)) => a
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => BTreeMap::new(),
    };
}

fn child<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    }
}

fn get<'a>(root: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let mut v = root.get(&path[0])?;
    for seg in &path[1..] {
        v = child(v, seg)?;
    }
    Some(v)
}

/// The concrete paths `pattern` (with `*` segments) names in `root`.
fn expand(root: &Map<String, Value>, pattern: &[String]) -> Vec<Vec<String>> {
    fn walk(v: &Value, rest: &[String], at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let Some((seg, tail)) = rest.split_first() else {
            out.push(at.clone());
            return;
        };
        let children: Vec<(String, &Value)> = match (seg.as_str(), v) {
            ("*", Value::Object(m)) => m.iter().map(|(k, c)| (k.clone(), c)).collect(),
            ("*", Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, c)| (i.to_string(), c))
                .collect(),
            (s, _) => child(v, s)
                .map(|c| vec![(s.to_string(), c)])
                .unwrap_or_default(),
        };
        for (k, c) in children {
            at.push(k);
            walk(c, tail, at, out);
            at.pop();
        }
    }
    let mut out = Vec::new();
    if let Some(v) = root.get(&pattern[0]) {
        let mut at = vec![pattern[0].clone()];
        walk(v, &pattern[1..], &mut at, &mut out);
    }
    out
}

/// Drop, mask or hash the value at `path`; whether it was there. A dropped
/// array element becomes `null` (the other elements keep their places).
fn apply(root: &mut Map<String, Value>, path: &[String], action: Action, n: Normalize) -> bool {
    let (last, parents) = path.split_last().expect("paths have a root");
    let Some((first, rest)) = parents.split_first() else {
        return match (action, root.get_mut(last)) {
            (_, None) => false,
            (Action::Drop, Some(_)) => root.remove(last).is_some(),
            (_, Some(x)) => {
                *x = replacement(x, action, n);
                true
            }
        };
    };
    let Some(mut v) = root.get_mut(first) else {
        return false;
    };
    for seg in rest {
        v = match v {
            Value::Object(m) => match m.get_mut(seg) {
                Some(c) => c,
                None => return false,
            },
            Value::Array(a) => match seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(c) => c,
                None => return false,
            },
            _ => return false,
        };
    }
    match v {
        Value::Object(m) => match (action, m.get_mut(last)) {
            (_, None) => false,
            (Action::Drop, Some(_)) => m.remove(last).is_some(),
            (_, Some(x)) => {
                *x = replacement(x, action, n);
                true
            }
        },
        Value::Array(a) => match last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
            Some(x) => {
                *x = replacement(x, action, n);
                true
            }
            None => false,
        },
        _ => false,
    }
}

fn replacement(v: &Value, action: Action, n: Normalize) -> Value {
    match action {
        Action::Drop => Value::Null,
        Action::Mask => Value::String("***".into()),
        Action::Hash => Value::String(hash_value(v, n)),
    }
}

/// SHA-256 (hex) of a value after the normalisation ad platforms require:
/// email trimmed and lowercased; phone reduced to `+` and its digits.
pub fn hash_value(v: &Value, n: Normalize) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    hex(&Sha256::digest(normalize(&text, n).as_bytes()))
}

pub fn normalize(s: &str, n: Normalize) -> String {
    match n {
        Normalize::None => s.trim().to_string(),
        Normalize::Email => s.trim().to_lowercase(),
        Normalize::Phone => {
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            format!("+{digits}")
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
