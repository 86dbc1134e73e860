//! Batching benchmark: `cargo bench -p switchyard --bench batching`.
//!
//! The same BENCH_EVENTS (default 3000) customer events of as many accounts
//! go to a fake Braze `/users/track` whose every request costs BENCH_COST_MS
//! (default 20 ms, a realistic vendor round trip), through the real
//! `braze` module twice: one request per event, then batched
//! (`[consumers.<name>.batch]`, up to 75 events or 100 ms). Both consumers
//! have `concurrency = 16`. Prints events/s (from the first request the
//! vendor receives to the last event: start-up excluded), requests and the
//! speed-up.
//! Needs the release transforms (`bash transforms/build.sh`).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

mod common;
use common::{env_or, free_port, start_redis, start_router};

#[derive(Default)]
struct Sink {
    events: AtomicU64,
    requests: AtomicU64,
    /// When the first request of the current run arrived (start-up excluded).
    first: std::sync::Mutex<Option<Instant>>,
}

fn braze_wasm() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../transforms/target/wasm32-wasip2/release/braze.wasm");
    assert!(
        p.is_file(),
        "{} missing: run transforms/build.sh",
        p.display()
    );
    p
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env_or("BENCH_EVENTS", 3000);
    let cost = Duration::from_millis(env_or("BENCH_COST_MS", 20));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let _redis = start_redis(rport, dir.path());

    let sink = Arc::new(Sink::default());
    let sink_addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sink = sink.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let sink = sink.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                sink.first.lock().unwrap().get_or_insert_with(Instant::now);
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let v: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                tokio::time::sleep(cost).await;
                                let k = v["attributes"].as_array().map_or(0, |a| a.len());
                                sink.events.fetch_add(k as u64, Ordering::Relaxed);
                                sink.requests.fetch_add(1, Ordering::Relaxed);
                                Ok::<_, Infallible>(
                                    hyper::Response::builder()
                                        .status(201)
                                        .body(Full::new(Bytes::from_static(
                                            b"{\"message\":\"success\"}",
                                        )))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = b.serve_connection(TokioIo::new(s), svc).await;
                });
            }
        });
        addr
    });

    let token = "bench-token-0123456789abcdef";
    let base = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body = \"4MiB\"\nmax_batch = 1000\n\
         [redis]\nurl = \"redis://127.0.0.1:{rport}\"\n[log]\npartitions = 8\n\
         [sources.bench]\ntype = \"http\"\ntoken = \"{token}\"\n"
    );
    let consumer = |name: &str, batch: bool| {
        let mut c = format!(
            "[consumers.{name}]\ntopics = [\"customer.*\"]\nstart = \"earliest\"\nconcurrency = 16\n\
             [consumers.{name}.endpoint]\nurl = \"http://{sink_addr}/{name}\"\n\
             [[consumers.{name}.modules]]\npath = \"{}\"\n",
            braze_wasm().display()
        );
        if batch {
            c += &format!("[consumers.{name}.batch]\nmax_events = 75\nmax_wait = \"100ms\"\n");
        }
        c
    };

    // Ingest once (a router without consumers), then each consumer alone.
    let cfg0 = dir.path().join("ingest.toml");
    std::fs::write(&cfg0, &base).unwrap();
    let (router, addr) = start_router(&cfg0);
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut i = 0u64;
        while i < n {
            let body: Vec<serde_json::Value> = (i..(i + 500).min(n))
                .map(|k| serde_json::json!({"topic": "customer.banner-a.created", "account_id": format!("acct-{k}"),
                    "data": {"email": format!("user{k}@example.com"), "tier": "gold"}}))
                .collect();
            i += body.len() as u64;
            let r = client
                .post(format!("http://{addr}/v1/events"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    });
    drop(router);

    let mut rates = Vec::new();
    for (name, batch) in [("single", false), ("batched", true)] {
        sink.events.store(0, Ordering::Relaxed);
        sink.requests.store(0, Ordering::Relaxed);
        *sink.first.lock().unwrap() = None;
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, base.clone() + &consumer(name, batch)).unwrap();
        let started = Instant::now();
        let (router, _) = start_router(&cfg);
        let deadline = Instant::now() + Duration::from_secs(600);
        while sink.events.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let secs = started.elapsed().as_secs_f64();
        // From the first request's arrival: the router's start-up (module
        // compilation) is not delivery.
        let busy = sink
            .first
            .lock()
            .unwrap()
            .map_or(secs, |f| f.elapsed().as_secs_f64());
        drop(router);
        let got = sink.events.load(Ordering::Relaxed);
        let reqs = sink.requests.load(Ordering::Relaxed);
        let rate = got as f64 / busy;
        println!(
            "batching {name:>8}: {got}/{n} events in {busy:.2}s from the first request ({secs:.2}s incl. start-up) = {rate:.0} events/s, {reqs} requests at {} ms each",
            cost.as_millis()
        );
        rates.push(rate);
    }
    println!("batching speed-up: {:.1}x", rates[1] / rates[0]);
}
