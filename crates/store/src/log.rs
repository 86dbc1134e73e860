//! The log: account-partitioned Redis Streams.
//!
//! * Partition = `xxh3_64(account_id) % partitions`: every event of one account
//!   lands in one stream, in the order it was appended.
//! * Keys carry a Redis Cluster hash tag per partition (`{ns}:log:{p<N>}`,
//!   `{ns}:seen:{p<N>}:<id>`), so one partition's keys live in one slot and
//!   the append script may touch them together.
//! * One Lua script per partition and batch appends the events, skips ids
//!   already seen within the idempotency window, and trims by age (MINID) —
//!   atomically, so an id is marked seen if and only if its event was written.
//! * All partitions' scripts for one batch go out in one pipeline: a batch of
//!   500 events is one round trip, not 500.
//! * The connection is the store's [`Conn`] (standalone: reconnecting; cluster:
//!   routed by slot);
//!   a failed command surfaces as [`LogError::Unavailable`] and callers retry
//!   (the idempotency check makes a retried append safe for client-given ids).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Value;
use tokio::sync::OnceCell;

use crate::client::{Client, Conn};
use crate::config::{LogConfig, RedisConfig};
use switchyard_core::event::{self, Event, FORMAT_VERSION};

/// Most events one script call appends (bounds the time Redis spends in it).
const SCRIPT_CHUNK: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("Redis is unreachable: {0}")]
    Unavailable(String),
    /// The TLS handshake with Redis failed; the message names the setting to fix.
    #[error("{0}")]
    Tls(String),
    /// `[redis]` settings that cannot make a client.
    #[error("{0}")]
    Config(String),
    #[error(
        "the log in Redis was created with {existing} partitions but the config says {configured}; \
         partitions cannot change for a deployment (set log.partitions = {existing}, or use a new redis.namespace)"
    )]
    PartitionMismatch { existing: u32, configured: u32 },
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    #[error(transparent)]
    Codec(#[from] event::CodecError),
    /// A state transition was refused: this instance no longer holds the
    /// partition's lease (its fencing token is not the current one). The
    /// partition must stop; its new owner carries on (`lease.rs`).
    #[error("this instance no longer holds the lease of the partition (fenced); its new owner carries on")]
    Fenced,
}

impl From<redis::RedisError> for LogError {
    fn from(e: redis::RedisError) -> Self {
        use switchyard_core::tls::TlsFailure;
        if let Some(f) = switchyard_core::tls::tls_failure(&e) {
            return LogError::Tls(match f {
                TlsFailure::ServerCertificate => format!(
                    "TLS to Redis failed: the server's certificate was rejected ({e}); set \
                     redis.tls.ca_file to the CA certificate that signed it (unset: the Mozilla \
                     roots), and use a host in redis.url that the certificate names"
                ),
                TlsFailure::ClientCertificate => format!(
                    "TLS to Redis failed: Redis rejected the client certificate ({e}); set \
                     redis.tls.cert_file and redis.tls.key_file to a certificate signed by the CA \
                     in Redis' tls-ca-cert-file"
                ),
                TlsFailure::Handshake => format!(
                    "TLS to Redis failed ({e}); check that redis.url uses rediss:// for Redis' \
                     tls-port and redis:// for its plain port"
                ),
            });
        }
        if e.code() == Some("FENCED") {
            return LogError::Fenced;
        }
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            LogError::Unavailable(e.to_string())
        } else if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) {
            LogError::Unavailable(e.to_string())
        } else {
            LogError::Protocol(e.to_string())
        }
    }
}

/// Where one appended event went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub partition: u32,
    /// Stream entry id; `None` when the event id was already in the log
    /// within the idempotency window (not written again).
    pub stream_id: Option<String>,
    /// For a duplicate: the stream id of the first copy, when still known.
    pub original: Option<String>,
}

/// Stable partition of an account: xxh3-64 (seed 0) of the UTF-8 account id,
/// modulo the partition count. Never change this function: it decides where
/// every existing account's history lives.
pub fn partition_for(account_id: &str, partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(account_id.as_bytes()) % partitions as u64) as u32
}

/// Key names, all under the deployment's namespace.
#[derive(Debug, Clone)]
pub struct Keys {
    pub namespace: String,
}

impl Keys {
    pub fn stream(&self, p: u32) -> String {
        format!("{}:log:{{p{p}}}", self.namespace)
    }
    pub fn seen(&self, p: u32, id: &str) -> String {
        format!("{}:seen:{{p{p}}}:{id}", self.namespace)
    }
    pub fn meta(&self) -> String {
        format!("{}:meta", self.namespace)
    }
    /// The stream ids of an account's entries (kept with `[privacy]`).
    pub fn account_index(&self, p: u32, account: &str) -> String {
        format!("{}:idx:{{p{p}}}:{account}", self.namespace)
    }
}

// KEYS[1] = stream; KEYS[2..] = per event: its seen-key if it needs the check,
// then its account's index key when accounts are indexed.
// ARGV[1] = idempotency window (s); ARGV[2] = MINID for trimming ("" = none);
// ARGV[3] = format version; ARGV[4] = the account index's expiry (s; "" = no
// index: `[privacy]` keeps one so a deletion finds an account's entries
// without scanning the log); then (check, topic, body) per event, where check
// is "1" when the id may repeat (client-given or CDC) and "0" for an id this
// router just generated (a fresh UUIDv7 cannot be a duplicate: no lookup, no key).
// Returns per event: the new stream id, or "!" .. original id for a duplicate.
const APPEND_LUA: &str = r#"
local out = {}
local k = 2
local i = 1
local base = 5
while base <= #ARGV do
  local seen = false
  local key = nil
  local idx = nil
  if ARGV[base] == '1' then
    key = KEYS[k]
    k = k + 1
    seen = redis.call('GET', key)
  end
  if ARGV[4] ~= '' then
    idx = KEYS[k]
    k = k + 1
  end
  if seen then
    out[i] = '!' .. seen
  else
    local id = redis.call('XADD', KEYS[1], '*', 'v', ARGV[3], 't', ARGV[base + 1], 'e', ARGV[base + 2])
    if key then redis.call('SET', key, id, 'EX', ARGV[1]) end
    if idx then
      redis.call('RPUSH', idx, id)
      redis.call('EXPIRE', idx, ARGV[4])
    end
    out[i] = id
  end
  i = i + 1
  base = base + 3
end
if ARGV[2] ~= '' then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[2])
end
return out
"#;

struct Inner {
    client: Client,
    conn: OnceCell<Conn>,
    keys: Keys,
    partitions: u32,
    retention: Duration,
    idem_window: Duration,
    timeout: Duration,
    /// Keep a per-account index of stream ids (`[privacy]`: deletions).
    index_accounts: std::sync::atomic::AtomicBool,
    /// The partition count `<ns>:meta` holds when it disagrees with ours
    /// (found after start, e.g. another deployment wrote it after Redis lost
    /// its data): appends are refused while it does.
    mismatch: std::sync::Mutex<Option<u32>>,
}

/// How often a running router makes sure `<ns>:meta` is still there
/// ([`Log::spawn_meta_guard`]).
pub const META_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Handle to the log. Cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
    /// The leader lease token of the source this handle was given to
    /// ([`Log::with_leader_token`]): its state writes are fenced by it.
    leader_token: Option<u64>,
}

impl Log {
    /// Create a handle. Connects lazily: a Redis that is down now is not an
    /// error here; appends return [`LogError::Unavailable`] until it is back.
    pub fn new(redis: &RedisConfig, log: &LogConfig) -> Result<Log, LogError> {
        let client = Client::new(redis)?;
        Ok(Log {
            inner: Arc::new(Inner {
                client,
                conn: OnceCell::new(),
                keys: Keys {
                    namespace: redis.namespace.clone(),
                },
                partitions: log.partitions,
                retention: log.retention,
                idem_window: log.idempotency_window,
                timeout: redis.timeout,
                index_accounts: std::sync::atomic::AtomicBool::new(false),
                mismatch: std::sync::Mutex::new(None),
            }),
            leader_token: None,
        })
    }

    /// This handle for a source that holds its leader lease with `token`:
    /// the source's state writes ([`crate::source_state::store`]) succeed
    /// only while that token is the lease's current one, so a reader that
    /// lost the lease (paused, partitioned) can never move the stored
    /// position back after its successor moved it on.
    pub fn with_leader_token(&self, token: u64) -> Log {
        Log {
            inner: self.inner.clone(),
            leader_token: Some(token),
        }
    }

    /// See [`Log::with_leader_token`].
    pub fn leader_token(&self) -> Option<u64> {
        self.leader_token
    }

    /// Create a handle and wait for the first connection.
    pub async fn connect(redis: &RedisConfig, log: &LogConfig) -> Result<Log, LogError> {
        let log = Log::new(redis, log)?;
        log.conn().await?;
        Ok(log)
    }

    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// From now on, every append also records the new stream id in the
    /// account's index (`Keys::account_index`, expiring with the log's
    /// retention), so an account's entries are found without a scan.
    pub fn index_accounts(&self) {
        self.inner
            .index_accounts
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn partition_of(&self, account_id: &str) -> u32 {
        partition_for(account_id, self.inner.partitions)
    }

    /// A connection (shared, multiplexed, reconnecting).
    pub async fn conn(&self) -> Result<Conn, LogError> {
        let inner = &self.inner;
        let c = inner
            .conn
            .get_or_try_init(|| async {
                let mut conn = inner.client.shared(inner.timeout).await?;
                let (_, existing) = check_meta(&mut conn, &inner.keys, inner.partitions).await?;
                if existing != inner.partitions {
                    return Err(LogError::PartitionMismatch {
                        existing,
                        configured: inner.partitions,
                    });
                }
                Ok::<_, LogError>(conn)
            })
            .await?;
        Ok(c.clone())
    }

    /// A connection of its own, for blocking reads (`XREADGROUP BLOCK` would
    /// stall every other command on the shared multiplexed connection). It
    /// does not reconnect by itself: the delivery reader must know when its
    /// connection changed (see `delivery::partition::reader`).
    pub async fn blocking_conn(&self) -> Result<Conn, LogError> {
        self.inner.client.dedicated(self.inner.timeout).await
    }

    /// Whether Redis answers a PING now (and `<ns>:meta` agrees with us).
    pub async fn ping(&self) -> Result<(), LogError> {
        self.refuse_on_mismatch()?;
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    fn refuse_on_mismatch(&self) -> Result<(), LogError> {
        match *self.inner.mismatch.lock().unwrap() {
            Some(existing) => Err(LogError::PartitionMismatch {
                existing,
                configured: self.inner.partitions,
            }),
            None => Ok(()),
        }
    }

    /// Keep the partition-count guard in place while the router runs: every
    /// [`META_CHECK_INTERVAL`], write `<ns>:meta` if it is missing (Redis
    /// restarted without its data: the check at start ran against a Redis
    /// that is gone) and compare it. A count that disagrees (another
    /// deployment wrote it first) makes appends fail with
    /// [`LogError::PartitionMismatch`] until it agrees again. Appends also
    /// write it if missing (see [`Log::append_checked`]).
    pub fn spawn_meta_guard(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(META_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Ok(mut conn) = log.conn().await else {
                    continue; // not connected yet: conn() checks meta when it connects
                };
                let inner = &log.inner;
                match check_meta(&mut conn, &inner.keys, inner.partitions).await {
                    Ok((written, existing)) => {
                        if written {
                            tracing::warn!(key = %inner.keys.meta(), partitions = inner.partitions,
                                "the partition count was missing from Redis (did it restart without its data?); wrote it again");
                        }
                        log.note_meta(existing);
                    }
                    Err(e) => tracing::debug!(error = %e, "checking the partition count failed"),
                }
            }
        })
    }

    /// Record what `<ns>:meta` says; log when agreement changes.
    fn note_meta(&self, existing: u32) {
        let inner = &self.inner;
        let mut m = inner.mismatch.lock().unwrap();
        let now = (existing != inner.partitions).then_some(existing);
        if now != *m {
            match now {
                Some(existing) => tracing::error!(
                    error = %LogError::PartitionMismatch { existing, configured: inner.partitions },
                    "refusing to append"
                ),
                None => tracing::info!(
                    partitions = inner.partitions,
                    "the partition count in Redis agrees again"
                ),
            }
            *m = now;
        }
    }

    /// Append events. Events of one account are appended in slice order. On
    /// `Ok`, Redis has acknowledged every event (or found it a duplicate).
    /// Every id is checked against the idempotency window.
    pub async fn append(&self, events: &[Event]) -> Result<Vec<Appended>, LogError> {
        self.append_checked(events, |_| true).await
    }

    /// Like [`Log::append`], but only events for which `check(i)` is true are
    /// checked and remembered for deduplication (false: an id this router
    /// generated just now, which cannot repeat).
    #[tracing::instrument(level = "debug", name = "log_append", skip_all, fields(events = events.len()))]
    pub async fn append_checked(
        &self,
        events: &[Event],
        check: impl Fn(usize) -> bool,
    ) -> Result<Vec<Appended>, LogError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.refuse_on_mismatch()?;
        let inner = &self.inner;
        // Group by partition, keeping order within each partition.
        let mut by_part: Vec<Vec<usize>> = vec![Vec::new(); inner.partitions as usize];
        for (i, ev) in events.iter().enumerate() {
            by_part[self.partition_of(&ev.account_id) as usize].push(i);
        }
        let minid = {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            now.checked_sub(inner.retention)
                .map(|d| format!("{}-0", d.as_millis()))
                .unwrap_or_default()
        };
        let window = inner.idem_window.as_secs().max(1).to_string();
        let version = FORMAT_VERSION.to_string();
        let index = inner
            .index_accounts
            .load(std::sync::atomic::Ordering::Relaxed);
        let index_ttl = if index {
            inner.retention.as_secs().max(1).to_string()
        } else {
            String::new()
        };

        let mut conn = self.conn().await?;
        // A Redis Cluster runs a pipeline on one slot only: one pipeline per
        // partition there (a partition's keys share its hash tag), all at
        // once. Standalone: one pipeline for the whole batch.
        let cluster = matches!(conn, Conn::Cluster(_));
        let mut pipes: Vec<(redis::Pipeline, Vec<(u32, &[usize])>)> = Vec::new();
        // First, the partition count if it is missing (Redis lost its data
        // since start): the first write after such a restart puts the guard
        // back, before any event (same connection, in order; on a cluster,
        // before the batch's pipelines are sent).
        let mut meta = redis::cmd("HSETNX");
        meta.arg(inner.keys.meta())
            .arg("partitions")
            .arg(inner.partitions);
        let meta_written: i64 = if cluster {
            meta.query_async(&mut conn).await?
        } else {
            let mut pipe = redis::pipe();
            pipe.add_command(meta);
            pipes.push((pipe, Vec::new()));
            0
        };
        for (p, idxs) in by_part.iter().enumerate() {
            if idxs.is_empty() {
                continue;
            }
            if cluster || pipes.is_empty() {
                pipes.push((redis::pipe(), Vec::new()));
            }
            let (pipe, calls) = pipes.last_mut().expect("pushed above");
            for chunk in idxs.chunks(SCRIPT_CHUNK) {
                let p = p as u32;
                // Keys: the stream, then one seen-key per checked event.
                let checked: Vec<bool> = chunk.iter().map(|&i| check(i)).collect();
                let nkeys = 1
                    + checked.iter().filter(|c| **c).count()
                    + if index { chunk.len() } else { 0 };
                let cmd = pipe
                    .cmd("EVAL")
                    .arg(APPEND_LUA)
                    .arg(nkeys)
                    .arg(inner.keys.stream(p));
                for (&i, &c) in chunk.iter().zip(&checked) {
                    if c {
                        cmd.arg(inner.keys.seen(p, &events[i].id));
                    }
                    if index {
                        cmd.arg(inner.keys.account_index(p, &events[i].account_id));
                    }
                }
                cmd.arg(&window).arg(&minid).arg(&version).arg(&index_ttl);
                for (&i, &c) in chunk.iter().zip(&checked) {
                    cmd.arg(if c { "1" } else { "0" })
                        .arg(&events[i].topic)
                        .arg(event::encode(&events[i])?);
                }
                calls.push((p, chunk));
            }
        }
        let sent = pipes.iter().map(|(pipe, _)| {
            let mut c = conn.clone();
            async move { pipe.query_async::<Vec<Value>>(&mut c).await }
        });
        let answers = futures_util::future::join_all(sent).await;
        let mut calls: Vec<(u32, &[usize])> = Vec::new();
        let mut replies: Vec<Value> = Vec::new();
        let mut meta_written = meta_written == 1;
        for (n, ((_, cs), answer)) in pipes.iter().zip(answers).enumerate() {
            let mut answer = answer?;
            if n == 0 && !cluster {
                // The standalone pipeline starts with HSETNX.
                if answer.is_empty() {
                    return Err(LogError::Protocol("no reply to HSETNX".into()));
                }
                meta_written = answer.remove(0) == Value::Int(1);
            }
            if answer.len() != cs.len() {
                return Err(LogError::Protocol(format!(
                    "expected {} replies, got {}",
                    cs.len(),
                    answer.len()
                )));
            }
            calls.extend(cs.iter().copied());
            replies.extend(answer);
        }
        if meta_written {
            tracing::warn!(key = %inner.keys.meta(), partitions = inner.partitions,
                "the partition count was missing from Redis (did it restart without its data?); wrote it again");
        }
        let replies = replies
            .into_iter()
            .map(redis::from_redis_value::<Vec<String>>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LogError::Protocol(format!("append script reply: {e}")))?;
        let mut out: Vec<Option<Appended>> = vec![None; events.len()];
        for ((p, chunk), reply) in calls.into_iter().zip(replies) {
            if reply.len() != chunk.len() {
                return Err(LogError::Protocol(
                    "append script returned the wrong number of ids".into(),
                ));
            }
            for (&i, id) in chunk.iter().zip(reply) {
                out[i] = Some(match id.strip_prefix('!') {
                    Some(orig) => Appended {
                        partition: p,
                        stream_id: None,
                        original: Some(orig.to_string()),
                    },
                    None => Appended {
                        partition: p,
                        stream_id: Some(id),
                        original: None,
                    },
                });
            }
        }
        Ok(out
            .into_iter()
            .map(|a| a.expect("every event has a reply"))
            .collect())
    }
}

/// Write the partition count to `<ns>:meta` unless it is there; returns
/// whether it was written now and the count it holds.
async fn check_meta(
    conn: &mut Conn,
    keys: &Keys,
    partitions: u32,
) -> Result<(bool, u32), LogError> {
    let (written, existing): (i64, u32) = redis::pipe()
        .cmd("HSETNX")
        .arg(keys.meta())
        .arg("partitions")
        .arg(partitions)
        .cmd("HGET")
        .arg(keys.meta())
        .arg("partitions")
        .query_async(conn)
        .await?;
    Ok((written == 1, existing))
}

/// Decode one stream entry (fields `v`, `t`, `e`) into an event.
pub fn decode_entry(fields: &redis::streams::StreamId) -> Result<Event, event::CodecError> {
    let get = |k: &'static str| fields.map.get(k).ok_or(event::CodecError::MissingField(k));
    let version: u32 = match get("v")? {
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        Value::Int(i) => *i as u32,
        _ => 0,
    };
    match get("e")? {
        Value::BulkString(b) => event::decode(version, b),
        _ => Err(event::CodecError::MissingField("e")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All Redis access lives in this crate: no other crate's source names
    /// the `redis` crate (so nothing can bypass the standalone/cluster
    /// [`crate::client::Client`] or a key format), and within it, clients are
    /// made only by `client.rs` (so TLS and cluster settings reach all).
    #[test]
    fn all_redis_access_lives_in_the_store_crate() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if p.is_dir() {
                    // Benchmarks, like tests/, look at Redis from outside.
                    if !name.starts_with("target") && name != "benches" && !name.starts_with('.') {
                        walk(&p, out);
                    }
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = here.join("../..").canonicalize().unwrap();
        let store = here.join("src").canonicalize().unwrap();
        let mut files = Vec::new();
        for d in ["crates", "router/src"] {
            walk(&root.join(d), &mut files);
        }
        assert!(files.len() > 50, "scanned {} files", files.len());
        let mut offenders = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            let in_store = f.starts_with(&store);
            if !in_store && (text.contains("redis::") || text.contains("use redis")) {
                offenders.push(format!("{} names the redis crate", f.display()));
            }
            // Written in pieces so that this test does not find itself.
            let makes_client = [
                ["Client::", "open("],
                ["Client::", "build_with_tls("],
                ["ClusterClient::", "builder("],
            ]
            .iter()
            .any(|n| text.contains(&n.concat()));
            if makes_client && !f.ends_with("client.rs") {
                offenders.push(format!("{} makes a Redis client", f.display()));
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        // Pinned values: changing the hash would move every account's history,
        // so this test must fail if anyone swaps the function.
        let got: Vec<u32> = ["42", "acct-1", "acct-2", ""]
            .iter()
            .map(|a| partition_for(a, 16))
            .collect();
        assert_eq!(got, vec![1, 5, 15, 2]);
        for i in 0..1000 {
            assert!(partition_for(&format!("a{i}"), 7) < 7);
        }
    }

    #[test]
    fn partitions_are_spread() {
        let mut counts = [0u32; 16];
        for i in 0..16000 {
            counts[partition_for(&format!("account-{i}"), 16) as usize] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn keys_share_a_hash_tag_per_partition() {
        let k = Keys {
            namespace: "sy".into(),
        };
        assert_eq!(k.stream(3), "sy:log:{p3}");
        assert_eq!(k.seen(3, "abc"), "sy:seen:{p3}:abc");
    }
}
