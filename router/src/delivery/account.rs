//! An account task: one event of one account at a time — the dedup check,
//! the transform chain, then the destination with retries until
//! [`classify`] says delivered, filtered or dead. Its [`Outcome`] goes back
//! to the partition's actor, which records it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use super::batch::{Batcher, Reply};
use super::coordinator::Lease;
use super::stateful::{commit, RedisKv};
use super::ConsumerCtx;
use switchyard_core::event::Event;
use switchyard_destinations::classify::{backoff, classify, Attempt, Verdict};
use switchyard_store::consumer::{DeadLetter, Origin, PartitionStore};
use switchyard_store::log::Log;
use switchyard_wasm_host::{ChainOutcome, KvStore, NoKv, PrefixOutcome};

/// What the account tasks of one partition share besides the consumer:
/// the log (modules' emitted events are appended there) and the batcher
/// (`[consumers.<name>.batch]`).
pub(super) struct PartExtras {
    pub log: Log,
    pub batcher: Option<Batcher>,
}

/// The first 1 KiB of a response body, as a DLQ entry keeps it.
fn kept(body: &str) -> String {
    let mut cut = body.len().min(1024);
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body[..cut].to_string()
}

pub(super) enum Outcome {
    Delivered {
        skipped: bool,
    },
    Filtered(String),
    Dead(DeadLetter),
    /// Shutting down: leave the event where it is (pending or deferred).
    Cancelled,
    /// The defer list turned out empty.
    NothingDeferred,
}

pub(super) struct Done {
    pub account: String,
    pub origin: Origin,
    pub ev: Option<Arc<Event>>,
    pub outcome: Outcome,
}

/// Run an account task's delivery; if it panics (a bug, of any cause), the
/// event is dead-lettered with the panic's message instead of the task
/// dying with the account still marked busy (which would hold the account's
/// events, and every later one, forever). The panic itself is logged by the
/// panic hook (`switchyard_core::panic`).
pub(super) async fn guarded(
    consumer: &str,
    delivery: impl Future<Output = Outcome>,
    modules: impl FnOnce() -> String,
) -> Outcome {
    match AssertUnwindSafe(delivery).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(p) => {
            let msg = switchyard_core::panic::message(&*p);
            tracing::error!(consumer, error = %msg, "a delivery task panicked; its event goes to the DLQ");
            Outcome::Dead(DeadLetter {
                kind: "failed",
                reason: format!("internal error while delivering (the router panicked): {msg}"),
                attempts: 0,
                last_status: None,
                last_response: String::new(),
                modules: modules(),
                behind: None,
            })
        }
    }
}

/// Deliver one event: dedup check, transform chain, send with retries.
pub(super) async fn deliver(
    ctx: &ConsumerCtx,
    store: &mut PartitionStore,
    epoch: u64,
    ev: &Event,
    check_dedup: bool,
    cancel: &CancellationToken,
    extras: &PartExtras,
    lease: &Lease,
    note: &mut super::privacy::Note,
) -> Outcome {
    // Already acknowledged by the endpoint? The record and the XACK are written
    // together, so this catches a second copy of the same id in the log (a client
    // retry beyond the ingest idempotency window, a CDC re-read), in this epoch.
    let mut delay = Duration::from_millis(50);
    if check_dedup {
        loop {
            match store.was_acked(epoch, &ev.id).await {
                Ok(true) => return Outcome::Delivered { skipped: true },
                Ok(false) => break,
                Err(e) => {
                    if cancel.is_cancelled() {
                        return Outcome::Cancelled;
                    }
                    tracing::warn!(error = %e, "dedup check failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    // The privacy stage, before anything else sees the event: consent in
    // the account's order, then the consumer's policy (deny by default).
    let ev = match super::privacy::stage(ctx, store, ev, cancel, note).await {
        None => return Outcome::Cancelled,
        Some(super::privacy::Stage::Filtered(rule)) => {
            // A module never ran: nothing staged to commit.
            return Outcome::Filtered(rule);
        }
        Some(super::privacy::Stage::Pass(e)) => e,
    };
    let ev = &ev;

    // `kv.get` of stateful modules reads the event's partition.
    // (Without modules nothing reads it: no copy of the store per event.)
    let kv: Arc<dyn KvStore> = match &ctx.chain {
        Some(_) => Arc::new(RedisKv {
            store: store.clone(),
            rt: tokio::runtime::Handle::current(),
        }),
        None => Arc::new(NoKv),
    };
    if let (Some(batcher), Some(chain)) = (&extras.batcher, &ctx.chain) {
        return deliver_batched(ctx, store, ev, cancel, extras, lease, batcher, chain, kv).await;
    }

    let started = Instant::now();
    let mut attempts: u32 = 0;
    let mut last_status = None;
    let mut last_response = String::new();
    let policy = &ctx.cfg.retry;
    let dead = |reason: String, attempts: u32, last_status: Option<u16>, last_response: String| {
        Outcome::Dead(DeadLetter {
            kind: "failed",
            reason,
            attempts,
            last_status,
            last_response,
            modules: ctx.module_versions(),
            behind: None,
        })
    };

    // Transform (off the async workers); a retryable module error is
    // retried like a failed send. A module at its deadline (up to 10 s) does
    // not hold up shutdown: the event stays pending for the next start.
    let (mut requests, effects) = loop {
        let (prepared, effects) = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            p = ctx.prepare(ev, kv.clone()) => p,
        };
        match prepared {
            ChainOutcome::Requests(r) => break (r, effects),
            ChainOutcome::Dropped { module } => {
                if !commit(store, &extras.log, ev, &effects, cancel).await {
                    return Outcome::Cancelled;
                }
                return Outcome::Filtered(module);
            }
            ChainOutcome::Failed {
                module,
                message,
                retryable,
            } => {
                attempts += 1;
                let a = Attempt::Module {
                    module,
                    message,
                    retryable,
                };
                ctx.stats.failed(&a);
                match classify(&a) {
                    Verdict::Fail { reason } => return dead(reason, attempts, None, String::new()),
                    Verdict::Retry { reason, .. } => {
                        if attempts >= policy.max_attempts || started.elapsed() >= policy.max_age {
                            return dead(
                                format!("retries exhausted: {reason}"),
                                attempts,
                                None,
                                String::new(),
                            );
                        }
                        let d = backoff(policy, &ctx.schedule, attempts);
                        tokio::select! {
                            _ = cancel.cancelled() => return Outcome::Cancelled,
                            _ = tokio::time::sleep(d) => {}
                        }
                    }
                    Verdict::Delivered => unreachable!("module errors never deliver"),
                }
            }
        }
    };

    switchyard_core::tracectx::inject(&mut requests, ev);
    for req in &requests {
        loop {
            if cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            attempts += 1;
            let a = loop {
                // Send only while the lease is surely ours (checked last, just
                // before the request goes out): a paused or cut-off instance
                // whose lease may have moved on sends nothing more.
                if !lease.wait_valid(cancel).await {
                    return Outcome::Cancelled;
                }
                let _permit = ctx.permits.acquire().await.expect("semaphore never closed");
                if lease.valid() {
                    break ctx.destination.send(&ev.id, req).await;
                }
            };
            crate::metrics::response(&ctx.name, a.metric_class());
            if let Attempt::Response { status, body, .. } = &a {
                last_status = Some(*status);
                last_response = kept(body);
            }
            if !matches!(classify(&a), Verdict::Delivered) {
                ctx.stats.failed(&a);
            }
            match classify(&a) {
                Verdict::Delivered => break,
                Verdict::Fail { reason } => {
                    return dead(reason, attempts, last_status, last_response)
                }
                Verdict::Retry { after, reason } => {
                    ctx.stats.inc(&ctx.stats.retries);
                    let wait =
                        backoff(policy, &ctx.schedule, attempts).max(after.unwrap_or_default());
                    if attempts >= policy.max_attempts || started.elapsed() + wait > policy.max_age
                    {
                        return dead(
                            format!("retries exhausted after {attempts} attempts: {reason}"),
                            attempts,
                            last_status,
                            last_response,
                        );
                    }
                    tracing::debug!(consumer = %ctx.name, event = %ev.id, attempt = attempts, ?wait, %reason, "will retry");
                    tokio::select! {
                        _ = cancel.cancelled() => return Outcome::Cancelled,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
    if !commit(store, &extras.log, ev, &effects, cancel).await {
        return Outcome::Cancelled;
    }
    crate::metrics::delivered(&ctx.name, ev);
    Outcome::Delivered { skipped: false }
}

/// [`deliver`] for a batching consumer: the chain up to its last module on
/// this event, then the event's items go into the partition's next batch;
/// the [`Attempt`] the batch reports for this event goes through
/// [`classify`] like a single request's, with the same retries, backoff and
/// dead-lettering. An account's next event starts only after this returns.
#[allow(clippy::too_many_arguments)]
async fn deliver_batched(
    ctx: &ConsumerCtx,
    store: &mut PartitionStore,
    ev: &Event,
    cancel: &CancellationToken,
    extras: &PartExtras,
    lease: &Lease,
    batcher: &Batcher,
    chain: &switchyard_wasm_host::ChainHandle,
    kv: Arc<dyn KvStore>,
) -> Outcome {
    let started = Instant::now();
    let policy = &ctx.cfg.retry;
    let mut attempts: u32 = 0;
    let mut last_status = None;
    let mut last_response = String::new();
    loop {
        let current = chain.chain();
        let (prefix, effects) = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            p = current.clone().prefix_async(ev.clone(), kv.clone()) => p,
        };
        let attempt = match prefix {
            PrefixOutcome::Dropped { module } => {
                if !commit(store, &extras.log, ev, &effects, cancel).await {
                    return Outcome::Cancelled;
                }
                return Outcome::Filtered(module);
            }
            PrefixOutcome::Failed {
                module,
                message,
                retryable,
            } => Attempt::Module {
                module,
                message,
                retryable,
            },
            PrefixOutcome::Items { items, requests } => {
                // Requests earlier modules built go out one by one first.
                let mut failed = None;
                let sent = !requests.is_empty();
                for req in &requests {
                    // As in `deliver`: send only while the lease is surely ours.
                    if !lease.wait_valid(cancel).await {
                        return Outcome::Cancelled;
                    }
                    let a = {
                        let _permit = ctx.permits.acquire().await.expect("semaphore never closed");
                        ctx.destination.send(&ev.id, req).await
                    };
                    crate::metrics::response(&ctx.name, a.metric_class());
                    if !matches!(classify(&a), Verdict::Delivered) {
                        failed = Some(a);
                        break;
                    }
                }
                match failed {
                    Some(a) => a,
                    None if items.is_empty() => Attempt::Response {
                        status: 200,
                        retry_after: None,
                        body: String::new(),
                    },
                    None => {
                        // The batch leaves within `batch.max_wait`: hand the
                        // event over only while the lease is surely ours.
                        if !lease.wait_valid(cancel).await {
                            return Outcome::Cancelled;
                        }
                        let reply = tokio::select! {
                            _ = cancel.cancelled() => return Outcome::Cancelled,
                            r = batcher.submit(current.clone(), items) => r,
                        };
                        match reply {
                            None => return Outcome::Cancelled,
                            Some(Reply::Dropped(module)) if !sent => {
                                if !commit(store, &extras.log, ev, &effects, cancel).await {
                                    return Outcome::Cancelled;
                                }
                                return Outcome::Filtered(module);
                            }
                            Some(Reply::Dropped(_)) => Attempt::Response {
                                status: 200,
                                retry_after: None,
                                body: String::new(),
                            },
                            Some(Reply::Attempt(a)) => a,
                        }
                    }
                }
            }
        };
        attempts += 1;
        if let Attempt::Response { status, body, .. } = &attempt {
            last_status = Some(*status);
            last_response = kept(body);
        }
        let dead = |reason: String, last_status: Option<u16>, last_response: String| {
            Outcome::Dead(DeadLetter {
                kind: "failed",
                reason,
                attempts,
                last_status,
                last_response,
                modules: ctx.module_versions(),
                behind: None,
            })
        };
        match classify(&attempt) {
            Verdict::Delivered => {
                if !commit(store, &extras.log, ev, &effects, cancel).await {
                    return Outcome::Cancelled;
                }
                crate::metrics::delivered(&ctx.name, ev);
                return Outcome::Delivered { skipped: false };
            }
            Verdict::Fail { reason } => {
                ctx.stats.failed(&attempt);
                return dead(reason, last_status, last_response);
            }
            Verdict::Retry { after, reason } => {
                ctx.stats.failed(&attempt);
                ctx.stats.inc(&ctx.stats.retries);
                let wait = backoff(policy, &ctx.schedule, attempts).max(after.unwrap_or_default());
                if attempts >= policy.max_attempts || started.elapsed() + wait > policy.max_age {
                    return dead(
                        format!("retries exhausted after {attempts} attempts: {reason}"),
                        last_status,
                        last_response,
                    );
                }
                tracing::debug!(consumer = %ctx.name, event = %ev.id, attempt = attempts, ?wait, %reason, "will retry (batched)");
                tokio::select! {
                    _ = cancel.cancelled() => return Outcome::Cancelled,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{guarded, Outcome};

    #[tokio::test]
    async fn a_panicking_delivery_dead_letters_its_event_with_the_message() {
        let o = guarded(
            "crm",
            async { panic!("Cannot start a runtime from within a runtime") },
            || "esc@0123".to_string(),
        )
        .await;
        let Outcome::Dead(dl) = o else {
            panic!("expected a dead letter")
        };
        assert_eq!(dl.kind, "failed");
        assert!(
            dl.reason.contains("the router panicked")
                && dl
                    .reason
                    .contains("Cannot start a runtime from within a runtime"),
            "{}",
            dl.reason
        );
        assert_eq!(dl.modules, "esc@0123");
        // A delivery that does not panic keeps its outcome.
        let o = guarded("crm", async { Outcome::Cancelled }, String::new).await;
        assert!(matches!(o, Outcome::Cancelled));
    }
}
