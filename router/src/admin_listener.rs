//! The admin listener (`[admin] listen`): a second, plain-HTTP listener for
//! operators and their tools, kept apart from ingest so it can be bound to
//! loopback or a private network and scraped without touching the data path.
//!
//! - `GET /metrics`: Prometheus text format, **no token** (scrapers rarely
//!   carry one, and the metrics hold no ids or payloads: labels are source,
//!   consumer and module names and status classes);
//! - `GET /healthz`, `GET /readyz`: as on the main listener, no token;
//! - everything else goes to [`crate::admin_routes::route`] and needs
//!   `Authorization: Bearer <admin.token>` (default: `server.admin_token`);
//!   with neither set, only loopback peers are let in.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::delivery::Delivery;
use crate::server::Admin;
use switchyard_config::admin::AdminConfig;
use switchyard_core::secret::Secret;
use switchyard_store::log::Log;

/// What the admin routes work with.
pub struct AdminCtx {
    pub log: Log,
    pub delivery: Arc<Delivery>,
    /// The runtime's `/admin/*` operations (status, reload), shared with the main listener.
    pub runtime: Option<Arc<dyn Admin>>,
    pub token: Option<Secret>,
    pub registry: Registry,
}

pub type Resp = Response<Full<Bytes>>;

pub use switchyard_sources::http::json_response;

/// Bind the admin listener; logs `admin listening` with the bound address.
pub async fn bind(cfg: &AdminConfig) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {} (admin.listen)", cfg.listen))?;
    tracing::info!(addr = %l.local_addr()?, "admin listening");
    Ok(l)
}

/// Serve until `shutdown`; connections still open then are dropped.
pub async fn serve(listener: TcpListener, ctx: Arc<AdminCtx>, shutdown: CancellationToken) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let svc = hyper::service::service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, Infallible>(handle(&ctx, req, peer).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .into_owned();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
            }
        });
    }
}

async fn handle(ctx: &AdminCtx, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)
            .body(Full::new(Bytes::from(crate::metrics::render(
                &ctx.registry,
            ))))
            .expect("static response parts are valid"),
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        // The console's page holds no data (it asks for the token and loads
        // the views below with it): served without a token.
        (&Method::GET, "/console") | (&Method::GET, "/console/") => crate::console::page(),
        (&Method::GET, "/readyz") => {
            let (status, body) = crate::health::readyz(&ctx.log).await;
            json_response(status, &body)
        }
        _ => {
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if !token_ok(ctx.token.as_ref(), auth, peer.ip().is_loopback()) {
                let mut r = json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "admin routes need the admin token (admin.token or server.admin_token)"}),
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return r;
            }
            let method = req.method().clone();
            let query = req.uri().query().map(str::to_string);
            let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return json_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &json!({"error": "admin request body too large (1 MiB at most)"}),
                    )
                }
            };
            crate::admin_routes::route(
                ctx,
                crate::admin_routes::AdminRequest {
                    method,
                    path,
                    query,
                    body,
                },
            )
            .await
        }
    }
}

/// `Bearer <token>` compared as SHA-256 digests in constant time; without a
/// configured token only loopback peers pass.
pub fn token_ok(token: Option<&Secret>, authorization: Option<&str>, loopback: bool) -> bool {
    use subtle::ConstantTimeEq;
    match token {
        None => loopback,
        Some(t) => {
            let presented = authorization
                .and_then(|h| h.strip_prefix("Bearer "))
                .unwrap_or("");
            let a = <sha2::Sha256 as sha2::Digest>::digest(presented.as_bytes());
            let b = <sha2::Sha256 as sha2::Digest>::digest(t.expose().as_bytes());
            bool::from(a.ct_eq(&b))
        }
    }
}

/// Bind `[admin] listen` and serve it in the background until `shutdown`.
pub async fn start(
    cfg: &AdminConfig,
    config: &switchyard_config::Config,
    log: &Log,
    delivery: &Arc<Delivery>,
    runtime: Option<Arc<dyn Admin>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = bind(cfg).await?;
    let addr = listener.local_addr()?;
    let ctx = Arc::new(AdminCtx {
        log: log.clone(),
        delivery: delivery.clone(),
        runtime,
        token: cfg
            .token
            .clone()
            .or_else(|| config.server.admin_token.clone()),
        registry: crate::metrics::registry(Some(delivery.clone())),
    });
    tokio::spawn(serve(listener, ctx, shutdown.clone()));
    Ok(addr)
}

/// How long the address record lives without a refresh.
const RECORD_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// `http://host:port` for a bound address (an unspecified IP is reached on loopback).
pub fn url_of(addr: SocketAddr, scheme: &str) -> String {
    let ip = if addr.ip().is_unspecified() {
        if addr.is_ipv6() {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        } else {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
    } else {
        addr.ip()
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// Record where this router's admin API answers (`switchyard_store::router_addr`):
/// the admin listener's URL (`admin`, when `[admin]` is configured) and the
/// main listener's (`server`, which serves the same API under `/admin/`),
/// refreshed every 10 s with a 30 s expiry, removed on shutdown.
pub fn spawn_address_record(
    log: &Log,
    admin: Option<SocketAddr>,
    server: SocketAddr,
    server_tls: bool,
    shutdown: CancellationToken,
) {
    let record = json!({
        "admin": admin.map(|a| url_of(a, "http")),
        "server": url_of(server, if server_tls { "https" } else { "http" }),
        "pid": std::process::id(),
    })
    .to_string();
    let log = log.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match switchyard_store::router_addr::record(&log, &record, RECORD_TTL).await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot record the admin address in Redis; the CLI falls back to the config's addresses");
                    }
                    failing = true;
                }
            }
        }
        let _ = switchyard_store::router_addr::clear(&log, &record).await;
    });
}
