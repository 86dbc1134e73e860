//! One consumer × one partition: a reader task (`reader.rs`), this actor,
//! which owns all state transitions, and one short-lived task per account
//! with work (`account.rs`).
//!
//! ```text
//!  reader task ──batches──▶ actor ──spawn──▶ account task (one at a time per account)
//!  (XREADGROUP, own conn)    │  ▲                 │ dedup check → chain → send/retry
//!                            │  └────outcome──────┘
//!                            └─▶ Redis: XACK / defer / park / DLQ (switchyard_store::consumer)
//! ```
//!
//! An account task that panics (of any cause) dead-letters its event with
//! the panic's message ([`super::account::guarded`]): the account moves on, nothing is
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
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::account::{deliver, guarded, Done, Outcome, PartExtras};
use super::batch::Batcher;
use super::coordinator::Lease;
use super::reader::{reader, Batch};
use super::ConsumerCtx;
use switchyard_config::consumer::OnFailure;
use switchyard_core::event::{self, Event};
use switchyard_store::consumer::{Origin, PartitionStore, Routed};
use switchyard_store::log::{Log, LogError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Deferred,
    Parked,
}

struct Entry {
    sid: String,
    /// Shared with the account task delivering it (no copy per attempt).
    ev: Arc<Event>,
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
    /// In [`Partition::waiting`]: it has work but no worker was free.
    waiting: bool,
}

impl Account {
    fn new(mode: Mode) -> Account {
        Account {
            queue: VecDeque::new(),
            mode,
            busy: false,
            waiting: false,
        }
    }
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
    /// The log and the batcher, for account tasks.
    extras: Arc<PartExtras>,
    /// This instance's lease on the partition; every write carries its token.
    lease: Arc<Lease>,
    /// Accounts with work waiting for a worker (`account_workers`), oldest first.
    waiting: VecDeque<String>,
    /// False until entries left pending by a previous run are back in line:
    /// until then no account may start a delivery, or a deferred event could
    /// overtake an older pending one of its account.
    started: bool,
}

/// Retry a Redis operation until it succeeds or `cancel` fires. A fenced
/// write (another instance holds the partition now) stops the partition.
macro_rules! persist {
    ($self:ident, $what:expr, $op:expr) => {{
        let mut backoff = switchyard_core::retry::Backoff::new(
            Duration::from_millis(50),
            Duration::from_secs(2),
        );
        loop {
            match $op {
                Ok(v) => break Some(v),
                Err(LogError::Fenced) => {
                    if !$self.lease.lost.is_cancelled() {
                        tracing::warn!(consumer = %$self.ctx.name, partition = $self.p, "{} refused: another instance holds the partition now; stopping it", $what);
                    }
                    $self.lease.lost.cancel();
                    $self.cancel.cancel();
                    break None;
                }
                Err(e) => {
                    tracing::warn!(consumer = %$self.ctx.name, partition = $self.p, error = %e, "{} failed; retrying", $what);
                    if $self.cancel.is_cancelled() {
                        break None;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }};
}

/// Deliver partition `p` of a consumer while this instance holds `lease`;
/// `shutdown` stops it gracefully (also for a hand-over).
pub(super) async fn run(
    ctx: Arc<ConsumerCtx>,
    p: u32,
    log: Log,
    shutdown: CancellationToken,
    lease: Arc<Lease>,
) {
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
        token: Some(lease.token),
    };
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let extras = Arc::new(PartExtras {
        log: log.clone(),
        batcher: ctx
            .cfg
            .batch
            .clone()
            .map(|b| Batcher::start(ctx.clone(), b, shutdown.clone())),
    });
    let mut part = Partition {
        extras,
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
        lease,
        waiting: VecDeque::new(),
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
            self.lease.clone(),
            self.room.clone(),
            batch_tx,
            reader_stop.clone(),
        ));
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.lease.lost.cancelled() => {
                    // Another instance holds the partition now: stop, write nothing more.
                    self.cancel.cancel();
                    break;
                }
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
                permit = self.ctx.workers.clone().acquire_owned(), if !self.waiting.is_empty() => {
                    self.start_waiting(permit.expect("never closed"));
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
            let reply = persist!(self, "reclaiming pending entries", {
                store.autoclaim(&c).await
            })?;
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
                    ev: Arc::new(ev),
                    counted,
                    check_dedup: true,
                });
                return;
            }
        }
        let counted = self.take_room();
        self.route(Entry {
            sid,
            ev: Arc::new(ev),
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
                    let rule = if !self.ctx.topics.is_match(&ev.topic)
                        && !super::privacy::must_see(&self.ctx, &ev)
                    {
                        Some("topics")
                    } else if !self.ctx.cfg.takes_schema_version(&ev.attributes) {
                        Some("schema_versions")
                    } else {
                        None
                    };
                    if let Some(rule) = rule {
                        self.ctx.stats.filtered(rule);
                        filtered.push(sid);
                        if counted {
                            self.room.add_permits(1);
                        }
                        continue;
                    }
                    self.route(Entry {
                        sid,
                        ev: Arc::new(ev),
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

    /// A worker is free: start the oldest waiting account that still has work.
    fn start_waiting(&mut self, permit: OwnedSemaphorePermit) {
        let mut permit = Some(permit);
        while let Some(a) = self.waiting.pop_front() {
            let Some(acct) = self.accounts.get_mut(&a) else {
                continue;
            };
            acct.waiting = false;
            self.spawn_with(&a, &mut permit);
            if permit.is_none() {
                return;
            }
        }
    }

    /// Start the account's next delivery if it has work and none running,
    /// once a worker is free (else it waits in line for one).
    fn maybe_spawn(&mut self, account: &str) {
        self.spawn_with(account, &mut None);
    }

    /// [`Partition::maybe_spawn`] with a worker already taken (`permit`,
    /// which is used only if the account starts).
    fn spawn_with(&mut self, account: &str, permit: &mut Option<OwnedSemaphorePermit>) {
        if !self.started {
            return;
        }
        let Some(acct) = self.accounts.get_mut(account) else {
            return;
        };
        if acct.busy || acct.waiting {
            return;
        }
        if acct.queue.is_empty() && acct.mode != Mode::Deferred {
            return;
        }
        let worker = match permit.take() {
            Some(p) => p,
            None => match self.ctx.workers.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    acct.waiting = true;
                    self.waiting.push_back(account.to_string());
                    return;
                }
            },
        };
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
        let lease = self.lease.clone();
        let account = account.to_string();
        let extras = self.extras.clone();
        tokio::spawn(async move {
            let _worker = worker;
            let mut origin = origin;
            let ev = match ev {
                Some(ev) => Some(ev),
                None => loop {
                    match store.deferred_head(&account).await {
                        Ok(h) => {
                            break h.map(|(raw, ev)| {
                                origin = Origin::Deferred(raw);
                                Arc::new(ev)
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
            let mut note = super::privacy::Note::default();
            let outcome = guarded(
                &ctx.name,
                tracing::Instrument::instrument(
                    deliver(
                        &ctx,
                        &mut store,
                        epoch,
                        &ev,
                        check_dedup,
                        &cancel,
                        &extras,
                        &lease,
                        &mut note,
                    ),
                    span,
                ),
                || ctx.module_versions(),
            )
            .await;
            super::privacy::record(&ctx, &mut store, &origin, &ev, &outcome, &note).await;
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

#[cfg(test)]
mod tests {

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(super::stream_id_lt("9-0", "10-0"));
        assert!(super::stream_id_lt("10-2", "10-10"));
        assert!(!super::stream_id_lt("10-10", "10-10"));
    }
}
