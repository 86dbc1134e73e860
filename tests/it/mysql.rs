//! MySQL/MariaDB binlog CDC source, end to end: a private MariaDB (the
//! router connects as a user with only `REPLICATION SLAVE, REPLICATION
//! CLIENT` and `SELECT` — the documented least privilege), a private Redis,
//! the real router binary.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::json;
use switchyard_core::event::{Event, Op};

use crate::support::eventually;
use crate::support::mariadb::MariaDb;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, run_expecting_exit, Router};

const PARTITIONS: u32 = 8;

fn read_all(redis: &RedisServer) -> Vec<Event> {
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

fn stored_position(redis: &RedisServer) -> Option<serde_json::Value> {
    let mut c = redis.conn();
    let v: Option<String> = redis::cmd("GET")
        .arg("sy:source:{src-shop}:binlog")
        .query(&mut c)
        .unwrap();
    v.map(|s| serde_json::from_str(&s).unwrap())
}

fn source_toml(url: &str, body: &str) -> String {
    format!(
        r#"
[sources.shop]
type = "mysql"
url = "{url}"
server_id = 4242
max_backoff = "1s"
heartbeat = "500ms"
{body}
"#
    )
}

fn config(redis: &RedisServer, db: &MariaDb, tables: &str) -> String {
    format!(
        "{}{}",
        base_config(&redis.url()),
        source_toml(&db.url(), tables)
    )
}

const CUSTOMERS_DDL: &str = "CREATE TABLE customers (
    id BIGINT PRIMARY KEY,
    account_id VARCHAR(64) NOT NULL,
    banner VARCHAR(64) NOT NULL,
    email VARCHAR(255),
    consent_email BOOLEAN,
    consent_sms BOOLEAN,
    bio TEXT,
    deleted_at DATETIME(3)
) ENGINE=InnoDB";

const CUSTOMERS_TOML: &str = r#"
[[sources.shop.tables]]
table = "customers"
topic = "customer.{banner}.{op}"
account_column = "account_id"
soft_delete_column = "deleted_at"

[[sources.shop.tables.rules]]
when_changed = ["email"]
topic = "customer.{banner}.email_changed"

[[sources.shop.tables.rules]]
when_changed = ["consent_*"]
topic = "customer.{banner}.consent_changed"
"#;

const ITEMS_DDL: &str = "CREATE TABLE items (id BIGINT PRIMARY KEY, account_id VARCHAR(32) NOT NULL, n INT NOT NULL, pad VARCHAR(64)) ENGINE=InnoDB";

fn items_toml(snapshot: bool) -> String {
    format!(
        r#"
[[sources.shop.tables]]
table = "shop.items"
topic = "item.{{op}}"
account_column = "account_id"
snapshot = {snapshot}
"#
    )
}

async fn wait_events(
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

/// Wait until the source streams (its position is stored once it starts).
async fn wait_streaming(redis: &RedisServer) {
    eventually(
        Duration::from_secs(30),
        "the source stored its position",
        || {
            let p = stored_position(redis);
            async move { p.map(|_| ()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_insert_update_delete_with_before_after_rules_and_soft_delete() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(CUSTOMERS_DDL);
    let router = Router::start(&config(&redis, &db, CUSTOMERS_TOML));
    wait_streaming(&redis).await;

    db.sql("INSERT INTO customers VALUES (1, 'acct-1', 'banner-a', 'a@x.com', false, false, 'bio', NULL)");
    db.sql("UPDATE customers SET email = 'b@x.com' WHERE id = 1");
    db.sql("UPDATE customers SET consent_sms = true, bio = 'new bio' WHERE id = 1");
    db.sql("UPDATE customers SET bio = 'other' WHERE id = 1");
    db.sql("UPDATE customers SET deleted_at = '2024-05-01 12:00:00.250' WHERE id = 1");
    db.sql("UPDATE customers SET deleted_at = NULL WHERE id = 1");
    db.sql("DELETE FROM customers WHERE id = 1");

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
        "{}",
        router.logs()
    );
    let ins = &evs[0];
    assert_eq!(ins.source, "shop");
    assert_eq!(ins.account_id, "acct-1");
    assert_eq!(ins.key, Some(json!({"id": 1})));
    assert_eq!(ins.before, None);
    assert_eq!(
        ins.after,
        Some(
            json!({"id": 1, "account_id": "acct-1", "banner": "banner-a", "email": "a@x.com",
                    "consent_email": 0, "consent_sms": 0, "bio": "bio", "deleted_at": null})
        )
    );
    let c = ins.commit.as_ref().unwrap();
    assert!(c.id.starts_with("mariadb-bin.") && c.seq == 0, "{c:?}");
    assert!(
        ins.attributes["gtid"].starts_with("0-1-"),
        "{:?}",
        ins.attributes
    );
    assert_eq!(ins.attributes["table"], "shop.customers");
    assert!((ins.ingested_at - ins.occurred_at).num_seconds().abs() < 10);

    let upd = &evs[1];
    assert_eq!(upd.changed, vec!["email"]);
    assert_eq!(upd.before.as_ref().unwrap()["email"], "a@x.com");
    assert_eq!(upd.after.as_ref().unwrap()["email"], "b@x.com");
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
        "2024-05-01T12:00:00.25"
    );
    assert_eq!(evs[7].op, Op::Restore);
    let del = &evs[8];
    assert_eq!(del.after, None);
    assert_eq!(del.before.as_ref().unwrap()["banner"], "banner-a");
    assert_eq!(del.account_id, "acct-1");
    let ids: HashSet<&str> = evs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), evs.len());

    // The stored position moved to the end of the last transaction.
    let end = db.sql("SHOW MASTER STATUS");
    let mut f = end.split('\t');
    let (file, pos) = (
        f.next().unwrap().to_string(),
        f.next().unwrap().parse::<u64>().unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let p = stored_position(&redis).unwrap();
        if p["file"] == file.as_str() && p["pos"] == pos {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stored position {p} is not the binlog's end {file}:{pos}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const TYPED_DDL: &str = "CREATE TABLE typed (
    id INT PRIMARY KEY, account_id VARCHAR(16),
    price DECIMAL(12,2), big_dec DECIMAL(30,10), qty TINYINT UNSIGNED, total BIGINT UNSIGNED, neg SMALLINT,
    f FLOAT, d DOUBLE, created DATETIME(6), updated TIMESTAMP(3) NULL, day DATE, t TIME(3), y YEAR,
    doc JSON, size ENUM('small','medium','large'), tags SET('new','sale','gift'),
    raw VARBINARY(16), blobby BLOB, fixed BINARY(4), flags BIT(10), note TEXT, nothing VARCHAR(8)
) ENGINE=InnoDB";

const TYPED_ROW: &str = "'a1', 12345.67, -12345678901234567890.0123456789, 200, 18446744073709551615, -7,
    0.1, 2.5, '2024-05-01 12:00:03.123456', '2024-05-01 12:00:00.250', '2024-05-01', '-26:03:04.5', 2024,
    '{\"a\": [1, null, \"x\"], \"b\": {\"c\": true}}', 'large', 'new,gift',
    x'DEADBEEF00', x'00FF', x'ABCD', b'1000000001', 'héllo', NULL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_value_types_map_to_json_alike_in_snapshot_and_binlog() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(TYPED_DDL);
    db.sql(&format!("INSERT INTO typed VALUES (1, {TYPED_ROW})"));
    let tables = r#"
[[sources.shop.tables]]
table = "typed"
topic = "typed.{op}"
account_column = "account_id"
snapshot = true
"#;
    let _router = Router::start(&config(&redis, &db, tables));
    wait_streaming(&redis).await;
    db.sql(&format!("INSERT INTO typed VALUES (2, {TYPED_ROW})"));
    db.sql(
        "UPDATE typed SET price = price + 0.01, doc = JSON_SET(doc, '$.b.c', false) WHERE id = 2",
    );
    let evs = wait_events(&redis, "typed events", Duration::from_secs(20), |e| {
        e.len() >= 3
    })
    .await;
    assert_eq!(evs[0].op, Op::Snapshot);
    assert_eq!(evs[1].op, Op::Insert);
    let want = json!({
        "account_id": "a1", "price": "12345.67", "big_dec": "-12345678901234567890.0123456789",
        "qty": 200, "total": 18446744073709551615u64, "neg": -7, "f": 0.1, "d": 2.5,
        "created": "2024-05-01T12:00:03.123456", "updated": "2024-05-01T12:00:00.25Z",
        "day": "2024-05-01", "t": "-26:03:04.5", "y": 2024,
        "doc": {"a": [1, null, "x"], "b": {"c": true}}, "size": "large", "tags": "new,gift",
        "raw": "deadbeef00", "blobby": "00ff", "fixed": "abcd0000", "flags": 513, "note": "héllo",
        "nothing": null,
    });
    for (which, e) in [("snapshot", &evs[0]), ("binlog", &evs[1])] {
        let a = e.after.as_ref().unwrap();
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&a[k], v, "{which}: column {k}");
        }
    }
    let u = &evs[2];
    assert_eq!(u.changed, vec!["doc", "price"]);
    assert_eq!(u.after.as_ref().unwrap()["price"], "12345.68");
    assert_eq!(u.before.as_ref().unwrap()["doc"]["b"]["c"], true);
    assert_eq!(u.after.as_ref().unwrap()["doc"]["b"]["c"], false);
}

/// Insert items `from..to` one transaction each (account `acct-<i % 16>`),
/// retrying through connection failures; a row whose commit was in doubt is
/// resolved by its primary key (a retried insert that hits it was committed).
async fn write_items(url: String, from: i64, to: i64, pause: Duration) -> i64 {
    let mut conn: Option<mysql_async::Conn> = None;
    let mut i = from;
    while i < to {
        if conn.is_none() {
            match mysql_async::Conn::from_url(url.as_str()).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().unwrap();
        let r = c
            .exec_drop(
                "INSERT INTO items VALUES (?, ?, ?, 'pad')",
                (i, format!("acct-{}", i % 16), i),
            )
            .await;
        match r {
            Ok(()) => i += 1,
            Err(mysql_async::Error::Server(e)) if e.code == 1062 => i += 1,
            Err(_) => {
                conn = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    to - from
}

/// Every committed row of `items` is in the log exactly once, per account in
/// commit order.
async fn assert_items_exactly_once(redis: &RedisServer, db: &MariaDb) -> usize {
    let committed: HashSet<i64> = db
        .sql("SELECT id FROM items")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.parse().unwrap())
        .collect();
    let evs = wait_events(
        redis,
        "every committed row in the log",
        Duration::from_secs(90),
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
async fn mysql_restart_resumes_from_the_stored_position() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    let cfg = config(&redis, &db, &items_toml(false));
    let mut router = Router::start(&cfg);
    wait_streaming(&redis).await;
    write_items(db.admin_url(), 0, 100, Duration::ZERO).await;
    wait_events(&redis, "first 100", Duration::from_secs(20), |e| {
        e.len() == 100
    })
    .await;
    assert!(router.terminate().success(), "{}", router.logs());
    // Written while the router is down: read from the stored position.
    write_items(db.admin_url(), 100, 200, Duration::ZERO).await;
    router.restart();
    assert_eq!(assert_items_exactly_once(&redis, &db).await, 200);
    assert!(
        !router.logs().contains("starting at the binlog's end"),
        "the second start resumes, it does not skip:\n{}",
        router.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_router_killed_mid_stream_loses_duplicates_and_reorders_nothing() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    // Rows before the first start come from the snapshot.
    write_items(db.admin_url(), 0, 500, Duration::ZERO).await;
    let mut router = Router::start(&config(&redis, &db, &items_toml(true)));
    let writer = tokio::spawn(write_items(
        db.admin_url(),
        500,
        5000,
        Duration::from_micros(300),
    ));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        router.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        router.restart();
    }
    assert_eq!(writer.await.unwrap(), 4500);
    assert_eq!(assert_items_exactly_once(&redis, &db).await, 5000);
    // Rows that existed before the first start come from the snapshot (rows
    // the writer committed before the snapshot began may too).
    let evs = read_all(&redis);
    for e in &evs {
        if e.key.as_ref().unwrap()["id"].as_i64().unwrap() < 500 {
            assert_eq!(e.op, Op::Snapshot, "{e:?}");
        }
    }
    assert!(evs.iter().filter(|e| e.op == Op::Snapshot).count() >= 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_database_killed_and_restarted_resumes() {
    let redis = RedisServer::start();
    let mut db = MariaDb::start();
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    let router = Router::start(&config(&redis, &db, &items_toml(false)));
    wait_streaming(&redis).await;
    let writer = tokio::spawn(write_items(
        db.admin_url(),
        0,
        3000,
        Duration::from_micros(500),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    db.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    db.start_again();
    tokio::time::sleep(Duration::from_millis(800)).await;
    db.stop();
    db.start_again();
    writer.await.unwrap();
    assert_items_exactly_once(&redis, &db).await;
    assert!(
        router.logs().contains("reconnecting"),
        "the source reports the lost connection at warn:\n{}",
        router.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_large_transaction_is_streamed_in_batches() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    let router = Router::start(&config(&redis, &db, &items_toml(false)));
    wait_streaming(&redis).await;
    // One transaction of 20 000 rows (MariaDB's sequence engine).
    db.sql(
        "INSERT INTO items SELECT seq, CONCAT('acct-', seq % 16), seq, REPEAT('x', 60) FROM seq_0_to_19999",
    );
    let n = assert_items_exactly_once(&redis, &db).await;
    assert_eq!(n, 20_000);
    let evs = read_all(&redis);
    let commits: HashSet<&str> = evs
        .iter()
        .map(|e| e.commit.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(commits.len(), 1, "one transaction");
    let seqs: HashSet<u64> = evs.iter().map(|e| e.commit.as_ref().unwrap().seq).collect();
    assert_eq!(seqs.len(), 20_000);
    let _ = router;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_missing_binlog_settings_are_reported_with_their_fix() {
    let redis = RedisServer::start();
    let db = MariaDb::start_with(&["--binlog-format=MIXED", "--binlog-row-image=MINIMAL"]);
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    let (st, err) = run_expecting_exit(
        &config(&redis, &db, &items_toml(false)),
        Duration::from_secs(30),
    );
    assert!(!st.success());
    assert!(err.contains("SET GLOBAL binlog_format = 'ROW'"), "{err}");
    assert!(
        err.contains("SET GLOBAL binlog_row_image = 'FULL'"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_missing_grants_are_reported() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.sql(ITEMS_DDL);
    // SELECT only: no REPLICATION CLIENT / SLAVE.
    db.sql(&format!(
        "CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; GRANT SELECT ON shop.* TO '{u}'@'%'",
        u = crate::support::mariadb::CDC_USER,
        p = crate::support::mariadb::CDC_PASSWORD
    ));
    let (st, err) = run_expecting_exit(
        &config(&redis, &db, &items_toml(false)),
        Duration::from_secs(30),
    );
    assert!(!st.success());
    assert!(
        err.contains("GRANT REPLICATION SLAVE, REPLICATION CLIENT"),
        "{err}"
    );
    // …and without SELECT on the captured table (the database is visible:
    // the user may read another table of it):
    let db2 = MariaDb::start();
    db2.sql(ITEMS_DDL);
    db2.sql("CREATE TABLE other (id INT PRIMARY KEY)");
    db2.sql(&format!(
        "CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; \
         GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{u}'@'%'; \
         GRANT SELECT ON shop.other TO '{u}'@'%'",
        u = crate::support::mariadb::CDC_USER,
        p = crate::support::mariadb::CDC_PASSWORD
    ));
    let (st, err) = run_expecting_exit(
        &config(&redis, &db2, &items_toml(false)),
        Duration::from_secs(30),
    );
    assert!(!st.success());
    assert!(err.contains("GRANT SELECT ON `shop`.`items`"), "{err}");
    let mut conn = db2.admin().await;
    let _: Vec<String> = conn.query("SELECT 'ok'").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_tls_verify_identity_streams_and_a_wrong_ca_is_named() {
    let pki = crate::support::tls::Pki::new();
    let redis = RedisServer::start();
    let db = MariaDb::start_with(&[
        &format!("--ssl-cert={}", pki.server_cert().display()),
        &format!("--ssl-key={}", pki.server_key().display()),
        &format!("--ssl-ca={}", pki.ca().display()),
        "--require-secure-transport=ON",
    ]);
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    let tls_url = |ca: &std::path::Path| {
        format!(
            "{}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            db.url(),
            ca.display()
        )
    };
    let cfg = |url: &str| {
        format!(
            "{}{}",
            base_config(&redis.url()),
            source_toml(url, &items_toml(false))
        )
    };
    // A CA that did not sign the server's certificate: refused, naming the setting.
    let (st, err) = run_expecting_exit(&cfg(&tls_url(&pki.other_ca())), Duration::from_secs(30));
    assert!(!st.success());
    assert!(
        err.contains("TLS to MySQL failed") && err.contains("ssl-ca"),
        "{err}"
    );
    // The right CA: both connections (SQL and binlog) work over TLS.
    let router = Router::start(&cfg(&tls_url(&pki.ca())));
    wait_streaming(&redis).await;
    db.sql("INSERT INTO items VALUES (1, 'acct-1', 1, 'x')");
    let evs = wait_events(
        &redis,
        "the insert over TLS",
        Duration::from_secs(20),
        |e| !e.is_empty(),
    )
    .await;
    assert_eq!(evs[0].key, Some(json!({"id": 1})), "{}", router.logs());
    // The server refuses unencrypted TCP connections: both of the source's
    // connections were TLS.
    assert_eq!(db.sql("SELECT @@global.require_secure_transport"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_db_frozen_is_detected_and_resumed() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    // heartbeat = 500ms: silence for 5 heartbeats (+1 s) is a dead connection.
    let router = Router::start(&config(&redis, &db, &items_toml(false)));
    wait_streaming(&redis).await;
    db.sql("INSERT INTO items VALUES (1, 'acct-1', 1, 'x')");
    wait_events(&redis, "first row", Duration::from_secs(20), |e| {
        e.len() == 1
    })
    .await;
    db.pause();
    tokio::time::sleep(Duration::from_secs(5)).await;
    db.resume();
    db.sql("INSERT INTO items VALUES (2, 'acct-1', 2, 'x')");
    assert_items_exactly_once(&redis, &db).await;
    assert!(
        router.logs().contains("no binlog event or heartbeat"),
        "a silent server is noticed (heartbeats stop):\n{}",
        router.logs()
    );
}

/// `switchyard_cdc_lag_{seconds,bytes}{source="shop"}` from the router's /metrics.
async fn mysql_lag(router: &Router) -> (f64, f64) {
    let text = reqwest::get(router.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let get = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    (
        get("switchyard_cdc_lag_seconds{source=\"shop\"}"),
        get("switchyard_cdc_lag_bytes{source=\"shop\"}"),
    )
}

/// The MySQL source's lag (status and /metrics): while Redis is stalled the
/// source reads changes it cannot append, and the lag in seconds and in
/// binlog bytes grows; once Redis is back it returns to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lag_grows_while_the_log_is_stalled_and_returns_to_zero() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(ITEMS_DDL);
    let cfg = format!(
        "{}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        config(&redis, &db, &items_toml(false))
    );
    let router = Router::start(&cfg);
    wait_streaming(&redis).await;
    db.sql("INSERT INTO items VALUES (1, 'acct-1', 1, 'x')");
    wait_events(&redis, "first row", Duration::from_secs(20), |e| {
        e.len() == 1
    })
    .await;
    eventually(Duration::from_secs(10), "caught up: no lag", || async {
        (mysql_lag(&router).await == (0.0, 0.0)).then_some(())
    })
    .await;

    redis.pause();
    for i in 2..=20 {
        db.sql(&format!(
            "INSERT INTO items VALUES ({i}, 'acct-1', {i}, 'x')"
        ));
    }
    eventually(
        Duration::from_secs(20),
        "lag while Redis is stalled",
        || async {
            let (s, b) = mysql_lag(&router).await;
            (s >= 2.0 && b > 0.0).then_some(())
        },
    )
    .await;
    redis.resume();
    eventually(Duration::from_secs(30), "lag back to 0", || async {
        (mysql_lag(&router).await == (0.0, 0.0)).then_some(())
    })
    .await;
    assert_items_exactly_once(&redis, &db).await;
}
