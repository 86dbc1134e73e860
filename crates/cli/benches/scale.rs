//! Scale-out benchmark: `cargo bench -p switchyard --bench scale`.
//!
//! How fast 1, 2, … BENCH_INSTANCES (default 3) router instances on one
//! private redis-server drain a backlog for one consumer. For each count: a
//! router without consumers ingests BENCH_BACKLOG (default 100,000) events
//! of 20,000 accounts into a fresh namespace and stops; then the instances
//! start with one consumer (`start = "earliest"`, a local sink answering 200
//! at once) and share its 16 partitions by leases; the rate is events
//! received by the sink over the time from the first to the last receipt.
//! Every instance, Redis and the sink share this machine's cores, so on a
//! small machine this shows the coordination overhead more than a speed-up.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

mod common;
use common::{env_or, free_port, start_redis, start_router};

#[derive(Default)]
struct Sink {
    count: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let backlog = env_or("BENCH_BACKLOG", 100_000);
    let max_instances = env_or("BENCH_INSTANCES", 3);
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
                let _ = s.set_nodelay(true);
                let sink = sink.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |_req: hyper::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                let now = Instant::now();
                                sink.count.fetch_add(1, Ordering::Relaxed);
                                sink.first.lock().unwrap().get_or_insert(now);
                                *sink.last.lock().unwrap() = Some(now);
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                    Bytes::from_static(b"ok"),
                                )))
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
    let base = |ns: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_body = \"4MiB\"\nmax_batch = 1000\n\
             [redis]\nurl = \"redis://127.0.0.1:{rport}\"\nnamespace = \"{ns}\"\n[log]\npartitions = 16\n\
             [coordination]\nlease_timeout = \"3s\"\nrenew_interval = \"300ms\"\n\
             [sources.bench]\ntype = \"http\"\ntoken = \"{token}\"\n"
        )
    };
    println!(
        "scale: {backlog} events backlog, 1 consumer, 16 partitions, instances 1..={max_instances}"
    );
    for n in 1..=max_instances {
        let ns = format!("scale{n}");
        // Ingest the backlog with a router that has no consumer.
        let ingest_cfg = dir.path().join(format!("ingest{n}.toml"));
        std::fs::write(&ingest_cfg, base(&ns)).unwrap();
        let (ingest_router, addr) = start_router(&ingest_cfg);
        rt.block_on(async {
            let client = reqwest::Client::new();
            let mut sent = 0u64;
            while sent < backlog {
                let k = (backlog - sent).min(1000);
                let body: Vec<serde_json::Value> = (sent..sent + k)
                    .map(|i| {
                        serde_json::json!({"topic": "customer.banner-a.updated",
                            "account_id": format!("acct-{}", i % 20_000),
                            "data": {"email": format!("user{i}@example.com"), "tier": "gold", "points": i}})
                    })
                    .collect();
                let r = client
                    .post(format!("http://{addr}/v1/events"))
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                sent += k;
            }
        });
        drop(ingest_router);

        sink.count.store(0, Ordering::Relaxed);
        *sink.first.lock().unwrap() = None;
        *sink.last.lock().unwrap() = None;
        let cfg = base(&ns)
            + &format!(
                "[consumers.esp]\ntopics = [\"customer.*\"]\nstart = \"earliest\"\nconcurrency = 128\n\
                 [consumers.esp.endpoint]\nurl = \"http://{sink_addr}/esp\"\n"
            );
        let cfg_path = dir.path().join(format!("deliver{n}.toml"));
        std::fs::write(&cfg_path, cfg).unwrap();
        // Start the instances together (each a separate process).
        let routers: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|_| s.spawn(|| start_router(&cfg_path)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let deadline = Instant::now() + Duration::from_secs(600);
        while sink.count.load(Ordering::Relaxed) < backlog && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = sink.count.load(Ordering::Relaxed);
        let (first, last) = (
            sink.first.lock().unwrap().unwrap(),
            sink.last.lock().unwrap().unwrap(),
        );
        let secs = last.duration_since(first).as_secs_f64().max(1e-6);
        println!(
            "  {n} instance(s): {got}/{backlog} delivered in {secs:.1}s: {:.0} events/s",
            got as f64 / secs
        );
        drop(routers);
    }
}
