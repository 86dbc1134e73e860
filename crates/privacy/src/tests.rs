use std::collections::BTreeMap;

use serde_json::json;
use switchyard_core::event::{ConsentState, Event, Op};

use super::*;

const CFG: &str = r#"
default_jurisdiction = "US"
source_jurisdictions = { web_eu = "EU" }

[classes."contact.email"]
regimes = ["GDPR", "CCPA"]
normalize = "email"
fields = [{ topics = "customer.*", path = "data.email" }, { table = "members", column = "email" }]

[classes."contact.phone"]
regimes = ["GDPR", "CCPA"]
normalize = "phone"
fields = [{ path = "data.phone" }, { path = "data.contacts.*.phone" }]

[classes.address]
fields = [{ path = "data.address" }, { path = "attributes.zip" }]

[jurisdictions.EU]
unknown_consent = "opt_in"
requires = { "contact.email" = "email" }

[jurisdictions.US]
unknown_consent = "opt_out"

[jurisdictions.US-CA]
unknown_consent = "opt_out"
"#;

fn cfg() -> PrivacyConfig {
    toml::from_str(CFG).unwrap()
}

fn privacy() -> Privacy {
    let c = cfg();
    let mut errors = Vec::new();
    c.validate("privacy", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    Privacy::new(&c).unwrap()
}

fn event(topic: &str, data: serde_json::Value) -> Event {
    let now = chrono::Utc::now();
    Event {
        id: "e1".into(),
        topic: topic.into(),
        source: "web".into(),
        op: Op::Event,
        account_id: "a1".into(),
        key: None,
        before: None,
        after: None,
        data: Some(data),
        changed: vec![],
        occurred_at: now,
        ingested_at: now,
        commit: None,
        trace: None,
        consent: BTreeMap::new(),
        attributes: BTreeMap::new(),
    }
}

fn policy(purpose: Option<&str>, allow: &[&str], action: Action) -> PolicyConfig {
    PolicyConfig {
        purpose: purpose.map(String::from),
        allow: allow.iter().map(|s| s.to_string()).collect(),
        action,
        unclassified: Unclassified::Pass,
    }
}

fn consent(pairs: &[(&str, ConsentState)]) -> BTreeMap<String, ConsentState> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn delivered(e: &Evaluation) -> &Event {
    match &e.decision {
        Decision::Deliver(ev) => ev,
        other => panic!("expected delivery, got {other:?}"),
    }
}

#[test]
fn a_class_not_granted_is_dropped_and_named_without_its_value() {
    let p = privacy();
    let ev = event(
        "customer.email_changed",
        json!({"email": "Ann@Example.com", "phone": "+1 555 0100", "plan": "gold"}),
    );
    let pol = policy(Some("sms"), &["contact.phone"], Action::Drop);
    let e = p.evaluate(&ev, &consent(&[("sms", ConsentState::Granted)]), &pol);
    let out = delivered(&e);
    assert_eq!(
        out.data,
        Some(json!({"phone": "+1 555 0100", "plan": "gold"}))
    );
    assert_eq!(e.changes.len(), 1);
    assert_eq!(e.changes[0].field, "data.email");
    assert_eq!(e.changes[0].class.as_deref(), Some("contact.email"));
    assert_eq!(e.changes[0].action, "drop");
    assert!(e.changes[0].rule.contains("policy.allow"));
    let text = format!("{:?} {:?}", e.changes, e.consent);
    assert!(!text.contains("Example.com") && !text.contains("555"));
}

#[test]
fn hash_normalises_email_and_phone_as_ad_platforms_require() {
    let p = privacy();
    let ev = event(
        "customer.updated",
        json!({"email": "  Ann@Example.COM ", "phone": "+1 (555) 010-0"}),
    );
    let e = p.evaluate(&ev, &BTreeMap::new(), &policy(None, &[], Action::Hash));
    let out = delivered(&e).data.clone().unwrap();
    // Computed independently (sha256sum).
    assert_eq!(
        out["email"],
        json!("71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476")
    );
    assert_eq!(
        out["phone"],
        json!("602cd7fbbe41688e2d90224bcac362db2f1ff2e2ba7487d8585c9ce226cb6d00")
    );
    assert_eq!(normalize("+1 (555) 010-0", Normalize::Phone), "+15550100");
    assert_eq!(normalize(" A@B.C ", Normalize::Email), "a@b.c");
    assert_eq!(e.changes.len(), 2);
    assert!(e.changes.iter().all(|c| c.action == "hash"));
}

#[test]
fn mask_replaces_the_value_and_wildcards_reach_array_elements() {
    let p = privacy();
    let ev = event(
        "customer.updated",
        json!({"contacts": [{"phone": "+1 555 0101", "kind": "home"}, {"phone": "+1 555 0102"}]}),
    );
    let e = p.evaluate(&ev, &BTreeMap::new(), &policy(None, &[], Action::Mask));
    let out = delivered(&e).data.clone().unwrap();
    assert_eq!(
        out,
        json!({"contacts": [{"phone": "***", "kind": "home"}, {"phone": "***"}]})
    );
    let fields: Vec<_> = e.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["data.contacts.0.phone", "data.contacts.1.phone"]);
}

#[test]
fn topic_globs_limit_a_rule_and_cdc_columns_match_by_table() {
    let p = privacy();
    // data.email is classified for customer.* only.
    let ev = event("order.placed", json!({"email": "x@y.z"}));
    let e = p.evaluate(&ev, &BTreeMap::new(), &policy(None, &[], Action::Drop));
    assert_eq!(delivered(&e).data, Some(json!({"email": "x@y.z"})));
    // A CDC row of public.members: the column in before, after and key.
    let mut ev = event("cdc.members.update", json!(null));
    ev.data = None;
    ev.before = Some(json!({"id": 1, "email": "old@y.z"}));
    ev.after = Some(json!({"id": 1, "email": "new@y.z"}));
    ev.attributes
        .insert("table".into(), "public.members".into());
    let e = p.evaluate(&ev, &BTreeMap::new(), &policy(None, &[], Action::Drop));
    let out = delivered(&e);
    assert_eq!(out.before, Some(json!({"id": 1})));
    assert_eq!(out.after, Some(json!({"id": 1})));
    // Another table with the same column is not classified by the rule.
    ev.attributes.insert("table".into(), "public.orders".into());
    let e = p.evaluate(&ev, &BTreeMap::new(), &policy(None, &[], Action::Drop));
    assert!(e.changes.is_empty());
}

#[test]
fn consent_denied_filters_with_the_purpose_as_rule() {
    let p = privacy();
    let ev = event("customer.updated", json!({"plan": "gold"}));
    let pol = policy(Some("sms"), &[], Action::Drop);
    let e = p.evaluate(&ev, &consent(&[("sms", ConsentState::Denied)]), &pol);
    assert_eq!(
        e.decision,
        Decision::Filtered {
            rule: "consent:sms".into()
        }
    );
    assert!(!e.consent.allowed);
    assert_eq!(e.consent.state, "denied");
    assert!(e.consent.reason.contains("denied"), "{}", e.consent.reason);
    let e = p.evaluate(&ev, &consent(&[("sms", ConsentState::Granted)]), &pol);
    assert!(matches!(e.decision, Decision::Deliver(_)));
}

#[test]
fn unknown_consent_reads_by_jurisdiction_eu_opt_in_california_opt_out() {
    let p = privacy();
    let pol = policy(Some("ads"), &[], Action::Drop);
    let mut ev = event("customer.updated", json!({"plan": "gold"}));
    ev.attributes.insert("jurisdiction".into(), "EU".into());
    let e = p.evaluate(&ev, &BTreeMap::new(), &pol);
    assert!(matches!(e.decision, Decision::Filtered { .. }));
    assert_eq!(e.jurisdiction.as_deref(), Some("EU"));
    assert!(e.consent.reason.contains("opt-in"), "{}", e.consent.reason);
    ev.attributes.insert("jurisdiction".into(), "US-CA".into());
    let e = p.evaluate(&ev, &BTreeMap::new(), &pol);
    assert!(matches!(e.decision, Decision::Deliver(_)));
    assert!(e.consent.reason.contains("opt-out"), "{}", e.consent.reason);
    // Explicitly denied stays denied in an opt-out jurisdiction.
    let e = p.evaluate(&ev, &consent(&[("ads", ConsentState::Denied)]), &pol);
    assert!(matches!(e.decision, Decision::Filtered { .. }));
}

#[test]
fn jurisdiction_falls_back_to_the_source_then_the_default() {
    let p = privacy();
    let mut ev = event("customer.updated", json!({}));
    assert_eq!(p.jurisdiction(&ev).as_deref(), Some("US"));
    ev.source = "web_eu".into();
    assert_eq!(p.jurisdiction(&ev).as_deref(), Some("EU"));
    ev.attributes.insert("jurisdiction".into(), "US-CA".into());
    assert_eq!(p.jurisdiction(&ev).as_deref(), Some("US-CA"));
    // An undeclared name does not count.
    ev.attributes.insert("jurisdiction".into(), "Mars".into());
    assert_eq!(p.jurisdiction(&ev).as_deref(), Some("EU"));
    // Without any jurisdiction, unknown consent reads as denied.
    let mut c = cfg();
    c.default_jurisdiction = None;
    let p = Privacy::new(&c).unwrap();
    let ev = event("customer.updated", json!({}));
    let e = p.evaluate(
        &ev,
        &BTreeMap::new(),
        &policy(Some("ads"), &[], Action::Drop),
    );
    assert!(matches!(e.decision, Decision::Filtered { .. }));
}

#[test]
fn a_jurisdiction_ties_a_granted_class_to_a_purpose() {
    let p = privacy();
    let mut ev = event("customer.updated", json!({"email": "a@b.c"}));
    ev.attributes.insert("jurisdiction".into(), "EU".into());
    // The crm may receive emails and serves no purpose, but in the EU an
    // email needs consent to `email`.
    let pol = policy(None, &["contact.email"], Action::Hash);
    let e = p.evaluate(&ev, &BTreeMap::new(), &pol);
    let out = delivered(&e).data.clone().unwrap();
    assert_ne!(out["email"], json!("a@b.c"));
    assert!(e.changes[0].rule.contains("jurisdictions.EU.requires"));
    let e = p.evaluate(&ev, &consent(&[("email", ConsentState::Granted)]), &pol);
    assert_eq!(delivered(&e).data, Some(json!({"email": "a@b.c"})));
    assert!(e.changes.is_empty());
}

#[test]
fn deletion_and_consent_change_events_pass_consent_but_not_the_field_policy() {
    let p = privacy();
    let pol = policy(Some("sms"), &["contact.phone"], Action::Drop);
    let denied = consent(&[("sms", ConsentState::Denied)]);
    let ev = event(
        "customer.deletion_requested",
        json!({"email": "a@b.c", "phone": "+15550100"}),
    );
    let e = p.evaluate(&ev, &denied, &pol);
    assert_eq!(delivered(&e).data, Some(json!({"phone": "+15550100"})));
    assert!(e.consent.reason.contains("deletion"));
    let ev = event(
        "customer.consent_changed",
        json!({"purpose": "sms", "state": "denied"}),
    );
    let e = p.evaluate(&ev, &denied, &pol);
    assert!(matches!(e.decision, Decision::Deliver(_)));
    assert_eq!(p.kind(&ev), Kind::ConsentChange);
}

#[test]
fn consent_updates_come_from_the_map_and_from_consent_change_bodies() {
    let p = privacy();
    let mut ev = event(
        "customer.consent_changed",
        json!({"purpose": "sms", "state": "denied"}),
    );
    ev.consent.insert("email".into(), ConsentState::Granted);
    let u = p.consent_updates(&ev);
    assert_eq!(
        u,
        consent(&[
            ("email", ConsentState::Granted),
            ("sms", ConsentState::Denied)
        ])
    );
    let mut ev = event("customer.consent_changed", json!(null));
    ev.data = None;
    ev.after = Some(json!({"consent": {"ads": "granted", "push": "bogus"}}));
    assert_eq!(
        p.consent_updates(&ev),
        consent(&[("ads", ConsentState::Granted)])
    );
    // Other topics: only the event's own map.
    let ev = event(
        "customer.updated",
        json!({"purpose": "sms", "state": "denied"}),
    );
    assert!(p.consent_updates(&ev).is_empty());
}

#[test]
fn unclassified_drop_keeps_only_classified_granted_fields() {
    let p = privacy();
    let mut pol = policy(None, &["contact.email"], Action::Drop);
    pol.unclassified = Unclassified::Drop;
    let mut ev = event(
        "customer.updated",
        json!({"email": "a@b.c", "plan": "gold"}),
    );
    ev.attributes.insert("zip".into(), "94110".into());
    let e = p.evaluate(&ev, &BTreeMap::new(), &pol);
    let out = delivered(&e);
    assert_eq!(out.data, Some(json!({"email": "a@b.c"})));
    // attributes.zip is classified (address) and not granted.
    assert!(!out.attributes.contains_key("zip"));
    let fields: Vec<_> = e.changes.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["attributes.zip", "data.plan"]);
    assert_eq!(e.changes[1].class, None);
}

#[test]
fn policy_version_changes_with_the_policy_and_the_config() {
    let p = privacy();
    let a = policy(Some("sms"), &[], Action::Drop);
    let b = policy(Some("sms"), &[], Action::Hash);
    assert_ne!(p.policy_version(Some(&a)), p.policy_version(Some(&b)));
    assert_eq!(p.policy_version(Some(&a)), p.policy_version(Some(&a)));
    let mut c = cfg();
    c.default_jurisdiction = Some("EU".into());
    let q = Privacy::new(&c).unwrap();
    assert_ne!(p.policy_version(Some(&a)), q.policy_version(Some(&a)));
}

#[test]
fn validation_names_every_problem_by_path() {
    let c: PrivacyConfig = toml::from_str(
        r#"
default_jurisdiction = "XX"
consent_topic = "bad topic"
[classes.a]
fields = [{ path = "email" }, { table = "t" }, { topics = "[", path = "data.x" }]
[classes.b]
fields = []
[jurisdictions.EU]
unknown_consent = "opt_in"
requires = { nope = "email" }
"#,
    )
    .unwrap();
    let mut errors = Vec::new();
    c.validate("privacy", &mut errors);
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "privacy.classes.\"a\".fields[0].path",
        "privacy.classes.\"a\".fields[1]",
        "privacy.classes.\"a\".fields[2].topics",
        "privacy.classes.\"b\".fields",
        "privacy.jurisdictions.EU.requires.\"nope\"",
        "privacy.default_jurisdiction",
        "privacy.consent_topic",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let pol = policy(Some(""), &["contact.email", "nope"], Action::Drop);
    let mut errors = Vec::new();
    pol.validate("consumers.sms.policy", &cfg(), &mut errors);
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "consumers.sms.policy.purpose",
            "consumers.sms.policy.allow[1]"
        ]
    );
    // Unknown keys are refused.
    assert!(toml::from_str::<PolicyConfig>("purpose = \"x\"\nallowed = []").is_err());
}
