//! A CDC source's schema history: the last known shape of each table it
//! has seen and every change detected between shapes.
//!
//! Keys (one hash tag per source, `{src:<name>}`, so the record script's two
//! keys are in one Redis Cluster slot):
//! - `<ns>:schema:{src:<name>}:shape`: hash, table → JSON of its columns;
//! - `<ns>:schema:{src:<name>}:history`: stream, one entry per change,
//!   fields `table` and `entry` (JSON written by the source).
//!
//! The contents are opaque JSON here; `switchyard_sources::schema_drift`
//! defines them.

use std::sync::LazyLock;

use crate::log::{Log, LogError};

fn shape_key(log: &Log, source: &str) -> String {
    format!("{}:schema:{{src:{source}}}:shape", log.keys().namespace)
}

fn history_key(log: &Log, source: &str) -> String {
    format!("{}:schema:{{src:{source}}}:history", log.keys().namespace)
}

/// Every table's last recorded shape (table → JSON).
pub async fn shapes(
    log: &Log,
    source: &str,
) -> Result<std::collections::HashMap<String, String>, LogError> {
    let mut c = log.conn().await?;
    Ok(redis::cmd("HGETALL")
        .arg(shape_key(log, source))
        .query_async(&mut c)
        .await?)
}

/// KEYS: shape hash, history stream. ARGV: table, shape JSON ('' = remove
/// the table), then history entries. One script: the shape and its history
/// move together.
const RECORD_LUA: &str = r#"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], '*', 'table', ARGV[1], 'entry', ARGV[i])
end
return #ARGV - 2
"#;

static RECORD: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RECORD_LUA));

/// Store `table`'s new shape (`None`: the table is gone) and append
/// `entries` to the history, atomically.
pub async fn record(
    log: &Log,
    source: &str,
    table: &str,
    shape: Option<&str>,
    entries: &[String],
) -> Result<(), LogError> {
    let mut c = log.conn().await?;
    let mut inv = RECORD.key(shape_key(log, source));
    inv.key(history_key(log, source))
        .arg(table)
        .arg(shape.unwrap_or(""));
    for e in entries {
        inv.arg(e);
    }
    let _: i64 = inv.invoke_async(&mut c).await?;
    Ok(())
}

/// The history, oldest first: (stream id, table, entry JSON), optionally of
/// one table.
pub async fn history(
    log: &Log,
    source: &str,
    table: Option<&str>,
) -> Result<Vec<(String, String, String)>, LogError> {
    let mut c = log.conn().await?;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(history_key(log, source))
        .arg("-")
        .arg("+")
        .query_async(&mut c)
        .await?;
    Ok(reply
        .ids
        .into_iter()
        .filter_map(|e| {
            let t: String = e.get("table")?;
            let entry: String = e.get("entry")?;
            (table.is_none_or(|want| want == t)).then_some((e.id, t, entry))
        })
        .collect())
}
