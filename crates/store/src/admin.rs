//! Operator actions on a consumer, straight against Redis (they work whether
//! or not a router is running): DLQ list/show/replay/drop, rewind, status.
//! A running router notices replays and drops within a second (it polls the
//! parked and deferred sets).

use std::collections::BTreeSet;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::client::Conn;
use crate::consumer::{dlq_entry, ConsumerKeys, DlqEntry, PartitionStore, Start};
use crate::log::Log;

pub struct ConsumerAdmin {
    pub keys: ConsumerKeys,
    pub log: Log,
    conn: Conn,
}

/// Drop an account's DLQ entries (ids ≥ ARGV[2]) and unpark it when none are left.
/// KEYS: 1 dlq, 2 parked set. ARGV: 1 account, 2 min id.
const DROP_LUA: &str = r#"
local n = 0
local left = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local acct = nil
  for i = 1, #e[2], 2 do if e[2][i] == 'account' then acct = e[2][i + 1] end end
  if acct == ARGV[1] then
    if ARGV[2] == '-' or e[1] >= ARGV[2] then
      redis.call('XDEL', KEYS[1], e[1]); n = n + 1
    else
      left = left + 1
    end
  end
end
if left == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return n
"#;

static DROP_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(DROP_LUA));

fn min_id(since: Option<DateTime<Utc>>) -> String {
    since
        .map(|t| format!("{}-0", t.timestamp_millis().max(0)))
        .unwrap_or_else(|| "-".into())
}

fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

impl ConsumerAdmin {
    /// Act on `consumer`'s state in the log `log` (the caller checks that
    /// the config names the consumer).
    pub async fn connect(log: Log, consumer: &str) -> anyhow::Result<ConsumerAdmin> {
        let conn = log
            .conn()
            .await
            .context("connecting to Redis (redis.url)")?;
        Ok(ConsumerAdmin {
            keys: ConsumerKeys {
                ns: log.keys().namespace.clone(),
                consumer: consumer.to_string(),
            },
            log,
            conn,
        })
    }

    fn partitions(&self, account: Option<&str>) -> Vec<u32> {
        match account {
            Some(a) => vec![self.log.partition_of(a)],
            None => (0..self.log.partitions()).collect(),
        }
    }

    /// DLQ entries, oldest first within each partition.
    pub async fn dlq_list(
        &mut self,
        account: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<Vec<DlqEntry>> {
        let mut out = Vec::new();
        for p in self.partitions(account) {
            let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(self.keys.dlq(p))
                .arg(min_id(since))
                .arg("+")
                .query_async(&mut self.conn)
                .await?;
            for e in &reply.ids {
                let d = dlq_entry(p, e);
                if account.is_none_or(|a| d.fields.get("account").map(String::as_str) == Some(a)) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// One DLQ entry by event id or DLQ id.
    pub async fn dlq_show(&mut self, id: &str) -> anyhow::Result<Option<DlqEntry>> {
        Ok(self
            .dlq_list(None, None)
            .await?
            .into_iter()
            .find(|d| d.dlq_id == id || d.fields.get("event_id").map(String::as_str) == Some(id)))
    }

    fn store(&self, p: u32) -> PartitionStore {
        PartitionStore {
            keys: self.keys.clone(),
            p,
            conn: self.conn.clone(),
            dedup_ttl: 1,
            // Operator actions (replay) act whoever owns the partition.
            token: None,
        }
    }

    fn accounts_of(entries: &[DlqEntry]) -> BTreeSet<(u32, String)> {
        entries
            .iter()
            .filter_map(|d| d.fields.get("account").map(|a| (d.partition, a.clone())))
            .collect()
    }

    /// Send DLQ entries back for delivery, account by account, in order; the
    /// parked events behind a failed one follow it. Returns events moved.
    pub async fn dlq_replay(
        &mut self,
        account: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<u64> {
        let entries = self.dlq_list(account, since).await?;
        let mut n = 0;
        for (p, a) in Self::accounts_of(&entries) {
            if a.is_empty() {
                continue; // undecodable entries have no account: inspect and drop them
            }
            n += self.store(p).replay(&a, &min_id(since)).await?;
        }
        Ok(n)
    }

    /// Delete DLQ entries; an account with nothing left in the DLQ is unparked.
    pub async fn dlq_drop(
        &mut self,
        account: Option<&str>,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<u64> {
        let entries = self.dlq_list(account, since).await?;
        let mut n = 0;
        for (p, a) in Self::accounts_of(&entries) {
            let dropped: u64 = DROP_SCRIPT
                .key(self.keys.dlq(p))
                .key(self.keys.parked_set(p))
                .arg(&a)
                .arg(min_id(since))
                .invoke_async(&mut self.conn)
                .await?;
            n += dropped;
        }
        Ok(n)
    }

    /// Move the consumer's position in every partition to `to`; events from
    /// there on are delivered again (the dedup record is reset by a new epoch).
    pub async fn rewind(&mut self, to: &Start) -> anyhow::Result<()> {
        if *to == Start::Latest {
            bail!("rewind takes `earliest` or an RFC 3339 time");
        }
        for p in 0..self.log.partitions() {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("SETID")
                .arg(self.keys.stream(p))
                .arg(&self.keys.consumer)
                .arg(to.stream_id())
                .query_async(&mut self.conn)
                .await;
            if let Err(e) = r {
                if e.code() == Some("NOGROUP") {
                    let _: () = redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(self.keys.stream(p))
                        .arg(&self.keys.consumer)
                        .arg(to.stream_id())
                        .arg("MKSTREAM")
                        .query_async(&mut self.conn)
                        .await?;
                } else {
                    return Err(e.into());
                }
            }
        }
        let _: i64 = redis::cmd("INCR")
            .arg(self.keys.epoch())
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Lag, pending, DLQ and parked counts per partition and in total.
    ///
    /// `lag` is what Redis counts for the consumer's group: entries not yet
    /// read by it. Partitions where Redis cannot count it (the group was
    /// placed mid-stream by `start = <time>` or a rewind, and has not
    /// caught up yet) are listed in `lag_unknown_partitions` rather than
    /// counted as 0; partitions whose stream exists but has no group for the
    /// consumer (Redis lost its data and no reader has recreated it yet, or
    /// the consumer never ran) in `partitions_without_group`. Neither adds
    /// to `lag`: nothing is invented.
    pub async fn status(&mut self) -> anyhow::Result<Value> {
        let (mut lag, mut pending, mut dlq, mut parked, mut deferred) =
            (0i64, 0i64, 0i64, 0i64, 0i64);
        let mut oldest_dlq: Option<u64> = None;
        let (mut lag_unknown, mut without_group) = (Vec::new(), Vec::new());
        for p in 0..self.log.partitions() {
            let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(self.keys.stream(p))
                .query_async(&mut self.conn)
                .await;
            let stream_exists = groups.is_ok();
            let mut found = false;
            for g in groups.unwrap_or_default() {
                let map: std::collections::HashMap<String, redis::Value> =
                    redis::FromRedisValue::from_redis_value(g)?;
                let name: String = map
                    .get("name")
                    .map(|v| redis::from_redis_value(v.clone()).unwrap_or_default())
                    .unwrap_or_default();
                if name != self.keys.consumer {
                    continue;
                }
                found = true;
                let num = |k: &str| -> Option<i64> {
                    map.get(k)
                        .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                };
                match num("lag") {
                    Some(l) => lag += l,
                    None => lag_unknown.push(p),
                }
                pending += num("pending").unwrap_or(0);
            }
            if stream_exists && !found {
                without_group.push(p);
            }
            let (l, pk, df, first): (i64, i64, i64, redis::streams::StreamRangeReply) =
                redis::pipe()
                    .cmd("XLEN")
                    .arg(self.keys.dlq(p))
                    .cmd("SCARD")
                    .arg(self.keys.parked_set(p))
                    .cmd("SCARD")
                    .arg(self.keys.deferred_set(p))
                    .cmd("XRANGE")
                    .arg(self.keys.dlq(p))
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut self.conn)
                    .await?;
            dlq += l;
            parked += pk;
            deferred += df;
            if let Some(e) = first.ids.first() {
                let ms = id_ms(&e.id);
                oldest_dlq = Some(oldest_dlq.map_or(ms, |o| o.min(ms)));
            }
        }
        Ok(json!({
            "consumer": self.keys.consumer,
            "lag": lag,
            "lag_unknown_partitions": lag_unknown,
            "partitions_without_group": without_group,
            "pending": pending,
            "dlq": dlq,
            "parked_accounts": parked,
            "deferred_accounts": deferred,
            "oldest_dlq_entry": oldest_dlq.and_then(|ms| DateTime::<Utc>::from_timestamp_millis(ms as i64)).map(|t| t.to_rfc3339()),
        }))
    }
}
