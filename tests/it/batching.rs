//! Batching destinations (contract 0.2, `[consumers.<name>.batch]`): the
//! Braze module builds `/users/track` requests of up to 75 attributes
//! objects from events of many accounts; Braze's per-object "minor errors"
//! give each event its own outcome (the rejected one is dead-lettered, the
//! others delivered); an account's events stay in order across batches.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::startup::wasm;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, Router};
use crate::support::vendor::{Received, Reply, Vendor};
use crate::support::{eventually, TOKEN};

fn braze_consumer(url: &str, module: &str) -> String {
    format!(
        r#"
[consumers.braze]
topics = ["customer.*"]
start = "earliest"
concurrency = 8
[consumers.braze.endpoint]
url = "{url}"
headers = {{ authorization = "Bearer braze-key" }}
[consumers.braze.retry]
initial = "20ms"
max_delay = "100ms"
max_attempts = 5
[consumers.braze.batch]
max_events = 75
max_wait = "300ms"
[[consumers.braze.modules]]
path = "{path}"
deadline = "5s"
"#,
        path = wasm(module).display()
    )
}

fn event(id: &str, account: &str, email: &str) -> Value {
    json!({"id": id, "topic": "customer.banner-a.created", "account_id": account,
           "occurred_at": "2026-11-30T10:00:00Z", "data": {"email": email}})
}

/// Every (external_id, email) of every `/users/track` request, with the
/// index of the request that carried it.
fn tracked(reqs: &[Received]) -> Vec<(usize, String, String)> {
    let mut v = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        for a in r.body["attributes"].as_array().into_iter().flatten() {
            v.push((
                i,
                a["external_id"].as_str().unwrap_or_default().to_string(),
                a["email"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn braze_batches_many_accounts_with_per_item_outcomes_and_order() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    // Braze's documented answer to a track request with a bad object: 201
    // with `errors[]` naming the object's index in `attributes`.
    vendor.script(|r| {
        let attrs = r.body["attributes"].as_array().cloned().unwrap_or_default();
        let errors: Vec<Value> = attrs
            .iter()
            .enumerate()
            .filter(|(_, a)| a["email"] == "bad@example.com")
            .map(|(i, _)| json!({"type": "'email' is invalid", "input_array": "attributes", "index": i}))
            .collect();
        if errors.is_empty() {
            Reply::Body(201, json!({"message": "success", "attributes_processed": attrs.len()}).to_string())
        } else {
            Reply::Body(201, json!({"message": "success", "errors": errors}).to_string())
        }
    });
    let router =
        Router::start(&(base_config(&redis.url()) + &braze_consumer(&vendor.url(), "braze")));
    // 120 accounts with one event, one bad one, and account "seq" with three
    // events that must arrive in order.
    let mut events: Vec<Value> = (0..120)
        .map(|i| {
            event(
                &format!("e{i}"),
                &format!("acct-{i}"),
                &format!("u{i}@example.com"),
            )
        })
        .collect();
    events.push(event("bad", "acct-bad", "bad@example.com"));
    for k in 1..=3 {
        events.push(event(
            &format!("seq-{k}"),
            "seq",
            &format!("seq{k}@example.com"),
        ));
    }
    let resp = reqwest::Client::new()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    eventually(Duration::from_secs(60), "all events tracked", || async {
        (tracked(&vendor.requests()).len() >= 124).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reqs = vendor.requests();
    let t = tracked(&reqs);
    // The documented request: POST /users/track, JSON, the configured key,
    // `attributes` of at most 75 objects.
    for r in &reqs {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/users/track")
        );
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Bearer braze-key")
        );
        assert_eq!(
            r.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let n = r.body["attributes"].as_array().unwrap().len();
        assert!((1..=75).contains(&n), "{n} attributes objects");
    }
    assert_eq!(t.len(), 124, "every event sent once: {t:?}");
    assert!(
        reqs.len() <= 20,
        "{} requests for 124 events: not batched",
        reqs.len()
    );
    let o = t.iter().find(|(_, id, _)| id == "acct-7").unwrap();
    assert_eq!(o.2, "u7@example.com");
    // Per-account order across batches: seq-1's request before seq-2's before seq-3's.
    let seq: Vec<(usize, String)> = t
        .iter()
        .filter(|(_, id, _)| id == "seq")
        .map(|(i, _, e)| (*i, e.clone()))
        .collect();
    assert_eq!(
        seq.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>(),
        ["seq1@example.com", "seq2@example.com", "seq3@example.com"]
    );
    assert!(seq[0].0 < seq[1].0 && seq[1].0 < seq[2].0, "{seq:?}");

    // The rejected object's event, alone, is dead-lettered; the rest delivered.
    let st: Value = eventually(Duration::from_secs(20), "outcomes recorded", || async {
        let v: Value = reqwest::get(router.url("/admin/status"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let c = &v["consumers"]["braze"];
        (c["delivered"] == 123 && c["dead_lettered"] == 1).then_some(v)
    })
    .await;
    let _ = st;
    let counts: HashMap<String, usize> = t.iter().fold(HashMap::new(), |mut m, (_, id, _)| {
        *m.entry(id.clone()).or_default() += 1;
        m
    });
    assert_eq!(counts["acct-bad"], 1, "a failed item is not retried");
}
