//! Initial snapshot, consistent with the binlog position streaming starts at.
//!
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT` (InnoDB, REPEATABLE READ)
//! needs no lock and no privilege beyond SELECT. Its binlog position:
//!
//! * **MariaDB**: `SHOW STATUS LIKE 'binlog_snapshot_%'` gives the binlog
//!   file and position that match the transaction's snapshot exactly
//!   (maintained by the server for this purpose): streaming from there
//!   neither misses nor repeats a change.
//! * **MySQL** has no such status: the position is read with `SHOW MASTER
//!   STATUS` just *before* the transaction starts, so a change committed in
//!   between is both in the snapshot and streamed again afterwards (at least
//!   once, never lost). A lock-based exact point would need `FLUSH TABLES
//!   WITH READ LOCK` (RELOAD) or `LOCK INSTANCE FOR BACKUP` (BACKUP_ADMIN),
//!   beyond the least-privilege grants.
//!
//! Rows are read through one streaming `SELECT` per table and appended in
//! batches (bounded memory). The position is stored only after every row is
//! in the log; a crash during the snapshot snapshots again on the next
//! start, and rows already appended carry the same ids (source, table, key)
//! so the log drops them as duplicates within its idempotency window.

use chrono::Utc;
use futures_util::TryStreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use serde_json::Map;

use super::catalog::{current_position, quote_ident, text, ResolvedTable, ServerInfo};
use super::mapping::{change_events, ChangeKind, Position};
use super::position::BinlogPos;
use super::values::text_to_json;
use super::{append_retry, SessionError, SourceCtx};

pub async fn snapshot(
    ctx: &SourceCtx<'_>,
    sql: &mut Conn,
    server: &ServerInfo,
    tables: &[ResolvedTable],
) -> Result<BinlogPos, SessionError> {
    let my = SessionError::from_my;
    let mysql_pos = if server.mariadb {
        None
    } else {
        Some(current_position(sql, ctx, server).await?)
    };
    sql.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(my)?;
    sql.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(my)?;
    let pos = match mysql_pos {
        Some(p) => p,
        None => {
            let rows: Vec<Row> = sql
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(my)?;
            let mut file = None;
            let mut pos = None;
            for r in &rows {
                match text(r, 0).as_deref() {
                    Some("Binlog_snapshot_file") => file = text(r, 1),
                    Some("Binlog_snapshot_position") => {
                        pos = text(r, 1).and_then(|s| s.parse().ok())
                    }
                    _ => {}
                }
            }
            match (file, pos) {
                (Some(file), Some(pos)) if !file.is_empty() => BinlogPos {
                    file,
                    pos,
                    gtid: None,
                },
                _ => {
                    return Err(SessionError::Fatal(anyhow::anyhow!(
                        "{}: the server reports no binlog_snapshot_file/position: is the binary log on (--log-bin)?",
                        ctx.path
                    )))
                }
            }
        }
    };
    tracing::info!(source = ctx.source, position = %pos, "initial snapshot: consistent snapshot started");
    let mut total = 0;
    for t in tables.iter().filter(|t| t.snapshot) {
        let n = snapshot_table(ctx, sql, t, &pos).await?;
        tracing::info!(source = ctx.source, table = %t.mapping.qualified, rows = n, "initial snapshot: table done");
        total += n;
    }
    sql.query_drop("COMMIT").await.map_err(my)?;
    tracing::info!(source = ctx.source, rows = total, position = %pos, "initial snapshot complete");
    Ok(pos)
}

async fn snapshot_table(
    ctx: &SourceCtx<'_>,
    sql: &mut Conn,
    t: &ResolvedTable,
    pos: &BinlogPos,
) -> Result<u64, SessionError> {
    let m = &t.mapping;
    let cols = m
        .columns
        .iter()
        .map(|(n, _)| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ");
    let q = format!(
        "SELECT {cols} FROM {}.{}",
        quote_ident(&t.database),
        quote_ident(&t.name)
    );
    let txn = format!("{}:{}", pos.file, pos.pos);
    let mut result = sql.query_iter(q).await.map_err(SessionError::from_my)?;
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(ctx.cfg.batch_size + 8);
    if let Some(mut rows) = result
        .stream::<Row>()
        .await
        .map_err(SessionError::from_my)?
    {
        while let Some(r) = rows.try_next().await.map_err(SessionError::from_my)? {
            if ctx.shutdown.is_cancelled() {
                return Err(SessionError::Shutdown);
            }
            let mut row = Map::new();
            for (i, (name, kind)) in m.columns.iter().enumerate() {
                let v = r
                    .as_ref(i)
                    .map(|v| text_to_json(kind, v))
                    .unwrap_or_default();
                row.insert(name.clone(), v);
            }
            let now = Utc::now();
            let p = Position {
                txn: &txn,
                seq,
                gtid: None,
                occurred_at: now,
                ingested_at: now,
            };
            batch.extend(change_events(m, ChangeKind::Snapshot, None, Some(row), &p));
            seq += 1;
            if batch.len() >= ctx.cfg.batch_size {
                append_retry(ctx.log, ctx.source, ctx.shutdown, &batch).await?;
                batch.clear();
            }
        }
    }
    drop(result);
    append_retry(ctx.log, ctx.source, ctx.shutdown, &batch).await?;
    crate::quarantine::flush(ctx.log, ctx.source, std::iter::once(&*m.quarantine))
        .await
        .map_err(SessionError::log)?;
    Ok(seq)
}
