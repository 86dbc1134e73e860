//! The `switchyard run` runtime: binds the listener, starts the sources and
//! waits for SIGTERM/SIGINT to shut down gracefully.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::log::{Log, LogError};
use crate::server::{self, State};
use crate::source::http::Auth;

/// Run the router until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let log = Log::new(&config).context("opening the Redis client (redis.url)")?;
    match log.conn().await {
        Ok(_) => tracing::info!(partitions = log.partitions(), "connected to Redis"),
        Err(e @ LogError::PartitionMismatch { .. }) => return Err(e.into()),
        Err(e) => tracing::warn!(error = %e, "Redis is not reachable yet; ingest answers 503 until it is"),
    }
    let auth = Auth::from_config(&config)?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {} (server.listen)", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(addr = %addr, "listening");

    let state = Arc::new(State { log: log.clone(), auth, server: config.server.clone(), admin: None });
    server::serve(listener, state, shutdown.clone()).await;
    tracing::info!("stopped");
    Ok(())
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}
