//! One consumer × one partition: a reader task, an actor that owns all state
//! transitions, and one short-lived task per account with work.
//!
//! ```text
//!  reader task ──batches──▶ actor ──spawn──▶ account task (one at a time per account)
//!  (XREADGROUP, own conn)    │  ▲                 │ dedup check → chain → send/retry
//!                            │  └────outcome──────┘
//!                            └─▶ Redis: XACK / defer / park / DLQ (store.rs)
//! ```
//!
//! An account task that panics (of any cause) dead-letters its event with
//! the panic's message ([`guarded`]): the account moves on, nothing is
//! wedged.
//!
//! Ordering: an account has at most one task, and its events are taken from
//! its queue (then its defer list) front to back, so they are sent in log
//! order. Accounts proceed independently: a slow or failing account only
//! holds its own queue; once that holds `max_account_buffer` events, further
//! events of that account are set aside in Redis (deferred) instead of
//! filling the partition's memory. The reader pauses when the partition holds
//! `max_partition_buffer` events: the backlog stays in Redis.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use switchyard_destinations::classify::{backoff, classify, Attempt, Verdict};
use super::config::OnFailure;
use switchyard_store::consumer::{DeadLetter, GroupReader, Origin, PartitionStore, ReadError, Routed};
use super::ConsumerCtx;
use switchyard_core::event::{self, Event};
use switchyard_store::log::Log;
use switchyard_wasm_host::ChainOutcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Deferred,
    Parked,
}

struct Entry {
    sid: String,
    ev: Event,
    /// Holds one permit of the partition buffer.
    counted: bool,
    /// Look the id up in the `acked` records before sending: for entries that
    /// may have been delivered already (reclaimed after a restart, re-read
    /// after a failed read, deferred).
    check_dedup: bool,
}

struct Account {
    queue: VecDeque<Entry>,
    mode: Mode,
    busy: bool,
}

impl Account {
    fn new(mode: Mode) -> Account {
        Account {
            queue: VecDeque::new(),
            mode,
            busy: false,
        }
    }
}

enum Outcome {
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

struct Done {
    account: String,
    origin: Origin,
    ev: Option<Event>,
    outcome: Outcome,
}

/// Entries from the reader. `resync`: re-read from this consumer's pending
/// list after a read failed (see [`reader`]); some may already be in memory.
struct Batch {
    resync: bool,
    entries: Vec<(String, Result<Event, event::CodecError>)>,
}

pub(super) struct Partition {
    ctx: Arc<ConsumerCtx>,
    p: u32,
    store: PartitionStore,
    epoch: u64,
    accounts: HashMap<String, Account>,
    room: Arc<Semaphore>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    in_flight: usize,
    cancel: CancellationToken,
    /// False until entries left pending by a previous run are back in line:
    /// until then no account may start a delivery, or a deferred event could
    /// overtake an older pending one of its account.
    started: bool,
}

/// Retry a Redis operation until it succeeds or `cancel` fires.
macro_rules! persist {
    ($self:ident, $what:expr, $op:expr) => {{
        let mut delay = Duration::from_millis(50);
        loop {
            match $op {
                Ok(v) => break Some(v),
                Err(e) => {
                    tracing::warn!(consumer = %$self.ctx.name, partition = $self.p, error = %e, "{} failed; retrying", $what);
                    if $self.cancel.is_cancelled() {
                        break None;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }};
}

pub(super) async fn run(ctx: Arc<ConsumerCtx>, p: u32, log: Log, shutdown: CancellationToken) {
    // Connect (Redis may be down at start: keep trying).
    let conn = loop {
        match log.conn().await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(consumer = %ctx.name, partition = p, error = %e, "waiting for Redis");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let store = PartitionStore {
        keys: ctx.keys.clone(),
        p,
        conn,
        dedup_ttl: ctx.cfg.dedup_window.as_secs().max(1),
    };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut part = Partition {
        room: Arc::new(Semaphore::new(ctx.cfg.max_partition_buffer)),
        ctx,
        p,
        store,
        epoch: 0,
        accounts: HashMap::new(),
        done_tx,
        done_rx,
        in_flight: 0,
        cancel: shutdown.clone(),
        started: false,
    };
    part.main(log, shutdown).await;
}

impl Partition {
    async fn main(&mut self, log: Log, shutdown: CancellationToken) {
        let start = self.ctx.start.stream_id();
        if persist!(
            self,
            "creating the consumer group",
            self.store.ensure_group(&start).await
        )
        .is_none()
        {
            return;
        }
        let Some(epoch) = persist!(self, "reading the epoch", self.store.epoch().await) else {
            return;
        };
        self.epoch = epoch;
        if self.refresh_sets().await.is_none() {
            return;
        }
        if self.reclaim_pending().await.is_none() {
            return;
        }
        self.started = true;
        let waiting: Vec<String> = self.accounts.keys().cloned().collect();
        for a in waiting {
            self.maybe_spawn(&a);
        }

        let (batch_tx, mut batch_rx) = mpsc::channel::<Batch>(2);
        let reader_stop = CancellationToken::new();
        let reader = tokio::spawn(reader(
            log,
            self.ctx.clone(),
            self.p,
            self.room.clone(),
            batch_tx,
            reader_stop.clone(),
        ));
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(batch) = batch_rx.recv() => self.on_batch(batch).await,
                Some(done) = self.done_rx.recv() => {
                    // Everything finished meanwhile is recorded together (one round trip).
                    let mut batch = vec![done];
                    while batch.len() < 512 {
                        match self.done_rx.try_recv() {
                            Ok(d) => batch.push(d),
                            Err(_) => break,
                        }
                    }
                    self.on_done_batch(batch).await;
                }
                _ = tick.tick() => {
                    if let Ok(e) = self.store.epoch().await {
                        self.epoch = e;
                    }
                    let _ = self.refresh_sets().await;
                }
            }
        }
        // Shutdown: stop reading, let account tasks finish what they are sending
        // (they stop before a new attempt or backoff), record their outcomes.
        reader_stop.cancel();
        // Unread batches stay pending in Redis (reclaimed on the next start);
        // closing the channel also frees a reader blocked on a full channel.
        drop(batch_rx);
        let _ = reader.await;
        while self.in_flight > 0 {
            match tokio::time::timeout(
                self.ctx.cfg.timeout + Duration::from_secs(1),
                self.done_rx.recv(),
            )
            .await
            {
                Ok(Some(done)) => self.on_done(done).await,
                _ => break,
            }
        }
    }

    /// Bring parked/deferred state in line with Redis (the CLI replays and drops there).
    async fn refresh_sets(&mut self) -> Option<()> {
        let parked = persist!(
            self,
            "reading parked accounts",
            self.store.members(self.ctx.keys.parked_set(self.p)).await
        )?;
        let deferred = persist!(
            self,
            "reading deferred accounts",
            self.store.members(self.ctx.keys.deferred_set(self.p)).await
        )?;
        let parked: std::collections::HashSet<String> = parked.into_iter().collect();
        let deferred: std::collections::HashSet<String> = deferred.into_iter().collect();
        for a in &parked {
            self.accounts
                .entry(a.clone())
                .or_insert_with(|| Account::new(Mode::Parked))
                .mode = Mode::Parked;
        }
        let mut wake = Vec::new();
        for (name, acct) in self.accounts.iter_mut() {
            let want = if parked.contains(name) {
                Mode::Parked
            } else if deferred.contains(name) {
                Mode::Deferred
            } else if acct.mode == Mode::Parked {
                Mode::Normal
            } else {
                acct.mode
            };
            if want != acct.mode {
                acct.mode = want;
                wake.push(name.clone());
            }
        }
        for a in deferred {
            if !parked.contains(&a) && !self.accounts.contains_key(&a) {
                self.accounts
                    .insert(a.clone(), Account::new(Mode::Deferred));
                wake.push(a);
            }
        }
        for a in wake {
            self.maybe_spawn(&a);
        }
        self.gc();
        Some(())
    }

    /// After a restart: take over every pending entry of this group and put it back in line.
    async fn reclaim_pending(&mut self) -> Option<()> {
        let mut cursor = "0-0".to_string();
        loop {
            if self.cancel.is_cancelled() {
                return None; // what is left stays pending for the next start
            }
            let c = cursor.clone();
            let mut store = self.store.clone();
            let reply = persist!(self, "reclaiming pending entries", { store.autoclaim(&c).await })?;
            if !reply.entries.is_empty() {
                tracing::info!(consumer = %self.ctx.name, partition = self.p, n = reply.entries.len(), "reclaimed pending entries");
            }
            for (sid, ev) in reply.entries {
                match ev {
                    Ok(ev) => self.route_reclaimed(sid, ev).await,
                    Err(err) => self.dead_letter_raw(&sid, &err.to_string()).await,
                }
            }
            for sid in &reply.deleted {
                // Trimmed away while pending: nothing left to deliver.
                let _ = self.store.ack_many(std::slice::from_ref(sid)).await;
            }
            if reply.next == "0-0" {
                return Some(());
            }
            cursor = reply.next;
        }
    }

    /// A reclaimed entry was either queued in memory before the crash (older than
    /// anything deferred for its account since) or not yet routed (newer).
    async fn route_reclaimed(&mut self, sid: String, ev: Event) {
        let mode = self
            .accounts
            .get(&ev.account_id)
            .map(|a| a.mode)
            .unwrap_or(Mode::Normal);
        if mode == Mode::Deferred {
            // An error must not read as "no defer list": the entry would go behind newer ones.
            let account = ev.account_id.clone();
            let Some(tail) = persist!(
                self,
                "reading a defer list",
                self.store.deferred_tail_sid(&account).await
            ) else {
                return;
            };
            if tail.is_some_and(|t| stream_id_lt(&sid, &t)) {
                let counted = self.take_room();
                self.enqueue(Entry {
                    sid,
                    ev,
                    counted,
                    check_dedup: true,
                });
                return;
            }
        }
        let counted = self.take_room();
        self.route(Entry {
            sid,
            ev,
            counted,
            check_dedup: true,
        })
        .await;
    }

    /// Take one permit of the partition buffer for an entry the reader did not
    /// read (reclaimed): so the reader reads no more than the room left, and
    /// memory stays bounded however many restarts left entries pending. None
    /// left (the buffer was made smaller): the entry is held anyway.
    fn take_room(&self) -> bool {
        match self.room.try_acquire() {
            Ok(p) => {
                p.forget();
                true
            }
            Err(_) => false,
        }
    }

    async fn on_batch(&mut self, batch: Batch) {
        let Batch { resync, entries } = batch;
        // A resynced entry holds no buffer permit (the reader took none for it).
        let counted = !resync;
        let mut filtered = Vec::new();
        for (sid, res) in entries {
            match res {
                Ok(ev) => {
                    if resync
                        && self
                            .accounts
                            .get(&ev.account_id)
                            .is_some_and(|a| a.queue.iter().any(|e| e.sid == sid))
                    {
                        continue; // already in line
                    }
                    if !self.ctx.topics.is_match(&ev.topic) {
                        self.ctx.stats.filtered("topics");
                        filtered.push(sid);
                        if counted {
                            self.room.add_permits(1);
                        }
                        continue;
                    }
                    self.route(Entry {
                        sid,
                        ev,
                        counted,
                        check_dedup: resync,
                    })
                    .await;
                }
                Err(err) => {
                    if counted {
                        self.room.add_permits(1);
                    }
                    self.dead_letter_raw(&sid, &err.to_string()).await;
                }
            }
        }
        let _ = persist!(
            self,
            "acknowledging filtered events",
            self.store.ack_many(&filtered).await
        );
    }

    async fn route(&mut self, entry: Entry) {
        let max = self.ctx.cfg.max_account_buffer;
        let acct = self
            .accounts
            .entry(entry.ev.account_id.clone())
            .or_insert_with(|| Account::new(Mode::Normal));
        let (mode, full) = (acct.mode, acct.queue.len() >= max);
        if mode == Mode::Normal && !full {
            self.enqueue(entry);
            return;
        }
        // Parked, deferred, or over its memory share: Redis decides, atomically.
        let body = match event::encode(&entry.ev) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot re-encode an event");
                return;
            }
        };
        let force = mode == Mode::Normal;
        let Some(r) = persist!(
            self,
            "setting an event aside",
            self.store.route(&entry.sid, &entry.ev, &body, force).await
        ) else {
            return;
        };
        let acct = self
            .accounts
            .get_mut(&entry.ev.account_id)
            .expect("inserted above");
        match r {
            Routed::Parked => {
                acct.mode = Mode::Parked;
                self.ctx.stats.inc(&self.ctx.stats.parked);
            }
            Routed::Deferred => {
                acct.mode = Mode::Deferred;
                self.ctx.stats.inc(&self.ctx.stats.deferred);
            }
            Routed::Free => {
                acct.mode = Mode::Normal;
                self.enqueue(entry);
                return;
            }
        }
        if entry.counted {
            self.room.add_permits(1);
        }
        let a = entry.ev.account_id.clone();
        self.maybe_spawn(&a);
    }

    fn enqueue(&mut self, entry: Entry) {
        let a = entry.ev.account_id.clone();
        self.accounts
            .entry(a.clone())
            .or_insert_with(|| Account::new(Mode::Normal))
            .queue
            .push_back(entry);
        self.maybe_spawn(&a);
    }

    /// Start the account's next delivery if it has work and none running.
    fn maybe_spawn(&mut self, account: &str) {
        if !self.started {
            return;
        }
        let Some(acct) = self.accounts.get_mut(account) else {
            return;
        };
        if acct.busy {
            return;
        }
        let (origin, ev, check_dedup) = if let Some(head) = acct.queue.front() {
            (
                Origin::Stream(head.sid.clone()),
                Some(head.ev.clone()),
                head.check_dedup,
            )
        } else if acct.mode == Mode::Deferred {
            (Origin::Deferred(Vec::new()), None, true)
        } else {
            return;
        };
        acct.busy = true;
        self.in_flight += 1;
        let ctx = self.ctx.clone();
        let mut store = self.store.clone();
        let epoch = self.epoch;
        let tx = self.done_tx.clone();
        let cancel = self.cancel.clone();
        let account = account.to_string();
        tokio::spawn(async move {
            let mut origin = origin;
            let ev = match ev {
                Some(ev) => Some(ev),
                None => loop {
                    match store.deferred_head(&account).await {
                        Ok(h) => {
                            break h.map(|(raw, ev)| {
                                origin = Origin::Deferred(raw);
                                ev
                            })
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reading a deferred event");
                            if cancel.is_cancelled() {
                                let _ = tx.send(Done {
                                    account,
                                    origin,
                                    ev: None,
                                    outcome: Outcome::Cancelled,
                                });
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                },
            };
            let Some(ev) = ev else {
                let _ = tx.send(Done {
                    account,
                    origin,
                    ev: None,
                    outcome: Outcome::NothingDeferred,
                });
                return;
            };
            let span = switchyard_core::tracectx::delivery_span(&ctx.name, store.p, &ev);
            let outcome = guarded(
                &ctx.name,
                tracing::Instrument::instrument(
                    deliver(&ctx, &mut store, epoch, &ev, check_dedup, &cancel),
                    span,
                ),
                || ctx.module_versions(),
            )
            .await;
            let _ = tx.send(Done {
                account,
                origin,
                ev: Some(ev),
                outcome,
            });
        });
    }

    /// Record the simple outcomes of `batch` (stream entries delivered or
    /// filtered) in one atomic round trip, then handle each in order. An
    /// account has at most one outcome in a batch (one task at a time), so
    /// nothing of one account is reordered; each account still moves on only
    /// after its outcome is recorded.
    async fn on_done_batch(&mut self, batch: Vec<Done>) {
        let simple = |d: &Done| {
            matches!(d.origin, Origin::Stream(_))
                && d.ev.is_some()
                && matches!(d.outcome, Outcome::Delivered { .. } | Outcome::Filtered(_))
        };
        if batch.iter().filter(|d| simple(d)).count() > 1 {
            let items: Vec<(String, Option<(u64, String)>)> = batch
                .iter()
                .filter(|d| simple(d))
                .map(|d| {
                    let Origin::Stream(sid) = &d.origin else {
                        unreachable!("simple")
                    };
                    let acked = match (&d.outcome, &d.ev) {
                        (Outcome::Delivered { .. }, Some(ev)) => Some((self.epoch, ev.id.clone())),
                        _ => None,
                    };
                    (sid.clone(), acked)
                })
                .collect();
            if persist!(
                self,
                "recording deliveries",
                self.store.finish_stream_many(&items).await
            )
            .is_none()
            {
                return;
            }
            for d in batch {
                let recorded = simple(&d);
                self.on_done_recorded(d, recorded).await;
            }
        } else {
            for d in batch {
                self.on_done_recorded(d, false).await;
            }
        }
    }

    async fn on_done(&mut self, done: Done) {
        self.on_done_recorded(done, false).await
    }

    /// Handle one outcome; `recorded`: its Redis state change is already made.
    async fn on_done_recorded(&mut self, done: Done, recorded: bool) {
        self.in_flight -= 1;
        let Done {
            account,
            origin,
            ev,
            outcome,
        } = done;
        let park = self.ctx.cfg.on_failure == OnFailure::Park;
        let mut remaining_deferred: Option<u64> = None;
        let mut finished = true;
        match (&outcome, &ev) {
            (Outcome::Delivered { skipped }, Some(ev)) => {
                let acked = Some((self.epoch, ev.id.as_str()));
                let n = if recorded {
                    0
                } else {
                    let Some(n) = persist!(
                        self,
                        "recording a delivery",
                        self.store.finish(&origin, &account, acked).await
                    ) else {
                        return;
                    };
                    n
                };
                remaining_deferred = Some(n);
                if *skipped {
                    self.ctx.stats.inc(&self.ctx.stats.duplicates_skipped);
                } else {
                    self.ctx.stats.inc(&self.ctx.stats.delivered);
                }
                self.ctx.stats.observe_latency(ev);
            }
            (Outcome::Filtered(rule), Some(_)) => {
                let n = if recorded {
                    0
                } else {
                    let Some(n) = persist!(
                        self,
                        "acknowledging a filtered event",
                        self.store.finish(&origin, &account, None).await
                    ) else {
                        return;
                    };
                    n
                };
                remaining_deferred = Some(n);
                self.ctx.stats.filtered(rule);
            }
            (Outcome::Dead(dl), Some(ev)) => {
                let Some(moved) = persist!(
                    self,
                    "dead-lettering an event",
                    self.store.dead_letter(&origin, ev, dl, park).await
                ) else {
                    return;
                };
                self.ctx.stats.inc(&self.ctx.stats.dead_lettered);
                self.ctx.stats.add(&self.ctx.stats.parked, moved);
                tracing::warn!(consumer = %self.ctx.name, account = %account, event = %ev.id, reason = %dl.reason, park, "event dead-lettered");
            }
            (Outcome::NothingDeferred, _) => {
                remaining_deferred = Some(0);
                finished = false;
                // Only if the list is still empty (this may run late, after new deferrals).
                let _ = self.store.forget_if_undeferred(&account).await;
            }
            _ => finished = false, // Cancelled
        }

        let Some(acct) = self.accounts.get_mut(&account) else {
            return;
        };
        acct.busy = false;
        if finished {
            if let Origin::Stream(_) = origin {
                if let Some(head) = acct.queue.pop_front() {
                    if head.counted {
                        self.room.add_permits(1);
                    }
                }
            }
        }
        if matches!(outcome, Outcome::Cancelled) {
            return;
        }
        if matches!(origin, Origin::Deferred(_))
            && remaining_deferred == Some(0)
            && acct.mode == Mode::Deferred
        {
            acct.mode = Mode::Normal;
        }
        if let (Outcome::Dead(_), true) = (&outcome, park) {
            acct.mode = Mode::Parked;
            // Everything this account still holds in memory waits behind the failed event.
            let rest: Vec<Entry> = acct.queue.drain(..).collect();
            for e in rest {
                let counted = e.counted;
                let body = event::encode(&e.ev).unwrap_or_default();
                if persist!(
                    self,
                    "parking an event",
                    self.store.route(&e.sid, &e.ev, &body, false).await
                )
                .is_none()
                {
                    return;
                }
                self.ctx.stats.inc(&self.ctx.stats.parked);
                if counted {
                    self.room.add_permits(1);
                }
            }
        }
        if !self.cancel.is_cancelled() {
            self.maybe_spawn(&account);
        }
        self.gc_one(&account);
    }

    fn gc_one(&mut self, account: &str) {
        if let Some(a) = self.accounts.get(account) {
            if !a.busy && a.queue.is_empty() && a.mode == Mode::Normal {
                self.accounts.remove(account);
            }
        }
    }

    fn gc(&mut self) {
        self.accounts
            .retain(|_, a| a.busy || !a.queue.is_empty() || a.mode != Mode::Normal);
    }

    async fn dead_letter_raw(&mut self, sid: &str, reason: &str) {
        tracing::error!(consumer = %self.ctx.name, partition = self.p, sid, reason, "undecodable log entry moved to the DLQ");
        let mut store = self.store.clone();
        let _ = persist!(self, "dead-lettering an undecodable entry", {
            store.dead_letter_undecodable(sid, reason).await
        });
        self.ctx.stats.inc(&self.ctx.stats.dead_lettered);
    }
}

/// Compare two stream ids (`ms-seq`).
fn stream_id_lt(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) < parse(b)
}

/// Run an account task's delivery; if it panics (a bug, of any cause), the
/// event is dead-lettered with the panic's message instead of the task
/// dying with the account still marked busy (which would hold the account's
/// events, and every later one, forever). The panic itself is logged by the
/// panic hook (`switchyard_core::panic`).
async fn guarded(
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
async fn deliver(
    ctx: &ConsumerCtx,
    store: &mut PartitionStore,
    epoch: u64,
    ev: &Event,
    check_dedup: bool,
    cancel: &CancellationToken,
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
    let mut requests = loop {
        let prepared = tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            p = ctx.prepare(ev) => p,
        };
        match prepared {
            ChainOutcome::Requests(r) => break r,
            ChainOutcome::Dropped { module } => return Outcome::Filtered(module),
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
            let a = {
                let _permit = ctx.permits.acquire().await.expect("semaphore never closed");
                ctx.destination.send(&ev.id, req).await
            };
            crate::metrics::response(&ctx.name, a.metric_class());
            if let Attempt::Response { status, body, .. } = &a {
                last_status = Some(*status);
                last_response = body.clone();
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
    crate::metrics::delivered(&ctx.name, ev);
    Outcome::Delivered { skipped: false }
}

/// Reads new entries for the actor, never more than the partition's free room.
///
/// A read whose reply is lost (a response timeout while Redis is paused, a
/// connection cut) may still run in Redis, moving entries into this
/// consumer's pending list that nobody delivers. So after any failed read the
/// reader opens a new connection, kills the old one server-side (a read still
/// queued there can no longer run later), and reads its pending list past the
/// last entry it received, sending those (`resync`) before any newer entry:
/// nothing is stranded and an account's order holds.
async fn reader(
    log: Log,
    ctx: Arc<ConsumerCtx>,
    p: u32,
    room: Arc<Semaphore>,
    tx: mpsc::Sender<Batch>,
    stop: CancellationToken,
) {
    let mut rd = GroupReader::new(ctx.keys.clone(), p);
    let mut last_seen = "0-0".to_string();
    let mut resync = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if !rd.connected() {
            if let Err(e) = rd.connect(&log).await {
                tracing::warn!(consumer = %ctx.name, partition = p, error = %e, "reader cannot connect; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        }

        let r: Result<(), ReadError> = async {
            if resync {
                loop {
                    let entries = rd.read_pending(&last_seen, 500).await?;
                    let Some((last, _)) = entries.last() else { break };
                    last_seen = last.clone();
                    tracing::info!(consumer = %ctx.name, partition = p, n = entries.len(), "re-read pending entries after a failed read");
                    if tx.send(Batch { resync: true, entries }).await.is_err() {
                        return Ok(());
                    }
                }
                resync = false;
            }
            let want = room.available_permits().clamp(1, 500) as u32;
            let permit = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                p = room.clone().acquire_many_owned(want) => p.expect("never closed"),
            };
            let entries = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = rd.read_new(want as usize, 1000) => r?,
            };
            if let Some((last, _)) = entries.last() {
                last_seen = last.clone();
            }
            permit.forget();
            room.add_permits(want as usize - entries.len());
            if !entries.is_empty() {
                let _ = tx.send(Batch { resync: false, entries }).await;
            }
            Ok(())
        }
        .await;
        if tx.is_closed() {
            return;
        }
        let e = match r {
            Ok(()) => continue,
            Err(ReadError::NoGroup) => {
                // The stream or group vanished (e.g. Redis lost its data): recreate it.
                tracing::warn!(consumer = %ctx.name, partition = p, "consumer group missing; recreating it");
                let _ = rd.recreate_group().await;
                continue;
            }
            Err(ReadError::Other(e)) => e,
        };
        tracing::warn!(consumer = %ctx.name, partition = p, error = %e, "read failed; reconnecting and re-reading pending entries");
        rd.drop_connection();
        resync = true;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
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

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(super::stream_id_lt("9-0", "10-0"));
        assert!(super::stream_id_lt("10-2", "10-10"));
        assert!(!super::stream_id_lt("10-10", "10-10"));
    }
}
