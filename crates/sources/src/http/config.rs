//! `[sources.<name>]` with `type = "http"`: the tokens and topics of an
//! HTTP source.

use std::path::PathBuf;

use serde::Deserialize;
use switchyard_core::config::ConfigError;
use switchyard_core::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Bearer token (use `${ENV_VAR}` rather than a literal secret).
    #[serde(default)]
    pub token: Option<Secret>,
    /// File holding the bearer token (trailing whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Topic globs this source may publish to; anything else is 403.
    #[serde(default = "default_topics")]
    pub topics: Vec<String>,
    /// CloudEvents on `POST /v1/events` (always on; this says where the
    /// account id is).
    #[serde(default)]
    pub cloudevents: CloudEventsConfig,
    /// Segment-compatible ingest (`/v1/track`, `/v1/batch`, …): on when set.
    #[serde(default)]
    pub segment: Option<SegmentConfig>,
    /// The topic each event is written to, made from its fields, like a CDC
    /// source's `topic` template: `"customer.{attributes.banner}.{topic}"`.
    /// Placeholders: `topic` (the posted one), `account_id`, `op`, `source`,
    /// `attributes.<name>`, `data.<field>[.<field>…]`. A missing field or a
    /// value that makes an invalid topic is a 400 naming the field. Unset:
    /// the posted topic.
    #[serde(default)]
    pub topic_template: Option<String>,
}

/// The placeholders of `topic_template` that are not event fields.
const TEMPLATE_BUILTINS: &[&str] = &["topic", "account_id", "op", "source"];

/// Whether `name` is a placeholder `topic_template` may use.
pub(crate) fn template_var_ok(name: &str) -> bool {
    TEMPLATE_BUILTINS.contains(&name)
        || name
            .strip_prefix("attributes.")
            .is_some_and(|a| !a.is_empty())
        || name
            .strip_prefix("data.")
            .is_some_and(|d| d.split('.').all(|s| !s.is_empty()))
}

/// `[sources.<name>.cloudevents]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEventsConfig {
    /// The CloudEvents attribute (an extension, or `subject`) that carries
    /// the account id.
    #[serde(default = "default_account_attribute")]
    pub account_attribute: String,
}

impl Default for CloudEventsConfig {
    fn default() -> Self {
        CloudEventsConfig {
            account_attribute: default_account_attribute(),
        }
    }
}

fn default_account_attribute() -> String {
    "accountid".into()
}

/// Attributes the CloudEvents mapping gives another meaning: the account id
/// cannot be one of them.
const CE_MAPPED: &[&str] = &[
    "id",
    "type",
    "source",
    "specversion",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "traceparent",
    "tracestate",
];

/// `[sources.<name>.segment]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    /// The write key Segment's libraries send as the Basic-auth user name.
    #[serde(default)]
    pub write_key: Option<Secret>,
    /// File holding the write key (trailing whitespace ignored).
    #[serde(default)]
    pub write_key_file: Option<PathBuf>,
    /// Which Segment id becomes the account id.
    #[serde(default)]
    pub account_id: SegmentAccountId,
    /// First part of the topics: `<prefix>.track.<event slug>`, `<prefix>.identify`, …
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Segment consent category → channel (`context.consent.categoryPreferences`);
    /// categories not listed keep their own name.
    #[serde(default)]
    pub consent_channels: std::collections::BTreeMap<String, String>,
}

/// `segment.account_id`: which of `userId` / `anonymousId` is the account id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentAccountId {
    /// `userId`, else `anonymousId` (the default).
    #[default]
    UserIdThenAnonymousId,
    /// `userId` only: a message without one is a 400.
    UserId,
    /// `anonymousId` only.
    AnonymousId,
    /// `anonymousId`, else `userId`.
    AnonymousIdThenUserId,
}

fn default_topic_prefix() -> String {
    "segment".into()
}

fn default_topics() -> Vec<String> {
    vec!["*".into()]
}

impl HttpSourceConfig {
    /// `token_file` resolves against `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let files = [
            self.token_file.as_mut(),
            self.segment
                .as_mut()
                .and_then(|s| s.write_key_file.as_mut()),
        ];
        for f in files.into_iter().flatten() {
            if f.is_relative() && !f.as_os_str().is_empty() {
                *f = base.join(&*f);
            }
        }
    }

    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match (&self.token, &self.token_file) {
            (None, None) => errors.push(ConfigError::new(
                format!("{path}.token"),
                "an http source needs `token` (e.g. \"${INGEST_TOKEN}\") or `token_file`",
            )),
            (Some(_), Some(_)) => errors.push(ConfigError::new(
                format!("{path}.token_file"),
                "set either `token` or `token_file`, not both",
            )),
            (Some(t), None) if t.expose().len() < 16 => errors.push(ConfigError::new(
                format!("{path}.token"),
                "is shorter than 16 characters; use a long random secret",
            )),
            (None, Some(f)) => {
                if let Err(e) = std::fs::metadata(f) {
                    errors.push(ConfigError::new(
                        format!("{path}.token_file"),
                        format!("cannot read {}: {e}", f.display()),
                    ));
                }
            }
            _ => {}
        }
        if self.topics.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.topics"),
                "must list at least one topic glob",
            ));
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(e) = globset::Glob::new(t) {
                errors.push(ConfigError::new(
                    format!("{path}.topics[{i}]"),
                    format!("invalid glob: {e}"),
                ));
            }
        }
        let a = &self.cloudevents.account_attribute;
        if a.is_empty()
            || a.len() > 20
            || !a
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            errors.push(ConfigError::new(
                format!("{path}.cloudevents.account_attribute"),
                "must be 1-20 lowercase letters or digits (a CloudEvents attribute name)",
            ));
        } else if CE_MAPPED.contains(&a.as_str()) {
            errors.push(ConfigError::new(
                format!("{path}.cloudevents.account_attribute"),
                format!("`{a}` already has a meaning in the mapping; use an extension such as `accountid`"),
            ));
        }
        if let Some(seg) = &self.segment {
            seg.validate(&format!("{path}.segment"), errors);
        }
        if let Some(t) = &self.topic_template {
            let p = format!("{path}.topic_template");
            match crate::cdc_rules::Template::parse(t) {
                Err(e) => errors.push(ConfigError::new(&p, e)),
                Ok(tpl) => {
                    if let Some(e) = tpl.literal_error() {
                        errors.push(ConfigError::new(&p, e));
                    }
                    if let Some(v) = tpl.vars().find(|v| !template_var_ok(v)) {
                        errors.push(ConfigError::new(
                            &p,
                            format!(
                                "`{{{v}}}` is not a placeholder of an HTTP source (use topic, \
                                 account_id, op, source, attributes.<name>, data.<field>)"
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// The Segment write key, when Segment ingest is on.
    pub fn load_write_key(&self) -> std::io::Result<Option<String>> {
        match &self.segment {
            None => Ok(None),
            Some(s) => {
                switchyard_core::secret::read_secret(&s.write_key, &s.write_key_file).map(Some)
            }
        }
    }

    /// The bearer token, read from `token_file` when that is how it is given.
    pub fn load_token(&self) -> std::io::Result<String> {
        switchyard_core::secret::read_secret(&self.token, &self.token_file)
    }
}

impl SegmentConfig {
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match (&self.write_key, &self.write_key_file) {
            (None, None) => errors.push(ConfigError::new(
                format!("{path}.write_key"),
                "Segment ingest needs `write_key` (e.g. \"${SEGMENT_WRITE_KEY}\") or `write_key_file`",
            )),
            (Some(_), Some(_)) => errors.push(ConfigError::new(
                format!("{path}.write_key_file"),
                "set either `write_key` or `write_key_file`, not both",
            )),
            (Some(k), None) if k.expose().len() < 16 => errors.push(ConfigError::new(
                format!("{path}.write_key"),
                "is shorter than 16 characters; use a long random key",
            )),
            (Some(k), None) if k.expose().contains(':') => errors.push(ConfigError::new(
                format!("{path}.write_key"),
                "must not contain `:` (it is sent as a Basic-auth user name)",
            )),
            (None, Some(f)) => {
                if let Err(e) = std::fs::metadata(f) {
                    errors.push(ConfigError::new(
                        format!("{path}.write_key_file"),
                        format!("cannot read {}: {e}", f.display()),
                    ));
                }
            }
            _ => {}
        }
        let p = &self.topic_prefix;
        if p.is_empty()
            || p.len() > 64
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            errors.push(ConfigError::new(
                format!("{path}.topic_prefix"),
                "must be 1-64 characters of letters, digits, '.', '_' or '-' (it starts every topic)",
            ));
        }
        for (category, channel) in &self.consent_channels {
            if channel.is_empty() || channel.chars().any(char::is_control) {
                errors.push(ConfigError::new(
                    format!("{path}.consent_channels.{category}"),
                    "must be a channel name (e.g. \"email\", \"ads\") without control characters",
                ));
            }
        }
    }
}

/// Across sources: one Segment write key per source (given inline; keys in
/// files are compared at start-up), named at the later source's TOML path.
pub fn validate_write_keys<'a>(
    sources: impl IntoIterator<Item = (&'a String, &'a HttpSourceConfig)>,
    errors: &mut Vec<ConfigError>,
) {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (name, h) in sources {
        let Some(key) = h.segment.as_ref().and_then(|s| s.write_key.as_ref()) else {
            continue;
        };
        if let Some(other) = seen.insert(key.expose(), name) {
            errors.push(ConfigError::new(
                format!("sources.{name}.segment.write_key"),
                format!("the same write key as sources.{other}.segment; each source needs its own"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keys_are_unique_across_sources() {
        let a = parse(
            "token = \"t-0123456789abcdef\"\n[segment]\nwrite_key = \"k-0123456789abcdef\"\n",
        )
        .unwrap();
        let b = parse(
            "token = \"u-0123456789abcdef\"\n[segment]\nwrite_key = \"k-0123456789abcdef\"\n",
        )
        .unwrap();
        let c = parse("token = \"v-0123456789abcdef\"\n").unwrap();
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let mut e = Vec::new();
        validate_write_keys([(&names[0], &a), (&names[2], &c), (&names[1], &b)], &mut e);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "sources.b.segment.write_key");
        assert!(e[0].message.contains("sources.a.segment"), "{e:?}");
    }

    fn parse(toml_text: &str) -> Result<HttpSourceConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    fn errors(c: &HttpSourceConfig) -> Vec<(String, String)> {
        let mut e = Vec::new();
        c.validate("sources.app", &mut e);
        e.into_iter().map(|e| (e.path, e.message)).collect()
    }

    /// The commented Segment example in config/switchyard.toml parses and validates.
    #[test]
    fn reference_config_segment_example() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/switchyard.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let mut block = String::new();
        let mut inside = false;
        for line in text.lines() {
            if line.starts_with("# [sources.app]") {
                inside = true;
                continue;
            }
            if inside {
                let Some(l) = line.strip_prefix('#') else {
                    break;
                };
                let l = l.strip_prefix(' ').unwrap_or(l);
                // `[sources.app.segment]` becomes `[segment]` of this source's table.
                block.push_str(&l.replace("[sources.app.segment]", "[segment]"));
                block.push('\n');
            }
        }
        let block = block
            .replace("type = \"http\"\n", "")
            .replace("${SWITCHYARD_APP_TOKEN}", "app-token-0123456789abcdef")
            .replace("${SEGMENT_WRITE_KEY}", "write-key-0123456789abcdef");
        let c = parse(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert_eq!(errors(&c), vec![]);
        let seg = c.segment.as_ref().unwrap();
        assert_eq!(seg.account_id, SegmentAccountId::UserIdThenAnonymousId);
        assert_eq!(seg.consent_channels["Email Marketing"], "email");
        assert_eq!(c.cloudevents.account_attribute, "accountid");
    }

    #[test]
    fn validation_names_the_toml_path() {
        let c = parse(
            "token = \"t-0123456789abcdef\"\n\
             [cloudevents]\naccount_attribute = \"Account_Id\"\n\
             [segment]\nwrite_key = \"short\"\ntopic_prefix = \"seg ment\"\n\
             consent_channels = { Ads = \"\" }\n",
        )
        .unwrap();
        let paths: Vec<String> = errors(&c).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "sources.app.cloudevents.account_attribute",
                "sources.app.segment.write_key",
                "sources.app.segment.topic_prefix",
                "sources.app.segment.consent_channels.Ads",
            ]
        );
        let c = parse("token = \"t-0123456789abcdef\"\n[cloudevents]\naccount_attribute = \"type\"\n[segment]\n").unwrap();
        let e = errors(&c);
        assert_eq!(e[0].0, "sources.app.cloudevents.account_attribute");
        assert!(e[0].1.contains("already has a meaning"), "{e:?}");
        assert_eq!(e[1].0, "sources.app.segment.write_key");
        // Unknown keys are refused.
        assert!(parse("token = \"x\"\n[segment]\nwritekey = \"k\"\n")
            .unwrap_err()
            .contains("unknown field"));
        assert!(parse("token = \"x\"\n[segment]\naccount_id = \"email\"\n").is_err());
        assert!(parse("token = \"x\"\n[cloudevents]\naccount = \"a\"\n").is_err());
    }
}
