//! What a source keeps between runs, as one string per source and kind
//! (e.g. the MySQL source's binlog position as JSON), under
//! `<ns>:source:<name>:<kind>`. One key per operation.

use crate::log::{Log, LogError};

/// The key of source `source`'s `kind` state.
pub fn key(log: &Log, source: &str, kind: &str) -> String {
    format!("{}:source:{source}:{kind}", log.keys().namespace)
}

/// The stored value, if any.
pub async fn load(log: &Log, source: &str, kind: &str) -> Result<Option<String>, LogError> {
    let mut c = log.conn().await?;
    Ok(redis::cmd("GET")
        .arg(key(log, source, kind))
        .query_async(&mut c)
        .await?)
}

/// Replace the stored value.
pub async fn store(log: &Log, source: &str, kind: &str, value: &str) -> Result<(), LogError> {
    let mut c = log.conn().await?;
    let () = redis::cmd("SET")
        .arg(key(log, source, kind))
        .arg(value)
        .query_async(&mut c)
        .await?;
    Ok(())
}
