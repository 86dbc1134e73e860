//! The streaming loop: replication events → decoded changes → events →
//! batched appends → confirmed LSNs.
//!
//! Invariant: an LSN is passed to `update_applied_lsn` (and so reported to
//! Postgres as flushed) only after `Log::append` returned Ok for every event
//! of every transaction that committed at or before it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use pgwire_replication::{ReplicationClient, ReplicationEvent};

use super::catalog::{self, ResolvedTable};
use super::mapping::{change_events, old_to_row, tuple_to_row, BeforeImage, ChangeKind, Position, TableMapping};
use super::pgoutput::{self, Lsn, Message, Relation};
use super::{append_with_retry, SessionError, SourceCtx};
use crate::event::Event;

/// Microseconds between 1970-01-01 and 2000-01-01.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

pub fn pg_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_OFFSET_MICROS)).unwrap_or_else(Utc::now)
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
    pending: Vec<Event>,
    /// End LSN of the last commit whose events are all in `pending` or appended.
    pending_confirm: Option<Lsn>,
    confirmed: Lsn,
    batch_size: usize,
}

impl State {
    fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.pending_confirm.is_some()
    }

    async fn flush(&mut self, ctx: &SourceCtx<'_>, client: &ReplicationClient) -> Result<(), SessionError> {
        if !self.pending.is_empty() {
            append_with_retry(ctx, &self.pending).await?;
            self.pending.clear();
        }
        if let Some(lsn) = self.pending_confirm.take() {
            self.confirm(client, lsn);
        }
        Ok(())
    }

    fn confirm(&mut self, client: &ReplicationClient, lsn: Lsn) {
        if lsn > self.confirmed {
            client.update_applied_lsn(pgwire_replication::Lsn::from_u64(lsn.0));
            self.confirmed = lsn;
        }
    }

    async fn handle(
        &mut self,
        ctx: &SourceCtx<'_>,
        client: &ReplicationClient,
        ev: ReplicationEvent,
    ) -> Result<(), SessionError> {
        match ev {
            ReplicationEvent::Begin { final_lsn, commit_time_micros, .. } => {
                self.begin(Lsn(final_lsn.as_u64()), commit_time_micros);
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                self.commit(Lsn(end_lsn.as_u64()));
            }
            ReplicationEvent::XLogData { data, .. } => {
                let msg = pgoutput::decode(&data)
                    .map_err(|e| SessionError::Transient(anyhow::anyhow!("undecodable replication message: {e}")))?;
                self.message(ctx, msg)?;
            }
            ReplicationEvent::KeepAlive { wal_end, .. } => {
                // Nothing in flight: everything the server sent before this
                // keepalive is in the log, so its position can be confirmed
                // (lets the slot advance past WAL of unpublished tables).
                if self.txn.is_none() && !self.has_work() {
                    self.confirm(client, Lsn(wal_end.as_u64()));
                }
            }
            ReplicationEvent::Message { .. } | ReplicationEvent::StoppedAt { .. } => {}
            #[allow(unreachable_patterns)]
            _ => {}
        }
        if self.pending.len() >= self.batch_size {
            self.flush(ctx, client).await?;
        }
        Ok(())
    }

    fn begin(&mut self, commit_lsn: Lsn, commit_time: i64) {
        self.txn = Some(Txn { commit_lsn, commit_time: pg_time(commit_time), seq: 0 });
    }

    fn commit(&mut self, end_lsn: Lsn) {
        self.txn = None;
        self.pending_confirm = Some(end_lsn);
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
                let mapping = self.tables.get(&(rel.namespace.clone(), rel.name.clone())).cloned();
                if let Some(old) = self.relations.get(&rel.id) {
                    if old.rel.columns != rel.columns && mapping.is_some() {
                        let cols: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
                        tracing::info!(source = ctx.source, table = %format!("{}.{}", rel.namespace, rel.name),
                            columns = ?cols, "table schema changed");
                    }
                }
                let identity_key = rel.columns.iter().filter(|c| c.is_key).map(|c| c.name.clone()).collect();
                self.relations.insert(rel.id, RelEntry { rel, mapping, identity_key });
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
            return Err(SessionError::Transient(anyhow::anyhow!("row change outside a transaction")));
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
            SessionError::Transient(anyhow::anyhow!("change for relation {rel_id} before its Relation message"))
        })?;
        let Some(mapping) = &entry.mapping else { return Ok(()) };
        let row_err = |e| SessionError::Transient(anyhow::anyhow!("{e}"));
        let (kind, before, image, after) = match &change {
            Message::Insert(i) => (ChangeKind::Insert, None, BeforeImage::None, Some(tuple_to_row(&entry.rel, &i.new, false).map_err(row_err)?)),
            Message::Update(u) => {
                let (before, image) = old_to_row(&entry.rel, u.old.as_ref()).map_err(row_err)?;
                (ChangeKind::Update, before, image, Some(tuple_to_row(&entry.rel, &u.new, false).map_err(row_err)?))
            }
            Message::Delete(d) => {
                let (before, image) = old_to_row(&entry.rel, Some(&d.old)).map_err(row_err)?;
                (ChangeKind::Delete, before, image, None)
            }
            _ => unreachable!("filtered above"),
        };
        let pos = Position {
            commit_lsn: txn.commit_lsn,
            seq,
            occurred_at: txn.commit_time,
            ingested_at: Utc::now(),
            identity_key: &entry.identity_key,
        };
        self.pending.extend(change_events(mapping, kind, before, image, after, &pos));
        Ok(())
    }
}

/// Stream from the slot until shutdown or a failure.
pub async fn stream(ctx: &SourceCtx<'_>, tables: &[ResolvedTable], confirmed: Lsn) -> Result<(), SessionError> {
    let cfg = ctx
        .replication_config(&ctx.cfg.slot, Lsn(0))
        .with_ack_lsn(pgwire_replication::Lsn::from_u64(confirmed.0));
    let mut client = ReplicationClient::connect(cfg).await.map_err(SessionError::from_wire)?;
    tokio::select! {
        r = client.wait_started() => r.map_err(SessionError::from_wire)?,
        _ = ctx.shutdown.cancelled() => return Err(SessionError::Shutdown),
    }
    tracing::info!(source = ctx.source, slot = ctx.cfg.slot, from = %confirmed, "streaming changes");
    let start_confirmed = confirmed;
    let mut st = State {
        tables: catalog::by_name(tables),
        relations: HashMap::new(),
        txn: None,
        pending: Vec::with_capacity(ctx.cfg.batch_size + 16),
        pending_confirm: None,
        confirmed,
        batch_size: ctx.cfg.batch_size,
    };
    loop {
        let next = if st.has_work() {
            if ctx.shutdown.is_cancelled() {
                st.flush(ctx, &client).await?;
                return stop(ctx, client, start_confirmed, st.confirmed).await;
            }
            // Batch across transactions while more is already received;
            // flush as soon as the stream goes quiet (low latency).
            match client.recv().now_or_never() {
                Some(r) => r,
                None => {
                    st.flush(ctx, &client).await?;
                    continue;
                }
            }
        } else {
            tokio::select! {
                biased;
                _ = ctx.shutdown.cancelled() => return stop(ctx, client, start_confirmed, st.confirmed).await,
                r = client.recv() => r,
            }
        };
        match next {
            Ok(Some(ev)) => st.handle(ctx, &client, ev).await?,
            Ok(None) => return Err(SessionError::Transient(anyhow::anyhow!("replication stream ended"))),
            Err(e) => return Err(SessionError::from_wire(e)),
        }
    }
}

/// Graceful stop: make sure the last confirmed LSN reached the server, then
/// end the stream.
async fn stop(
    ctx: &SourceCtx<'_>,
    mut client: ReplicationClient,
    start_confirmed: Lsn,
    confirmed: Lsn,
) -> Result<(), SessionError> {
    if confirmed > start_confirmed {
        let metrics = client.metrics();
        let deadline = tokio::time::Instant::now() + ctx.cfg.status_interval * 2 + Duration::from_secs(1);
        while metrics.last_applied_lsn().as_u64() < confirmed.0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if metrics.last_applied_lsn().as_u64() < confirmed.0 {
            tracing::warn!(source = ctx.source, lsn = %confirmed,
                "could not report the last confirmed position before stopping; its changes will be read again (and deduplicated)");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.shutdown()).await;
    tracing::info!(source = ctx.source, confirmed = %confirmed, "postgres source stopped");
    Err(SessionError::Shutdown)
}
