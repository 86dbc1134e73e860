//! Sources of events. One module per kind, registered in
//! [`crate::config::SourceConfig`].
pub mod cdc_rules;
pub mod http;
pub mod mysql;
pub mod postgres;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceConfig};
use switchyard_store::log::Log;

/// Start the sources that run as tasks (the HTTP source is served by the listener).
/// A source that stopped for good records why here; `switchyard run` then exits non-zero.
pub type FatalError = std::sync::Arc<std::sync::Mutex<Option<String>>>;

pub fn start(
    config: &Config,
    log: &Log,
    shutdown: &CancellationToken,
    fatal: &FatalError,
) -> anyhow::Result<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> {
    let mut tasks = Vec::new();
    for (name, src) in &config.sources {
        match src {
            SourceConfig::Http(_) => {}
            SourceConfig::Postgres(pg) => {
                let (name, pg, log, shutdown) =
                    (name.clone(), pg.clone(), log.clone(), shutdown.clone());
                let fatal = fatal.clone();
                tasks.push(tokio::spawn(async move {
                    // `run` returns Err only for problems a retry cannot fix
                    // (missing table, replica identity, wal_level, auth…): stop
                    // the router so the operator sees it rather than a source
                    // silently not capturing.
                    if let Err(e) = postgres::run(name.clone(), pg, log, shutdown.clone()).await {
                        tracing::error!(source = %name, error = %format!("{e:#}"),
                            "source stopped with an error that a retry cannot fix; shutting down");
                        *fatal.lock().unwrap() = Some(format!("source {name}: {e:#}"));
                        shutdown.cancel();
                    }
                }));
            }
            SourceConfig::Mysql(my) => {
                let (name, my, log, shutdown) =
                    (name.clone(), my.clone(), log.clone(), shutdown.clone());
                let fatal = fatal.clone();
                tasks.push(tokio::spawn(async move {
                    if let Err(e) = mysql::run(name.clone(), my, log, shutdown.clone()).await {
                        tracing::error!(source = %name, error = %format!("{e:#}"),
                            "source stopped with an error that a retry cannot fix; shutting down");
                        *fatal.lock().unwrap() = Some(format!("source {name}: {e:#}"));
                        shutdown.cancel();
                    }
                }));
            }
        }
    }
    Ok(std::sync::Mutex::new(tasks))
}
