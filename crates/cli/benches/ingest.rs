//! Ingest benchmark: `cargo bench -p switchyard --bench ingest`.
//!
//! Starts a private redis-server and the release `switchyard` binary, then
//! drives `POST /v1/events` with batches of 100 events of ~300 bytes from
//! several connections, and prints events/s and p50/p99 request latency. In
//! the same run it measures the ceiling, `redis-benchmark` pipelined XADD of
//! the same payload size on the same Redis, and prints the ratio.
//!
//! Environment: BENCH_SECS (default 10), BENCH_CONNS (default 8),
//! BENCH_BATCH (default 100).

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{env_or, free_port, start_redis, start_router};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --list probing
    }
    let secs = env_or("BENCH_SECS", 10);
    let conns = env_or("BENCH_CONNS", 8) as usize;
    let batch = env_or("BENCH_BATCH", 100) as usize;
    // BENCH_CLIENT_IDS=1: every event carries a client id, so every event goes
    // through the idempotency check (GET + SET per event) — the CDC path too.
    let client_ids = env_or("BENCH_CLIENT_IDS", 0) == 1;

    let dir = tempfile::tempdir().unwrap();
    let rport = free_port();
    let _redis = start_redis(rport, dir.path());

    // Ceiling: redis-benchmark XADD of a ~300 B event, pipelined.
    let payload = "x".repeat(300);
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &rport.to_string(),
            "-n",
            "300000",
            "-c",
            "4",
            "-P",
            "64",
            "-q",
            "XADD",
            "bench:ceiling",
            "*",
            "e",
        ])
        .arg(&payload)
        .output()
        .expect("redis-benchmark (apt-get install -y redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let ceiling: f64 = text
        .split_whitespace()
        .zip(text.split_whitespace().skip(1))
        .find(|(_, b)| *b == "requests")
        .and_then(|(a, _)| a.parse().ok())
        .unwrap_or_else(|| panic!("could not parse redis-benchmark output: {text}"));
    let _ = Command::new("redis-cli")
        .args(["-p", &rport.to_string(), "DEL", "bench:ceiling"])
        .output();

    let token = "bench-token-0123456789abcdef";
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_body = \"4MiB\"\nmax_batch = 1000\n\
             [redis]\nurl = \"redis://127.0.0.1:{rport}\"\n[log]\npartitions = 16\n\
             [sources.bench]\ntype = \"http\"\ntoken = \"{token}\"\n"
        ),
    )
    .unwrap();
    let (_router, addr) = start_router(&cfg);
    let url = format!("http://{addr}/v1/events");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (events, lat) = rt.block_on(async move {
        let client = reqwest::Client::builder().pool_max_idle_per_host(conns).build().unwrap();
        let stop = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for c in 0..conns {
            let client = client.clone();
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut sent = 0u64;
                let mut n = 0u64;
                while Instant::now() < stop {
                    // ~300 bytes per event once serialised.
                    let body: Vec<serde_json::Value> = (0..batch)
                        .map(|i| {
                            n += 1;
                            let id = if client_ids { serde_json::json!(format!("c{c}-{n}")) } else { serde_json::Value::Null };
                            serde_json::json!({
                                "id": id,
                                "topic": "customer.banner-a.profile_updated",
                                "account_id": format!("acct-{}", (n * 7919 + c as u64) % 100_000),
                                "op": "update",
                                "data": {"email": format!("user{n}@example.com"), "first_name": "Ada",
                                         "last_name": "Lovelace", "tier": "gold", "points": i * 10,
                                         "store": "store-0042", "note": "x".repeat(60)}
                            })
                        })
                        .collect();
                    let body = serde_json::to_vec(&body).unwrap();
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
                    let _ = r.bytes().await;
                    lat.push(t.elapsed());
                    sent += batch as u64;
                }
                (sent, lat)
            }));
        }
        let mut total = 0;
        let mut all = Vec::new();
        for t in tasks {
            let (s, l) = t.await.unwrap();
            total += s;
            all.extend(l);
        }
        (total, all)
    });
    let mut lat = lat;
    lat.sort();
    let rate = events as f64 / secs as f64;
    println!(
        "ingest: {events} events in {secs}s over {conns} connections, batches of {batch}, {} ids",
        if client_ids {
            "client-given (checked)"
        } else {
            "router-generated"
        }
    );
    println!(
        "ingest: {rate:.0} events/s, request latency p50 {:?} p99 {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!("ceiling: redis-benchmark XADD 300 B pipelined (-P 64, 4 conns): {ceiling:.0} ops/s");
    println!(
        "ratio: {:.2} of the raw pipelined XADD rate (goal >= 0.50)",
        rate / ceiling
    );
}
