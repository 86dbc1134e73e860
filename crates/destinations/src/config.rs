//! The HTTP destination's config (`endpoint`, `rate_limit`) and the retry
//! policy (`retry`) of a consumer, each with its own `validate()`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_core::config::ConfigError;
use switchyard_core::secret::Secret;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Base URL; a module's `path` is appended to it.
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header carrying the event id on every request.
    #[serde(default = "default_idem_header")]
    pub idempotency_header: String,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// The URL's password and query and the header values are not printed:
/// vendors put API keys there.
impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("EndpointConfig")
            .field("url", &switchyard_core::secret::redact_url(&self.url))
            .field("method", &self.method)
            .field("headers", &headers)
            .field("idempotency_header", &self.idempotency_header)
            .field("auth", &self.auth)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    Bearer {
        #[serde(default)]
        token: Option<Secret>,
        #[serde(default)]
        token_file: Option<PathBuf>,
    },
    Basic {
        username: String,
        #[serde(default)]
        password: Option<Secret>,
        #[serde(default)]
        password_file: Option<PathBuf>,
    },
    /// Standard Webhooks signing (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    /// The secret is `whsec_<base64>` (or raw text).
    Hmac {
        #[serde(default)]
        secret: Option<Secret>,
        #[serde(default)]
        secret_file: Option<PathBuf>,
    },
}

impl AuthConfig {
    /// `*_file` paths resolve against `base`, the config file's directory
    /// (the one rule for every path in the config).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        let f = match self {
            AuthConfig::Bearer { token_file: f, .. }
            | AuthConfig::Basic {
                password_file: f, ..
            }
            | AuthConfig::Hmac { secret_file: f, .. } => f,
        };
        if let Some(p) = f {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay of the exponential policy.
    #[serde(default = "default_initial", with = "humantime_serde")]
    pub initial: Duration,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// Largest delay between two attempts.
    #[serde(default = "default_max_delay", with = "humantime_serde")]
    pub max_delay: Duration,
    /// Randomise each delay between 50% and 100% of its value.
    #[serde(default = "default_true")]
    pub jitter: bool,
    /// An explicit schedule (e.g. ["1s", "10s", "1m"]) instead of the exponential policy;
    /// the last delay repeats.
    #[serde(default)]
    pub schedule: Vec<String>,
    /// Attempts (including the first) before the event goes to the DLQ.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Time since the first attempt after which the event goes to the DLQ.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: default_initial(),
            multiplier: default_multiplier(),
            max_delay: default_max_delay(),
            jitter: true,
            schedule: Vec::new(),
            max_attempts: default_attempts(),
            max_age: default_max_age(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second, shared by all partitions of the consumer.
    pub per_second: u32,
    /// Requests allowed in a burst above the sustained rate.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_method() -> String {
    "POST".into()
}

fn default_idem_header() -> String {
    "Idempotency-Key".into()
}

fn default_initial() -> Duration {
    Duration::from_millis(500)
}

fn default_multiplier() -> f64 {
    2.0
}

fn default_max_delay() -> Duration {
    Duration::from_secs(300)
}

fn default_true() -> bool {
    true
}

fn default_attempts() -> u32 {
    12
}

fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}

fn at(path: &str, p: &str, m: String) -> ConfigError {
    ConfigError::new(format!("{path}.{p}"), m)
}

impl EndpointConfig {
    /// Check `endpoint` (at TOML path `path`).
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let e = |p: &str, m: String| at(path, p, m);
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(_) => errors.push(e("url", "must be an http:// or https:// URL".into())),
            Err(err) => errors.push(e("url", format!("is not a URL: {err}"))),
        }
        if http::Method::from_bytes(self.method.as_bytes()).is_err() {
            errors.push(e(
                "method",
                format!("`{}` is not an HTTP method", self.method),
            ));
        }
        if http::HeaderName::from_bytes(self.idempotency_header.as_bytes()).is_err() {
            errors.push(e("idempotency_header", "is not a valid header name".into()));
        }
        for (k, v) in &self.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                errors.push(e(&format!("headers.{k}"), "is not a valid header".into()));
            }
        }
        if let Some(a) = &self.auth {
            let one_of = |a: &Option<Secret>,
                          f: &Option<PathBuf>,
                          name: &str,
                          errors: &mut Vec<ConfigError>| match (a, f) {
                (None, None) => errors.push(e(
                    &format!("auth.{name}"),
                    format!("set `{name}` or `{name}_file`"),
                )),
                (Some(_), Some(_)) => errors.push(e(
                    &format!("auth.{name}_file"),
                    format!("set `{name}` or `{name}_file`, not both"),
                )),
                (None, Some(f)) if std::fs::metadata(f).is_err() => errors.push(e(
                    &format!("auth.{name}_file"),
                    format!("cannot read {}", f.display()),
                )),
                _ => {}
            };
            match a {
                AuthConfig::Bearer { token, token_file } => {
                    one_of(token, token_file, "token", errors)
                }
                AuthConfig::Basic {
                    password,
                    password_file,
                    ..
                } => one_of(password, password_file, "password", errors),
                AuthConfig::Hmac {
                    secret,
                    secret_file,
                } => one_of(secret, secret_file, "secret", errors),
            }
        }
    }
}

impl RetryConfig {
    /// Check `retry` (at TOML path `path`).
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let e = |p: &str, m: String| at(path, p, m);
        let r = self;
        if r.max_attempts == 0 {
            errors.push(e("max_attempts", "must be at least 1".into()));
        }
        if r.multiplier < 1.0 || !r.multiplier.is_finite() {
            errors.push(e("multiplier", "must be at least 1.0".into()));
        }
        for (i, s) in r.schedule.iter().enumerate() {
            if humantime::parse_duration(s).is_err() {
                errors.push(e(
                    &format!("schedule[{i}]"),
                    format!("`{s}` is not a duration (e.g. 500ms, 10s, 5m)"),
                ));
            }
        }
    }

    /// The explicit schedule as durations (validated already).
    pub fn delays(&self) -> Vec<Duration> {
        self.schedule
            .iter()
            .filter_map(|s| humantime::parse_duration(s).ok())
            .collect()
    }
}

impl RateLimitConfig {
    /// Check `rate_limit` (at TOML path `path`).
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let e = |p: &str, m: String| at(path, p, m);
        if self.per_second == 0 {
            errors.push(e("per_second", "must be at least 1".into()));
        }
    }
}
