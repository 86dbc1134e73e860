//! TEMPORARY stub on the `cdc` branch: the integrator's log.rs replaces it
//! when main is merged. Same signatures as the contract: Redis Streams,
//! partitioned by account id, idempotent by event id within a window.

use redis::aio::ConnectionManager;

use crate::config::Config;
use crate::event::{self, Event};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    pub stream_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("event could not be encoded: {0}")]
    Encode(String),
}

#[derive(Clone)]
pub struct Log {
    conn: ConnectionManager,
    partitions: u32,
    window: u64,
}

/// Stream key of a partition.
pub fn stream_key(p: u32) -> String {
    format!("sy:log:{p}")
}

const SCRIPT: &str = r#"
local out = {}
local n = #KEYS / 2
for i = 1, n do
  if redis.call('SET', KEYS[n + i], '1', 'NX', 'EX', ARGV[1]) then
    out[i] = redis.call('XADD', KEYS[i], '*', 'v', ARGV[2], 'e', ARGV[2 + i])
  else
    out[i] = false
  end
end
return out
"#;

impl Log {
    pub async fn connect(cfg: &Config) -> Result<Log, LogError> {
        let client = redis::Client::open(cfg.redis_url.as_str()).map_err(|e| LogError::Unavailable(e.to_string()))?;
        let conn = ConnectionManager::new(client).await.map_err(|e| LogError::Unavailable(e.to_string()))?;
        Ok(Log { conn, partitions: cfg.partitions.max(1), window: cfg.idempotency_window_secs.max(1) })
    }

    pub fn partition_of(&self, account_id: &str) -> u32 {
        (xxhash_rust::xxh3::xxh3_64(account_id.as_bytes()) % self.partitions as u64) as u32
    }

    pub async fn append(&self, events: &[Event]) -> Result<Vec<Appended>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SCRIPT).arg(events.len() * 2);
        let parts: Vec<u32> = events.iter().map(|e| self.partition_of(&e.account_id)).collect();
        for p in &parts {
            cmd.arg(stream_key(*p));
        }
        for e in events {
            cmd.arg(format!("sy:dedup:{}", e.id));
        }
        cmd.arg(self.window).arg(event::FORMAT_VERSION);
        for e in events {
            cmd.arg(event::encode(e).map_err(|e| LogError::Encode(e.to_string()))?);
        }
        let mut conn = self.conn.clone();
        let ids: Vec<Option<String>> = cmd
            .query_async(&mut conn)
            .await
            .map_err(|e| LogError::Unavailable(e.to_string()))?;
        Ok(parts.into_iter().zip(ids).map(|(partition, stream_id)| Appended { partition, stream_id }).collect())
    }
}
