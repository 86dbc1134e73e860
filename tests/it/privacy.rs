//! Privacy (issue 15) against real Redis and local fake vendors: per-consumer
//! PII policy before the module chain, consent per purpose applied in each
//! account's order, unknown consent read by jurisdiction, the audit trail,
//! `switchyard check` refusing a consumer without a policy, `switchyard
//! policy test`, and no email or phone number in the router's trace logs.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::delivery::consumer;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::Vendor;
use crate::support::{eventually, TOKEN};

/// The test data's PII: none of it may show up where it must not.
const EMAIL_OLD: &str = "ann.old@example.com";
const EMAIL_NEW: &str = "Ann.New@Example.com";
const PHONE: &str = "+1 415 555 0134";

/// `[privacy]` of these tests: email and phone classes, EU opt-in, US and
/// US-CA opt-out (US is the default).
const PRIVACY: &str = r#"
[privacy]
default_jurisdiction = "US"

[privacy.classes."contact.email"]
regimes = ["GDPR", "CCPA"]
normalize = "email"
fields = [{ topics = "customer.*", path = "data.email" }, { path = "data.previous_email" }]

[privacy.classes."contact.phone"]
regimes = ["GDPR", "CCPA"]
normalize = "phone"
fields = [{ path = "data.phone" }]

[privacy.jurisdictions.EU]
unknown_consent = "opt_in"

[privacy.jurisdictions.US]
unknown_consent = "opt_out"

[privacy.jurisdictions.US-CA]
unknown_consent = "opt_out"
"#;

fn esp(url: &str) -> String {
    consumer(
        "esp",
        url,
        r#"policy = { purpose = "email", allow = ["contact.email"], action = "drop" }"#,
    )
}
fn sms(url: &str) -> String {
    consumer(
        "sms",
        url,
        r#"policy = { purpose = "sms", allow = ["contact.phone"], action = "drop" }"#,
    )
}
fn ads(url: &str) -> String {
    consumer(
        "ads",
        url,
        r#"policy = { purpose = "ads", allow = [], action = "hash" }"#,
    )
}

async fn post(r: &Router, body: Value) {
    let resp = reqwest::Client::new()
        .post(r.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

fn ids(v: &Vendor, account: &str) -> Vec<String> {
    v.applied_by_account().remove(account).unwrap_or_default()
}

fn bodies(v: &Vendor) -> String {
    v.requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw_body).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `switchyard audit --account A --json` against the router's config.
fn audit(r: &Router, account: &str) -> Vec<Value> {
    let out = Command::new(bin())
        .args(["audit", "--json", "--account", account, "--config"])
        .arg(&r.config_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn assert_no_pii(what: &str, text: &str) {
    let lower = text.to_lowercase();
    for pii in [EMAIL_OLD, EMAIL_NEW, PHONE, "4155550134", "415 555"] {
        assert!(
            !lower.contains(&pii.to_lowercase()),
            "{what} contains `{pii}`:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_change_reaches_the_esp_and_nothing_with_an_email_reaches_sms() {
    let redis = RedisServer::start();
    let (ev_esp, ev_sms) = (Vendor::start().await, Vendor::start().await);
    let config = base_config(&redis.url()) + PRIVACY + &esp(&ev_esp.url()) + &sms(&ev_sms.url());
    // Trace level for the router's own targets: the log grep below.
    let router = tokio::task::block_in_place(|| Router::start_logging(&config, "trace"));
    post(
        &router,
        json!({"id": "chg-1", "topic": "customer.banner-a.email_changed", "account_id": "m1",
               "consent": {"email": "granted", "sms": "granted"},
               "data": {"email": EMAIL_NEW, "previous_email": EMAIL_OLD, "phone": PHONE, "tier": "gold"}}),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "both vendors got the event",
        || async {
            (ids(&ev_esp, "m1") == ["chg-1"] && ids(&ev_sms, "m1") == ["chg-1"]).then_some(())
        },
    )
    .await;
    let got = &ev_esp.applied()[0].body;
    assert_eq!(got["data"]["email"], EMAIL_NEW, "{got}");
    assert_eq!(got["data"]["previous_email"], EMAIL_OLD, "{got}");
    assert!(got["data"].get("phone").is_none(), "{got}");
    let got = &ev_sms.applied()[0].body;
    assert_eq!(got["data"]["phone"], PHONE, "{got}");
    assert_eq!(got["data"]["tier"], "gold", "{got}");
    assert!(!bodies(&ev_sms).contains('@'), "{}", bodies(&ev_sms));

    // The audit trail names the removed fields, never their values.
    let recs = audit(&router, "m1");
    let sms_rec = recs
        .iter()
        .find(|r| r["consumer"] == "sms")
        .expect("an sms record");
    assert_eq!(sms_rec["outcome"], "delivered");
    assert_eq!(
        sms_rec["fields"],
        json!(["data.email:drop", "data.previous_email:drop"])
    );
    assert_eq!(sms_rec["event"], "chg-1");
    assert_eq!(sms_rec["policy"].as_str().unwrap().len(), 12);
    assert_no_pii("the audit trail", &serde_json::to_string(&recs).unwrap());
    // Nor do the router's logs, at trace level, hold any of it.
    let logs = router.logs();
    assert!(
        logs.contains("chg-1"),
        "the trace logs cover the event:\n{logs}"
    );
    assert_no_pii("the router's trace logs", &logs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_revocation_filters_later_events_already_in_the_log_behind_it() {
    let redis = RedisServer::start();
    let (ev_esp, ev_sms) = (Vendor::start().await, Vendor::start().await);
    // The SMS provider is down while everything is posted: the revocation
    // and the events behind it are all in the log before any is delivered.
    ev_sms.down();
    let config = base_config(&redis.url())
        + "[admin]\nlisten = \"127.0.0.1:0\"\n"
        + PRIVACY
        + &esp(&ev_esp.url())
        + &sms(&ev_sms.url());
    let router = tokio::task::block_in_place(|| Router::start(&config));
    let ev = |id: &str| {
        json!({"id": id, "topic": "customer.banner-a.order_shipped", "account_id": "m2",
               "data": {"phone": PHONE}})
    };
    post(
        &router,
        json!([
            {"id": "s-0", "topic": "customer.banner-a.updated", "account_id": "m2",
             "consent": {"sms": "granted", "email": "granted"}, "data": {"phone": PHONE}},
            ev("s-1"),
            {"id": "revoke", "topic": "customer.consent_changed", "account_id": "m2",
             "data": {"purpose": "sms", "state": "denied"}},
            ev("s-2"),
            ev("s-3"),
        ]),
    )
    .await;
    // The ESP (consent to email granted) gets everything.
    eventually(Duration::from_secs(30), "esp got all five", || async {
        (ids(&ev_esp, "m2").len() == 5).then_some(())
    })
    .await;
    ev_sms.up().await;
    eventually(Duration::from_secs(30), "sms audited all five", || async {
        let n = audit(&router, "m2")
            .iter()
            .filter(|r| r["consumer"] == "sms")
            .count();
        (n == 5).then_some(())
    })
    .await;
    // Before the revocation: sent. The revocation itself: sent (the vendor
    // learns of the opt-out). After it: filtered, though already in the log.
    assert_eq!(ids(&ev_sms, "m2"), ["s-0", "s-1", "revoke"]);
    let recs = audit(&router, "m2");
    let sms: Vec<(&str, &str, &str)> = recs
        .iter()
        .filter(|r| r["consumer"] == "sms")
        .map(|r| {
            (
                r["event"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
                r["rule"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        sms,
        [
            ("s-0", "delivered", ""),
            ("s-1", "delivered", ""),
            ("revoke", "delivered", ""),
            ("s-2", "filtered", "consent:sms"),
            ("s-3", "filtered", "consent:sms"),
        ]
    );
    // The console shows an event's delivery history from the audit trail:
    // one row per consumer outcome (the ESP delivered it, SMS filtered it).
    let page = reqwest::get(router.admin_url("/console/history?account=m2&event=s-2"))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert_eq!(page.matches("class=\"history-entry\"").count(), 2, "{page}");
    for want in [
        "<td class=\"consumer\">esp</td><td class=\"outcome\">delivered</td>",
        "<td class=\"consumer\">sms</td><td class=\"outcome\">filtered</td>",
        "consent:sms",
    ] {
        assert!(page.contains(want), "{want} missing in {page}");
    }
    assert!(!page.contains(PHONE), "no PII in the history");
    // Filtered, not dead-lettered; and counted by rule.
    let metrics = reqwest::get(router.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("switchyard_policy_filtered_total{consumer=\"sms\",rule=\"consent:sms\"} 2"),
        "{metrics}"
    );
    let mut conn = redis.conn();
    let dlq: i64 = (0..8)
        .map(|p| {
            redis::cmd("XLEN")
                .arg(format!("sy:c:sms:dlq:{{p{p}}}"))
                .query::<i64>(&mut conn)
                .unwrap()
        })
        .sum();
    assert_eq!(dlq, 0, "nothing dead-lettered");
    // A later grant applies to events after it.
    post(
        &router,
        json!([{"id": "s-4", "topic": "customer.banner-a.updated", "account_id": "m2",
                "consent": {"sms": "granted"}, "data": {}}]),
    )
    .await;
    eventually(Duration::from_secs(30), "sms got s-4", || async {
        ids(&ev_sms, "m2")
            .contains(&"s-4".to_string())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_consent_to_ads_is_denied_in_the_eu_and_granted_in_california() {
    let redis = RedisServer::start();
    let ev_ads = Vendor::start().await;
    let config = base_config(&redis.url()) + PRIVACY + &ads(&ev_ads.url());
    let router = tokio::task::block_in_place(|| Router::start(&config));
    post(
        &router,
        json!([
            {"id": "eu-1", "topic": "customer.banner-a.updated", "account_id": "eu-member",
             "attributes": {"jurisdiction": "EU"}, "data": {"email": EMAIL_OLD}},
            {"id": "ca-1", "topic": "customer.banner-a.updated", "account_id": "ca-member",
             "attributes": {"jurisdiction": "US-CA"}, "data": {"email": EMAIL_NEW}},
        ]),
    )
    .await;
    eventually(Duration::from_secs(30), "both audited", || async {
        (!audit(&router, "eu-member").is_empty() && !audit(&router, "ca-member").is_empty())
            .then_some(())
    })
    .await;
    assert!(ids(&ev_ads, "eu-member").is_empty());
    assert_eq!(ids(&ev_ads, "ca-member"), ["ca-1"]);
    // The ads platform gets the email hashed (SHA-256 of the normalised
    // address), not in clear.
    let got = &ev_ads.applied()[0].body;
    assert_eq!(got["data"]["email"], SHA_ANN_NEW, "{got}");
    let eu = audit(&router, "eu-member");
    assert_eq!(eu[0]["outcome"], "filtered");
    assert_eq!(eu[0]["rule"], "consent:ads");
    assert_eq!(eu[0]["jurisdiction"], "EU");
    assert!(
        eu[0]["consent"].as_str().unwrap().contains("opt-in"),
        "{eu:?}"
    );
}

/// SHA-256 of `ann.new@example.com` (sha256sum).
const SHA_ANN_NEW: &str = "f31aa696340ac4d224d4b8c5a94cc32d55a14d755b8bec65d1cee750dbbe9ed4";

#[test]
fn check_refuses_a_consumer_without_a_policy_when_classes_are_declared() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    let config = PRIVACY.to_string()
        + &consumer("crm", "http://127.0.0.1:9/", "")
        + &sms("http://127.0.0.1:9/");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("consumers.crm.policy"), "{text}");
    assert!(!text.contains("consumers.sms"), "{text}");
}

#[test]
fn policy_test_prints_what_the_consumer_receives_each_rule_and_the_consent_decision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        PRIVACY.to_string() + &sms("http://127.0.0.1:9/") + &ads("http://127.0.0.1:9/"),
    )
    .unwrap();
    let event = dir.path().join("e.json");
    std::fs::write(
        &event,
        json!({"id": "p-1", "topic": "customer.banner-a.email_changed", "account_id": "m9",
               "attributes": {"jurisdiction": "EU"},
               "data": {"email": EMAIL_NEW, "phone": PHONE}})
        .to_string(),
    )
    .unwrap();
    let run = |consumer: &str, consent: &[&str]| {
        let mut c = Command::new(bin());
        c.args(["policy", "test", "--consumer", consumer, "--config"])
            .arg(&path)
            .arg("--event")
            .arg(&event);
        for s in consent {
            c.args(["--consent", s]);
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // EU, consent to sms unknown: opt-in, filtered.
    let (code, text) = run("sms", &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("jurisdiction: EU"), "{text}");
    assert!(
        text.contains("purpose sms is unknown") && text.contains("opt-in"),
        "{text}"
    );
    assert!(text.contains("filtered by consent:sms"), "{text}");
    // Granted: delivered without the email; the rule that removed it is named.
    let (code, text) = run("sms", &["sms=granted"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("field data.email: drop (class contact.email"),
        "{text}"
    );
    assert!(text.contains("policy.allow"), "{text}");
    let body_line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("the request");
    let req: Value = serde_json::from_str(body_line).unwrap();
    let body: Value = serde_json::from_str(req["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"], json!({"phone": PHONE}));
    // Hash for the ads consumer.
    let (code, text) = run("ads", &["ads=granted"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("field data.email: hash"), "{text}");
    assert!(text.contains("field data.phone: hash"), "{text}");
    assert!(!text.contains("Example.com"), "{text}");
}

/// Every log entry's raw event body, all partitions.
fn log_bodies(redis: &RedisServer) -> Vec<Vec<u8>> {
    let mut conn = redis.conn();
    let mut out = Vec::new();
    for p in 0..8 {
        let entries: Vec<(String, Vec<(String, Vec<u8>)>)> = redis::cmd("XRANGE")
            .arg(format!("sy:log:{{p{p}}}"))
            .arg("-")
            .arg("+")
            .query(&mut conn)
            .unwrap();
        for (_, fields) in entries {
            for (k, v) in fields {
                if k == "e" {
                    out.push(v);
                }
            }
        }
    }
    out
}

fn mentions(body: &[u8], account: &str) -> bool {
    body.windows(account.len()).any(|w| w == account.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_reaches_every_consumer_purges_our_copies_and_is_never_sent_again() {
    let redis = RedisServer::start();
    let (ev_esp, ev_sms) = (Vendor::start().await, Vendor::start().await);
    // The SMS provider refuses one event for good: the account has a DLQ
    // entry (on_failure = "skip" lets the rest flow).
    ev_sms.script(|r| {
        if r.key == "g-2" {
            crate::support::vendor::Reply::Status(400)
        } else {
            crate::support::vendor::Reply::Status(200)
        }
    });
    let sms_skip = consumer(
        "sms",
        &ev_sms.url(),
        "on_failure = \"skip\"\npolicy = { purpose = \"sms\", allow = [\"contact.phone\"] }",
    );
    let config = base_config(&redis.url()) + PRIVACY + &esp(&ev_esp.url()) + &sms_skip;
    let router = tokio::task::block_in_place(|| Router::start(&config));
    let ev = |id: &str, account: &str| {
        json!({"id": id, "topic": "customer.banner-a.updated", "account_id": account,
               "consent": {"email": "granted", "sms": "granted"},
               "data": {"email": EMAIL_OLD, "phone": PHONE}})
    };
    post(
        &router,
        json!([
            ev("g-1", "gone"),
            ev("g-2", "gone"),
            ev("g-3", "gone"),
            ev("k-1", "kept")
        ]),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "delivered and dead-lettered",
        || async {
            let sms_audit = audit(&router, "gone")
                .iter()
                .filter(|r| r["consumer"] == "sms")
                .count();
            (ids(&ev_esp, "gone").len() == 3 && sms_audit == 3).then_some(())
        },
    )
    .await;
    let mut conn = redis.conn();
    let dlq_of = |conn: &mut redis::Connection, account: &str| -> usize {
        (0..8)
            .map(|p| {
                let e: Vec<(String, Vec<(String, Vec<u8>)>)> = redis::cmd("XRANGE")
                    .arg(format!("sy:c:sms:dlq:{{p{p}}}"))
                    .arg("-")
                    .arg("+")
                    .query(conn)
                    .unwrap();
                e.iter()
                    .filter(|(_, f)| {
                        f.iter()
                            .any(|(k, v)| k == "account" && v == account.as_bytes())
                    })
                    .count()
            })
            .sum()
    };
    assert_eq!(dlq_of(&mut conn, "gone"), 1, "g-2 is in the sms DLQ");
    assert_eq!(
        log_bodies(&redis)
            .iter()
            .filter(|b| mentions(b, "gone"))
            .count(),
        3
    );

    // The request: every consumer gets it, whatever the consent.
    post(
        &router,
        json!({"id": "del-1", "topic": "customer.deletion_requested", "account_id": "gone",
               "consent": {"sms": "denied"}, "data": {"email": EMAIL_OLD}}),
    )
    .await;
    let deletion = eventually(Duration::from_secs(30), "the purge", || async {
        audit(&router, "gone")
            .into_iter()
            .find_map(|r| r.get("deletion").cloned())
            .filter(|d| d.get("purged").is_some())
    })
    .await;
    assert!(ids(&ev_esp, "gone").contains(&"del-1".to_string()));
    assert!(ids(&ev_sms, "gone").contains(&"del-1".to_string()));
    // Each consumer's module maps it to the vendor's call; the policy still applies.
    let sms_del = ev_sms
        .applied()
        .into_iter()
        .find(|r| r.key == "del-1")
        .unwrap();
    assert!(
        sms_del.body["data"].get("email").is_none(),
        "{}",
        sms_del.body
    );
    // The attestation: per consumer, and the purge with its counts.
    assert!(deletion["done:esp"].as_str().unwrap().contains("delivered"));
    assert!(deletion["done:sms"].as_str().unwrap().contains("delivered"));
    let purged = deletion["purged"].as_str().unwrap();
    assert!(
        purged.contains("log=4") && purged.contains("dlq=1"),
        "{purged}"
    );
    let text = String::from_utf8_lossy(
        &Command::new(bin())
            .args(["audit", "--account", "gone", "--config"])
            .arg(&router.config_path)
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        text.contains("consumer esp: request") && text.contains("copies purged"),
        "{text}"
    );

    // Our copies: nothing of the account in the log, the DLQ or a defer list.
    let bodies = log_bodies(&redis);
    assert_eq!(bodies.iter().filter(|b| mentions(b, "gone")).count(), 0);
    assert_eq!(bodies.iter().filter(|b| mentions(b, "kept")).count(), 1);
    assert_eq!(dlq_of(&mut conn, "gone"), 0);
    let defer: Vec<String> = redis::cmd("KEYS")
        .arg("sy:c:*:defer:*:gone")
        .query(&mut conn)
        .unwrap();
    assert!(defer.is_empty(), "{defer:?}");

    // A late change (CDC lag) with an older source time: dropped and audited.
    let mut late = ev("late-1", "gone");
    late["occurred_at"] = json!((chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339());
    post(&router, late).await;
    eventually(
        Duration::from_secs(30),
        "the late event audited",
        || async {
            audit(&router, "gone")
                .iter()
                .any(|r| {
                    r["event"] == "late-1" && r["outcome"] == "filtered" && r["rule"] == "deleted"
                })
                .then_some(())
        },
    )
    .await;

    // A rewind of the ESP to the start sends the other account again, and
    // nothing of the deleted one.
    let esp_gone = ev_esp
        .requests()
        .iter()
        .filter(|r| r.account == "gone")
        .count();
    let out = Command::new(bin())
        .args(["consumer", "rewind", "--config"])
        .arg(&router.config_path)
        .args(["esp", "--to", "earliest"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(30), "k-1 sent again", || async {
        (ev_esp.requests().iter().filter(|r| r.key == "k-1").count() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ev_esp
            .requests()
            .iter()
            .filter(|r| r.account == "gone")
            .count(),
        esp_gone,
        "the rewind sent nothing of the deleted account"
    );
}
