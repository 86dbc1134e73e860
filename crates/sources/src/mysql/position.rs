//! The source's binlog position, stored in Redis under
//! `<ns>:source:<name>:binlog` as JSON `{"file", "pos", "gtid"}`.
//!
//! `file:pos` is where streaming resumes (the end of the last transaction
//! whose events are all in the log). `gtid` is that transaction's GTID when
//! the server sent one (MariaDB `domain-server-seq`, e.g. `0-1-42`): kept
//! for operators (`gtid_slave_pos` to point a failed-over source at), not
//! used to resume.

use serde::{Deserialize, Serialize};

use switchyard_store::log::{Log, LogError};
use switchyard_store::source_state;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPos {
    pub file: String,
    pub pos: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
}

impl std::fmt::Display for BinlogPos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if let Some(g) = &self.gtid {
            write!(f, " (gtid {g})")?;
        }
        Ok(())
    }
}

pub fn key(log: &Log, source: &str) -> String {
    source_state::key(log, source, "binlog")
}

pub async fn load(log: &Log, source: &str) -> Result<Option<BinlogPos>, LogError> {
    match source_state::load(log, source, "binlog").await? {
        None => Ok(None),
        Some(s) => serde_json::from_str(&s).map(Some).map_err(|e| {
            LogError::Config(format!(
                "the stored binlog position of source {source} ({}) is not valid ({e}): \
                 delete the key to snapshot again",
                key(log, source)
            ))
        }),
    }
}

pub async fn store(log: &Log, source: &str, p: &BinlogPos) -> Result<(), LogError> {
    let body = serde_json::to_string(p).map_err(|e| LogError::Protocol(e.to_string()))?;
    source_state::store(log, source, "binlog", &body).await
}
