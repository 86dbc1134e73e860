//! Redis restarts empty (no persistence) under a running router: the
//! partition-count guard comes back, a deployment with another count is
//! refused again, and `switchyard status` reports what is true.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, run_expecting_exit, Router};
use crate::support::vendor::Vendor;
use crate::support::{eventually, TOKEN};

fn consumer(url: &str) -> String {
    format!(
        r#"
[consumers.esp]
topics = ["*"]
start = "earliest"
[consumers.esp.endpoint]
url = "{url}"
[consumers.esp.retry]
initial = "20ms"
max_delay = "200ms"
max_attempts = 100
max_age = "60s"
"#
    )
}

async fn post(router: &Router, from: usize, n: usize) {
    let events: Vec<Value> = (from..from + n)
        .map(|i| json!({"id": format!("ev-{i}"), "topic": "customer.x", "account_id": format!("a{}", i % 7)}))
        .collect();
    // Redis may still be coming back: retry 503s like a client would.
    eventually(Duration::from_secs(20), "ingest accepted the batch", || {
        let body = json!(events);
        let url = router.url("/v1/events");
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .ok()?;
            (r.status() == 202).then_some(())
        }
    })
    .await;
}

async fn delivered(vendor: &Vendor, n: usize) {
    eventually(
        Duration::from_secs(30),
        &format!("{n} distinct events delivered"),
        || {
            let ids: HashSet<String> = vendor.requests().iter().map(|r| r.key.clone()).collect();
            async move { (ids.len() >= n).then_some(()) }
        },
    )
    .await;
}

fn status(router: &Router) -> Value {
    let out = std::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(&router.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["consumers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone()
}

fn meta(redis: &RedisServer) -> Option<String> {
    let mut c = redis.client().get_connection().ok()?;
    redis::cmd("HGET")
        .arg("sy:meta")
        .arg("partitions")
        .query(&mut c)
        .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gets_its_partition_guard_back_and_status_tells_the_truth() {
    let mut redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let router = Router::start(&(base_config(&redis.url()) + &consumer(&vendor.url())));
    post(&router, 0, 20).await;
    delivered(&vendor, 20).await;
    assert_eq!(meta(&redis).as_deref(), Some("8"));

    // Redis comes back empty: the guard is gone with everything else.
    redis.restart();
    assert_eq!(meta(&redis), None);

    // The running router writes it again by itself (no ingest needed).
    eventually(Duration::from_secs(10), "sy:meta written again", || {
        let m = meta(&redis);
        async move { (m.as_deref() == Some("8")).then_some(()) }
    })
    .await;
    assert!(
        router
            .logs()
            .contains("the partition count was missing from Redis"),
        "{}",
        router.logs()
    );

    // So a deployment with another partition count is refused again.
    let other = base_config(&redis.url()).replace("partitions = 8", "partitions = 4");
    let (st, err) = run_expecting_exit(&other, Duration::from_secs(20));
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("created with 8 partitions but the config says 4"),
        "{err}"
    );

    // Delivery goes on, and status shows no invented lag.
    post(&router, 20, 30).await;
    delivered(&vendor, 50).await;
    let s = eventually(Duration::from_secs(10), "status settles", || {
        let s = status(&router);
        async move { (s["pending"] == 0).then_some(s) }
    })
    .await;
    assert_eq!(s["lag"], 0, "{s}");
    assert_eq!(s["pending"], 0, "{s}");
    assert_eq!(s["dlq"], 0, "{s}");
}

fn status_of(config: &std::path::Path) -> Value {
    let out = std::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["consumers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone()
}

/// Without a group (Redis lost it and no reader made it again) or with a
/// lag Redis cannot count (a group placed mid-stream), status says so
/// instead of reporting a number it does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_which_partitions_have_no_group_or_an_unknown_lag() {
    let redis = RedisServer::start();
    // Ingest only: nothing reads the log.
    let router = Router::start(&base_config(&redis.url()));
    post(&router, 0, 40).await;
    let mut c = redis.conn();
    let with_events: Vec<u64> = (0..8u64)
        .filter(|p| {
            redis::cmd("XLEN")
                .arg(format!("sy:log:{{p{p}}}"))
                .query::<u64>(&mut c)
                .unwrap()
                > 0
        })
        .collect();
    assert!(with_events.len() > 1, "{with_events:?}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("switchyard.toml");
    std::fs::write(
        &cfg,
        base_config(&redis.url()) + &consumer("http://127.0.0.1:9/"),
    )
    .unwrap();

    let s = status_of(&cfg);
    assert_eq!(s["lag"], 0, "{s}");
    assert_eq!(s["partitions_without_group"], json!(with_events), "{s}");
    assert_eq!(s["lag_unknown_partitions"], json!([]), "{s}");

    // A group placed after an entry in the middle: Redis cannot count its
    // lag (it can for the first and the last entry).
    let p = with_events[0];
    let ids: Vec<String> = redis::cmd("XRANGE")
        .arg(format!("sy:log:{{p{p}}}"))
        .arg("-")
        .arg("+")
        .query::<redis::streams::StreamRangeReply>(&mut c)
        .unwrap()
        .ids
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert!(ids.len() >= 3, "{ids:?}");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("sy:log:{{p{p}}}"))
        .arg("esp")
        .arg(&ids[1])
        .query(&mut c)
        .unwrap();
    let s = status_of(&cfg);
    assert_eq!(s["lag_unknown_partitions"], json!([p]), "{s}");
    assert_eq!(s["lag"], 0, "{s}");
    let without: Vec<u64> = with_events[1..].to_vec();
    assert_eq!(s["partitions_without_group"], json!(without), "{s}");
}

/// While running, a partition count in Redis that disagrees (another
/// deployment wrote it after Redis lost its data) stops appends and
/// readiness until it agrees again: nothing is written with the wrong
/// partitioning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disagreeing_partition_count_found_while_running_stops_appends() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    post(&router, 0, 5).await;
    let mut c = redis.conn();
    let _: () = redis::cmd("HSET")
        .arg("sy:meta")
        .arg("partitions")
        .arg(4)
        .query(&mut c)
        .unwrap();
    let client = reqwest::Client::new();
    let body = eventually(Duration::from_secs(10), "ingest refused", || {
        let req = client
            .post(router.url("/v1/events"))
            .bearer_auth(TOKEN)
            .json(&json!({"id": "late", "topic": "t", "account_id": "1"}))
            .send();
        async move {
            let r = req.await.ok()?;
            (r.status().is_server_error()).then_some(r.text().await.ok()?)
        }
    })
    .await;
    assert!(body.contains("4 partitions"), "{body}");
    let r = client.get(router.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("4 partitions"));
    assert!(
        router.logs().contains("refusing to append"),
        "{}",
        router.logs()
    );
    // Found within a second (log::META_CHECK_INTERVAL; an append in that
    // second may still go through); from then on nothing is written.
    let total = |c: &mut redis::Connection| -> u64 {
        (0..8)
            .map(|p| {
                redis::cmd("XLEN")
                    .arg(format!("sy:log:{{p{p}}}"))
                    .query::<u64>(c)
                    .unwrap()
            })
            .sum()
    };
    let before = total(&mut c);
    for i in 0..5 {
        let r = client
            .post(router.url("/v1/events"))
            .bearer_auth(TOKEN)
            .json(
                &json!({"id": format!("refused-{i}"), "topic": "t", "account_id": format!("{i}")}),
            )
            .send()
            .await
            .unwrap();
        assert!(r.status().is_server_error(), "{}", r.status());
    }
    assert_eq!(
        total(&mut c),
        before,
        "nothing written while the count disagrees"
    );

    // Agreeing again, it appends again.
    let _: () = redis::cmd("HSET")
        .arg("sy:meta")
        .arg("partitions")
        .arg(8)
        .query(&mut c)
        .unwrap();
    post(&router, 5, 1).await;
}
