//! `[consumers.<name>.sla]` and `[alerts]`: the limits that raise alerts and
//! where alerts go (evaluated by the router's `sla.rs`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use switchyard_core::config::ConfigError;
use switchyard_core::secret::Secret;

/// `[consumers.<name>.sla]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    /// Largest acceptable age of the oldest undelivered event: seconds
    /// (`300`) or a duration (`"5m"`).
    #[serde(default, deserialize_with = "de_opt_secs")]
    pub max_lag: Option<Duration>,
    /// Largest acceptable number of entries in the consumer's DLQ.
    #[serde(default)]
    pub max_dlq: Option<u64>,
}

impl SlaConfig {
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        if self.max_lag.is_none() && self.max_dlq.is_none() {
            errors.push(ConfigError::new(
                path,
                "set sla.max_lag (seconds) and/or sla.max_dlq, or remove the [sla] table",
            ));
        }
        if self.max_lag == Some(Duration::ZERO) {
            errors.push(ConfigError::new(
                format!("{path}.max_lag"),
                "must be greater than 0",
            ));
        }
    }
}

/// Seconds as a number, or a humantime duration string.
fn de_opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Secs {
        N(u64),
        F(f64),
        S(String),
    }
    Ok(Some(match Secs::deserialize(d)? {
        Secs::N(n) => Duration::from_secs(n),
        Secs::F(f) if f.is_finite() && f >= 0.0 => Duration::from_secs_f64(f),
        Secs::F(_) => {
            return Err(serde::de::Error::custom(
                "must be a positive number of seconds",
            ))
        }
        Secs::S(s) => humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write seconds (300) or e.g. \"5m\""
            ))
        })?,
    }))
}

/// `[alerts]`: where SLA breaches are posted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// `http://` or `https://` URL that receives a JSON POST per alert.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Bearer token sent with each alert.
    #[serde(default)]
    pub token: Option<Secret>,
    /// While a breach lasts, post it again this often.
    #[serde(default = "default_repeat", with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// Timeout of one webhook request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook: None,
            token: None,
            repeat_interval: default_repeat(),
            timeout: default_timeout(),
        }
    }
}

fn default_repeat() -> Duration {
    Duration::from_secs(3600)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl AlertsConfig {
    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        if let Some(w) = &self.webhook {
            if !(w.starts_with("http://") || w.starts_with("https://")) {
                errors.push(ConfigError::new(
                    "alerts.webhook",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.token.is_some() && self.webhook.is_none() {
            errors.push(ConfigError::new(
                "alerts.token",
                "is only used with alerts.webhook; set the webhook URL",
            ));
        }
        if self.repeat_interval < Duration::from_secs(1) {
            errors.push(ConfigError::new(
                "alerts.repeat_interval",
                "must be at least 1s",
            ));
        }
    }
}
