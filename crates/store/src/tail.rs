//! Reading the log from outside a consumer group (`switchyard tail`): per
//! partition cursors, from the start or the end of each stream.
//!
//! Slots: each read names one partition's stream when the store is a Redis
//! Cluster (partitions live in different slots); standalone, one `XREAD`
//! covers every partition.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};

use crate::client::Conn;
use crate::log::{decode_entry, Log, LogError};
use switchyard_core::event::{CodecError, Event};

/// One log entry read by a [`Tail`].
pub struct TailEntry {
    pub partition: u32,
    pub stream: String,
    pub stream_id: String,
    pub event: Result<Event, CodecError>,
}

/// Cursors over some partitions of the log.
pub struct Tail {
    conn: Conn,
    cluster: bool,
    /// stream key → (partition, last id read)
    cursors: BTreeMap<String, (u32, String)>,
}

impl Tail {
    /// Start at the oldest entry (`from_end` false) or after the newest one
    /// of each of `partitions`.
    pub async fn open(log: &Log, partitions: &[u32], from_end: bool) -> Result<Tail, LogError> {
        let mut conn = log.conn().await?;
        let cluster = matches!(conn, Conn::Cluster(_));
        let mut cursors = BTreeMap::new();
        for &p in partitions {
            let key = log.keys().stream(p);
            let start = if from_end {
                let last: StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut conn)
                    .await?;
                last.ids
                    .first()
                    .map(|e| e.id.clone())
                    .unwrap_or_else(|| "0-0".into())
            } else {
                "0-0".to_string()
            };
            cursors.insert(key, (p, start));
        }
        Ok(Tail {
            conn,
            cluster,
            cursors,
        })
    }

    /// The next entries (at most 500 per partition). `wait`: block up to a
    /// second for new ones when there are none; an empty answer then means
    /// none arrived in that time.
    pub async fn next(&mut self, wait: bool) -> Result<Vec<TailEntry>, LogError> {
        let groups: Vec<Vec<String>> = if self.cluster {
            self.cursors.keys().map(|k| vec![k.clone()]).collect()
        } else {
            vec![self.cursors.keys().cloned().collect()]
        };
        let mut out = Vec::new();
        for keys in &groups {
            let ids: Vec<String> = keys.iter().map(|k| self.cursors[k].1.clone()).collect();
            let mut opts = StreamReadOptions::default().count(500);
            if wait && !self.cluster {
                opts = opts.block(1000);
            }
            let reply: Option<StreamReadReply> =
                redis::AsyncCommands::xread_options(&mut self.conn, keys, &ids, &opts).await?;
            for k in reply.unwrap_or_default().keys {
                let (p, cursor) = self
                    .cursors
                    .get_mut(&k.key)
                    .ok_or_else(|| LogError::Protocol(format!("XREAD answered for {}", k.key)))?;
                for entry in k.ids {
                    *cursor = entry.id.clone();
                    out.push(TailEntry {
                        partition: *p,
                        stream: k.key.clone(),
                        stream_id: entry.id.clone(),
                        event: decode_entry(&entry),
                    });
                }
            }
        }
        if out.is_empty() && wait && self.cluster {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(out)
    }
}

/// The newest `limit` events of `account` (newest first), looking at most
/// `scan` entries back in its partition. Entries that do not decode are
/// skipped (they cannot be attributed to an account).
pub async fn recent_of_account(
    log: &Log,
    account: &str,
    limit: usize,
    scan: usize,
) -> Result<Vec<TailEntry>, LogError> {
    let p = log.partition_of(account);
    let stream = log.keys().stream(p);
    let mut conn = log.conn().await?;
    let reply: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(scan.max(1))
        .query_async(&mut conn)
        .await?;
    let mut out = Vec::new();
    for entry in reply.ids {
        let event = decode_entry(&entry);
        if matches!(&event, Ok(ev) if ev.account_id == account) {
            out.push(TailEntry {
                partition: p,
                stream: stream.clone(),
                stream_id: entry.id.clone(),
                event,
            });
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}
