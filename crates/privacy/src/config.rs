//! `[privacy]` and a consumer's `policy`: PII classes, jurisdictions, the
//! consent and deletion topics, the audit trail's retention. Each type
//! validates itself, naming TOML paths.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use switchyard_core::config::ConfigError;

/// Where a field path may start: the parts of the canonical event that carry
/// entity data.
pub const PATH_ROOTS: [&str; 5] = ["data", "after", "before", "key", "attributes"];

/// `[privacy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// `[privacy.classes."<class>"]`: which fields carry which PII class.
    #[serde(default)]
    pub classes: BTreeMap<String, ClassConfig>,
    /// `[privacy.jurisdictions.<name>]`: how unknown consent reads and which
    /// class needs which purpose.
    #[serde(default)]
    pub jurisdictions: BTreeMap<String, JurisdictionConfig>,
    /// The event attribute that names the jurisdiction (`attributes.jurisdiction`).
    #[serde(default = "default_jurisdiction_attribute")]
    pub jurisdiction_attribute: String,
    /// A source's jurisdiction when the event names none: `{ web_eu = "EU" }`.
    #[serde(default)]
    pub source_jurisdictions: BTreeMap<String, String>,
    /// The jurisdiction when neither the event nor its source names one.
    #[serde(default)]
    pub default_jurisdiction: Option<String>,
    /// Events of this topic update the consent store (besides every event's own `consent` map).
    #[serde(default = "default_consent_topic")]
    pub consent_topic: String,
    /// Events of this topic are right-to-deletion requests: they go to every
    /// consumer whatever the consent.
    #[serde(default = "default_deletion_topic")]
    pub deletion_topic: String,
    /// How long audit records are kept.
    #[serde(default = "default_audit_retention", with = "humantime_serde")]
    pub audit_retention: Duration,
    /// At most this many audit records are kept per account (approximately).
    #[serde(default = "default_audit_max")]
    pub audit_max_per_account: u64,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            classes: BTreeMap::new(),
            jurisdictions: BTreeMap::new(),
            jurisdiction_attribute: default_jurisdiction_attribute(),
            source_jurisdictions: BTreeMap::new(),
            default_jurisdiction: None,
            consent_topic: default_consent_topic(),
            deletion_topic: default_deletion_topic(),
            audit_retention: default_audit_retention(),
            audit_max_per_account: default_audit_max(),
        }
    }
}

fn default_jurisdiction_attribute() -> String {
    "jurisdiction".into()
}
fn default_consent_topic() -> String {
    "customer.consent_changed".into()
}
fn default_deletion_topic() -> String {
    "customer.deletion_requested".into()
}
fn default_audit_retention() -> Duration {
    Duration::from_secs(400 * 86400)
}
fn default_audit_max() -> u64 {
    100_000
}

/// `[privacy.classes."<class>"]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    /// The regimes that apply (CCPA, GDPR, HIPAA, FERPA or any tag).
    #[serde(default)]
    pub regimes: Vec<String>,
    /// How a value is normalised before `hash`: `email` (trim, lowercase),
    /// `phone` (digits with a leading `+`), `none` (trim).
    #[serde(default)]
    pub normalize: Normalize,
    /// The fields of this class.
    pub fields: Vec<FieldRule>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    #[default]
    None,
    Email,
    Phone,
}

/// One field of a class: a topic glob plus a JSON path, or a CDC table column.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Topic glob the rule applies to (default: every topic).
    #[serde(default = "default_topics")]
    pub topics: String,
    /// Dotted path from the event: `data.email`, `after.contact.phone`,
    /// `data.addresses.*.street` (`*`: any key or array element).
    #[serde(default)]
    pub path: Option<String>,
    /// A CDC table (`public.members`, or `members` for any schema); with `column`.
    #[serde(default)]
    pub table: Option<String>,
    /// The column of `table`: its value in `before`, `after` and `key`.
    #[serde(default)]
    pub column: Option<String>,
}

fn default_topics() -> String {
    "*".into()
}

/// `[privacy.jurisdictions.<name>]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JurisdictionConfig {
    /// How unknown consent reads: `opt_in` (GDPR-style: denied) or `opt_out`
    /// (CCPA-style: granted).
    pub unknown_consent: UnknownConsent,
    /// Class → the purpose whose consent it needs: `{ "contact.email" = "email" }`.
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownConsent {
    OptIn,
    OptOut,
}

/// `[consumers.<name>.policy]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The purpose this consumer serves (`email`, `sms`, `ads`, …): an event
    /// is sent only when the account's consent to it reads granted.
    #[serde(default)]
    pub purpose: Option<String>,
    /// The PII classes this consumer may receive.
    #[serde(default)]
    pub allow: Vec<String>,
    /// What happens to a classified field it may not see.
    #[serde(default)]
    pub action: Action,
    /// What happens to fields no class names.
    #[serde(default)]
    pub unclassified: Unclassified,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    #[default]
    Drop,
    Mask,
    Hash,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Drop => "drop",
            Action::Mask => "mask",
            Action::Hash => "hash",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unclassified {
    /// Unclassified fields are sent as they are.
    #[default]
    Pass,
    /// Only classified (and granted) fields are sent: the others are dropped.
    Drop,
}

fn topic_like(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl PrivacyConfig {
    /// Whether anything privacy-related is configured.
    pub fn enabled(&self) -> bool {
        !self.classes.is_empty() || !self.jurisdictions.is_empty()
    }

    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let e = |p: String, m: String| ConfigError::new(format!("{path}.{p}"), m);
        for (name, c) in &self.classes {
            let cp = format!("classes.\"{name}\"");
            if !topic_like(name) {
                errors.push(e(
                    cp.clone(),
                    "class names use letters, digits, '.', '_' and '-'".into(),
                ));
            }
            if c.fields.is_empty() {
                errors.push(e(
                    format!("{cp}.fields"),
                    "must list at least one field (path or table + column)".into(),
                ));
            }
            for (i, f) in c.fields.iter().enumerate() {
                let fp = format!("{cp}.fields[{i}]");
                if let Err(err) = globset::Glob::new(&f.topics) {
                    errors.push(e(format!("{fp}.topics"), format!("invalid glob: {err}")));
                }
                match (&f.path, &f.table, &f.column) {
                    (Some(p), None, None) => {
                        let segs: Vec<&str> = p.split('.').collect();
                        if !PATH_ROOTS.contains(&segs[0]) || segs.len() < 2 {
                            errors.push(e(
                                format!("{fp}.path"),
                                format!(
                                    "`{p}`: a path starts with one of {} and names a field (e.g. data.email)",
                                    PATH_ROOTS.join(", ")
                                ),
                            ));
                        } else if segs.iter().any(|s| s.is_empty()) {
                            errors.push(e(
                                format!("{fp}.path"),
                                format!("`{p}` has an empty segment"),
                            ));
                        }
                    }
                    (None, Some(t), Some(col)) => {
                        if t.is_empty() || col.is_empty() {
                            errors.push(e(fp, "table and column must not be empty".into()));
                        }
                    }
                    _ => errors.push(e(fp, "give either `path`, or `table` and `column`".into())),
                }
            }
        }
        for (name, j) in &self.jurisdictions {
            for (class, purpose) in &j.requires {
                let jp = format!("jurisdictions.{name}.requires.\"{class}\"");
                if !self.classes.contains_key(class) {
                    errors.push(e(
                        jp.clone(),
                        format!("`{class}` is not a class declared under [privacy.classes]"),
                    ));
                }
                if purpose.is_empty() {
                    errors.push(e(jp, "the purpose must not be empty".into()));
                }
            }
        }
        let known = |j: &str| self.jurisdictions.contains_key(j);
        if let Some(d) = &self.default_jurisdiction {
            if !known(d) {
                errors.push(e(
                    "default_jurisdiction".into(),
                    format!("`{d}` is not declared under [privacy.jurisdictions]"),
                ));
            }
        }
        for (src, j) in &self.source_jurisdictions {
            if !known(j) {
                errors.push(e(
                    format!("source_jurisdictions.{src}"),
                    format!("`{j}` is not declared under [privacy.jurisdictions]"),
                ));
            }
        }
        if self.jurisdiction_attribute.is_empty() {
            errors.push(e(
                "jurisdiction_attribute".into(),
                "must not be empty".into(),
            ));
        }
        for (k, t) in [
            ("consent_topic", &self.consent_topic),
            ("deletion_topic", &self.deletion_topic),
        ] {
            if !topic_like(t) {
                errors.push(e(
                    k.into(),
                    format!("`{t}` is not a topic (letters, digits, '.', '_', '-')"),
                ));
            }
        }
        if self.consent_topic == self.deletion_topic {
            errors.push(e(
                "deletion_topic".into(),
                "must differ from consent_topic".into(),
            ));
        }
        if self.audit_retention.is_zero() {
            errors.push(e(
                "audit_retention".into(),
                "must be greater than 0 (e.g. \"400d\")".into(),
            ));
        }
        if self.audit_max_per_account == 0 {
            errors.push(e(
                "audit_max_per_account".into(),
                "must be at least 1".into(),
            ));
        }
    }
}

impl PolicyConfig {
    /// `path` is the policy's own (`consumers.<c>.policy`).
    pub fn validate(&self, path: &str, privacy: &PrivacyConfig, errors: &mut Vec<ConfigError>) {
        if let Some(p) = &self.purpose {
            if p.is_empty() {
                errors.push(ConfigError::new(
                    format!("{path}.purpose"),
                    "must not be empty (leave it out for a consumer that needs no consent)",
                ));
            }
        }
        for (i, c) in self.allow.iter().enumerate() {
            if !privacy.classes.contains_key(c) {
                errors.push(ConfigError::new(
                    format!("{path}.allow[{i}]"),
                    format!("`{c}` is not a class declared under [privacy.classes]"),
                ));
            }
        }
    }
}
