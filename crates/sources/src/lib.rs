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
//! [`cdc_rules`] holds what the CDC sources share (rules → topics).
pub mod cdc_rules;
pub mod http;
pub mod mysql;
pub mod postgres;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

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

/// Start every source that runs as a task.
pub fn start<'a>(
    sources: impl IntoIterator<Item = (&'a String, &'a SourceConfig)>,
    log: &Log,
    shutdown: &CancellationToken,
    fatal: &FatalError,
) -> std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (name, src) in sources {
        let Some(task) = src.task(name) else { continue };
        let (name, log, shutdown, fatal) =
            (name.clone(), log.clone(), shutdown.clone(), fatal.clone());
        tasks.push(tokio::spawn(async move {
            // A source stops the router when it cannot go on, so the
            // operator sees it rather than a source silently not capturing.
            if let Err(e) = task.run(log, shutdown.clone()).await {
                tracing::error!(source = %name, error = %format!("{e:#}"),
                    "source stopped with an error that a retry cannot fix; shutting down");
                *fatal.lock().unwrap() = Some(format!("source {name}: {e:#}"));
                shutdown.cancel();
            }
        }));
    }
    std::sync::Mutex::new(tasks)
}
