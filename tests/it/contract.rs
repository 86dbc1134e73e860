//! The event contract holds at every entry into a module chain, not only at
//! HTTP ingest: an event a module emits with a topic that breaks the topic
//! rule fails (dead-lettered at once, naming the module). CDC topics are
//! covered in `cdc.rs`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::startup::wasm;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::Vendor;
use crate::support::{eventually, TOKEN};

fn consumer(name: &str, url: &str, topic: &str, then_echo: bool) -> String {
    let echo = wasm("sy_test_echo");
    let mut c = format!(
        r#"
[consumers.{name}]
topics = ["*"]
start = "earliest"
[consumers.{name}.endpoint]
url = "{url}"
[consumers.{name}.retry]
initial = "20ms"
max_attempts = 3
[[consumers.{name}.modules]]
path = "{}"
deadline = "5s"
config = {{ topic = "{topic}" }}
"#,
        echo.display()
    );
    if then_echo {
        c.push_str(&format!(
            "[[consumers.{name}.modules]]\nname = \"second\"\npath = \"{}\"\ndeadline = \"5s\"\n",
            echo.display()
        ));
    }
    c
}

fn dlq(router: &Router, consumer: &str) -> Vec<Value> {
    let out = std::process::Command::new(bin())
        .args(["dlq", "list", "--config"])
        .arg(&router.config_path)
        .args(["--consumer", consumer])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_emits_an_invalid_topic_is_dead_lettered_naming_it() {
    let redis = RedisServer::start();
    let bad = Vendor::start().await;
    let bad_mid = Vendor::start().await;
    let good = Vendor::start().await;
    let cfg = base_config(&redis.url())
        + &consumer("bad", &bad.url(), "not a topic", false)
        + &consumer("badmid", &bad_mid.url(), "customer/renamed", true)
        + &consumer("good", &good.url(), "customer.renamed", true);
    let router = Router::start(&cfg);
    let r = reqwest::Client::new()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "ev-1", "topic": "customer.a", "account_id": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    eventually(Duration::from_secs(30), "the valid chain delivered", || {
        let n = good.requests().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert_eq!(good.requests()[0].body["topic"], "customer.renamed");
    for c in ["bad", "badmid"] {
        let entries = eventually(Duration::from_secs(20), "dead-lettered", || {
            let e = dlq(&router, c);
            async move { (!e.is_empty()).then_some(e) }
        })
        .await;
        assert_eq!(entries.len(), 1, "{entries:?}");
        let f = &entries[0]["fields"];
        assert_eq!(f["event_id"], "ev-1");
        let reason = f["reason"].as_str().unwrap();
        assert!(
            reason.contains("sy_test_echo") && reason.contains("topic"),
            "{reason}"
        );
        assert_eq!(f["attempts"], "1", "not retried: {f}");
    }
    assert!(bad.requests().is_empty());
    assert!(bad_mid.requests().is_empty());
}
