//! `switchyard new module` and `switchyard transform diff`.
//!
//! Each language's scaffold builds with its own build script, passes its
//! own unit test, and passes `switchyard transform test` on its sample
//! event, as a user would run them from the scaffold's README. Then a
//! scaffold is changed and rebuilt, and `transform diff` over a real log
//! shows exactly the changed field, for the consumer's events only, and
//! sends nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::Vendor;
use crate::support::TOKEN;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Build environment of a Rust scaffold: the transforms' lock file and
/// target dir, so the guest SDK's dependencies are not compiled again.
fn rust_env<'a>(cmd: &'a mut Command, root: &Path) -> &'a mut Command {
    std::fs::copy(
        repo().join("transforms/Cargo.lock"),
        root.join("Cargo.lock"),
    )
    .unwrap();
    cmd.env(
        "CARGO_TARGET_DIR",
        repo().join("transforms/target/scaffold"),
    )
}

fn scaffold(dir: &Path, name: &str, lang: &str) -> PathBuf {
    run(
        Command::new(bin())
            .args(["new", "module", name, "--lang", lang, "--dir"])
            .arg(dir),
        &format!("switchyard new module {name} --lang {lang}"),
    );
    let root = dir.join(name);
    assert!(root.join("README.md").is_file());
    assert!(root.join("sample-event.json").is_file());
    root
}

fn build(root: &Path, lang: &str) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("build.sh"));
    if lang == "rust" {
        rust_env(&mut cmd, root);
    }
    run(&mut cmd, &format!("{lang} scaffold build.sh"));
    let name = root.file_name().unwrap().to_string_lossy().to_string();
    let wasm = root.join("build").join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{} missing after build.sh", wasm.display());
    wasm
}

fn transform_test(wasm: &Path, event: &Path, set: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(bin());
    // Interpreter guests need more than the default 100 ms on a busy machine.
    cmd.args(["transform", "test", "--deadline", "5s", "--module"])
        .arg(wasm);
    for s in set {
        cmd.args(["--set", s]);
    }
    cmd.arg("--event").arg(event);
    let out = run(&mut cmd, "switchyard transform test");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The scaffold's request for its sample event (every language the same).
fn assert_sample_request(lines: &[Value], lang: &str) {
    assert_eq!(lines.len(), 1, "{lang}: {lines:?}");
    let r = &lines[0];
    assert_eq!(r["method"], "POST", "{lang}: {r}");
    assert_eq!(r["path"], "/events", "{lang}: {r}");
    assert_eq!(r["content_type"], "application/json", "{lang}: {r}");
    let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"account": "acct-1001", "event": "customer.banner-a.email_changed",
               "changed": {"email": "ada@example.com", "tier": "gold"}}),
        "{lang}"
    );
}

#[test]
fn new_modules_build_test_and_run_in_every_language() {
    let dir = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js"] {
        let name = format!("hello-{lang}");
        let root = scaffold(dir.path(), &name, lang);
        // The scaffold's own unit test, as its README says to run it.
        match lang {
            "rust" => {
                let mut cmd = Command::new("cargo");
                cmd.arg("test").current_dir(&root);
                rust_env(&mut cmd, &root);
                run(&mut cmd, "cargo test in the Rust scaffold");
            }
            "python" => {
                run(
                    Command::new("python3")
                        .args(["-m", "unittest", "-v"])
                        .current_dir(&root),
                    "python3 -m unittest in the Python scaffold",
                );
            }
            _ => {
                run(
                    Command::new("node").arg("--test").current_dir(&root),
                    "node --test in the JS scaffold",
                );
            }
        }
        let wasm = build(&root, lang);
        let sample = root.join("sample-event.json");
        assert_sample_request(&transform_test(&wasm, &sample, &[]), lang);
        // Its `topics` config drops what it does not match.
        let dropped = transform_test(&wasm, &sample, &["topics=order.*"]);
        assert!(
            dropped.len() == 1 && dropped[0].get("dropped").is_some(),
            "{lang}: {dropped:?}"
        );
    }
    // A second scaffold of the same name is refused, naming the way out.
    let out = Command::new(bin())
        .args(["new", "module", "hello-js", "--lang", "js", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_diff_shows_the_changed_field_on_a_real_log_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = tokio::task::block_in_place(|| scaffold(dir.path(), "esp-sync", "rust"));
    let v1 = tokio::task::block_in_place(|| build(&root, "rust"));
    let current = dir.path().join("esp-sync-v1.wasm");
    std::fs::copy(&v1, &current).unwrap();
    // The new build renames one field of the body.
    let lib = root.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    assert!(src.contains("\"event\": ev.topic"));
    std::fs::write(
        &lib,
        src.replace("\"event\": ev.topic", "\"event_name\": ev.topic"),
    )
    .unwrap();
    let v2 = tokio::task::block_in_place(|| build(&root, "rust"));

    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    // The consumer delivers normally; diff must not add a single request.
    let config = base_config(&redis.url())
        + &format!(
            r#"
[consumers.esp]
topics = ["customer.*"]
start = "earliest"
[consumers.esp.endpoint]
url = "{}"
[[consumers.esp.modules]]
path = "{}"
"#,
            vendor.url(),
            current.display()
        );
    let router = tokio::task::block_in_place(|| Router::start(&config));
    let events: Vec<Value> = (1..=5)
        .map(|i| {
            json!({"id": format!("c-{i}"), "topic": "customer.banner-a.email_changed",
                   "account_id": format!("acct-{i}"), "op": "update",
                   "before": {"email": format!("old{i}@example.com")},
                   "after": {"email": format!("new{i}@example.com")}})
        })
        .chain([
            json!({"id": "o-1", "topic": "order.banner-a.created", "account_id": "acct-1",
                        "data": {"total": 3}}),
        ])
        .collect();
    // One request each, a few ms apart: "newest" across partitions is by
    // stream time, and events of one millisecond have no order between
    // partitions.
    for ev in &events {
        let resp = reqwest::Client::new()
            .post(router.url("/v1/events"))
            .bearer_auth(TOKEN)
            .json(ev)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    crate::support::eventually(Duration::from_secs(30), "5 deliveries", || async {
        (vendor.requests().len() >= 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vendor.requests().len(), 5, "one request per customer event");
    let cfg_path = dir.path().join("switchyard.toml");
    std::fs::write(&cfg_path, &config).unwrap();

    let diff = |module: &Path, extra: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(["transform", "diff", "--config"])
            .arg(&cfg_path)
            .args(["--consumer", "esp", "--module"])
            .arg(module)
            .args(extra);
        cmd.output().unwrap()
    };
    // The same build: nothing changes, exit 0.
    let same = tokio::task::block_in_place(|| diff(&current, &["--last", "10"]));
    let text = String::from_utf8_lossy(&same.stdout).to_string();
    assert_eq!(
        same.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(
        text.contains("5 events of consumer `esp`: 0 changed, 5 unchanged"),
        "{text}"
    );

    // The new build: every event changes, in exactly that field; exit 1.
    let changed = tokio::task::block_in_place(|| diff(&v2, &["--last", "3"]));
    let text = String::from_utf8_lossy(&changed.stdout).to_string();
    assert_eq!(
        changed.status.code(),
        Some(1),
        "{text}\n{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    assert!(
        text.contains("3 events of consumer `esp`: 3 changed, 0 unchanged"),
        "{text}"
    );
    // The newest three, oldest first; the order event is not the consumer's.
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(ids, ["c-3", "c-4", "c-5"], "{text}");
    assert!(
        text.contains("-      \"event\": \"customer.banner-a.email_changed\""),
        "{text}"
    );
    assert!(
        text.contains("+      \"event_name\": \"customer.banner-a.email_changed\""),
        "{text}"
    );
    let removed = text
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .count();
    assert_eq!(removed, 3, "one changed line per event:\n{text}");

    // --json: one line per event with both outcomes.
    let js = tokio::task::block_in_place(|| diff(&v2, &["--last", "1", "--json"]));
    let line: Value = serde_json::from_slice(&js.stdout).unwrap();
    assert_eq!(line["event_id"], "c-5");
    assert_eq!(line["changed"], true);
    assert_eq!(
        line["current"][0]["body"]["event"],
        "customer.banner-a.email_changed"
    );
    assert_eq!(
        line["new"][0]["body"]["event_name"],
        "customer.banner-a.email_changed"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(vendor.requests().len(), 5, "diff sent nothing");
}
