//! What a source keeps between runs, as one string per source and kind
//! (e.g. the MySQL source's binlog position as JSON), under
//! `<ns>:source:{src-<name>}:<kind>`: the hash tag of the source's leader
//! lease ([`crate::lease::source_leader_keys`]), so a fenced write and its
//! lease check are one script on one Redis Cluster slot. One key per
//! operation.
//!
//! Writes through a handle that carries the source's leader token
//! ([`Log::with_leader_token`]) are fenced: they fail with
//! [`LogError::Fenced`] once another instance took the lease, so a former
//! leader that was paused past its lease never overwrites its successor's
//! position.
//!
//! Releases before the hash tag kept the state under `<ns>:source:<name>:<kind>`;
//! [`load`] still reads it there when the tagged key does not exist yet.

use std::sync::LazyLock;

use crate::lease::{source_leader_keys, FENCE_PREAMBLE};
use crate::log::{Log, LogError};

/// The key of source `source`'s `kind` state.
pub fn key(log: &Log, source: &str, kind: &str) -> String {
    format!("{}:source:{{src-{source}}}:{kind}", log.keys().namespace)
}

/// Where releases before the hash tag kept it (read once, on upgrade).
fn legacy_key(log: &Log, source: &str, kind: &str) -> String {
    format!("{}:source:{source}:{kind}", log.keys().namespace)
}

/// The stored value, if any.
pub async fn load(log: &Log, source: &str, kind: &str) -> Result<Option<String>, LogError> {
    let mut c = log.conn().await?;
    let v: Option<String> = redis::cmd("GET")
        .arg(key(log, source, kind))
        .query_async(&mut c)
        .await?;
    if v.is_some() {
        return Ok(v);
    }
    Ok(redis::cmd("GET")
        .arg(legacy_key(log, source, kind))
        .query_async(&mut c)
        .await?)
}

// KEYS: 1 the source's leader fencing counter (removed by the preamble), 2 the state.
// ARGV: 1 token ('' = unfenced), 2 value.
static STORE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{FENCE_PREAMBLE}\nredis.call('SET', KEYS[1], ARGV[1])\nreturn 1"
    ))
});

/// Replace the stored value. Fenced by the handle's leader token, if it has
/// one ([`LogError::Fenced`]: this instance no longer leads the source).
pub async fn store(log: &Log, source: &str, kind: &str, value: &str) -> Result<(), LogError> {
    let mut c = log.conn().await?;
    let (_, fence) = source_leader_keys(&log.keys().namespace, source);
    let token = log
        .leader_token()
        .map(|t| t.to_string())
        .unwrap_or_default();
    let _: i64 = STORE
        .key(fence)
        .key(key(log, source, kind))
        .arg(token)
        .arg(value)
        .invoke_async(&mut c)
        .await?;
    Ok(())
}
