//! The operator surfaces over the one admin API (issue 16 items 4–6):
//! the admin API's routes and token, `switchyard status [--json]` with the
//! router running (found through the address it records in Redis, listeners
//! on port 0) and with it down (Redis only), the DLQ commands through the API
//! and through Redis, the console in a real headless Chromium (WebDriver:
//! chromedriver + fantoccini), and `switchyard mcp` over stdio with rmcp's
//! client.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::{Reply, Vendor};
use crate::support::{eventually, free_port, TOKEN};

const ADMIN_TOKEN: &str = "admin-token-for-the-console-0123456789";

/// A payload that would run script if any view rendered it as HTML.
const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";

fn config(redis: &str, vendor: &str) -> String {
    base_config(redis)
        + &format!(
            r#"
[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[monitor]
interval = "200ms"

[consumers.esp]
topics = ["customer.*"]
start = "earliest"
timeout = "2s"
[consumers.esp.endpoint]
url = "{vendor}"
[consumers.esp.retry]
initial = "20ms"
max_delay = "100ms"
max_attempts = 3
max_age = "30s"
"#
        )
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A router whose vendor rejects event `bad-1` (account `acct-bad`, 400: dead-lettered
/// at once) until `fixed` is set; `good-1` (account `acct-good`) is delivered.
struct Setup {
    redis: RedisServer,
    vendor: Vendor,
    fixed: Arc<AtomicBool>,
    router: Router,
}

async fn setup() -> Setup {
    let redis = RedisServer::start();
    let vendor = Vendor::start().await;
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    vendor.script(move |r| {
        if r.key == "bad-1" && !f.load(Ordering::SeqCst) {
            // The error quotes the request back (PII included), as many APIs do.
            Reply::Echo(400)
        } else {
            Reply::Status(200)
        }
    });
    let router = Router::start(&config(&redis.url(), &vendor.url()));
    let events = json!([
        {"id": "good-1", "topic": "customer.banner-a.updated", "account_id": "acct-good", "data": {"n": 1}},
        {"id": "bad-1", "topic": "customer.banner-a.updated", "account_id": "acct-bad", "data": {"note": HOSTILE, "email": "pii@example.com"}},
    ]);
    let resp = http()
        .post(router.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let s = Setup {
        redis,
        vendor,
        fixed,
        router,
    };
    eventually(Duration::from_secs(20), "bad-1 dead-lettered", || async {
        let v = admin_get(&s.router, "/admin/consumers/esp/dlq").await.1;
        (v["entries"].as_array().map(Vec::len) == Some(1)
            && s.vendor.applied().iter().any(|r| r.key == "good-1"))
        .then_some(())
    })
    .await;
    s
}

async fn admin_get(router: &Router, path: &str) -> (u16, Value) {
    let r = http()
        .get(router.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

async fn admin_post(router: &Router, path: &str, body: &Value) -> (u16, Value) {
    let r = http()
        .post(router.admin_url(path))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

fn cli(args: &[&str], config: &Path) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn cli_async(args: &[&str], config: &Path) -> (bool, String, String) {
    let (args, config): (Vec<String>, _) = (
        args.iter().map(|s| s.to_string()).collect(),
        config.to_path_buf(),
    );
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&a, &config)
    })
    .await
    .unwrap()
}

async fn wait_delivered(vendor: &Vendor, key: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{key} delivered at the vendor"),
        || async { vendor.applied().iter().any(|r| r.key == key).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_routes_need_the_token_and_name_the_field_in_errors() {
    let s = setup().await;
    let r = &s.router;

    // Without the token, or with another one (the ingest token): 401. /metrics stays open.
    for token in [None, Some(TOKEN), Some("nope")] {
        for (m, path) in [
            ("GET", "/admin/status"),
            ("GET", "/admin/consumers/esp/dlq"),
            ("POST", "/admin/consumers/esp/dlq/replay"),
            ("POST", "/admin/consumers/esp/dlq/drop"),
            ("POST", "/admin/consumers/esp/rewind"),
            ("POST", "/admin/reload"),
            ("GET", "/console/view"),
        ] {
            let mut req = http().request(m.parse().unwrap(), r.admin_url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{m} {path} with {token:?}");
        }
    }
    assert_eq!(
        http()
            .get(r.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Status: the failing consumer, its DLQ, the reason (the status, not the body).
    let (st, v) = admin_get(r, "/admin/status").await;
    assert_eq!(st, 200, "{v}");
    let esp = &v["consumers"]["esp"];
    assert_eq!(esp["dlq"], 1, "{v}");
    assert_eq!(esp["parked_accounts"], 1, "{v}");
    assert_eq!(esp["state"], "failing", "{v}");
    assert_eq!(esp["last_error"]["reason"], "HTTP 400", "{v}");
    assert!(
        esp["p99_latency_ms"].as_f64().is_some(),
        "good-1 was delivered: {v}"
    );
    assert!(
        esp["lag_seconds"].is_number() && esp["lag_events"].is_number(),
        "{v}"
    );
    assert_eq!(esp["modules"], json!([]), "{v}");
    assert_eq!(v["router"]["running"], true);
    assert_eq!(v["health"]["status"], "ok", "{v}");
    assert_eq!(v["sources"]["web"]["type"], "http", "{v}");
    assert!(
        !v.to_string().contains("pii@example.com"),
        "no payload in status: {v}"
    );

    // The DLQ: listed without the event, shown with it (by event id).
    let (_, list) = admin_get(r, "/admin/consumers/esp/dlq?account=acct-bad").await;
    let e = &list["entries"][0];
    assert_eq!(e["fields"]["event_id"], "bad-1", "{list}");
    assert_eq!(e["fields"]["status"], "400", "{list}");
    assert_eq!(e["fields"]["attempts"], "1", "{list}");
    assert!(e.get("event").is_none() && e["has_event"] == true, "{list}");
    let (st, shown) = admin_get(r, "/admin/consumers/esp/dlq/bad-1").await;
    assert_eq!(st, 200);
    assert_eq!(shown["event"]["data"]["note"], HOSTILE);
    assert!(
        shown["fields"]["response"]
            .as_str()
            .unwrap()
            .contains("pii@example.com"),
        "the DLQ keeps the vendor's answer for triage: {shown}"
    );

    // Errors: a status and a message naming the field.
    let (st, v) = admin_get(r, "/admin/consumers/nope/dlq").await;
    assert_eq!((st, v["field"].as_str()), (404, Some("consumer")), "{v}");
    let (st, v) = admin_get(r, "/admin/consumers/esp/dlq/no-such-id").await;
    assert_eq!((st, v["field"].as_str()), (404, Some("id")), "{v}");
    let (st, v) = admin_get(r, "/admin/consumers/esp/dlq?since=yesterday").await;
    assert_eq!((st, v["field"].as_str()), (400, Some("since")), "{v}");
    let (st, v) = admin_post(
        r,
        "/admin/consumers/esp/dlq/replay",
        &json!({"since": "yesterday"}),
    )
    .await;
    assert_eq!((st, v["field"].as_str()), (400, Some("since")), "{v}");
    let (st, v) = admin_post(r, "/admin/consumers/esp/dlq/replay", &json!({"account": 5})).await;
    assert_eq!((st, v["field"].as_str()), (400, Some("account")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("account"), "{v}");
    let (st, v) = admin_post(r, "/admin/consumers/esp/rewind", &json!({})).await;
    assert_eq!((st, v["field"].as_str()), (400, Some("to")), "{v}");
    let (st, v) = admin_post(r, "/admin/consumers/esp/rewind", &json!({"to": "latest"})).await;
    assert_eq!((st, v["field"].as_str()), (400, Some("to")), "{v}");
    let (st, v) = admin_get(r, "/admin/accounts/acct-bad/events?limit=0").await;
    assert_eq!((st, v["field"].as_str()), (400, Some("limit")), "{v}");

    // The account's recent events (what the MCP tail tool reads).
    let (st, v) = admin_get(r, "/admin/accounts/acct-bad/events?limit=5").await;
    assert_eq!(st, 200);
    assert_eq!(v["events"][0]["event"]["id"], "bad-1", "{v}");

    // Replay by id through the API: delivered once the vendor accepts it.
    s.fixed.store(true, Ordering::SeqCst);
    let (st, v) = admin_post(
        r,
        "/admin/consumers/esp/dlq/replay",
        &json!({"id": "bad-1"}),
    )
    .await;
    assert_eq!((st, v["replayed"].as_u64()), (200, Some(1)), "{v}");
    wait_delivered(&s.vendor, "bad-1").await;
    let (_, v) = admin_get(r, "/admin/consumers/esp/dlq").await;
    assert_eq!(v["entries"], json!([]), "{v}");

    // Rewind through the API: everything is delivered again.
    let before = s.vendor.requests().len();
    let (st, v) = admin_post(r, "/admin/consumers/esp/rewind", &json!({"to": "earliest"})).await;
    assert_eq!(st, 200, "{v}");
    eventually(
        Duration::from_secs(20),
        "rewound consumer re-sent both",
        || async { (s.vendor.requests().len() >= before + 2).then_some(()) },
    )
    .await;
    let _ = &s.redis;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_with_the_router_running_and_down_and_dlq_commands_either_way() {
    let mut s = setup().await;
    let path = s.router.config_path.clone();

    // Running, both listeners on port 0: found through the address in Redis.
    let (ok, out, err) = cli_async(&["status", "--json"], &path).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["router"]["running"], true, "{v}");
    assert_eq!(
        v["router"]["url"].as_str().map(|u| format!("{u}/x")),
        Some(s.router.admin_url("/x")),
        "the admin listener, from the address the router recorded: {v}"
    );
    let esp = &v["consumers"]["esp"];
    assert_eq!(
        (
            esp["state"].as_str(),
            esp["dlq"].as_u64(),
            esp["last_error"]["reason"].as_str()
        ),
        (Some("failing"), Some(1), Some("HTTP 400")),
        "{v}"
    );
    assert!(esp["delivery_rate"].is_number(), "{v}");
    let (ok, table, err) = cli_async(&["status"], &path).await;
    assert!(ok, "{err}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("esp") && l.contains("failing") && l.contains("HTTP 400")),
        "{table}"
    );
    // `reload` finds the router on port 0 too (the gap of issue 16).
    let (ok, out, err) = cli_async(&["reload"], &path).await;
    assert!(ok, "reload: {out} {err}");
    // `dlq list` through the API.
    let (ok, out, err) = cli_async(&["dlq", "list", "--consumer", "esp"], &path).await;
    assert!(ok, "{err}");
    let e: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(e["fields"]["event_id"], "bad-1");
    let (ok, _, err) = cli_async(&["dlq", "list", "--consumer", "nope"], &path).await;
    assert!(!ok && err.contains("no consumer `nope`"), "{err}");

    // Down: read from Redis; the address record is gone, nothing live is invented.
    let st = tokio::task::block_in_place(|| s.router.terminate());
    assert!(st.success());
    let (ok, out, err) = cli_async(&["status", "--json"], &path).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["router"]["running"], false, "{v}");
    let esp = &v["consumers"]["esp"];
    assert_eq!(esp["dlq"], 1, "{v}");
    assert_eq!(esp["parked_accounts"], 1, "{v}");
    assert_eq!(esp["state"], "blocked", "{v}");
    assert!(
        esp["delivery_rate"].is_null() && esp["last_error"].is_null(),
        "{v}"
    );
    assert_eq!(v["health"]["status"], "router not running", "{v}");
    let (ok, table, _) = cli_async(&["status"], &path).await;
    assert!(ok && table.contains("not running"), "{table}");

    // Replay without a router (Redis), then start it: the event is delivered.
    s.fixed.store(true, Ordering::SeqCst);
    let (ok, out, err) = cli_async(
        &[
            "dlq",
            "replay",
            "--consumer",
            "esp",
            "--account",
            "acct-bad",
        ],
        &path,
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("1 event(s) sent back"), "{out}");
    tokio::task::block_in_place(|| s.router.restart());
    wait_delivered(&s.vendor, "bad-1").await;
    let (ok, out, err) = cli_async(&["status", "--json"], &path).await;
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["router"]["running"].as_bool(),
            v["consumers"]["esp"]["dlq"].as_u64()
        ),
        (Some(true), Some(0)),
        "{v}"
    );
}

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `/shutdown` makes chromedriver quit its browsers too (a failed test
        // never reached `close()`); killing chromedriver alone would leave
        // Chromium running.
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(
                b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let exe = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromedriver is missing: run tests/deps.sh (Debian packages chromium, chromium-driver)");
    let port = free_port();
    let child = Command::new(exe)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let d = Driver { child, port };
    eventually(
        Duration::from_secs(20),
        "chromedriver listening",
        || async {
            http()
                .get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        },
    )
    .await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_headless_chromium_shows_the_dlq_and_replays_with_the_button() {
    use fantoccini::{ClientBuilder, Locator};

    let s = setup().await;
    let driver = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]}),
    );
    let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in headless Chromium");

    // The page asks for the token (the view answers 401 without it).
    c.goto(&s.router.admin_url("/console")).await.unwrap();
    let input = c.wait().for_element(Locator::Id("token")).await.unwrap();
    eventually(Duration::from_secs(10), "token form shown", || async {
        input.is_displayed().await.ok().filter(|d| *d).map(|_| ())
    })
    .await;
    input.send_keys(ADMIN_TOKEN).await.unwrap();
    c.find(Locator::Css("#login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let row = c
        .wait()
        .for_element(Locator::Css("tr.dlq-entry"))
        .await
        .unwrap();
    let text = row.text().await.unwrap();
    assert!(
        text.contains("bad-1") && text.contains("acct-bad"),
        "{text}"
    );
    for (cell, want) in [
        ("reason", "HTTP 400"),
        ("attempts", "1"),
        ("last-status", "400"),
    ] {
        let got = row
            .find(Locator::Css(&format!("td.{cell}")))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(got, want, "{cell}: {text}");
    }
    let age = row
        .find(Locator::Css("td.age"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(age.ends_with('s') || age.ends_with('m'), "age {age}");
    let consumers = c
        .find(Locator::Css("#consumers"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        consumers.contains("esp") && consumers.contains("failing"),
        "{consumers}"
    );
    c.find(Locator::Css("#consumers svg.chart")).await.unwrap();
    // The token is kept for the tab only.
    let kept = c
        .execute(
            "return sessionStorage.getItem('switchyard-admin-token')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept, json!(ADMIN_TOKEN));

    // The payload is hidden until asked for, then shown as text, never as markup.
    let page = c.source().await.unwrap();
    assert!(
        !page.contains("pii@example.com"),
        "payload hidden by default"
    );
    c.find(Locator::Css("button[data-action=payload]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let pre = c
        .wait()
        .for_element(Locator::Css("pre.payload"))
        .await
        .unwrap();
    let shown = pre.text().await.unwrap();
    assert!(
        shown.contains("pii@example.com") && shown.contains("<img src=x"),
        "{shown}"
    );
    let pwned = c
        .execute("return window.__pwned === undefined", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!(true), "hostile event data ran as script");
    assert!(
        c.find_all(Locator::Css("pre.payload img, pre.payload script"))
            .await
            .unwrap()
            .is_empty(),
        "hostile event data became elements"
    );

    // A screenshot of the failing consumer and its DLQ.
    let png = c.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("console-failing-consumer.png"), &png).unwrap();

    // Replay with the button: a confirmation first; dismissed, nothing happens.
    s.fixed.store(true, Ordering::SeqCst);
    let replay = Locator::Css("button[data-action=replay]");
    c.find(replay).await.unwrap().click().await.unwrap();
    let asked = c.get_alert_text().await.unwrap();
    assert!(
        asked.contains("Replay") && asked.contains("acct-bad"),
        "{asked}"
    );
    c.dismiss_alert().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!s.vendor.applied().iter().any(|r| r.key == "bad-1"));
    c.find(replay).await.unwrap().click().await.unwrap();
    c.accept_alert().await.unwrap();
    wait_delivered(&s.vendor, "bad-1").await;
    eventually(
        Duration::from_secs(10),
        "the page says so and the DLQ is empty",
        || async {
            let msg = c.find(Locator::Id("msg")).await.ok()?.text().await.ok()?;
            let empty = c.find(Locator::Css("p.dlq-empty")).await.is_ok();
            (msg.contains("Replayed 1 event") && empty).then_some(())
        },
    )
    .await;
    let png = c.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(dir.join("console-after-replay.png"), &png).unwrap();
    c.close().await.unwrap();
    drop(driver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_stdio_reports_status_and_replays_a_dead_letter() {
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
    use rmcp::ServiceExt;

    let s = setup().await;
    let path = s.router.config_path.clone();
    let transport = TokioChildProcess::new(tokio::process::Command::new(bin()).configure(|cmd| {
        cmd.arg("mcp").arg("--config").arg(&path);
    }))
    .unwrap();
    let client = ().serve(transport).await.expect("MCP handshake");

    // The tools, with read-only and state-changing hints.
    let tools = client.list_all_tools().await.unwrap();
    let hint = |name: &str| {
        let t = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool {name}"));
        let a = t.annotations.clone().expect("annotations");
        (a.read_only_hint, a.destructive_hint)
    };
    for name in ["status", "lag", "dlq_list", "dlq_show", "tail"] {
        assert_eq!(hint(name).0, Some(true), "{name} is read-only");
    }
    assert_eq!(hint("dlq_replay"), (Some(false), Some(false)));
    assert_eq!(hint("dlq_drop"), (Some(false), Some(true)));

    let call = |name: &'static str, args: Value| {
        let client = &client;
        async move {
            let mut p = CallToolRequestParams::new(name);
            if let Value::Object(m) = args {
                p = p.with_arguments(m);
            }
            client.call_tool(p).await.unwrap()
        }
    };
    let st = call("status", json!({})).await;
    assert_ne!(st.is_error, Some(true), "{st:?}");
    let v = st.structured_content.expect("structured status");
    assert_eq!(v["router"]["running"], true, "{v}");
    let esp = &v["consumers"]["esp"];
    assert_eq!(
        (esp["dlq"].as_u64(), esp["last_error"]["reason"].as_str()),
        (Some(1), Some("HTTP 400")),
        "{v}"
    );

    let lag = call("lag", json!({"consumer": "esp"}))
        .await
        .structured_content
        .unwrap();
    assert_eq!(lag["consumers"]["esp"]["state"], "failing", "{lag}");

    // Payloads redacted (the server runs without --show-payloads).
    let shown = call("dlq_show", json!({"consumer": "esp", "id": "bad-1"})).await;
    let shown = shown.structured_content.unwrap();
    assert_eq!(shown["event"]["data"], "[redacted]", "{shown}");
    assert!(!shown.to_string().contains("pii@example.com"));
    let tail = call("tail", json!({"account": "acct-bad"}))
        .await
        .structured_content
        .unwrap();
    assert_eq!(tail["events"][0]["event"]["id"], "bad-1", "{tail}");
    assert!(!tail.to_string().contains("pii@example.com"), "{tail}");

    // Started with --show-payloads, the same tools show them.
    let open = ()
        .serve(
            TokioChildProcess::new(tokio::process::Command::new(bin()).configure(|cmd| {
                cmd.arg("mcp")
                    .arg("--config")
                    .arg(&path)
                    .arg("--show-payloads");
            }))
            .unwrap(),
        )
        .await
        .expect("MCP handshake (--show-payloads)");
    let mut p = CallToolRequestParams::new("dlq_show");
    p = p.with_arguments(
        json!({"consumer": "esp", "id": "bad-1"})
            .as_object()
            .unwrap()
            .clone(),
    );
    let shown = open.call_tool(p).await.unwrap().structured_content.unwrap();
    assert_ne!(shown["event"]["data"], "[redacted]", "{shown}");
    assert!(shown.to_string().contains("pii@example.com"), "{shown}");
    open.cancel().await.unwrap();

    // A replay needs a selection; with the entry's id it delivers the event.
    let listed = call("dlq_list", json!({"consumer": "esp"}))
        .await
        .structured_content
        .unwrap();
    assert_eq!(
        listed["entries"][0]["fields"]["event_id"], "bad-1",
        "{listed}"
    );
    assert_eq!(
        listed["entries"][0]["fields"]["response"], "[redacted]",
        "{listed}"
    );
    assert!(!listed.to_string().contains("pii@example.com"), "{listed}");
    let refused = call("dlq_replay", json!({"consumer": "esp"})).await;
    assert_eq!(refused.is_error, Some(true));
    s.fixed.store(true, Ordering::SeqCst);
    let r = call("dlq_replay", json!({"consumer": "esp", "id": "bad-1"})).await;
    assert_eq!(
        r.structured_content.as_ref().map(|v| v["replayed"].clone()),
        Some(json!(1)),
        "{r:?}"
    );
    wait_delivered(&s.vendor, "bad-1").await;
    let list = call("dlq_list", json!({"consumer": "esp"}))
        .await
        .structured_content
        .unwrap();
    assert_eq!(list["entries"], json!([]), "{list}");
    client.cancel().await.unwrap();
}
