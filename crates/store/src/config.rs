//! The store's own config: `[redis]` (where the log lives) and `[log]`
//! (partitions, retention, the idempotency window).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchyard_core::config::{tls_error, ConfigError};
use switchyard_core::secret::ConnUrl;

#[derive(Debug, Clone, Deserialize)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or `rediss://` for TLS (see `[redis.tls]`).
    #[serde(default = "default_redis_url")]
    pub url: ConnUrl,
    /// Prefix of every key, so two deployments can share one Redis.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Time allowed for one Redis command before it counts as a failure.
    #[serde(default = "default_redis_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Certificates for a `rediss://` URL.
    #[serde(default)]
    pub tls: Option<RedisTlsConfig>,
    /// `true`: `url` is one node of a Redis Cluster (the others are found
    /// from it). Every multi-key operation stays within one hash slot.
    #[serde(default)]
    pub cluster: bool,
}

/// `[redis.tls]`: whom to trust, and an optional client certificate (for
/// Redis' `tls-auth-clients yes`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RedisTlsConfig {
    /// CA certificate(s) (PEM) that signed the Redis server's certificate.
    /// Unset: the Mozilla root set (webpki-roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: default_redis_url(),
            namespace: default_namespace(),
            timeout: default_redis_timeout(),
            tls: None,
            cluster: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    /// Number of partitions (Redis streams). Fixed for the life of a deployment.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// How long events stay in the log (MINID trimming).
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// How long an event id is remembered for ingest deduplication.
    #[serde(default = "default_idem", with = "humantime_serde")]
    pub idempotency_window: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            partitions: default_partitions(),
            retention: default_retention(),
            idempotency_window: default_idem(),
        }
    }
}

fn default_redis_url() -> ConnUrl {
    ConnUrl::new("redis://127.0.0.1:6379")
}

fn default_namespace() -> String {
    "sy".into()
}

fn default_redis_timeout() -> Duration {
    Duration::from_secs(2)
}

fn default_partitions() -> u32 {
    16
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_idem() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl RedisConfig {
    /// Check `[redis]`, each problem with its TOML path.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        if self.namespace.is_empty()
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            errors.push(ConfigError::new(
                "redis.namespace",
                "must be non-empty and use only letters, digits, '-', '_' or '.'",
            ));
        }
        let url = &*self.url;
        let tls_url = url.starts_with("rediss://");
        if !(url.starts_with("redis://") || tls_url || url.starts_with("unix://")) {
            errors.push(ConfigError::new(
                "redis.url",
                "must start with redis://, rediss:// (TLS) or unix://",
            ));
            return;
        }
        let mut files_ok = true;
        if let Some(t) = &self.tls {
            if !tls_url {
                errors.push(ConfigError::new(
                    "redis.tls",
                    "is only used with TLS: make redis.url start with rediss://",
                ));
            }
            if let Some(ca) = &t.ca_file {
                if let Err(e) = switchyard_core::tls::load_roots("redis.tls.ca_file", ca) {
                    errors.push(tls_error(e));
                    files_ok = false;
                }
            }
            match (&t.cert_file, &t.key_file) {
                (Some(c), Some(k)) => {
                    if let Err(e) = switchyard_core::tls::load_certs("redis.tls.cert_file", c) {
                        errors.push(tls_error(e));
                        files_ok = false;
                    }
                    if let Err(e) = switchyard_core::tls::load_key("redis.tls.key_file", k) {
                        errors.push(tls_error(e));
                        files_ok = false;
                    }
                }
                (None, None) => {}
                (Some(_), None) => errors.push(ConfigError::new(
                    "redis.tls.key_file",
                    "is required with redis.tls.cert_file (the client certificate's key)",
                )),
                (None, Some(_)) => errors.push(ConfigError::new(
                    "redis.tls.cert_file",
                    "is required with redis.tls.key_file (the client certificate)",
                )),
            }
        }
        if files_ok && (tls_url || self.tls.is_none()) {
            if let Err(e) = crate::client::Client::new(self) {
                errors.push(ConfigError::new("redis.url", e.to_string()));
            }
        }
    }

    /// Make the certificate paths absolute against `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(t) = &mut self.tls {
            for p in [&mut t.ca_file, &mut t.cert_file, &mut t.key_file]
                .into_iter()
                .flatten()
            {
                if p.is_relative() && !p.as_os_str().is_empty() {
                    *p = base.join(&*p);
                }
            }
        }
    }
}

impl LogConfig {
    /// Check `[log]`, each problem with its TOML path.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        if self.partitions == 0 || self.partitions > 4096 {
            errors.push(ConfigError::new(
                "log.partitions",
                "must be between 1 and 4096",
            ));
        }
        if self.retention < Duration::from_secs(60) {
            errors.push(ConfigError::new("log.retention", "must be at least 1m"));
        }
        if self.idempotency_window < Duration::from_secs(1) {
            errors.push(ConfigError::new(
                "log.idempotency_window",
                "must be at least 1s",
            ));
        }
    }
}
