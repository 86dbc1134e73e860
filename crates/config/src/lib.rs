//! `switchyard-config`: the root configuration. It composes each
//! component's own config type (and calls its `validate()`); it owns only
//! the router-level tables (`[server]`, `[admin]`, `[monitor]`, `[alerts]`,
//! a consumer's own keys). TOML, `${ENV}` interpolation, every error
//! reported at once.
//!
//! Loading runs in four stages, each collecting errors with their TOML path:
//! 1. parse the TOML text (a syntax error stops here: it names line and column);
//! 2. replace `${VAR}` (and `${VAR:-default}`) in every string value;
//! 3. deserialize into [`Config`]; unknown keys are collected (not fatal, so
//!    all of them are reported), a wrong type stops this stage;
//! 4. [`Config::validate`] checks every semantic rule and reports them all.
//!
//! The reference config, with every key commented, is `config/switchyard.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod admin;
pub mod alerts;
pub mod consumer;
pub mod coordination;
/// Invariants checked by the fuzz targets (`fuzz/`) and the property tests;
/// built only for tests and `--cfg fuzzing` (cargo-fuzz).
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
pub mod monitor;

pub use switchyard_core::config::{
    de_size, parse_size, resolve_url_paths, tls_error, valid_name, ConfigError, ConfigErrors,
};
use switchyard_core::secret::Secret;
pub use switchyard_sources::{HttpSourceConfig, SourceConfig};
pub use switchyard_store::config::{LogConfig, RedisConfig, RedisTlsConfig};
pub use switchyard_wasm_host::TransformsConfig;

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub consumers: BTreeMap<String, consumer::ConsumerConfig>,
    #[serde(default)]
    pub transforms: TransformsConfig,
    /// `[admin]`: the admin listener (`/metrics`, admin routes); none without it.
    #[serde(default)]
    pub admin: Option<admin::AdminConfig>,
    /// `[monitor]`: how often lag, DLQ depth and CDC slots are read.
    #[serde(default)]
    pub monitor: monitor::MonitorConfig,
    /// `[alerts]`: where SLA breaches are posted.
    #[serde(default)]
    pub alerts: alerts::AlertsConfig,
    /// `[coordination]`: partition leases between router instances.
    #[serde(default)]
    pub coordination: coordination::CoordinationConfig,
    /// `[privacy]`: PII classes, jurisdictions, consent and deletion topics,
    /// the audit trail (`switchyard-privacy`).
    #[serde(default)]
    pub privacy: switchyard_privacy::PrivacyConfig,
    /// `[schemas]`: the schema registry events are validated by; none without it.
    #[serde(default)]
    pub schemas: Option<switchyard_sources::schema::SchemasConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServerConfig {
    /// Address the HTTP ingest listener binds (port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body.
    #[serde(default = "default_max_body", deserialize_with = "de_size")]
    pub max_body: u64,
    /// Most events accepted in one request.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long shutdown waits for in-flight requests.
    #[serde(default = "default_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `Retry-After` (seconds) sent with 503 while Redis is unreachable.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Longest time from a request's first byte to the end of its headers;
    /// the connection is closed after it (slow-header clients).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest time from the end of a request's headers to the end of its
    /// body; 408 and the connection is closed after it.
    #[serde(default = "default_body_read_timeout", with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A connection with no request in progress and nothing received for
    /// this long is closed (keep-alive, or never used).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; at the limit the listener stops
    /// accepting until one closes.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Bearer token for `/admin/*` (status, reload). Unset: admin routes answer loopback only.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Serve HTTPS instead of HTTP (`[server.tls]`).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
}

/// `[server.tls]`: the listener's certificate (PEM chain, leaf first) and key.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            max_body: default_max_body(),
            max_batch: default_max_batch(),
            shutdown_grace: default_grace(),
            retry_after_secs: default_retry_after(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            admin_token: None,
            tls: None,
        }
    }
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().unwrap()
}
fn default_max_body() -> u64 {
    1024 * 1024
}
fn default_max_batch() -> usize {
    1000
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_retry_after() -> u64 {
    1
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(75)
}
fn default_max_connections() -> usize {
    512
}

impl Config {
    /// Load, interpolate, deserialize and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: file.clone(),
            errors: vec![ConfigError::new(
                "",
                format!("cannot read the config file: {e}"),
            )],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base).map_err(|errors| ConfigErrors { file, errors })
    }

    /// Like [`Config::load`], but also hands back the config when it
    /// deserialized and only failed validation (so `switchyard check` can
    /// go on to load the modules and report everything at once).
    pub fn load_all(path: &Path) -> (Option<Config>, ConfigErrors) {
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                let errors = vec![ConfigError::new(
                    "",
                    format!("cannot read the config file: {e}"),
                )];
                return (None, ConfigErrors { file, errors });
            }
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let (config, errors) = Config::parse_all(&text, base, &|k| std::env::var(k).ok());
        (config, ConfigErrors { file, errors })
    }

    /// Parse a config from TOML text; relative file paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, Vec<ConfigError>> {
        Self::from_toml_with_env(text, base, &|k| std::env::var(k).ok())
    }

    pub fn from_toml_with_env(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        match Config::parse_all(text, base, env) {
            (Some(c), errors) if errors.is_empty() => Ok(c),
            (_, errors) => Err(errors),
        }
    }

    /// Every error of `text`, and the config itself when it deserialized
    /// (validation errors do not drop it).
    fn parse_all(
        text: &str,
        base: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Option<Config>, Vec<ConfigError>) {
        let mut table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                let msg = e.message().to_string();
                let loc = e
                    .span()
                    .map(|s| {
                        let line = text[..s.start].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default();
                let err = ConfigError::new("", format!("invalid TOML{loc}: {msg}"));
                return (None, vec![err]);
            }
        };

        let mut errors = Vec::new();
        for (k, v) in table.iter_mut() {
            interpolate(v, k.clone(), env, &mut errors);
        }

        let mut unknown = Vec::new();
        let value = toml::Value::Table(table);
        let mut on_unknown = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut on_unknown);
        let parsed: Result<Config, _> = serde_path_to_error::deserialize(de);
        for p in unknown {
            errors.push(ConfigError::new(
                p,
                "unknown key (check the spelling against config/switchyard.toml)",
            ));
        }
        let mut config = match parsed {
            Ok(c) => c,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                errors.push(ConfigError::new(path, e.into_inner().message().to_string()));
                return (None, errors);
            }
        };
        config.resolve_paths(base);
        config.validate(&mut errors);
        (Some(config), errors)
    }

    fn resolve_paths(&mut self, base: &Path) {
        for c in self.consumers.values_mut() {
            for m in &mut c.modules {
                if m.path.is_relative() && !m.path.as_os_str().is_empty() {
                    m.path = base.join(&m.path);
                }
            }
        }
        if let Some(d) = &mut self.transforms.cache_dir {
            if d.is_relative() && !d.as_os_str().is_empty() {
                *d = base.join(&*d);
            }
        }
        let abs = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        if let Some(t) = &mut self.server.tls {
            abs(&mut t.cert_file);
            abs(&mut t.key_file);
        }
        self.redis.resolve_paths(base);
        for c in self.consumers.values_mut() {
            if let Some(auth) = &mut c.endpoint.auth {
                auth.resolve_paths(base);
            }
        }
        for src in self.sources.values_mut() {
            src.resolve_paths(base);
        }
        if let Some(s) = &mut self.schemas {
            s.resolve_paths(base);
        }
    }

    /// Check every semantic rule; push one error per problem.
    /// Name and config of every HTTP source.
    pub fn http_sources(&self) -> impl Iterator<Item = (&String, &HttpSourceConfig)> {
        self.sources.iter().filter_map(|(n, s)| match s {
            SourceConfig::Http(h) => Some((n, h)),
            _ => None,
        })
    }

    /// Name and config of every Postgres CDC source.
    pub fn postgres_sources(
        &self,
    ) -> impl Iterator<Item = (&String, &switchyard_sources::postgres::PostgresSourceConfig)> {
        self.sources.iter().filter_map(|(n, s)| match s {
            SourceConfig::Postgres(p) => Some((n, p)),
            _ => None,
        })
    }

    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        if self.server.max_body == 0 {
            errors.push(ConfigError::new(
                "server.max_body",
                "must be greater than 0",
            ));
        }
        if self.server.max_batch == 0 {
            errors.push(ConfigError::new(
                "server.max_batch",
                "must be greater than 0",
            ));
        }
        for (path, d) in [
            (
                "server.header_read_timeout",
                self.server.header_read_timeout,
            ),
            ("server.body_read_timeout", self.server.body_read_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
        ] {
            if d.is_zero() {
                errors.push(ConfigError::new(
                    path,
                    "must be greater than 0 (e.g. \"10s\")",
                ));
            }
        }
        if self.server.max_connections == 0 {
            errors.push(ConfigError::new(
                "server.max_connections",
                "must be greater than 0",
            ));
        }
        if let Some(t) = &self.server.tls {
            if let Err(e) = switchyard_core::tls::server_config(
                "server.tls.cert_file",
                &t.cert_file,
                "server.tls.key_file",
                &t.key_file,
            ) {
                errors.push(tls_error(e));
            }
        }
        self.monitor.validate(errors);
        self.alerts.validate(errors);
        self.coordination.validate(errors);
        self.redis.validate(errors);
        self.log.validate(errors);
        if let Some(s) = &self.schemas {
            s.validate("schemas", errors);
        }
        for (name, c) in &self.consumers {
            let path = format!("consumers.{name}");
            if !valid_name(name) {
                errors.push(ConfigError::new(
                    &path,
                    "consumer names use only letters, digits, '-' and '_'",
                ));
            }
            c.validate(&path, errors);
            match &c.policy {
                Some(p) => p.validate(&format!("{path}.policy"), &self.privacy, errors),
                None if !self.privacy.classes.is_empty() => errors.push(ConfigError::new(
                    format!("{path}.policy"),
                    "PII classes are declared under [privacy.classes]: every consumer needs a policy (purpose, allow, action); deny by default",
                )),
                None => {}
            }
        }
        self.privacy.validate("privacy", errors);
        for (name, src) in &self.sources {
            let path = format!("sources.{name}");
            if !valid_name(name) {
                errors.push(ConfigError::new(
                    &path,
                    "source names use only letters, digits, '-' and '_'",
                ));
            }
            src.validate(&path, errors);
        }
        switchyard_sources::http::validate_write_keys(self.http_sources(), errors);
    }
}

fn interpolate(
    v: &mut toml::Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match v {
        toml::Value::String(s) => {
            if s.contains("${") {
                match expand(s, env) {
                    Ok(n) => *s = n,
                    Err(msg) => errors.push(ConfigError::new(path, msg)),
                }
            }
        }
        toml::Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                interpolate(x, format!("{path}[{i}]"), env, errors);
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                interpolate(x, format!("{path}.{k}"), env, errors);
            }
        }
        _ => {}
    }
}

/// Expand `${VAR}` and `${VAR:-default}`; `$${` is a literal `${`.
fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
            let expr = &tail[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (env(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (referenced as ${{{name}}})"
                    ))
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "TOKEN" => Some("0123456789abcdef0123".into()),
            _ => None,
        }
    }

    fn load(text: &str) -> Result<Config, Vec<ConfigError>> {
        Config::from_toml_with_env(text, Path::new("."), &env)
    }

    #[test]
    fn empty_config_gets_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.log.partitions, 16);
        assert_eq!(c.log.retention, Duration::from_secs(30 * 86400));
        assert_eq!(c.log.idempotency_window, Duration::from_secs(86400));
        assert_eq!(c.server.max_body, 1024 * 1024);
    }

    #[test]
    fn listener_limits_have_defaults_and_must_be_positive() {
        let c = load("").unwrap();
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.server.max_connections, 512);
        let errs = load(
            "[server]\nheader_read_timeout = \"0s\"\nbody_read_timeout = \"0s\"\n\
             idle_timeout = \"0s\"\nmax_connections = 0\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.header_read_timeout",
                "server.body_read_timeout",
                "server.idle_timeout",
                "server.max_connections"
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn env_interpolation() {
        let c = load("[sources.web]\ntype = \"http\"\ntoken = \"${TOKEN}\"\n").unwrap();
        let (_, h) = c.http_sources().next().unwrap();
        assert_eq!(
            h.token.as_ref().map(|t| t.expose()),
            Some("0123456789abcdef0123")
        );
        assert_eq!(expand("a-${NOPE:-d}-$${X}", &env).unwrap(), "a-d-${X}");
    }

    #[test]
    fn missing_env_names_the_path_and_variable() {
        let errs =
            load("[sources.web]\ntype = \"http\"\ntoken = \"${MISSING_TOKEN}\"\n").unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.path == "sources.web.token" && e.message.contains("MISSING_TOKEN")),
            "{errs:?}"
        );
    }

    #[test]
    fn every_error_is_reported_at_once_with_its_path() {
        let text = r#"
            [server]
            listn = "0.0.0.0:1"
            [log]
            partitions = 0
            retention = "10s"
            [sources.web]
            type = "http"
        "#;
        let errs = load(text).unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"server.listn"), "{errs:?}");
        assert!(paths.contains(&"log.partitions"), "{errs:?}");
        assert!(paths.contains(&"log.retention"), "{errs:?}");
        assert!(paths.contains(&"sources.web.token"), "{errs:?}");
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let errs = load("[log]\npartitions = \"many\"\n").unwrap_err();
        assert_eq!(errs[0].path, "log.partitions", "{errs:?}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let errs = load("[log]\npartitions = = 3\n").unwrap_err();
        assert!(errs[0].message.contains("line 2"), "{errs:?}");
    }

    #[test]
    fn unknown_source_type_is_an_error() {
        let errs = load("[sources.x]\ntype = \"kafka\"\n").unwrap_err();
        assert!(errs[0].path.starts_with("sources.x"), "{errs:?}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let text = r#"
            [server]
            admin_token = "admin-secret-0123456789"
            [redis]
            url = "rediss://:redis-pass-0123@redis.example:6380/0"
            [sources.web]
            type = "http"
            token = "ingest-secret-0123456789"
            [sources.crm]
            type = "postgres"
            url = "postgres://sy:pg-pass-0123@db/crm?sslmode=require"
            publication = "p"
            slot = "s"
            [[sources.crm.tables]]
            table = "public.t"
            topic = "t.{op}"
            account_column = "a"
            [consumers.esp]
            topics = ["*"]
            [consumers.esp.endpoint]
            url = "https://api.example/v1?api_key=url-key-0123"
            headers = { "X-Api-Key" = "header-key-0123" }
            auth = { type = "hmac", secret = "whsec_aG1hYy1zZWNyZXQ=" }
            [[consumers.esp.modules]]
            path = "Cargo.toml"
            config = { salt = "salt-secret-0123" }
        "#;
        let c = Config::from_toml_with_env(text, Path::new(env!("CARGO_MANIFEST_DIR")), &env)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let shown = format!("{c:?} {c:#?}");
        for secret in [
            "admin-secret",
            "redis-pass",
            "ingest-secret",
            "pg-pass",
            "url-key",
            "header-key",
            "aG1hYy1zZWNyZXQ",
            "salt-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("redis.example:6380"), "hosts stay visible");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory_also_auth_files_and_url_certs() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("token.txt"), "vendor-token").unwrap();
        let text = r#"
            [sources.crm]
            type = "postgres"
            url = "postgres://sy@db/crm?sslmode=verify-full&sslrootcert=ca.pem"
            publication = "p"
            slot = "s"
            [[sources.crm.tables]]
            table = "public.t"
            topic = "t.{op}"
            account_column = "a"
            [sources.shop]
            type = "postgres"
            url = "host=db user=sy dbname=shop sslmode=verify-ca sslrootcert='ca.pem'"
            publication = "p2"
            slot = "s2"
            [[sources.shop.tables]]
            table = "public.t"
            topic = "t.{op}"
            account_column = "a"
            [consumers.esp]
            topics = ["*"]
            [consumers.esp.endpoint]
            url = "https://api.example/v1"
            auth = { type = "bearer", token_file = "token.txt" }
        "#;
        // Loaded from a directory other than the working directory: before,
        // these paths were resolved against the working directory and the
        // certificate check failed.
        let c =
            Config::from_toml_with_env(text, dir.path(), &env).unwrap_or_else(|e| panic!("{e:?}"));
        match &c.consumers["esp"].endpoint.auth {
            Some(switchyard_destinations::config::AuthConfig::Bearer { token_file, .. }) => {
                assert_eq!(
                    token_file.as_deref(),
                    Some(dir.path().join("token.txt").as_path())
                )
            }
            other => panic!("{other:?}"),
        }
        for name in ["crm", "shop"] {
            let SourceConfig::Postgres(p) = &c.sources[name] else {
                panic!("{name}")
            };
            let (_, tls) = switchyard_sources::postgres::tls::PgTls::split(&p.url).unwrap();
            assert_eq!(
                tls.root_cert.as_deref(),
                Some(dir.path().join("ca.pem").as_path()),
                "{name}"
            );
        }
        let abs = resolve_url_paths(
            "mysql://u@h/db?ssl-mode=VERIFY_CA&ssl-ca=certs%2Fca.pem&ssl-key=%2Fetc%2Fk.pem",
            &["ssl-ca", "ssl-cert", "ssl-key"],
            Path::new("/srv/sy"),
        );
        assert_eq!(
            abs,
            "mysql://u@h/db?ssl-mode=VERIFY_CA&ssl-ca=%2Fsrv%2Fsy%2Fcerts%2Fca%2Epem&ssl-key=%2Fetc%2Fk.pem"
        );
    }

    #[test]
    fn tls_settings_are_checked_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.path().join("c.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), key.serialize_pem()).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other.pem"), other.serialize_pem()).unwrap();
        let load = |t: &str| Config::from_toml_with_env(t, dir.path(), &env);

        // Relative paths resolve against the config's directory.
        let c = load(
            "[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
             [redis]\nurl = \"rediss://localhost:6380\"\n\
             [redis.tls]\nca_file = \"c.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(c.server.tls.unwrap().cert_file, dir.path().join("c.pem"));
        switchyard_store::Client::new(&c.redis).unwrap();

        let errs = load(
            "[server.tls]\ncert_file = \"k.pem\"\nkey_file = \"other.pem\"\n\
             [redis]\nurl = \"redis://localhost\"\n\
             [redis.tls]\nca_file = \"missing.pem\"\ncert_file = \"c.pem\"\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "server.tls.cert_file",
                "redis.tls",
                "redis.tls.ca_file",
                "redis.tls.key_file"
            ],
            "{errs:?}"
        );
        assert!(errs[0].message.contains("no PEM certificate"), "{errs:?}");
        let errs =
            load("[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"other.pem\"\n").unwrap_err();
        assert_eq!(errs[0].path, "server.tls.key_file", "{errs:?}");
        assert!(errs[0].message.contains("does not fit"), "{errs:?}");
    }

    #[test]
    fn reference_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let text = std::fs::read_to_string(dir.join("switchyard.toml")).unwrap();
        // Secrets come from the environment; everything else uses its `:-default`.
        let env = |k: &str| {
            k.ends_with("TOKEN")
                .then(|| format!("test-value-for-{k}-0123456789"))
        };
        let c = Config::from_toml_with_env(&text, &dir, &env).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!c.sources.is_empty());
        assert!(c.admin.is_some());
        let esp = &c.consumers["esp"];
        assert_eq!(
            esp.sla.as_ref().and_then(|s| s.max_lag),
            Some(Duration::from_secs(300))
        );
        // The privacy keys are documented and used.
        assert_eq!(c.privacy.classes.len(), 3);
        assert_eq!(c.privacy.jurisdictions.len(), 3);
        let policy = esp.policy.as_ref().expect("the reference esp has a policy");
        assert_eq!(policy.purpose.as_deref(), Some("email"));
        assert_eq!(policy.allow, ["contact.email"]);
    }

    const PRIVACY: &str = r#"
[privacy.classes."contact.email"]
fields = [{ path = "data.email" }]
[consumers.sms]
topics = ["customer.*"]
endpoint = { url = "http://127.0.0.1:9/" }
[consumers.esp]
topics = ["customer.*"]
endpoint = { url = "http://127.0.0.1:9/" }
policy = { purpose = "email", allow = ["contact.email", "contact.fax"] }
"#;

    #[test]
    fn declared_pii_classes_need_a_policy_on_every_consumer() {
        let errs = load(PRIVACY).unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["consumers.esp.policy.allow[1]", "consumers.sms.policy"],
            "{errs:?}"
        );
        assert!(errs[1].message.contains("needs a policy"), "{errs:?}");
        // Unknown policy keys are refused, naming the key.
        let text = PRIVACY.replace("allow = [", "allowed = [");
        let errs = load(&text).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.path.starts_with("consumers.esp.policy")),
            "{errs:?}"
        );
        // Without classes no policy is needed.
        let text = "[consumers.sms]\ntopics = [\"customer.*\"]\nendpoint = { url = \"http://127.0.0.1:9/\" }\n";
        assert!(load(text).is_ok());
    }
}
