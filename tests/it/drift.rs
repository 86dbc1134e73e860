//! Schema drift on both CDC sources (issue 19 part 2), run under the
//! least-privilege roles (part 4): every schema change made on a live table
//! while rows stream is announced (a `schema.changed` event in the log, the
//! history `switchyard schema history` prints), rows after it carry the new
//! shape, and no row is lost.
//!
//! Postgres runs as a role with `LOGIN REPLICATION` and `SELECT` on the
//! table only (no superuser, not the owner; the publication is made by the
//! table owner); MariaDB as the source's documented user
//! (`REPLICATION SLAVE, REPLICATION CLIENT`, `SELECT`).

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_core::event::{Event, Op};

use crate::cdc::read_all;
use crate::support::eventually;
use crate::support::mariadb::MariaDb;
use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};

async fn wait_events(
    redis: &RedisServer,
    what: &str,
    pred: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    eventually(Duration::from_secs(40), what, || {
        let evs = read_all(redis);
        let ok = pred(&evs);
        async move { ok.then_some(evs) }
    })
    .await
}

/// Insert rows `from..` (only columns no ALTER touches) until stopped,
/// on a thread of its own: the table changes while rows stream.
struct Writer {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(from: u64, insert: impl Fn(u64) + Send + 'static) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(from));
        let (s, n) = (stop.clone(), next.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let i = n.load(Ordering::SeqCst);
                insert(i);
                n.store(i + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Writer {
            stop,
            next,
            thread: Some(thread),
        }
    }

    /// Stop; the ids written are `from..returned`.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.next.load(Ordering::SeqCst)
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `item.insert` events by id (each must be there once).
fn inserts_by_id(evs: &[Event]) -> HashMap<i64, Vec<&Event>> {
    let mut m: HashMap<i64, Vec<&Event>> = HashMap::new();
    for e in evs.iter().filter(|e| e.op == Op::Insert) {
        let id = e.key.as_ref().unwrap()["id"].as_i64().unwrap();
        m.entry(id).or_default().push(e);
    }
    m
}

fn schema_events(evs: &[Event]) -> Vec<&Event> {
    let mut v: Vec<&Event> = evs.iter().filter(|e| e.topic == "ops.schema").collect();
    v.sort_by_key(|e| e.ingested_at);
    v
}

/// `switchyard schema history --json` for `source`, as JSON values.
fn history(config: &str, source: &str, table: Option<&str>) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(bin());
    cmd.args([
        "schema", "history", "--json", "--source", source, "--config",
    ])
    .arg(&path);
    if let Some(t) = table {
        cmd.args(["--table", t]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "schema history failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn changes(h: &[Value]) -> Vec<String> {
    h.iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["table"].as_str().unwrap(),
                e["change"].as_str().unwrap()
            )
        })
        .collect()
}

/// Assert the announced change `i` (event and history entry agree).
fn check_change(ev: &Event, entry: &Value, change: &str, fields: &[(&str, &str)]) {
    let d = ev.data.as_ref().unwrap();
    assert_eq!(d["change"], change, "{d}");
    assert_eq!(entry["change"], change, "{entry}");
    assert_eq!(entry["event_id"], ev.id.as_str());
    for (k, v) in fields {
        assert_eq!(d[*k], *v, "{k} in {d}");
        assert_eq!(entry[*k], *v, "{k} in {entry}");
    }
}

fn pg_config(redis: &RedisServer, pg: &PgServer) -> String {
    let url = pg.url().replace("postgres://postgres@", "postgres://cdc@");
    format!(
        r#"{}
[admin]
listen = "127.0.0.1:0"

[sources.crm]
type = "postgres"
url = "{url}"
publication = "sy_drift"
create_publication = false
slot = "sy_drift"
status_interval = "200ms"
max_backoff = "1s"
schema_topic = "ops.schema"

[[sources.crm.tables]]
table = "public.items"
topic = "item.{{op}}"
account_column = "account_id"
require_before_image = false
"#,
        base_config(&redis.url())
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_schema_changes_on_a_live_table_are_announced_and_lose_no_row_under_a_replication_role(
) {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    // Least privilege: a replication role that owns nothing, sees the table
    // through SELECT, and streams a publication the owner made.
    pg.sql(
        "CREATE ROLE cdc LOGIN REPLICATION; \
         CREATE TABLE items (id bigint PRIMARY KEY, account_id text NOT NULL, n int NOT NULL DEFAULT 0, email text); \
         GRANT SELECT ON items TO cdc; \
         CREATE PUBLICATION sy_drift FOR TABLE items",
    );
    assert_eq!(
        pg.sql("SELECT rolsuper::text || rolreplication::text FROM pg_roles WHERE rolname = 'cdc'"),
        "falsetrue"
    );
    let cfg = pg_config(&redis, &pg);
    let router = Router::start(&cfg);
    eventually(Duration::from_secs(30), "replication slot active", || {
        let a = pg.sql(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sy_drift' AND active",
        );
        async move { (a == "1").then_some(()) }
    })
    .await;
    // The baseline shape is recorded, not announced.
    assert!(history(&cfg, "crm", None).is_empty());

    let url = pg.url();
    let writer = Writer::start(1000, move |i| {
        run_ok(
            Command::new(crate::support::postgres::bin("psql"))
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &url, "-c"])
                .arg(format!(
                    "INSERT INTO items (id, account_id) VALUES ({i}, 'acct-{}')",
                    i % 7
                )),
        );
    });
    let step = |sql: &str| {
        std::thread::sleep(Duration::from_millis(150));
        pg.sql(sql);
    };
    step("INSERT INTO items VALUES (1, 'a', 1, 'a@x')");
    step("ALTER TABLE items ADD COLUMN tier text");
    step("INSERT INTO items VALUES (2, 'a', 2, 'b@x', 'gold')");
    step("ALTER TABLE items RENAME COLUMN email TO mail");
    step("INSERT INTO items VALUES (3, 'a', 3, 'c@x', 'gold')");
    step("ALTER TABLE items ALTER COLUMN n TYPE bigint");
    step("INSERT INTO items VALUES (4, 'a', 4000000000, 'd@x', 'gold')");
    step("ALTER TABLE items DROP COLUMN tier");
    step("INSERT INTO items VALUES (5, 'a', 5, 'e@x')");
    // A new table in the publication (not captured: announced only).
    step("CREATE TABLE extra (id int PRIMARY KEY); ALTER PUBLICATION sy_drift ADD TABLE extra; INSERT INTO extra VALUES (1)");
    std::thread::sleep(Duration::from_millis(300));
    let end = writer.finish();
    step("INSERT INTO items VALUES (6, 'a', 6, 'f@x')");

    let evs = wait_events(&redis, "every row and the five changes", |e| {
        let ins = inserts_by_id(e);
        ins.contains_key(&6)
            && (1000..end as i64).all(|i| ins.contains_key(&i))
            && schema_events(e).len() >= 5
    })
    .await;
    let ins = inserts_by_id(&evs);
    for (id, v) in &ins {
        assert_eq!(v.len(), 1, "row {id} written {} times", v.len());
    }
    assert_eq!(ins.len() as u64, 6 + (end - 1000), "{}", router.logs());
    assert!(
        end - 1000 >= 10,
        "the writer wrote only {} rows",
        end - 1000
    );

    // Rows carry the shape of their time.
    let after = |id: i64| ins[&id][0].after.clone().unwrap();
    assert_eq!(after(1)["email"], "a@x");
    assert!(after(1).get("tier").is_none());
    assert_eq!(after(2)["tier"], "gold");
    assert_eq!(after(3)["mail"], "c@x");
    assert!(after(3).get("email").is_none());
    assert_eq!(after(4)["n"], 4_000_000_000i64);
    assert!(after(5).get("tier").is_none());
    assert_eq!(after(6)["mail"], "f@x");

    let sch = schema_events(&evs);
    let h = history(&cfg, "crm", None);
    assert_eq!(
        changes(&h),
        vec![
            "public.items:add_column",
            "public.items:rename_column",
            "public.items:type_change",
            "public.items:drop_column",
            "public.extra:table_added"
        ],
        "{}",
        router.logs()
    );
    assert_eq!(sch.len(), 5, "{sch:?}");
    check_change(
        sch[0],
        &h[0],
        "add_column",
        &[("column", "tier"), ("new_type", "text")],
    );
    check_change(
        sch[1],
        &h[1],
        "rename_column",
        &[("from", "email"), ("to", "mail"), ("new_type", "text")],
    );
    check_change(
        sch[2],
        &h[2],
        "type_change",
        &[("column", "n"), ("old_type", "int4"), ("new_type", "int8")],
    );
    check_change(
        sch[3],
        &h[3],
        "drop_column",
        &[("column", "tier"), ("old_type", "text")],
    );
    check_change(sch[4], &h[4], "table_added", &[("table", "public.extra")]);
    for e in &sch {
        assert_eq!(e.source, "crm");
        assert_eq!(e.op, Op::Event);
    }
    // --table filters (by `schema.table` or the bare name).
    assert_eq!(history(&cfg, "crm", Some("items")).len(), 4);
    assert_eq!(history(&cfg, "crm", Some("public.extra")).len(), 1);
    // Logged at warn.
    assert!(
        router.logs().contains("table schema changed"),
        "{}",
        router.logs()
    );
    // Counted.
    let metrics = reqwest::get(router.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "switchyard_cdc_schema_changes_total{source=\"crm\",change=\"rename_column\"} 1"
        ),
        "{metrics}"
    );

    // A restart re-reads the history: nothing is announced again.
    let mut router = router;
    router.restart();
    step("INSERT INTO items VALUES (7, 'a', 7, 'g@x')");
    let evs = wait_events(&redis, "row 7", |e| inserts_by_id(e).contains_key(&7)).await;
    assert_eq!(schema_events(&evs).len(), 5, "{}", router.logs());
    assert_eq!(history(&cfg, "crm", None).len(), 5);
}

fn my_config(redis: &RedisServer, db: &MariaDb) -> String {
    format!(
        r#"{}
[sources.shop]
type = "mysql"
url = "{}"
server_id = 4243
max_backoff = "1s"
heartbeat = "500ms"
schema_topic = "ops.schema"

[[sources.shop.tables]]
table = "items"
topic = "item.{{op}}"
account_column = "account_id"

[[sources.shop.tables]]
table = "gone"
topic = "gone.{{op}}"
account_column = "account_id"
"#,
        base_config(&redis.url()),
        db.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_schema_changes_on_a_live_table_are_announced_and_lose_no_row_under_least_privilege()
{
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql(
        "CREATE TABLE items (id BIGINT PRIMARY KEY, account_id VARCHAR(32) NOT NULL, n INT NOT NULL DEFAULT 0, email VARCHAR(64)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4; \
         CREATE TABLE gone (id BIGINT PRIMARY KEY, account_id VARCHAR(32) NOT NULL) ENGINE=InnoDB",
    );
    let cfg = my_config(&redis, &db);
    let router = Router::start(&cfg);
    eventually(
        Duration::from_secs(30),
        "the source stored its position",
        || {
            let mut c = redis.conn();
            let v: Option<String> = redis::cmd("GET")
                .arg("sy:source:{src-shop}:binlog")
                .query(&mut c)
                .unwrap();
            async move { v.map(|_| ()) }
        },
    )
    .await;
    assert!(history(&cfg, "shop", None).is_empty());

    let socket = db.socket();
    let writer = Writer::start(1000, move |i| {
        run_ok(
            Command::new("mariadb")
                .args(["--no-defaults", "-uroot", "-D", "shop"])
                .arg(format!("--socket={socket}"))
                .arg("-e")
                .arg(format!(
                    "INSERT INTO items (id, account_id) VALUES ({i}, 'acct-{}')",
                    i % 7
                )),
        );
    });
    let step = |sql: &str| {
        std::thread::sleep(Duration::from_millis(150));
        db.sql(sql);
    };
    step("INSERT INTO items VALUES (1, 'a', 1, 'a@x')");
    step("ALTER TABLE items ADD COLUMN tier VARCHAR(16)");
    step("INSERT INTO items VALUES (2, 'a', 2, 'b@x', 'gold')");
    step("ALTER TABLE items RENAME COLUMN email TO mail");
    step("INSERT INTO items VALUES (3, 'a', 3, 'c@x', 'gold')");
    step("ALTER TABLE items MODIFY n BIGINT NOT NULL DEFAULT 0");
    step("INSERT INTO items VALUES (4, 'a', 4000000000, 'd@x', 'gold')");
    step("ALTER TABLE items DROP COLUMN tier");
    step("INSERT INTO items VALUES (5, 'a', 5, 'e@x')");
    step("CREATE TABLE extra (id INT PRIMARY KEY) ENGINE=InnoDB");
    step("DROP TABLE gone");
    std::thread::sleep(Duration::from_millis(300));
    let end = writer.finish();
    step("INSERT INTO items VALUES (6, 'a', 6, 'f@x')");

    let evs = wait_events(&redis, "every row and the six changes", |e| {
        let ins = inserts_by_id(e);
        ins.contains_key(&6)
            && (1000..end as i64).all(|i| ins.contains_key(&i))
            && schema_events(e).len() >= 6
    })
    .await;
    let ins = inserts_by_id(&evs);
    for (id, v) in &ins {
        assert_eq!(v.len(), 1, "row {id} written {} times", v.len());
    }
    assert_eq!(ins.len() as u64, 6 + (end - 1000), "{}", router.logs());
    assert!(
        end - 1000 >= 10,
        "the writer wrote only {} rows",
        end - 1000
    );
    let after = |id: i64| ins[&id][0].after.clone().unwrap();
    assert_eq!(after(1)["email"], "a@x");
    assert_eq!(after(2)["tier"], "gold");
    assert_eq!(after(3)["mail"], "c@x");
    assert!(after(3).get("email").is_none());
    assert_eq!(after(4)["n"], 4_000_000_000i64);
    assert!(after(5).get("tier").is_none());
    assert_eq!(after(6)["mail"], "f@x");

    let sch = schema_events(&evs);
    let h = history(&cfg, "shop", None);
    assert_eq!(
        changes(&h),
        vec![
            "shop.items:add_column",
            "shop.items:rename_column",
            "shop.items:type_change",
            "shop.items:drop_column",
            "shop.extra:table_added",
            "shop.gone:table_dropped"
        ],
        "{}",
        router.logs()
    );
    assert_eq!(sch.len(), 6, "{sch:?}");
    check_change(
        sch[0],
        &h[0],
        "add_column",
        &[("column", "tier"), ("new_type", "text")],
    );
    check_change(
        sch[1],
        &h[1],
        "rename_column",
        &[("from", "email"), ("to", "mail"), ("new_type", "text")],
    );
    check_change(
        sch[2],
        &h[2],
        "type_change",
        &[("column", "n"), ("old_type", "int"), ("new_type", "bigint")],
    );
    check_change(sch[3], &h[3], "drop_column", &[("column", "tier")]);
    check_change(sch[4], &h[4], "table_added", &[("table", "shop.extra")]);
    check_change(sch[5], &h[5], "table_dropped", &[("table", "shop.gone")]);
    assert!(router.logs().contains("table schema changed"));
}

/// Run the CLI with `config`; (success, stdout, stderr).
fn cli(config: &str, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn quarantined(config: &str, source: &str) -> Vec<Value> {
    let (ok, out, err) = cli(
        config,
        &["quarantine", "list", "--json", "--source", source],
    );
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_that_cannot_be_mapped_go_to_quarantine_while_later_rows_flow_and_replay() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(
        "CREATE ROLE cdc LOGIN REPLICATION; \
         CREATE TABLE people (id bigint PRIMARY KEY, account_id text NOT NULL, banner text NOT NULL, bio text); \
         GRANT SELECT ON people TO cdc; \
         CREATE PUBLICATION sy_q FOR TABLE people",
    );
    let url = pg.url().replace("postgres://postgres@", "postgres://cdc@");
    let cfg = format!(
        r#"{}
[sources.crm]
type = "postgres"
url = "{url}"
publication = "sy_q"
slot = "sy_q"
status_interval = "200ms"
max_backoff = "1s"
max_event_size = "1KiB"

[[sources.crm.tables]]
table = "people"
topic = "person.{{banner}}.{{op}}"
account_column = "account_id"
require_before_image = false
"#,
        base_config(&redis.url())
    );
    let router = Router::start(&cfg);
    eventually(Duration::from_secs(30), "replication slot active", || {
        let a =
            pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sy_q' AND active");
        async move { (a == "1").then_some(()) }
    })
    .await;
    pg.sql("INSERT INTO people VALUES (1, 'a1', 'north', 'x')");
    pg.sql("INSERT INTO people VALUES (2, 'a2', 'bad banner', 'x')");
    pg.sql(&format!(
        "INSERT INTO people VALUES (3, 'a3', 'north', '{}')",
        "y".repeat(3000)
    ));
    for i in 4..=20 {
        pg.sql(&format!(
            "INSERT INTO people VALUES ({i}, 'a{i}', 'south', 'x')"
        ));
    }
    let end_lsn = pg.sql("SELECT pg_current_wal_lsn()");
    let evs = wait_events(&redis, "rows after the bad ones", |e| {
        inserts_by_id(e).contains_key(&20)
    })
    .await;
    let ins = inserts_by_id(&evs);
    let mut ids: Vec<i64> = ins.keys().copied().collect();
    ids.sort();
    assert_eq!(ids, [1].into_iter().chain(4..=20).collect::<Vec<_>>());
    // The position moved past them.
    eventually(Duration::from_secs(20), "slot confirmed past the last row", || {
        let past = pg.sql(&format!(
            "SELECT confirmed_flush_lsn >= '{end_lsn}' FROM pg_replication_slots WHERE slot_name = 'sy_q'"
        ));
        async move { (past == "t").then_some(()) }
    })
    .await;

    let q = quarantined(&cfg, "crm");
    assert_eq!(q.len(), 2, "{q:?}\n{}", router.logs());
    let by_kind = |k: &str| q.iter().find(|r| r["kind"] == k).unwrap().clone();
    let bad = by_kind("invalid_topic");
    assert_eq!(bad["source"], "crm");
    assert_eq!(bad["table"], "public.people");
    assert_eq!(bad["key"], serde_json::json!({"id": 2}));
    assert!(bad["position"].as_str().unwrap().contains('/'), "{bad}");
    assert_eq!(bad["event"]["topic"], "person.bad banner.insert");
    let big = by_kind("oversized");
    assert_eq!(big["key"], serde_json::json!({"id": 3}));
    assert!(
        big["reason"].as_str().unwrap().contains("max_event_size"),
        "{big}"
    );

    // Replay: the oversized one cannot be written as it is (kept, with why);
    // the invalid topic is written with a fixed topic.
    let big_id = big["id"].as_str().unwrap();
    let (ok, out, _) = cli(
        &cfg,
        &["quarantine", "replay", "--source", "crm", "--id", big_id],
    );
    assert!(!ok);
    assert!(
        out.contains("kept") && out.contains("max_event_size"),
        "{out}"
    );
    let bad_id = bad["id"].as_str().unwrap();
    let (ok, out, err) = cli(
        &cfg,
        &[
            "quarantine",
            "replay",
            "--source",
            "crm",
            "--id",
            bad_id,
            "--topic",
            "person.fixed.insert",
        ],
    );
    assert!(ok, "{out}{err}");
    let evs = read_all(&redis);
    let replayed: Vec<&Event> = evs.iter().filter(|e| e.id == bad_id).collect();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].topic, "person.fixed.insert");
    assert_eq!(replayed[0].after.as_ref().unwrap()["banner"], "bad banner");
    let left = quarantined(&cfg, "crm");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], big_id);
    // Counted.
    assert!(router.logs().contains("CDC record quarantined"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_row_with_an_invalid_topic_goes_to_quarantine_while_later_rows_flow() {
    let redis = RedisServer::start();
    let db = MariaDb::start();
    db.create_cdc_user();
    db.sql("CREATE TABLE people (id BIGINT PRIMARY KEY, account_id VARCHAR(32) NOT NULL, banner VARCHAR(64) NOT NULL) ENGINE=InnoDB");
    let cfg = format!(
        r#"{}
[sources.shop]
type = "mysql"
url = "{}"
server_id = 4244
max_backoff = "1s"
heartbeat = "500ms"

[[sources.shop.tables]]
table = "people"
topic = "person.{{banner}}.{{op}}"
account_column = "account_id"
"#,
        base_config(&redis.url()),
        db.url()
    );
    let router = Router::start(&cfg);
    eventually(
        Duration::from_secs(30),
        "the source stored its position",
        || {
            let mut c = redis.conn();
            let v: Option<String> = redis::cmd("GET")
                .arg("sy:source:{src-shop}:binlog")
                .query(&mut c)
                .unwrap();
            async move { v.map(|_| ()) }
        },
    )
    .await;
    db.sql("INSERT INTO people VALUES (1, 'a1', 'north')");
    db.sql("INSERT INTO people VALUES (2, 'a2', 'bad banner')");
    db.sql("INSERT INTO people VALUES (3, 'a3', 'south')");
    let evs = wait_events(&redis, "row 3", |e| inserts_by_id(e).contains_key(&3)).await;
    let mut ids: Vec<i64> = inserts_by_id(&evs).keys().copied().collect();
    ids.sort();
    assert_eq!(ids, [1, 3]);
    let q = quarantined(&cfg, "shop");
    assert_eq!(q.len(), 1, "{}", router.logs());
    assert_eq!(q[0]["kind"], "invalid_topic");
    assert_eq!(q[0]["table"], "shop.people");
    assert_eq!(q[0]["key"], serde_json::json!({"id": 2}));
    assert!(q[0]["position"]
        .as_str()
        .unwrap()
        .starts_with("mariadb-bin."));
}
