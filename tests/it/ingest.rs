//! HTTP ingest into the partitioned log: every status the API promises.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard_store::log::partition_for;

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::{eventually, TOKEN, TOKEN_B};

const PARTITIONS: u32 = 8;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(r: &Router, token: &str, body: &Value) -> reqwest::Response {
    client()
        .post(r.url("/v1/events"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Every event in a partition's stream, decoded, in stream order.
fn read_partition(redis: &RedisServer, p: u32) -> Vec<switchyard_core::event::Event> {
    let mut c = redis.conn();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("sy:log:{{p{p}}}"))
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| switchyard_store::log::decode_entry(e).unwrap())
        .collect()
}

fn total_entries(redis: &RedisServer) -> usize {
    (0..PARTITIONS)
        .map(|p| read_partition(redis, p).len())
        .sum()
}

#[tokio::test]
async fn accepted_events_land_in_their_account_partition_in_order() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    // Two accounts, interleaved, across topics: each account's events must
    // come out of its partition in the order they were accepted.
    for i in 0..30 {
        for acct in ["acct-a", "acct-b"] {
            let topic = if i % 2 == 0 {
                "customer.banner-a.updated"
            } else {
                "order.placed"
            };
            let resp = post(
                &router,
                TOKEN,
                &json!({"topic": topic, "account_id": acct, "data": {"seq": i}}),
            )
            .await;
            assert_eq!(resp.status(), 202);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["accepted"], 1);
            assert_eq!(
                body["events"][0]["partition"],
                partition_for(acct, PARTITIONS)
            );
        }
    }
    for acct in ["acct-a", "acct-b"] {
        let evs: Vec<_> = read_partition(&redis, partition_for(acct, PARTITIONS))
            .into_iter()
            .filter(|e| e.account_id == acct)
            .collect();
        let seqs: Vec<i64> = evs
            .iter()
            .map(|e| e.data.as_ref().unwrap()["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "order of {acct}");
        assert!(evs
            .iter()
            .all(|e| e.source == "web" && e.op == switchyard_core::event::Op::Event));
    }
    assert_eq!(total_entries(&redis), 60);
}

#[tokio::test]
async fn batch_json_array_and_ndjson() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let batch: Vec<Value> = (0..200)
        .map(|i| json!({"topic": "customer.x.updated", "account_id": format!("a{}", i % 17), "data": {"i": i}}))
        .collect();
    let resp = post(&router, TOKEN, &Value::Array(batch)).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 200);
    let ids: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);

    // Within one account, batch order is log order.
    let a3: Vec<i64> = read_partition(&redis, partition_for("a3", PARTITIONS))
        .iter()
        .filter(|e| e.account_id == "a3")
        .map(|e| e.data.as_ref().unwrap()["i"].as_i64().unwrap())
        .collect();
    assert_eq!(a3, (0..200).filter(|i| i % 17 == 3).collect::<Vec<_>>());

    let nd = "{\"topic\":\"order.placed\",\"account_id\":\"n1\"}\n{\"topic\":\"order.placed\",\"account_id\":\"n2\",\"op\":\"insert\",\"after\":{\"x\":1}}\n";
    let resp = client()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(total_entries(&redis), 202);
}

#[tokio::test]
async fn every_error_status_names_the_problem_and_writes_nothing() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let ok = json!({"topic": "customer.a.updated", "account_id": "1"});

    // 400, naming the element and field of a batch.
    let resp = post(
        &router,
        TOKEN,
        &json!([ok, {"topic": "customer.a.updated"}]),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["field"], "events[1].account_id", "{b}");
    let resp = post(
        &router,
        TOKEN,
        &json!({"topic": "t.x", "account_id": "1", "occurred_at": "noon"}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["field"],
        "event.occurred_at"
    );
    let resp = client()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // 401: no token, wrong token.
    let resp = client()
        .post(router.url("/v1/events"))
        .json(&ok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        post(&router, "wrong-token-0123456789", &ok).await.status(),
        401
    );

    // 403: the partner source may only publish order.*.
    let resp = post(
        &router,
        TOKEN_B,
        &json!([{"topic": "order.placed", "account_id": "1"}, ok]),
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["field"],
        "events[1].topic"
    );

    // 413: body over server.max_body (64 KiB), and batch over server.max_batch (500);
    // the message names the limit and the setting.
    let big = json!({"topic": "t.x", "account_id": "1", "data": {"blob": "x".repeat(70_000)}});
    let resp = post(&router, TOKEN, &big).await;
    assert_eq!(resp.status(), 413);
    let msg = resp.json::<Value>().await.unwrap()["error"].to_string();
    assert!(msg.contains("65536 bytes (server.max_body)"), "{msg}");
    // Without Content-Length (chunked), the body is cut off at the limit too.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&router.addr).await.unwrap();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
             content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..20 {
            let chunk = format!("1000\r\n{}\r\n", " ".repeat(4096));
            if s.write_all(chunk.as_bytes()).await.is_err() {
                break; // the router may answer and close before the rest is sent
            }
        }
        let _ = s.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("server.max_body"), "{answer}");
    }
    let many: Vec<Value> = (0..501)
        .map(|_| json!({"topic": "t", "account_id": "1"}))
        .collect();
    let resp = post(&router, TOKEN, &Value::Array(many)).await;
    assert_eq!(resp.status(), 413);
    let msg = resp.json::<Value>().await.unwrap()["error"].to_string();
    assert!(
        msg.contains("batch of 501 events exceeds the limit of 500 (server.max_batch)"),
        "{msg}"
    );

    // 415: wrong content type.
    let resp = client()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(serde_json::to_string(&ok).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);

    // None of the rejected requests wrote anything, not even their valid elements.
    assert_eq!(total_entries(&redis), 0);
}

#[tokio::test]
async fn duplicate_ids_are_written_once_and_reported() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let ev = json!({"id": "order-1001", "topic": "order.placed", "account_id": "77", "data": {"total": 10}});
    let first: Value = post(&router, TOKEN, &ev).await.json().await.unwrap();
    assert_eq!(first["accepted"], 1);
    assert_eq!(first["events"][0]["id"], "order-1001");
    let second: Value = post(
        &router,
        TOKEN,
        &json!([ev, {"id": "order-1002", "topic": "order.placed", "account_id": "77"}, ev]),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(second["accepted"], 1, "{second}");
    assert_eq!(second["duplicates"], 2);
    assert_eq!(second["events"][0]["duplicate"], true);
    assert_eq!(
        second["events"][0]["stream_id"],
        first["events"][0]["stream_id"]
    );
    assert_eq!(second["events"][1].get("duplicate"), None);
    assert_eq!(second["events"][2]["duplicate"], true);
    let evs = read_partition(&redis, partition_for("77", PARTITIONS));
    assert_eq!(
        evs.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        vec!["order-1001", "order-1002"]
    );
}

#[tokio::test]
async fn canonical_fields_and_traceparent_are_kept() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .header("traceparent", tp)
        .json(&json!({"topic": "customer.b.email_changed", "account_id": "9", "op": "update", "key": {"id": 9},
            "before": {"email": "old@x.com", "name": "N"}, "after": {"email": "new@x.com", "name": "N"},
            "occurred_at": "2026-11-20T17:04:05.123Z", "consent": {"email": "granted", "sms": "denied"},
            "attributes": {"banner": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let ev = &read_partition(&redis, partition_for("9", PARTITIONS))[0];
    assert_eq!(ev.trace.as_deref(), Some(tp));
    assert_eq!(ev.changed, vec!["email"]);
    assert_eq!(ev.occurred_at.to_rfc3339(), "2026-11-20T17:04:05.123+00:00");
    assert!(ev.ingested_at > ev.occurred_at);
    assert_eq!(
        ev.consent["sms"],
        switchyard_core::event::ConsentState::Denied
    );
    assert_eq!(ev.attributes["banner"], "b");
    assert_eq!(ev.key, Some(json!({"id": 9})));
}

#[tokio::test]
async fn redis_down_gives_503_then_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let ev = |i: i32| json!({"topic": "customer.a.updated", "account_id": "5", "data": {"i": i}});
    assert_eq!(post(&router, TOKEN, &ev(0)).await.status(), 202);
    assert_eq!(
        client()
            .get(router.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    redis.kill();
    let resp = post(&router, TOKEN, &ev(1)).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        client()
            .get(router.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
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

    redis.restart();
    eventually(
        Duration::from_secs(15),
        "ingest to recover after Redis restart",
        || async { (post(&router, TOKEN, &ev(2)).await.status() == 202).then_some(()) },
    )
    .await;
    assert_eq!(
        client()
            .get(router.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Redis ran without persistence: only what was written after the restart is there.
    let evs = read_partition(&redis, partition_for("5", PARTITIONS));
    assert!(
        evs.iter().all(|e| e.data.as_ref().unwrap()["i"] == 2),
        "no event was acknowledged while Redis was down"
    );
}

#[tokio::test]
async fn router_starts_while_redis_is_down_and_serves_when_it_appears() {
    let mut redis = RedisServer::start();
    redis.kill();
    let router = Router::start(&base_config(&redis.url()));
    let ev = json!({"topic": "customer.a.updated", "account_id": "5"});
    assert_eq!(post(&router, TOKEN, &ev).await.status(), 503);
    redis.restart();
    eventually(
        Duration::from_secs(15),
        "ingest to succeed once Redis is up",
        || async { (post(&router, TOKEN, &ev).await.status() == 202).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn graceful_shutdown_loses_no_acknowledged_event() {
    let redis = RedisServer::start();
    let mut router = Router::start(&base_config(&redis.url()));
    let url = router.url("/v1/events");
    // Four writers post batches until the router stops answering.
    let mut writers = Vec::new();
    for w in 0..4 {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let mut acked: Vec<String> = Vec::new();
            for b in 0.. {
                let batch: Vec<Value> = (0..50)
                    .map(|i| json!({"id": format!("w{w}-b{b}-{i}"), "topic": "order.placed", "account_id": format!("acct-{i}")}))
                    .collect();
                match client().post(&url).bearer_auth(TOKEN).json(&batch).send().await {
                    Ok(r) if r.status() == 202 => {
                        acked.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()))
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = tokio::task::spawn_blocking(move || {
        let st = router.terminate();
        (st, router)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() >= 200, "the load ran ({} acked)", acked.len());
    let stored: std::collections::HashSet<String> = (0..PARTITIONS)
        .flat_map(|p| read_partition(&redis, p))
        .map(|e| e.id)
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test]
async fn router_refuses_a_partition_count_that_differs_from_the_log() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    drop(router);
    let cfg = base_config(&redis.url()).replace("partitions = 8", "partitions = 4");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("created with 8 partitions") && err.contains("config says 4"),
        "{err}"
    );
}

#[test]
fn check_reports_every_mistake_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisen = \"0.0.0.0:80\"\n[log]\npartitions = 0\n[sources.web]\ntype = \"http\"\ntopics = [\"a[\"]\ntoken = \"${NOT_SET_ANYWHERE_123}\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.lisen",
        "log.partitions",
        "sources.web.topics[0]",
        "sources.web.token",
        "NOT_SET_ANYWHERE_123",
    ] {
        assert!(err.contains(needle), "missing {needle} in:\n{err}");
    }
    let ok = std::process::Command::new(bin())
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/switchyard.toml"),
        ])
        .env("SWITCHYARD_WEB_TOKEN", "a-long-enough-token-0123")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[tokio::test]
async fn tail_prints_matching_events_as_json_lines() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let batch = json!([
        {"topic": "customer.a.email_changed", "account_id": "1", "data": {"n": 1}},
        {"topic": "order.placed", "account_id": "1"},
        {"topic": "customer.b.email_changed", "account_id": "2"},
        {"topic": "customer.a.email_changed", "account_id": "1", "data": {"n": 2}},
    ]);
    assert_eq!(post(&router, TOKEN, &batch).await.status(), 202);
    let out = std::process::Command::new(bin())
        .args(["tail", "--config"])
        .arg(&router.config_path)
        .args([
            "--from",
            "earliest",
            "--no-follow",
            "--account",
            "1",
            "--topic",
            "customer.*.email_changed",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["data"]["n"], 1);
    assert_eq!(lines[1]["data"]["n"], 2);
    assert_eq!(lines[0]["log"]["partition"], partition_for("1", PARTITIONS));
}

async fn post_with(
    r: &Router,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = client()
        .post(r.url("/v1/events"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body).send().await.unwrap()
}

fn ids_of(body: &Value) -> Vec<String> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 11, item 4: a retry of a body without ids created second copies.
/// With `Idempotency-Key`, ids derive from the key, the source and the
/// element's index, so the retry is reported as duplicates and not written.
#[tokio::test]
async fn idempotency_key_makes_a_retry_without_ids_a_duplicate() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let batch = json!([
        {"topic": "order.placed", "account_id": "31", "data": {"n": 1}},
        {"topic": "order.placed", "account_id": "32", "data": {"n": 2}},
        {"id": "own-id-1", "topic": "order.placed", "account_id": "31"},
    ])
    .to_string();
    let key = [("idempotency-key", "checkout-8841")];
    let first = post_with(&router, &key, batch.clone()).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["accepted"], 3, "{first}");
    let ids = ids_of(&first);
    assert_eq!(ids[2], "own-id-1", "an explicit id is kept");

    let second: Value = post_with(&router, &key, batch.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["accepted"], 0, "{second}");
    assert_eq!(second["duplicates"], 3);
    assert_eq!(ids_of(&second), ids);
    for (a, b) in first["events"]
        .as_array()
        .unwrap()
        .iter()
        .zip(second["events"].as_array().unwrap())
    {
        assert_eq!(b["duplicate"], true, "{second}");
        assert_eq!(a["stream_id"], b["stream_id"]);
    }
    assert_eq!(total_entries(&redis), 3);

    // Another key, or the same body without a key, is new.
    let other: Value = post_with(
        &router,
        &[("idempotency-key", "checkout-8842")],
        batch.clone(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(other["accepted"], 2, "{other}");
    assert_eq!(other["duplicates"], 1, "own-id-1 again: {other}");
    let none: Value = post_with(&router, &[], batch).await.json().await.unwrap();
    assert_eq!(none["accepted"], 2, "{none}");
    assert_eq!(total_entries(&redis), 7);

    // A key that is not 1-255 visible ASCII characters is a 400 naming the header.
    let resp = post_with(&router, &[("idempotency-key", "has space")], "{}").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["field"],
        "Idempotency-Key"
    );
}

/// Issue 11, item 4: while Redis was paused, ingest answered 503 "nothing was
/// written", but the events were written once Redis resumed. The 503 now
/// says the outcome is unknown and how to retry; a retry with the same
/// Idempotency-Key then finds them.
#[tokio::test]
async fn a_503_after_a_timeout_says_the_outcome_is_unknown() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let body =
        json!({"topic": "order.placed", "account_id": "71", "data": {"total": 5}}).to_string();
    let key = [("idempotency-key", "paused-redis-1")];
    // One request first, so the connection to Redis is up.
    assert_eq!(
        post_with(&router, &[], "{\"topic\":\"t\",\"account_id\":\"0\"}")
            .await
            .status(),
        202
    );

    redis.pause();
    let resp = post_with(&router, &key, body.clone()).await;
    redis.resume();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let msg = resp.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!msg.contains("nothing was written"), "{msg}");
    for needle in [
        "the outcome is unknown",
        "some or all events may have been written",
        "same ids",
        "Idempotency-Key",
    ] {
        assert!(msg.contains(needle), "missing `{needle}` in: {msg}");
    }

    // The request had reached Redis: it ran once Redis resumed.
    let p = partition_for("71", PARTITIONS);
    let written = eventually(
        Duration::from_secs(10),
        "the timed-out append to run after Redis resumed",
        || {
            let evs = read_partition(&redis, p);
            async move { evs.into_iter().find(|e| e.account_id == "71") }
        },
    )
    .await;
    let retry = eventually(Duration::from_secs(10), "a 202 for the retry", || {
        let body = body.clone();
        let router = &router;
        async move {
            let r = post_with(router, &key, body).await;
            if r.status() == 202 {
                Some(r.json::<Value>().await.unwrap())
            } else {
                None
            }
        }
    })
    .await;
    assert_eq!(retry["duplicates"], 1, "{retry}");
    assert_eq!(retry["events"][0]["id"], written.id.as_str());
    assert_eq!(
        read_partition(&redis, p)
            .iter()
            .filter(|e| e.account_id == "71")
            .count(),
        1
    );
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Issue 11, item 7: a gzip body got 400 "not valid JSON", and a plain body
/// labelled gzip got 202. Now gzip is decoded, with `server.max_body`
/// applied to the decompressed size, and other encodings are 415.
#[tokio::test]
async fn gzip_bodies_are_decoded_and_limited_after_decompression() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let body = json!([
        {"topic": "order.placed", "account_id": "g1", "data": {"pad": "x".repeat(5000)}},
        {"topic": "order.placed", "account_id": "g2"},
    ])
    .to_string();
    let gz = [("content-encoding", "gzip")];
    let resp = post_with(&router, &gz, gzip(body.as_bytes())).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["accepted"], 2);
    let stored = read_partition(&redis, partition_for("g1", PARTITIONS));
    assert_eq!(
        stored[0].data.as_ref().unwrap()["pad"]
            .as_str()
            .unwrap()
            .len(),
        5000
    );

    // A plain body labelled gzip.
    let resp = post_with(&router, &gz, body.clone()).await;
    assert_eq!(resp.status(), 400);
    let msg = resp.json::<Value>().await.unwrap()["error"].to_string();
    assert!(msg.contains("not valid gzip"), "{msg}");

    // A gzip bomb: 10 MiB of zeros in ~10 KiB, against max_body = 64 KiB.
    let bomb = gzip(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let resp = post_with(&router, &gz, bomb).await;
    assert_eq!(resp.status(), 413);
    let msg = resp.json::<Value>().await.unwrap()["error"].to_string();
    assert!(
        msg.contains("65536 bytes once decompressed (server.max_body)"),
        "{msg}"
    );

    // Other encodings: 415 naming the encoding.
    let resp = post_with(&router, &[("content-encoding", "br")], body.clone()).await;
    assert_eq!(resp.status(), 415);
    let msg = resp.json::<Value>().await.unwrap()["error"].to_string();
    assert!(msg.contains("`br`"), "{msg}");
    // `identity` is no encoding.
    let resp = post_with(&router, &[("content-encoding", "identity")], body).await;
    assert_eq!(resp.status(), 202);

    assert_eq!(total_entries(&redis), 4);
}

/// Issue 11, items 6 and 9: identifiers with control characters were
/// accepted (and forged lines in the text log), and `1.0`, `1e0` and `1`
/// were three accounts.
#[tokio::test]
async fn control_characters_and_non_integer_account_ids_are_refused() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    for (body, field) in [
        (
            r#"[{"topic":"t","account_id":"42\n2026-01-01 INFO forged"}]"#,
            "events[0].account_id",
        ),
        (
            r#"[{"topic":"t","account_id":"a\u0000"}]"#,
            "events[0].account_id",
        ),
        (
            r#"[{"topic":"t","account_id":"\u001b[2J"}]"#,
            "events[0].account_id",
        ),
        (
            r#"[{"topic":"t","account_id":"1","attributes":{"k\r":"v"}}]"#,
            "events[0].attributes",
        ),
        (
            r#"[{"topic":"t","account_id":"1","key":"k\n"}]"#,
            "events[0].key",
        ),
        (
            r#"[{"topic":"t","account_id":1.0}]"#,
            "events[0].account_id",
        ),
        (
            r#"[{"topic":"t","account_id":1e0}]"#,
            "events[0].account_id",
        ),
    ] {
        let resp = post_with(&router, &[], body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let b: Value = resp.json().await.unwrap();
        assert_eq!(b["field"], field, "{body}: {b}");
    }
    assert_eq!(total_entries(&redis), 0);
    // An integer is its decimal text: `1` and `"1"` are one account.
    let resp = post_with(
        &router,
        &[],
        r#"[{"topic":"t","account_id":1},{"topic":"t","account_id":"1"}]"#,
    )
    .await;
    assert_eq!(resp.status(), 202);
    let evs = read_partition(&redis, partition_for("1", PARTITIONS));
    assert_eq!(evs.len(), 2);
    assert!(evs.iter().all(|e| e.account_id == "1"));
}
