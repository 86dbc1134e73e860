//! The destination modules (`transforms/<vendor>`) inside the real router,
//! each against its own fake vendor: every request is checked as the
//! vendor documents it (method, path, auth and API headers, body, and the
//! normalisation + SHA-256 hashing of the ad platforms), and the events a
//! module must not send are dropped with their reason. One router per group
//! of vendors, all events of a group posted at once.

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::startup::wasm;
use crate::support::redis::RedisServer;
use crate::support::router::{base_config, bin, Router};
use crate::support::vendor::{Received, Vendor};
use crate::support::{eventually, TOKEN};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(r: &Router, body: Value) {
    let resp = client()
        .post(r.url("/v1/events"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}

async fn admin_status(router: &Router) -> Value {
    client()
        .get(router.url("/admin/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A consumer of every customer event, delivering to `url` through one
/// module (`module` = the `.wasm` stem, `config` = its inline config table),
/// with `endpoint` lines (auth, headers) added to its endpoint table.
fn consumer(name: &str, url: &str, module: &str, config: &str, endpoint: &str) -> String {
    format!(
        r#"
[consumers.{name}]
topics = ["customer.*"]
start = "earliest"
[consumers.{name}.endpoint]
url = "{url}"
{endpoint}
[consumers.{name}.retry]
initial = "20ms"
max_delay = "100ms"
max_attempts = 3
[[consumers.{name}.modules]]
path = "{path}"
deadline = "5s"
config = {{ {config} }}
"#,
        path = wasm(module).display()
    )
}

/// Wait until `vendor` has received `n` requests, give stragglers a moment,
/// and return them (exactly `n`).
async fn requests(vendor: &Vendor, n: usize, who: &str) -> Vec<Received> {
    eventually(Duration::from_secs(60), who, || async {
        (vendor.requests().len() >= n).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reqs = vendor.requests();
    assert_eq!(
        reqs.len(),
        n,
        "{who}: {:#?}",
        reqs.iter()
            .map(|r| (&r.key, &r.method, &r.path, &r.body))
            .collect::<Vec<_>>()
    );
    reqs
}

/// The requests of event `id`, in the order they were sent.
fn of<'a>(reqs: &'a [Received], id: &str) -> Vec<&'a Received> {
    reqs.iter().filter(|r| r.key == id).collect()
}

fn one<'a>(reqs: &'a [Received], id: &str) -> &'a Received {
    let v = of(reqs, id);
    assert_eq!(v.len(), 1, "requests of {id}");
    v[0]
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn assert_request(r: &Received, method: &str, path: &str, content_type: &str) {
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
        (method, path, None),
        "{}",
        r.key
    );
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some(content_type),
        "{} {}",
        r.key,
        r.path
    );
}

const OCCURRED: &str = "2026-11-30T10:00:00Z";

/// The canonical customer events of one person (account 42) from creation
/// to deletion, plus one person (43) without SMS consent.
fn lifecycle() -> Value {
    let granted = json!({"email": "granted", "sms": "granted", "ads": "granted"});
    let ada = json!({"email": " Ada.Lovelace@Example.com ", "phone": "+44 7700 900123",
                     "first_name": "Ada", "last_name": "Lovelace", "tier": "silver"});
    let ada2 = json!({"email": "ada@new.example", "phone": "+44 7700 900123",
                      "first_name": "Ada", "last_name": "Lovelace", "tier": "silver"});
    let mut ada3 = ada2.clone();
    ada3["phone"] = json!("+44 7700 900456");
    json!([
        {"id": "v1-created", "topic": "customer.banner-a.created", "account_id": "42", "op": "insert",
         "occurred_at": OCCURRED, "after": ada, "consent": granted},
        {"id": "v2-email", "topic": "customer.banner-a.email_changed", "account_id": "42", "op": "update",
         "occurred_at": OCCURRED, "before": {"email": "Ada.Lovelace@Example.com"}, "after": ada2, "consent": granted},
        {"id": "v3-phone", "topic": "customer.banner-a.phone_changed", "account_id": "42", "op": "update",
         "occurred_at": OCCURRED, "before": ada2, "after": ada3, "consent": granted},
        {"id": "v4-address", "topic": "customer.banner-a.address_changed", "account_id": "42",
         "occurred_at": OCCURRED, "consent": granted,
         "data": {"address": {"line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4LB", "country": "GB"}}},
        {"id": "v5-consent", "topic": "customer.banner-a.consent_changed", "account_id": "42",
         "occurred_at": OCCURRED, "data": {"email": "ada@new.example", "phone": "+44 7700 900456"},
         "consent": {"email": "denied", "sms": "granted", "ads": "denied"}},
        {"id": "v6-tier", "topic": "customer.banner-a.tier_changed", "account_id": "42", "occurred_at": OCCURRED,
         "data": {"tier": "gold", "first_name": "Ada", "phone": "+44 7700 900456"}, "consent": granted},
        {"id": "v7-sub", "topic": "customer.banner-a.subscription_cancelled", "account_id": "42",
         "occurred_at": OCCURRED, "data": {"plan": "gold", "reason": "moving"}, "consent": granted},
        {"id": "v8-delete", "topic": "customer.banner-a.deletion_requested", "account_id": "42",
         "occurred_at": OCCURRED, "data": {"email": "ada@new.example", "phone": "+44 7700 900456"}},
        {"id": "v9-nosms", "topic": "customer.banner-a.created", "account_id": "43", "op": "insert",
         "occurred_at": OCCURRED, "after": {"email": "bob@example.com", "phone": "+1 555 010 9999", "first_name": "Bob"},
         "consent": {"email": "granted", "sms": "denied", "ads": "unknown"}},
    ])
}

const WEBHOOK_KEY: &[u8] = b"switchyard-test-webhook-key-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esp_crm_sms_and_webhook_destinations_send_each_vendors_documented_request() {
    let redis = RedisServer::start();
    let names = [
        "klaviyo",
        "braze",
        "iterable",
        "customerio",
        "hubspot",
        "twilio",
        "hook",
    ];
    let mut vendors = std::collections::HashMap::new();
    for n in names {
        vendors.insert(n, Vendor::start().await);
    }
    let url = |n: &str| vendors[n].url();
    let sid = "AC0123456789abcdef0123456789abcdef";
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(WEBHOOK_KEY)
    );
    let cfg = base_config(&redis.url())
        + &consumer(
            "klaviyo",
            &url("klaviyo"),
            "klaviyo",
            r#"list_id = "Y6nRLr""#,
            r#"headers = { authorization = "Klaviyo-API-Key pk_test_0123" }"#,
        )
        + &consumer(
            "braze",
            &url("braze"),
            "braze",
            r#"sms_subscription_group_id = "sg-0001""#,
            r#"auth = { type = "bearer", token = "braze-rest-key" }"#,
        )
        + &consumer(
            "iterable",
            &url("iterable"),
            "iterable",
            "",
            r#"headers = { "Api-Key" = "iterable-server-key" }"#,
        )
        + &consumer(
            "customerio",
            &url("customerio"),
            "customerio",
            "",
            r#"auth = { type = "basic", username = "site-0001", password = "cio-track-key" }"#,
        )
        + &consumer(
            "hubspot",
            &url("hubspot"),
            "hubspot",
            r#"id_property = "switchyard_id""#,
            r#"auth = { type = "bearer", token = "pat-na1-hubspot" }"#,
        )
        + &consumer(
            "twilio",
            &url("twilio"),
            "twilio_sms",
            &format!(
                r#"account_sid = "{sid}", from = "+15017122661", "template.created" = "Welcome to Acme, {{first_name}}!", "template.tier_changed" = "You are now {{tier}}.""#
            ),
            &format!(
                r#"auth = {{ type = "basic", username = "{sid}", password = "twilio-auth-token" }}"#
            ),
        )
        + &consumer(
            "hook",
            &url("hook"),
            "webhook",
            r#"format = "standard""#,
            &format!(r#"auth = {{ type = "hmac", secret = "{whsec}" }}"#),
        );
    let router = Router::start(&cfg);
    post(&router, lifecycle()).await;

    // Klaviyo: 8 events of 42 + 1 of 43, and consent_changed fans out to a
    // subscribe job (SMS granted) and an unsubscribe job (email denied).
    let k = requests(&vendors["klaviyo"], 10, "klaviyo").await;
    for r in &k {
        assert_eq!(r.method, "POST");
        assert_eq!(r.headers["authorization"], "Klaviyo-API-Key pk_test_0123");
        assert_eq!(r.headers["revision"], "2024-10-15");
        assert_eq!(r.headers["accept"], "application/vnd.api+json");
        assert_eq!(r.headers["content-type"], "application/vnd.api+json");
    }
    let r = one(&k, "v1-created");
    assert_request(r, "POST", "/api/profile-import", "application/vnd.api+json");
    assert_eq!(
        r.body,
        json!({"data": {"type": "profile", "attributes": {"email": "Ada.Lovelace@Example.com",
            "phone_number": "+447700900123", "external_id": "42", "first_name": "Ada", "last_name": "Lovelace"}}})
    );
    // The second request of one event carries its own idempotency key, so the
    // fake (which honours the key) applies both.
    let c = [one(&k, "v5-consent"), one(&k, "v5-consent:unsubscribe")];
    assert!(c.iter().all(|r| !r.repeat && r.status == 200));
    assert_eq!(c[0].path, "/api/profile-subscription-bulk-create-jobs");
    assert_eq!(
        c[0].body,
        json!({"data": {"type": "profile-subscription-bulk-create-job",
            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"phone_number": "+447700900456",
                "subscriptions": {"sms": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}, "historical_import": false},
            "relationships": {"list": {"data": {"type": "list", "id": "Y6nRLr"}}}}})
    );
    assert_eq!(c[1].path, "/api/profile-subscription-bulk-delete-jobs");
    assert_eq!(
        c[1].body,
        json!({"data": {"type": "profile-subscription-bulk-delete-job",
            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": "ada@new.example",
                "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}}}}]}},
            "relationships": {"list": {"data": {"type": "list", "id": "Y6nRLr"}}}}})
    );
    let r = one(&k, "v8-delete");
    assert_request(
        r,
        "POST",
        "/api/data-privacy-deletion-jobs",
        "application/vnd.api+json",
    );
    assert_eq!(
        r.body,
        json!({"data": {"type": "data-privacy-deletion-job", "attributes": {"profile": {"data": {"type": "profile",
            "attributes": {"email": "ada@new.example"}}}}}})
    );

    // Braze: /users/track per change, /users/delete for the deletion request.
    let b = requests(&vendors["braze"], 9, "braze").await;
    for r in &b {
        assert_eq!(r.headers["authorization"], "Bearer braze-rest-key");
    }
    let r = one(&b, "v1-created");
    assert_request(r, "POST", "/users/track", "application/json");
    assert_eq!(
        r.body,
        json!({"attributes": [{"external_id": "42", "email": "Ada.Lovelace@Example.com", "phone": "+447700900123",
            "first_name": "Ada", "last_name": "Lovelace", "email_subscribe": "opted_in",
            "subscription_groups": [{"subscription_group_id": "sg-0001", "subscription_state": "subscribed"}],
            "tier": "silver"}]})
    );
    assert_eq!(
        one(&b, "v4-address").body,
        json!({"attributes": [{"external_id": "42", "home_city": "London", "country": "GB", "email_subscribe": "opted_in",
            "subscription_groups": [{"subscription_group_id": "sg-0001", "subscription_state": "subscribed"}]}]})
    );
    assert_eq!(
        one(&b, "v5-consent").body["attributes"][0]["email_subscribe"],
        "unsubscribed"
    );
    assert_eq!(
        one(&b, "v7-sub").body["attributes"][0]["subscription_status"],
        "cancelled"
    );
    let r = one(&b, "v8-delete");
    assert_request(r, "POST", "/users/delete", "application/json");
    assert_eq!(r.body, json!({"external_ids": ["42"]}));

    // Iterable: users/update, then delete by userId.
    let it = requests(&vendors["iterable"], 9, "iterable").await;
    for r in &it {
        assert_eq!(r.headers["api-key"], "iterable-server-key");
    }
    let r = one(&it, "v1-created");
    assert_request(r, "POST", "/api/users/update", "application/json");
    assert_eq!(
        r.body,
        json!({"email": "Ada.Lovelace@Example.com", "userId": "42", "preferUserId": true, "mergeNestedObjects": true,
            "dataFields": {"firstName": "Ada", "lastName": "Lovelace", "phoneNumber": "+447700900123", "tier": "silver",
                "consent": {"email": "granted", "sms": "granted", "ads": "granted"}}})
    );
    let r = one(&it, "v8-delete");
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.raw_body.len()),
        ("DELETE", "/api/users/byUserId/42", 0)
    );

    // Customer.io Track API: identify (PUT), track event, suppress.
    let cio = requests(&vendors["customerio"], 9, "customerio").await;
    for r in &cio {
        assert_eq!(
            r.headers["authorization"],
            basic("site-0001", "cio-track-key")
        );
    }
    let r = one(&cio, "v1-created");
    assert_request(r, "PUT", "/api/v1/customers/42", "application/json");
    assert_eq!(
        r.body,
        json!({"email": "Ada.Lovelace@Example.com", "phone": "+447700900123", "first_name": "Ada",
            "last_name": "Lovelace", "tier": "silver", "unsubscribed": false})
    );
    assert_eq!(
        one(&cio, "v5-consent").body,
        json!({"email": "ada@new.example", "phone": "+447700900456", "unsubscribed": true})
    );
    let r = one(&cio, "v7-sub");
    assert_request(r, "POST", "/api/v1/customers/42/events", "application/json");
    assert_eq!(
        r.body,
        json!({"name": "subscription_cancelled", "timestamp": 1_796_032_800,
            "data": {"plan": "gold", "reason": "moving", "subscription_status": "cancelled"}})
    );
    let r = one(&cio, "v8-delete");
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.raw_body.len()),
        ("POST", "/api/v1/customers/42/suppress", 0)
    );

    // HubSpot: batch upsert with one input, GDPR delete.
    let hs = requests(&vendors["hubspot"], 9, "hubspot").await;
    for r in &hs {
        assert_eq!(r.headers["authorization"], "Bearer pat-na1-hubspot");
    }
    let r = one(&hs, "v1-created");
    assert_request(
        r,
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        "application/json",
    );
    assert_eq!(
        r.body,
        json!({"inputs": [{"idProperty": "switchyard_id", "id": "42", "properties": {"email": "Ada.Lovelace@Example.com",
            "firstname": "Ada", "lastname": "Lovelace", "phone": "+447700900123", "switchyard_id": "42"}}]})
    );
    assert_eq!(
        one(&hs, "v4-address").body["inputs"][0]["properties"],
        json!({"address": "12 St James's Square", "city": "London", "zip": "SW1Y 4LB", "country": "GB",
            "switchyard_id": "42"})
    );
    let r = one(&hs, "v8-delete");
    assert_request(
        r,
        "POST",
        "/crm/v3/objects/contacts/gdpr-delete",
        "application/json",
    );
    assert_eq!(
        r.body,
        json!({"objectId": "42", "idProperty": "switchyard_id"})
    );

    // Twilio: only the two events with a template and SMS consent are texted;
    // the other seven are dropped by the module, each with its reason.
    let tw = requests(&vendors["twilio"], 2, "twilio").await;
    let path = format!("/2010-04-01/Accounts/{sid}/Messages.json");
    for r in &tw {
        assert_request(r, "POST", &path, "application/x-www-form-urlencoded");
        assert_eq!(r.headers["authorization"], basic(sid, "twilio-auth-token"));
    }
    assert_eq!(
        std::str::from_utf8(&one(&tw, "v1-created").raw_body).unwrap(),
        "To=%2B447700900123&From=%2B15017122661&Body=Welcome+to+Acme%2C+Ada%21"
    );
    assert_eq!(
        std::str::from_utf8(&one(&tw, "v6-tier").raw_body).unwrap(),
        "To=%2B447700900456&From=%2B15017122661&Body=You+are+now+gold."
    );
    eventually(
        Duration::from_secs(20),
        "twilio's drops are counted",
        || async {
            (admin_status(&router).await["consumers"]["twilio"]["filtered"]["twilio_sms"] == 7)
                .then_some(())
        },
    )
    .await;
    let logs = router.logs();
    assert!(
        logs.contains("twilio-sms: dropped event v9-nosms (customer.banner-a.created): no SMS consent (consent.sms = denied)"),
        "the consent drop is logged with its reason"
    );

    // Generic webhook: Standard Webhooks payload, signed by the router.
    let hook = requests(&vendors["hook"], 9, "hook").await;
    for r in &hook {
        assert_eq!(r.headers["webhook-id"], r.key);
        let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 300);
        let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_KEY).unwrap();
        mac.update(format!("{}.{ts}.", r.key).as_bytes());
        mac.update(&r.raw_body);
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(r.headers["webhook-signature"], expected, "{}", r.key);
    }
    let r = one(&hook, "v2-email");
    assert_request(r, "POST", "/", "application/json");
    assert_eq!(
        r.body,
        json!({"type": "customer.banner-a.email_changed", "timestamp": OCCURRED, "data": {
            "id": "v2-email", "account_id": "42", "source": "web", "op": "update", "key": null,
            "before": {"email": "Ada.Lovelace@Example.com"},
            "after": {"email": "ada@new.example", "phone": "+44 7700 900123", "first_name": "Ada",
                      "last_name": "Lovelace", "tier": "silver"},
            "data": null, "changed": ["email", "first_name", "last_name", "phone", "tier"],
            "consent": {"email": "granted", "sms": "granted", "ads": "granted"}, "attributes": {}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ad_audiences_get_normalised_sha256_identifiers_added_and_removed_by_consent() {
    // Known vectors (computed outside this code base):
    let email = "e814ff3dc480a94c7ce9334062ec4733c75a002f4bcec0197f62ffea64059e2f"; // ada.lovelace@example.com
    let meta_phone = "033134b911b137918338415ee3d20a064b24773d36a3b02e8b99fdd3fcd6b4cd"; // 447700900123
    let google_phone = "a8acc3a90a7b4e4dc65e93db9240ed26523050ef754d63b75b5161de76781436"; // +447700900123
    assert_eq!(sha256_hex("ada.lovelace@example.com"), email);

    let redis = RedisServer::start();
    let meta = Vendor::start().await;
    let google = Vendor::start().await;
    let cfg = base_config(&redis.url())
        + &consumer(
            "meta",
            &meta.url(),
            "meta_audiences",
            r#"audience_id = "23850000000000001""#,
            r#"auth = { type = "bearer", token = "meta-system-user-token" }"#,
        )
        + &consumer(
            "google",
            &google.url(),
            "google_customer_match",
            r#"customer_id = "123-456-7890", job_id = "5550001""#,
            r#"auth = { type = "bearer", token = "ya29.oauth-access-token"}
headers = { "developer-token" = "dev-token-0123", "login-customer-id" = "1112223333" }"#,
        );
    let router = Router::start(&cfg);
    post(
        &router,
        json!([
            {"id": "a1-add", "topic": "customer.banner-a.created", "account_id": "42", "op": "insert",
             "after": {"email": "  Ada.Lovelace@EXAMPLE.com ", "phone": "+44 (7700) 900-123"}, "consent": {"ads": "granted"}},
            {"id": "a2-denied", "topic": "customer.banner-a.consent_changed", "account_id": "42",
             "data": {"email": "ada.lovelace@example.com"}, "consent": {"ads": "denied"}},
            {"id": "a3-unknown", "topic": "customer.banner-a.created", "account_id": "43",
             "data": {"email": "bob@example.com"}, "consent": {"ads": "unknown"}},
            {"id": "a4-delete", "topic": "customer.banner-a.deletion_requested", "account_id": "44",
             "data": {"phone": "0044 7700 900123"}},
        ]),
    )
    .await;

    // Meta: POST adds, DELETE removes, {"payload": {"schema", "data"}}.
    let m = requests(&meta, 3, "meta").await;
    for r in &m {
        assert_eq!(r.headers["authorization"], "Bearer meta-system-user-token");
        assert_eq!(r.path, "/23850000000000001/users");
    }
    let r = one(&m, "a1-add");
    assert_request(r, "POST", "/23850000000000001/users", "application/json");
    assert_eq!(
        r.body,
        json!({"payload": {"schema": ["EMAIL", "PHONE"], "data": [[email, meta_phone]]}})
    );
    let r = one(&m, "a2-denied");
    assert_request(r, "DELETE", "/23850000000000001/users", "application/json");
    assert_eq!(
        r.body,
        json!({"payload": {"schema": ["EMAIL"], "data": [[email]]}})
    );
    let r = one(&m, "a4-delete");
    assert_eq!(r.method, "DELETE");
    assert_eq!(
        r.body,
        json!({"payload": {"schema": ["PHONE"], "data": [[meta_phone]]}})
    );

    // Google: addOperations on the configured job, create / remove.
    let g = requests(&google, 3, "google").await;
    let path = "/customers/1234567890/offlineUserDataJobs/5550001:addOperations";
    for r in &g {
        assert_request(r, "POST", path, "application/json");
        assert_eq!(r.headers["authorization"], "Bearer ya29.oauth-access-token");
        assert_eq!(r.headers["developer-token"], "dev-token-0123");
        assert_eq!(r.headers["login-customer-id"], "1112223333");
        assert_eq!(r.body["enablePartialFailure"], true);
    }
    assert_eq!(
        one(&g, "a1-add").body["operations"],
        json!([{"create": {"userIdentifiers": [{"hashedEmail": email}, {"hashedPhoneNumber": google_phone}]}}])
    );
    assert_eq!(
        one(&g, "a2-denied").body["operations"],
        json!([{"remove": {"userIdentifiers": [{"hashedEmail": email}]}}])
    );
    assert_eq!(
        one(&g, "a4-delete").body["operations"],
        json!([{"remove": {"userIdentifiers": [{"hashedPhoneNumber": google_phone}]}}])
    );

    // The event without ads consent reached neither.
    let st = admin_status(&router).await;
    assert_eq!(
        st["consumers"]["meta"]["filtered"]["meta_audiences"], 1,
        "{st}"
    );
    assert_eq!(
        st["consumers"]["google"]["filtered"]["google_customer_match"], 1,
        "{st}"
    );
    assert!(router
        .logs()
        .contains("skipped event a3-unknown (customer.banner-a.created): no ads consent (consent.ads = unknown)"));
}

/// The commented vendor consumers of the reference config
/// (`config/switchyard.toml`, between the `vendor destinations` markers) are
/// valid: uncommented, `switchyard check` accepts them, which also loads each
/// module and runs its `init` on the example's config.
#[test]
fn reference_config_vendor_examples_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("config/switchyard.toml")).unwrap();
    let mut block = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("# --- vendor destinations: begin") {
            inside = true;
            continue;
        }
        if line.starts_with("# --- vendor destinations: end") {
            break;
        }
        if inside {
            let l = line
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("an uncommented line inside the vendor block: {line:?}"));
            block.push_str(l.strip_prefix(' ').unwrap_or(l));
            block.push('\n');
        }
    }
    let modules = block.matches("[[consumers.").count();
    assert!(modules >= 9, "{modules} vendor consumers in:\n{block}");
    // Module paths are relative to config/; the test's config lives elsewhere.
    let transforms = std::env::var_os("SWITCHYARD_TRANSFORMS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("transforms/target/wasm32-wasip2/release"));
    let block = block.replace(
        "../transforms/target/wasm32-wasip2/release",
        &transforms.display().to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, base_config("redis://127.0.0.1:9/") + "\n" + &block).unwrap();
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["check", "--config"]).arg(&path);
    // Secrets come from the environment; `${VAR:-default}` keeps its default.
    for v in block.split("${").skip(1) {
        let var = v.split('}').next().unwrap();
        if !var.contains(":-") {
            cmd.env(var, format!("test-value-for-{var}"));
        }
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{block}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
