//! Postgres CDC source, end to end: a private Postgres, a private Redis, the
//! real router binary (or `run()` in-process for startup errors).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_core::event::{Event, Op};

use crate::support::eventually;
use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, Router};

const PARTITIONS: u32 = 8;

/// Every event in the log (all partitions), in stream order per partition.
pub(crate) fn read_all(redis: &RedisServer) -> Vec<Event> {
    let mut c = redis.conn();
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("sy:log:{{p{p}}}"))
            .arg("-")
            .arg("+")
            .query(&mut c)
            .unwrap();
        out.extend(
            reply
                .ids
                .iter()
                .map(|e| switchyard_store::log::decode_entry(e).unwrap()),
        );
    }
    out
}

fn source_toml(pg_url: &str, body: &str) -> String {
    format!(
        r#"
[sources.crm]
type = "postgres"
url = "{pg_url}"
publication = "sy_crm"
create_publication = true
slot = "sy_crm"
status_interval = "200ms"
max_backoff = "1s"
{body}
"#
    )
}

pub(crate) const CUSTOMERS_DDL: &str = "CREATE TABLE customers (
    id bigint PRIMARY KEY,
    account_id text NOT NULL,
    banner text NOT NULL,
    email text,
    consent_email boolean,
    consent_sms boolean,
    bio text,
    deleted_at timestamptz
);
ALTER TABLE customers REPLICA IDENTITY FULL;";

const CUSTOMERS_TOML: &str = r#"
[[sources.crm.tables]]
table = "public.customers"
topic = "customer.{banner}.{op}"
account_column = "account_id"
soft_delete_column = "deleted_at"

[[sources.crm.tables.rules]]
when_changed = ["email"]
topic = "customer.{banner}.email_changed"

[[sources.crm.tables.rules]]
when_changed = ["consent_*"]
topic = "customer.{banner}.consent_changed"
"#;

/// A simple append-only table for volume tests.
const ITEMS_DDL: &str = "CREATE TABLE items (id bigint PRIMARY KEY, account_id text NOT NULL, n int NOT NULL, pad text)";
const ITEMS_TOML: &str = r#"
[[sources.crm.tables]]
table = "items"
topic = "item.{op}"
account_column = "account_id"
require_before_image = false
"#;

pub(crate) fn start_router(redis: &RedisServer, pg: &PgServer, tables: &str) -> Router {
    let cfg = format!(
        "{}{}",
        base_config(&redis.url()),
        source_toml(&pg.url(), tables)
    );
    Router::start(&cfg)
}

pub(crate) async fn wait_events(
    redis: &RedisServer,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    eventually(timeout, what, || {
        let evs = read_all(redis);
        let ok = pred(&evs);
        async move { ok.then_some(evs) }
    })
    .await
}

/// Wait until the slot has been created by the router (it streams from then on).
pub(crate) async fn wait_slot(pg: &PgServer) {
    eventually(Duration::from_secs(30), "replication slot active", || {
        let active = pg
            .sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sy_crm' AND active");
        async move { (active == "1").then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_delete_with_before_after_changed_rules_and_soft_delete() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(CUSTOMERS_DDL);
    let _router = start_router(&redis, &pg, CUSTOMERS_TOML);
    wait_slot(&pg).await;

    pg.sql("INSERT INTO customers VALUES (1, 'acct-1', 'banner-a', 'a@x.com', false, false, 'bio', NULL)");
    pg.sql("UPDATE customers SET email = 'b@x.com' WHERE id = 1");
    pg.sql("UPDATE customers SET consent_sms = true, bio = 'new bio' WHERE id = 1");
    pg.sql("UPDATE customers SET bio = 'other' WHERE id = 1");
    pg.sql("UPDATE customers SET deleted_at = '2024-05-01 12:00:00+00' WHERE id = 1");
    pg.sql("UPDATE customers SET deleted_at = NULL WHERE id = 1");
    pg.sql("DELETE FROM customers WHERE id = 1");

    let evs = wait_events(
        &redis,
        "all customer events",
        Duration::from_secs(20),
        |e| e.iter().any(|e| e.op == Op::Delete),
    )
    .await;
    let topics: Vec<&str> = evs.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(
        topics,
        vec![
            "customer.banner-a.insert",
            "customer.banner-a.update",
            "customer.banner-a.email_changed",
            "customer.banner-a.update",
            "customer.banner-a.consent_changed",
            "customer.banner-a.update",
            "customer.banner-a.soft_delete",
            "customer.banner-a.restore",
            "customer.banner-a.delete",
        ],
        "one account: one partition, in commit order"
    );
    let ins = &evs[0];
    assert_eq!(ins.source, "crm");
    assert_eq!(ins.account_id, "acct-1");
    assert_eq!(ins.key, Some(json!({"id": 1})));
    assert_eq!(ins.before, None);
    assert_eq!(
        ins.after,
        Some(
            json!({"id": 1, "account_id": "acct-1", "banner": "banner-a", "email": "a@x.com",
                    "consent_email": false, "consent_sms": false, "bio": "bio", "deleted_at": null})
        )
    );
    let c = ins.commit.as_ref().unwrap();
    assert!(c.id.contains('/') && c.seq == 0, "{c:?}");
    assert!((ins.ingested_at - ins.occurred_at).num_seconds().abs() < 10);

    let upd = &evs[1];
    assert_eq!(upd.changed, vec!["email"]);
    assert_eq!(upd.before.as_ref().unwrap()["email"], "a@x.com");
    assert_eq!(upd.after.as_ref().unwrap()["email"], "b@x.com");
    assert_eq!(evs[2].changed, vec!["email"]);
    assert_eq!(
        evs[2].commit, upd.commit,
        "rule events share the change position"
    );
    assert_ne!(evs[2].id, upd.id);
    assert_eq!(evs[3].changed, vec!["bio", "consent_sms"]);
    assert_eq!(evs[5].changed, vec!["bio"]);
    assert_eq!(evs[6].op, Op::SoftDelete);
    assert_eq!(
        evs[6].after.as_ref().unwrap()["deleted_at"],
        "2024-05-01T12:00:00Z"
    );
    assert_eq!(evs[7].op, Op::Restore);
    let del = &evs[8];
    assert_eq!(del.after, None);
    assert_eq!(del.before.as_ref().unwrap()["banner"], "banner-a");
    assert_eq!(del.account_id, "acct-1");
    let ids: HashSet<&str> = evs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), evs.len());
}

/// A rule without `ops` on a table without `soft_delete_column` is valid
/// (its default ops fit the table); a topic rendered from a column value
/// that breaks the topic rule is not written but quarantined, logged with the source,
/// table and key, and does not stop the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rule_ops_fit_the_table_and_invalid_rendered_topics_are_quarantined_visibly() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(CUSTOMERS_DDL);
    let router = start_router(
        &redis,
        &pg,
        r#"
[[sources.crm.tables]]
table = "public.customers"
topic = "customer.{banner}.{op}"
account_column = "account_id"

[[sources.crm.tables.rules]]
when_changed = ["email"]
topic = "customer.email_changed"
"#,
    );
    wait_slot(&pg).await;

    pg.sql("INSERT INTO customers VALUES (1, 'acct-1', 'banner-a', 'a@x.com', false, false, 'bio', NULL)");
    pg.sql("INSERT INTO customers VALUES (2, 'acct-2', 'bad banner', 'b@x.com', false, false, 'bio', NULL)");
    pg.sql("UPDATE customers SET email = 'c@x.com' WHERE id = 2");
    pg.sql("UPDATE customers SET email = 'd@x.com' WHERE id = 1");
    pg.sql("INSERT INTO customers VALUES (3, 'acct-3', 'banner-c', 'e@x.com', false, false, 'bio', NULL)");

    let evs = wait_events(&redis, "the last insert", Duration::from_secs(20), |e| {
        e.iter().any(|e| e.topic == "customer.banner-c.insert")
    })
    .await;
    let mut got: Vec<(String, String)> = evs
        .iter()
        .map(|e| (e.account_id.clone(), e.topic.clone()))
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("acct-1", "customer.banner-a.insert"),
        ("acct-1", "customer.banner-a.update"),
        ("acct-1", "customer.email_changed"),
        ("acct-2", "customer.email_changed"),
        ("acct-3", "customer.banner-c.insert"),
    ]
    .iter()
    .map(|(a, t)| (a.to_string(), t.to_string()))
    .collect();
    assert_eq!(got, want);
    for e in &evs {
        assert!(switchyard_core::event::valid_topic(&e.topic), "{}", e.topic);
    }

    // Both of row 2's default-topic events were quarantined visibly
    // (`drift.rs` tests the quarantine itself).
    let dropped: Vec<serde_json::Value> = router
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("CDC record quarantined"))
        })
        .collect();
    assert_eq!(dropped.len(), 2, "{}", router.logs());
    for v in &dropped {
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["source"], "crm");
        assert_eq!(v["table"], "public.customers");
        assert_eq!(v["key"], r#"{"id":2}"#);
        assert_eq!(v["kind"], "invalid_topic");
        // The topic is made of column values: not logged.
        assert!(!v.to_string().contains("bad banner"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_map_to_json() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(
        "CREATE TYPE mood AS ENUM ('happy', 'sad');
         CREATE TABLE typed (
            id int PRIMARY KEY, account_id text, i2 smallint, i8 bigint, f4 real, f8 double precision,
            fnan double precision, num numeric(20,6), b boolean, ts timestamp, tstz timestamptz, d date,
            j json, jb jsonb, ints int[], texts text[], by bytea, u uuid, m mood, iv interval, big text
         );
         ALTER TABLE typed ALTER COLUMN big SET STORAGE EXTERNAL",
    );
    let tables = r#"
[[sources.crm.tables]]
table = "typed"
topic = "typed.{op}"
account_column = "account_id"
require_before_image = false
"#;
    let _router = start_router(&redis, &pg, tables);
    wait_slot(&pg).await;
    pg.sql(
        "INSERT INTO typed VALUES (1, 'a', -7, 9007199254740993, 1.5, 0.1, 'NaN', 12345.678900, true,
          '2024-05-01 12:00:00.5', '2024-05-01 14:00:00+02', '2024-05-01', '{\"a\":1}', '{\"b\": [1, null]}',
          '{1,NULL,3}', '{a,\"b c\",NULL}', '\\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'sad', '1 day 2 hours',
          repeat('x', 100000))",
    );
    // A TOASTed column the update does not touch (REPLICA IDENTITY DEFAULT: no before-image).
    pg.sql("UPDATE typed SET i2 = 8 WHERE id = 1");
    let evs = wait_events(&redis, "typed events", Duration::from_secs(20), |e| {
        e.len() >= 2
    })
    .await;
    let a = evs[0].after.as_ref().unwrap();
    let want = json!({
        "id": 1, "account_id": "a", "i2": -7, "i8": 9007199254740993u64, "f4": 1.5, "f8": 0.1, "fnan": "NaN",
        "num": "12345.678900", "b": true, "ts": "2024-05-01T12:00:00.5", "tstz": "2024-05-01T12:00:00Z",
        "d": "2024-05-01", "j": {"a": 1}, "jb": {"b": [1, null]}, "ints": [1, null, 3], "texts": ["a", "b c", null],
        "by": "deadbeef", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "m": "sad", "iv": "P1DT2H",
    });
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&a[k], v, "column {k}");
    }
    assert_eq!(a["big"].as_str().unwrap().len(), 100_000);
    let u = &evs[1];
    assert_eq!(u.op, Op::Update);
    assert!(
        u.after.as_ref().unwrap().get("big").is_none(),
        "unchanged TOAST is left out"
    );
    assert_eq!(
        u.attributes.get("unchanged_toast").map(String::as_str),
        Some("big")
    );
    assert!(!u.changed.contains(&"big".to_string()));
    assert!(u.changed.contains(&"i2".to_string()));
    assert!(
        !u.changed.contains(&"id".to_string()),
        "key unchanged without an old tuple"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_column_mid_stream_is_picked_up() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(ITEMS_DDL);
    let _router = start_router(&redis, &pg, ITEMS_TOML);
    wait_slot(&pg).await;
    pg.sql("INSERT INTO items VALUES (1, 'a', 1)");
    pg.sql("ALTER TABLE items ADD COLUMN tier text DEFAULT 'gold'");
    pg.sql("INSERT INTO items VALUES (2, 'a', 2, NULL, 'silver')");
    pg.sql("UPDATE items SET n = 10 WHERE id = 1");
    let all = wait_events(&redis, "3 item events", Duration::from_secs(20), |e| {
        e.iter().filter(|e| e.topic.starts_with("item.")).count() >= 3
    })
    .await;
    // The change is announced (see `drift.rs` for every kind).
    let announced: Vec<&Event> = all.iter().filter(|e| e.topic == "schema.changed").collect();
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].data.as_ref().unwrap()["change"], "add_column");
    let evs: Vec<&Event> = all
        .iter()
        .filter(|e| e.topic.starts_with("item."))
        .collect();
    assert!(evs[0].after.as_ref().unwrap().get("tier").is_none());
    assert_eq!(evs[1].after.as_ref().unwrap()["tier"], "silver");
    assert_eq!(evs[2].after.as_ref().unwrap()["tier"], "gold");
    assert_eq!(evs[2].after.as_ref().unwrap()["n"], 10);
}

/// Rows 0..n into `items`, in transactions of 1..=5 rows, on one account per 7 ids.
async fn write_items(pg_url: String, from: i64, n: i64, pace: Duration) -> i64 {
    let mut written = 0;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut id = from;
    while id < from + n {
        if client.is_none() {
            match tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    client = Some(c);
                }
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let rows = (1 + id % 5).min(from + n - id);
        let sql = format!(
            "INSERT INTO items SELECT g, 'acct-' || (g % 7), g::int, 'pad' FROM generate_series({id}, {}) g",
            id + rows - 1
        );
        match client.as_ref().unwrap().batch_execute(&sql).await {
            Ok(()) => {
                written += rows;
                id += rows;
            }
            Err(_) => {
                // The commit may or may not have happened: the table is the truth.
                client = None;
                id += rows;
            }
        }
        tokio::time::sleep(pace).await;
    }
    written
}

/// Every committed row of `items` is in the log exactly once (by id and by key).
async fn assert_items_exactly_once(redis: &RedisServer, pg: &PgServer) -> usize {
    let committed: HashSet<i64> = pg
        .sql("SELECT id FROM items")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap())
        .collect();
    let evs = wait_events(
        redis,
        "every committed row in the log",
        Duration::from_secs(60),
        |evs| {
            let keys: HashSet<i64> = evs
                .iter()
                .filter_map(|e| e.key.as_ref()?["id"].as_i64())
                .collect();
            committed.iter().all(|k| keys.contains(k))
        },
    )
    .await;
    let mut ids = HashMap::new();
    for e in &evs {
        *ids.entry(e.id.clone()).or_insert(0) += 1;
    }
    let dup_ids: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup_ids.is_empty(), "duplicate ids in the log: {dup_ids:?}");
    let mut keys = HashMap::new();
    for e in &evs {
        *keys
            .entry(e.key.as_ref().unwrap()["id"].as_i64().unwrap())
            .or_insert(0) += 1;
    }
    let dup_keys: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dup_keys.is_empty(),
        "rows inserted once but logged twice: {dup_keys:?}"
    );
    assert_eq!(
        keys.len(),
        committed.len(),
        "no event for an uncommitted row"
    );
    // Per account, events are in commit order (ids increase).
    let mut last: HashMap<&str, i64> = HashMap::new();
    for e in &evs {
        let id = e.key.as_ref().unwrap()["id"].as_i64().unwrap();
        if let Some(prev) = last.insert(e.account_id.as_str(), id) {
            assert!(
                id > prev,
                "account {} out of order: {prev} then {id}",
                e.account_id
            );
        }
    }
    evs.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_killed_mid_stream_and_restarted_logs_every_change_exactly_once() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(ITEMS_DDL);
    let mut router = start_router(&redis, &pg, ITEMS_TOML);
    wait_slot(&pg).await;
    let writer = tokio::spawn(write_items(pg.url(), 0, 6000, Duration::from_micros(300)));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        router.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        router.restart();
    }
    let written = writer.await.unwrap();
    assert_eq!(written, 6000);
    let n = assert_items_exactly_once(&redis, &pg).await;
    assert_eq!(n, 6000);
    // Graceful stop confirms what was flushed: a restart re-reads nothing new.
    assert!(router.terminate().success(), "{}", router.logs());
    let confirmed =
        pg.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sy_crm'");
    let current = pg.sql("SELECT pg_current_wal_lsn()");
    assert!(!confirmed.is_empty() && !current.is_empty());
}

/// Two instances, one Postgres slot: one reads (the leader lease), the other
/// stands by; SIGKILL the leader mid-stream and the standby takes over within
/// the lease timeout, resuming from the slot: every committed row once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_the_postgres_slot_when_the_leader_dies() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(ITEMS_DDL);
    let cfg = |id: &str| {
        format!(
            "{}{}",
            base_config(&redis.url()).replace(
                "[coordination]\n",
                &format!("[coordination]\ninstance_id = \"{id}\"\n")
            ),
            source_toml(&pg.url(), ITEMS_TOML)
        )
    };
    let mut a = Router::start(&cfg("a"));
    wait_slot(&pg).await;
    let b = Router::start(&cfg("b"));
    eventually(Duration::from_secs(10), "b stands by", || async {
        b.logs().contains("standing by").then_some(())
    })
    .await;
    assert!(a.logs().contains("leader of the source"));
    let writer = tokio::spawn(write_items(pg.url(), 0, 4000, Duration::from_micros(300)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.kill();
    let killed = std::time::Instant::now();
    eventually(Duration::from_secs(15), "b leads", || async {
        b.logs().contains("leader of the source").then_some(())
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "the standby took over within the lease timeout (3 s) and the slot's release: {:?}",
        killed.elapsed()
    );
    let written = writer.await.unwrap();
    assert_eq!(written, 4000);
    let n = assert_items_exactly_once(&redis, &pg).await;
    assert_eq!(n, 4000);
    // `switchyard status` names the leader.
    let out = std::process::Command::new(crate::support::router::bin())
        .args(["status", "--json", "--config"])
        .arg(&b.config_path)
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["sources"]["crm"]["leader"], "b", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_and_crashed_mid_stream() {
    let redis = RedisServer::start();
    let mut pg = PgServer::start();
    pg.sql(ITEMS_DDL);
    let router = start_router(&redis, &pg, ITEMS_TOML);
    wait_slot(&pg).await;
    let writer = tokio::spawn(write_items(pg.url(), 0, 4000, Duration::from_micros(500)));
    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.restart();
    tokio::time::sleep(Duration::from_millis(800)).await;
    pg.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    pg.start_again();
    writer.await.unwrap();
    assert_items_exactly_once(&redis, &pg).await;
    assert!(
        router.logs().contains("reconnecting"),
        "the source reports the lost connection at warn:\n{}",
        router.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_mid_stream_loses_nothing() {
    // AOF with fsync on every write: what Redis acknowledged survives the kill.
    let mut redis = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    let pg = PgServer::start();
    pg.sql(ITEMS_DDL);
    let router = start_router(&redis, &pg, ITEMS_TOML);
    wait_slot(&pg).await;
    let writer = tokio::spawn(write_items(pg.url(), 0, 3000, Duration::from_micros(500)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    writer.await.unwrap();
    assert_items_exactly_once(&redis, &pg).await;
    assert!(
        router.logs().contains("log unavailable; retrying append"),
        "{}",
        router.logs()
    );
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_of_200k_rows_streams_with_bounded_memory() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(ITEMS_DDL);
    let router = start_router(&redis, &pg, ITEMS_TOML);
    wait_slot(&pg).await;
    let baseline = vm_hwm_kib(router.pid());
    // ~1 KiB per row: holding the transaction in memory would take > 200 MiB.
    pg.sql("INSERT INTO items SELECT g, 'acct-' || (g % 100), g::int, repeat(md5(g::text), 30) FROM generate_series(1, 200000) g");
    let started = Instant::now();
    let mut c = redis.conn();
    eventually(Duration::from_secs(180), "200k events in the log", || {
        let total: usize = (0..PARTITIONS)
            .map(|p| {
                redis::cmd("XLEN")
                    .arg(format!("sy:log:{{p{p}}}"))
                    .query::<usize>(&mut c)
                    .unwrap()
            })
            .sum();
        async move { (total >= 200_000).then_some(()) }
    })
    .await;
    let peak = vm_hwm_kib(router.pid());
    eprintln!(
        "200k-row transaction: logged in {:?}; router peak RSS {} MiB (baseline {} MiB)",
        started.elapsed(),
        peak / 1024,
        baseline / 1024
    );
    assert!(
        peak < baseline + 96 * 1024,
        "router peak RSS {peak} KiB (baseline {baseline} KiB)"
    );
    // And it was confirmed: the slot moved past the transaction.
    eventually(Duration::from_secs(10), "slot confirmed past the big transaction", || {
        let lag = pg.sql(
            "SELECT pg_current_wal_lsn() - confirmed_flush_lsn < 1000000 FROM pg_replication_slots WHERE slot_name = 'sy_crm'",
        );
        async move { (lag == "t").then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_snapshot_is_consistent_with_the_stream() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(ITEMS_DDL);
    pg.sql("INSERT INTO items SELECT g, 'acct-' || (g % 7), g::int, 'pad' FROM generate_series(0, 2999) g");
    let tables = ITEMS_TOML.replace(
        "require_before_image = false",
        "require_before_image = false\nsnapshot = true",
    );
    let writer = tokio::spawn(write_items(
        pg.url(),
        3000,
        1500,
        Duration::from_micros(500),
    ));
    let _router = start_router(&redis, &pg, &tables);
    writer.await.unwrap();
    assert_items_exactly_once(&redis, &pg).await;
    let evs = read_all(&redis);
    let snaps = evs.iter().filter(|e| e.op == Op::Snapshot).count();
    assert!(snaps >= 3000, "snapshot rows: {snaps}");
    let s: Vec<&Event> = evs.iter().filter(|e| e.op == Op::Snapshot).collect();
    assert_eq!(s[0].topic, "item.snapshot");
    assert!(s.iter().all(|e| e.after.is_some() && e.before.is_none()));
    assert_eq!(
        pg.sql("SELECT count(*) FROM pg_replication_slots"),
        "1",
        "temporary slot gone"
    );
}

async fn run_in_process(pg: &PgServer, redis: &RedisServer, tables: &str) -> anyhow::Result<()> {
    let text = format!(
        "{}{}",
        base_config(&redis.url()),
        source_toml(&pg.url(), tables)
    );
    let config = switchyard_config::Config::from_toml(&text, std::path::Path::new(".")).unwrap();
    let log = switchyard_store::log::Log::new(&config.redis, &config.log).unwrap();
    let (name, pgcfg) = config
        .postgres_sources()
        .next()
        .map(|(n, c)| (n.clone(), c.clone()))
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        switchyard_sources::postgres::run(name, pgcfg, log, shutdown),
    )
    .await
    .expect("run() should fail fast on a config problem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_fails_with_clear_errors() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql("CREATE TABLE customers (id bigint PRIMARY KEY, account_id text, banner text, email text, consent_email boolean, deleted_at timestamptz)");

    // Missing table and a rule table without REPLICA IDENTITY FULL: both reported.
    let tables = format!(
        "{CUSTOMERS_TOML}\n[[sources.crm.tables]]\ntable = \"public.nope\"\ntopic = \"x.{{op}}\"\naccount_column = \"a\"\n"
    );
    let err = format!(
        "{:#}",
        run_in_process(&pg, &redis, &tables).await.unwrap_err()
    );
    assert!(
        err.contains("sources.crm.tables[1].table") && err.contains("`public.nope` does not exist"),
        "{err}"
    );
    assert!(
        err.contains("sources.crm.tables[0]") && err.contains("REPLICA IDENTITY FULL"),
        "{err}"
    );
    assert!(
        err.contains("ALTER TABLE \"public\".\"customers\" REPLICA IDENTITY FULL"),
        "{err}"
    );

    // Missing column.
    let tables = ITEMS_TOML
        .replace("items", "customers")
        .replace("account_id", "acct");
    let err = format!(
        "{:#}",
        run_in_process(&pg, &redis, &tables).await.unwrap_err()
    );
    assert!(
        err.contains("sources.crm.tables[0].account_column")
            && err.contains("`acct` does not exist"),
        "{err}"
    );

    // Publication not managed and missing.
    let tables = ITEMS_TOML.replace("items", "customers");
    let text = source_toml(&pg.url(), &tables)
        .replace("create_publication = true", "create_publication = false");
    let config = switchyard_config::Config::from_toml(
        &format!("{}{text}", base_config(&redis.url())),
        std::path::Path::new("."),
    )
    .unwrap();
    let (name, pgcfg) = config
        .postgres_sources()
        .next()
        .map(|(n, c)| (n.clone(), c.clone()))
        .unwrap();
    let err = switchyard_sources::postgres::run(
        name,
        pgcfg,
        switchyard_store::log::Log::new(&config.redis, &config.log).unwrap(),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("CREATE PUBLICATION \"sy_crm\" FOR TABLE \"public\".\"customers\""),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_level_replica_is_reported() {
    let redis = RedisServer::start();
    let pg = PgServer::start_with(&["wal_level=replica"]);
    pg.sql(ITEMS_DDL);
    let err = format!(
        "{:#}",
        run_in_process(&pg, &redis, ITEMS_TOML).await.unwrap_err()
    );
    assert!(err.contains("wal_level = logical"), "{err}");
}

#[test]
fn config_errors_are_reported_with_paths() {
    let text = format!(
        "{}{}",
        base_config("redis://127.0.0.1:1"),
        source_toml(
            "postgres://u@h/db",
            "[[sources.crm.tables]]\ntable = \"a.b.c\"\ntopic = \"x.{\"\naccount_column = \"\"\n"
        )
    );
    let errs = switchyard_config::Config::from_toml(&text, std::path::Path::new(".")).unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in [
        "sources.crm.tables[0].table",
        "sources.crm.tables[0].topic",
        "sources.crm.tables[0].account_column",
    ] {
        assert!(paths.contains(&p), "{p} not in {errs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_exits_non_zero_when_a_source_cannot_run() {
    let redis = RedisServer::start();
    let pg = PgServer::start_with(&["wal_level=replica"]);
    pg.sql(ITEMS_DDL);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "{}{}",
            base_config(&redis.url()),
            source_toml(&pg.url(), ITEMS_TOML)
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::router::bin())
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        !out.status.success(),
        "a source that cannot run must fail the process"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wal_level"), "{err}");
}
