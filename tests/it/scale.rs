//! Many router instances on one Redis (and on a 3-master Redis Cluster):
//! partition leases with fencing tokens, failover, rebalancing, and the
//! paused-owner case.
//!
//! What is checked, per test: every event took effect at the vendor exactly
//! once and in account order (`assert_order` on the applied order); the
//! vendor never received an account's event for the first time after a
//! later one (two owners sending at once would show up here); a stale resend
//! of an event it already had, from an owner paused with that request past
//! its lease check, is the documented window: at most one per account;
//! resends of already applied events stay within the documented crash window
//! (one per account per instance that died or was paused with a request in
//! flight);
//! the leases in Redis end up shared fairly by the live instances.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::delivery::{accounts, assert_order, consumer, wait_applied};
use crate::support::cluster::RedisCluster;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::{Reply, Vendor};
use crate::support::{eventually, TOKEN};

/// `base_config` has fast leases (3 s): a dead instance's partitions move within them.
fn config(redis_url: &str, cluster: bool, vendor: &Vendor, id: &str) -> String {
    let mut c = base_config(redis_url);
    if cluster {
        c = c.replace("[redis]\n", "[redis]\ncluster = true\n");
    }
    c.replace(
        "[coordination]\n",
        &format!("[coordination]\ninstance_id = \"{id}\"\n"),
    ) + &consumer("esp", &vendor.url(), "")
}

/// Posts events for `accounts` round after round (ids `<acct>-<round>`), to
/// whichever instances are listed in `targets`, one request at a time (so the
/// log's order per account is the posting order); a request that fails is
/// retried on the next instance with the same ids (deduplicated by the log).
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<HashMap<String, Vec<String>>>,
}

impl Load {
    fn start(targets: Arc<Mutex<Vec<String>>>, accts: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            let mut ids: HashMap<String, Vec<String>> = HashMap::new();
            let mut next = 0usize;
            let mut round = 0usize;
            while !s.load(Ordering::SeqCst) {
                let batch: Vec<Value> = accts
                    .iter()
                    .map(|a| {
                        json!({"id": format!("{a}-{round}"), "topic": "customer.banner-a.updated",
                               "account_id": a, "data": {"i": round}})
                    })
                    .collect();
                loop {
                    let url = {
                        let t = targets.lock().unwrap();
                        next += 1;
                        t[next % t.len()].clone()
                    };
                    let ok = match client
                        .post(format!("{url}/v1/events"))
                        .bearer_auth(TOKEN)
                        .json(&batch)
                        .send()
                        .await
                    {
                        Ok(r) => r.status() == 202,
                        Err(_) => false,
                    };
                    if ok {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                for a in &accts {
                    ids.entry(a.clone())
                        .or_default()
                        .push(format!("{a}-{round}"));
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        });
        Load { stop, task }
    }

    async fn finish(self) -> HashMap<String, Vec<String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap()
    }
}

/// One sender per account at a time, also across failovers: per account,
/// the vendor never receives an event for the first time after a later one,
/// so the order it applies (first request per Idempotency-Key) is the log
/// order. The one exception is the documented window: a request that had
/// passed its lease check when its instance was paused or cut off may still
/// arrive later, as a resend of an event the vendor already has (same
/// Idempotency-Key, so it changes nothing); at most one per account.
fn assert_never_two_senders(v: &Vendor) {
    let mut last: HashMap<String, usize> = HashMap::new();
    let mut seen: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    let mut stale: HashMap<String, usize> = HashMap::new();
    for r in v.requests() {
        let i: usize = r.key.rsplit('-').next().unwrap().parse().unwrap();
        let m = last.entry(r.account.clone()).or_insert(0);
        let s = seen.entry(r.account.clone()).or_default();
        if i < *m {
            assert!(
                s.contains(&r.key),
                "account {} received event {} for the first time after event {}: two instances sent for it at once",
                r.account,
                r.key,
                *m
            );
            let n = stale.entry(r.account.clone()).or_insert(0);
            *n += 1;
            assert!(
                *n <= 1,
                "account {} received {} stale resends (the last: {} after event {}); the documented bound is one",
                r.account,
                n,
                r.key,
                *m
            );
        } else {
            *m = i;
        }
        s.insert(r.key.clone());
    }
}

/// `switchyard status --json` (the admin API of an instance, or Redis).
/// `None` when it failed (on a loaded machine a status read may exceed the
/// tests' 500 ms Redis timeout: the router answers 503).
fn try_status(config_path: &std::path::Path) -> Option<Value> {
    let out = std::process::Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(config_path)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "switchyard status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// [`try_status`], retried for up to 20 s.
fn status(config_path: &std::path::Path) -> Value {
    for _ in 0..40 {
        if let Some(v) = try_status(config_path) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("switchyard status kept failing for 20 s");
}

/// Owner → partitions of consumer `esp`, from the status (the lease keys).
fn owners(st: &Value) -> BTreeMap<String, Vec<u64>> {
    st["consumers"]["esp"]["owners"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_array()
                            .unwrap()
                            .iter()
                            .map(|p| p.as_u64().unwrap())
                            .collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait until the 8 partitions are shared by exactly `ids`, fairly (2 or 3 each for 3).
async fn wait_shared_by(config_path: &std::path::Path, ids: &[&str]) {
    let path = config_path.to_path_buf();
    let want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    eventually(
        Duration::from_secs(30),
        &format!("partitions shared by {ids:?}"),
        || {
            let (path, want) = (path.clone(), want.clone());
            async move {
                let st = tokio::task::spawn_blocking(move || try_status(&path))
                    .await
                    .unwrap()?;
                let o = owners(&st);
                let total: usize = o.values().map(Vec::len).sum();
                let fair = 8 / want.len();
                (o.keys().cloned().collect::<Vec<_>>() == want
                    && total == 8
                    && o.values()
                        .all(|ps| ps.len() >= fair && ps.len() <= fair + 1))
                .then_some(())
            }
        },
    )
    .await;
}

fn url(r: &Router) -> String {
    r.url("")
}

/// Three instances under load: one SIGKILLed, one added, one stopped gracefully.
async fn three_instances_kill_add_stop(redis_url: String, cluster: bool) {
    let vendor = Vendor::start().await;
    vendor.script(|_| Reply::Slow(Duration::from_millis(3), 200));
    let start = |id: &str| {
        let cfg = config(&redis_url, cluster, &vendor, id);
        tokio::task::block_in_place(|| Router::start(&cfg))
    };
    let mut a = start("a");
    let mut b = start("b");
    let c = start("c");
    wait_shared_by(&c.config_path, &["a", "b", "c"]).await;

    let targets = Arc::new(Mutex::new(vec![url(&a), url(&b), url(&c)]));
    let accts = accounts(24);
    let load = Load::start(targets.clone(), accts.clone());
    eventually(Duration::from_secs(30), "delivery under way", || async {
        (vendor.applied().len() > 300).then_some(())
    })
    .await;

    // SIGKILL a: its partitions move within the lease timeout.
    targets.lock().unwrap().retain(|u| *u != url(&a));
    tokio::task::block_in_place(|| a.kill());
    wait_shared_by(&c.config_path, &["b", "c"]).await;

    // Add d: it gets its fair share, handed over by b and c.
    let d = start("d");
    targets.lock().unwrap().push(url(&d));
    wait_shared_by(&c.config_path, &["b", "c", "d"]).await;
    assert!(
        c.logs().contains("partition handed over") || b.logs().contains("partition handed over")
    );

    // Stop b gracefully: it releases its leases at once (no lease timeout to wait for).
    targets.lock().unwrap().retain(|u| *u != url(&b));
    let term_at = chrono::Utc::now();
    let st = tokio::task::block_in_place(|| b.terminate());
    assert!(st.success());
    let exit_at = chrono::Utc::now();
    wait_shared_by(&c.config_path, &["c", "d"]).await;
    // When c and d acquired b's partitions (their logs' timestamps). Unreleased,
    // b's leases would live on for 2.7-3 s after its exit (its last renewal was
    // at most 300 ms before it).
    let acquired: Vec<chrono::DateTime<chrono::Utc>> = [c.logs(), d.logs()]
        .iter()
        .flat_map(|l| l.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|v| v["message"] == "lease acquired; partition started")
        .filter_map(|v| v["timestamp"].as_str()?.parse().ok())
        .filter(|t| *t > term_at)
        .collect();
    let last = acquired
        .iter()
        .max()
        .expect("c and d acquired b's partitions");
    let after_exit = (*last - exit_at).to_std().unwrap_or_default();
    assert!(
        after_exit < Duration::from_secs(2),
        "a graceful stop releases its leases at once: taken over {after_exit:?} after the exit"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    let expected = load.finish().await;
    let total: usize = expected.values().map(Vec::len).sum();
    wait_applied(&vendor, total, 90).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        vendor.applied().len(),
        total,
        "every event took effect once"
    );
    assert_order(&vendor, &expected);
    assert_never_two_senders(&vendor);
    let redundant = vendor.redundant_requests();
    assert!(
        redundant <= accts.len(),
        "{redundant} resends of applied events; the crash window allows one per account ({}) for the one SIGKILL",
        accts.len()
    );
    // Everything is checkpointed: nothing pending or lagging.
    let st = tokio::task::spawn_blocking({
        let p = c.config_path.clone();
        move || status(&p)
    })
    .await
    .unwrap();
    assert_eq!(st["consumers"]["esp"]["lag_events"], 0, "{st}");
    assert_eq!(st["consumers"]["esp"]["pending"], 0, "{st}");
    let mut ids: Vec<&str> = st["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c", "d"], "{st}");
    drop((c, d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_redis_survive_kill_add_and_stop() {
    let redis = RedisServer::start();
    three_instances_kill_add_stop(redis.url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_a_redis_cluster_survive_kill_add_and_stop() {
    let cluster = RedisCluster::start();
    three_instances_kill_add_stop(cluster.url(), true).await;
}

/// An owner paused (SIGSTOP) past its lease: the other instance takes its
/// partitions over; resumed (SIGCONT), the former owner finds its token
/// superseded and writes nothing (fenced) and sends nothing more.
async fn paused_owner_is_fenced(redis_url: String, cluster: bool) {
    let vendor = Vendor::start().await;
    vendor.script(|_| Reply::Slow(Duration::from_millis(3), 200));
    let start = |id: &str| {
        let cfg = config(&redis_url, cluster, &vendor, id);
        tokio::task::block_in_place(|| Router::start(&cfg))
    };
    let a = start("a");
    let b = start("b");
    wait_shared_by(&b.config_path, &["a", "b"]).await;
    let targets = Arc::new(Mutex::new(vec![url(&b)]));
    let accts = accounts(16);
    let load = Load::start(targets, accts.clone());
    eventually(Duration::from_secs(30), "delivery under way", || async {
        (vendor.applied().len() > 200).then_some(())
    })
    .await;

    a.signal("STOP");
    // b takes every partition once a's leases expired (3 s).
    wait_shared_by(&b.config_path, &["b"]).await;
    let requests_while_paused = vendor.requests().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.signal("CONT");
    // a finds out at its first renewal (or first write) and stops its partitions.
    eventually(
        Duration::from_secs(10),
        "a notices it lost its leases",
        || async {
            a.logs()
                .contains("lease taken over by another instance")
                .then_some(())
        },
    )
    .await;
    assert!(vendor.requests().len() >= requests_while_paused);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let expected = load.finish().await;
    let total: usize = expected.values().map(Vec::len).sum();
    wait_applied(&vendor, total, 90).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        vendor.applied().len(),
        total,
        "every event took effect once"
    );
    assert_order(&vendor, &expected);
    // The resumed owner sent nothing after b moved on (else an account would
    // have received an older event after a newer one).
    assert_never_two_senders(&vendor);
    let redundant = vendor.redundant_requests();
    assert!(
        redundant <= accts.len(),
        "{redundant} resends; at most one per account may have been in flight at the pause"
    );
    // a rejoins and gets its share back, with new tokens.
    wait_shared_by(&b.config_path, &["a", "b"]).await;
    let st = tokio::task::spawn_blocking({
        let p = b.config_path.clone();
        move || status(&p)
    })
    .await
    .unwrap();
    assert_eq!(st["consumers"]["esp"]["pending"], 0, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_past_its_lease_is_fenced_on_one_redis() {
    let redis = RedisServer::start();
    paused_owner_is_fenced(redis.url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_past_its_lease_is_fenced_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    paused_owner_is_fenced(cluster.url(), true).await;
}

/// A CDC source's stored state (the MySQL binlog position) is written only
/// by the current leader: once another instance took the source's leader
/// lease, a former leader's write is refused (fenced) and the successor's
/// position stays. On a cluster this also shows that the state and the lease
/// share one slot (a cross-slot script would fail).
async fn former_source_leader_is_fenced(redis_url: String, cluster: bool) {
    use switchyard_store::{lease, log::LogError, source_state};
    let text =
        base_config(&redis_url).replace("[redis]\n", &format!("[redis]\ncluster = {cluster}\n"));
    let config = switchyard_config::Config::from_toml(&text, std::path::Path::new(".")).unwrap();
    let log = switchyard_store::log::Log::connect(&config.redis, &config.log)
        .await
        .unwrap();
    let (lease_key, fence_key) = lease::source_leader_keys(&log.keys().namespace, "shop");
    let mut c = log.conn().await.unwrap();
    let old = lease::acquire_keys(&mut c, &lease_key, &fence_key, "a", 200)
        .await
        .unwrap()
        .expect("a free lease");
    let old_leader = log.with_leader_token(old);
    source_state::store(&old_leader, "shop", "binlog", "old-1")
        .await
        .unwrap();
    assert_eq!(
        source_state::load(&log, "shop", "binlog")
            .await
            .unwrap()
            .as_deref(),
        Some("old-1")
    );
    // "a" pauses past its lease; "b" takes the source over and moves on.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = lease::acquire_keys(&mut c, &lease_key, &fence_key, "b", 3000)
        .await
        .unwrap()
        .expect("the expired lease is free");
    assert!(new > old, "fencing tokens only grow");
    source_state::store(&log.with_leader_token(new), "shop", "binlog", "new-2")
        .await
        .unwrap();
    // "a" resumes and tries to store its older position.
    let err = source_state::store(&old_leader, "shop", "binlog", "old-3")
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Fenced), "{err:?}");
    assert_eq!(
        source_state::load(&log, "shop", "binlog")
            .await
            .unwrap()
            .as_deref(),
        Some("new-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_source_leader_cannot_move_the_position_on_one_redis() {
    let redis = RedisServer::start();
    former_source_leader_is_fenced(redis.url(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_source_leader_cannot_move_the_position_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    former_source_leader_is_fenced(cluster.url(), true).await;
}
