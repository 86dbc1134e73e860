//! `switchyard policy test` (what a consumer would receive of one event,
//! each rule that removed or changed a field, the consent decision and its
//! reason) and `switchyard audit` (where each event of an account went).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use switchyard_config::Config;
use switchyard_core::event::ConsentState;
use switchyard_privacy::{Decision, Privacy};
use switchyard_wasm_host::{print_outcome, run_chain_once_cached, ChainOutcome, OutRequest};

pub struct PolicyTestArgs {
    pub config: PathBuf,
    pub consumer: String,
    pub event: PathBuf,
    /// The account's stored consent, `purpose=state` (the event's own map applies on top).
    pub consent: Vec<String>,
}

/// Run the policy stage (and then the consumer's chain) on one event.
/// `Ok(true)`: the consumer would receive something.
pub fn policy_test(args: PolicyTestArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let consumer = config.consumers.get(&args.consumer).with_context(|| {
        format!(
            "no consumer `{}` in {}",
            args.consumer,
            args.config.display()
        )
    })?;
    let privacy = Privacy::new(&config.privacy).context("privacy")?;
    let text = std::fs::read_to_string(&args.event)
        .with_context(|| format!("reading {}", args.event.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.event.display()))?;
    let source = v
        .get("source")
        .and_then(|s| s.as_str())
        .unwrap_or("cli")
        .to_string();
    let ev = switchyard_sources::http::to_event("event", v, &source, None, chrono::Utc::now())
        .map_err(|r| anyhow::anyhow!("{}: {}", r.field.unwrap_or_default(), r.message))?;
    let mut consent: BTreeMap<String, ConsentState> = BTreeMap::new();
    for c in &args.consent {
        let (k, s) = c
            .split_once('=')
            .with_context(|| format!("--consent `{c}`: expected purpose=granted|denied|unknown"))?;
        let s = ConsentState::parse(s)
            .with_context(|| format!("--consent `{c}`: the state is granted, denied or unknown"))?;
        consent.insert(k.to_string(), s);
    }
    consent.extend(privacy.consent_updates(&ev));

    let Some(policy) = &consumer.policy else {
        writeln!(
            out,
            "consumer {}: no policy; it receives every field",
            args.consumer
        )?;
        let outcome = run(&config, consumer, &ev)?;
        print_outcome(&outcome, out)?;
        return Ok(matches!(outcome, ChainOutcome::Requests(_)));
    };
    let eval = privacy.evaluate(&ev, &consent, policy);
    writeln!(
        out,
        "consumer {} (policy {})",
        args.consumer,
        privacy.policy_version(Some(policy))
    )?;
    writeln!(
        out,
        "jurisdiction: {}",
        eval.jurisdiction.as_deref().unwrap_or("(none)")
    )?;
    writeln!(
        out,
        "consent: purpose {} is {}: {} -> {}",
        eval.consent.purpose.as_deref().unwrap_or("(none)"),
        eval.consent.state,
        eval.consent.reason,
        if eval.consent.allowed {
            "allowed"
        } else {
            "filtered"
        }
    )?;
    for c in &eval.changes {
        writeln!(
            out,
            "field {}: {} ({}; rule {})",
            c.field,
            c.action,
            c.class
                .as_deref()
                .map_or("unclassified".to_string(), |k| format!("class {k}")),
            c.rule
        )?;
    }
    if eval.changes.is_empty() {
        writeln!(out, "fields: none removed or changed")?;
    }
    match eval.decision {
        Decision::Filtered { rule } => {
            writeln!(
                out,
                "decision: filtered by {rule}: the consumer receives nothing"
            )?;
            Ok(false)
        }
        Decision::Deliver(ev) => {
            writeln!(out, "decision: deliver; the consumer receives:")?;
            let outcome = run(&config, consumer, &ev)?;
            print_outcome(&outcome, out)?;
            Ok(matches!(outcome, ChainOutcome::Requests(_)))
        }
    }
}

/// The consumer's chain on `ev`, or the canonical JSON without modules.
fn run(
    config: &Config,
    consumer: &switchyard_config::consumer::ConsumerConfig,
    ev: &switchyard_core::event::Event,
) -> anyhow::Result<ChainOutcome> {
    if consumer.modules.is_empty() {
        return Ok(ChainOutcome::Requests(vec![OutRequest::canonical_json(
            ev, "",
        )]));
    }
    run_chain_once_cached(&consumer.modules, ev, config.transforms.cache_dir())
}

pub struct AuditArgs {
    pub account: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub json: bool,
}

/// Print the account's audit records (oldest first).
pub async fn audit(cfg: &Config, args: AuditArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let log = switchyard_store::Log::connect(&cfg.redis, &cfg.log).await?;
    let mut conn = log.conn().await?;
    let p = log.partition_of(&args.account);
    let key = switchyard_store::privacy::audit_key(&cfg.redis.namespace, p, &args.account);
    let since = args.since.map(|t| t.timestamp_millis().max(0) as u64);
    let recs = switchyard_store::privacy::read_audit(&mut conn, &key, since).await?;
    let dkey = switchyard_store::privacy::deletion_key(&cfg.redis.namespace, p, &args.account);
    let deletion = switchyard_store::privacy::read_deletion(&mut conn, &dkey).await?;
    if args.json {
        for r in &recs {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
        if !deletion.is_empty() {
            writeln!(out, "{}", serde_json::json!({ "deletion": deletion }))?;
        }
        return Ok(());
    }
    if recs.is_empty() {
        writeln!(out, "no audit records for account {}", args.account)?;
    }
    for r in &recs {
        let mut line = format!(
            "{} {} {} -> {}: {}",
            r.time, r.event, r.topic, r.consumer, r.outcome
        );
        if !r.rule.is_empty() {
            line.push_str(&format!(" ({})", r.rule));
        }
        if let Some(s) = r.status {
            line.push_str(&format!(" HTTP {s}"));
        }
        if !r.fields.is_empty() {
            line.push_str(&format!(" fields [{}]", r.fields.join(", ")));
        }
        if !r.policy.is_empty() {
            line.push_str(&format!(" policy {}", r.policy));
        }
        if !r.modules.is_empty() {
            line.push_str(&format!(" modules {}", r.modules));
        }
        writeln!(out, "{line}")?;
    }
    if let Some(at) = deletion.get("requested_at") {
        writeln!(
            out,
            "deletion requested (source time {at}, event {})",
            deletion.get("request").map_or("?", String::as_str)
        )?;
        for (k, v) in &deletion {
            if let Some(c) = k.strip_prefix("done:") {
                writeln!(out, "  consumer {c}: request {v}")?;
            }
        }
        match deletion.get("purged") {
            Some(v) => writeln!(out, "  the router's copies purged: {v}")?,
            None => writeln!(
                out,
                "  the router's copies: not purged yet (waiting for every consumer with a policy)"
            )?,
        }
    }
    Ok(())
}
