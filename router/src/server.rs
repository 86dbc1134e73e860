//! The HTTP listener: ingest (`POST /v1/events`), health, readiness and the
//! admin endpoints. Routing is a match on (method, path); each handler lives
//! with its subject (ingest in `source/http.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::log::{Log, LogError};
use crate::source::http::{split_body, to_event, Auth, BodyFormat, Reject};

/// Extra routes served under `/admin/` (reload, status…), provided by the
/// runtime. Kept behind a trait so the listener doesn't depend on delivery.
pub trait Admin: Send + Sync + 'static {
    fn handle(
        &self,
        method: Method,
        path: String,
        body: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (StatusCode, Value)> + Send + '_>>;
    /// Whether a request may use admin routes (`Authorization: Bearer <server.admin_token>`;
    /// without a configured token, only loopback peers).
    fn token_ok(&self, authorization: Option<&str>, peer_is_loopback: bool) -> bool;
}

pub struct State {
    pub log: Log,
    pub auth: Auth,
    pub server: ServerConfig,
    /// Set once start-up has built the runtime that serves `/admin/*`.
    pub admin: std::sync::OnceLock<Arc<dyn Admin>>,
    pub startup: Startup,
}

/// Start-up progress. The listener is up before modules are compiled, so
/// `/healthz` (the process is alive) answers at once; until [`Startup::ready`]
/// `/readyz`, ingest and admin routes answer 503 with the reason.
#[derive(Debug, Default)]
pub struct Startup(std::sync::Mutex<Option<String>>);

impl Startup {
    pub fn starting(reason: impl Into<String>) -> Startup {
        Startup(std::sync::Mutex::new(Some(reason.into())))
    }
    pub fn ready(&self) {
        *self.0.lock().unwrap() = None;
    }
    /// Why the router is not serving yet; `None` once it is.
    pub fn pending(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }
}

type Resp = Response<Full<Bytes>>;

fn json_response(status: StatusCode, body: &Value) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )))
        .expect("static response parts are valid")
}

fn reject(r: &Reject, retry_after: u64) -> Resp {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json_response(status, &r.to_json());
    if r.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    if r.status == 503 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
    }
    resp
}

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve until `shutdown` is cancelled; then stop accepting, let in-flight
/// requests finish (up to `server.shutdown_grace`) and return. With `tls`,
/// every connection is TLS (the handshake runs in the connection's task, so
/// a slow client does not hold up `accept`).
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let svc = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(route(&state, req, peer).await) }
        });
        match &tls {
            None => {
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                let fut = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = fut.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let accept = acceptor.accept(stream);
                let watcher = graceful.watcher();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    if let Err(e) = watcher.watch(conn.into_owned()).await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("listener closed; waiting for in-flight requests");
    if tokio::time::timeout(state.server.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?state.server.shutdown_grace, "in-flight requests did not finish within the grace period");
    }
}

async fn route(state: &State, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let path = req.uri().path().to_string();
    if path != "/healthz" {
        if let Some(reason) = state.startup.pending() {
            return not_ready(state, &path, &reason);
        }
    }
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/v1/events") => ingest(state, req).await,
        (Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (Method::GET, "/readyz") => match state.log.ping().await {
            Ok(()) => json_response(StatusCode::OK, &json!({"status": "ready"})),
            Err(e) => {
                let mut r = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "not ready", "error": e.to_string()}),
                );
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(state.server.retry_after_secs),
                );
                r
            }
        },
        (m, p) if p.starts_with("/admin/") => match state.admin.get() {
            Some(admin) => {
                let auth = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if !admin.token_ok(auth, peer.ip().is_loopback()) {
                    return reject(
                        &Reject::new(401, None, "admin routes need the admin token"),
                        0,
                    );
                }
                let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => {
                        return reject(&Reject::new(413, None, "admin request body too large"), 0)
                    }
                };
                let (status, v) = admin.handle(m, p.to_string(), body).await;
                json_response(status, &v)
            }
            None => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "no admin interface"}),
            ),
        },
        (_, "/v1/events") => {
            let mut r = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "use POST"}),
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
            r
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no route for {path}")}),
        ),
    }
}

/// While start-up runs: `/readyz` says why, everything else is refused (nothing is written).
fn not_ready(state: &State, path: &str, reason: &str) -> Resp {
    let body = if path == "/readyz" {
        json!({"status": "not ready", "reason": reason})
    } else {
        json!({"error": format!("the router is not ready yet ({reason}); nothing was done, retry later")})
    };
    let mut r = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(state.server.retry_after_secs),
    );
    r
}

async fn ingest(state: &State, req: Request<Incoming>) -> Resp {
    let retry_after = state.server.retry_after_secs;
    match ingest_inner(state, req).await {
        Ok(v) => json_response(StatusCode::ACCEPTED, &v),
        Err(r) => {
            if r.status >= 500 {
                tracing::warn!(status = r.status, error = %r.message, "ingest failed");
            } else {
                // Neither the message nor the field: both can quote what the
                // client sent (a value, or a key like `attributes.<key>`), and
                // that may be PII. The client gets them in the response.
                tracing::debug!(status = r.status, "ingest rejected");
            }
            reject(&r, retry_after)
        }
    }
}

async fn ingest_inner(state: &State, req: Request<Incoming>) -> Result<Value, Reject> {
    let headers = req.headers();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let source = state.auth.authenticate(auth)?;
    let format = BodyFormat::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let max = state.server.max_body;
    let too_large = || {
        Reject::new(
            413,
            None,
            format!("body exceeds {max} bytes (server.max_body)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    {
        if len > max {
            return Err(too_large());
        }
    }
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), max as usize).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(Reject::new(
                400,
                None,
                format!("could not read the body: {e}"),
            ))
        }
    };
    let items = split_body(format, &body, state.server.max_batch)?;
    let now = Utc::now();
    let mut events = Vec::with_capacity(items.len());
    // Ids the client gave may repeat (retries): those are checked. Ids generated here cannot.
    let mut client_ids = Vec::with_capacity(items.len());
    for (label, v) in items {
        client_ids.push(v.get("id").is_some_and(|id| !id.is_null()));
        let ev = to_event(&label, v, source.name(), trace.as_deref(), now)?;
        if !source.allows(&ev.topic) {
            return Err(Reject::new(
                403,
                Some(format!("{label}.topic")),
                format!(
                    "source `{}` may not publish to topic `{}` (sources.{}.topics)",
                    source.name(),
                    ev.topic,
                    source.name()
                ),
            ));
        }
        events.push(ev);
    }
    let appended = state
        .log
        .append_checked(&events, |i| client_ids[i])
        .await
        .map_err(|e| match e {
            LogError::Unavailable(_) | LogError::Tls(_) => Reject::new(
                503,
                None,
                format!("the log is unavailable, nothing was written; retry later ({e})"),
            ),
            other => Reject::new(500, None, format!("nothing was written: {other}")),
        })?;
    let mut duplicates = 0usize;
    let out: Vec<Value> = events
        .iter()
        .zip(&appended)
        .map(|(ev, a)| match &a.stream_id {
            Some(sid) => json!({"id": ev.id, "partition": a.partition, "stream_id": sid}),
            None => {
                duplicates += 1;
                json!({"id": ev.id, "partition": a.partition, "duplicate": true, "stream_id": a.original})
            }
        })
        .collect();
    Ok(json!({"accepted": events.len() - duplicates, "duplicates": duplicates, "events": out}))
}
