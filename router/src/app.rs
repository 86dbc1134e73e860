//! The `switchyard run` runtime: binds the listener (healthy at once, ready
//! once start-up is done), compiles module chains, starts sources and
//! consumers, reloads transform chains (file watch, SIGHUP, `POST
//! /admin/reload`) and shuts down gracefully on SIGTERM/SIGINT, also during
//! start-up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;
use crate::server::{self, Admin, Startup, State};
use switchyard_config::Config;
use switchyard_sources::http::{Auth, Ingest, IngestLimits};
use switchyard_store::log::{Log, LogError};
use switchyard_wasm_host::{spawn_watcher, EngineLimits, TransformEngine, TransformWatcher};

/// Run the router until `shutdown` is cancelled. `config_path` is re-read on reload.
///
/// Start-up order: Redis (a partition mismatch or a bad certificate refuses
/// to start before anything listens) → the listener, serving `/healthz` at
/// once and `/readyz` = 503 "starting: …" → module chains compiled on a
/// thread of their own (a cold cache takes seconds per module; SIGTERM
/// meanwhile abandons it and exits) → delivery, sources, admin → ready.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let log =
        Log::new(&config.redis, &config.log).context("opening the Redis client (redis.url)")?;
    if config.privacy.enabled() || config.consumers.values().any(|c| c.policy.is_some()) {
        // Right-to-deletion finds an account's log entries through this index.
        log.index_accounts();
    }
    match log.conn().await {
        Ok(_) => tracing::info!(partitions = log.partitions(), "connected to Redis"),
        // Wrong partitions or certificates will not fix themselves: refuse to start.
        Err(e @ (LogError::PartitionMismatch { .. } | LogError::Tls(_))) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "Redis is not reachable yet; ingest answers 503 until it is")
        }
    }
    let meta_guard = log.spawn_meta_guard(shutdown.clone());
    let auth = Auth::from_sources(&config.sources)?;
    let schemas = match &config.schemas {
        Some(s) => {
            let reg = Arc::new(s.load()?);
            switchyard_sources::schema::install_for_cdc(reg.clone());
            Some(reg)
        }
        None => None,
    };
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding {} (server.listen)", config.server.listen))?;
    let addr = listener.local_addr()?;
    let tls = match &config.server.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(
            switchyard_core::tls::server_config(
                "server.tls.cert_file",
                &t.cert_file,
                "server.tls.key_file",
                &t.key_file,
            )?,
        )),
        None => None,
    };
    let state = Arc::new(State {
        log: log.clone(),
        ingest: Ingest {
            log: log.clone(),
            auth,
            limits: IngestLimits {
                max_body: config.server.max_body,
                max_batch: config.server.max_batch,
                body_read_timeout: config.server.body_read_timeout,
                retry_after_secs: config.server.retry_after_secs,
            },
            schemas,
        },
        server: config.server.clone(),
        admin: std::sync::OnceLock::new(),
        startup: Startup::starting("starting: compiling modules"),
    });
    // The listener stops on shutdown, or when start-up fails.
    let stop_listener = shutdown.child_token();
    let tls_on = tls.is_some();
    let server = tokio::spawn(server::serve(
        listener,
        tls,
        state.clone(),
        stop_listener.clone(),
    ));
    tracing::info!(addr = %addr, tls = tls_on, "listening");

    // Compiling is blocking and may take long: a thread of its own, which
    // SIGTERM abandons (the process exits without waiting for it; the
    // compile cache writes whole files by rename, so nothing half-written
    // is ever read).
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (cfg, handle) = (config.clone(), tokio::runtime::Handle::current());
    std::thread::Builder::new()
        .name("startup-compile".into())
        .spawn(move || {
            let _rt = handle.enter();
            let r = TransformEngine::new(EngineLimits::default(), cfg.transforms.cache_dir())
                .context("starting the WebAssembly engine")
                .and_then(|engine| Delivery::load(&cfg, &engine));
            let _ = tx.send(r);
        })
        .context("starting the start-up thread")?;
    let loaded = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = rx => Some(r.map_err(|_| anyhow::anyhow!("the start-up thread died"))?),
    };
    let consumers = match loaded {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            stop_listener.cancel();
            let _ = server.await;
            meta_guard.abort();
            return Err(e);
        }
        None => {
            tracing::info!(
                "shutdown requested during start-up; stopping before delivery and sources start"
            );
            let _ = server.await;
            tracing::info!("stopped");
            return Ok(());
        }
    };

    let delivery = Arc::new(Delivery::spawn(
        consumers,
        &log,
        &config.coordination,
        &shutdown,
    ));
    let fatal = switchyard_sources::FatalError::default();
    let watcher = match spawn_watcher(delivery.chains()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch module files; reload with SIGHUP or `switchyard reload`");
            None
        }
    };
    let runtime = Arc::new(Runtime {
        api: Arc::new(crate::admin_api::Api {
            log: log.clone(),
            delivery: delivery.clone(),
            config: Arc::new(config.clone()),
        }),
        delivery: delivery.clone(),
        config_path,
        admin_token: config.server.admin_token.clone(),
        watcher: Mutex::new(watcher),
        sources: switchyard_sources::start(
            &config.sources,
            &log,
            &shutdown,
            &fatal,
            &switchyard_sources::Leadership {
                instance_id: delivery.instance_id.clone(),
                lease_timeout: config.coordination.lease_timeout,
                renew_interval: config.coordination.renew_interval,
            },
        ),
    });
    spawn_sighup(runtime.clone(), shutdown.clone());
    let admin: Arc<dyn Admin> = runtime.clone();
    crate::monitor::start(&config, &log, delivery.clone(), &shutdown)?;
    let admin_addr = match &config.admin {
        Some(a) => Some(
            crate::admin_listener::start(
                a,
                &config,
                &log,
                &delivery,
                Some(admin.clone()),
                &shutdown,
            )
            .await?,
        ),
        None => None,
    };
    crate::admin_listener::spawn_address_record(&log, admin_addr, addr, tls_on, shutdown.clone());
    let _ = state.admin.set(admin);
    state.startup.ready();
    tracing::info!(addr = %addr, "ready");

    let _ = server.await;
    let sources = std::mem::take(&mut *runtime.sources.lock().unwrap());
    for s in sources {
        let _ = s.await;
    }
    drop(runtime);
    delivery.join().await;
    let _ = meta_guard.await;
    tracing::info!("stopped");
    if let Some(e) = fatal.lock().unwrap().take() {
        anyhow::bail!("{e}");
    }
    Ok(())
}

/// What the admin endpoints and SIGHUP act on.
struct Runtime {
    api: Arc<crate::admin_api::Api>,
    delivery: Arc<Delivery>,
    config_path: Option<PathBuf>,
    admin_token: Option<switchyard_core::secret::Secret>,
    watcher: Mutex<Option<TransformWatcher>>,
    sources: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Runtime {
    /// Re-read the config file and swap in each consumer's new module chain.
    /// A chain that fails to load leaves the old one running. Consumers added
    /// or removed, and settings other than modules, need a restart.
    fn reload(&self) -> Value {
        let mut report = serde_json::Map::new();
        let new = match &self.config_path {
            Some(p) => match Config::load(p) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "reload: the config has errors; nothing changed");
                    return json!({"ok": false, "error": e.to_string()});
                }
            },
            None => None,
        };
        let mut ok = true;
        for c in &self.delivery.consumers {
            let Some(chain) = &c.chain else { continue };
            let result = match new.as_ref().and_then(|n| n.consumers.get(&c.name)) {
                Some(nc) => chain.reconfigure(nc.modules.clone()),
                None => chain.reload(),
            };
            ok &= result.is_ok();
            report.insert(
                c.name.clone(),
                match result {
                    Ok(()) => json!({"ok": true, "generation": chain.chain().generation}),
                    Err(e) => json!({"ok": false, "file": e.file, "error": e.message}),
                },
            );
        }
        if let Some(n) = &new {
            let before: Vec<&String> = self.delivery.consumers.iter().map(|c| &c.name).collect();
            let after: Vec<&String> = n.consumers.keys().collect();
            if before != after {
                report.insert(
                    "note".into(),
                    json!("consumers were added or removed: restart the router to apply that"),
                );
            }
        }
        // Module paths may have changed: watch the new set.
        match spawn_watcher(self.delivery.chains()) {
            Ok(w) => *self.watcher.lock().unwrap() = Some(w),
            Err(e) => tracing::warn!(error = %e, "cannot watch module files"),
        }
        json!({"ok": ok, "consumers": report})
    }
}

impl Admin for Runtime {
    fn handle(
        &self,
        method: Method,
        path: String,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (StatusCode, Value)> + Send + '_>> {
        Box::pin(async move {
            if let Some(answer) = self.api.handle(&method, &path, &body).await {
                return answer;
            }
            match (method, path.split('?').next().unwrap_or("")) {
                (Method::POST, "/admin/reload") => {
                    let r = tokio::task::block_in_place(|| self.reload());
                    let status = if r["ok"] == true {
                        StatusCode::OK
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    };
                    (status, r)
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    json!({"error": format!("no admin route {path}")}),
                ),
            }
        })
    }

    fn token_ok(&self, authorization: Option<&str>, peer_is_loopback: bool) -> bool {
        match &self.admin_token {
            // Without an admin token, admin routes answer only on loopback.
            None => peer_is_loopback,
            Some(t) => switchyard_core::token::check(
                authorization,
                [&switchyard_core::token::TokenDigest::of(t.expose())],
            )
            .is_ok(),
        }
    }
}

fn spawn_sighup(runtime: Arc<Runtime>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            return;
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading transform chains");
                    let rt = runtime.clone();
                    let r = tokio::task::spawn_blocking(move || rt.reload()).await;
                    tracing::info!(result = %r.map(|v| v.to_string()).unwrap_or_default(), "reload finished");
                }
            }
        }
    });
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
