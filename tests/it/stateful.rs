//! Stateful modules (contract 0.2 `kv` and `emit`) in the running router:
//! state is applied and events are emitted exactly once per event, across
//! retries (the vendor fails the first attempts), a SIGKILL of the router
//! while a delivery is in flight, and a rewind that redelivers everything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::startup::wasm;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::{Reply, Vendor};
use crate::support::{eventually, TOKEN};

fn config(redis: &str, esp: &str, parent: &str) -> String {
    base_config(redis)
        + &format!(
            r#"
[consumers.counter]
topics = ["customer.banner-*.*"]
start = "earliest"
[consumers.counter.endpoint]
url = "{esp}"
[consumers.counter.retry]
initial = "20ms"
max_delay = "50ms"
max_attempts = 10
[[consumers.counter.modules]]
path = "{path}"
deadline = "5s"
emit_topics = ["customer.parent.*"]

[consumers.parent]
topics = ["customer.parent.*"]
start = "earliest"
[consumers.parent.endpoint]
url = "{parent}"
"#,
            path = wasm("sy_test_stateful").display()
        )
}

async fn post(router: &Router, id: &str) {
    let resp = reqwest::Client::new()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"id": id, "topic": "customer.banner-a.tier_changed", "account_id": "42",
                      "data": {"tier": "gold"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// The 2xx answers of `vendor` to event `id` (the Idempotency-Key).
fn ok_bodies(vendor: &Vendor, id: &str) -> Vec<Value> {
    vendor
        .requests()
        .into_iter()
        .filter(|r| r.key == id && (200..300).contains(&r.status))
        .map(|r| r.body)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_emits_apply_once_across_retries_kill_and_rewind() {
    let redis = RedisServer::start();
    let esp = Vendor::start().await;
    let parent = Vendor::start().await;
    // e2 fails twice before it succeeds: the module runs three times on it.
    let e2_tries = Arc::new(AtomicUsize::new(0));
    let t = e2_tries.clone();
    esp.script(move |r| {
        if r.key == "e2" && t.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::Status(503)
        } else if r.key == "e3" {
            Reply::Slow(Duration::from_secs(3), 200)
        } else {
            Reply::Status(200)
        }
    });
    let mut router = Router::start(&config(&redis.url(), &esp.url(), &parent.url()));
    post(&router, "e1").await;
    eventually(Duration::from_secs(20), "e1 delivered", || async {
        (!ok_bodies(&esp, "e1").is_empty()).then_some(())
    })
    .await;
    post(&router, "e2").await;
    eventually(Duration::from_secs(20), "e2 delivered", || async {
        (!ok_bodies(&esp, "e2").is_empty()).then_some(())
    })
    .await;
    assert_eq!(e2_tries.load(Ordering::SeqCst), 3, "two failures, then 2xx");
    // The count: 1 after e1, 2 after e2 — the failed attempts applied nothing.
    assert_eq!(ok_bodies(&esp, "e1"), vec![json!(1)]);
    assert_eq!(ok_bodies(&esp, "e2"), vec![json!(2)]);

    // e3 is in flight (the vendor holds the answer) when the router dies.
    // (The fake vendor records a request when it answers: give the router
    // a second to send it.)
    post(&router, "e3").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| router.kill());
    esp.script(|_| Reply::Status(200));
    tokio::task::block_in_place(|| router.restart());
    eventually(
        Duration::from_secs(30),
        "e3 delivered after the restart",
        || async { (!ok_bodies(&esp, "e3").is_empty()).then_some(()) },
    )
    .await;
    // Each answer to e3 (the held one may still complete) carried count 3:
    // the killed attempt applied nothing.
    let e3 = ok_bodies(&esp, "e3");
    assert!(
        !e3.is_empty() && e3.iter().all(|b| *b == json!(3)),
        "{e3:?}"
    );

    // The account's first event emitted exactly one parent event, with the
    // deterministic id, delivered to the parent consumer once.
    eventually(
        Duration::from_secs(20),
        "parent event delivered",
        || async { (!parent.requests().is_empty()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = parent.requests();
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].body["topic"], "customer.parent.first_seen");
    assert_eq!(p[0].body["account_id"], "42");
    assert_eq!(p[0].body["data"], json!({"first": "e1"}));
    assert_eq!(p[0].body["attributes"]["emitted_from"], "e1");

    // Rewind: every event is delivered again, and the module runs again on
    // each, but their state changes and emits were committed with their
    // first outcome: nothing is applied or emitted a second time.
    let out = std::process::Command::new(bin())
        .args(["consumer", "rewind", "--config"])
        .arg(&router.config_path)
        .args(["counter", "--to", "earliest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(30),
        "redelivered after the rewind",
        || async { ok_bodies(&esp, "e3").contains(&json!(4)).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // The module read count 3 on each rerun (3 + 1 = 4, never committed):
    // had a rerun applied its write, the next would read 4 and send 5.
    assert_eq!(ok_bodies(&esp, "e1").last(), Some(&json!(4)));
    assert_eq!(ok_bodies(&esp, "e2").last(), Some(&json!(4)));
    assert_eq!(ok_bodies(&esp, "e3").last(), Some(&json!(4)));
    assert_eq!(parent.requests().len(), 1, "no second parent event");
}

fn reconcile_config(redis: &str, parent: &str, unused: &str) -> String {
    base_config(redis)
        + &format!(
            r#"
[consumers.reconcile]
topics = ["customer.*.*", "reconcile.identity.*"]
start = "earliest"
[consumers.reconcile.endpoint]
url = "{unused}"
[[consumers.reconcile.modules]]
path = "{path}"
deadline = "5s"
emit_topics = ["reconcile.identity.*", "customer.parent.*"]

[consumers.parent]
topics = ["customer.parent.*"]
start = "earliest"
[consumers.parent.endpoint]
url = "{parent}"
[consumers.parent.retry]
initial = "20ms"
max_delay = "50ms"
max_attempts = 20
"#,
            path = wasm("reconcile").display()
        )
}

async fn post_customer(
    router: &Router,
    id: &str,
    banner: &str,
    account: &str,
    change: &str,
    email: &str,
) {
    let resp = reqwest::Client::new()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"id": id, "topic": format!("customer.{banner}.{change}"), "account_id": account,
                      "data": {"email": email, "tier": "gold"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// Parent-topic events received, by topic, counting distinct event ids.
fn parent_events(v: &Vendor, topic: &str) -> std::collections::BTreeSet<String> {
    v.requests()
        .into_iter()
        .filter(|r| r.body["topic"] == topic && (200..300).contains(&r.status))
        .map(|r| r.key)
        .collect()
}

/// Issue 18: a customer in banner A and banner B yields exactly one
/// `customer.parent.cross_banner_merged`, even though the parent consumer's
/// first attempts fail (retried), the router is killed right after the
/// second banner's event, and the reconciliation consumer is rewound.
/// Later changes are mirrored to the parent topic in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_in_two_banners_merges_exactly_once_through_retries_kills_and_rewind() {
    let redis = RedisServer::start();
    let parent = Vendor::start().await;
    let unused = Vendor::start().await;
    let tries = Arc::new(AtomicUsize::new(0));
    let t = tries.clone();
    parent.script(move |r| {
        if r.body["topic"] == "customer.parent.cross_banner_merged"
            && t.fetch_add(1, Ordering::SeqCst) < 2
        {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    });
    let mut router = Router::start(&reconcile_config(
        &redis.url(),
        &parent.url(),
        &unused.url(),
    ));
    post_customer(
        &router,
        "a1",
        "banner-a",
        "A-17",
        "created",
        "Ada@Example.com ",
    )
    .await;
    post_customer(
        &router,
        "x1",
        "banner-a",
        "A-99",
        "created",
        "other@example.com",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    post_customer(
        &router,
        "b1",
        "banner-b",
        "B-3",
        "created",
        "ada@example.com",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    tokio::task::block_in_place(|| router.kill());
    tokio::task::block_in_place(|| router.restart());
    eventually(Duration::from_secs(30), "the merge event", || async {
        (!parent_events(&parent, "customer.parent.cross_banner_merged").is_empty()).then_some(())
    })
    .await;
    assert!(
        tries.load(Ordering::SeqCst) >= 3,
        "the merge delivery was retried"
    );
    // A later change in banner A is mirrored.
    post_customer(
        &router,
        "a2",
        "banner-a",
        "A-17",
        "tier_changed",
        "ada@example.com",
    )
    .await;
    post_customer(
        &router,
        "a3",
        "banner-a",
        "A-17",
        "email_changed",
        "ada@example.com",
    )
    .await;
    eventually(Duration::from_secs(30), "the mirrored changes", || async {
        (!parent_events(&parent, "customer.parent.email_changed").is_empty()).then_some(())
    })
    .await;

    // Rewind the reconciliation consumer: every customer event runs again.
    let out = std::process::Command::new(bin())
        .args(["consumer", "rewind", "--config"])
        .arg(&router.config_path)
        .args(["reconcile", "--to", "earliest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let merged = parent_events(&parent, "customer.parent.cross_banner_merged");
    assert_eq!(merged.len(), 1, "exactly one merge event: {merged:?}");
    let m = parent
        .requests()
        .into_iter()
        .find(|r| r.body["topic"] == "customer.parent.cross_banner_merged")
        .unwrap();
    assert_eq!(
        m.body["data"]["banners"],
        json!({"banner-a": "A-17", "banner-b": "B-3"})
    );
    assert_eq!(
        parent_events(&parent, "customer.parent.tier_changed").len(),
        1
    );
    assert_eq!(
        parent_events(&parent, "customer.parent.email_changed").len(),
        1
    );
    // Mirror order: per identity, as the changes happened.
    let order: Vec<String> = parent
        .requests()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status) && !r.repeat)
        .map(|r| r.body["topic"].as_str().unwrap_or_default().to_string())
        .collect();
    let pos = |t: &str| order.iter().position(|x| x == t).unwrap();
    assert!(pos("customer.parent.cross_banner_merged") < pos("customer.parent.tier_changed"));
    assert!(pos("customer.parent.tier_changed") < pos("customer.parent.email_changed"));
    // The customer only in banner A never reaches the parent topics.
    assert!(parent
        .requests()
        .iter()
        .all(|r| r.body["data"]["identity"] != json!(sha_email("other@example.com"))));
}

fn sha_email(e: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(e.trim().to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
