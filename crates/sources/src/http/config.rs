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
}


fn default_topics() -> Vec<String> {
    vec!["*".into()]
}

impl HttpSourceConfig {
    /// `token_file` resolves against `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(f) = &mut self.token_file {
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
    }

    /// The bearer token, read from `token_file` when that is how it is given.
    pub fn load_token(&self) -> std::io::Result<String> {
        switchyard_core::secret::read_secret(&self.token, &self.token_file)
    }
}
