//! The router on a real Redis Cluster (`redis.cluster = true`): three
//! masters, partitions spread over them by their hash tags. Ingest,
//! ordered delivery with retries, the DLQ with parking and replay, and
//! `tail`, all through the cluster client.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::delivery::{accounts, assert_order, consumer, post_events, wait_applied};
use crate::support::cluster::RedisCluster;
use crate::support::eventually;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::{Reply, Vendor};

fn cluster_config(cluster: &RedisCluster) -> String {
    base_config(&cluster.url()).replace("[redis]\n", "[redis]\ncluster = true\n")
}

fn cli(router: &Router, args: &[&str]) -> String {
    let out = std::process::Command::new(bin())
        .arg(args[0])
        .args(&args[1..])
        .arg("--config")
        .arg(&router.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchyard {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_on_a_redis_cluster_delivers_in_order_parks_and_replays() {
    let cluster = RedisCluster::start();
    let vendor = Vendor::start().await;
    // Some retryable failures everywhere; acct-bad-3 is refused (400) until fixed.
    let fixed = Arc::new(AtomicBool::new(false));
    let n = Arc::new(AtomicUsize::new(0));
    let (f2, n2) = (fixed.clone(), n.clone());
    vendor.script(move |r| {
        if r.key == "acct-bad-3" && !f2.load(Ordering::SeqCst) {
            return Reply::Status(400);
        }
        match n2.fetch_add(1, Ordering::SeqCst) % 5 {
            0 => Reply::Status(503),
            _ => Reply::Status(200),
        }
    });
    let router = Router::start(&(cluster_config(&cluster) + &consumer("esp", &vendor.url(), "")));
    let mut accts = accounts(12);
    accts.push("acct-bad".into());
    let expected = post_events(&router, &accts, 10).await;

    // Every good account arrives whole and in order; acct-bad stops at its 400.
    let good: usize = 12 * 10;
    wait_applied(&vendor, good + 3, 60).await;
    let mut expect_good = expected.clone();
    expect_good.remove("acct-bad");
    assert_order(&vendor, &expect_good);
    assert_eq!(
        vendor.applied_by_account()["acct-bad"],
        expected["acct-bad"][..3].to_vec()
    );

    // The partitions' keys live on more than one node: the cluster is used.
    let per_node = cluster.keys_per_node();
    assert!(
        per_node.iter().filter(|n| **n > 0).count() >= 2,
        "keys per node: {per_node:?}"
    );

    // The DLQ holds the failure and the parked events behind it.
    let list = cli(
        &router,
        &["dlq", "list", "--consumer", "esp", "--account", "acct-bad"],
    );
    let kinds: Vec<String> = list
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["fields"]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.len(), 7, "{list}");
    assert_eq!(kinds[0], "failed");
    assert!(kinds[1..].iter().all(|k| k == "parked"), "{kinds:?}");

    // Replay after the fix: the account completes, still in order.
    fixed.store(true, Ordering::SeqCst);
    let out = cli(
        &router,
        &[
            "dlq",
            "replay",
            "--consumer",
            "esp",
            "--account",
            "acct-bad",
        ],
    );
    assert!(out.contains("7 event(s)"), "{out}");
    wait_applied(&vendor, good + 10, 60).await;
    assert_order(&vendor, &expected);

    // `tail` reads every partition across the nodes.
    let tail = cli(&router, &["tail", "--no-follow", "--from", "earliest"]);
    assert_eq!(tail.lines().count(), 13 * 10, "every event of the log");
    let acct0: Vec<String> = tail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["account_id"] == "acct0")
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(acct0, expected["acct0"]);

    eventually(Duration::from_secs(5), "no redundant delivery", || async {
        (vendor.redundant_requests() == 0).then_some(())
    })
    .await;
}
