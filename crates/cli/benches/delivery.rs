//! Delivery benchmark: `cargo bench -p switchyard --bench delivery`.
//!
//! A private redis-server, the release `switchyard` binary with 3 consumers,
//! and a local HTTP sink in this process. Phase 1 ingests at a steady rate
//! (BENCH_RATE, default 5000 events/s) for BENCH_SECS (default 10) and prints
//! the p50/p99 end-to-end latency per consumer: from the event's source time
//! (`occurred_at`, set by the load generator just before it posts) to its
//! receipt at the sink. Phase 2 ingests as fast as it can for BENCH_SECS and
//! prints the sustained delivery rate (events/s per consumer).
//!
//! The ceiling, measured in the same run before the router starts: a raw
//! HTTP client (reqwest, like the router's sender, on a runtime of 2 worker
//! threads like the router's) POSTs an event-sized JSON body to the same
//! sink with the consumers' total concurrency (3 × 128) for BENCH_RAW_SECS
//! (default 5). Phase 2 prints delivered requests/s as a ratio of it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Default)]
struct Sink {
    /// (consumer index, latency µs) of each receipt while recording.
    lat: Mutex<Vec<(usize, u64)>>,
    /// Receipts per consumer; the last one counts the raw client's requests.
    count: [AtomicU64; 4],
}

mod common;
use common::{env_or, free_port, start_redis, start_router};

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

const CONSUMERS: [&str; 3] = ["esp", "crm", "sms"];

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_or("BENCH_SECS", 10);
    let rate = env_or("BENCH_RATE", 5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let _redis = start_redis(rport, dir.path());

    // The sink: one HTTP server, a path per consumer.
    let sink = Arc::new(Sink::default());
    let recording = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sink_addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let sink = sink.clone();
        let recording = recording.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let _ = s.set_nodelay(true);
                let sink = sink.clone();
                let recording = recording.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            let recording = recording.clone();
                            async move {
                                let c = match req.uri().path() {
                                    "/esp" => 0,
                                    "/crm" => 1,
                                    "/sms" => 2,
                                    _ => 3,
                                };
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let now = chrono::Utc::now();
                                sink.count[c].fetch_add(1, Ordering::Relaxed);
                                if c < 3 && recording.load(Ordering::Relaxed) {
                                    let v: serde_json::Value =
                                        serde_json::from_slice(&body).unwrap();
                                    let t = chrono::DateTime::parse_from_rfc3339(
                                        v["occurred_at"].as_str().unwrap(),
                                    )
                                    .unwrap();
                                    let us = (now - t.with_timezone(&chrono::Utc))
                                        .num_microseconds()
                                        .unwrap()
                                        .max(0) as u64;
                                    sink.lat.lock().unwrap().push((c, us));
                                }
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

    // The ceiling: a raw HTTP client against the same sink, nothing else running.
    let raw_secs = env_or("BENCH_RAW_SECS", 5);
    let raw_rps = raw_client(&sink, sink_addr, raw_secs);
    println!(
        "raw HTTP client (reqwest, 2 worker threads, 384 in flight) -> the same sink: {raw_rps:.0} requests/s for {raw_secs}s"
    );

    let token = "bench-token-0123456789abcdef";
    let mut cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_body = \"4MiB\"\nmax_batch = 1000\n\
         [redis]\nurl = \"redis://127.0.0.1:{rport}\"\n[log]\npartitions = 16\n\
         [sources.bench]\ntype = \"http\"\ntoken = \"{token}\"\n"
    );
    for c in CONSUMERS {
        cfg += &format!(
            "[consumers.{c}]\ntopics = [\"customer.*\"]\nstart = \"latest\"\nconcurrency = 128\n\
             [consumers.{c}.endpoint]\nurl = \"http://{sink_addr}/{c}\"\n"
        );
    }
    let cfg_path = dir.path().join("bench.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let (router, addr) = start_router(&cfg_path);
    let url = format!("http://{addr}/v1/events");
    std::thread::sleep(Duration::from_millis(500)); // consumer groups created

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(16)
        .build()
        .unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    let post = {
        let client = client.clone();
        let url = url.clone();
        let counter = counter.clone();
        move |n: usize| {
            let client = client.clone();
            let url = url.clone();
            let counter = counter.clone();
            async move {
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let body: Vec<serde_json::Value> = (0..n)
                    .map(|_| {
                        let i = counter.fetch_add(1, Ordering::Relaxed);
                        serde_json::json!({"topic": "customer.banner-a.updated", "account_id": format!("acct-{}", i % 20_000),
                            "occurred_at": now, "data": {"email": format!("user{i}@example.com"), "tier": "gold", "points": i}})
                    })
                    .collect();
                let r = client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        }
    };

    // Phase 1: steady rate, batches every 10 ms.
    let per_tick = (rate / 100).max(1) as usize;
    recording.store(true, Ordering::Relaxed);
    let sent = rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        let mut sent = 0u64;
        while Instant::now() < stop {
            tick.tick().await;
            tasks.push(tokio::spawn(post.clone()(per_tick)));
            sent += per_tick as u64;
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Let deliveries finish.
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink
            .count
            .iter()
            .take(3)
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap()
            < sent
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    });
    recording.store(false, Ordering::Relaxed);
    let lat = std::mem::take(&mut *sink.lat.lock().unwrap());
    println!("delivery phase 1: {sent} events ingested at {rate}/s for {secs}s, 3 consumers");
    for (i, c) in CONSUMERS.iter().enumerate() {
        let mut v: Vec<u64> = lat
            .iter()
            .filter(|(k, _)| *k == i)
            .map(|(_, us)| *us)
            .collect();
        let n = v.len();
        println!(
            "  {c}: delivered {n}/{sent}, end-to-end latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(&mut v, 0.5),
            pct(&mut v, 0.99),
            pct(&mut v, 1.0)
        );
    }
    let mut all: Vec<u64> = lat.iter().map(|(_, us)| *us).collect();
    println!(
        "  all: p50 {:.1} ms, p99 {:.1} ms (goal: p99 < 25 ms at 5000/s)",
        pct(&mut all, 0.5),
        pct(&mut all, 0.99)
    );

    // Phase 2: ingest flat out; measure delivered events/s per consumer.
    let base: Vec<u64> = sink
        .count
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let t0 = Instant::now();
    let ingested = rt.block_on(async {
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let post = post.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop {
                    post(200).await;
                    n += 200;
                }
                n
            }));
        }
        let mut n = 0;
        for t in tasks {
            n += t.await.unwrap();
        }
        n
    });
    let ingest_secs = t0.elapsed().as_secs_f64();
    // Wait for the consumers to drain what was ingested.
    let target: Vec<u64> = base.iter().take(3).map(|b| b + ingested).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (0..3).any(|i| sink.count[i].load(Ordering::Relaxed) < target[i])
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = t0.elapsed().as_secs_f64();
    let delivered: Vec<u64> = (0..3)
        .map(|i| sink.count[i].load(Ordering::Relaxed) - base[i])
        .collect();
    let rps = delivered.iter().sum::<u64>() as f64 / total;
    println!(
        "delivery phase 2: {ingested} events ingested flat out in {ingest_secs:.1}s ({:.0}/s); all delivered to 3 consumers after {total:.1}s",
        ingested as f64 / ingest_secs
    );
    println!(
        "  sustained delivery: {:.0} events/s per consumer ({:.0} requests/s in total); delivered {:?}",
        ingested as f64 / total,
        rps,
        delivered
    );
    println!(
        "  ratio to the raw HTTP client: {:.2} ({rps:.0} / {raw_rps:.0} requests/s; goal >= 0.5)",
        rps / raw_rps
    );
    drop(router);
}

/// Requests/s a raw reqwest client gets from the sink: 384 requests in flight
/// (the 3 consumers' `concurrency`), each an event-sized JSON body, on its own
/// runtime of 2 worker threads (as many as the router's).
fn raw_client(sink: &Sink, addr: std::net::SocketAddr, secs: u64) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before = sink.count[3].load(Ordering::Relaxed);
    let body = serde_json::to_vec(&serde_json::json!({
        "id": "0195b4a2-7f3e-7c1a-9d2e-5b6c7d8e9f00", "op": "event", "topic": "customer.banner-a.updated",
        "account_id": "acct-1234", "occurred_at": "2026-12-01T06:00:00.000000Z",
        "ingested_at": "2026-12-01T06:00:00.000100Z", "source": "bench",
        "data": {"email": "user1234@example.com", "tier": "gold", "points": 1234}
    }))
    .unwrap();
    let t0 = Instant::now();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(384)
            .build()
            .unwrap();
        let url = format!("http://{addr}/raw");
        let stop = Instant::now() + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..384)
            .map(|i| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    while Instant::now() < stop {
                        let r = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("idempotency-key", format!("raw-{i}"))
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        assert!(r.status().is_success());
                        let _ = r.bytes().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    (sink.count[3].load(Ordering::Relaxed) - before) as f64 / t0.elapsed().as_secs_f64()
}
