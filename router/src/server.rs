//! The HTTP listener: ingest (`POST /v1/events`), health, readiness and the
//! admin endpoints. Routing is a match on (method, path); each handler lives
//! with its subject (ingest in `source/http.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use switchyard_store::log::{Log, LogError};
use crate::source::http::{
    self as http_source, split_body, to_event, Auth, BodyFormat, Encoding, Reject,
};

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
    if r.status == 408 {
        // The rest of the body may still come: don't read it as a request.
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    resp
}

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

/// Read a request body of at most `max` bytes within
/// `server.body_read_timeout`. 413 above `max` (`too_large`), 408 when it
/// does not arrive in time, 503 when shutdown begins while it is arriving
/// (nothing was written), 400 when the client breaks off.
async fn read_body(
    body: Incoming,
    max: u64,
    cfg: &ServerConfig,
    shutdown: &CancellationToken,
    too_large: impl FnOnce() -> Reject,
) -> Result<Bytes, Reject> {
    let read = Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).collect();
    let r = tokio::select! {
        r = tokio::time::timeout(cfg.body_read_timeout, read) => r,
        _ = shutdown.cancelled() => {
            return Err(Reject::new(
                503,
                None,
                "the router is shutting down and the body had not arrived yet; nothing was written, retry",
            ))
        }
    };
    match r {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Reject::new(
            400,
            None,
            format!("could not read the body: {e}"),
        )),
        Err(_) => Err(Reject::new(
            408,
            None,
            format!(
                "the body did not arrive within {} (server.body_read_timeout)",
                humantime::format_duration(cfg.body_read_timeout)
            ),
        )),
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
        (Method::POST, "/v1/events") => ingest(state, req, shutdown).await,
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
                let body =
                    match read_body(req.into_body(), 1 << 20, &state.server, shutdown, || {
                        Reject::new(413, None, "admin request body too large")
                    })
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

async fn ingest(state: &State, req: Request<Incoming>, shutdown: &CancellationToken) -> Resp {
    let retry_after = state.server.retry_after_secs;
    let mut source = None;
    let span = tracing::debug_span!(
        "ingest",
        source = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    let result =
        tracing::Instrument::instrument(ingest_inner(state, req, shutdown, &mut source), span)
            .await;
    match result {
        Ok(v) => {
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            crate::metrics::ingest_request(source, 202, n("accepted"), n("duplicates"));
            json_response(StatusCode::ACCEPTED, &v)
        }
        Err(r) => {
            crate::metrics::ingest_request(source, r.status, 0, 0);
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

/// The outcome of an append that failed after the request may have reached
/// Redis: say so, and how to retry safely.
const UNKNOWN_OUTCOME: &str = "the outcome is unknown: some or all events may have been written. \
     Retry with the same ids, or with the same Idempotency-Key header: events already \
     written are then reported as duplicates, not written again";

async fn ingest_inner<'a>(
    state: &'a State,
    req: Request<Incoming>,
    shutdown: &CancellationToken,
    source_name: &mut Option<&'a str>,
) -> Result<Value, Reject> {
    let headers = req.headers();
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let source = state.auth.authenticate(auth)?;
    *source_name = Some(source.name());
    let format = BodyFormat::from_content_type(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    )?;
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let encoding = Encoding::from_header(&codings.join(","))?;
    let idempotency_key =
        http_source::idempotency_key(headers.get("idempotency-key").map(|v| v.as_bytes()))?;
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
    // A valid `traceparent` is kept; without one the trace starts here.
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| switchyard_core::event::valid_traceparent(t))
        .map(str::to_string)
        .or_else(|| Some(switchyard_core::tracectx::new_traceparent()));
    let span = tracing::Span::current();
    span.record("source", source.name());
    span.record("trace_id", switchyard_core::tracectx::trace_id(trace.as_deref()));
    let body = read_body(req.into_body(), max, &state.server, shutdown, too_large).await?;
    let body = http_source::decode_body(encoding, body, max)?;
    let items = split_body(format, &body, state.server.max_batch)?;
    let now = Utc::now();
    let mut events = Vec::with_capacity(items.len());
    // Ids the client gave may repeat (retries), and so may ids derived from
    // an Idempotency-Key: those are checked. Ids generated here cannot.
    let mut checked = Vec::with_capacity(items.len());
    for (i, (label, v)) in items.into_iter().enumerate() {
        let client_id = v.get("id").is_some_and(|id| !id.is_null());
        let mut ev = to_event(&label, v, source.name(), trace.as_deref(), now)?;
        if let (false, Some(key)) = (client_id, &idempotency_key) {
            ev.id = http_source::idempotent_id(source.name(), key, i);
        }
        checked.push(client_id || idempotency_key.is_some());
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
        .append_checked(&events, |i| checked[i])
        .await
        .map_err(|e| match e {
            // Encoding happens before anything is sent.
            LogError::Codec(_) => Reject::new(500, None, format!("nothing was written: {e}")),
            // The pipeline may have reached Redis, and Redis may run it
            // later (a paused Redis resumes): the outcome is unknown.
            LogError::Unavailable(_) | LogError::Tls(_) => Reject::new(
                503,
                None,
                format!("the log did not answer ({e}); {UNKNOWN_OUTCOME}"),
            ),
            other => Reject::new(500, None, format!("{other}; {UNKNOWN_OUTCOME}")),
        })?;
    let mut duplicates = 0usize;
    let out: Vec<Value> = events
        .iter()
        .zip(&appended)
        .map(|(ev, a)| match &a.stream_id {
            Some(sid) => {
                tracing::debug_span!("event", id = %ev.id, trace_id = switchyard_core::tracectx::trace_id(ev.trace.as_deref()))
                    .in_scope(|| tracing::debug!(partition = a.partition, stream_id = %sid, "appended"));
                json!({"id": ev.id, "partition": a.partition, "stream_id": sid})
            }
            None => {
                duplicates += 1;
                json!({"id": ev.id, "partition": a.partition, "duplicate": true, "stream_id": a.original})
            }
        })
        .collect();
    Ok(json!({"accepted": events.len() - duplicates, "duplicates": duplicates, "events": out}))
}
