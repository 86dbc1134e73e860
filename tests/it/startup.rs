//! Start-up of the real binary with a cold compile cache: the listener is
//! healthy at once and not ready until the modules are compiled, SIGTERM
//! stops start-up promptly, and trace logging does not turn the WebAssembly
//! compiler's own logs on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, Router};
use crate::support::vendor::Vendor;

pub fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_TRANSFORMS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../transforms/target/wasm32-wasip2/release")
        });
    let p = dir.join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run transforms/build.sh first (tests/run.sh does)",
        p.display()
    );
    p
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// `n` copies of module `name` in `dir`, each made distinct by a custom
/// section (so each has its own content hash and compiles on its own).
fn distinct_copies(name: &str, n: usize, dir: &Path) -> Vec<PathBuf> {
    let bytes = std::fs::read(wasm(name)).unwrap();
    (0..n)
        .map(|i| {
            let mut b = bytes.clone();
            let section_name = format!("switchyard-test-copy-{i}");
            let mut payload = Vec::new();
            leb128(section_name.len(), &mut payload);
            payload.extend_from_slice(section_name.as_bytes());
            b.push(0); // custom section
            leb128(payload.len(), &mut b);
            b.extend_from_slice(&payload);
            let p = dir.join(format!("{name}-{i}.wasm"));
            std::fs::write(&p, b).unwrap();
            p
        })
        .collect()
}

/// A router config with one consumer whose chain is `modules` (pass-through
/// modules), compiling into the empty cache `cache`.
fn config(redis: &RedisServer, vendor_url: &str, modules: &[PathBuf], cache: &Path) -> String {
    let mut c = base_config(&redis.url());
    c.push_str(&format!(
        "\n[transforms]\ncache_dir = \"{}\"\n\n[consumers.esp]\ntopics = [\"*\"]\n\
         start = \"earliest\"\n[consumers.esp.endpoint]\nurl = \"{vendor_url}\"\n",
        cache.display()
    ));
    for m in modules {
        c.push_str(&format!(
            "[[consumers.esp.modules]]\npath = \"{}\"\n",
            m.display()
        ));
    }
    c
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Modules in the chain: enough that compiling them all (the router's dev
/// build takes ~10 s per module here) takes far longer than the checks
/// below, which must happen while it runs.
const CHAIN: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_cache_healthz_answers_readyz_says_starting_and_sigterm_stops_startup() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let modules = distinct_copies("sy_test_echo", CHAIN, dir.path());
    let mut router =
        Router::start_listening(&config(&redis, &vendor.url(), &modules, &cache), "info");

    // The process is alive: /healthz answers at once.
    let t = Instant::now();
    let r = client().get(router.url("/healthz")).send().await;
    let r = r.unwrap_or_else(|e| panic!("/healthz during start-up: {e}"));
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // Not ready: 503 with the reason, and ingest writes nothing.
    let r = client().get(router.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "not ready", "{body}");
    assert_eq!(body["reason"], "starting: compiling modules", "{body}");
    let r = client()
        .post(router.url("/v1/events"))
        .bearer_auth(crate::support::TOKEN)
        .json(&serde_json::json!({"topic": "t", "account_id": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        !router.logs().contains("\"message\":\"ready\""),
        "start-up finished before the checks; make CHAIN longer"
    );

    // SIGTERM stops start-up promptly: it does not wait for the compiler.
    let t = Instant::now();
    let st = router.terminate();
    let took = t.elapsed();
    assert!(st.success(), "{st:?}\n{}", router.logs());
    assert!(
        took < Duration::from_secs(3),
        "SIGTERM during start-up took {took:?}\n{}",
        router.logs()
    );
    assert!(!router.logs().contains("\"message\":\"ready\""));
    let mut c = redis.conn();
    let n: u64 = redis::cmd("XLEN")
        .arg("sy:log:{p0}")
        .query(&mut c)
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing was written during start-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_compiling_and_trace_level_keeps_the_compiler_quiet() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let modules = distinct_copies("sy_test_echo", 1, dir.path());
    // Cold cache: the module is compiled, at trace level.
    let mut router =
        Router::start_logging(&config(&redis, &vendor.url(), &modules, &cache), "trace");
    let r = client().get(router.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client()
        .post(router.url("/v1/events"))
        .bearer_auth(crate::support::TOKEN)
        .json(&serde_json::json!({"topic": "t", "account_id": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // A rejected request: the router's own debug line ("ingest rejected").
    let r = client()
        .post(router.url("/v1/events"))
        .bearer_auth(crate::support::TOKEN)
        .json(&serde_json::json!({"topic": "not a topic", "account_id": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    crate::support::eventually(Duration::from_secs(20), "delivered", || {
        let n = vendor.requests().len();
        async move { (n > 0).then_some(()) }
    })
    .await;
    assert!(router.terminate().success());

    let logs = router.logs();
    let mut ours = 0;
    let mut theirs: Vec<String> = Vec::new();
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_default();
        let target = v["target"].as_str().unwrap_or_default();
        if target.starts_with("switchyard") {
            if v["level"] == "TRACE" || v["level"] == "DEBUG" {
                ours += 1;
            }
        } else if !target.is_empty() && !matches!(v["level"].as_str(), Some("WARN" | "ERROR")) {
            theirs.push(line.to_string());
        }
    }
    assert!(
        ours > 0,
        "the router's own trace/debug lines are kept:\n{logs}"
    );
    assert!(
        theirs.is_empty(),
        "{} lines of other crates below warn at SWITCHYARD_LOG=trace, e.g.:\n{}",
        theirs.len(),
        theirs
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let cache_files = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(cache_files, 1, "the module was compiled (cold cache)");
}
