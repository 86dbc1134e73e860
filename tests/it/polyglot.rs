//! Modules in other languages: the Python (componentize-py) and JavaScript
//! (componentize-js) examples in `examples/` implement the same mapping as
//! the Rust chain `filter → klaviyo`. Each runs in the real router against
//! a fake vendor, and the vendor must receive the same requests, in order;
//! `switchyard transform test` must print the same lines for each. The
//! Python runtime's per-call memory growth is handled by instance
//! recycling, shown here with events flowing in order and nothing lost.
//!
//! The components are built by `examples/{python,js}-module/build.sh`
//! (tools: `tests/deps.sh`); `tests/run.sh` runs both, and so does this file
//! once per test process (each script returns at once when its output is
//! up to date).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::Vendor;
use crate::support::TOKEN;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Build (if out of date) and return the example component `name`
/// (`python-module/build/klaviyo_py.wasm`, …). A missing toolchain fails
/// the test with the build script's message.
fn example(dir: &str, file: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        for d in ["python-module", "js-module"] {
            let script = repo().join("examples").join(d).join("build.sh");
            let out = Command::new("bash").arg(&script).output().unwrap();
            if !out.status.success() {
                return Err(format!(
                    "{} failed (install the tools with tests/deps.sh): {}",
                    script.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(())
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    let p = repo().join("examples").join(dir).join("build").join(file);
    assert!(p.is_file(), "{} is missing after its build", p.display());
    p
}

fn python() -> PathBuf {
    example("python-module", "klaviyo_py.wasm")
}

fn js() -> PathBuf {
    example("js-module", "klaviyo_js.wasm")
}

fn rust(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_TRANSFORMS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("transforms/target/wasm32-wasip2/release"));
    let p = dir.join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run transforms/build.sh first (tests/run.sh does)",
        p.display()
    );
    p
}

/// The mapping's config, shared by the three implementations (the topic
/// filter is the `filter` module's job in the Rust chain).
const TOPICS: &str = "customer.*.profile_*";
const MAPPING: &str = r#"properties = "tier, address.city", phone_country_code = "44""#;

fn consumer(name: &str, url: &str, modules: &str) -> String {
    format!(
        r#"
[consumers.{name}]
topics = ["customer.*"]
start = "earliest"
[consumers.{name}.endpoint]
url = "{url}"
[consumers.{name}.retry]
initial = "20ms"
max_delay = "100ms"
max_attempts = 5
{modules}
"#
    )
}

/// A module table. Interpreter guests get a relaxed deadline: a call is
/// wall-clock time, and CI's 2 cores are busy.
fn module(consumer: &str, path: &Path, extra: &str) -> String {
    format!(
        "[[consumers.{consumer}.modules]]\npath = \"{}\"\ndeadline = \"5s\"\n{extra}\n",
        path.display()
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Start a router and wait until it is ready. A cold compile cache means
/// compiling the 12–18 MB interpreter components with the dev-profile
/// compiler, which takes minutes on a busy machine: wait for `/readyz`
/// longer than `Router::start` would.
async fn start(config: &str) -> Router {
    let router = tokio::task::block_in_place(|| Router::start_listening(config, "info"));
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Ok(r) = client().get(router.url("/readyz")).send().await {
            if r.status() == 200 {
                return router;
            }
        }
        assert!(
            Instant::now() < deadline,
            "router not ready after 900 s; logs:\n{}",
            router.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn post(r: &Router, body: Value) {
    let resp = client()
        .post(r.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

async fn status(r: &Router) -> Value {
    client()
        .get(r.url("/admin/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Eight events per account: five the mapping sends, three it drops (a
/// topic outside `customer.*.profile_*`, a delete, a soft delete).
fn events(account: &str) -> Vec<Value> {
    let id = |n: u32| format!("{account}-{n}");
    vec![
        json!({"id": id(1), "topic": "customer.a.profile_updated", "account_id": account, "op": "update",
               "after": {"email": " Ada@Example.com ", "phone": "07700 900123", "first_name": "Ada",
                         "last_name": "Lovelace", "tier": "gold", "address": {"city": "London"}}}),
        json!({"id": id(2), "topic": "customer.a.order_placed", "account_id": account,
               "data": {"email": "ada@example.com", "total": 12}}),
        json!({"id": id(3), "topic": "customer.b.profile_created", "account_id": account,
               "data": {"email": "bob@example.com", "given_name": "Bob", "tier": 3}}),
        json!({"id": id(4), "topic": "customer.a.profile_deleted", "account_id": account, "op": "delete",
               "before": {"email": "ada@example.com"}}),
        json!({"id": id(5), "topic": "customer.a.profile_updated", "account_id": account, "op": "update",
               "after": {"email": "not-an-email", "mobile": "+1 (555) 010-9999", "lastname": "Doe"}}),
        json!({"id": id(6), "topic": "customer.a.profile_updated", "account_id": account, "op": "soft_delete",
               "after": {"email": "ada@example.com"}}),
        json!({"id": id(7), "topic": "customer.c.profile_updated", "account_id": account, "op": "insert",
               "after": {"email": "zoe@example.ch", "tier": 2.5, "address": {"city": "Zürich ✓"}, "x": null}}),
        json!({"id": id(8), "topic": "customer.c.profile_updated", "account_id": account, "op": "update",
               "after": {"nickname": "no identifiers but the account"}}),
    ]
}

const SENT: [u32; 5] = [1, 3, 5, 7, 8];

/// What every implementation must send for event `n` of `account`.
fn expected_body(account: &str, n: u32) -> Value {
    let attrs = match n {
        1 => {
            json!({"email": "Ada@Example.com", "phone_number": "+447700900123", "external_id": account,
                    "first_name": "Ada", "last_name": "Lovelace",
                    "properties": {"tier": "gold", "address.city": "London"}})
        }
        3 => json!({"email": "bob@example.com", "external_id": account, "first_name": "Bob",
                    "properties": {"tier": 3}}),
        5 => json!({"phone_number": "+15550109999", "external_id": account, "last_name": "Doe"}),
        7 => json!({"email": "zoe@example.ch", "external_id": account,
                    "properties": {"tier": 2.5, "address.city": "Zürich ✓"}}),
        8 => json!({"external_id": account}),
        _ => unreachable!(),
    };
    json!({"data": {"type": "profile", "attributes": attrs}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_js_modules_send_what_the_rust_chain_sends_in_order() {
    let redis = RedisServer::start();
    let vendors = [
        Vendor::start().await,
        Vendor::start().await,
        Vendor::start().await,
    ];
    let names = ["rust", "python", "js"];
    let rust_modules = module(
        "rust",
        &rust("filter"),
        &format!("config = {{ topics = \"{TOPICS}\" }}"),
    ) + &module(
        "rust",
        &rust("klaviyo"),
        &format!("config = {{ {MAPPING} }}"),
    );
    let py_cfg = format!("config = {{ topics = \"{TOPICS}\", {MAPPING} }}");
    // Python instances are recycled every 4 calls here: events must flow
    // through the replacements in order, none lost.
    let python_modules = module(
        "python",
        &python(),
        &format!("recycle_after_calls = 4\n{py_cfg}"),
    );
    let js_modules = module("js", &js(), &py_cfg);
    let config = base_config(&redis.url())
        + &consumer("rust", &vendors[0].url(), &rust_modules)
        + &consumer("python", &vendors[1].url(), &python_modules)
        + &consumer("js", &vendors[2].url(), &js_modules);
    let router = start(&config).await;

    let accounts = ["acct-1", "acct-2", "acct-3"];
    let all: Vec<Value> = accounts.iter().flat_map(|a| events(a)).collect();
    post(&router, Value::Array(all)).await;

    let want = accounts.len() * SENT.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while vendors.iter().any(|v| v.applied().len() < want) {
        assert!(
            Instant::now() < deadline,
            "not every vendor got {want} requests: {:?}; status: {}",
            vendors
                .iter()
                .map(|v| v.applied().len())
                .collect::<Vec<_>>(),
            status(&router).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (name, vendor) in names.iter().zip(&vendors) {
        let reqs = vendor.requests();
        assert_eq!(
            reqs.len(),
            want,
            "{name}: one request per sent event, no retries"
        );
        for r in &reqs {
            assert_eq!(r.status, 200);
            assert_eq!(r.method, "POST", "{name}");
            assert_eq!(r.path, "/api/profile-import", "{name}");
            assert_eq!(
                r.headers["content-type"], "application/vnd.api+json",
                "{name}"
            );
            assert_eq!(r.headers["accept"], "application/vnd.api+json", "{name}");
            assert_eq!(r.headers["revision"], "2024-10-15", "{name}");
        }
        for account in accounts {
            // In log order per account, each with its expected body.
            let got: Vec<(String, Value)> = reqs
                .iter()
                .filter(|r| r.key.starts_with(&format!("{account}-")))
                .map(|r| (r.key.clone(), r.body.clone()))
                .collect();
            let expected: Vec<(String, Value)> = SENT
                .iter()
                .map(|n| (format!("{account}-{n}"), expected_body(account, *n)))
                .collect();
            assert_eq!(got, expected, "{name}, {account}");
        }
    }

    let st = status(&router).await;
    for name in names {
        let c = &st["consumers"][name];
        let filtered: u64 = c["filtered"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no `filtered` in {c}"))
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(filtered, 9, "{name}: three events per account dropped: {c}");
    }
    let py = &st["consumers"]["python"]["transforms"]["modules"][0];
    assert_eq!(py["calls"], 24, "{py}");
    assert_eq!(py["recycle_after_calls"], 4, "{py}");
    assert_eq!(py["errors"], 0, "{py}");
    // Accounts run in parallel, so several instances may be in use at once.
    // Each recycled instance served exactly 4 calls, each idle one 1 to 3:
    // no instance served more than 4.
    let n = |k: &str| py[k].as_u64().unwrap();
    let (recycled, idle) = (n("recycled"), n("idle_instances"));
    assert_eq!(n("instantiations"), recycled + idle, "{py}");
    assert!(recycled >= 1 && 4 * recycled <= 24, "{py}");
    let rest = 24 - 4 * recycled;
    assert!(rest >= idle && rest <= 3 * idle, "{py}");
}

/// `switchyard transform test` (the CLI an author runs) prints the same
/// lines for the three implementations: one request, byte-identical bodies;
/// a drop; the same fatal error.
#[test]
fn transform_test_prints_the_same_for_each_language() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    let rust_chain = |name: &str, extra: &str| {
        consumer(
            name,
            "http://127.0.0.1:1",
            &(module(
                name,
                &rust("filter"),
                &format!("config = {{ topics = \"{TOPICS}\" }}"),
            ) + &module(
                name,
                &rust("klaviyo"),
                &format!("config = {{ {MAPPING}{extra} }}"),
            )),
        )
    };
    // Python and JS as authors run them from a config, with the same
    // relaxed deadline as in the router tests (CI's cores are busy).
    let guest = |name: &str, path: &Path, extra: &str| {
        consumer(
            name,
            "http://127.0.0.1:1",
            &module(
                name,
                path,
                &format!("config = {{ topics = \"{TOPICS}\", {MAPPING}{extra} }}"),
            ),
        )
    };
    let ext = ", external_id_field = \"customer_id\"";
    let (py, js) = (python(), js());
    std::fs::write(
        &cfg,
        format!("[redis]\nurl = \"redis://127.0.0.1:1\"\n")
            + &rust_chain("rust", "")
            + &rust_chain("rust_ext", ext)
            + &guest("python", &py, "")
            + &guest("python_ext", &py, ext)
            + &guest("js", &js, "")
            + &guest("js_ext", &js, ext),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let run = |consumer: &str, event: &Value| -> Value {
        let ev = dir.path().join("event.json");
        std::fs::write(&ev, event.to_string()).unwrap();
        let out = Command::new(bin())
            .args(["transform", "test", "--config", cfg, "--consumer", consumer])
            .arg("--event")
            .arg(&ev)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{consumer}: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut v: Value = serde_json::from_str(lines[0]).unwrap();
        // The module's name differs; the rest must not.
        if let Some(o) = v.as_object_mut() {
            o.remove("module");
            if let Some(d) = o.get_mut("dropped").and_then(Value::as_object_mut) {
                d.remove("module");
            }
            if let Some(f) = o.get_mut("failed").and_then(Value::as_object_mut) {
                f.remove("module");
            }
        }
        v
    };

    for (n, event) in events("acct-9").iter().enumerate() {
        let n = n as u32 + 1;
        let r = run("rust", event);
        if SENT.contains(&n) {
            let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
            assert_eq!(body, expected_body("acct-9", n), "event {n}: {r}");
        } else {
            assert!(r.get("dropped").is_some(), "event {n}: {r}");
        }
        // Byte-identical: the body text (sorted keys, same escaping) too.
        assert_eq!(run("python", event), r, "python, event {n}");
        assert_eq!(run("js", event), r, "js, event {n}");
    }

    // The same fatal error, with the guest's message, when a configured
    // identifier field is missing too.
    let no_id = json!({"id": "x", "topic": "customer.a.profile_updated", "account_id": "1",
                       "after": {"email": "nope"}});
    let r = run("rust_ext", &no_id);
    assert_eq!(
        r,
        json!({"failed": {"message": "no profile identifier: email (email), phone (phone_number, phone, mobile) and external id (customer_id) are all missing", "retryable": false}})
    );
    assert_eq!(run("python_ext", &no_id), r, "python");
    assert_eq!(run("js_ext", &no_id), r, "js");
}

/// componentize-py's runtime grows its linear memory by about each returned
/// request body, per call, and never gives it back. Without recycling an
/// instance runs into its memory cap (the event fails: "exceeded memory
/// cap"); with `recycle_above` under the cap, instances are replaced before
/// that, memory stays under the cap, and every event is delivered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_instances_are_recycled_before_their_memory_runs_out() {
    let redis = RedisServer::start();
    let (recycled_vendor, leaky_vendor) = (Vendor::start().await, Vendor::start().await);
    let cfg = format!("config = {{ topics = \"{TOPICS}\", properties = \"blob\" }}");
    let cap = "memory = \"16MiB\"";
    // ~2 MiB requests, and time for Redis to take them on a busy machine.
    let config = base_config(&redis.url())
        .replace("max_body = \"64KiB\"", "max_body = \"4MiB\"")
        .replace("timeout = \"500ms\"", "timeout = \"10s\"")
        + &consumer(
            "recycled",
            &recycled_vendor.url(),
            &module(
                "recycled",
                &python(),
                &format!("{cap}\nrecycle_above = \"14MiB\"\n{cfg}"),
            ),
        )
        + &consumer(
            "leaky",
            &leaky_vendor.url(),
            &module(
                "leaky",
                &python(),
                &format!("{cap}\nrecycle_above = \"16MiB\"\n{cfg}"),
            ),
        )
        // A failed event goes to the DLQ and the account's next ones flow.
        .replace(
            "start = \"earliest\"",
            "start = \"earliest\"\non_failure = \"skip\"",
        );
    let router = start(&config).await;

    // 4 accounts × 40 events, each returning a ~128 KiB body.
    let blob = "x".repeat(128 * 1024);
    let accounts = ["m-1", "m-2", "m-3", "m-4"];
    let mut all = Vec::new();
    for i in 0..40 {
        for a in accounts {
            all.push(
                json!({"id": format!("{a}-{i:02}"), "topic": "customer.a.profile_updated",
                            "account_id": a, "op": "update",
                            "after": {"email": format!("{a}@example.com"), "blob": blob}}),
            );
        }
    }
    let want = all.len();
    for batch in all.chunks(16) {
        post(&router, Value::Array(batch.to_vec())).await;
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status(&router).await;
        let done = |c: &str| {
            let c = &st["consumers"][c]["transforms"]["modules"][0];
            c["calls"].as_u64().unwrap_or(0) >= want as u64
        };
        if recycled_vendor.applied().len() >= want && done("leaky") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "recycled: {} of {want} delivered; status: {st}",
            recycled_vendor.applied().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = status(&router).await;
    for c in ["recycled", "leaky"] {
        eprintln!("{c}: {}", st["consumers"][c]["transforms"]["modules"][0]);
    }

    // With recycling: everything, once, in order per account.
    assert_eq!(recycled_vendor.requests().len(), want);
    let applied: Vec<String> = recycled_vendor
        .applied()
        .into_iter()
        .map(|r| r.key)
        .collect();
    for a in accounts {
        let got: Vec<&String> = applied
            .iter()
            .filter(|k| k.starts_with(&format!("{a}-")))
            .collect();
        let expected: Vec<String> = (0..40).map(|i| format!("{a}-{i:02}")).collect();
        assert_eq!(got, expected.iter().collect::<Vec<_>>(), "{a}");
    }
    let m = &st["consumers"]["recycled"]["transforms"]["modules"][0];
    assert_eq!(m["errors"], 0, "{m}");
    assert!(m["recycled"].as_u64().unwrap() >= 1, "{m}");
    let max = m["max_memory"].as_u64().unwrap();
    // Bounded by the mark plus what one call adds (~130 KiB here).
    assert!(
        max <= (14 << 20) + (1 << 20),
        "memory stayed near the 14 MiB mark: {m}"
    );

    // Without: the same events run the instances into the cap.
    let m = &st["consumers"]["leaky"]["transforms"]["modules"][0];
    assert_eq!(m["recycled"], 0, "{m}");
    let failed = m["errors"].as_u64().unwrap();
    assert!(failed >= 1, "{m}");
    let list = Command::new(bin())
        .args(["dlq", "list", "--config"])
        .arg(&router.config_path)
        .args(["--consumer", "leaky"])
        .output()
        .unwrap();
    let reasons: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["fields"]["reason"].to_string())
        .collect();
    assert_eq!(reasons.len() as u64, failed, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("exceeded memory cap 16 MiB")),
        "{reasons:?}"
    );
    assert_eq!(leaky_vendor.applied().len() as u64, want as u64 - failed);
}
