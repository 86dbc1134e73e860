//! Batching (`[consumers.<name>.batch]`, contract 0.2): one batcher per
//! (consumer, partition) collects the events account tasks hand it, up to
//! `max_events` / `max_bytes` or `max_wait` after the first, has the last
//! module build the vendor's batch requests (`transform-batch`), sends
//! them, and gives every event its own [`Attempt`]: the vendor's per-item
//! verdict where the module reads one from the answer (`batch-response`),
//! else the request's. The account task then runs that attempt through the
//! one retry/DLQ decision (`classify`) exactly as for a single request.
//!
//! Order: an account task waits for its event's attempt before it takes
//! the account's next event, so an account has at most one event in any
//! batch, and its next event never overtakes a batched predecessor; a
//! failed batch holds (or parks) that account like a failed request.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ConsumerCtx;
use switchyard_config::consumer::BatchConfig;
use switchyard_destinations::classify::{classify, Attempt, Verdict};
use switchyard_wasm_host::{BatchItem, BatchOutcome, Chain, ItemVerdict};

/// What a batch did for one event.
pub(super) enum Reply {
    /// The attempt to classify (the worst of its items').
    Attempt(Attempt),
    /// The module put none of its items in a request: filtered by it.
    Dropped(String),
}

struct Job {
    chain: Arc<Chain>,
    items: Vec<BatchItem>,
    reply: oneshot::Sender<Reply>,
}

/// The handle account tasks submit to.
#[derive(Clone)]
pub(super) struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    pub fn start(ctx: Arc<ConsumerCtx>, cfg: BatchConfig, cancel: CancellationToken) -> Batcher {
        let (tx, rx) = mpsc::channel(cfg.max_events.max(16) * 4);
        tokio::spawn(collect(ctx, cfg, rx, cancel));
        Batcher { tx }
    }

    /// Put one event's items (from [`Chain::prefix_async`]) in the next
    /// batch and wait for the outcome. `None`: shutting down.
    pub async fn submit(&self, chain: Arc<Chain>, items: Vec<BatchItem>) -> Option<Reply> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                chain,
                items,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }
}

async fn collect(
    ctx: Arc<ConsumerCtx>,
    cfg: BatchConfig,
    mut rx: mpsc::Receiver<Job>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            j = rx.recv() => match j { Some(j) => j, None => return },
        };
        let deadline = tokio::time::Instant::now() + cfg.max_wait;
        let mut events = first.items.len();
        let mut bytes: usize = first.items.iter().map(|i| i.approx_bytes).sum();
        let mut jobs = vec![first];
        while events < cfg.max_events && (bytes as u64) < cfg.max_bytes.0 {
            let job = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                j = rx.recv() => match j { Some(j) => j, None => break },
            };
            events += job.items.len();
            bytes += job.items.iter().map(|i| i.approx_bytes).sum::<usize>();
            jobs.push(job);
        }
        // Send while the next batch gathers (`concurrency` bounds requests).
        tokio::spawn(flush(ctx.clone(), jobs));
    }
}

/// Severity of an attempt for an event with several items: the worst wins.
fn rank(a: &Attempt) -> u8 {
    match classify(a) {
        Verdict::Fail { .. } => 2,
        Verdict::Retry { .. } => 1,
        Verdict::Delivered => 0,
    }
}

async fn flush(ctx: Arc<ConsumerCtx>, jobs: Vec<Job>) {
    // Several chains only across a reload: each batch uses the first job's.
    let chain = jobs[0].chain.clone();
    let mut owner = Vec::new();
    let mut items = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        for it in &job.items {
            owner.push(j);
            items.push(it.clone());
        }
    }
    let n = items.len();
    let mut per_item: Vec<Option<Attempt>> = vec![None; n];
    let module = chain
        .batch_module()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    match chain.clone().batch_async(items).await {
        BatchOutcome::Failed {
            module,
            message,
            retryable,
        } => {
            for slot in per_item.iter_mut() {
                *slot = Some(Attempt::Module {
                    module: module.clone(),
                    message: message.clone(),
                    retryable,
                });
            }
        }
        BatchOutcome::Plan(plan) => {
            for (i, message, retryable) in plan.failed {
                per_item[i] = Some(Attempt::Module {
                    module: plan.module.clone(),
                    message,
                    retryable,
                });
            }
            let sends = plan.requests.into_iter().map(|(req, idx)| {
                let ctx = ctx.clone();
                let chain = chain.clone();
                let module = plan.module.clone();
                async move {
                    // The Idempotency-Key of a batch: derived from its body, so
                    // a resent identical batch carries the same key.
                    let key = uuid::Uuid::new_v5(
                        &uuid::Uuid::NAMESPACE_OID,
                        req.body.as_slice(),
                    )
                    .to_string();
                    let a = {
                        let _permit = ctx.permits.acquire().await.expect("semaphore never closed");
                        ctx.destination.send(&key, &req).await
                    };
                    crate::metrics::response(&ctx.name, a.metric_class());
                    let verdicts = match &a {
                        Attempt::Response { status, body, .. } => chain
                            .batch_response_async(
                                req.clone(),
                                idx.len() as u32,
                                *status,
                                body.clone().into_bytes(),
                            )
                            .await
                            .map_err(|m| Attempt::Module {
                                module: module.clone(),
                                message: format!("could not read the vendor's batch answer: {m}"),
                                retryable: false,
                            }),
                        _ => Ok(Vec::new()),
                    };
                    let per: Vec<(usize, Attempt)> = match verdicts {
                        Err(fail) => idx.iter().map(|&i| (i, fail.clone())).collect(),
                        Ok(v) if v.len() == idx.len() => idx
                            .iter()
                            .zip(v)
                            .map(|(&i, v)| {
                                let at = match v {
                                    ItemVerdict::Ok => a.clone(),
                                    ItemVerdict::Retry(message) => Attempt::Rejected {
                                        module: module.clone(),
                                        message,
                                        retryable: true,
                                    },
                                    ItemVerdict::Fail(message) => Attempt::Rejected {
                                        module: module.clone(),
                                        message,
                                        retryable: false,
                                    },
                                };
                                (i, at)
                            })
                            .collect(),
                        Ok(v) => {
                            if !v.is_empty() {
                                tracing::warn!(consumer = %ctx.name, module = %module, got = v.len(), items = idx.len(), "batch-response gave a verdict count that does not match the request's items; the HTTP status decides for all");
                            }
                            idx.iter().map(|&i| (i, a.clone())).collect()
                        }
                    };
                    per
                }
            });
            for per in futures_util::future::join_all(sends).await {
                for (i, at) in per {
                    // An item in two requests: the worse attempt counts.
                    match &per_item[i] {
                        Some(old) if rank(old) >= rank(&at) => {}
                        _ => per_item[i] = Some(at),
                    }
                }
            }
        }
    }
    // Per event: the worst of its items; none sent or failed: dropped.
    let mut worst: Vec<Option<Attempt>> = vec![None; jobs.len()];
    for (i, at) in per_item.into_iter().enumerate() {
        let Some(at) = at else { continue };
        let j = owner[i];
        match &worst[j] {
            Some(old) if rank(old) >= rank(&at) => {}
            _ => worst[j] = Some(at),
        }
    }
    for (job, w) in jobs.into_iter().zip(worst) {
        let reply = match w {
            Some(a) => Reply::Attempt(a),
            None => Reply::Dropped(module.clone()),
        };
        let _ = job.reply.send(reply);
    }
}
