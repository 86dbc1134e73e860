//! Where a running router's admin API answers, so that the CLI, the MCP
//! server and `switchyard reload` find a router whose listener is on port 0:
//! `<ns>:router:admin` holds a small JSON record (`{"url": …, "pid": …}`)
//! with an expiry the router refreshes while it runs (a router that died
//! without cleaning up stops being found when the key expires).

use std::time::Duration;

use crate::log::{Log, LogError};

/// The key of the record.
pub fn key(log: &Log) -> String {
    format!("{}:router:admin", log.keys().namespace)
}

/// Write (or refresh) the record, expiring after `ttl`.
pub async fn record(log: &Log, value: &str, ttl: Duration) -> Result<(), LogError> {
    let mut c = log.conn().await?;
    let () = redis::cmd("SET")
        .arg(key(log))
        .arg(value)
        .arg("PX")
        .arg(ttl.as_millis().max(1) as u64)
        .query_async(&mut c)
        .await?;
    Ok(())
}

/// The record of a running router, if one is recorded.
pub async fn lookup(log: &Log) -> Result<Option<String>, LogError> {
    let mut c = log.conn().await?;
    Ok(redis::cmd("GET").arg(key(log)).query_async(&mut c).await?)
}

/// Remove the record if it is still `value` (a router that started since
/// keeps its own).
pub async fn clear(log: &Log, value: &str) -> Result<(), LogError> {
    let mut c = log.conn().await?;
    let _: i64 = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
    )
    .key(key(log))
    .arg(value)
    .invoke_async(&mut c)
    .await?;
    Ok(())
}
