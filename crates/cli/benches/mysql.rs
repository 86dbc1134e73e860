//! MySQL/MariaDB CDC benchmark: `cargo bench -p switchyard --bench mysql`.
//!
//! Private MariaDB (binlog ROW/FULL) + private Redis + the release
//! `switchyard` binary with one `type = "mysql"` source.
//!
//! Catch-up: the router starts once (storing the binlog's end as its
//! position) and stops; a backlog of BENCH_BACKLOG rows (default 300000) in
//! transactions of BENCH_TXN_ROWS (default 10) is written; then
//! `mysqlbinlog --read-from-remote-server` reads the same binlog range into
//! /dev/null — the ceiling (the server's own reader: it prints the row
//! events as base64 `BINLOG` statements without decoding them; the
//! `--verbose` run, which decodes rows to pseudo-SQL, is printed too) — and
//! then the router reads it into Redis. Prints both rates and the ratio.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../../../tests/it/support/mariadb.rs"]
mod mariadb;
#[path = "../../../tests/it/support/redis.rs"]
mod redisserver;
// redis.rs refers to `super::tls` (its TLS-only server).
#[path = "../../../tests/it/support/tls.rs"]
mod tls;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

use mariadb::{MariaDb, CDC_PASSWORD, CDC_USER};
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
                if v["message"] == "streaming the binlog" {
                    *s.lock().unwrap() = Some(Instant::now());
                }
                if v["level"] == "WARN" || v["level"] == "ERROR" {
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

fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn mysqlbinlog(db: &MariaDb, file: &str, pos: &str, verbose: bool) -> f64 {
    let t = Instant::now();
    let mut cmd = Command::new("mysqlbinlog");
    cmd.args([
        "--no-defaults",
        "--read-from-remote-server",
        "--host=127.0.0.1",
    ])
    .arg(format!("--port={}", db.port))
    .arg(format!("--user={CDC_USER}"))
    .arg(format!("--password={CDC_PASSWORD}"))
    .arg(format!("--start-position={pos}"))
    .arg("--to-last-log");
    if verbose {
        cmd.arg("--verbose");
    }
    let st = cmd
        .arg(file)
        .stdout(Stdio::null())
        .status()
        .expect("mysqlbinlog");
    assert!(st.success(), "mysqlbinlog failed");
    t.elapsed().as_secs_f64()
}

fn main() {
    let backlog = env_or("BENCH_BACKLOG", 300_000);
    let txn_rows = env_or("BENCH_TXN_ROWS", 10);
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql("CREATE TABLE bench_items (id BIGINT AUTO_INCREMENT PRIMARY KEY, account_id VARCHAR(32) NOT NULL, n INT NOT NULL, payload VARCHAR(255)) ENGINE=InnoDB");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[redis]
url = "{}"

[log]
partitions = {PARTITIONS}

[sources.shop]
type = "mysql"
url = "{}"
server_id = 4242
batch_size = 1000

[[sources.shop.tables]]
table = "bench_items"
topic = "item.{{op}}"
account_column = "account_id"
"#,
            redis.url(),
            db.url()
        ),
    )
    .unwrap();
    let mut rc = redis.client().get_connection().unwrap();

    // First start: the position (the binlog's end) is stored.
    let router = Router::start(&cfg);
    router.wait_streaming();
    std::thread::sleep(Duration::from_millis(500));
    router.terminate();
    let status = db.sql("SHOW MASTER STATUS");
    let mut f = status.split('\t');
    let (file, pos) = (f.next().unwrap().to_string(), f.next().unwrap().to_string());

    let txns = backlog.div_ceil(txn_rows);
    let t = Instant::now();
    db.sql(&format!(
        "DELIMITER //\nBEGIN NOT ATOMIC DECLARE i INT DEFAULT 0; \
           WHILE i < {txns} DO \
             INSERT INTO bench_items (account_id, n, payload) \
               SELECT CONCAT('acct-', (i * {txn_rows} + seq) % 100000), seq, REPEAT('x', 200) FROM seq_1_to_{txn_rows}; \
             SET i = i + 1; \
           END WHILE; END//"
    ));
    let backlog_rows: u64 = db.sql("SELECT COUNT(*) FROM bench_items").parse().unwrap();
    println!(
        "backlog: {backlog_rows} rows in {txns} transactions of {txn_rows} written in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let ceiling_secs = mysqlbinlog(&db, &file, &pos, false);
    let ceiling = backlog_rows as f64 / ceiling_secs;
    let verbose_secs = mysqlbinlog(&db, &file, &pos, true);
    let verbose = backlog_rows as f64 / verbose_secs;

    let spawned = Instant::now();
    let router = Router::start(&cfg);
    let streaming = router.wait_streaming();
    let cpu0 = (cpu_secs(router.child.id()), cpu_secs(redis.pid()));
    let done = wait_total(&mut rc, backlog_rows, Duration::from_secs(900));
    let wall = (done - streaming).as_secs_f64();
    let cpu1 = (cpu_secs(router.child.id()), cpu_secs(redis.pid()));
    let catchup = backlog_rows as f64 / wall;
    let with_startup = backlog_rows as f64 / (done - spawned).as_secs_f64();
    println!(
        "catch-up: mysqlbinlog --read-from-remote-server {ceiling:.0} rows/s ({ceiling_secs:.2}s); with --verbose (rows decoded) {verbose:.0} rows/s ({verbose_secs:.2}s)"
    );
    println!(
        "catch-up: switchyard {catchup:.0} rows/s into Redis ({wall:.2}s from `streaming the binlog`; {with_startup:.0} rows/s counting process start); peak RSS {} MiB; CPU (cores): router {:.2}, redis {:.2}",
        router.peak_rss_mib(),
        (cpu1.0 - cpu0.0) / wall,
        (cpu1.1 - cpu0.1) / wall,
    );
    println!(
        "ratio: {:.2} of mysqlbinlog's catch-up rate ({:.2} of mysqlbinlog --verbose)",
        catchup / ceiling,
        catchup / verbose
    );
    router.terminate();
}
