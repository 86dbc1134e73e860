//! Operating the router: Prometheus metrics on the admin listener, SLA alerts
//! to a webhook, readiness, and the W3C trace context from ingest to the vendor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::postgres::PgServer;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, Router};
use crate::support::vendor::{Reply, Vendor};
use crate::support::{eventually, TOKEN};

fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_TRANSFORMS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../transforms/target/wasm32-wasip2/release")
        });
    let p = dir.join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run transforms/build.sh",
        p.display()
    );
    p
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

const ADMIN: &str = r#"
[admin]
listen = "127.0.0.1:0"

[monitor]
interval = "200ms"
cdc_stall_after = "1s"
"#;

/// One scrape: `name{labels}` → value, and every family name from `# TYPE`.
struct Scrape {
    samples: BTreeMap<String, f64>,
    families: BTreeSet<String>,
    text: String,
}

impl Scrape {
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    fn has(&self, series: &str) -> bool {
        self.samples.contains_key(series)
    }
}

async fn scrape(router: &Router) -> Scrape {
    let resp = client()
        .get(router.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let mut samples = BTreeMap::new();
    let mut families = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            families.insert(rest.split(' ').next().unwrap().to_string());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (k, v) = line.rsplit_once(' ').unwrap();
            samples.insert(k.to_string(), v.parse::<f64>().unwrap());
        }
    }
    Scrape {
        samples,
        families,
        text,
    }
}

/// Scrape until `f` holds.
async fn wait_metrics(router: &Router, what: &str, f: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = scrape(router).await;
        if f(&s) {
            return s;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out waiting for metrics: {what}\n{}", s.text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(router: &Router, token: &str, body: Value, headers: &[(&str, &str)]) -> u16 {
    let mut r = client()
        .post(router.url("/v1/events"))
        .bearer_auth(token)
        .json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap().status().as_u16()
}

fn event(id: &str, account: &str, consent: bool) -> Value {
    let mut e =
        json!({"id": id, "topic": "customer.a.updated", "account_id": account, "data": {"n": 1}});
    if consent {
        e["consent"] = json!({"email": "granted"});
    }
    e
}

/// Metric names in the `expr` lines of the Prometheus rules and in every
/// `expr` of the Grafana dashboard, histogram suffixes removed.
fn dashboard_metric_names() -> BTreeSet<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut exprs = Vec::new();
    let rules = std::fs::read_to_string(root.join("examples/prometheus/alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(e) = line.trim().strip_prefix("expr:") {
            exprs.push(e.to_string());
        }
    }
    assert!(exprs.len() >= 10, "alerts.yml has {} exprs", exprs.len());
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/grafana/switchyard.json")).unwrap(),
    )
    .unwrap();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let before = exprs.len();
    walk(&dash, &mut exprs);
    assert!(exprs.len() >= before + 15, "the dashboard has few exprs");
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("switchyard_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(name.to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_moves_under_a_scripted_load_and_dashboards_name_only_exported_metrics()
{
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.sql("CREATE TABLE items (id bigint PRIMARY KEY, account_id text NOT NULL, n int NOT NULL)");
    let vendor = Vendor::start().await;
    // acct-retry: one 503 then 200; acct-dead: 400 (DLQ, parked).
    let retried = Arc::new(AtomicBool::new(false));
    let r2 = retried.clone();
    vendor.script(move |r| match r.account.as_str() {
        "acct-retry" if !r2.swap(true, Ordering::SeqCst) => Reply::Status(503),
        "acct-dead" => Reply::Status(400),
        _ => Reply::Status(200),
    });
    let filter = wasm("filter");
    let cfg = format!(
        r#"{base}{ADMIN}
[sources.crm]
type = "postgres"
url = "{pg_url}"
publication = "sy_ops"
create_publication = true
slot = "sy_ops"
status_interval = "200ms"
max_backoff = "1s"

[[sources.crm.tables]]
table = "items"
topic = "item.{{op}}"
account_column = "account_id"
require_before_image = false

[consumers.esp]
topics = ["customer.*"]
start = "earliest"
[consumers.esp.endpoint]
url = "{url}"
[consumers.esp.retry]
initial = "20ms"
max_delay = "100ms"
max_attempts = 5
[consumers.esp.sla]
max_lag = 3600
max_dlq = 100
[[consumers.esp.modules]]
path = "{filter}"
config = {{ require_consent = "email" }}

[consumers.down]
topics = ["customer.*", "item.*"]
start = "earliest"
[consumers.down.endpoint]
url = "http://127.0.0.1:9/"
[consumers.down.retry]
initial = "50ms"
max_delay = "200ms"
max_attempts = 1000
max_age = "1h"
"#,
        base = base_config(&redis.url()),
        pg_url = pg.url(),
        url = vendor.url(),
        filter = filter.display(),
    );
    let router = Router::start(&cfg);

    // Before any load: the per-consumer series exist at 0.
    let s = wait_metrics(&router, "consumer gauges at start", |s| {
        s.has("switchyard_consumer_lag_events{consumer=\"esp\"}")
            && s.has("switchyard_cdc_slot_active{source=\"crm\"}")
    })
    .await;
    assert_eq!(s.get("switchyard_dlq_events{consumer=\"esp\"}"), 0.0);
    assert_eq!(
        s.get("switchyard_sla_breached{consumer=\"esp\",sla=\"lag\"}"),
        0.0
    );
    let info = s
        .samples
        .keys()
        .find(|k| {
            k.starts_with("switchyard_module_info{consumer=\"esp\",module=\"filter\",hash=\"")
        })
        .expect("module_info for esp/filter")
        .clone();
    assert_eq!(s.get(&info), 1.0);
    assert!(s.has("switchyard_build_info{version=\"0.1.0\"}"));

    // Ingest: one 401, one 400, one batch of 4 (202), one duplicate.
    assert_eq!(
        post(&router, "wrong-token-0123456789", json!([]), &[]).await,
        401
    );
    assert_eq!(
        post(&router, TOKEN, json!([{"topic": "x"}]), &[]).await,
        400
    );
    let batch = json!([
        event("e-ok", "acct-ok", true),
        event("e-retry", "acct-retry", true),
        event("e-dead", "acct-dead", true),
        event("e-drop", "acct-nocons", false),
    ]);
    assert_eq!(post(&router, TOKEN, batch, &[]).await, 202);
    assert_eq!(
        post(&router, TOKEN, json!([event("e-ok", "acct-ok", true)]), &[]).await,
        202
    );
    eventually(Duration::from_secs(30), "replication slot active", || {
        let active = pg
            .sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sy_ops' AND active");
        async move { (active == "1").then_some(()) }
    })
    .await;
    for i in 0..3 {
        pg.sql(&format!("INSERT INTO items VALUES ({i}, 'acct-{i}', {i})"));
    }

    let s = wait_metrics(&router, "deliveries, DLQ and CDC settled", |s| {
        s.get("switchyard_delivery_events_total{consumer=\"esp\",outcome=\"delivered\"}") == 2.0
            && s.get("switchyard_dlq_events{consumer=\"esp\"}") == 1.0
            && s.get("switchyard_ingest_events_total{source=\"crm\",status=\"accepted\"}") == 3.0
            && s.get("switchyard_consumer_lag_events{consumer=\"down\"}") >= 7.0
            && s.get("switchyard_consumer_lag_seconds{consumer=\"down\"}") > 0.5
    })
    .await;
    // Ingest by source and status.
    assert_eq!(
        s.get("switchyard_ingest_requests_total{source=\"unauthenticated\",status=\"401\"}"),
        1.0
    );
    assert_eq!(
        s.get("switchyard_ingest_requests_total{source=\"web\",status=\"400\"}"),
        1.0
    );
    assert_eq!(
        s.get("switchyard_ingest_requests_total{source=\"web\",status=\"202\"}"),
        2.0
    );
    assert_eq!(
        s.get("switchyard_ingest_events_total{source=\"web\",status=\"accepted\"}"),
        4.0
    );
    assert_eq!(
        s.get("switchyard_ingest_events_total{source=\"web\",status=\"duplicate\"}"),
        1.0
    );
    // Responses by class, retries, outcomes, latency.
    assert_eq!(
        s.get("switchyard_delivery_responses_total{consumer=\"esp\",class=\"2xx\"}"),
        2.0
    );
    assert_eq!(
        s.get("switchyard_delivery_responses_total{consumer=\"esp\",class=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        s.get("switchyard_delivery_responses_total{consumer=\"esp\",class=\"4xx\"}"),
        1.0
    );
    assert!(
        s.get("switchyard_delivery_responses_total{consumer=\"down\",class=\"connect_error\"}")
            >= 1.0
    );
    assert_eq!(
        s.get("switchyard_delivery_retries_total{consumer=\"esp\"}"),
        1.0
    );
    assert_eq!(
        s.get("switchyard_delivery_events_total{consumer=\"esp\",outcome=\"dead_lettered\"}"),
        1.0
    );
    // Filtered: one by the module, three CDC events by `topics`.
    assert_eq!(
        s.get("switchyard_delivery_events_total{consumer=\"esp\",outcome=\"filtered\"}"),
        4.0
    );
    for since in ["source", "ingest"] {
        assert_eq!(
            s.get(&format!(
                "switchyard_delivery_latency_seconds_count{{consumer=\"esp\",since=\"{since}\"}}"
            )),
            2.0,
            "{since}"
        );
    }
    assert_eq!(s.get("switchyard_parked_accounts{consumer=\"esp\"}"), 1.0);
    assert_eq!(
        s.get("switchyard_consumer_lag_events{consumer=\"esp\"}"),
        0.0
    );
    assert_eq!(
        s.get("switchyard_consumer_lag_seconds{consumer=\"esp\"}"),
        0.0
    );
    // Modules: 4 calls (one per event reaching the chain), 1 drop, no error.
    assert_eq!(
        s.get("switchyard_module_calls_total{consumer=\"esp\",module=\"filter\"}"),
        4.0
    );
    assert_eq!(
        s.get("switchyard_module_drops_total{consumer=\"esp\",module=\"filter\"}"),
        1.0
    );
    assert_eq!(
        s.get("switchyard_module_errors_total{consumer=\"esp\",module=\"filter\"}"),
        0.0
    );
    assert_eq!(
        s.get("switchyard_module_call_seconds_count{consumer=\"esp\",module=\"filter\"}"),
        4.0
    );
    // CDC: the slot is active and in a WAL state; the lag series exist.
    assert_eq!(s.get("switchyard_cdc_slot_active{source=\"crm\"}"), 1.0);
    assert_eq!(
        s.get("switchyard_cdc_slot_state{source=\"crm\",state=\"reserved\"}"),
        1.0
    );
    assert_eq!(s.get("switchyard_cdc_slot_stalled{source=\"crm\"}"), 0.0);
    assert!(s.has("switchyard_cdc_lag_bytes{source=\"crm\"}"));
    assert!(s.has("switchyard_cdc_lag_seconds{source=\"crm\"}"));
    // Bounded labels: no account or event id anywhere in the exposition.
    for id in ["acct-ok", "acct-dead", "e-ok", "e-dead", "acct-0"] {
        assert!(!s.text.contains(id), "{id} appears in /metrics");
    }

    // A reload counts.
    router.sighup();
    wait_metrics(&router, "a reload", |s| {
        s.get("switchyard_module_reloads_total{consumer=\"esp\",result=\"ok\"}") == 1.0
    })
    .await;

    // Every metric named by the shipped alert rules and dashboard is exported.
    let s = scrape(&router).await;
    let missing: Vec<_> = dashboard_metric_names()
        .into_iter()
        .filter(|n| {
            !s.families.contains(n)
                && !s
                    .samples
                    .keys()
                    .any(|k| k.split('{').next() == Some(n.as_str()))
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{}", s.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sla_breach_posts_one_alert_and_one_recovery_and_a_critical_breach_fails_readiness() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let failing = Arc::new(AtomicBool::new(true));
    let f = failing.clone();
    vendor.script(move |_| {
        if f.load(Ordering::SeqCst) {
            Reply::Status(503)
        } else {
            Reply::Status(200)
        }
    });
    let webhook = Vendor::start().await;
    let cfg = format!(
        r#"{base}{ADMIN}
[alerts]
webhook = "{hook}/alerts"
token = "alert-token-0123456789"
repeat_interval = "1h"

[consumers.crm]
topics = ["customer.*"]
start = "earliest"
critical = true
[consumers.crm.endpoint]
url = "{url}"
[consumers.crm.retry]
initial = "50ms"
max_delay = "200ms"
max_attempts = 10000
max_age = "1h"
[consumers.crm.sla]
max_lag = 1
"#,
        base = base_config(&redis.url()),
        hook = webhook.url(),
        url = vendor.url(),
    );
    let router = Router::start(&cfg);
    let ready = |url: String| async move {
        let r = client().get(url).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(ready(router.url("/readyz")).await.0, 200);
    assert_eq!(
        post(&router, TOKEN, json!([event("e1", "acct-1", true)]), &[]).await,
        202
    );

    let firing = eventually(Duration::from_secs(20), "the breach alert", || {
        let reqs = webhook.requests();
        async move { (!reqs.is_empty()).then(|| reqs[0].clone()) }
    })
    .await;
    assert_eq!(firing.path, "/alerts");
    assert_eq!(firing.body["status"], "firing");
    assert_eq!(firing.body["consumer"], "crm");
    assert_eq!(firing.body["sla"], "lag");
    assert_eq!(firing.body["critical"], true);
    assert!(firing.body["lag_seconds"].as_f64().unwrap() > 1.0);
    assert_eq!(
        firing.headers["authorization"],
        "Bearer alert-token-0123456789"
    );
    // The breach: gauge, readiness on both listeners (with the reason), health unaffected.
    let s = scrape(&router).await;
    assert_eq!(
        s.get("switchyard_sla_breached{consumer=\"crm\",sla=\"lag\"}"),
        1.0
    );
    let (st, body) = ready(router.url("/readyz")).await;
    assert_eq!(st, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("critical consumer `crm`"),
        "{body}"
    );
    assert_eq!(ready(router.admin_url("/readyz")).await.0, 503);
    assert_eq!(ready(router.url("/healthz")).await.0, 200);
    assert!(router.logs().contains("consumer breaches its SLA"));

    // The endpoint recovers: one recovery notice, ready again.
    failing.store(false, Ordering::SeqCst);
    let resolved = eventually(Duration::from_secs(20), "the recovery notice", || {
        let reqs = webhook.requests();
        async move { (reqs.len() >= 2).then(|| reqs[1].clone()) }
    })
    .await;
    assert_eq!(resolved.body["status"], "resolved");
    assert_eq!(resolved.body["consumer"], "crm");
    eventually(Duration::from_secs(10), "ready again", || {
        let url = router.url("/readyz");
        async move { (ready(url).await.0 == 200).then_some(()) }
    })
    .await;
    // Nothing more arrives: exactly one breach and one recovery.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let statuses: Vec<Value> = webhook
        .requests()
        .iter()
        .map(|r| r.body["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!("firing"), json!("resolved")]);
    assert_eq!(vendor.applied().len(), 1);
    let s = scrape(&router).await;
    assert_eq!(
        s.get("switchyard_sla_breached{consumer=\"crm\",sla=\"lag\"}"),
        0.0
    );
    assert_eq!(
        s.get("switchyard_alert_webhooks_total{kind=\"firing\",result=\"sent\"}"),
        1.0
    );
    assert_eq!(
        s.get("switchyard_alert_webhooks_total{kind=\"resolved\",result=\"sent\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_goes_from_ingest_to_the_vendor_as_a_child_span() {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let cfg = format!(
        r#"{base}
[consumers.esp]
topics = ["customer.*"]
start = "earliest"
[consumers.esp.endpoint]
url = "{url}"
"#,
        base = base_config(&redis.url()),
        url = vendor.url(),
    );
    let router = Router::start(&cfg);
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(
        post(
            &router,
            TOKEN,
            json!([event("t1", "acct-1", true)]),
            &[("traceparent", incoming)]
        )
        .await,
        202
    );
    assert_eq!(
        post(&router, TOKEN, json!([event("t2", "acct-2", true)]), &[]).await,
        202
    );
    let reqs = eventually(Duration::from_secs(10), "two deliveries", || {
        let a = vendor.applied();
        async move { (a.len() == 2).then_some(a) }
    })
    .await;
    let by_key = |k: &str| reqs.iter().find(|r| r.key == k).unwrap().clone();
    let parts = |tp: &str| tp.split('-').map(str::to_string).collect::<Vec<_>>();

    // Received at ingest: kept in the event, sent as a child (same trace, new span, same flags).
    let t1 = by_key("t1");
    assert_eq!(t1.body["trace"], incoming);
    let sent = parts(&t1.headers["traceparent"]);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(sent[0], "00");
    assert_eq!(sent[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(sent[2], "00f067aa0ba902b7");
    assert_eq!(sent[2].len(), 16);
    assert_eq!(sent[3], "01");

    // None received: the trace starts at ingest and reaches the vendor.
    let t2 = by_key("t2");
    let created = t2.body["trace"]
        .as_str()
        .expect("a trace created at ingest");
    assert!(
        switchyard_core::event::valid_traceparent(created),
        "{created}"
    );
    let sent = parts(&t2.headers["traceparent"]);
    assert!(switchyard_core::event::valid_traceparent(
        &t2.headers["traceparent"]
    ));
    assert_eq!(sent[1], parts(created)[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_on_a_stalled_cdc_slot_and_on_redis_down_while_healthz_lives() {
    let mut redis = RedisServer::start();
    let mut pg = PgServer::start();
    pg.sql("CREATE TABLE items (id bigint PRIMARY KEY, account_id text NOT NULL, n int NOT NULL)");
    let vendor = Vendor::start().await;
    let cfg = format!(
        r#"{base}{ADMIN}
[sources.crm]
type = "postgres"
url = "{pg_url}"
publication = "sy_ops"
create_publication = true
slot = "sy_ops"
status_interval = "200ms"
max_backoff = "1s"

[[sources.crm.tables]]
table = "items"
topic = "item.{{op}}"
account_column = "account_id"
require_before_image = false

[consumers.esp]
topics = ["item.*"]
start = "earliest"
[consumers.esp.endpoint]
url = "{url}"
"#,
        base = base_config(&redis.url()),
        pg_url = pg.url(),
        url = vendor.url(),
    );
    let router = Router::start(&cfg);
    let ready = |url: String| async move {
        let r = client().get(url).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    eventually(
        Duration::from_secs(30),
        "ready with the slot streaming",
        || {
            let url = router.url("/readyz");
            let active = pg.sql(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'sy_ops' AND active",
            );
            async move { (active == "1" && ready(url).await.0 == 200).then_some(()) }
        },
    )
    .await;
    // A CDC change carries a trace derived from its commit to the vendor.
    pg.sql("INSERT INTO items VALUES (1, 'acct-1', 1)");
    let got = eventually(Duration::from_secs(20), "the CDC event delivered", || {
        let a = vendor.applied();
        async move { a.first().cloned() }
    })
    .await;
    let trace = got.body["trace"]
        .as_str()
        .expect("CDC events carry a trace");
    assert!(switchyard_core::event::valid_traceparent(trace), "{trace}");
    assert_eq!(
        got.headers["traceparent"].split('-').nth(1),
        trace.split('-').nth(1)
    );

    // Postgres goes away: after monitor.cdc_stall_after the slot counts as stalled.
    pg.stop();
    let body = eventually(Duration::from_secs(20), "not ready: CDC stalled", || {
        let url = router.url("/readyz");
        async move {
            let (st, body) = ready(url).await;
            (st == 503).then_some(body)
        }
    })
    .await;
    assert!(
        body["error"].as_str().unwrap().contains("CDC source `crm`"),
        "{body}"
    );
    assert_eq!(ready(router.url("/healthz")).await.0, 200);
    assert_eq!(ready(router.admin_url("/healthz")).await.0, 200);
    let s = scrape(&router).await;
    assert_eq!(s.get("switchyard_cdc_slot_stalled{source=\"crm\"}"), 1.0);

    // Back: ready again.
    pg.start_again();
    eventually(
        Duration::from_secs(30),
        "ready after Postgres is back",
        || {
            let url = router.url("/readyz");
            async move { (ready(url).await.0 == 200).then_some(()) }
        },
    )
    .await;

    // Redis down: not ready, naming Redis; the process still lives.
    redis.kill();
    let body = eventually(Duration::from_secs(10), "not ready: Redis down", || {
        let url = router.url("/readyz");
        async move {
            let (st, body) = ready(url).await;
            (st == 503).then_some(body)
        }
    })
    .await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("Redis is unreachable"),
        "{body}"
    );
    assert_eq!(ready(router.url("/healthz")).await.0, 200);
}
