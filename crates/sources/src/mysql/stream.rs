//! The streaming loop: binlog events → row changes → events → appends →
//! the stored position.
//!
//! **The position rule.** The binlog position stored in Redis is always the
//! end of a transaction (its XID / COMMIT event, a standalone DDL statement,
//! or a rotation between transactions) whose events — and those of every
//! earlier transaction — `Log::append` has acknowledged. A transaction's
//! events may be appended in several batches while it is still being
//! received (bounded memory for huge transactions); a crash before its end
//! is stored re-reads it from its start, and its events get the same ids.
//!
//! Appends run one at a time, in binlog order, while the next events are
//! decoded: a quiet stream appends each change at once (latency), a busy one
//! accumulates up to `2 × batch_size` events while the previous append runs
//! (throughput), after which reading pauses.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use mysql_async::binlog::events::{
    Event as BinlogEvent, EventData, QueryEvent, RotateEvent, RowsEventData,
};
use mysql_async::binlog::EventType;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use serde_json::{Map, Value};

use super::catalog::{self, ResolvedTable, ServerInfo};
use super::mapping::{change_events, ChangeKind, Position, TableMapping};
use super::position::BinlogPos;
use super::values::binlog_to_json;
use super::{append_retry, store_position, SessionError, SourceCtx};
use crate::schema_drift::{self, At, Column, Detected};
use switchyard_core::event::Event;

/// MariaDB's own event types (not in mysql_common's list).
const MARIADB_GTID_EVENT: u8 = 162;
/// MariaDB GTID event flag: the group is one statement without BEGIN/COMMIT (DDL).
const FL_STANDALONE: u8 = 1;

struct Txn {
    /// `file:pos` of the transaction's first event (the id base).
    start: String,
    seq: u64,
    time: DateTime<Utc>,
    gtid: Option<String>,
    /// MariaDB standalone group: ends with its one statement.
    standalone: bool,
}

struct State {
    tables: HashMap<(String, String), (usize, Arc<TableMapping>)>,
    file: String,
    /// A format description event was read: the reader strips checksums from here on.
    seen_fde: bool,
    txn: Option<Txn>,
    last_gtid: Option<String>,
    pending: Vec<Event>,
    routed: u64,
    appended: u64,
    /// Transaction ends with the number of events routed up to them, and the
    /// commit time of the oldest transaction merged into each (for the lag).
    checkpoints: VecDeque<(BinlogPos, u64, DateTime<Utc>)>,
    confirmed: BinlogPos,
    stored: BinlogPos,
    events: u64,
    appends: u64,
    /// Last known shape per table (`database.name`), as recorded in Redis.
    shapes: HashMap<String, Vec<Column>>,
    /// Schema changes detected, to append and record before going on.
    drift: Vec<Detected>,
}

/// A table's columns as a shape.
pub fn shape(columns: &[(String, super::values::ColKind)]) -> Vec<Column> {
    columns
        .iter()
        .map(|(n, k)| Column::new(n.clone(), k.type_name()))
        .collect()
}

impl State {
    /// Compare `table`'s new shape (`None`: gone) with the last known one
    /// and queue the announcement. `at`: the statement's position.
    fn drift_check(
        &mut self,
        ctx: &SourceCtx<'_>,
        table: &str,
        captured: bool,
        new: Option<Vec<Column>>,
        at: &At<'_>,
    ) {
        let old = self.shapes.get(table).map(Vec::as_slice);
        if let Some(d) = schema_drift::detect(
            ctx.source,
            &ctx.cfg.schema_topic,
            table,
            captured,
            old,
            new.as_deref(),
            at,
        ) {
            match new {
                Some(n) => self.shapes.insert(table.to_string(), n),
                None => self.shapes.remove(table),
            };
            self.drift.push(d);
        }
    }

    fn begin(&mut self, start_pos: u64, time: u32, gtid: Option<String>, standalone: bool) {
        self.txn = Some(Txn {
            start: format!("{}:{start_pos}", self.file),
            seq: 0,
            time: DateTime::from_timestamp(time as i64, 0).unwrap_or_else(Utc::now),
            gtid,
            standalone,
        });
    }

    /// A transaction (or statement, or rotation) ended at `end` in the
    /// current file: the next event starts there.
    fn commit(&mut self, end: u64) {
        let mut time = Utc::now();
        if let Some(t) = self.txn.take() {
            time = t.time;
            if t.gtid.is_some() {
                self.last_gtid = t.gtid;
            }
        }
        let pos = BinlogPos {
            file: self.file.clone(),
            pos: end,
            gtid: self.last_gtid.clone(),
        };
        match self.checkpoints.back_mut() {
            Some((p, mark, _)) if *mark == self.routed => *p = pos,
            _ => self.checkpoints.push_back((pos, self.routed, time)),
        }
    }

    /// Advance `confirmed` past every checkpoint whose events are appended.
    fn confirm(&mut self) {
        while let Some((_, mark, _)) = self.checkpoints.front() {
            if *mark > self.appended {
                break;
            }
            if let Some((p, _, _)) = self.checkpoints.pop_front() {
                self.confirmed = p;
            }
        }
    }

    /// Seconds since the commit of the oldest transaction read from the
    /// binlog but not yet all in Redis (0: caught up). Binlog times have
    /// one-second resolution.
    fn lag_seconds(&self, now: DateTime<Utc>) -> f64 {
        let oldest = self
            .checkpoints
            .front()
            .map(|c| c.2)
            .into_iter()
            .chain(self.txn.as_ref().map(|t| t.time))
            .min();
        oldest.map_or(0.0, |t| {
            ((now - t).num_milliseconds().max(0)) as f64 / 1000.0
        })
    }
}

enum Step {
    Appended(u64, Result<(), SessionError>),
    Event(BinlogEvent),
    Tick,
    Shutdown,
}

/// Stream from `start` until shutdown or a failure.
pub async fn stream(
    ctx: &SourceCtx<'_>,
    mut sql: Conn,
    server: &ServerInfo,
    tables: Vec<ResolvedTable>,
    start: BinlogPos,
) -> Result<(), SessionError> {
    let my = SessionError::from_my;
    let mut conn = ctx.connect().await?;
    // Heartbeats on a quiet stream, so a dead connection is noticed.
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        ctx.cfg.heartbeat.as_nanos()
    ))
    .await
    .map_err(my)?;
    if server.mariadb {
        // Announce GTID support: MariaDB then sends its GTID events (the
        // transaction's `domain-server-seq`) instead of a plain BEGIN.
        conn.query_drop("SET @mariadb_slave_capability = 4")
            .await
            .map_err(my)?;
    }
    let req = BinlogStreamRequest::new(ctx.cfg.server_id)
        .with_filename(start.file.as_bytes())
        .with_pos(start.pos);
    let mut binlog = conn.get_binlog_stream(req).await.map_err(my)?;
    tracing::info!(source = ctx.source, from = %start, server = %server.version, "streaming the binlog");

    let mut st = State {
        tables: tables
            .iter()
            .map(|t| {
                (
                    (t.database.clone(), t.name.clone()),
                    (t.index, Arc::clone(&t.mapping)),
                )
            })
            .collect(),
        file: start.file.clone(),
        seen_fde: false,
        txn: None,
        last_gtid: start.gtid.clone(),
        pending: Vec::new(),
        routed: 0,
        appended: 0,
        checkpoints: VecDeque::new(),
        confirmed: start.clone(),
        stored: start.clone(),
        events: 0,
        appends: 0,
        shapes: HashMap::new(),
        drift: Vec::new(),
    };
    // The recorded shapes against the catalog's: a captured table seen for
    // the first time is the baseline; one that changed while the source
    // was stopped is announced now (at the start position).
    st.shapes = schema_drift::load(ctx.log, ctx.source)
        .await
        .map_err(|e| SessionError::Transient(anyhow::anyhow!("reading the schema history: {e}")))?;
    let start_at = format!("{}:{}", start.file, start.pos);
    for t in &tables {
        let at = At {
            position: &start_at,
            seq: 0,
            occurred_at: Utc::now(),
        };
        st.drift_check(
            ctx,
            &t.mapping.qualified,
            true,
            Some(shape(&t.mapping.columns)),
            &at,
        );
    }
    flush_drift(ctx, &mut st).await?;
    let source: Arc<str> = Arc::from(ctx.source);
    let max_pending = ctx.cfg.batch_size * 2;
    let silence = ctx.cfg.heartbeat * 5 + Duration::from_secs(1);
    let mut last_event = tokio::time::Instant::now();
    let mut last_lag_bytes: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Dropping the set (on error) aborts an append in flight: harmless, its
    // events are re-read and carry the same ids.
    let mut inflight: tokio::task::JoinSet<(u64, Result<(), SessionError>)> =
        tokio::task::JoinSet::new();
    loop {
        if inflight.is_empty() && !st.pending.is_empty() {
            let events = std::mem::take(&mut st.pending);
            st.appends += 1;
            let (log, source, shutdown) = (ctx.log.clone(), source.clone(), ctx.shutdown.clone());
            inflight.spawn(async move {
                let r = append_retry(&log, &source, &shutdown, &events).await;
                (events.len() as u64, r)
            });
        }
        let receiving = st.pending.len() < max_pending;
        let step = tokio::select! {
            biased;
            Some(j) = inflight.join_next(), if !inflight.is_empty() => {
                let (n, r) = j.map_err(|e| SessionError::Transient(anyhow::anyhow!("append task failed: {e}")))?;
                Step::Appended(n, r)
            }
            _ = ctx.shutdown.cancelled() => Step::Shutdown,
            _ = tick.tick() => Step::Tick,
            next = binlog.next(), if receiving => match next {
                None => return Err(SessionError::Transient(anyhow::anyhow!("the binlog stream ended"))),
                Some(Err(e)) => return Err(my(e)),
                Some(Ok(ev)) => Step::Event(ev),
            },
        };
        match step {
            Step::Appended(n, r) => {
                r?;
                st.appended += n;
                st.events += n;
                st.confirm();
                if st.confirmed != st.stored {
                    store_position(ctx, &st.confirmed).await?;
                    st.stored = st.confirmed.clone();
                }
            }
            Step::Tick => {
                // Checked here, not with a timeout around each read: the
                // loop also wakes for ticks and appends.
                if !receiving {
                    // Paused by us (appends behind), not by the server.
                    last_event = tokio::time::Instant::now();
                } else if last_event.elapsed() > silence {
                    return Err(SessionError::Transient(anyhow::anyhow!(
                        "no binlog event or heartbeat for {silence:?}: the connection is dead"
                    )));
                }
                st.confirm();
                if st.confirmed != st.stored && inflight.is_empty() && st.pending.is_empty() {
                    store_position(ctx, &st.confirmed).await?;
                    st.stored = st.confirmed.clone();
                }
                let label = switchyard_core::metrics::SourceLabel {
                    source: ctx.source.to_string(),
                };
                let m = switchyard_core::metrics::get();
                m.cdc_lag_seconds
                    .get_or_create(&label)
                    .set(st.lag_seconds(Utc::now()));
                if last_lag_bytes.is_none_or(|t| t.elapsed() >= LAG_BYTES_EVERY) {
                    last_lag_bytes = Some(tokio::time::Instant::now());
                    match lag_bytes(&mut sql, ctx, server, &st.confirmed).await {
                        Ok(b) => {
                            m.cdc_lag_bytes.get_or_create(&label).set(b as i64);
                        }
                        Err(e) => {
                            tracing::debug!(source = ctx.source, error = %e, "cannot read the binlog's end for the lag")
                        }
                    }
                }
            }
            Step::Event(ev) => {
                last_event = tokio::time::Instant::now();
                handle(ctx, &mut sql, server, &binlog, &mut st, ev).await?;
                flush_drift(ctx, &mut st).await?;
            }
            Step::Shutdown => {
                // Finish what is in flight, append what is pending, store.
                while let Some(j) = inflight.join_next().await {
                    let (n, r) = j.map_err(|e| {
                        SessionError::Transient(anyhow::anyhow!("append task failed: {e}"))
                    })?;
                    r?;
                    st.appended += n;
                    st.events += n;
                }
                let events = std::mem::take(&mut st.pending);
                append_retry(ctx.log, ctx.source, ctx.shutdown, &events).await?;
                st.appended += events.len() as u64;
                st.events += events.len() as u64;
                st.confirm();
                if st.confirmed != st.stored {
                    if let Err(e) = super::position::store(ctx.log, ctx.source, &st.confirmed).await
                    {
                        tracing::warn!(source = ctx.source, error = %e,
                            "could not store the last position before stopping; its changes will be read again (and deduplicated)");
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), binlog.close()).await;
                tracing::info!(source = ctx.source, position = %st.confirmed, events = st.events,
                    appends = st.appends, "mysql source stopped");
                return Err(SessionError::Shutdown);
            }
        }
    }
}

/// How often the binlog's end is read for the lag in bytes (one query or two).
const LAG_BYTES_EVERY: Duration = Duration::from_secs(2);

/// Bytes of binlog between `confirmed` (everything before it is in Redis)
/// and the server's current end.
async fn lag_bytes(
    sql: &mut Conn,
    ctx: &SourceCtx<'_>,
    server: &ServerInfo,
    confirmed: &BinlogPos,
) -> Result<u64, anyhow::Error> {
    let end = catalog::current_position(sql, ctx, server)
        .await
        .map_err(|e| match e {
            SessionError::Fatal(e) | SessionError::Transient(e) => e,
            _ => anyhow::anyhow!("stopped"),
        })?;
    if end.file == confirmed.file {
        return Ok(end.pos.saturating_sub(confirmed.pos));
    }
    // Log_name, File_size (MySQL 8 adds Encrypted).
    let rows: Vec<mysql_async::Row> = sql
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| anyhow::anyhow!("SHOW BINARY LOGS: {e}"))?;
    let files: Vec<(String, u64)> = rows
        .iter()
        .filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1)?)))
        .collect();
    Ok(bytes_between(&files, confirmed, &end))
}

/// Bytes from `from` to `to` over the server's binlog files (name, size), in order.
fn bytes_between(files: &[(String, u64)], from: &BinlogPos, to: &BinlogPos) -> u64 {
    let mut total = 0u64;
    let mut counting = false;
    for (name, size) in files {
        if *name == from.file {
            counting = true;
            if *name == to.file {
                return to.pos.saturating_sub(from.pos);
            }
            total += size.saturating_sub(from.pos);
        } else if *name == to.file {
            return total + to.pos;
        } else if counting {
            total += size;
        }
    }
    total
}

/// Write the quarantined records, then announce and record the schema
/// changes detected (events first, then the history; see `schema_drift`).
async fn flush_drift(ctx: &SourceCtx<'_>, st: &mut State) -> Result<(), SessionError> {
    if st.tables.values().any(|(_, m)| !m.quarantine.is_empty()) {
        crate::quarantine::flush(
            ctx.log,
            ctx.source,
            st.tables.values().map(|(_, m)| &*m.quarantine),
        )
        .await
        .map_err(SessionError::log)?;
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

async fn handle(
    ctx: &SourceCtx<'_>,
    sql: &mut Conn,
    server: &ServerInfo,
    binlog: &BinlogStream,
    st: &mut State,
    ev: BinlogEvent,
) -> Result<(), SessionError> {
    let h = ev.header();
    let ty = h.event_type_raw();
    let end = h.log_pos() as u64;
    let start = end.saturating_sub(h.event_size() as u64);
    let bad = |what: &str, e: std::io::Error| {
        SessionError::Transient(anyhow::anyhow!(
            "undecodable binlog {what} event at {}:{start}: {e}",
            st.file
        ))
    };
    if ty == MARIADB_GTID_EVENT {
        // seq_no (8), domain_id (4), flags (1) …
        let d = ev.data();
        if d.len() >= 13 {
            let seq = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
            let domain = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
            let gtid = format!("{domain}-{}-{seq}", h.server_id());
            st.begin(start, h.timestamp(), Some(gtid), d[12] & FL_STANDALONE != 0);
        }
        return Ok(());
    }
    let Ok(kind) = h.event_type() else {
        return Ok(()); // other MariaDB events: annotate, checkpoint, GTID list
    };
    match kind {
        EventType::FORMAT_DESCRIPTION_EVENT => st.seen_fde = true,
        EventType::ROTATE_EVENT => {
            let r: RotateEvent<'_> = ev.read_event().map_err(|e| bad("rotate", e))?;
            let mut name = r.name_raw().to_vec();
            // The first (artificial) rotate comes before any format
            // description, so the reader does not know to strip its CRC32.
            if !st.seen_fde && server.checksum && name.len() > 4 {
                name.truncate(name.len() - 4);
            }
            st.file = String::from_utf8_lossy(&name).into_owned();
            if st.txn.is_none() {
                st.commit(r.position());
            }
        }
        EventType::XID_EVENT => st.commit(end),
        EventType::QUERY_EVENT => {
            let q: QueryEvent<'_> = ev.read_event().map_err(|e| bad("query", e))?;
            let text = q.query();
            let t = text.trim();
            if t.eq_ignore_ascii_case("BEGIN") {
                if st.txn.is_none() {
                    st.begin(start, h.timestamp(), None, false);
                }
            } else if t.eq_ignore_ascii_case("COMMIT") || t.eq_ignore_ascii_case("ROLLBACK") {
                st.commit(end);
            } else if st.txn.as_ref().is_none_or(|x| x.standalone) {
                // A statement of its own (DDL): the captured tables' columns
                // may have changed.
                let at = format!("{}:{start}", st.file);
                let db = q.schema().into_owned();
                ddl(ctx, sql, server, st, t, &db, &at, h.timestamp()).await?;
                st.commit(end);
            }
        }
        EventType::WRITE_ROWS_EVENT
        | EventType::UPDATE_ROWS_EVENT
        | EventType::DELETE_ROWS_EVENT
        | EventType::WRITE_ROWS_EVENT_V1
        | EventType::UPDATE_ROWS_EVENT_V1
        | EventType::DELETE_ROWS_EVENT_V1 => {
            let Some(EventData::RowsEvent(rows)) = ev.read_data().map_err(|e| bad("rows", e))?
            else {
                return Ok(());
            };
            rows_event(ctx, sql, server, binlog, st, &rows, start, h.timestamp()).await?;
        }
        EventType::PARTIAL_UPDATE_ROWS_EVENT => {
            return Err(SessionError::Fatal(anyhow::anyhow!(
                "{}: the server writes partial JSON updates (binlog_row_value_options = PARTIAL_JSON); \
                 set binlog_row_value_options = '' so updates carry full after-images",
                ctx.path
            )));
        }
        _ => {}
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn ddl(
    ctx: &SourceCtx<'_>,
    sql: &mut Conn,
    server: &ServerInfo,
    st: &mut State,
    statement: &str,
    default_db: &str,
    at: &str,
    time: u32,
) -> Result<(), SessionError> {
    let lower = statement.to_ascii_lowercase();
    if !(lower.starts_with("alter")
        || lower.starts_with("rename")
        || lower.starts_with("create")
        || lower.starts_with("drop")
        || lower.starts_with("truncate"))
    {
        return Ok(());
    }
    let occurred_at = DateTime::from_timestamp(time as i64, 0).unwrap_or_else(Utc::now);
    if let Some((db, name)) = created_table(statement, default_db) {
        // A new table in a database the source captures from: announced
        // (it is not captured until it is configured).
        if st.tables.keys().any(|(d, _)| *d == db)
            && !st.tables.contains_key(&(db.clone(), name.clone()))
        {
            let columns = catalog::table_columns(sql, server, &db, &name).await?;
            if !columns.is_empty() {
                let at = At {
                    position: at,
                    seq: 0,
                    occurred_at,
                };
                st.drift_check(
                    ctx,
                    &format!("{db}.{name}"),
                    false,
                    Some(shape(&columns)),
                    &at,
                );
            }
        }
        return Ok(());
    }
    let keys: Vec<(String, String)> = st.tables.keys().cloned().collect();
    for (db, name) in keys {
        if !lower.contains(&name.to_ascii_lowercase()) {
            continue;
        }
        if lower.starts_with("truncate") {
            tracing::warn!(source = ctx.source, table = %format!("{db}.{name}"),
                "TRUNCATE is not captured (no event is emitted for the removed rows)");
            continue;
        }
        let at = At {
            position: at,
            seq: 0,
            occurred_at,
        };
        reload(ctx, sql, server, st, &db, &name, &at).await?;
    }
    Ok(())
}

/// `CREATE TABLE [IF NOT EXISTS] [db.]name …` → (db, name); backquotes
/// removed. Other statements: `None`.
pub fn created_table(statement: &str, default_db: &str) -> Option<(String, String)> {
    let mut words = statement.split_whitespace();
    let mut w = |want: &str| words.next().is_some_and(|x| x.eq_ignore_ascii_case(want));
    if !(w("create") && w("table")) {
        return None;
    }
    let mut rest = statement.split_whitespace().skip(2).peekable();
    if rest.peek().is_some_and(|x| x.eq_ignore_ascii_case("if")) {
        rest.next();
        rest.next();
        rest.next();
    }
    let ident = rest.next()?;
    let ident = ident.split('(').next()?;
    let (db, name) = match crate::cdc_rules::split_qualified_name(ident, '`', "database") {
        Ok((Some(d), n)) => (d, n),
        Ok((None, n)) => (default_db.to_string(), n),
        Err(_) => return None,
    };
    (!db.is_empty() && !name.is_empty()).then_some((db, name))
}

/// Re-read a table's columns from the catalog (after DDL), announcing
/// the change. A table that is gone keeps its columns (its remaining
/// binlog rows still decode) and is announced as dropped.
async fn reload(
    ctx: &SourceCtx<'_>,
    sql: &mut Conn,
    server: &ServerInfo,
    st: &mut State,
    db: &str,
    name: &str,
    at: &At<'_>,
) -> Result<(), SessionError> {
    let Some((index, old)) = st.tables.get(&(db.to_string(), name.to_string())).cloned() else {
        return Ok(());
    };
    let columns = catalog::table_columns(sql, server, db, name).await?;
    if columns.is_empty() {
        st.drift_check(ctx, &old.qualified, true, None, at);
        return Ok(());
    }
    st.drift_check(ctx, &old.qualified, true, Some(shape(&columns)), at);
    if columns == old.columns {
        return Ok(());
    }
    tracing::warn!(source = ctx.source, table = %old.qualified,
        columns = ?columns.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        "table columns changed; decoding with the new columns from here on");
    let mut m = (*old).clone();
    m.columns = columns;
    st.tables
        .insert((db.to_string(), name.to_string()), (index, Arc::new(m)));
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn rows_event(
    ctx: &SourceCtx<'_>,
    sql: &mut Conn,
    server: &ServerInfo,
    binlog: &BinlogStream,
    st: &mut State,
    rows: &RowsEventData<'_>,
    start: u64,
    time: u32,
) -> Result<(), SessionError> {
    let Some(tme) = binlog.get_tme(rows.table_id()) else {
        return Err(SessionError::Transient(anyhow::anyhow!(
            "rows event for table id {} without its table map",
            rows.table_id()
        )));
    };
    let key = (
        tme.database_name().into_owned(),
        tme.table_name().into_owned(),
    );
    if !st.tables.contains_key(&key) {
        return Ok(());
    }
    if st.tables[&key].1.columns.len() != tme.columns_count() as usize {
        let at = format!("{}:{start}", st.file);
        let occurred_at = DateTime::from_timestamp(time as i64, 0).unwrap_or_else(Utc::now);
        let at = At {
            position: &at,
            seq: 0,
            occurred_at,
        };
        reload(ctx, sql, server, st, &key.0, &key.1, &at).await?;
        let now = st.tables[&key].1.columns.len();
        if now != tme.columns_count() as usize {
            // Rows written before a later change of the table (the source
            // is behind): they cannot be matched to columns. Quarantined,
            // the stream goes on.
            let m = &st.tables[&key].1;
            m.quarantine.push(crate::quarantine::Quarantined::undecodable(
                ctx.source,
                &m.qualified,
                &format!("{}:{start}", st.file),
                0,
                format!(
                    "the binlog rows event has {} columns, the table now {now} (it changed since); its rows are not captured",
                    tme.columns_count()
                ),
            ));
            return Ok(());
        }
    }
    let mapping = Arc::clone(&st.tables[&key].1);
    if st.txn.is_none() {
        st.begin(start, time, None, false);
    }
    let kind = match rows {
        RowsEventData::WriteRowsEvent(_) | RowsEventData::WriteRowsEventV1(_) => ChangeKind::Insert,
        RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_) => {
            ChangeKind::Update
        }
        _ => ChangeKind::Delete,
    };
    let before_cols: Vec<usize> = rows
        .columns_before_image()
        .map(|b| b.iter_ones().collect())
        .unwrap_or_default();
    let after_cols: Vec<usize> = rows
        .columns_after_image()
        .map(|b| b.iter_ones().collect())
        .unwrap_or_default();
    let decode = |row: &mysql_async::binlog::row::BinlogRow, cols: &[usize]| {
        let mut m = Map::new();
        for (k, &ci) in cols.iter().enumerate() {
            let Some((name, kind)) = mapping.columns.get(ci) else {
                continue;
            };
            let v = row
                .as_ref(k)
                .map(|v| binlog_to_json(kind, v))
                .unwrap_or(Value::Null);
            m.insert(name.clone(), v);
        }
        m
    };
    let now = Utc::now();
    let mut it = rows.rows(tme);
    loop {
        // mysql_common's decoders can panic on values it mis-handles
        // (0.37: a negative TIME(1)/TIME(2) with a fraction, in debug
        // builds): stop with the row's position rather than lose the task.
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| it.next()));
        let failed = match next {
            Ok(Some(Ok(r))) => Ok(r),
            Ok(None) => break,
            Err(_) => Err(
                "the binlog decoder failed on one of its values (mysql_common cannot \
                 decode it; see the MySQL source's known limits in ARCHITECTURE.md)"
                    .to_string(),
            ),
            Ok(Some(Err(e))) => Err(format!("undecodable row: {e}")),
        };
        let (b, a) = match failed {
            Ok(r) => r,
            Err(reason) => {
                // This row and the rest of its rows event cannot be read
                // (the decoder's state is unknown): quarantined, the
                // stream goes on with the next event.
                let seq = st.txn.as_ref().map_or(0, |t| t.seq);
                mapping
                    .quarantine
                    .push(crate::quarantine::Quarantined::undecodable(
                        ctx.source,
                        &mapping.qualified,
                        &format!("{}:{start}", st.file),
                        seq,
                        format!("{reason}; the rest of this rows event is skipped"),
                    ));
                break;
            }
        };
        let before = b.as_ref().map(|b| decode(b, &before_cols));
        let after = a.as_ref().map(|a| decode(a, &after_cols));
        let Some(txn) = st.txn.as_mut() else {
            unreachable!("begun above")
        };
        let pos = Position {
            txn: &txn.start,
            seq: txn.seq,
            gtid: txn.gtid.as_deref(),
            occurred_at: txn.time,
            ingested_at: now,
        };
        txn.seq += 1;
        let evs = change_events(&mapping, kind, before, after, &pos);
        st.routed += evs.len() as u64;
        st.pending.extend(evs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(file: &str, pos: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            pos,
            gtid: None,
        }
    }

    #[test]
    fn bytes_between_counts_across_binlog_files() {
        let files = vec![
            ("bin.000001".to_string(), 1000),
            ("bin.000002".to_string(), 500),
            ("bin.000003".to_string(), 300),
        ];
        assert_eq!(
            bytes_between(&files, &pos("bin.000002", 100), &pos("bin.000002", 450)),
            350
        );
        // 900 left of the first file, all of the second, 120 of the third.
        assert_eq!(
            bytes_between(&files, &pos("bin.000001", 100), &pos("bin.000003", 120)),
            900 + 500 + 120
        );
        assert_eq!(
            bytes_between(&files, &pos("bin.000001", 1000), &pos("bin.000002", 4)),
            4
        );
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_transaction_not_yet_in_redis() {
        let t0 = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let mut st = State {
            tables: HashMap::new(),
            file: "bin.000001".into(),
            seen_fde: true,
            txn: None,
            last_gtid: None,
            pending: Vec::new(),
            routed: 0,
            appended: 0,
            checkpoints: VecDeque::new(),
            confirmed: pos("bin.000001", 4),
            stored: pos("bin.000001", 4),
            events: 0,
            appends: 0,
            shapes: HashMap::new(),
            drift: Vec::new(),
        };
        let now = t0 + chrono::Duration::seconds(30);
        assert_eq!(st.lag_seconds(now), 0.0, "nothing read: caught up");
        st.begin(4, 1_000_000, None, false);
        st.routed += 2;
        st.commit(200);
        st.begin(200, 1_000_010, None, false);
        st.routed += 1;
        st.commit(300);
        assert_eq!(
            st.lag_seconds(now),
            30.0,
            "the first transaction is not appended"
        );
        st.appended = 2;
        st.confirm();
        assert_eq!(st.confirmed, pos("bin.000001", 200));
        assert_eq!(
            st.lag_seconds(now),
            20.0,
            "the second one is the oldest left"
        );
        st.appended = 3;
        st.confirm();
        assert_eq!(st.lag_seconds(now), 0.0);
    }
}
