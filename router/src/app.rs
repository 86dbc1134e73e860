//! The `switchyard run` runtime: binds the listener, starts the sources and
//! waits for SIGTERM/SIGINT to shut down gracefully.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::delivery::Delivery;
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

    // A source that stops with an unrecoverable error stops the router.
    let stop = shutdown.child_token();
    let mut sources = tokio::task::JoinSet::new();
    for (name, pg) in config.postgres_sources() {
        let (name, pg, log, stop) = (name.clone(), pg.clone(), log.clone(), stop.clone());
        sources.spawn(async move {
            let r = crate::source::postgres::run(name.clone(), pg, log, stop.clone()).await;
            if r.is_err() {
                stop.cancel();
            }
            (name, r)
        });
    }

    let delivery = Delivery::start(&config, &log, &stop)?;

    let state = Arc::new(State { log: log.clone(), auth, server: config.server.clone(), admin: None });
    server::serve(listener, state, stop.clone()).await;
    stop.cancel();
    delivery.join().await;
    let mut failed = None;
    while let Some(joined) = sources.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((name, Err(e))) => {
                failed.get_or_insert(e.context(format!("source `{name}` (sources.{name})")));
            }
            Err(e) => {
                failed.get_or_insert(anyhow::anyhow!("a source task panicked: {e}"));
            }
        }
    }
    tracing::info!("stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
