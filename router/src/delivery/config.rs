//! `[consumers.<name>]`: one downstream system.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;
use switchyard_core::secret::Secret;

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerConfig {
    /// Topic globs this consumer subscribes to (e.g. `customer.*.email_changed`).
    pub topics: Vec<String>,
    /// Where a new consumer starts: `earliest` (oldest retained), `latest`, or an RFC 3339 time.
    #[serde(default = "default_start")]
    pub start: String,
    /// What happens to an account's later events when one of its events exhausts its retries.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Accounts delivered in parallel (across all partitions). Events of one account are
    /// always sent one at a time, in log order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Events one account may hold in memory while it waits; more are set aside in Redis.
    #[serde(default = "default_account_buffer")]
    pub max_account_buffer: usize,
    /// Events one partition reader holds in memory at most (bounded memory under backlog).
    #[serde(default = "default_partition_buffer")]
    pub max_partition_buffer: usize,
    /// How long the record of an acknowledged delivery is kept (redelivery dedup).
    #[serde(default = "default_dedup", with = "humantime_serde")]
    pub dedup_window: Duration,
    pub endpoint: EndpointConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// The transform chain, in order. Without modules the canonical event is sent as JSON.
    #[serde(default)]
    pub modules: Vec<crate::transform::ModuleConfig>,
    /// `[consumers.<name>.sla]`: limits that raise alerts (`sla.rs`).
    #[serde(default)]
    pub sla: Option<crate::sla::SlaConfig>,
    /// A critical consumer in breach of its SLA makes `/readyz` fail.
    #[serde(default)]
    pub critical: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Later events of that account wait in the DLQ behind the failed one (order survives a replay).
    #[default]
    Park,
    /// Later events of that account keep flowing.
    Skip,
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

fn default_start() -> String {
    "latest".into()
}
fn default_concurrency() -> usize {
    64
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_account_buffer() -> usize {
    100
}
fn default_partition_buffer() -> usize {
    5000
}
fn default_dedup() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
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

pub use switchyard_store::consumer::Start;

impl ConsumerConfig {
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let e = |p: &str, m: String| ConfigError::new(format!("{path}.{p}"), m);
        if self.topics.is_empty() {
            errors.push(e("topics", "must list at least one topic glob".into()));
        }
        match &self.sla {
            Some(s) => s.validate(&format!("{path}.sla"), errors),
            None if self.critical => errors.push(e(
                "critical",
                "a critical consumer needs an SLA: set sla.max_lag and/or sla.max_dlq".into(),
            )),
            None => {}
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(err) = globset::Glob::new(t) {
                errors.push(e(&format!("topics[{i}]"), format!("invalid glob: {err}")));
            }
        }
        if let Err(m) = Start::parse(&self.start) {
            errors.push(e("start", m));
        }
        if self.concurrency == 0 {
            errors.push(e("concurrency", "must be at least 1".into()));
        }
        if self.max_account_buffer == 0 {
            errors.push(e("max_account_buffer", "must be at least 1".into()));
        }
        if self.max_partition_buffer < self.max_account_buffer {
            errors.push(e(
                "max_partition_buffer",
                "must be at least max_account_buffer".into(),
            ));
        }
        if self.timeout.is_zero() {
            errors.push(e("timeout", "must be greater than 0".into()));
        }
        match reqwest::Url::parse(&self.endpoint.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(_) => errors.push(e(
                "endpoint.url",
                "must be an http:// or https:// URL".into(),
            )),
            Err(err) => errors.push(e("endpoint.url", format!("is not a URL: {err}"))),
        }
        if http::Method::from_bytes(self.endpoint.method.as_bytes()).is_err() {
            errors.push(e(
                "endpoint.method",
                format!("`{}` is not an HTTP method", self.endpoint.method),
            ));
        }
        if http::HeaderName::from_bytes(self.endpoint.idempotency_header.as_bytes()).is_err() {
            errors.push(e(
                "endpoint.idempotency_header",
                "is not a valid header name".into(),
            ));
        }
        for (k, v) in &self.endpoint.headers {
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v).is_err()
            {
                errors.push(e(
                    &format!("endpoint.headers.{k}"),
                    "is not a valid header".into(),
                ));
            }
        }
        if let Some(a) = &self.endpoint.auth {
            let one_of = |a: &Option<Secret>,
                          f: &Option<PathBuf>,
                          name: &str,
                          errors: &mut Vec<ConfigError>| match (a, f) {
                (None, None) => errors.push(e(
                    &format!("endpoint.auth.{name}"),
                    format!("set `{name}` or `{name}_file`"),
                )),
                (Some(_), Some(_)) => errors.push(e(
                    &format!("endpoint.auth.{name}_file"),
                    format!("set `{name}` or `{name}_file`, not both"),
                )),
                (None, Some(f)) if std::fs::metadata(f).is_err() => errors.push(e(
                    &format!("endpoint.auth.{name}_file"),
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
        let r = &self.retry;
        if r.max_attempts == 0 {
            errors.push(e("retry.max_attempts", "must be at least 1".into()));
        }
        if r.multiplier < 1.0 || !r.multiplier.is_finite() {
            errors.push(e("retry.multiplier", "must be at least 1.0".into()));
        }
        for (i, s) in r.schedule.iter().enumerate() {
            if humantime::parse_duration(s).is_err() {
                errors.push(e(
                    &format!("retry.schedule[{i}]"),
                    format!("`{s}` is not a duration (e.g. 500ms, 10s, 5m)"),
                ));
            }
        }
        if let Some(rl) = &self.rate_limit {
            if rl.per_second == 0 {
                errors.push(e("rate_limit.per_second", "must be at least 1".into()));
            }
        }
        crate::transform::validate_chain(&self.modules, &format!("{path}.modules"), errors);
    }

    /// The retry schedule as durations (validated already).
    pub fn schedule(&self) -> Vec<Duration> {
        self.retry
            .schedule
            .iter()
            .filter_map(|s| humantime::parse_duration(s).ok())
            .collect()
    }
}

/// Read a secret given inline or in a file (trailing whitespace trimmed).
pub fn secret(inline: &Option<Secret>, file: &Option<PathBuf>) -> std::io::Result<String> {
    match (inline, file) {
        (Some(s), _) => Ok(s.expose().to_string()),
        (None, Some(f)) => Ok(std::fs::read_to_string(f)?.trim_end().to_string()),
        (None, None) => Err(std::io::Error::other("no secret configured")),
    }
}
