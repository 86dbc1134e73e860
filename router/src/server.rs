//! The HTTP listener: ingest (`POST /v1/events`, the Segment-compatible
//! `/v1/track`… `/v1/batch`), health, readiness and the
//! admin endpoints. Routing is a match on (method, path); each handler lives
//! with its subject (ingest in `switchyard_sources::http::ingest`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use switchyard_config::ServerConfig;
use switchyard_sources::http::{json_response, read_body, reject, segment, Ingest, Reject};
use switchyard_store::log::Log;

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
    /// `POST /v1/events` (the HTTP sources' ingest pipeline).
    pub ingest: Ingest,
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

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After a connection is told to close (shutdown, or a timeout below) and
/// has no request in progress, how long it gets to flush what it wrote
/// before it is dropped.
const CLOSE_SETTLE: Duration = Duration::from_millis(250);

/// How often, at most, "connection limit reached" is logged.
const CAP_WARN_EVERY: Duration = Duration::from_secs(60);

/// Serve until `shutdown` is cancelled; then stop accepting, let in-flight
/// requests finish (up to `server.shutdown_grace`) and return. With `tls`,
/// every connection is TLS (the handshake runs in the connection's task, so
/// a slow client does not hold up `accept`).
///
/// Limits (`[server]`): at most `max_connections` connections (the listener
/// stops accepting at the limit); per connection, `header_read_timeout` from
/// a request's first byte to the end of its headers, `idle_timeout` with no
/// request in progress and nothing received, `body_read_timeout` for the
/// body (in the handlers that read one). On shutdown, connections without a
/// request in progress close at once and a body still arriving gets 503, so
/// slow or idle clients do not hold shutdown up.
///
/// hyper's own `header_read_timeout` is not used: its timer starts when a
/// connection begins waiting for a request, so it would also be the idle
/// timeout, shorter than a load balancer's. [`Activity`] keeps the two apart.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let limit = Arc::new(Semaphore::new(state.server.max_connections));
    let connections = TaskTracker::new();
    let mut last_cap_warning: Option<Instant> = None;
    loop {
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_cap_warning.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                    last_cap_warning = Some(Instant::now());
                    tracing::warn!(
                        max_connections = state.server.max_connections,
                        "connection limit reached (server.max_connections); not accepting until a connection closes"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    p = limit.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            peer,
            builder: builder.clone(),
            state: state.clone(),
            shutdown: shutdown.clone(),
            activity: Arc::new(Activity::new()),
        };
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => conn.serve(stream).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        _ = conn.shutdown.cancelled() => return,
                        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                    };
                    match handshake {
                        Ok(Ok(s)) => conn.serve(s).await,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    tracing::info!("listener closed; waiting for in-flight requests");
    if tokio::time::timeout(state.server.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?state.server.shutdown_grace, "in-flight requests did not finish within the grace period");
    }
}

/// What a connection's task needs.
struct Conn {
    peer: SocketAddr,
    builder: hyper_util::server::conn::auto::Builder<TokioExecutor>,
    state: Arc<State>,
    shutdown: CancellationToken,
    activity: Arc<Activity>,
}

impl Conn {
    /// Serve one connection until it ends, a limit closes it, or shutdown.
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            peer,
            builder,
            state,
            shutdown,
            activity,
        } = self;
        let svc = {
            let (state, shutdown, activity) = (state.clone(), shutdown.clone(), activity.clone());
            hyper::service::service_fn(move |req| {
                let (state, shutdown) = (state.clone(), shutdown.clone());
                let request = activity.request();
                async move {
                    let resp = route(&state, req, peer, &shutdown).await;
                    drop(request);
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
            start: Vec::with_capacity(3),
        });
        let conn = builder.serve_connection_with_upgrades(io, svc);
        tokio::pin!(conn);
        let cfg = &state.server;
        // Since when the connection has been told to close (graceful_shutdown).
        let mut closing: Option<u64> = None;
        loop {
            let deadline = activity.deadline(cfg, closing);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = shutdown.cancelled(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(activity.now());
                }
                _ = activity.changed.notified() => {}
                _ = sleep_until(deadline) => {
                    match activity.expired(cfg, closing) {
                        None => {}
                        Some(Expired::Settled) => return, // dropping `conn` closes the socket
                        Some(why) => {
                            tracing::debug!(peer = %peer, reason = why.as_str(), "closing connection");
                            conn.as_mut().graceful_shutdown();
                            closing = Some(activity.now());
                        }
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    /// A request's headers did not arrive within `server.header_read_timeout`.
    Headers,
    /// Nothing received and no request for `server.idle_timeout`.
    Idle,
    /// Told to close, nothing in progress: drop it.
    Settled,
}

impl Expired {
    fn as_str(self) -> &'static str {
        match self {
            Expired::Headers => "no complete request headers within server.header_read_timeout",
            Expired::Idle => "idle for server.idle_timeout",
            Expired::Settled => "closed",
        }
    }
}

/// What a connection is doing, for its deadlines: requests in progress
/// (between the end of their headers and their response), since when it is
/// idle, and when the first byte after that arrived. Times are milliseconds
/// since the connection opened.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    /// 0: nothing received since `idle_since`; else that time + 1.
    first_byte: AtomicU64,
    /// An HTTP/2 connection (it began with the preface). Its frames (PING,
    /// WINDOW_UPDATE…) arrive between requests, so bytes do not start a
    /// header deadline: only `idle_timeout` applies between requests.
    h2: AtomicBool,
    changed: Notify,
}

/// A request in progress; dropping it (the response is ready, or the
/// connection went away) makes the connection idle again.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            a.idle_since.store(a.now(), Ordering::SeqCst);
            a.first_byte.store(0, Ordering::SeqCst);
            a.changed.notify_one();
        }
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn received(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0
            && !self.h2.load(Ordering::SeqCst)
            && self
                .first_byte
                .compare_exchange(0, self.now() + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// When the connection is next due for a check (`None`: a request is in
    /// progress; its handler has its own deadline).
    fn deadline(&self, cfg: &ServerConfig, closing: Option<u64>) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let ms = |d: Duration| d.as_millis() as u64;
        let idle_since = self.idle_since.load(Ordering::SeqCst);
        let at = match (closing, self.first_byte.load(Ordering::SeqCst)) {
            (Some(c), _) => c.max(idle_since) + ms(CLOSE_SETTLE),
            (None, 0) => idle_since + ms(cfg.idle_timeout),
            (None, first) => first - 1 + ms(cfg.header_read_timeout),
        };
        Some(self.opened + Duration::from_millis(at))
    }

    fn expired(&self, cfg: &ServerConfig, closing: Option<u64>) -> Option<Expired> {
        let due = self.deadline(cfg, closing)?;
        if Instant::now() < due {
            return None;
        }
        Some(match (closing, self.first_byte.load(Ordering::SeqCst)) {
            (Some(_), _) => Expired::Settled,
            (None, 0) => Expired::Idle,
            (None, _) => Expired::Headers,
        })
    }
}

/// The connection's stream, telling [`Activity`] when bytes arrive and
/// whether the connection is HTTP/2 (it starts with `PRI`, the preface).
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The first bytes received, until there are 3 of them.
    start: Vec<u8>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if self.start.len() < 3 {
                let take = (3 - self.start.len()).min(buf.filled().len() - before);
                let new = buf.filled()[before..before + take].to_vec();
                self.start.extend_from_slice(&new);
                if self.start == b"PRI" {
                    self.activity.h2.store(true, Ordering::SeqCst);
                }
            }
            self.activity.received();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

async fn route(
    state: &State,
    req: Request<Incoming>,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Resp {
    let path = req.uri().path().to_string();
    if path != "/healthz" {
        if let Some(reason) = state.startup.pending() {
            return not_ready(state, &path, &reason);
        }
    }
    let h1 = req.version() < http::Version::HTTP_2;
    let mut resp = match (req.method().clone(), path.as_str()) {
        (Method::POST, "/v1/events") => state.ingest.handle(req, shutdown).await,
        // Segment-compatible ingest: /v1/track, /v1/identify, …, /v1/batch.
        (Method::POST, p) if segment::route(p).is_some() => {
            let r = segment::route(p).expect("checked by the guard");
            state.ingest.handle_segment(r, req, shutdown).await
        }
        (Method::GET, "/healthz") => json_response(StatusCode::OK, &json!({"status": "ok"})),
        (Method::GET, "/readyz") => {
            let (status, body) = crate::health::readyz(&state.log).await;
            let mut r = json_response(status, &body);
            if status != StatusCode::OK {
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    header::HeaderValue::from(state.server.retry_after_secs),
                );
            }
            r
        }
        (m, p) if p.starts_with("/admin/") => match state.admin.get() {
            Some(admin) => {
                // The admin API reads its filters from the query.
                let p = match req.uri().query() {
                    Some(q) => format!("{p}?{q}"),
                    None => p.to_string(),
                };
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
                let body = match read_body(
                    req.into_body(),
                    1 << 20,
                    state.server.body_read_timeout,
                    shutdown,
                    || Reject::new(413, None, "admin request body too large"),
                )
                .await
                {
                    Ok(b) => b,
                    Err(r) => return reject(&r, state.server.retry_after_secs),
                };
                let (status, v) = admin.handle(m, p, body).await;
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
    };
    if h1 && shutdown.is_cancelled() {
        // HTTP/2 says so with GOAWAY (graceful_shutdown).
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    resp
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
