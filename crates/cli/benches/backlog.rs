//! Memory under a backlog: a consumer's endpoint is down while BENCH_EVENTS
//! (default 1,000,000) events accumulate; the router's RSS is sampled the
//! whole time, then the endpoint comes back and the catch-up is timed.
//!
//! `cargo bench -p switchyard --bench backlog` (BENCH_EVENTS, BENCH_ACCOUNTS).
//! Prints RSS (router process, from /proc) before, while the backlog
//! accumulates, and while it drains, plus Redis's own memory.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_or, free_port, start_redis, start_router};
use serde_json::json;

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn redis_used_mib(port: u16) -> f64 {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1048576.0
}

/// Sample the router's RSS every 250 ms until `done()`; returns (min, max) KiB.
fn sample_until(pid: u32, mut done: impl FnMut() -> bool) -> (u64, u64) {
    let (mut lo, mut hi) = (u64::MAX, 0);
    loop {
        let r = rss_kib(pid);
        lo = lo.min(r);
        hi = hi.max(r);
        if done() {
            return (lo, hi);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events = env_or("BENCH_EVENTS", 1_000_000);
    let accounts = env_or("BENCH_ACCOUNTS", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let _redis = start_redis(rport, dir.path());
    let sink_port = free_port(); // nothing listens here until the catch-up
    let token = "bench-token-0123456789";
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_batch = 1000
max_body = "4MiB"
[redis]
url = "redis://127.0.0.1:{rport}"
[log]
partitions = 16
[sources.web]
type = "http"
token = "{token}"
[consumers.crm]
topics = ["*"]
concurrency = 64
timeout = "2s"
[consumers.crm.endpoint]
url = "http://127.0.0.1:{sink_port}/crm"
[consumers.crm.retry]
initial = "200ms"
max_delay = "2s"
max_attempts = 1000000
max_age = "24h"
"#
        ),
    )
    .unwrap();
    let (router, addr) = start_router(&cfg);
    let pid = router.0.id();
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = rss_kib(pid);

    // Accumulate: 8 clients post 1000-event batches as fast as the router takes them.
    let posted = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let ingest = {
        let posted = posted.clone();
        let addr = addr.clone();
        rt.spawn(async move {
            let client = reqwest::Client::new();
            let per = events / 8;
            let mut tasks = Vec::new();
            for w in 0..8u64 {
                let client = client.clone();
                let posted = posted.clone();
                let addr = addr.clone();
                tasks.push(tokio::spawn(async move {
                    let mut i = 0;
                    while i < per {
                        let n = (per - i).min(1000);
                        let batch: Vec<_> = (i..i + n)
                            .map(|k| {
                                let g = w * per + k;
                                json!({"topic": "customer.web.updated",
                                       "account_id": format!("acct-{}", g % accounts),
                                       "data": {"n": g, "email": "someone@example.com", "pad": "x".repeat(120)}})
                            })
                            .collect();
                        let r = client
                            .post(format!("http://{addr}/v1/events"))
                            .bearer_auth(token)
                            .json(&batch)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
                        posted.fetch_add(n, Ordering::Relaxed);
                        i += n;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    // RSS as the backlog grows: flat means it does not grow with the backlog.
    let mut next = events / 10;
    let mut series = Vec::new();
    let (_, backlog_peak) = sample_until(pid, || {
        let n = posted.load(Ordering::Relaxed);
        if n >= next {
            series.push(format!("{}k:{:.0}", n / 1000, rss_kib(pid) as f64 / 1024.0));
            next += events / 10;
        }
        ingest.is_finished()
    });
    println!(
        "router RSS (MiB) by events accumulated: {}",
        series.join(" ")
    );
    let ingest_secs = t0.elapsed().as_secs_f64();
    // Keep the endpoint down a while longer: the router works through the backlog
    // (setting it aside in Redis) while every send fails.
    let settle = Instant::now();
    let (_, settle_peak) = sample_until(pid, || settle.elapsed() > Duration::from_secs(20));
    let rss_backlog_end = rss_kib(pid);
    let redis_backlog = redis_used_mib(rport);
    println!(
        "backlog: {events} events for {accounts} accounts posted in {ingest_secs:.1}s ({:.0}/s) with the endpoint down",
        events as f64 / ingest_secs
    );

    // The endpoint comes back: count requests until every event arrived.
    let delivered = Arc::new(AtomicU64::new(0));
    let d = delivered.clone();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", sink_port))
            .await
            .unwrap();
        loop {
            let (s, _) = l.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            let d = d.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let d = d.clone();
                        async move {
                            use http_body_util::BodyExt;
                            let _ = req.into_body().collect().await;
                            d.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                            ))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            });
        }
    });
    let t1 = Instant::now();
    let total = posted.load(Ordering::Relaxed);
    let mut series = Vec::new();
    let mut next = total / 10;
    let (_, catchup_peak) = sample_until(pid, || {
        let n = delivered.load(Ordering::Relaxed);
        if n >= next {
            series.push(format!("{}k:{:.0}", n / 1000, rss_kib(pid) as f64 / 1024.0));
            next += total / 10;
        }
        n >= total || t1.elapsed() > Duration::from_secs(1800)
    });
    println!("router RSS (MiB) by events delivered: {}", series.join(" "));
    let catchup_secs = t1.elapsed().as_secs_f64();
    let got = delivered.load(Ordering::Relaxed);
    println!(
        "router RSS: {:.1} MiB at start; peak {:.1} MiB while {total} events accumulated, {:.1} MiB peak over the next 20 s, {:.1} MiB at the end of it (Redis used {:.0} MiB)",
        rss_start as f64 / 1024.0,
        backlog_peak as f64 / 1024.0,
        settle_peak as f64 / 1024.0,
        rss_backlog_end as f64 / 1024.0,
        redis_backlog
    );
    println!(
        "catch-up: {got}/{total} delivered in {catchup_secs:.1}s ({:.0}/s), router RSS peak {:.1} MiB, {:.1} MiB after",
        got as f64 / catchup_secs,
        catchup_peak as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0
    );
    assert!(got >= total, "not every event was delivered within 30 min");
}
