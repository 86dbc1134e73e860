//! Delivery: per-account order, retries, DLQ with parking and replay,
//! checkpoints across SIGKILL, dedup, Retry-After, rate limit, backfill.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::{Reply, Vendor};
use crate::support::{eventually, TOKEN};

/// A consumer block with fast retries for tests.
pub(crate) fn consumer(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"
[consumers.{name}]
topics = ["customer.*", "order.*"]
start = "earliest"
concurrency = 16
timeout = "2s"
{extra}
[consumers.{name}.endpoint]
url = "{url}"
[consumers.{name}.retry]
initial = "20ms"
max_delay = "200ms"
max_attempts = 50
max_age = "60s"
"#
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Post `n` events per account (ids `<acct>-<i>`) in batches; returns ids per account in order.
pub(crate) async fn post_events(
    r: &Router,
    accounts: &[String],
    n: usize,
) -> HashMap<String, Vec<String>> {
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..n {
        let batch: Vec<Value> = accounts
            .iter()
            .map(|a| {
                let id = format!("{a}-{i}");
                ids.entry(a.clone()).or_default().push(id.clone());
                json!({"id": id, "topic": "customer.banner-a.updated", "account_id": a, "data": {"i": i}})
            })
            .collect();
        let resp = client()
            .post(r.url("/v1/events"))
            .bearer_auth(TOKEN)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    }
    ids
}

pub(crate) async fn wait_applied(v: &Vendor, n: usize, secs: u64) {
    eventually(
        Duration::from_secs(secs),
        &format!("{n} events applied at the vendor"),
        || async { (v.applied().len() >= n).then_some(()) },
    )
    .await;
}

pub(crate) fn accounts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("acct{i}")).collect()
}

pub(crate) fn assert_order(v: &Vendor, expected: &HashMap<String, Vec<String>>) {
    let got = v.applied_by_account();
    for (a, ids) in expected {
        assert_eq!(got.get(a), Some(ids), "order of account {a}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_account_order_holds_under_concurrency_and_failures() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    // Every third request fails with a retryable status; some are slow.
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    vendor.script(move |_| match n2.fetch_add(1, Ordering::SeqCst) % 7 {
        0 => Reply::Status(503),
        3 => Reply::RetryAfter(0),
        5 => Reply::Slow(Duration::from_millis(30), 200),
        _ => Reply::Status(200),
    });
    let router = Router::start(&(base_config(&redis.url()) + &consumer("esp", &vendor.url(), "")));
    let accts = accounts(12);
    let expected = post_events(&router, &accts, 25).await;
    wait_applied(&vendor, 12 * 25, 60).await;
    assert_order(&vendor, &expected);
    assert_eq!(
        vendor.applied().len(),
        300,
        "every event applied exactly once"
    );
    // Every request carried the event id as Idempotency-Key and the canonical event as JSON.
    let r = &vendor.requests()[0];
    assert!(r.key.starts_with("acct"), "{:?}", r.headers);
    assert_eq!(r.body["topic"], "customer.banner-a.updated");
    assert_eq!(r.headers["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_down_for_a_while_then_back_loses_nothing() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    vendor.down();
    let router = Router::start(&(base_config(&redis.url()) + &consumer("crm", &vendor.url(), "")));
    let accts = accounts(8);
    let expected = post_events(&router, &accts, 20).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(vendor.applied().len(), 0);
    vendor.up().await;
    wait_applied(&vendor, 160, 60).await;
    assert_order(&vendor, &expected);
    assert_eq!(vendor.applied().len(), 160);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_delivers_everything_once() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    vendor.script(|_| Reply::Slow(Duration::from_millis(2), 200));
    let mut router =
        Router::start(&(base_config(&redis.url()) + &consumer("sms", &vendor.url(), "")));
    let accts = accounts(20);
    let expected = post_events(&router, &accts, 40).await; // 800 events
                                                           // Kill while delivery is in full swing.
    eventually(Duration::from_secs(20), "delivery under way", || async {
        (vendor.applied().len() > 100).then_some(())
    })
    .await;
    let before_kill = vendor.applied().len();
    tokio::task::block_in_place(|| router.kill());
    assert!(
        before_kill < 800,
        "the kill happened mid-stream ({before_kill} applied)"
    );
    tokio::task::block_in_place(|| router.restart());
    wait_applied(&vendor, 800, 60).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(vendor.applied().len(), 800, "each event took effect once");
    assert_order(&vendor, &expected);
    // Redeliveries the endpoint had already acknowledged: only those acknowledged by the
    // endpoint but not yet recorded at the kill may be sent again — at most one per
    // account, because an account's next event is sent only after the previous outcome
    // is recorded.
    let redundant = vendor.redundant_requests();
    assert!(
        redundant <= accts.len(),
        "{redundant} redundant requests; at most one per account ({}) may be in the crash window",
        accts.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_event_parks_its_account_and_replay_restores_order() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    // acct-bad's event #2 is rejected (400: not retryable) until fixed.
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = fixed.clone();
    vendor.script(move |r| {
        if r.key == "acct-bad-2" && !f2.load(Ordering::SeqCst) {
            Reply::Status(400)
        } else {
            Reply::Status(200)
        }
    });
    let router = Router::start(&(base_config(&redis.url()) + &consumer("esp", &vendor.url(), "")));
    let accts = vec!["acct-bad".to_string(), "acct-good".to_string()];
    post_events(&router, &accts, 6).await;
    // acct-good flows; acct-bad delivers 0,1 and parks 3,4,5 behind 2.
    eventually(
        Duration::from_secs(20),
        "good account delivered and bad one parked",
        || async {
            let m = vendor.applied_by_account();
            (m.get("acct-good").map(Vec::len) == Some(6)
                && m.get("acct-bad").map(Vec::len) == Some(2))
            .then_some(())
        },
    )
    .await;
    let list = std::process::Command::new(bin())
        .args(["dlq", "list", "--config"])
        .arg(&router.config_path)
        .args(["--consumer", "esp", "--account", "acct-bad"])
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let entries: Vec<Value> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["fields"]["event_id"].as_str().unwrap(),
                e["fields"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("acct-bad-2", "failed"),
            ("acct-bad-3", "parked"),
            ("acct-bad-4", "parked"),
            ("acct-bad-5", "parked")
        ]
    );
    assert_eq!(entries[0]["fields"]["status"], "400");
    assert!(entries[0]["fields"]["reason"]
        .as_str()
        .unwrap()
        .contains("HTTP 400"));

    // A new event for the parked account also waits behind the failure.
    let resp = client()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "acct-bad-6", "topic": "customer.x.y", "account_id": "acct-bad"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(vendor.applied_by_account()["acct-bad"].len(), 2);

    fixed.store(true, Ordering::SeqCst);
    let out = std::process::Command::new(bin())
        .args(["dlq", "replay", "--config"])
        .arg(&router.config_path)
        .args(["--consumer", "esp", "--account", "acct-bad"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("5 event(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eventually(
        Duration::from_secs(20),
        "replayed events delivered",
        || async { (vendor.applied_by_account()["acct-bad"].len() == 7).then_some(()) },
    )
    .await;
    let order: Vec<String> = (0..7).map(|i| format!("acct-bad-{i}")).collect();
    assert_eq!(vendor.applied_by_account()["acct-bad"], order);

    // After the replay the account flows normally again.
    let resp = client()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "acct-bad-7", "topic": "customer.x.y", "account_id": "acct-bad"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    eventually(
        Duration::from_secs(10),
        "post-replay event delivered",
        || async { (vendor.applied_by_account()["acct-bad"].len() == 8).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_mode_lets_later_events_flow_and_exhausted_retries_dead_letter() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    vendor.script(|r| {
        if r.key == "a1-1" {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        }
    });
    let cfg = base_config(&redis.url())
        + &consumer("ads", &vendor.url(), "on_failure = \"skip\"")
            .replace("max_attempts = 50", "max_attempts = 3");
    let router = Router::start(&cfg);
    post_events(&router, &["a1".to_string()], 4).await;
    eventually(
        Duration::from_secs(20),
        "later events delivered past the failure",
        || async { (vendor.applied_by_account().get("a1").map(Vec::len) == Some(3)).then_some(()) },
    )
    .await;
    assert_eq!(
        vendor.applied_by_account()["a1"],
        vec!["a1-0", "a1-2", "a1-3"]
    );
    assert_eq!(
        vendor.requests().iter().filter(|r| r.key == "a1-1").count(),
        3,
        "max_attempts = 3"
    );
    let out = std::process::Command::new(bin())
        .args(["dlq", "show", "--config"])
        .arg(&router.config_path)
        .args(["--consumer", "ads", "a1-1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["fields"]["attempts"], "3");
    assert!(
        e["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("retries exhausted"),
        "{e}"
    );
    assert_eq!(e["event"]["id"], "a1-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let first = Arc::new(AtomicUsize::new(0));
    let f = first.clone();
    vendor.script(move |_| {
        if f.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::RetryAfter(2)
        } else {
            Reply::Status(200)
        }
    });
    let router = Router::start(&(base_config(&redis.url()) + &consumer("push", &vendor.url(), "")));
    post_events(&router, &["r1".to_string()], 1).await;
    wait_applied(&vendor, 1, 20).await;
    let reqs = vendor.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, Retry-After said 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_shared_by_all_partitions() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let cfg = base_config(&redis.url())
        + &consumer(
            "loyalty",
            &vendor.url(),
            "rate_limit = { per_second = 20, burst = 5 }",
        );
    let router = Router::start(&cfg);
    post_events(&router, &accounts(10), 6).await; // 60 events over 8 partitions
    wait_applied(&vendor, 60, 30).await;
    let reqs = vendor.requests();
    let t0 = reqs[0].at;
    let span = reqs.last().unwrap().at - t0;
    // 5 in the burst, then 20/s: 55 more need at least 2.75 s.
    assert!(
        span >= Duration::from_millis(2500),
        "60 requests took {span:?}"
    );
    // No one-second window holds more than burst + rate.
    for (i, r) in reqs.iter().enumerate() {
        let n = reqs[i..]
            .iter()
            .take_while(|x| x.at - r.at < Duration::from_secs(1))
            .count();
        assert!(n <= 26, "{n} requests within one second");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_consumer_backfills_and_rewind_redelivers_without_touching_others() {
    let redis = RedisServer::start();
    let esp = Vendor::start().await;
    let crm = Vendor::start().await;
    let mut router = Router::start(&(base_config(&redis.url()) + &consumer("esp", &esp.url(), "")));
    let expected = post_events(&router, &accounts(5), 10).await;
    wait_applied(&esp, 50, 20).await;
    // Add a consumer that starts at the earliest retained event.
    let cfg =
        std::fs::read_to_string(&router.config_path).unwrap() + &consumer("crm", &crm.url(), "");
    std::fs::write(&router.config_path, cfg).unwrap();
    tokio::task::block_in_place(|| router.restart());
    wait_applied(&crm, 50, 20).await;
    assert_order(&crm, &expected);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        esp.requests().len(),
        50,
        "the existing consumer was not touched"
    );

    // Rewind crm to earliest: it gets everything again (a new epoch of its dedup record).
    let out = std::process::Command::new(bin())
        .args(["consumer", "rewind", "--config"])
        .arg(&router.config_path)
        .args(["crm", "--to", "earliest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(20),
        "rewound consumer re-sent everything",
        || async { (crm.requests().len() >= 100).then_some(()) },
    )
    .await;
    assert_eq!(esp.requests().len(), 50);

    let st = std::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(&router.config_path)
        .output()
        .unwrap();
    assert!(st.status.success());
    let doc: Value = serde_json::from_slice(&st.stdout).unwrap();
    let lines: Vec<Value> = doc["consumers"]
        .as_object()
        .unwrap()
        .values()
        .cloned()
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["dlq"] == 0), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_account_sets_events_aside_and_keeps_order_while_others_flow() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healed.clone();
    // The hot account's endpoint fails until healed; others always succeed.
    vendor.script(move |r| {
        if r.account == "hot" && !h.load(Ordering::SeqCst) {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    });
    let cfg = base_config(&redis.url())
        + &consumer(
            "esp",
            &vendor.url(),
            "max_account_buffer = 3\nmax_partition_buffer = 10",
        );
    let router = Router::start(&cfg);
    let mut expected = post_events(&router, &["hot".to_string()], 30).await;
    expected.extend(post_events(&router, &accounts(6), 10).await);
    // Everyone else is delivered while "hot" keeps failing: no head-of-line blocking,
    // although "hot" has 10x more waiting than its partition may hold in memory.
    wait_applied(&vendor, 60, 30).await;
    assert!(vendor.applied_by_account().get("hot").is_none());
    healed.store(true, Ordering::SeqCst);
    wait_applied(&vendor, 90, 30).await;
    assert_order(&vendor, &expected);
    let mut c = redis.conn();
    let deferred: i64 = redis::cmd("EXISTS")
        .arg(format!(
            "sy:c:esp:defer:{{p{}}}:hot",
            switchyard_store::log::partition_for("hot", 8)
        ))
        .query(&mut c)
        .unwrap();
    assert_eq!(deferred, 0, "the defer list drained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_outside_the_topics_are_not_sent() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let cfg = base_config(&redis.url())
        + &consumer("esp", &vendor.url(), "").replace(
            "topics = [\"customer.*\", \"order.*\"]",
            "topics = [\"customer.*.email_changed\"]",
        );
    let router = Router::start(&cfg);
    let batch = json!([
        {"id": "e1", "topic": "customer.a.email_changed", "account_id": "1"},
        {"id": "e2", "topic": "customer.a.updated", "account_id": "1"},
        {"id": "e3", "topic": "order.placed", "account_id": "1"},
        {"id": "e4", "topic": "customer.b.email_changed", "account_id": "1"},
    ]);
    let resp = client()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    wait_applied(&vendor, 2, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(vendor.applied_by_account()["1"], vec!["e1", "e4"]);
    let started = Instant::now();
    let st = std::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(&router.config_path)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&st.stdout).unwrap();
    let s = doc["consumers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(
        s["lag"],
        0,
        "filtered events are acknowledged too: {s} ({:?})",
        started.elapsed()
    );
    assert_eq!(s["pending"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_workers_bound_the_accounts_delivered_at_once() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    // Every answer takes 300 ms; when each request arrived.
    let arrived = Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let a = arrived.clone();
    vendor.script(move |_| {
        a.lock().unwrap().push(Instant::now());
        Reply::Slow(Duration::from_millis(300), 200)
    });
    // 16 requests may be in flight, but only 2 accounts are delivered at once.
    let cfg = base_config(&redis.url()) + &consumer("esp", &vendor.url(), "account_workers = 2");
    let router = Router::start(&cfg);
    let expected = post_events(&router, &accounts(8), 2).await;
    wait_applied(&vendor, 16, 60).await;
    assert_order(&vendor, &expected);
    let mut t = arrived.lock().unwrap().clone();
    t.sort();
    // No three requests within one answer's time: at most two accounts at once.
    for w in t.windows(3) {
        assert!(
            w[2] - w[0] >= Duration::from_millis(250),
            "three requests within {:?}: more than 2 account tasks at once",
            w[2] - w[0]
        );
    }
}
