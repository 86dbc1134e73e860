//! CDC benchmark: `cargo bench -p switchyard --bench cdc`.
//!
//! Private Postgres 15 (logical, synchronous_commit=off) + private Redis +
//! the release `switchyard` binary with one Postgres source.
//!
//! 1. live: pgbench inserts at BENCH_RATE rows/s (default 2000) for
//!    BENCH_SECS (default 10) with synchronous_commit=on (with it off, the
//!    walsender only sees a commit after the WAL writer flushes it, up to
//!    wal_writer_delay = 200 ms later); commit → in-Redis latency p50/p99 from each
//!    event's commit timestamp (`occurred_at`) and its stream entry id (the
//!    time Redis appended it; same machine, same clock).
//! 2. sustained: pgbench as fast as it can (8 clients) for BENCH_SECS; the
//!    source's rate and how far behind it ends.
//! 3. catch-up: with the router stopped, a backlog of BENCH_BACKLOG rows
//!    (default 300000) in transactions of BENCH_TXN_ROWS (default 10) is
//!    decoded by `pg_recvlogical` (pgoutput, to /dev/null) — the ceiling —
//!    and then by the router into Redis. Prints both rates and the ratio
//!    (goal >= 0.50), plus p99 at 2k/s (goal < 50 ms).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// The integration-test harness, shared (its modules call `super::free_port`
// and name `super::tls::Pki` for their TLS-only variants).
#[path = "../../../tests/it/support/postgres.rs"]
mod pgserver;
#[path = "../../../tests/it/support/redis.rs"]
mod redisserver;
#[path = "../../../tests/it/support/tls.rs"]
mod tls;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

use pgserver::{PgServer, PG_BIN};
use redisserver::RedisServer;

const PARTITIONS: u32 = 16;

fn env_or(k: &str, d: u64) -> u64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

struct Router {
    child: Child,
    streaming_at: Arc<Mutex<Option<Instant>>>,
}

impl Router {
    fn start(cfg: &std::path::Path) -> Router {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(cfg)
            .env("SWITCHYARD_LOG_FORMAT", "json")
            .env("SWITCHYARD_LOG", "warn,switchyard=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting switchyard");
        let stderr = child.stderr.take().unwrap();
        let streaming_at = Arc::new(Mutex::new(None));
        let s = streaming_at.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v["message"] == "streaming changes" {
                    *s.lock().unwrap() = Some(Instant::now());
                }
                if v["level"] == "WARN"
                    || v["level"] == "ERROR"
                    || v["message"] == "postgres source stopped"
                {
                    eprintln!("router: {line}");
                }
            }
        });
        Router {
            child,
            streaming_at,
        }
    }

    fn wait_streaming(&self) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(t) = *self.streaming_at.lock().unwrap() {
                return t;
            }
            assert!(Instant::now() < deadline, "router never started streaming");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn peak_rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0)
            / 1024
    }

    fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn xlen_total(c: &mut redis::Connection) -> u64 {
    let mut pipe = redis::pipe();
    for p in 0..PARTITIONS {
        pipe.cmd("XLEN").arg(format!("sy:log:{{p{p}}}"));
    }
    let v: Vec<u64> = pipe.query(c).unwrap();
    v.iter().sum()
}

fn wait_total(c: &mut redis::Connection, want: u64, timeout: Duration) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if xlen_total(c) >= want {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {want} events (have {})",
            xlen_total(c)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn pgbench(pg: &PgServer, script: &std::path::Path, args: &[&str], pgoptions: &str) -> String {
    let out = Command::new(format!("{PG_BIN}/pgbench"))
        .env("PGOPTIONS", pgoptions)
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &pg.port.to_string(),
            "-f",
        ])
        .arg(script)
        .args(args)
        .arg("postgres")
        .output()
        .expect("pgbench");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn count(pg: &PgServer) -> u64 {
    pg.sql("SELECT count(*) FROM bench_items").parse().unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Commit → appended latency (ms) of the events with stream ids after `after_ms`.
fn latencies(c: &mut redis::Connection, after_ms: u64) -> Vec<f64> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("sy:log:{{p{p}}}"))
            .arg(format!("{after_ms}-0"))
            .arg("+")
            .query(c)
            .unwrap();
        for e in &reply.ids {
            let ms: f64 = e.id.split('-').next().unwrap().parse().unwrap();
            let ev = switchyard_store::log::decode_entry(e).unwrap();
            let committed = ev.occurred_at.timestamp_micros() as f64 / 1000.0;
            out.push(ms - committed);
        }
    }
    out.sort_by(|a, b| a.partial_cmp(b).unwrap());
    out
}

/// CPU seconds (user + system) used so far by `pid` (and its children, with `children`).
fn cpu_secs(pid: u32, children: bool) -> f64 {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the `(comm)`: state ppid pgrp ... utime(14) stime(15).
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
        if p == pid || (children && ppid == pid) {
            ticks += f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ticks as f64 / 100.0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_or("BENCH_SECS", 10);
    let rate = env_or("BENCH_RATE", 2000);
    let backlog = env_or("BENCH_BACKLOG", 300_000);
    let txn_rows = env_or("BENCH_TXN_ROWS", 10).max(1);

    let redis = RedisServer::start();
    let pg = PgServer::start_with(&[
        "synchronous_commit=off",
        "shared_buffers=256MB",
        "max_wal_size=4GB",
    ]);
    pg.sql(
        "CREATE TABLE bench_items (id bigserial PRIMARY KEY, account_id text NOT NULL, n int NOT NULL, \
         payload text NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("insert.sql");
    std::fs::write(
        &script,
        "\\set a random(1, 100000)\nINSERT INTO bench_items (account_id, n, payload) VALUES ('acct-' || :a, :a, repeat('x', 200));\n",
    )
    .unwrap();
    let cfg = dir.path().join("bench.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[redis]\nurl = \"{}\"\n[log]\npartitions = {PARTITIONS}\n\
             [sources.bench]\ntype = \"postgres\"\nurl = \"{}\"\npublication = \"sy_bench\"\ncreate_publication = true\n\
             slot = \"sy_bench\"\nappend_lanes = {}\nbatch_size = {}\n[[sources.bench.tables]]\ntable = \"bench_items\"\ntopic = \"item.{{op}}\"\n\
             account_column = \"account_id\"\nrequire_before_image = false\n",
            redis.url(),
            pg.url(),
            env_or("BENCH_LANES", 2),
            env_or("BENCH_BATCH", 500),
        ),
    )
    .unwrap();
    let mut rc = redis.conn();

    // 1. live at a fixed rate: latency.
    let router = Router::start(&cfg);
    router.wait_streaming();
    let t0_ms = now_ms();
    let out = pgbench(
        &pg,
        &script,
        &[
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "-R",
            &rate.to_string(),
        ],
        "-c synchronous_commit=on",
    );
    let live_rows = count(&pg);
    wait_total(&mut rc, live_rows, Duration::from_secs(60));
    let lat = latencies(&mut rc, t0_ms.saturating_sub(1000));
    let tps = out
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("")
        .to_string();
    println!("live: {live_rows} rows at a target of {rate}/s for {secs}s ({tps})");
    println!(
        "live: commit -> in Redis latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal p99 < 50 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );

    // 2. sustained: writer as fast as it can go.
    let before = count(&pg);
    let start = Instant::now();
    let out = pgbench(
        &pg,
        &script,
        &["-c", "8", "-j", "2", "-T", &secs.to_string()],
        "",
    );
    let written_at = Instant::now();
    let after = count(&pg);
    let behind_at_end = after.saturating_sub(xlen_total(&mut rc));
    let done = wait_total(&mut rc, after, Duration::from_secs(300));
    let rows = after - before;
    let write_rate = rows as f64 / (written_at - start).as_secs_f64();
    let cdc_rate = rows as f64 / (done - start).as_secs_f64();
    let tps = out
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("")
        .to_string();
    println!("sustained: {rows} rows written at {write_rate:.0}/s ({tps}); in Redis at {cdc_rate:.0}/s; {behind_at_end} behind when the writer stopped, caught up {:?} later", done - written_at);
    router.terminate();

    // 3. catch-up of a backlog: pg_recvlogical (ceiling) vs the router.
    pg.sql("SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')");
    let base = count(&pg);
    let txns = backlog.div_ceil(txn_rows);
    pg.sql(&format!(
        "DO $$ BEGIN FOR i IN 0..{} LOOP \
           INSERT INTO bench_items (account_id, n, payload) \
             SELECT 'acct-' || (g % 100000), g, repeat('x', 200) FROM generate_series(1, {txn_rows}) g; \
           COMMIT; END LOOP; END $$",
        txns - 1
    ));
    let backlog_rows = count(&pg) - base;
    let end_lsn = pg.sql("SELECT pg_current_wal_lsn()");

    let t = Instant::now();
    let st = Command::new(format!("{PG_BIN}/pg_recvlogical"))
        .args([
            "-d",
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                pg.port
            ),
        ])
        .args([
            "-S",
            "ceiling",
            "--start",
            "-f",
            "/dev/null",
            "-E",
            &end_lsn,
        ])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=sy_bench",
            "--no-loop",
        ])
        .status()
        .expect("pg_recvlogical");
    let ceiling_secs = t.elapsed().as_secs_f64();
    assert!(st.success(), "pg_recvlogical failed");
    pg.sql("SELECT pg_drop_replication_slot('ceiling')");
    let ceiling = backlog_rows as f64 / ceiling_secs;

    let spawned = Instant::now();
    let router = Router::start(&cfg);
    let streaming = router.wait_streaming();
    let cpu0 = (
        cpu_secs(router.child.id(), false),
        cpu_secs(redis.pid(), false),
        cpu_secs(pg.pid(), true),
    );
    // BENCH_PERF=<file>: profile the router during the catch-up (perf record).
    let perf = std::env::var("BENCH_PERF").ok().map(|out| {
        Command::new("perf")
            .args([
                "record",
                "-F",
                "999",
                "-g",
                "-o",
                &out,
                "-p",
                &router.child.id().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf")
    });
    let done = wait_total(&mut rc, base + backlog_rows, Duration::from_secs(600));
    if let Some(p) = perf {
        let _ = Command::new("kill")
            .args(["-INT", &p.id().to_string()])
            .status();
        let _ = p.wait_with_output();
    }
    let cpu1 = (
        cpu_secs(router.child.id(), false),
        cpu_secs(redis.pid(), false),
        cpu_secs(pg.pid(), true),
    );
    let wall = (done - streaming).as_secs_f64();
    println!(
        "catch-up: CPU use during the router's catch-up (cores): router {:.2}, redis {:.2}, postgres {:.2}",
        (cpu1.0 - cpu0.0) / wall,
        (cpu1.1 - cpu0.1) / wall,
        (cpu1.2 - cpu0.2) / wall
    );
    let catchup = backlog_rows as f64 / (done - streaming).as_secs_f64();
    let with_startup = backlog_rows as f64 / (done - spawned).as_secs_f64();
    println!(
        "catch-up: backlog of {backlog_rows} rows in {txns} transactions of {txn_rows}: pg_recvlogical {ceiling:.0} rows/s ({ceiling_secs:.2}s)"
    );
    println!(
        "catch-up: switchyard {catchup:.0} rows/s into Redis ({:.2}s from `streaming changes`; {with_startup:.0} rows/s counting process start); peak RSS {} MiB",
        (done - streaming).as_secs_f64(),
        router.peak_rss_mib()
    );
    println!(
        "ratio: {:.2} of pg_recvlogical's catch-up rate (goal >= 0.50)",
        catchup / ceiling
    );
    router.terminate();
}
