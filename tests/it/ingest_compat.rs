//! CloudEvents and Segment-compatible ingest, driven by the real client
//! libraries: the CloudEvents Python SDK (`cloudevents`) and Segment's
//! `segment-analytics-python`, pinned in `tests/python/requirements.txt` and
//! installed by `tests/python/venv.sh` (which `tests/deps.sh` also runs).
//! Each test starts a private Redis and the real router, runs a Python
//! script from `tests/python/` against it, and reads the log back from
//! Redis.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use switchyard_core::event::Event;

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, Router};
use crate::support::TOKEN;

const PARTITIONS: u32 = 8;
const WRITE_KEY: &str = "segment-write-key-0123456789abcdef";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python (installed on first use; `tests/python/venv.sh`).
fn python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo().join("tests/python/venv.sh"))
            .output()
            .expect("running tests/python/venv.sh");
        assert!(
            out.status.success(),
            "tests/python/venv.sh failed (it installs the pinned Python clients from PyPI):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Run `tests/python/<script>` with `args`; its stdout.
fn run_script(script: &str, args: &[&str]) -> String {
    let py = python().clone();
    let out = Command::new(py)
        .arg(repo().join("tests/python").join(script))
        .args(args)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every event in the log, by id (ids are unique in these tests), and the
/// number of stream entries (to see that nothing was written twice).
fn log_events(redis: &RedisServer) -> (BTreeMap<String, (u32, Event)>, usize) {
    let mut c = redis.conn();
    let mut out = BTreeMap::new();
    let mut entries = 0;
    for p in 0..PARTITIONS {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("sy:log:{{p{p}}}"))
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        for e in &reply.ids {
            let ev = switchyard_store::log::decode_entry(e).unwrap();
            entries += 1;
            out.insert(ev.id.clone(), (p, ev));
        }
    }
    (out, entries)
}

fn attrs(ev: &Event) -> BTreeMap<&str, &str> {
    ev.attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[tokio::test]
async fn cloudevents_sdk_structured_batch_and_binary_land_in_the_log_once() {
    let redis = RedisServer::start();
    let router = Router::start(&base_config(&redis.url()));
    let base = router.url("");
    let stdout =
        tokio::task::spawn_blocking(move || run_script("cloudevents_client.py", &[&base, TOKEN]))
            .await
            .unwrap();
    let answers: BTreeMap<String, Value> = stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["request"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let status = |name: &str| answers[name]["status"].as_u64().unwrap();
    let answer = |name: &str| &answers[name]["answer"];

    // First sends are written, retries are reported as duplicates.
    for name in ["structured", "batch", "binary-json", "binary-text"] {
        assert_eq!(status(name), 202, "{name}: {}", answers[name]);
        assert_eq!(answer(name)["duplicates"], 0, "{name}: {}", answers[name]);
        let retry = format!("{name}-retry");
        assert_eq!(status(&retry), 202, "{retry}: {}", answers[&retry]);
        assert_eq!(
            answer(&retry)["accepted"],
            0,
            "{retry}: {}",
            answers[&retry]
        );
        assert_eq!(
            answer(&retry)["events"],
            json!(answer(name)["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| json!({"id": e["id"], "partition": e["partition"],
                    "duplicate": true, "stream_id": e["stream_id"]}))
                .collect::<Vec<_>>()),
            "{retry} names the first send's events"
        );
    }
    assert_eq!(answer("batch")["accepted"], 3);
    // The SDK's binary mode: attributes as ce-* headers; no Content-Type
    // for JSON data without a datacontenttype.
    let sent = |name: &str| answers[name]["sent_headers"].clone();
    assert!(
        sent("binary-json")
            .as_array()
            .unwrap()
            .contains(&json!("ce-specversion")),
        "{}",
        sent("binary-json")
    );
    assert!(!sent("binary-json")
        .as_array()
        .unwrap()
        .contains(&json!("content-type")));
    assert_eq!(
        sent("structured"),
        json!(["content-type"]),
        "structured mode: everything in the body"
    );
    // The invalid batch: 400 naming the event and attribute, nothing written.
    assert_eq!(status("batch-invalid"), 400, "{}", answers["batch-invalid"]);
    assert_eq!(answer("batch-invalid")["field"], "events[1].accountid");

    let (events, entries) = log_events(&redis);
    assert_eq!(
        entries,
        6,
        "six events, each written once: {:?}",
        events.keys()
    );
    assert_eq!(events.len(), 6);

    let (p, signup) = &events["ce-structured-1"];
    assert_eq!(
        *p,
        switchyard_store::log::partition_for("acct-1", PARTITIONS)
    );
    assert_eq!(signup.topic, "com.example.customer.signup");
    assert_eq!(signup.account_id, "acct-1");
    assert_eq!(signup.source, "web");
    assert_eq!(signup.occurred_at.to_rfc3339(), "2026-11-30T10:00:00+00:00");
    assert_eq!(signup.data, Some(json!({"plan": "gold"})));
    assert_eq!(
        attrs(signup),
        BTreeMap::from([("ce.source", "/shop/web"), ("ce.subject", "customer/1")])
    );

    let (_, placed) = &events["ce-batch-1"];
    assert_eq!(
        (placed.topic.as_str(), placed.account_id.as_str()),
        ("com.example.order.placed", "acct-2")
    );
    assert_eq!(placed.data, Some(json!({"total": 12.5})));
    assert_eq!(events["ce-batch-2"].1.account_id, "acct-3");
    // An id that is not a valid event id: a stable id derived from
    // (source, id), the original kept.
    let shipped = events
        .values()
        .map(|(_, e)| e)
        .find(|e| e.topic == "com.example.order.shipped")
        .unwrap();
    assert_eq!(attrs(shipped)["ce.id"], "urn:order/3#1");
    assert_eq!(
        uuid::Uuid::parse_str(&shipped.id)
            .unwrap()
            .get_version_num(),
        5
    );
    // Order within the account's partition is the batch's order.
    assert!(
        events["ce-batch-1"].1.ingested_at <= shipped.ingested_at
            && events["ce-batch-1"].0 == switchyard_store::log::partition_for("acct-2", PARTITIONS)
    );

    let (_, changed) = &events["ce-binary-1"];
    assert_eq!(changed.topic, "com.example.customer.email_changed");
    assert_eq!(changed.account_id, "acct 4", "percent-decoded header value");
    assert_eq!(changed.data, Some(json!({"email": "new@example.com"})));
    assert_eq!(
        changed.trace.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "the traceparent extension is the event's trace"
    );
    assert_eq!(
        changed.occurred_at.to_rfc3339(),
        "2026-11-30T10:00:00+00:00"
    );
    let (_, note) = &events["ce-binary-2"];
    assert_eq!(note.data, Some(json!("hello, world")));
    assert_eq!(attrs(note)["ce.datacontenttype"], "text/plain");
}

fn segment_config(redis_url: &str) -> String {
    format!(
        r#"{}
[sources.app]
type = "http"
token = "app-bearer-token-0123456789"
topics = ["segment.*"]

[sources.app.segment]
write_key = "{WRITE_KEY}"
account_id = "user_id_then_anonymous_id"
consent_channels = {{ Advertising = "ads" }}
"#,
        base_config(redis_url)
    )
}

#[tokio::test]
async fn segment_python_library_lands_events_with_account_topic_and_dedup() {
    let redis = RedisServer::start();
    let router = Router::start(&segment_config(&redis.url()));
    let base = router.url("");
    let stdout =
        tokio::task::spawn_blocking(move || run_script("segment_client.py", &[&base, WRITE_KEY]))
            .await
            .unwrap();
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        out["errors"],
        json!([]),
        "the library reported errors: {out}"
    );
    assert_eq!(out["wrong_key"]["status"], 401, "{out}");
    assert_eq!(out["wrong_key"]["code"], "unauthorized", "{out}");

    let (events, entries) = log_events(&redis);
    let ids: Vec<&str> = events.keys().map(String::as_str).collect();
    assert_eq!(
        ids,
        [
            "seg-alias-1",
            "seg-anon-1",
            "seg-batch-0",
            "seg-batch-1",
            "seg-batch-2",
            "seg-batch-3",
            "seg-batch-4",
            "seg-group-1",
            "seg-identify-1",
            "seg-page-1",
            "seg-screen-1",
            "seg-track-1",
        ],
        "every message once; the retried track and identify are duplicates"
    );
    assert_eq!(entries, 12, "nothing written twice");

    let ev = |id: &str| &events[id].1;
    let summary = |id: &str| {
        let e = ev(id);
        (e.topic.as_str(), e.account_id.as_str(), e.source.as_str())
    };
    assert_eq!(
        summary("seg-track-1"),
        ("segment.track.order_completed", "user-1", "app")
    );
    assert_eq!(
        summary("seg-identify-1"),
        ("segment.identify", "user-2", "app")
    );
    assert_eq!(summary("seg-page-1"), ("segment.page", "user-2", "app"));
    assert_eq!(summary("seg-screen-1"), ("segment.screen", "user-2", "app"));
    assert_eq!(summary("seg-group-1"), ("segment.group", "user-2", "app"));
    assert_eq!(summary("seg-alias-1"), ("segment.alias", "user-2", "app"));
    assert_eq!(
        summary("seg-anon-1"),
        ("segment.track.signed_up", "anon-88", "app")
    );
    for i in 0..5 {
        assert_eq!(
            summary(&format!("seg-batch-{i}")),
            ("segment.track.item_viewed", "user-3", "app")
        );
        assert_eq!(ev(&format!("seg-batch-{i}")).data, Some(json!({"i": i})));
    }
    assert_eq!(
        events["seg-track-1"].0,
        switchyard_store::log::partition_for("user-1", PARTITIONS)
    );

    let track = ev("seg-track-1");
    assert_eq!(track.data, Some(json!({"total": 30})));
    assert_eq!(track.occurred_at.to_rfc3339(), "2026-11-30T10:00:00+00:00");
    let consent: BTreeMap<&str, &str> = track
        .consent
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        consent,
        BTreeMap::from([("Analytics", "granted"), ("ads", "denied")])
    );
    let a = attrs(track);
    assert_eq!(a["segment.type"], "track");
    assert_eq!(a["segment.event"], "Order Completed");
    assert_eq!(a["segment.user_id"], "user-1");
    let context: Value = serde_json::from_str(a["segment.context"]).unwrap();
    assert_eq!(context["ip"], "192.0.2.1");
    assert_eq!(context["library"]["name"], "analytics-python");
    assert!(context.get("consent").is_none());

    assert_eq!(
        ev("seg-identify-1").data,
        Some(json!({"email": "a@example.com", "plan": "gold"}))
    );
    assert_eq!(attrs(ev("seg-page-1"))["segment.name"], "Getting started");
    assert_eq!(attrs(ev("seg-page-1"))["segment.category"], "Docs");
    assert_eq!(attrs(ev("seg-group-1"))["segment.group_id"], "group-9");
    assert_eq!(attrs(ev("seg-alias-1"))["segment.previous_id"], "anon-77");
    assert_eq!(attrs(ev("seg-anon-1"))["segment.anonymous_id"], "anon-88");
}

/// What the libraries do not exercise: the single-message endpoints'
/// answers and errors, and that the write key is not a bearer token (nor
/// the other way round).
#[tokio::test]
async fn segment_endpoints_answer_like_segment() {
    let redis = RedisServer::start();
    let router = Router::start(&segment_config(&redis.url()));
    let http = reqwest::Client::new();
    let post = |path: &str, auth: (&str, Option<&str>), body: Value| {
        http.post(router.url(path))
            .basic_auth(auth.0, auth.1)
            .json(&body)
            .send()
    };
    let r = post(
        "/v1/track",
        (WRITE_KEY, None),
        json!({"userId": "u1", "event": "Clicked", "messageId": "m1"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"success": true}));
    // A bad message is a 400 naming its field, in Segment's error shape,
    // and nothing of its batch is written.
    let r = post(
        "/v1/batch",
        (WRITE_KEY, Some("")),
        json!({"batch": [
        {"type": "identify", "userId": "u1"},
        {"type": "track", "anonymousId": "a", "event": "  "}]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["success"].clone(), body["field"].clone()),
        (json!(false), json!("batch[1].event"))
    );
    // Bearer tokens are not write keys, write keys are not bearer tokens.
    let r = http
        .post(router.url("/v1/track"))
        .bearer_auth("app-bearer-token-0123456789")
        .json(&json!({"userId": "u1", "event": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic");
    let r = http
        .post(router.url("/v1/events"))
        .bearer_auth(WRITE_KEY)
        .json(&json!({"topic": "segment.x", "account_id": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A source without `[segment]` has no write key: the `web` token as a
    // Basic user name is refused.
    let r = post("/v1/identify", (TOKEN, None), json!({"userId": "u1"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (events, entries) = log_events(&redis);
    assert_eq!((events.len(), entries), (1, 1));
    assert_eq!(events["m1"].1.topic, "segment.track.clicked");
}
