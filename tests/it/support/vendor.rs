//! A fake marketing API: records every request and answers as scripted
//! (status codes, 429 with Retry-After, slowness, connection refused). Like
//! real vendor APIs it honours `Idempotency-Key`: a repeated key gets the
//! first 2xx answer again and is not applied twice, and both the raw
//! requests and the applied effects are recorded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The query string (without `?`), if any.
    pub query: Option<String>,
    pub headers: HashMap<String, String>,
    /// Every header line as received (lowercase names, repeats kept).
    pub header_lines: Vec<(String, String)>,
    pub body: Value,
    /// The body exactly as received (signatures are over these bytes).
    pub raw_body: Bytes,
    pub status: u16,
    /// The event id (Idempotency-Key header).
    pub key: String,
    /// `account_id` from the body (canonical JSON), if present.
    pub account: String,
    /// The key had already been applied: answered 200 again, nothing applied.
    pub repeat: bool,
    /// The answer was delayed by the script (`Reply::Slow`): the client may
    /// have given up before it arrived, even if it was applied.
    pub delayed: bool,
}

#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    RetryAfter(u64),
    /// Answer `status` after a delay.
    Slow(Duration, u16),
    /// Answer `status` with the request body quoted back in the error, as
    /// many APIs do (`{"error": "…", "request": <body>}`).
    Echo(u16),
    /// Answer `status` with this body.
    Body(u16, String),
}

type Script = Box<dyn FnMut(&Received) -> Reply + Send>;

struct Inner {
    requests: Vec<Received>,
    /// Idempotency-Key → applied effect (body) for 2xx answers.
    applied: HashMap<String, Value>,
    applied_order: Vec<Received>,
    script: Script,
}

#[derive(Clone)]
pub struct Vendor {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    up: Arc<Mutex<Option<CancellationToken>>>,
}

impl Vendor {
    pub async fn start() -> Vendor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let v = Vendor {
            addr,
            inner: Arc::new(Mutex::new(Inner {
                requests: Vec::new(),
                applied: HashMap::new(),
                applied_order: Vec::new(),
                script: Box::new(|_| Reply::Status(200)),
            })),
            up: Arc::new(Mutex::new(None)),
        };
        v.serve(listener);
        v
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Decide each answer with `f` (called with the request as received).
    pub fn script(&self, f: impl FnMut(&Received) -> Reply + Send + 'static) {
        self.inner.lock().unwrap().script = Box::new(f);
    }

    /// Stop listening and cut open connections: the consumer sees connection errors.
    pub fn down(&self) {
        if let Some(t) = self.up.lock().unwrap().take() {
            t.cancel();
        }
    }

    /// Listen again on the same port.
    pub async fn up(&self) {
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let token = CancellationToken::new();
        *self.up.lock().unwrap() = Some(token.clone());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = token.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let inner = inner.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(inner, req).await) }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Requests that took effect (first 2xx per Idempotency-Key), in order.
    pub fn applied(&self) -> Vec<Received> {
        self.inner.lock().unwrap().applied_order.clone()
    }

    /// Applied event ids per account, in the order they took effect.
    pub fn applied_by_account(&self) -> HashMap<String, Vec<String>> {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for r in self.applied() {
            m.entry(r.account.clone()).or_default().push(r.key.clone());
        }
        m
    }

    /// How many requests carried an Idempotency-Key that had already been applied.
    pub fn redundant_requests(&self) -> usize {
        let reqs = self.requests();
        let mut seen = std::collections::HashSet::new();
        let mut n = 0;
        for r in reqs
            .iter()
            .filter(|r| (200..300).contains(&r.status) || r.status == 0)
        {
            if !seen.insert(r.key.clone()) {
                n += 1;
            }
        }
        n
    }
}

async fn handle(inner: Arc<Mutex<Inner>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let header_lines: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let headers: HashMap<String, String> = header_lines.iter().cloned().collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json: Value = serde_json::from_slice(&body)
        .unwrap_or(Value::String(String::from_utf8_lossy(&body).into()));
    let key = headers.get("idempotency-key").cloned().unwrap_or_default();
    let account = json
        .get("account_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut rec = Received {
        at: Instant::now(),
        method,
        path,
        query,
        headers,
        header_lines,
        body: json,
        raw_body: body.clone(),
        status: 0,
        key,
        account,
        repeat: false,
        delayed: false,
    };

    let reply = {
        let mut g = inner.lock().unwrap();
        if !rec.key.is_empty() && g.applied.contains_key(&rec.key) {
            // A repeat of an applied request: answer as before, apply nothing.
            rec.status = 200;
            rec.repeat = true;
            g.requests.push(rec);
            return Response::builder()
                .status(200)
                .body(Full::new(Bytes::from_static(b"{\"repeat\":true}")))
                .unwrap();
        }
        (g.script)(&rec)
    };
    let mut answer = None;
    let (status, retry_after) = match reply {
        Reply::Status(s) => (s, None),
        Reply::RetryAfter(secs) => (429, Some(secs)),
        Reply::Slow(d, s) => {
            rec.delayed = true;
            tokio::time::sleep(d).await;
            (s, None)
        }
        Reply::Body(s, body) => {
            answer = Some(body);
            (s, None)
        }
        Reply::Echo(s) => {
            answer = Some(
                serde_json::json!({"error": "invalid profile", "request": rec.body}).to_string(),
            );
            (s, None)
        }
    };
    rec.status = status;
    rec.at = Instant::now();
    {
        let mut g = inner.lock().unwrap();
        if (200..300).contains(&status) && !g.applied.contains_key(&rec.key) {
            g.applied.insert(rec.key.clone(), rec.body.clone());
            g.applied_order.push(rec.clone());
        }
        g.requests.push(rec);
    }
    let mut b = Response::builder().status(status);
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    let answer = answer.unwrap_or_else(|| format!("{{\"status\":{status}}}"));
    b.body(Full::new(Bytes::from(answer))).unwrap()
}
