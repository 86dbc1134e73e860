//! Sources of events. One module per kind, registered in
//! [`crate::config::SourceConfig`].
pub mod http;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, SourceConfig};
use crate::log::Log;

/// Start the sources that run as tasks (the HTTP source is served by the listener).
pub fn start(
    config: &Config,
    _log: &Log,
    _shutdown: &CancellationToken,
) -> anyhow::Result<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> {
    let tasks = Vec::new();
    for (_name, src) in &config.sources {
        match src {
            SourceConfig::Http(_) => {}
        }
    }
    Ok(std::sync::Mutex::new(tasks))
}
