//! The privacy stage of an account task: before the module chain, for every
//! consumer with a policy, in the account's log order.
//!
//! 1. The event's consent changes (its own `consent` map; the body of a
//!    `privacy.consent_topic` event) are applied to this consumer's consent
//!    view of the account in Redis, and the whole view read back — so every
//!    later event of the account sees them, including ones already in the
//!    log behind a revocation, and no earlier one does.
//! 2. [`switchyard_privacy::Privacy::evaluate`] decides: filtered (by the
//!    consent rule, counted and audited, never dead-lettered) or delivered
//!    with every classified field the policy does not grant dropped, masked
//!    or hashed. No route or module can skip this: `deliver` runs it before
//!    anything else sees the event.
//! 3. After the outcome, one audit record (ids and field names only).
//!
//! Right-to-deletion: a `privacy.deletion_topic` event records the account's
//! tombstone (the request's source time) and goes to every consumer with a
//! policy whatever the consent; each consumer's delivery of it is recorded;
//! once every one has delivered it, the router purges its own copies
//! (`switchyard_store::privacy::purge_account`). From the tombstone on, an
//! event of the account whose source time is before the request (a late CDC
//! change, a rewind, a backfill) is filtered as `deleted` and audited.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::account::Outcome;
use super::ConsumerCtx;
use switchyard_core::event::Event;
use switchyard_privacy::{Decision, Kind};
use switchyard_store::consumer::Origin;
use switchyard_store::consumer::PartitionStore;
use switchyard_store::privacy::{
    audit, audit_key, consent_and_tombstone, consent_key, deletion_done, deletion_key,
    purge_account, request_deletion, AuditRecord,
};

/// What the stage decided, for the audit record.
#[derive(Default)]
pub(super) struct Note {
    pub policy: String,
    pub jurisdiction: String,
    pub consent: String,
    pub fields: Vec<String>,
}

pub(super) enum Stage {
    Pass(Event),
    Filtered(String),
}

/// Whether a consumer's account tasks must see `ev` although its topics do
/// not match: consent changes (to keep its consent view in order) and
/// deletion requests (they go to every consumer with a policy).
pub(super) fn must_see(ctx: &ConsumerCtx, ev: &Event) -> bool {
    ctx.cfg.policy.is_some() && (ctx.privacy.kind(ev) != Kind::Ordinary || !ev.consent.is_empty())
}

/// Run the stage; `None` when cancelled while Redis was unreachable.
pub(super) async fn stage(
    ctx: &ConsumerCtx,
    store: &mut PartitionStore,
    ev: &Event,
    cancel: &CancellationToken,
    note: &mut Note,
) -> Option<Stage> {
    let Some(policy) = &ctx.cfg.policy else {
        return Some(Stage::Pass(ev.clone()));
    };
    let updates = ctx.privacy.consent_updates(ev);
    let key = consent_key(&store.keys.ns, &ctx.name, store.p, &ev.account_id);
    let del = deletion_key(&store.keys.ns, store.p, &ev.account_id);
    let kind = ctx.privacy.kind(ev);
    let requested_at = ev
        .occurred_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut delay = Duration::from_millis(50);
    let (consent, tomb) = loop {
        let r = async {
            if kind == Kind::Deletion {
                request_deletion(&mut store.conn, &del, &requested_at, &ev.id).await?;
            }
            consent_and_tombstone(&mut store.conn, &key, &del, &updates).await
        }
        .await;
        match r {
            Ok(c) => break c,
            Err(e) => {
                if cancel.is_cancelled() {
                    return None;
                }
                tracing::warn!(consumer = %ctx.name, error = %e, "reading the consent store failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    };
    let tomb = tomb.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok());
    if let (Some(t), false) = (tomb, kind == Kind::Deletion) {
        if ev.occurred_at < t {
            note.policy = ctx.policy_version.clone();
            note.consent = format!(
                "the account's deletion was requested for source time {}; this event's source time is earlier",
                t.to_rfc3339()
            );
            tracing::debug!(consumer = %ctx.name, event = %ev.id, "event of a deleted account filtered");
            return Some(Stage::Filtered("deleted".into()));
        }
    }
    if !ctx.topics.is_match(&ev.topic) && kind != Kind::Deletion {
        // Seen only for its consent changes.
        return Some(Stage::Filtered("topics".into()));
    }
    let eval = ctx.privacy.evaluate(ev, &consent, policy);
    note.policy = ctx.policy_version.clone();
    note.jurisdiction = eval.jurisdiction.clone().unwrap_or_default();
    note.consent = eval.consent.reason.clone();
    note.fields = eval
        .changes
        .iter()
        .map(|c| format!("{}:{}", c.field, c.action))
        .collect();
    Some(match eval.decision {
        Decision::Deliver(e) => {
            if !eval.changes.is_empty() {
                tracing::debug!(consumer = %ctx.name, event = %ev.id, fields = ?note.fields, "privacy policy changed fields");
            }
            Stage::Pass(e)
        }
        Decision::Filtered { rule } => {
            tracing::debug!(consumer = %ctx.name, event = %ev.id, %rule, reason = %eval.consent.reason, "privacy policy filtered the event");
            Stage::Filtered(rule)
        }
    })
}

/// Record an outcome in the account's audit trail (consumers with a policy,
/// or every consumer once `[privacy]` declares anything), and for a
/// deletion request this consumer's completion (then the purge, once every
/// consumer with a policy has delivered it). Best effort: a failure is
/// logged, the delivery stands.
pub(super) async fn record(
    ctx: &ConsumerCtx,
    store: &mut PartitionStore,
    origin: &Origin,
    ev: &Event,
    outcome: &Outcome,
    note: &Note,
) {
    if !ctx.audited {
        return;
    }
    if let (Outcome::Delivered { .. }, true, Some(_)) = (
        outcome,
        ctx.privacy.kind(ev) == Kind::Deletion,
        &ctx.cfg.policy,
    ) {
        completed(ctx, store, origin, ev).await;
    }
    let (what, rule, status) = match outcome {
        Outcome::Delivered { skipped: true } => ("duplicate", String::new(), None),
        Outcome::Delivered { skipped: false } => ("delivered", String::new(), None),
        Outcome::Filtered(rule) if rule == "topics" => return,
        Outcome::Filtered(rule) => ("filtered", rule.clone(), None),
        Outcome::Dead(dl) => ("dead_lettered", dl.kind.to_string(), dl.last_status),
        Outcome::Cancelled | Outcome::NothingDeferred => return,
    };
    let rec = AuditRecord {
        id: String::new(),
        event: ev.id.clone(),
        consumer: ctx.name.clone(),
        topic: ev.topic.clone(),
        outcome: what.into(),
        rule,
        status,
        modules: ctx.module_versions(),
        policy: if note.policy.is_empty() {
            ctx.policy_version.clone()
        } else {
            note.policy.clone()
        },
        jurisdiction: note.jurisdiction.clone(),
        consent: note.consent.clone(),
        fields: note.fields.clone(),
        time: chrono::Utc::now().to_rfc3339(),
    };
    let key = audit_key(&store.keys.ns, store.p, &ev.account_id);
    let cfg = &ctx.privacy.cfg;
    if let Err(e) = audit(
        &mut store.conn,
        &key,
        &rec,
        cfg.audit_max_per_account,
        cfg.audit_retention,
    )
    .await
    {
        tracing::warn!(consumer = %ctx.name, event = %ev.id, error = %e, "writing the audit record failed");
    }
}

/// This consumer delivered `ev`, a deletion request: record it; when every
/// consumer with a policy has, erase the router's copies of the account.
async fn completed(ctx: &ConsumerCtx, store: &mut PartitionStore, origin: &Origin, ev: &Event) {
    let key = deletion_key(&store.keys.ns, store.p, &ev.account_id);
    let what = format!("{} delivered", chrono::Utc::now().to_rfc3339());
    let all = match deletion_done(
        &mut store.conn,
        &key,
        &ctx.name,
        &what,
        &ctx.policy_consumers,
    )
    .await
    {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(consumer = %ctx.name, event = %ev.id, error = %e, "recording a deletion's completion failed");
            return;
        }
    };
    if !all {
        return;
    }
    // The request's own stream id: log entries of the account up to it go.
    let sid = match origin {
        Origin::Stream(sid) => sid.clone(),
        Origin::Deferred(raw) => String::from_utf8_lossy(raw)
            .split('\n')
            .next()
            .unwrap_or_default()
            .to_string(),
    };
    match purge_account(
        &mut store.conn,
        &store.keys.ns,
        store.p,
        &ev.account_id,
        &sid,
        &ctx.policy_consumers,
    )
    .await
    {
        Ok(n) => {
            tracing::info!(event = %ev.id, log = n.log, dlq = n.dlq, deferred = n.deferred, "deletion request delivered to every consumer; the account's copies were purged")
        }
        Err(e) => {
            tracing::warn!(event = %ev.id, error = %e, "purging a deleted account's copies failed")
        }
    }
}
