//! Initial snapshot, exactly consistent with the stream that follows it.
//!
//! 1. On a gated pgwire-replication session (a replication connection that
//!    has not started streaming), `CREATE_REPLICATION_SLOT <tmp> TEMPORARY
//!    LOGICAL pgoutput (SNAPSHOT 'export')` creates a temporary slot whose
//!    consistent point C matches an exported snapshot.
//! 2. An ordinary connection imports it (`SET TRANSACTION SNAPSHOT`) in a
//!    REPEATABLE READ transaction and reads the tables through a cursor,
//!    appending `op = snapshot` events in batches (bounded memory).
//! 3. Only when every row is in the log, `pg_copy_logical_replication_slot`
//!    copies the temporary slot to the permanent one (same consistent point,
//!    persistent). The gated session then ends and the temporary slot goes.
//!
//! Streaming from the permanent slot starts exactly after the snapshot. A
//! crash during the snapshot leaves no permanent slot (the temporary one
//! dies with its session), so the next start snapshots again; rows already
//! appended carry the same ids (slot, table, key) and the log drops them as
//! duplicates within its idempotency window.

use std::sync::Arc;

use chrono::Utc;
use pgwire_replication::ReplicationClient;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::catalog::{qualified, quote_ident, quote_literal, ResolvedTable};
use super::mapping::{change_events, BeforeImage, ChangeKind, Position, Row};
use super::pgoutput::Lsn;
use super::{append_with_retry, values, SessionError, SourceCtx};

/// Create `slot` with an initial snapshot of the tables that ask for one.
/// Returns the slot's consistent point.
pub async fn create_slot_with_snapshot(
    ctx: &SourceCtx<'_>,
    client: &Client,
    tables: &[ResolvedTable],
) -> Result<Lsn, SessionError> {
    let tmp = format!("sy_snap_{:016x}", rand_u64());
    let mut gated = ReplicationClient::connect_gated(ctx.replication_config(&tmp, Lsn(0)))
        .await
        .map_err(SessionError::from_wire)?;
    let rows = gated
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {tmp} TEMPORARY LOGICAL pgoutput (SNAPSHOT 'export')"
        ))
        .await
        .map_err(SessionError::from_wire)?;
    let row = rows.into_iter().next().ok_or_else(|| {
        SessionError::Transient(anyhow::anyhow!("CREATE_REPLICATION_SLOT returned no row"))
    })?;
    let text = |i: usize| -> Result<String, SessionError> {
        row.get(i)
            .and_then(|v| v.as_ref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .ok_or_else(|| {
                SessionError::Transient(anyhow::anyhow!(
                    "CREATE_REPLICATION_SLOT: column {i} missing"
                ))
            })
    };
    let consistent = Lsn::parse(&text(1)?).ok_or_else(|| {
        SessionError::Transient(anyhow::anyhow!(
            "CREATE_REPLICATION_SLOT: bad consistent point"
        ))
    })?;
    let snapshot_name = text(2)?;
    tracing::info!(source = ctx.source, slot = ctx.cfg.slot, consistent_point = %consistent, snapshot = %snapshot_name,
        "initial snapshot: exported snapshot created");

    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&snapshot_name)
        ))
        .await
        .map_err(SessionError::from_pg)?;
    let mut total = 0u64;
    for t in tables.iter().filter(|t| t.snapshot) {
        let n = snapshot_table(ctx, client, t, consistent).await?;
        tracing::info!(source = ctx.source, table = %t.mapping.qualified, rows = n, "initial snapshot: table done");
        total += n;
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(SessionError::from_pg)?;

    // Everything is in the log: make the slot permanent.
    client
        .query_one(
            "SELECT lsn::text FROM pg_copy_logical_replication_slot($1, $2, false)",
            &[&tmp, &ctx.cfg.slot],
        )
        .await
        .map_err(SessionError::from_pg)?;
    drop(gated); // ends the session: the temporary slot is dropped
    tracing::info!(source = ctx.source, slot = ctx.cfg.slot, rows = total, consistent_point = %consistent,
        "initial snapshot complete; replication slot created");
    Ok(consistent)
}

async fn snapshot_table(
    ctx: &SourceCtx<'_>,
    client: &Client,
    t: &ResolvedTable,
    consistent: Lsn,
) -> Result<u64, SessionError> {
    let cols = t
        .columns
        .iter()
        .map(|(n, _)| quote_ident(n))
        .collect::<Vec<_>>()
        .join(", ");
    client
        .batch_execute(&format!(
            "DECLARE sy_snapshot NO SCROLL CURSOR FOR SELECT {cols} FROM {}",
            qualified(&t.schema, &t.name)
        ))
        .await
        .map_err(SessionError::from_pg)?;
    let mapping = Arc::clone(&t.mapping);
    let mut seq = 0u64;
    let mut batch = Vec::with_capacity(ctx.cfg.batch_size + 8);
    let fetch = format!(
        "FETCH FORWARD {} FROM sy_snapshot",
        ctx.cfg.snapshot_fetch_rows
    );
    loop {
        if ctx.shutdown.is_cancelled() {
            return Err(SessionError::Shutdown);
        }
        let msgs = client
            .simple_query(&fetch)
            .await
            .map_err(SessionError::from_pg)?;
        let mut got = 0usize;
        let now = Utc::now();
        for m in msgs {
            let SimpleQueryMessage::Row(r) = m else {
                continue;
            };
            got += 1;
            let mut row = Row::default();
            for (i, (name, typ)) in t.columns.iter().enumerate() {
                let v = match r.try_get(i).map_err(SessionError::from_pg)? {
                    Some(s) => values::text_to_json(*typ, s),
                    None => serde_json::Value::Null,
                };
                row.values.insert(name.clone(), v);
            }
            let pos = Position {
                commit_lsn: consistent,
                seq,
                occurred_at: now,
                ingested_at: now,
                identity_key: &[],
            };
            batch.extend(change_events(
                &mapping,
                ChangeKind::Snapshot,
                None,
                BeforeImage::None,
                Some(row),
                &pos,
            ));
            seq += 1;
            if batch.len() >= ctx.cfg.batch_size {
                append_with_retry(ctx, &batch).await?;
                batch.clear();
            }
        }
        if got == 0 {
            break;
        }
    }
    append_with_retry(ctx, &batch).await?;
    crate::quarantine::flush(ctx.log, ctx.source, std::iter::once(&*mapping.quarantine))
        .await
        .map_err(|e| SessionError::Transient(anyhow::anyhow!("writing to the quarantine: {e}")))?;
    client
        .batch_execute("CLOSE sy_snapshot")
        .await
        .map_err(SessionError::from_pg)?;
    Ok(seq)
}

fn rand_u64() -> u64 {
    // The random tail of a UUIDv7: only needs to be unique among temporary slots.
    uuid::Uuid::now_v7().as_u128() as u64
}
