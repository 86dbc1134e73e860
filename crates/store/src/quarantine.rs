//! A source's quarantine: CDC events that the schema registry refused,
//! kept rather than dropped, until a fixed schema lets them be replayed.
//!
//! One hash per source, `<ns>:quarantine:{src-<name>}`: field = event id,
//! value = JSON `{"event": <the canonical event>, "reason": "...",
//! "pointer": "/after/email", "family": "...", "version": N,
//! "quarantined_at": "<RFC 3339>"}`. Keyed by event id, so writing the same
//! change twice (a CDC source re-reading after a restart, or retrying an
//! append) keeps one entry: quarantining is idempotent like the log's
//! append. A source writes its quarantined events before it appends the
//! rest of the batch, so by the time its position is confirmed every event
//! of the batch is either in the log or here.

use serde_json::{json, Value};

use switchyard_core::event::Event;

use crate::log::{Log, LogError};

/// One refused event and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub event: Event,
    /// The violation (`/after/email: ... (schema `customer` version 2)`).
    pub reason: String,
    /// JSON pointer of the offending field in the event.
    pub pointer: String,
    pub family: String,
    pub version: u32,
}

/// The quarantine hash of source `source`.
pub fn key(log: &Log, source: &str) -> String {
    format!("{}:quarantine:{{src-{source}}}", log.keys().namespace)
}

/// Keep `entries` of source `source` (one `HSET`; idempotent per event id).
pub async fn add(log: &Log, source: &str, entries: &[Entry]) -> Result<(), LogError> {
    if entries.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now().to_rfc3339();
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key(log, source));
    for e in entries {
        let v = json!({
            "event": e.event,
            "reason": e.reason,
            "pointer": e.pointer,
            "family": e.family,
            "version": e.version,
            "quarantined_at": now,
        });
        cmd.arg(&e.event.id).arg(v.to_string());
    }
    let mut c = log.conn().await?;
    let _: i64 = cmd.query_async(&mut c).await?;
    Ok(())
}

/// Every quarantined entry of source `source`, by event id, as stored (JSON).
pub async fn list(log: &Log, source: &str) -> Result<Vec<(String, Value)>, LogError> {
    let mut c = log.conn().await?;
    let raw: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(key(log, source))
        .query_async(&mut c)
        .await?;
    let mut out: Vec<(String, Value)> = raw
        .into_iter()
        .map(|(id, v)| {
            let v = serde_json::from_str(&v).unwrap_or(Value::String(v));
            (id, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
