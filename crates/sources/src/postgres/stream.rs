//! The streaming loop: replication events → decoded changes → events →
//! batched appends → confirmed LSNs.
//!
//! Invariant: an LSN is passed to `update_applied_lsn` (and so reported to
//! Postgres as flushed) only after `Log::append` returned Ok for every event
//! of every transaction that committed at or before it.
//!
//! Appends run in `append_lanes` lanes: an event goes to lane
//! `partition(account) % lanes`, each lane has at most one append in flight
//! (its events stay in order, and one account always maps to one lane, so
//! every account's events stay in commit order), and lanes run in parallel
//! with each other and with decoding. A commit's end LSN is confirmed once
//! every lane has appended everything routed to it up to that commit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use pgwire_replication::{ReplicationClient, ReplicationEvent};

use super::catalog::{self, ResolvedTable};
use super::mapping::{
    change_events, old_to_row, tuple_to_row, BeforeImage, ChangeKind, Position, TableMapping,
};
use super::pgoutput::{self, Lsn, Message, Relation};
use super::values;
use super::{append_retry, SessionError, SourceCtx};
use crate::schema_drift::{self, At, Column, Detected};
use switchyard_core::event::Event;
use switchyard_store::log::Log;

/// Microseconds between 1970-01-01 and 2000-01-01.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

pub fn pg_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_OFFSET_MICROS))
        .unwrap_or_else(Utc::now)
}

struct RelEntry {
    rel: Relation,
    mapping: Option<Arc<TableMapping>>,
    identity_key: Vec<String>,
}

struct Txn {
    commit_lsn: Lsn,
    commit_time: DateTime<Utc>,
    seq: u64,
}

struct State {
    tables: HashMap<(String, String), Arc<TableMapping>>,
    relations: HashMap<u32, RelEntry>,
    txn: Option<Txn>,
    lanes: Lanes,
    confirmed: Lsn,
    stats: Stats,
    /// Last known shape per table (`schema.name`), as recorded in Redis.
    shapes: HashMap<String, Vec<Column>>,
    /// Schema changes detected, to append and record before going on.
    drift: Vec<Detected>,
}

/// Events waiting for, or in, an append, per lane.
struct Lanes {
    log: Log,
    pending: Vec<Vec<Event>>,
    busy: Vec<bool>,
    /// Events routed to each lane so far / appended so far.
    routed: Vec<u64>,
    appended: Vec<u64>,
    /// Commit end LSNs with the per-lane routed counts they need appended.
    checkpoints: VecDeque<(Lsn, Vec<u64>)>,
    total_pending: usize,
}

impl Lanes {
    fn new(log: Log, n: usize) -> Lanes {
        Lanes {
            log,
            pending: (0..n).map(|_| Vec::new()).collect(),
            busy: vec![false; n],
            routed: vec![0; n],
            appended: vec![0; n],
            checkpoints: VecDeque::new(),
            total_pending: 0,
        }
    }

    fn push(&mut self, ev: Event) {
        let lane = self.log.partition_of(&ev.account_id) as usize % self.pending.len();
        self.pending[lane].push(ev);
        self.routed[lane] += 1;
        self.total_pending += 1;
    }

    fn commit(&mut self, end_lsn: Lsn) {
        match self.checkpoints.back_mut() {
            // Nothing routed since the previous commit: move its LSN forward.
            Some((lsn, marks)) if *marks == self.routed => *lsn = end_lsn,
            _ => self.checkpoints.push_back((end_lsn, self.routed.clone())),
        }
    }

    /// The newest commit LSN whose events are all appended, if it advanced.
    fn take_confirmable(&mut self) -> Option<Lsn> {
        let mut out = None;
        while let Some((lsn, marks)) = self.checkpoints.front() {
            if marks.iter().zip(&self.appended).all(|(m, a)| a >= m) {
                out = Some(*lsn);
                self.checkpoints.pop_front();
            } else {
                break;
            }
        }
        out
    }

    fn idle(&self) -> bool {
        self.total_pending == 0 && !self.busy.iter().any(|b| *b) && self.checkpoints.is_empty()
    }

    fn startable(&self) -> bool {
        self.pending
            .iter()
            .zip(&self.busy)
            .any(|(p, b)| !p.is_empty() && !b)
    }
}

#[derive(Default)]
struct Stats {
    events: u64,
    appends: u64,
    confirms: u64,
}

impl State {
    fn confirm_ready(&mut self, client: &ReplicationClient) {
        if let Some(lsn) = self.lanes.take_confirmable() {
            self.confirm(client, lsn);
        }
    }

    fn confirm(&mut self, client: &ReplicationClient, lsn: Lsn) {
        if lsn > self.confirmed {
            client.update_applied_lsn(pgwire_replication::Lsn::from_u64(lsn.0));
            self.confirmed = lsn;
            self.stats.confirms += 1;
        }
    }

    fn handle(
        &mut self,
        ctx: &SourceCtx<'_>,
        client: &ReplicationClient,
        ev: ReplicationEvent,
    ) -> Result<(), SessionError> {
        match ev {
            ReplicationEvent::Begin {
                final_lsn,
                commit_time_micros,
                ..
            } => {
                self.begin(Lsn(final_lsn.as_u64()), commit_time_micros);
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.commit(Lsn(end_lsn.as_u64()));
            }
            ReplicationEvent::XLogData { data, .. } => {
                let msg = pgoutput::decode(&data).map_err(|e| {
                    SessionError::Transient(anyhow::anyhow!("undecodable replication message: {e}"))
                })?;
                self.message(ctx, msg)?;
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                // Nothing open, pending or in flight: everything the server
                // sent before this keepalive is in the log, so its position
                // can be confirmed (lets the slot advance past WAL of
                // unpublished tables).
                if self.txn.is_none() && self.lanes.idle() {
                    self.confirm(client, Lsn(wal_end.as_u64()));
                }
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
            #[allow(unreachable_patterns)]
            _ => {}
        }
        Ok(())
    }

    /// Compare a Relation message's shape with the last known one.
    fn drift_check(&mut self, ctx: &SourceCtx<'_>, rel: &Relation, captured: bool) {
        let table = format!("{}.{}", rel.namespace, rel.name);
        let shape = relation_shape(rel);
        let (position, seq, occurred_at) = match &self.txn {
            Some(t) => (t.commit_lsn, t.seq, t.commit_time),
            None => (self.confirmed, 0, Utc::now()),
        };
        let at = At {
            position: &position.to_string(),
            seq,
            occurred_at,
        };
        let old = self.shapes.get(&table).map(Vec::as_slice);
        if let Some(d) = schema_drift::detect(
            ctx.source,
            &ctx.cfg.schema_topic,
            &table,
            captured,
            old,
            Some(shape.as_slice()),
            &at,
        ) {
            self.shapes.insert(table, shape);
            self.drift.push(d);
        }
    }

    fn begin(&mut self, commit_lsn: Lsn, commit_time: i64) {
        self.txn = Some(Txn {
            commit_lsn,
            commit_time: pg_time(commit_time),
            seq: 0,
        });
    }

    fn commit(&mut self, end_lsn: Lsn) {
        self.txn = None;
        self.lanes.commit(end_lsn);
    }

    fn message(&mut self, ctx: &SourceCtx<'_>, msg: Message<'_>) -> Result<(), SessionError> {
        let change = match msg {
            Message::Begin(b) => {
                self.begin(b.final_lsn, b.commit_time);
                return Ok(());
            }
            Message::Commit(c) => {
                self.commit(c.end_lsn);
                return Ok(());
            }
            Message::Relation(rel) => {
                let mapping = self
                    .tables
                    .get(&(rel.namespace.clone(), rel.name.clone()))
                    .cloned();
                self.drift_check(ctx, &rel, mapping.is_some());
                let identity_key = rel
                    .columns
                    .iter()
                    .filter(|c| c.is_key)
                    .map(|c| c.name.clone())
                    .collect();
                self.relations.insert(
                    rel.id,
                    RelEntry {
                        rel,
                        mapping,
                        identity_key,
                    },
                );
                return Ok(());
            }
            Message::Type(_) | Message::Origin(_) | Message::Logical(_) => return Ok(()),
            Message::Truncate(t) => {
                if let Some(txn) = self.txn.as_mut() {
                    txn.seq += 1;
                }
                for id in t.relation_ids {
                    if let Some(e) = self.relations.get(&id).filter(|e| e.mapping.is_some()) {
                        tracing::warn!(source = ctx.source, table = %format!("{}.{}", e.rel.namespace, e.rel.name),
                            "TRUNCATE is not captured (no event is emitted for the removed rows)");
                    }
                }
                return Ok(());
            }
            m @ (Message::Insert(_) | Message::Update(_) | Message::Delete(_)) => m,
        };
        let Some(txn) = self.txn.as_mut() else {
            return Err(SessionError::Transient(anyhow::anyhow!(
                "row change outside a transaction"
            )));
        };
        let seq = txn.seq;
        txn.seq += 1;
        let rel_id = match &change {
            Message::Insert(i) => i.relation_id,
            Message::Update(u) => u.relation_id,
            Message::Delete(d) => d.relation_id,
            _ => unreachable!("filtered above"),
        };
        let entry = self.relations.get(&rel_id).ok_or_else(|| {
            SessionError::Transient(anyhow::anyhow!(
                "change for relation {rel_id} before its Relation message"
            ))
        })?;
        let Some(mapping) = &entry.mapping else {
            return Ok(());
        };
        let decoded = match &change {
            Message::Insert(i) => tuple_to_row(&entry.rel, &i.new, false)
                .map(|a| (ChangeKind::Insert, None, BeforeImage::None, Some(a))),
            Message::Update(u) => old_to_row(&entry.rel, u.old.as_ref()).and_then(|(b, image)| {
                let a = tuple_to_row(&entry.rel, &u.new, false)?;
                Ok((ChangeKind::Update, b, image, Some(a)))
            }),
            Message::Delete(d) => old_to_row(&entry.rel, Some(&d.old))
                .map(|(b, image)| (ChangeKind::Delete, b, image, None)),
            _ => unreachable!("filtered above"),
        };
        let (kind, before, image, after) = match decoded {
            Ok(d) => d,
            Err(e) => {
                // A tuple that does not fit its relation: quarantined, the
                // stream goes on.
                mapping
                    .quarantine
                    .push(crate::quarantine::Quarantined::undecodable(
                        ctx.source,
                        &mapping.qualified,
                        &txn.commit_lsn.to_string(),
                        seq,
                        e.to_string(),
                    ));
                return Ok(());
            }
        };
        let pos = Position {
            commit_lsn: txn.commit_lsn,
            seq,
            occurred_at: txn.commit_time,
            ingested_at: Utc::now(),
            identity_key: &entry.identity_key,
        };
        for ev in change_events(mapping, kind, before, image, after, &pos) {
            self.lanes.push(ev);
        }
        Ok(())
    }
}

/// A Relation message's columns as a shape.
fn relation_shape(rel: &Relation) -> Vec<Column> {
    rel.columns
        .iter()
        .map(|c| Column::new(c.name.clone(), values::type_name(c.type_oid)))
        .collect()
}

/// Handle one replication event, then announce and record any schema
/// change it revealed (events first, then the history; see `schema_drift`).
async fn on_event(
    st: &mut State,
    ctx: &SourceCtx<'_>,
    client: &ReplicationClient,
    ev: ReplicationEvent,
) -> Result<(), SessionError> {
    st.handle(ctx, client, ev)?;
    if st.tables.values().any(|m| !m.quarantine.is_empty()) {
        crate::quarantine::flush(
            ctx.log,
            ctx.source,
            st.tables.values().map(|m| &*m.quarantine),
        )
        .await
        .map_err(|e| SessionError::Transient(anyhow::anyhow!("writing to the quarantine: {e}")))?;
    }
    for d in std::mem::take(&mut st.drift) {
        append_retry(ctx.log, ctx.source, ctx.shutdown, &d.events).await?;
        schema_drift::record(ctx.log, ctx.source, &d)
            .await
            .map_err(|e| {
                SessionError::Transient(anyhow::anyhow!("recording the schema history: {e}"))
            })?;
    }
    Ok(())
}

/// Append one lane's batch (spawned: lanes run in parallel).
async fn lane_append(
    log: Log,
    source: Arc<str>,
    shutdown: tokio_util::sync::CancellationToken,
    lane: usize,
    events: Vec<Event>,
) -> (usize, u64, Result<(), SessionError>) {
    let r = append_retry(&log, &source, &shutdown, &events).await;
    (lane, events.len() as u64, r)
}

/// Stream from the slot until shutdown or a failure.
///
/// When the stream is quiet an append starts as soon as a change arrives
/// (latency); under load, changes accumulate while the lanes' appends run
/// (throughput), up to `2 × batch_size` events, after which receiving
/// pauses (bounded memory; the replication client keeps answering
/// keepalives meanwhile).
pub async fn stream(
    ctx: &SourceCtx<'_>,
    tables: &[ResolvedTable],
    confirmed: Lsn,
) -> Result<(), SessionError> {
    let cfg = ctx
        .replication_config(&ctx.cfg.slot, Lsn(0))
        .with_ack_lsn(pgwire_replication::Lsn::from_u64(confirmed.0));
    let mut client = ReplicationClient::connect(cfg)
        .await
        .map_err(SessionError::from_wire)?;
    tokio::select! {
        r = client.wait_started() => r.map_err(SessionError::from_wire)?,
        _ = ctx.shutdown.cancelled() => return Err(SessionError::Shutdown),
    }
    tracing::info!(source = ctx.source, slot = ctx.cfg.slot, from = %confirmed, "streaming changes");
    let start_confirmed = confirmed;
    // The recorded shapes; a captured table seen for the first time gets
    // its catalog shape as the baseline (the stream starts at "now").
    let mut shapes = schema_drift::load(ctx.log, ctx.source)
        .await
        .map_err(|e| SessionError::Transient(anyhow::anyhow!("reading the schema history: {e}")))?;
    for t in tables {
        let table = format!("{}.{}", t.schema, t.name);
        if shapes.contains_key(&table) {
            continue;
        }
        let shape: Vec<Column> = t
            .columns
            .iter()
            .map(|(n, o)| Column::new(n.clone(), values::type_name(*o)))
            .collect();
        let at = At {
            position: &confirmed.to_string(),
            seq: 0,
            occurred_at: Utc::now(),
        };
        if let Some(d) = schema_drift::detect(
            ctx.source,
            &ctx.cfg.schema_topic,
            &table,
            true,
            None,
            Some(shape.as_slice()),
            &at,
        ) {
            schema_drift::record(ctx.log, ctx.source, &d)
                .await
                .map_err(|e| {
                    SessionError::Transient(anyhow::anyhow!("recording the schema history: {e}"))
                })?;
        }
        shapes.insert(table, shape);
    }
    let mut st = State {
        tables: catalog::by_name(tables),
        relations: HashMap::new(),
        txn: None,
        lanes: Lanes::new(ctx.log.clone(), ctx.cfg.append_lanes.max(1)),
        confirmed,
        stats: Stats::default(),
        shapes,
        drift: Vec::new(),
    };
    let source: Arc<str> = Arc::from(ctx.source);
    let max_pending = ctx.cfg.batch_size * 2;
    // Dropping the set (on error) aborts appends in flight: harmless, their
    // events are re-read and carry the same ids.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if st.lanes.startable() {
            // Take what is already received (no waiting), then start an
            // append on every idle lane that has events.
            while st.lanes.total_pending < max_pending {
                match client.recv().now_or_never() {
                    Some(Ok(Some(ev))) => on_event(&mut st, ctx, &client, ev).await?,
                    Some(Ok(None)) => {
                        return Err(SessionError::Transient(anyhow::anyhow!(
                            "replication stream ended"
                        )))
                    }
                    Some(Err(e)) => return Err(SessionError::from_wire(e)),
                    None => break,
                }
            }
            for lane in 0..st.lanes.pending.len() {
                if st.lanes.busy[lane] || st.lanes.pending[lane].is_empty() {
                    continue;
                }
                let events = std::mem::take(&mut st.lanes.pending[lane]);
                st.lanes.total_pending -= events.len();
                st.lanes.busy[lane] = true;
                st.stats.appends += 1;
                st.stats.events += events.len() as u64;
                tasks.spawn(lane_append(
                    ctx.log.clone(),
                    source.clone(),
                    ctx.shutdown.clone(),
                    lane,
                    events,
                ));
            }
        }
        st.confirm_ready(&client);
        let receiving = st.lanes.total_pending < max_pending;
        tokio::select! {
            biased;
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let (lane, n, r) = joined.map_err(|e| SessionError::Transient(anyhow::anyhow!("append task failed: {e}")))?;
                r?;
                st.lanes.busy[lane] = false;
                st.lanes.appended[lane] += n;
                st.confirm_ready(&client);
            }
            _ = ctx.shutdown.cancelled() => {
                // Finish what is in flight, append what is pending, confirm.
                while let Some(joined) = tasks.join_next().await {
                    let (lane, n, r) = joined.map_err(|e| SessionError::Transient(anyhow::anyhow!("append task failed: {e}")))?;
                    r?;
                    st.lanes.busy[lane] = false;
                    st.lanes.appended[lane] += n;
                }
                for lane in 0..st.lanes.pending.len() {
                    let events = std::mem::take(&mut st.lanes.pending[lane]);
                    append_retry(ctx.log, ctx.source, ctx.shutdown, &events).await?;
                    st.lanes.appended[lane] += events.len() as u64;
                    st.stats.events += events.len() as u64;
                }
                st.lanes.total_pending = 0;
                st.confirm_ready(&client);
                return stop(ctx, client, start_confirmed, &st).await;
            }
            next = client.recv(), if receiving => match next {
                Ok(Some(ev)) => on_event(&mut st, ctx, &client, ev).await?,
                Ok(None) => return Err(SessionError::Transient(anyhow::anyhow!("replication stream ended"))),
                Err(e) => return Err(SessionError::from_wire(e)),
            },
        }
    }
}

/// Graceful stop: make sure the last confirmed LSN reached the server, then
/// end the stream.
async fn stop(
    ctx: &SourceCtx<'_>,
    mut client: ReplicationClient,
    start_confirmed: Lsn,
    st: &State,
) -> Result<(), SessionError> {
    let confirmed = st.confirmed;
    if confirmed > start_confirmed {
        let metrics = client.metrics();
        let deadline =
            tokio::time::Instant::now() + ctx.cfg.status_interval * 2 + Duration::from_secs(1);
        while metrics.last_applied_lsn().as_u64() < confirmed.0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if metrics.last_applied_lsn().as_u64() < confirmed.0 {
            tracing::warn!(source = ctx.source, lsn = %confirmed,
                "could not report the last confirmed position before stopping; its changes will be read again (and deduplicated)");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
    tracing::info!(source = ctx.source, confirmed = %confirmed, events = st.stats.events, appends = st.stats.appends,
        confirms = st.stats.confirms, "postgres source stopped");
    Err(SessionError::Shutdown)
}
