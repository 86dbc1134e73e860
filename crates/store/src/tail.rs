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

/// The newest `limit` events of the whole log that `keep` accepts, oldest
/// first: by stream id (time, then sequence) across partitions; entries of
/// one millisecond in different partitions have no order between them
/// (the log orders per partition only), looking at most `scan`
/// entries back in each partition (pages of 500). Entries that do not decode
/// are skipped. For `switchyard transform diff`: a consumer's recent events.
pub async fn recent(
    log: &Log,
    limit: usize,
    scan: usize,
    keep: impl Fn(&Event) -> bool,
) -> Result<Vec<TailEntry>, LogError> {
    let mut conn = log.conn().await?;
    let mut all: Vec<(u64, u64, TailEntry)> = Vec::new();
    for p in 0..log.partitions() {
        let stream = log.keys().stream(p);
        let (mut end, mut seen, mut found) = ("+".to_string(), 0usize, 0usize);
        while found < limit && seen < scan {
            let page = (scan - seen).min(500);
            let reply: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&stream)
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(page)
                .query_async(&mut conn)
                .await?;
            let n = reply.ids.len();
            for entry in reply.ids {
                seen += 1;
                end = format!("({}", entry.id);
                if let Ok(ev) = decode_entry(&entry) {
                    if keep(&ev) && found < limit {
                        found += 1;
                        let (ms, seq) = split_id(&entry.id);
                        all.push((
                            ms,
                            seq,
                            TailEntry {
                                partition: p,
                                stream: stream.clone(),
                                stream_id: entry.id.clone(),
                                event: Ok(ev),
                            },
                        ));
                    }
                }
            }
            if n < page {
                break;
            }
        }
    }
    // Newest `limit` overall, then oldest first.
    all.sort_by(|a, b| (b.0, b.1, b.2.partition).cmp(&(a.0, a.1, a.2.partition)));
    all.truncate(limit);
    all.reverse();
    Ok(all.into_iter().map(|(_, _, e)| e).collect())
}

fn split_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}
