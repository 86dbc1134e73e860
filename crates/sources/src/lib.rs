//! `switchyard-sources`: where events come from. A source is one folder
//! behind the [`Source`] trait, registered in one place: a variant of
//! [`SourceConfig`] (its TOML `type`) and one arm of [`SourceConfig::task`].
//!
//! - [`http`]: application events over `POST /v1/events` (the whole ingest
//!   pipeline: auth, body formats, validation, append). It is served by the
//!   router's listener, so it runs no task of its own.
//! - [`postgres`]: row changes by logical replication.
//! - [`mysql`]: row changes from the MySQL/MariaDB binlog.
//!
//! [`cdc_rules`] holds what the CDC sources share (rules → topics);
//! [`schema_drift`] their schema-change detection, announcement and history;
//! [`quarantine`] the records they could not map.
//! [`schema`] the schema registry both HTTP and CDC events are checked by.
pub mod cdc_rules;
pub mod http;
pub mod mysql;
pub mod postgres;
pub mod quarantine;
pub mod schema;
pub mod schema_drift;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use switchyard_core::config::ConfigError;
use switchyard_store::log::Log;

pub use http::HttpSourceConfig;

/// A source that runs as a task: it reads from somewhere and appends to the
/// log until `shutdown`. `Err` only for problems a retry cannot fix (a
/// missing table, wrong credentials…): the router then stops, saying why.
pub trait Source: Send + 'static {
    fn run(
        self: Box<Self>,
        log: Log,
        shutdown: CancellationToken,
    ) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
}

/// A source of events, by its TOML `type`. One variant per kind; each
/// kind lives in its own folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Application events posted to `POST /v1/events`.
    Http(HttpSourceConfig),
    /// Row changes captured from Postgres by logical replication.
    Postgres(postgres::PostgresSourceConfig),
    /// Row changes captured from MySQL/MariaDB's binlog.
    Mysql(mysql::MysqlSourceConfig),
}

impl SourceConfig {
    /// Check `[sources.<name>]` (at TOML path `path`).
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        match self {
            SourceConfig::Http(h) => h.validate(path, errors),
            SourceConfig::Postgres(p) => p.validate(path, errors),
            SourceConfig::Mysql(m) => m.validate(path, errors),
        }
    }

    /// A CDC source's `max_event_size` in bytes (`None`: not a CDC source).
    pub fn max_event_size(&self) -> Option<u64> {
        match self {
            SourceConfig::Http(_) => None,
            SourceConfig::Postgres(p) => Some(p.max_event_size.0),
            SourceConfig::Mysql(m) => Some(m.max_event_size.0),
        }
    }

    /// Make relative file paths (tokens, certificates in URLs) absolute
    /// against `base`, the config file's directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            SourceConfig::Http(h) => h.resolve_paths(base),
            SourceConfig::Postgres(p) => p.resolve_paths(base),
            SourceConfig::Mysql(m) => m.resolve_paths(base),
        }
    }

    /// The task of source `name`; `None` for a source served by the
    /// router's listener (HTTP).
    pub fn task(&self, name: &str) -> Option<Box<dyn Source>> {
        match self {
            SourceConfig::Http(_) => None,
            SourceConfig::Postgres(p) => Some(Box::new(postgres::PostgresSource {
                name: name.to_string(),
                cfg: p.clone(),
            })),
            SourceConfig::Mysql(m) => Some(Box::new(mysql::MysqlSource {
                name: name.to_string(),
                cfg: m.clone(),
            })),
        }
    }
}

/// A source that stopped for good records why here; `switchyard run` then exits non-zero.
pub type FatalError = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// Who this instance is among the routers sharing the Redis, and how long a
/// source's leader lease lasts (`[coordination]`).
#[derive(Debug, Clone)]
pub struct Leadership {
    pub instance_id: String,
    pub lease_timeout: Duration,
    pub renew_interval: Duration,
}

/// Start every source that runs as a task. With several router instances
/// on one Redis, each CDC source (one replication slot, one binlog position)
/// has one active reader: the instance holding its leader lease
/// (`<ns>:source:{src-<name>}:leader`, with a fencing counter). The others
/// stand by and try to take the lease every `renew_interval`; when the
/// leader dies its lease expires within `lease_timeout` and a standby starts
/// the source, which resumes from the slot's confirmed position (Postgres)
/// or the stored binlog position (MySQL). A leader that cannot renew stops
/// its source once the lease may have expired.
pub fn start<'a>(
    sources: impl IntoIterator<Item = (&'a String, &'a SourceConfig)>,
    log: &Log,
    shutdown: &CancellationToken,
    fatal: &FatalError,
    leadership: &Leadership,
) -> std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (name, src) in sources {
        if src.task(name).is_none() {
            continue;
        }
        let (name, src, log, shutdown, fatal, lead) = (
            name.clone(),
            src.clone(),
            log.clone(),
            shutdown.clone(),
            fatal.clone(),
            leadership.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // A source stops the router when it cannot go on, so the
            // operator sees it rather than a source silently not capturing.
            if let Err(e) = lead_and_run(&name, &src, &log, &shutdown, &lead).await {
                tracing::error!(source = %name, error = %format!("{e:#}"),
                    "source stopped with an error that a retry cannot fix; shutting down");
                *fatal.lock().unwrap() = Some(format!("source {name}: {e:#}"));
                shutdown.cancel();
            }
        }));
    }
    std::sync::Mutex::new(tasks)
}

/// Stand by until this instance holds the source's leader lease, run the
/// source while it does, and stand by again if it loses it.
async fn lead_and_run(
    name: &str,
    src: &SourceConfig,
    log: &Log,
    shutdown: &CancellationToken,
    lead: &Leadership,
) -> anyhow::Result<()> {
    use switchyard_store::lease;
    let (lease_key, fence_key) = lease::source_leader_keys(&log.keys().namespace, name);
    let ttl = lead.lease_timeout;
    let ttl_ms = ttl.as_millis() as u64;
    let pause = |d: Duration| async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    };
    let mut said_standby = false;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let t0 = Instant::now();
        let acquired = match log.conn().await {
            Ok(mut c) => {
                lease::acquire_keys(&mut c, &lease_key, &fence_key, &lead.instance_id, ttl_ms).await
            }
            Err(e) => Err(e),
        };
        let token = match acquired {
            Ok(Some(t)) => t,
            Ok(None) => {
                if !said_standby {
                    tracing::info!(source = %name, "standing by: another instance is reading this source");
                    said_standby = true;
                }
                pause(lead.renew_interval).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(source = %name, error = %e, "cannot take the source's leader lease; retrying");
                pause(lead.renew_interval).await;
                continue;
            }
        };
        said_standby = false;
        tracing::info!(source = %name, instance = %lead.instance_id, token, "leader of the source: reading");
        let term = shutdown.child_token();
        let task = src.task(name).expect("a source with a task");
        let mut run = tokio::spawn(task.run(log.with_leader_token(token), term.clone()));
        let mut valid_until = t0 + ttl;
        let mut lost = false;
        let mut tick = tokio::time::interval(lead.renew_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tick.tick(), if !term.is_cancelled() => {
                    let t = Instant::now();
                    let renewed = match log.conn().await {
                        Ok(mut c) => lease::renew_keys(&mut c, &lease_key, &fence_key, &lead.instance_id, token, ttl_ms).await,
                        Err(e) => Err(e),
                    };
                    match renewed {
                        Ok(true) => valid_until = t + ttl,
                        Ok(false) => {
                            tracing::warn!(source = %name, "another instance took the source's leader lease; stopping this reader");
                            lost = true;
                            term.cancel();
                        }
                        Err(e) if Instant::now() >= valid_until => {
                            tracing::warn!(source = %name, error = %e, "cannot renew the source's leader lease and it may have expired; stopping this reader");
                            lost = true;
                            term.cancel();
                        }
                        Err(e) => tracing::warn!(source = %name, error = %e, "renewing the source's leader lease failed; retrying"),
                    }
                }
            }
        };
        if !lost {
            if let Ok(mut c) = log.conn().await {
                let _ = lease::release_key(&mut c, &lease_key, token).await;
            }
        }
        match result {
            Ok(Ok(())) if shutdown.is_cancelled() => return Ok(()),
            Ok(Ok(())) => {
                // Stopped because leadership was lost: stand by again.
                pause(lead.renew_interval).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => anyhow::bail!("the source's task failed: {e}"),
        }
    }
}
