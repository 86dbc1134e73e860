//! A CDC source's quarantine: records it could not map (an invalid topic
//! from column values, an oversized event, an undecodable row), kept for an
//! operator instead of stopping the source. One hash per source,
//! `<ns>:quarantine:{src:<name>}`: record id → JSON (written by
//! `switchyard_sources::quarantine`). Keyed by id, so a record quarantined
//! again (its change re-read after a crash) replaces itself.

use crate::log::{Log, LogError};

fn key(log: &Log, source: &str) -> String {
    format!("{}:quarantine:{{src:{source}}}", log.keys().namespace)
}

/// Store records (id, JSON).
pub async fn put(log: &Log, source: &str, entries: &[(String, String)]) -> Result<(), LogError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut c = log.conn().await?;
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key(log, source));
    for (id, json) in entries {
        cmd.arg(id).arg(json);
    }
    let _: i64 = cmd.query_async(&mut c).await?;
    Ok(())
}

/// Every record (id, JSON), in no particular order.
pub async fn all(log: &Log, source: &str) -> Result<Vec<(String, String)>, LogError> {
    let mut c = log.conn().await?;
    let m: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(key(log, source))
        .query_async(&mut c)
        .await?;
    Ok(m.into_iter().collect())
}

/// Remove one record.
pub async fn remove(log: &Log, source: &str, id: &str) -> Result<(), LogError> {
    let mut c = log.conn().await?;
    let _: i64 = redis::cmd("HDEL")
        .arg(key(log, source))
        .arg(id)
        .query_async(&mut c)
        .await?;
    Ok(())
}
