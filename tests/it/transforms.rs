//! Transform chains inside the running router: shaping requests for a
//! vendor, bad modules isolated, hot reload without a restart.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::Vendor;
use crate::support::{eventually, free_port, TOKEN};

fn wasm(name: &str) -> PathBuf {
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

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
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

fn module(consumer: &str, path: &std::path::Path, extra: &str) -> String {
    format!(
        "[[consumers.{consumer}.modules]]\npath = \"{}\"\n{extra}\n",
        path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_filters_redacts_and_maps_to_the_vendor_shape() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let modules = module(
        "klaviyo",
        &wasm("filter"),
        "config = { require_consent = \"email\" }",
    ) + &module("klaviyo", &wasm("redact"), "config = { drop = \"ssn\" }")
        + &module("klaviyo", &wasm("klaviyo"), "");
    let router =
        Router::start(&(base_config(&redis.url()) + &consumer("klaviyo", &vendor.url(), &modules)));
    post(
        &router,
        json!([
            {"id": "c1", "topic": "customer.a.email_changed", "account_id": "42", "op": "update",
             "after": {"email": "Ada@Example.com", "first_name": "Ada", "ssn": "123-45-6789"}, "consent": {"email": "granted"}},
            {"id": "c2", "topic": "customer.a.email_changed", "account_id": "43", "op": "update",
             "after": {"email": "bob@example.com"}, "consent": {"email": "denied"}},
        ]),
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the consented event reaches the vendor",
        || async { (!vendor.applied().is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = vendor.requests();
    assert_eq!(
        reqs.len(),
        1,
        "the event without email consent was filtered"
    );
    let r = &reqs[0];
    assert_eq!(r.path, "/api/profile-import");
    assert_eq!(r.key, "c1");
    let attrs = &r.body["data"]["attributes"];
    assert_eq!(r.body["data"]["type"], "profile");
    assert_eq!(attrs["external_id"], "42");
    assert!(
        attrs["email"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("ada@example.com"),
        "{}",
        r.body
    );
    assert!(
        !r.body.to_string().contains("123-45-6789"),
        "ssn was dropped: {}",
        r.body
    );

    // The drop is counted with the module's name (status via the admin API, loopback).
    let st: Value = client()
        .get(router.url("/admin/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(st["consumers"]["klaviyo"]["filtered"]["filter"], 1, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_modules_dead_letter_their_events_and_the_router_keeps_serving() {
    let redis = RedisServer::start();
    let good = Vendor::start().await;
    let bad = Vendor::start().await;
    let mut cfg = base_config(&redis.url()) + &consumer("good", &good.url(), "");
    for (name, m, deadline) in [
        ("loop", "sy_test_loop", "50ms"),
        ("bomb", "sy_test_membomb", "5s"),
        ("trap", "sy_test_trap", "50ms"),
    ] {
        let limits = format!("deadline = \"{deadline}\"\nmemory = \"16MiB\"");
        cfg += &consumer(name, &bad.url(), &module(name, &wasm(m), &limits));
    }
    let router = Router::start(&cfg);
    for i in 0..3 {
        post(&router, json!({"id": format!("e{i}"), "topic": "customer.a.updated", "account_id": format!("a{i}")})).await;
    }
    eventually(
        Duration::from_secs(30),
        "healthy consumer delivered everything",
        || async { (good.applied().len() == 3).then_some(()) },
    )
    .await;
    // Each bad consumer dead-letters each event with the failure named.
    for (name, needle) in [("loop", "timed out"), ("bomb", "memory"), ("trap", "trap")] {
        let entries = eventually(
            Duration::from_secs(30),
            &format!("{name}: 3 DLQ entries"),
            || async {
                let out = std::process::Command::new(bin())
                    .args(["dlq", "list", "--config"])
                    .arg(&router.config_path)
                    .args(["--consumer", name])
                    .output()
                    .unwrap();
                let lines: Vec<Value> = String::from_utf8(out.stdout)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                // Three accounts: each event fails on its own (none parked behind another).
                (lines
                    .iter()
                    .filter(|l| l["fields"]["kind"] == "failed")
                    .count()
                    == 3)
                    .then_some(lines)
            },
        )
        .await;
        let reason = entries[0]["fields"]["reason"]
            .as_str()
            .unwrap()
            .to_lowercase();
        assert!(reason.contains(needle), "{name}: {reason}");
        assert_eq!(
            entries[0]["fields"]["attempts"], "1",
            "not retried: a trap is not retryable"
        );
    }
    assert!(bad.requests().is_empty());
    // Still serving.
    post(
        &router,
        json!({"id": "after", "topic": "customer.a.updated", "account_id": "z"}),
    )
    .await;
    eventually(Duration::from_secs(10), "router still delivers", || async {
        (good.applied().len() == 4).then_some(())
    })
    .await;
    assert_eq!(
        client()
            .get(router.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_hot_reload_by_file_watch_sighup_and_cli_and_a_bad_version_keeps_the_old() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("mapper.wasm");
    std::fs::copy(wasm("sy_test_version"), &m).unwrap();
    let port = free_port();
    let modules = format!(
        "[[consumers.esp.modules]]\npath = \"{}\"\nconfig = {{ version = \"a\" }}\n",
        m.display()
    );
    let cfg = base_config(&redis.url()).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &consumer("esp", &vendor.url(), &modules);
    let router = Router::start(&cfg);
    let mut n = 0;
    let mut send_and_expect = |want: &'static str| {
        n += 1;
        let id = format!("ev{n}");
        let router = &router;
        let vendor = vendor.clone();
        async move {
            post(
                router,
                json!({"id": id, "topic": "customer.a.updated", "account_id": "1"}),
            )
            .await;
            eventually(
                Duration::from_secs(20),
                &format!("{id} transformed by version {want}"),
                || async {
                    vendor
                        .requests()
                        .iter()
                        .find(|r| r.key == id)
                        .map(|r| r.body.as_str().unwrap_or_default().to_string())
                },
            )
            .await
        }
    };
    assert_eq!(send_and_expect("a").await, "a");

    // 1. Config change + SIGHUP.
    let text = std::fs::read_to_string(&router.config_path)
        .unwrap()
        .replace("version = \"a\"", "version = \"b\"");
    std::fs::write(&router.config_path, text).unwrap();
    router.sighup();
    eventually(
        Duration::from_secs(20),
        "SIGHUP reload took effect",
        || async {
            let st: Value = client()
                .get(router.url("/admin/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (st["consumers"]["esp"]["transforms"]["reloads"].as_u64()? >= 1).then_some(())
        },
    )
    .await;
    assert_eq!(send_and_expect("b").await, "b");

    // 2. Config change + `switchyard reload`.
    let text = std::fs::read_to_string(&router.config_path)
        .unwrap()
        .replace("version = \"b\"", "version = \"c\"");
    std::fs::write(&router.config_path, text).unwrap();
    let out = std::process::Command::new(bin())
        .args(["reload", "--config"])
        .arg(&router.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(send_and_expect("c").await, "c");

    // 3. A broken file on disk: the watcher tries it, the old version keeps running.
    let tmp = dir.path().join("mapper.tmp");
    std::fs::write(&tmp, b"\0asm this is not a component").unwrap();
    std::fs::rename(&tmp, &m).unwrap();
    let st = eventually(
        Duration::from_secs(20),
        "the failed reload is reported",
        || async {
            let st: Value = client()
                .get(router.url("/admin/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            st["consumers"]["esp"]["transforms"]["last_reload_error"]
                .is_object()
                .then_some(st)
        },
    )
    .await;
    let err = st["consumers"]["esp"]["transforms"]["last_reload_error"].to_string();
    assert!(err.contains("mapper.wasm"), "{err}");
    assert_eq!(send_and_expect("c").await, "c");
    let status = std::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(&router.config_path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("last_reload_error"));

    // 4. A good file replaces it: picked up by the watcher without any command.
    let text = std::fs::read_to_string(&router.config_path).unwrap();
    assert!(text.contains("version = \"c\""));
    std::fs::copy(wasm("sy_test_echo"), &tmp).unwrap();
    std::fs::rename(&tmp, &m).unwrap();
    eventually(
        Duration::from_secs(20),
        "the watcher loaded the new file",
        || async {
            let st: Value = client()
                .get(router.url("/admin/status"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            st["consumers"]["esp"]["transforms"]["last_reload_error"]
                .is_null()
                .then_some(())
        },
    )
    .await;
    post(
        &router,
        json!({"id": "echo1", "topic": "customer.a.updated", "account_id": "1"}),
    )
    .await;
    let r = eventually(Duration::from_secs(20), "echo module output", || async {
        vendor.requests().into_iter().find(|r| r.key == "echo1")
    })
    .await;
    assert_eq!(
        r.body["id"], "echo1",
        "echo passes the event through: the canonical event is sent as JSON"
    );
}

#[test]
fn transform_test_cli_runs_a_chain_on_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let ev = dir.path().join("e.json");
    std::fs::write(&ev, r#"{"topic": "customer.a.updated", "account_id": "7", "after": {"email": " Ada@Example.COM ", "ssn": "1"}}"#)
        .unwrap();
    let out = std::process::Command::new(bin())
        .args(["transform", "test", "--module"])
        .arg(wasm("redact"))
        .args(["--module"])
        .arg(wasm("webhook"))
        .args(["--set", "hash=email", "--event"])
        .arg(&ev)
        .output()
        .unwrap();
    // One --set applies to every module: webhook refuses the unknown key `hash`.
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hash"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[consumers.x]\ntopics = [\"*\"]\n[consumers.x.endpoint]\nurl = \"http://127.0.0.1:1\"\n\
             [[consumers.x.modules]]\npath = \"{}\"\nconfig = {{ hash = \"email\", drop = \"ssn\" }}\n\
             [[consumers.x.modules]]\npath = \"{}\"\n",
            wasm("redact").display(),
            wasm("webhook").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["transform", "test", "--config"])
        .arg(&cfg)
        .args(["--consumer", "x", "--event"])
        .arg(&ev)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["content_type"], "application/cloudevents+json");
    let body: Value = serde_json::from_str(line["body"].as_str().unwrap()).unwrap();
    // sha256("ada@example.com")
    assert_eq!(
        body["data"]["after"]["email"],
        "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"
    );
    assert!(body["data"]["after"].get("ssn").is_none());
}

async fn admin_status(router: &Router) -> Value {
    client()
        .get(router.url("/admin/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A running router is pointed at each malformed module in turn (config
/// change + `switchyard reload`): the reload is refused naming the file and
/// the reason, `switchyard status` shows it, the old chain keeps delivering
/// and ingest keeps answering 202. A router *started* with a bad module
/// refuses to start (exit 1, the same message): it never runs without the
/// chain its config asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_modules_are_refused_and_the_router_keeps_serving() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module (memory 1))").unwrap()).unwrap();
    let port = free_port();
    let good = format!(
        "[[consumers.esp.modules]]\npath = \"{}\"\nconfig = {{ version = \"a\" }}\n",
        wasm("sy_test_version").display()
    );
    let base = base_config(&redis.url()).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let router = Router::start(&(base.clone() + &consumer("esp", &vendor.url(), &good)));

    let badinit = wasm("sy_test_badinit");
    let bigmem = wasm("sy_test_bigmem");
    let cases: [(String, String); 4] = [
        (
            module("esp", &core, ""),
            format!(
                "module {} is a core WebAssembly module, not a component",
                core.display()
            ),
        ),
        (
            module("esp", &badinit, "config = { mode = \"loop\" }"),
            format!(
                "module {}: init failed: timed out after 100ms",
                badinit.display()
            ),
        ),
        (
            module("esp", &badinit, "config = { mode = \"trap\" }"),
            format!("module {}: init failed: trapped: ", badinit.display()),
        ),
        (
            module("esp", &bigmem, ""),
            format!(
                "module {}: instantiation failed: exceeded memory cap 64 MiB",
                bigmem.display()
            ),
        ),
    ];
    for (i, (modules, want)) in cases.iter().enumerate() {
        std::fs::write(
            &router.config_path,
            base.clone() + &consumer("esp", &vendor.url(), modules),
        )
        .unwrap();
        let t = std::time::Instant::now();
        let out = std::process::Command::new(bin())
            .args(["reload", "--config"])
            .arg(&router.config_path)
            .output()
            .unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "reload returned in {:?}",
            t.elapsed()
        );
        assert_eq!(out.status.code(), Some(1), "case {i}: reload must fail");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], false, "{report}");
        let err = report["consumers"]["esp"]["error"].as_str().unwrap();
        assert!(err.starts_with(want.as_str()), "case {i}: {err}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("the previous chains keep running"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let st = admin_status(&router).await;
        let tr = &st["consumers"]["esp"]["transforms"];
        assert_eq!(tr["reload_failures"], i as u64 + 1, "{st}");
        assert_eq!(tr["generation"], 1, "{st}");
        assert!(
            tr["last_reload_error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(want.as_str()),
            "{st}"
        );
        // Ingest answers and the old chain ("a") still transforms.
        let id = format!("m{i}");
        post(
            &router,
            json!({"id": id, "topic": "customer.a.updated", "account_id": "1"}),
        )
        .await;
        let body = eventually(
            Duration::from_secs(20),
            &format!("{id} delivered by the old chain"),
            || async {
                vendor
                    .requests()
                    .iter()
                    .find(|r| r.key == id)
                    .map(|r| r.body.clone())
            },
        )
        .await;
        assert_eq!(body, "a");
    }
    assert!(
        router
            .logs()
            .contains("transform reload failed; the previous version keeps running"),
        "reload failures are logged"
    );
    assert_eq!(
        client()
            .get(router.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Starting with a bad module: the router refuses to start, naming it.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        base_config(&redis.url()) + &consumer("esp", &vendor.url(), &cases[1].0),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&cases[1].1), "{stderr}");
}

/// sy_test_escape inside the real router, whose environment holds a secret:
/// the report the vendor receives shows every attempt denied, and the
/// test's TCP listener and UDP socket never see the guest. The UDP attempt
/// used to panic the account's delivery task inside wasmtime-wasi's
/// synchronous binding ("Cannot start a runtime from within a runtime"):
/// the event was never delivered nor dead-lettered, the account's next event
/// waited forever, SIGTERM took the whole grace period and the backtrace
/// broke the JSON log. Now the account keeps flowing, shutdown is prompt and
/// every log line is JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_cannot_escape_the_sandbox_of_the_running_router() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "sy-file-secret-7f3a").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_nonblocking(true).unwrap();
    let modules = module("esc", &wasm("sy_test_escape"), "deadline = \"5s\"");
    let mut router = Router::start_with_env(
        &(base_config(&redis.url()) + &consumer("esc", &vendor.url(), &modules)),
        &[("SWITCHYARD_SECRET_PROBE", "sy-env-secret-91c2")],
    );
    let probe = json!({"path": secret.display().to_string(), "env": "SWITCHYARD_SECRET_PROBE",
                       "tcp": listener.local_addr().unwrap().to_string(),
                       "udp": udp.local_addr().unwrap().to_string()});
    post(
        &router,
        json!({"id": "esc1", "topic": "customer.a.updated", "account_id": "1", "data": probe}),
    )
    .await;
    let report = eventually(Duration::from_secs(20), "the escape report", || async {
        vendor
            .requests()
            .into_iter()
            .find(|r| r.key == "esc1")
            .map(|r| r.body)
    })
    .await;
    let text = report.to_string();
    assert!(!text.contains("sy-file-secret-7f3a"), "{report:#}");
    assert!(!text.contains("sy-env-secret-91c2"), "{report:#}");
    assert!(!text.contains("root:x:0:0"), "{report:#}");
    for key in [
        "read_etc_passwd",
        "read_path",
        "open_path",
        "write_next_to_path",
        "env_var",
        "tcp_connect",
        "udp_send",
        "dns_lookup",
        "spawn_process",
    ] {
        assert_eq!(report[key]["ok"], false, "{key}: {report:#}");
    }
    assert_eq!(report["env_var"]["error"], "environment variable not found");
    assert_eq!(
        report["tcp_connect"]["error"],
        "Permission denied (os error 2)"
    );
    assert_eq!(
        report["udp_send"]["error"],
        "Permission denied (os error 2)"
    );
    assert_eq!(report["env_vars"]["count"], 0, "{report:#}");
    assert!(!dir.path().join("secret.txt.escaped").exists());
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the guest reached the test's listener"
    );
    let mut buf = [0u8; 64];
    assert_eq!(
        udp.recv_from(&mut buf).map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "the guest's datagram reached the test's UDP socket"
    );

    // The account's next event flows (the same probe again: same result).
    post(
        &router,
        json!({"id": "esc2", "topic": "customer.a.updated", "account_id": "1", "data": probe}),
    )
    .await;
    let second = eventually(
        Duration::from_secs(20),
        "the account's next event",
        || async {
            vendor
                .requests()
                .into_iter()
                .find(|r| r.key == "esc2")
                .map(|r| r.body)
        },
    )
    .await;
    assert_eq!(
        second["udp_send"]["error"],
        "Permission denied (os error 2)"
    );

    // SIGTERM is acted on at once, and the log is JSON throughout.
    let t = std::time::Instant::now();
    let st = router.terminate();
    assert!(st.success(), "{st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "SIGTERM took {:?}",
        t.elapsed()
    );
    let logs = router.logs();
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "a log line that is not JSON: {line:?}\n{logs}"
        );
    }
    assert!(!logs.contains("panicked"), "{logs}");
}

/// Guest code runs off the async workers: while modules of one consumer sit
/// at their 10 s deadline (more of them than the machine has cores), ingest
/// answers and another consumer's events go out at once, and SIGTERM does
/// not wait for the stuck calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_at_their_deadline_stall_neither_ingest_nor_other_consumers() {
    let redis = RedisServer::start();
    let slow_vendor = Vendor::start().await;
    let fast_vendor = Vendor::start().await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let cfg = base_config(&redis.url())
        + &consumer(
            "slow",
            &slow_vendor.url(),
            &module("slow", &wasm("sy_test_loop"), "deadline = \"10s\""),
        )
        + &consumer("fast", &fast_vendor.url(), "");
    let mut router = Router::start(&cfg);
    // More looping calls than there are threads of any kind.
    let stuck = 2 * cores + 2;
    let batch: Vec<Value> = (0..stuck)
        .map(|i| json!({"id": format!("loop{i}"), "topic": "customer.a.updated", "account_id": format!("l{i}")}))
        .collect();
    post(&router, Value::Array(batch)).await;
    eventually(
        Duration::from_secs(10),
        "the fast consumer got the first batch",
        || async { (fast_vendor.applied().len() == stuck).then_some(()) },
    )
    .await;
    // The slow consumer's calls are now looping (or queued behind ones that are).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        let t = std::time::Instant::now();
        let id = format!("probe{i}");
        post(
            &router,
            json!({"id": id, "topic": "customer.a.updated", "account_id": format!("p{i}")}),
        )
        .await;
        let accepted = t.elapsed();
        eventually(
            Duration::from_secs(30),
            "the probe is delivered",
            || async {
                fast_vendor
                    .applied()
                    .iter()
                    .any(|r| r.key == id)
                    .then_some(())
            },
        )
        .await;
        let delivered = t.elapsed();
        assert!(
            accepted < Duration::from_secs(1) && delivered < Duration::from_secs(2),
            "probe {i}: accepted after {accepted:?}, delivered after {delivered:?}"
        );
    }
    assert!(slow_vendor.requests().is_empty());
    let t = std::time::Instant::now();
    let st = router.terminate();
    assert!(st.success(), "{st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "SIGTERM took {:?} with modules at their deadline",
        t.elapsed()
    );
}

/// `switchyard dlq show` of one event.
fn dlq_show(router: &Router, consumer: &str, id: &str) -> Option<Value> {
    let out = std::process::Command::new(bin())
        .args(["dlq", "show", "--config"])
        .arg(&router.config_path)
        .args(["--consumer", consumer, id])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The contract: a module's headers replace configured headers of the same
/// name (case-insensitive) — endpoint headers, the content type, the
/// `authorization` of `endpoint.auth` — instead of being sent next to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_headers_replace_configured_ones_of_the_same_name() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let modules = module("hdr", &wasm("sy_test_headers"), "");
    let cfg = base_config(&redis.url())
        + &consumer("hdr", &vendor.url(), &modules)
        + "[consumers.hdr.endpoint.headers]\n\"X-Source\" = \"config\"\n\"X-Kept\" = \"config\"\n"
        + "[consumers.hdr.endpoint.auth]\ntype = \"bearer\"\ntoken = \"config-token\"\n";
    let router = Router::start(&cfg);
    post(
        &router,
        json!([
            {"id": "h1", "topic": "customer.a.updated", "account_id": "1",
             "data": {"content_type": "application/x-module",
                      "headers": [["Authorization", "Bearer module-token"], ["x-source", "module"],
                                  ["Content-Type", "application/x-module-header"]]}},
            {"id": "h2", "topic": "customer.a.updated", "account_id": "2", "data": {}},
        ]),
    )
    .await;
    eventually(Duration::from_secs(20), "both events delivered", || async {
        (vendor.applied().len() == 2).then_some(())
    })
    .await;
    let reqs = vendor.requests();
    let lines = |id: &str, name: &str| -> Vec<String> {
        let r = reqs.iter().find(|r| r.key == id).unwrap();
        r.header_lines
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(lines("h1", "authorization"), ["Bearer module-token"]);
    assert_eq!(lines("h1", "x-source"), ["module"]);
    assert_eq!(lines("h1", "content-type"), ["application/x-module-header"]);
    assert_eq!(lines("h1", "x-kept"), ["config"]);
    assert_eq!(lines("h1", "idempotency-key"), ["h1"]);
    // Without module headers the configured ones go out, once each.
    assert_eq!(lines("h2", "authorization"), ["Bearer config-token"]);
    assert_eq!(lines("h2", "x-source"), ["config"]);
    assert_eq!(lines("h2", "content-type"), ["text/plain"]);
}

/// A header name or value from a module that is not valid HTTP can never be
/// sent: the event goes to the DLQ on the first attempt, with a reason naming
/// the module and the header (not its value), and nothing reaches the vendor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_header_from_a_module_is_dead_lettered_at_once() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let modules = module("hdr", &wasm("sy_test_headers"), "");
    let router =
        Router::start(&(base_config(&redis.url()) + &consumer("hdr", &vendor.url(), &modules)));
    post(
        &router,
        json!([
            {"id": "bad-name", "topic": "customer.a.updated", "account_id": "1",
             "data": {"headers": [["x bad name", "v"]]}},
            {"id": "bad-value", "topic": "customer.a.updated", "account_id": "2",
             "data": {"headers": [["x-note", "line\nbreak-sy-secret"]]}},
            {"id": "bad-type", "topic": "customer.a.updated", "account_id": "3",
             "data": {"content_type": "text/plain\r\nx-injected: 1"}},
            {"id": "fine", "topic": "customer.a.updated", "account_id": "4",
             "data": {"headers": [["x-note", "ok"]]}},
        ]),
    )
    .await;
    for (id, needle) in [
        ("bad-name", "\"x bad name\""),
        ("bad-value", "\"x-note\""),
        ("bad-type", "content-type"),
    ] {
        let e = eventually(
            Duration::from_secs(20),
            &format!("{id} in the DLQ"),
            || async { dlq_show(&router, "hdr", id) },
        )
        .await;
        let reason = e["fields"]["reason"].as_str().unwrap();
        assert!(reason.contains("module sy_test_headers"), "{id}: {reason}");
        assert!(reason.contains(needle), "{id}: {reason}");
        assert!(!reason.contains("sy-secret"), "{id}: {reason}");
        assert_eq!(e["fields"]["attempts"], "1", "{id}: not retried: {e}");
    }
    eventually(
        Duration::from_secs(20),
        "the valid event is delivered",
        || async {
            vendor
                .applied()
                .iter()
                .any(|r| r.key == "fine")
                .then_some(())
        },
    )
    .await;
    assert_eq!(vendor.requests().len(), 1, "only the valid event was sent");
}
