//! The schema registry and the topic taxonomy in the running router:
//! `schema check` refuses a breaking version naming the field, ingest
//! refuses an invalid event naming the field and stamps valid ones with
//! their schema version, a consumer pinned to a version gets only that
//! version's events, and an HTTP source fills `<banner>` of the topic from
//! a field (a value that would make an invalid topic is a 400 naming it).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::Vendor;
use crate::support::{eventually, TOKEN};

const BANNER_TOKEN: &str = "banner-source-token-0123456789";

fn customer_v1() -> Value {
    json!({
        "type": "object",
        "required": ["account_id", "data"],
        "properties": {"data": {
            "type": "object",
            "required": ["email"],
            "properties": {
                "email": {"type": "string"},
                "tier": {"enum": ["bronze", "silver", "gold"]}
            }
        }}
    })
}

fn write_schema(dir: &Path, family: &str, version: u32, schema: &Value) {
    std::fs::create_dir_all(dir.join(family)).unwrap();
    std::fs::write(
        dir.join(family).join(format!("{version}.json")),
        serde_json::to_string_pretty(schema).unwrap(),
    )
    .unwrap();
}

fn schema_check(args: &[&str], path: &Path) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(bin())
        .args(["schema", "check"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn schema_check_refuses_a_breaking_version_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("schemas");
    write_schema(&dir, "customer", 1, &customer_v1());
    // Version 2 adds an optional field and an enum value: compatible.
    let mut v2 = customer_v1();
    v2["properties"]["data"]["properties"]["phone"] = json!({"type": "string"});
    v2["properties"]["data"]["properties"]["tier"]["enum"] =
        json!(["bronze", "silver", "gold", "platinum"]);
    write_schema(&dir, "customer", 2, &v2);
    let (code, out, err) = schema_check(&["--dir"], &dir);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("ok (1 families, 2 versions"), "{out}");

    // Version 3 retypes the required `email` and narrows `tier`.
    let mut v3 = v2.clone();
    v3["properties"]["data"]["properties"]["email"] = json!({"type": "integer"});
    v3["properties"]["data"]["properties"]["tier"]["enum"] = json!(["gold", "platinum"]);
    write_schema(&dir, "customer", 3, &v3);
    let (code, _, err) = schema_check(&["--dir"], &dir);
    assert_eq!(code, Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("3.json")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines.iter().any(|l| l.contains("field /data/email")
            && l.contains("type changed from [\"string\"] to [\"integer\"]")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("field /data/tier") && l.contains("enum narrowed")),
        "{err}"
    );

    // Through a config's `schemas.dir`, the same; and a removed required
    // field is named too.
    let mut v3 = v2;
    v3["properties"]["data"]["required"] = json!([]);
    v3["properties"]["data"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("email");
    write_schema(&dir, "customer", 3, &v3);
    let config = d.path().join("switchyard.toml");
    std::fs::write(&config, "[schemas]\ndir = \"schemas\"\n").unwrap();
    let (code, _, err) = schema_check(&["--config"], &config);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("field /data/email: was required and is removed"),
        "{err}"
    );
}

fn router_config(redis: &str, schemas: &Path, all: &str, pinned: &str, banner: &str) -> String {
    base_config(redis)
        + &format!(
            r#"
[sources.banners]
type = "http"
token = "{BANNER_TOKEN}"
topics = ["customer.*.*"]
topic_template = "customer.{{attributes.banner}}.{{topic}}"

[schemas]
dir = "{dir}"

[consumers.all]
topics = ["customer.*.*"]
start = "earliest"
[consumers.all.endpoint]
url = "{all}"

[consumers.pinned]
topics = ["customer.*.*"]
start = "earliest"
schema_versions = {{ customer = 1 }}
[consumers.pinned.endpoint]
url = "{pinned}"

[consumers.banner_a]
topics = ["customer.banner-a.*"]
start = "earliest"
[consumers.banner_a.endpoint]
url = "{banner}"
"#,
            dir = schemas.display()
        )
}

async fn post(router: &Router, token: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(router.url("/v1/events"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Event ids the vendor answered 2xx, in order.
fn delivered(v: &Vendor) -> Vec<(String, Value)> {
    v.requests()
        .into_iter()
        .filter(|r| (200..300).contains(&r.status))
        .map(|r| (r.key, r.body))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_validates_stamps_pins_and_fills_the_banner() {
    let redis = RedisServer::start();
    let d = tempfile::tempdir().unwrap();
    write_schema(d.path(), "customer", 1, &customer_v1());
    let mut v2 = customer_v1();
    v2["properties"]["data"]["properties"]["phone"] = json!({"type": "string"});
    write_schema(d.path(), "customer", 2, &v2);
    let (all, pinned, banner) = (
        Vendor::start().await,
        Vendor::start().await,
        Vendor::start().await,
    );
    let router = Router::start(&router_config(
        &redis.url(),
        d.path(),
        &all.url(),
        &pinned.url(),
        &banner.url(),
    ));

    // An invalid event is refused with the field named; the whole request
    // writes nothing (its valid first event included).
    let (status, body) = post(
        &router,
        TOKEN,
        &json!([
            {"id": "never-1", "topic": "customer.banner-a.created", "account_id": "1",
             "data": {"email": "a@x.example"}},
            {"id": "never-2", "topic": "customer.banner-a.created", "account_id": "1",
             "data": {"email": 42}},
        ]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "events[1].data.email", "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("/data/email") && msg.contains("string") && msg.contains("version 2"),
        "{msg}"
    );
    // A missing required field is named itself, not its parent.
    let (status, body) = post(
        &router,
        TOKEN,
        &json!({"id": "never-3", "topic": "customer.banner-a.created", "account_id": "1",
                "data": {"tier": "gold"}}),
    )
    .await;
    assert_eq!(
        (status, &body["field"]),
        (400, &json!("event.data.email")),
        "{body}"
    );
    // A version the family does not have.
    let (status, body) = post(
        &router,
        TOKEN,
        &json!({"id": "never-4", "topic": "customer.banner-a.created", "account_id": "1",
                "data": {"email": "a@x.example"}, "attributes": {"schema_version": "9"}}),
    )
    .await;
    assert_eq!(
        (status, &body["field"]),
        (400, &json!("event.attributes.schema_version")),
        "{body}"
    );

    // Valid events: one validated against the newest version (2), one
    // whose producer still names version 1.
    for (id, attrs) in [
        ("v2-event", json!({})),
        ("v1-event", json!({"schema_version": "1"})),
    ] {
        let (status, body) = post(
            &router,
            TOKEN,
            &json!({"id": id, "topic": "customer.banner-b.email_changed", "account_id": "7",
                    "data": {"email": "b@x.example"}, "attributes": attrs}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }

    // The HTTP source with a topic template fills the banner from a field.
    let (status, body) = post(
        &router,
        BANNER_TOKEN,
        &json!({"id": "banner-1", "topic": "email_changed", "account_id": "9",
                "data": {"email": "c@x.example"}, "attributes": {"banner": "banner-a"}}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(
        &router,
        BANNER_TOKEN,
        &json!([{"id": "never-5", "topic": "email_changed", "account_id": "9",
                 "data": {"email": "c@x.example"}, "attributes": {"banner": "banner a/b"}}]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "events[0].attributes.banner", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("sources.banners.topic_template"),
        "{body}"
    );
    let (status, body) = post(
        &router,
        BANNER_TOKEN,
        &json!({"id": "never-6", "topic": "email_changed", "account_id": "9",
                "data": {"email": "c@x.example"}}),
    )
    .await;
    assert_eq!(
        (status, &body["field"]),
        (400, &json!("event.attributes.banner")),
        "{body}"
    );

    // `all` gets the three valid events, each stamped with its version.
    let got = eventually(
        Duration::from_secs(20),
        "three events delivered",
        || async {
            let d = delivered(&all);
            (d.len() >= 3).then_some(d)
        },
    )
    .await;
    let by_id = |id: &str| {
        got.iter()
            .find(|(k, _)| k == id)
            .unwrap_or_else(|| panic!("{id} not delivered: {got:?}"))
            .1
            .clone()
    };
    assert_eq!(by_id("v2-event")["attributes"]["schema_version"], "2");
    assert_eq!(by_id("v2-event")["attributes"]["schema_family"], "customer");
    assert_eq!(by_id("v1-event")["attributes"]["schema_version"], "1");
    let b = by_id("banner-1");
    assert_eq!(b["topic"], "customer.banner-a.email_changed");
    assert_eq!(b["attributes"]["schema_version"], "2");

    // `banner_a` (customer.banner-a.*) gets the banner event only.
    eventually(
        Duration::from_secs(20),
        "banner event delivered",
        || async { (!delivered(&banner).is_empty()).then_some(()) },
    )
    .await;
    // `pinned` (customer = 1) gets the version-1 event only.
    eventually(Duration::from_secs(20), "v1 event delivered", || async {
        (!delivered(&pinned).is_empty()).then_some(())
    })
    .await;
    // Let anything that should not arrive have its chance.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let keys = |v: &Vendor| -> Vec<String> { delivered(v).into_iter().map(|(k, _)| k).collect() };
    assert_eq!(keys(&pinned), ["v1-event"]);
    assert_eq!(keys(&banner), ["banner-1"]);
    let mut all_keys = keys(&all);
    all_keys.sort();
    assert_eq!(all_keys, ["banner-1", "v1-event", "v2-event"]);

    // The pinned consumer's other events were filtered by the named rule.
    eventually(
        Duration::from_secs(10),
        "two events filtered by schema_versions",
        || async {
            let st: Value = reqwest::get(router.url("/admin/status"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (st["consumers"]["pinned"]["filtered"]["schema_versions"] == 2).then_some(())
        },
    )
    .await;
}

/// A CDC row that its schema refuses is not written to the log and not
/// dropped: it is in the source's quarantine, with the field named; the
/// rows around it flow on, stamped with their schema version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_events_that_fail_their_schema_are_quarantined() {
    use crate::cdc::{read_all, start_router, wait_events, wait_slot, CUSTOMERS_DDL};
    use crate::support::postgres::PgServer;

    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql(CUSTOMERS_DDL);
    let d = tempfile::tempdir().unwrap();
    write_schema(
        d.path(),
        "customer",
        1,
        &json!({
            "type": "object",
            "properties": {"after": {
                "type": "object",
                "required": ["email"],
                "properties": {"email": {"type": "string"}}
            }}
        }),
    );
    let router = start_router(
        &redis,
        &pg,
        &format!(
            r#"
[[sources.crm.tables]]
table = "public.customers"
topic = "customer.{{banner}}.{{op}}"
account_column = "account_id"

[schemas]
dir = "{}"
"#,
            d.path().display()
        ),
    );
    wait_slot(&pg).await;
    pg.sql("INSERT INTO customers VALUES (1, 'acct-1', 'banner-a', 'a@x.com', false, false, 'bio', NULL)");
    pg.sql(
        "INSERT INTO customers VALUES (2, 'acct-2', 'banner-a', NULL, false, false, 'bio', NULL)",
    );
    pg.sql("INSERT INTO customers VALUES (3, 'acct-3', 'banner-a', 'c@x.com', false, false, 'bio', NULL)");
    let evs = wait_events(&redis, "row 3 in the log", Duration::from_secs(20), |e| {
        e.iter().any(|e| e.account_id == "acct-3")
    })
    .await;
    let mut accounts: Vec<&str> = evs.iter().map(|e| e.account_id.as_str()).collect();
    accounts.sort();
    assert_eq!(accounts, ["acct-1", "acct-3"]);
    for e in &evs {
        assert_eq!(e.attributes["schema_version"], "1", "{e:?}");
        assert_eq!(e.attributes["schema_family"], "customer", "{e:?}");
    }

    let mut c = redis.conn();
    let q: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("sy:quarantine:{src:crm}")
        .query(&mut c)
        .unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    let entry: Value = serde_json::from_str(q.values().next().unwrap()).unwrap();
    assert_eq!(entry["kind"], "schema", "{entry}");
    assert_eq!(entry["table"], "public.customers", "{entry}");
    assert_eq!(entry["key"], json!({"id": 2}), "{entry}");
    assert!(
        entry["reason"].as_str().unwrap().contains("customer"),
        "{entry}"
    );
    assert_eq!(entry["event"]["key"], json!({"id": 2}), "{entry}");
    assert_eq!(entry["event"]["account_id"], "acct-2");
    assert!(
        entry["reason"].as_str().unwrap().contains("/after/email"),
        "{entry}"
    );
    assert!(read_all(&redis).iter().all(|e| e.account_id != "acct-2"));
    assert!(
        router.logs().contains("CDC event quarantined"),
        "{}",
        router.logs()
    );

    // Replay while the schema still refuses it: kept, with the reason.
    let config = router.config_path.clone();
    let replay = || {
        std::process::Command::new(crate::support::router::bin())
            .args(["quarantine", "replay", "--config"])
            .arg(&config)
            .args(["--source", "crm"])
            .output()
            .unwrap()
    };
    let out = replay();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("still does not match its schema"),
        "{out:?}"
    );
    // The schema is fixed (email may be null): the replay writes the event.
    write_schema(
        d.path(),
        "customer",
        1,
        &json!({
            "type": "object",
            "properties": {"after": {
                "type": "object",
                "required": ["email"],
                "properties": {"email": {"type": ["string", "null"]}}
            }}
        }),
    );
    let out = replay();
    assert!(out.status.success(), "{out:?}");
    let evs = read_all(&redis);
    let replayed: Vec<_> = evs.iter().filter(|e| e.account_id == "acct-2").collect();
    assert_eq!(replayed.len(), 1, "{evs:?}");
    assert_eq!(replayed[0].attributes["schema_version"], "1");
    let left: usize = redis::cmd("HLEN")
        .arg("sy:quarantine:{src:crm}")
        .query(&mut c)
        .unwrap();
    assert_eq!(left, 0);
}
