//! A consumer's state in Redis, per partition, and the atomic operations on
//! it. Every key of one (consumer, partition) carries the partition's hash
//! tag, so each operation below is one MULTI or Lua script on one slot.
//!
//! States an event of the log can be in, for one consumer:
//! - *pending*: read by the consumer group, not yet acknowledged (XPENDING);
//! - *deferred*: set aside in the account's defer list (acknowledged in the
//!   stream, durable here) because the account had too much waiting in memory,
//!   or because it is being replayed from the DLQ;
//! - *dead-lettered* (failed or parked) in the consumer's DLQ stream;
//! - *done*: delivered (and recorded in `acked`) or filtered; acknowledged.
//!
//! Every transition out of *pending* or *deferred* writes the new state and
//! removes the old one in the same atomic operation.

use std::collections::BTreeMap;

use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};

use crate::client::Conn;
use crate::log::{decode_entry, Log, LogError};
use switchyard_core::event::{self, Event, FORMAT_VERSION};

pub const GROUP_CONSUMER: &str = "switchyard";

use crate::lease::FENCE_PREAMBLE;
use std::sync::LazyLock;

/// A transition script, fenced: it first checks the caller's lease token (see [`crate::lease`]).
fn fenced(body: &str) -> redis::Script {
    redis::Script::new(&format!("{FENCE_PREAMBLE}{body}"))
}
static ROUTE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| fenced(ROUTE_LUA));
static DEFER_DONE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| fenced(DEFER_DONE_LUA));
static DEAD_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| fenced(DEAD_LUA));
static EXEC_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| fenced(EXEC_LUA));
static READ_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| fenced(READ_LUA));
static FINISH_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| fenced(FINISH_LUA));

// Finish stream entries, after the fence check: the `acked` record of each
// delivered one (TTL the dedup window) and one XACK for all, atomically.
// KEYS: 1 stream, 2.. the acked keys. ARGV: 1 group, 2 acked TTL (s), 3.. stream ids.
// Repeating it is harmless (SET and XACK again).
const FINISH_LUA: &str = r#"
for i = 2, #KEYS do redis.call('SET', KEYS[i], '1', 'EX', ARGV[2]) end
return redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))
"#;

// Run commands one after the other (atomically, like MULTI), after the fence check.
// ARGV: for each command its argument count, then the command and its arguments.
// Every key named belongs to the partition's slot. Returns the last command's reply.
const EXEC_LUA: &str = r#"
local i = 1
local last = false
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local c = {}
  for j = 1, n do c[j] = ARGV[i + j] end
  last = redis.call(unpack(c))
  i = i + n + 1
end
return last
"#;

// A group read, after the fence check (a former owner cannot move entries into
// the group's pending list). KEYS: 1 stream. ARGV: 1 group, 2 consumer, 3 count, 4 id.
// Nothing new: the group's last-delivered id instead (to wait on with a plain XREAD).
const READ_LUA: &str = r#"
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], ARGV[4])
if r then return r end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == ARGV[1] then return last end
end
return false
"#;
static REPLAY_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REPLAY_LUA));
static EFFECTS_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(EFFECTS_LUA));

/// Commit a stateful module's staged writes for one event, once: KEYS[1] the
/// event's `effects_done` marker, KEYS[2..] the kv keys; ARGV[1] the marker's
/// TTL (s), then per key (op `s`|`d`, value, TTL ms or 0). Returns 1 when
/// applied, 0 when the marker was already there (a redelivery).
const EFFECTS_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #KEYS do
  local a = 2 + (i - 2) * 3
  if ARGV[a] == 's' then
    if tonumber(ARGV[a + 2]) > 0 then
      redis.call('SET', KEYS[i], ARGV[a + 1], 'PX', ARGV[a + 2])
    else
      redis.call('SET', KEYS[i], ARGV[a + 1])
    end
  else
    redis.call('DEL', KEYS[i])
  end
end
redis.call('SET', KEYS[1], 1, 'EX', ARGV[1])
return 1
"#;

/// One staged write of a stateful module (see [`PartitionStore::commit_effects`]).
#[derive(Debug, Clone)]
pub struct KvWrite<'a> {
    pub module: &'a str,
    pub key: &'a str,
    /// `None`: delete.
    pub value: Option<&'a [u8]>,
    /// Milliseconds; 0: no expiry.
    pub ttl_ms: u64,
}

#[derive(Debug, Clone)]
pub struct ConsumerKeys {
    pub ns: String,
    pub consumer: String,
}

impl ConsumerKeys {
    pub fn stream(&self, p: u32) -> String {
        format!("{}:log:{{p{p}}}", self.ns)
    }
    pub fn acked(&self, p: u32, epoch: u64, id: &str) -> String {
        format!(
            "{}:c:{}:acked:{{p{p}}}:{epoch}:{id}",
            self.ns, self.consumer
        )
    }
    pub fn defer_list(&self, p: u32, account: &str) -> String {
        format!("{}:c:{}:defer:{{p{p}}}:{account}", self.ns, self.consumer)
    }
    pub fn deferred_set(&self, p: u32) -> String {
        format!("{}:c:{}:deferred:{{p{p}}}", self.ns, self.consumer)
    }
    pub fn parked_set(&self, p: u32) -> String {
        format!("{}:c:{}:parked:{{p{p}}}", self.ns, self.consumer)
    }
    pub fn dlq(&self, p: u32) -> String {
        format!("{}:c:{}:dlq:{{p{p}}}", self.ns, self.consumer)
    }
    /// The lease of this consumer's partition (`lease.rs`): owner and fencing token.
    pub fn lease(&self, p: u32) -> String {
        format!("{}:c:{}:lease:{{p{p}}}", self.ns, self.consumer)
    }
    /// The fencing-token counter of this consumer's partition (only grows).
    pub fn fence(&self, p: u32) -> String {
        format!("{}:c:{}:fence:{{p{p}}}", self.ns, self.consumer)
    }
    /// Bumped by `consumer rewind`: acked records of older epochs no longer suppress a send.
    pub fn epoch(&self) -> String {
        format!("{}:c:{}:epoch", self.ns, self.consumer)
    }
    /// A stateful module's value (contract 0.2 `kv`): scoped to (consumer,
    /// module, account), in the account's partition. Module and account are
    /// length-prefixed so no two scopes share a key.
    pub fn kv(&self, p: u32, module: &str, account: &str, key: &str) -> String {
        format!(
            "{}:c:{}:kv:{{p{p}}}:{}:{module}:{}:{account}:{key}",
            self.ns,
            self.consumer,
            module.len(),
            account.len()
        )
    }
    /// Marks that the staged effects of event `id` were committed (kept for
    /// `dedup_window`): a redelivered event does not apply them again.
    pub fn effects_done(&self, p: u32, id: &str) -> String {
        format!("{}:c:{}:fx:{{p{p}}}:{id}", self.ns, self.consumer)
    }
    /// Prefix of every key of this consumer (for `consumer delete`-style scans).
    pub fn prefix(&self) -> String {
        format!("{}:c:{}:", self.ns, self.consumer)
    }
}

/// An event held outside the stream (defer list element): `sid \n version \n body`.
pub fn encode_held(sid: &str, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(sid.len() + body.len() + 4);
    v.extend_from_slice(sid.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(FORMAT_VERSION.to_string().as_bytes());
    v.push(b'\n');
    v.extend_from_slice(body);
    v
}

pub fn decode_held(raw: &[u8]) -> Result<(String, Event), event::CodecError> {
    let mut it = raw.splitn(3, |b| *b == b'\n');
    let sid = it
        .next()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    let v: u32 = it
        .next()
        .and_then(|s| std::str::from_utf8(s).ok()?.parse().ok())
        .unwrap_or(0);
    let body = it.next().ok_or(event::CodecError::MissingField("e"))?;
    Ok((sid, event::decode(v, body)?))
}

/// Why an event is in the DLQ, and what happened to it.
#[derive(Debug, Clone, Default)]
pub struct DeadLetter {
    /// `failed` (exhausted or not retryable) or `parked` (behind a failed event of its account).
    pub kind: &'static str,
    pub reason: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_response: String,
    pub modules: String,
    /// For parked events: the id of the failed event they wait behind.
    pub behind: Option<String>,
}

impl DeadLetter {
    fn fields(
        &self,
        account: &str,
        event_id: &str,
        sid: &str,
        body: &[u8],
    ) -> Vec<(String, Vec<u8>)> {
        let now = chrono::Utc::now().to_rfc3339();
        vec![
            ("account".into(), account.as_bytes().to_vec()),
            ("event_id".into(), event_id.as_bytes().to_vec()),
            ("sid".into(), sid.as_bytes().to_vec()),
            ("kind".into(), self.kind.as_bytes().to_vec()),
            ("reason".into(), self.reason.as_bytes().to_vec()),
            ("attempts".into(), self.attempts.to_string().into_bytes()),
            (
                "status".into(),
                self.last_status
                    .map(|s| s.to_string())
                    .unwrap_or_default()
                    .into_bytes(),
            ),
            ("response".into(), self.last_response.as_bytes().to_vec()),
            ("modules".into(), self.modules.as_bytes().to_vec()),
            (
                "behind".into(),
                self.behind.clone().unwrap_or_default().into_bytes(),
            ),
            ("at".into(), now.into_bytes()),
            ("v".into(), FORMAT_VERSION.to_string().into_bytes()),
            ("e".into(), body.to_vec()),
        ]
    }
}

/// Where the event being finished came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Pending in the consumer group under this stream id.
    Stream(String),
    /// Head of the account's defer list: the element as read (compared
    /// before it is removed, so a repeated operation never removes another).
    Deferred(Vec<u8>),
}

/// Result of routing an entry of an account that is not in the normal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    Parked,
    Deferred,
    /// Neither parked nor deferred any more: deliver it normally.
    Free,
}

// KEYS: 1 stream, 2 parked set, 3 deferred set, 4 defer list, 5 dlq
// ARGV: 1 group, 2 sid, 3 account, 4 held element, 5 force defer ("1"/"0"), 6.. dlq field/value pairs
// Idempotent: an entry no longer pending was routed by an earlier run of this same
// operation (a retry after a timeout whose first attempt ran late); nothing is written twice.
const ROUTE_LUA: &str = r#"
if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) == 0 then
  if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return 'parked' end
  return 'deferred'
end
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then
  local f = {}
  for i = 6, #ARGV do f[#f + 1] = ARGV[i] end
  redis.call('XADD', KEYS[5], '*', unpack(f))
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'parked'
end
if ARGV[5] == '1' or redis.call('LLEN', KEYS[4]) > 0 then
  redis.call('RPUSH', KEYS[4], ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[3])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'deferred'
end
return 'free'
"#;

// Finish the head of a defer list. KEYS: 1 defer list, 2 deferred set, 3 acked key ("" none)
// ARGV: 1 account, 2 acked ttl secs, 3 the head element as read. Returns the remaining length.
// The head is removed only if it is still that element: a repeated run removes nothing else.
const DEFER_DONE_LUA: &str = r#"
if redis.call('LINDEX', KEYS[1], 0) == ARGV[3] then redis.call('LPOP', KEYS[1]) end
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], '1', 'EX', ARGV[2]) end
local n = redis.call('LLEN', KEYS[1])
if n == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return n
"#;

// Dead-letter an event and (optionally) park its account.
// KEYS: 1 stream, 2 dlq, 3 parked set, 4 defer list, 5 deferred set
// ARGV: 1 group, 2 origin ("stream:<sid>" | "deferred"), 3 account, 4 park ("1"/"0"),
// 5 the defer list head as read ("" for stream), 6.. fields
// When parking, whatever waits in the defer list moves to the DLQ as parked, in order.
// Idempotent: if the event is no longer pending / no longer the head, an earlier run of
// this operation already moved it, and nothing happens.
const DEAD_LUA: &str = r#"
local from_stream = string.sub(ARGV[2], 1, 7) == 'stream:'
if from_stream then
  local sid = string.sub(ARGV[2], 8)
  if #redis.call('XPENDING', KEYS[1], ARGV[1], sid, sid, 1) == 0 then return 0 end
elseif redis.call('LINDEX', KEYS[4], 0) ~= ARGV[5] then
  return 0
end
local f = {}
for i = 6, #ARGV do f[#f + 1] = ARGV[i] end
local failed_id = redis.call('XADD', KEYS[2], '*', unpack(f))
if from_stream then
  redis.call('XACK', KEYS[1], ARGV[1], string.sub(ARGV[2], 8))
else
  redis.call('LPOP', KEYS[4])
  if redis.call('LLEN', KEYS[4]) == 0 then redis.call('SREM', KEYS[5], ARGV[3]) end
end
local moved = 0
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[3], ARGV[3])
  while true do
    local held = redis.call('LPOP', KEYS[4])
    if not held then break end
    local a = string.find(held, '\n', 1, true)
    local b = string.find(held, '\n', a + 1, true)
    local sid = string.sub(held, 1, a - 1)
    local v = string.sub(held, a + 1, b - 1)
    local body = string.sub(held, b + 1)
    redis.call('XADD', KEYS[2], '*', 'account', ARGV[3], 'event_id', '', 'sid', sid, 'kind', 'parked',
      'reason', 'parked behind a failed event of the same account', 'attempts', '0', 'status', '',
      'response', '', 'modules', '', 'behind', failed_id, 'at', '', 'v', v, 'e', body)
    moved = moved + 1
  end
  redis.call('SREM', KEYS[5], ARGV[3])
end
return moved
"#;

// Replay: move an account's DLQ entries (oldest first) to the front of its defer list and
// unpark it. KEYS: 1 dlq, 2 defer list, 3 deferred set, 4 parked set
// ARGV: 1 account, 2 min DLQ id ("-" for all). Returns the number moved.
const REPLAY_LUA: &str = r#"
local entries = redis.call('XRANGE', KEYS[1], ARGV[2], '+')
local held = {}
local ids = {}
for _, e in ipairs(entries) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  if f['account'] == ARGV[1] then
    held[#held + 1] = f['sid'] .. '\n' .. f['v'] .. '\n' .. f['e']
    ids[#ids + 1] = e[1]
  end
end
for i = #held, 1, -1 do redis.call('LPUSH', KEYS[2], held[i]) end
if #held > 0 then
  redis.call('SADD', KEYS[3], ARGV[1])
  redis.call('XDEL', KEYS[1], unpack(ids))
end
-- unpark only when nothing of this account is left in the DLQ
local left = 0
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  for i = 1, #e[2], 2 do
    if e[2][i] == 'account' and e[2][i + 1] == ARGV[1] then left = left + 1 end
  end
end
if left == 0 then redis.call('SREM', KEYS[4], ARGV[1]) end
return #held
"#;

// Take an account out of the deferred set if its defer list is empty.
// KEYS: 1 defer list, 2 deferred set. ARGV: 1 account.
const UNDEFER_LUA: &str = r#"
if redis.call('LLEN', KEYS[1]) == 0 then return redis.call('SREM', KEYS[2], ARGV[1]) end
return 0
"#;
static UNDEFER_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(UNDEFER_LUA));

/// Store operations for one (consumer, partition).
#[derive(Clone)]
pub struct PartitionStore {
    pub keys: ConsumerKeys,
    pub p: u32,
    pub conn: Conn,
    pub dedup_ttl: u64,
    /// The fencing token of this instance's lease on the partition: every
    /// state transition is refused ([`LogError::Fenced`]) once it is not the
    /// current one. `None`: operator commands (replay), which are not fenced.
    pub token: Option<u64>,
}

/// Commands for [`PartitionStore::exec`].
#[derive(Default)]
struct Cmds(Vec<Vec<u8>>);

impl Cmds {
    fn cmd<S: AsRef<str>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        let flat: Vec<Vec<u8>> = args
            .into_iter()
            .map(|a| a.as_ref().as_bytes().to_vec())
            .collect();
        self.0.push(flat.len().to_string().into_bytes());
        self.0.extend(flat);
        self
    }
}

impl PartitionStore {
    fn token_arg(&self) -> String {
        self.token.map(|t| t.to_string()).unwrap_or_default()
    }

    /// Run `cmds` atomically after the fence check (one script, one slot).
    async fn exec<T: redis::FromRedisValue>(&mut self, cmds: Cmds) -> Result<T, LogError> {
        let mut inv = EXEC_SCRIPT.prepare_invoke();
        inv.key(self.keys.fence(self.p)).arg(self.token_arg());
        for a in cmds.0 {
            inv.arg(a);
        }
        Ok(inv.invoke_async(&mut self.conn).await?)
    }

    /// Take over pending entries of this group from `cursor` on (XAUTOCLAIM,
    /// one key): the entries, the ids trimmed away while pending, and the
    /// next cursor (`0-0`: done).
    pub async fn autoclaim(&mut self, cursor: &str) -> Result<Claimed, LogError> {
        let mut c = Cmds::default();
        c.cmd([
            "XAUTOCLAIM",
            self.keys.stream(self.p).as_str(),
            self.keys.consumer.as_str(),
            GROUP_CONSUMER,
            "0",
            cursor,
            "COUNT",
            "500",
        ]);
        let reply: redis::streams::StreamAutoClaimReply = self.exec(c).await?;
        Ok(Claimed {
            entries: reply
                .claimed
                .iter()
                .map(|e| (e.id.clone(), decode_entry(e)))
                .collect(),
            deleted: reply.deleted_ids,
            next: reply.next_stream_id,
        })
    }

    /// Move an entry that does not decode to the DLQ and acknowledge it, in
    /// one transaction (DLQ and stream share the partition's slot).
    pub async fn dead_letter_undecodable(
        &mut self,
        sid: &str,
        reason: &str,
    ) -> Result<(), LogError> {
        let (keys, p) = (&self.keys, self.p);
        let mut c = Cmds::default();
        c.cmd([
            "XADD".to_string(),
            keys.dlq(p),
            "*".into(),
            "account".into(),
            String::new(),
            "sid".into(),
            sid.into(),
            "kind".into(),
            "failed".into(),
            "reason".into(),
            format!("cannot decode the log entry: {reason}"),
        ])
        .cmd(["XACK", keys.stream(p).as_str(), keys.consumer.as_str(), sid]);
        let _: redis::Value = self.exec(c).await?;
        Ok(())
    }

    pub async fn ensure_group(&mut self, start_id: &str) -> Result<(), LogError> {
        let r: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.stream(self.p))
            .arg(&self.keys.consumer)
            .arg(start_id)
            .arg("MKSTREAM")
            .query_async(&mut self.conn)
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn epoch(&mut self) -> Result<u64, LogError> {
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.keys.epoch())
            .query_async(&mut self.conn)
            .await?;
        Ok(v.unwrap_or(0))
    }

    /// A stateful module's committed value.
    pub async fn kv_get(
        &mut self,
        module: &str,
        account: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, LogError> {
        Ok(redis::cmd("GET")
            .arg(self.keys.kv(self.p, module, account, key))
            .query_async(&mut self.conn)
            .await?)
    }

    /// Were event `id`'s staged effects committed already?
    pub async fn effects_committed(&mut self, id: &str) -> Result<bool, LogError> {
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.keys.effects_done(self.p, id))
            .query_async(&mut self.conn)
            .await?;
        Ok(n > 0)
    }

    /// Apply the staged writes of event `id` of `account` and set its
    /// marker, atomically, unless the marker is there. True: applied now.
    pub async fn commit_effects(
        &mut self,
        id: &str,
        account: &str,
        writes: &[KvWrite<'_>],
    ) -> Result<bool, LogError> {
        let mut inv = EFFECTS_SCRIPT.prepare_invoke();
        inv.key(self.keys.effects_done(self.p, id))
            .arg(self.dedup_ttl);
        for w in writes {
            inv.key(self.keys.kv(self.p, w.module, account, w.key));
            match w.value {
                Some(v) => inv.arg("s").arg(v).arg(w.ttl_ms),
                None => inv.arg("d").arg("").arg(0),
            };
        }
        let n: i64 = inv.invoke_async(&mut self.conn).await?;
        Ok(n == 1)
    }

    pub async fn was_acked(&mut self, epoch: u64, id: &str) -> Result<bool, LogError> {
        let n: i64 = redis::cmd("EXISTS")
            .arg(self.keys.acked(self.p, epoch, id))
            .query_async(&mut self.conn)
            .await?;
        Ok(n > 0)
    }

    /// Finish an event: record delivery (if `delivered`) and acknowledge it.
    pub async fn finish(
        &mut self,
        origin: &Origin,
        account: &str,
        acked: Option<(u64, &str)>,
    ) -> Result<u64, LogError> {
        match origin {
            Origin::Stream(sid) => {
                self.finish_stream_many(&[(
                    sid.clone(),
                    acked.map(|(ep, id)| (ep, id.to_string())),
                )])
                .await?;
                Ok(0)
            }
            Origin::Deferred(head) => {
                let n: u64 = DEFER_DONE_SCRIPT
                    .key(self.keys.fence(self.p))
                    .arg(self.token_arg())
                    .key(self.keys.defer_list(self.p, account))
                    .key(self.keys.deferred_set(self.p))
                    .key(
                        acked
                            .map(|(ep, id)| self.keys.acked(self.p, ep, id))
                            .unwrap_or_default(),
                    )
                    .arg(account)
                    .arg(self.dedup_ttl)
                    .arg(head.as_slice())
                    .invoke_async(&mut self.conn)
                    .await?;
                Ok(n)
            }
        }
    }

    /// Finish many stream entries at once, in one script: for each, the
    /// `acked` record (delivered events; `None` for filtered ones) and the `XACK`.
    pub async fn finish_stream_many(
        &mut self,
        items: &[(String, Option<(u64, String)>)],
    ) -> Result<(), LogError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut inv = FINISH_SCRIPT.prepare_invoke();
        inv.key(self.keys.fence(self.p))
            .arg(self.token_arg())
            .key(self.keys.stream(self.p))
            .arg(&self.keys.consumer)
            .arg(self.dedup_ttl);
        for (sid, acked) in items {
            if let Some((epoch, id)) = acked {
                inv.key(self.keys.acked(self.p, *epoch, id));
            }
            inv.arg(sid);
        }
        let _: redis::Value = inv.invoke_async(&mut self.conn).await?;
        Ok(())
    }

    /// Acknowledge many stream entries at once (filtered events).
    pub async fn ack_many(&mut self, sids: &[String]) -> Result<(), LogError> {
        if sids.is_empty() {
            return Ok(());
        }
        let mut xack = vec![
            "XACK".to_string(),
            self.keys.stream(self.p),
            self.keys.consumer.clone(),
        ];
        xack.extend(sids.iter().cloned());
        let mut c = Cmds::default();
        c.cmd(xack);
        let _: redis::Value = self.exec(c).await?;
        Ok(())
    }

    /// Route an entry of an account that may be parked or deferred.
    pub async fn route(
        &mut self,
        sid: &str,
        ev: &Event,
        body: &[u8],
        force_defer: bool,
    ) -> Result<Routed, LogError> {
        let dl = DeadLetter {
            kind: "parked",
            reason: "parked behind a failed event of the same account".into(),
            ..Default::default()
        };
        let mut inv = ROUTE_SCRIPT.prepare_invoke();
        inv.key(self.keys.fence(self.p))
            .arg(self.token_arg())
            .key(self.keys.stream(self.p))
            .key(self.keys.parked_set(self.p))
            .key(self.keys.deferred_set(self.p))
            .key(self.keys.defer_list(self.p, &ev.account_id))
            .key(self.keys.dlq(self.p))
            .arg(&self.keys.consumer)
            .arg(sid)
            .arg(&ev.account_id)
            .arg(encode_held(sid, body))
            .arg(if force_defer { "1" } else { "0" });
        for (k, v) in dl.fields(&ev.account_id, &ev.id, sid, body) {
            inv.arg(k).arg(v);
        }
        let r: String = inv.invoke_async(&mut self.conn).await?;
        Ok(match r.as_str() {
            "parked" => Routed::Parked,
            "deferred" => Routed::Deferred,
            _ => Routed::Free,
        })
    }

    /// Put an event in the DLQ; with `park`, park its account and move its deferred events behind it.
    pub async fn dead_letter(
        &mut self,
        origin: &Origin,
        ev: &Event,
        dl: &DeadLetter,
        park: bool,
    ) -> Result<u64, LogError> {
        let body = event::encode(ev)?;
        let sid = match origin {
            Origin::Stream(s) => s.clone(),
            Origin::Deferred(_) => String::new(),
        };
        let mut inv = DEAD_SCRIPT.prepare_invoke();
        inv.key(self.keys.fence(self.p))
            .arg(self.token_arg())
            .key(self.keys.stream(self.p))
            .key(self.keys.dlq(self.p))
            .key(self.keys.parked_set(self.p))
            .key(self.keys.defer_list(self.p, &ev.account_id))
            .key(self.keys.deferred_set(self.p))
            .arg(&self.keys.consumer)
            .arg(match origin {
                Origin::Stream(s) => format!("stream:{s}"),
                Origin::Deferred(_) => "deferred".into(),
            })
            .arg(&ev.account_id)
            .arg(if park { "1" } else { "0" })
            .arg(match origin {
                Origin::Stream(_) => &[][..],
                Origin::Deferred(head) => head.as_slice(),
            });
        for (k, v) in dl.fields(&ev.account_id, &ev.id, &sid, &body) {
            inv.arg(k).arg(v);
        }
        let moved: u64 = inv.invoke_async(&mut self.conn).await?;
        Ok(moved)
    }

    /// Head of an account's defer list.
    /// The head of an account's defer list: the element as stored and its event.
    pub async fn deferred_head(
        &mut self,
        account: &str,
    ) -> Result<Option<(Vec<u8>, Event)>, LogError> {
        let raw: Option<Vec<u8>> = redis::cmd("LINDEX")
            .arg(self.keys.defer_list(self.p, account))
            .arg(0)
            .query_async(&mut self.conn)
            .await?;
        match raw {
            None => Ok(None),
            Some(r) => {
                let (_, ev) = decode_held(&r)?;
                Ok(Some((r, ev)))
            }
        }
    }

    /// Remove the account from the deferred set, unless its defer list has
    /// elements again (a stale run of this after new deferrals changes nothing).
    pub async fn forget_if_undeferred(&mut self, account: &str) -> Result<(), LogError> {
        let _: i64 = UNDEFER_SCRIPT
            .key(self.keys.defer_list(self.p, account))
            .key(self.keys.deferred_set(self.p))
            .arg(account)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Stream id of the newest element of an account's defer list.
    pub async fn deferred_tail_sid(&mut self, account: &str) -> Result<Option<String>, LogError> {
        let raw: Option<Vec<u8>> = redis::cmd("LINDEX")
            .arg(self.keys.defer_list(self.p, account))
            .arg(-1)
            .query_async(&mut self.conn)
            .await?;
        Ok(raw.map(|r| {
            String::from_utf8_lossy(r.split(|b| *b == b'\n').next().unwrap_or_default())
                .into_owned()
        }))
    }

    pub async fn members(&mut self, key: String) -> Result<Vec<String>, LogError> {
        Ok(redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut self.conn)
            .await?)
    }

    /// Move an account's DLQ entries (newer than `min_id`) back for delivery, in order.
    pub async fn replay(&mut self, account: &str, min_id: &str) -> Result<u64, LogError> {
        Ok(REPLAY_SCRIPT
            .key(self.keys.dlq(self.p))
            .key(self.keys.defer_list(self.p, account))
            .key(self.keys.deferred_set(self.p))
            .key(self.keys.parked_set(self.p))
            .arg(account)
            .arg(min_id)
            .invoke_async(&mut self.conn)
            .await?)
    }
}

/// A DLQ entry as read back for the CLI.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DlqEntry {
    pub dlq_id: String,
    pub partition: u32,
    pub fields: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

pub fn dlq_entry(p: u32, e: &StreamId) -> DlqEntry {
    let mut fields = BTreeMap::new();
    let mut body: Option<Vec<u8>> = None;
    let mut v = 0u32;
    for (k, val) in &e.map {
        if let redis::Value::BulkString(b) = val {
            match k.as_str() {
                "e" => body = Some(b.clone()),
                "v" => {
                    v = std::str::from_utf8(b)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0)
                }
                _ => {
                    fields.insert(k.clone(), String::from_utf8_lossy(b).into_owned());
                }
            }
        }
    }
    let event = body.and_then(|b| event::decode(v, &b).ok());
    if let Some(ev) = &event {
        fields.entry("event_id".into()).and_modify(|s| {
            if s.is_empty() {
                *s = ev.id.clone()
            }
        });
    }
    DlqEntry {
        dlq_id: e.id.clone(),
        partition: p,
        fields,
        event,
    }
}

/// Where a consumer group starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    At(chrono::DateTime<chrono::Utc>),
}

impl Start {
    pub fn parse(s: &str) -> Result<Start, String> {
        match s {
            "earliest" => Ok(Start::Earliest),
            "latest" => Ok(Start::Latest),
            t => chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| Start::At(d.with_timezone(&chrono::Utc)))
                .map_err(|_| format!("`{t}` is not `earliest`, `latest` or an RFC 3339 time")),
        }
    }
    /// The stream id a consumer group is created at.
    pub fn stream_id(&self) -> String {
        match self {
            Start::Earliest => "0-0".into(),
            Start::Latest => "$".into(),
            Start::At(t) => format!("{}-0", t.timestamp_millis().max(0)),
        }
    }
}

/// What [`PartitionStore::autoclaim`] took over.
pub struct Claimed {
    pub entries: Vec<(String, Result<Event, event::CodecError>)>,
    pub deleted: Vec<String>,
    pub next: String,
}

/// One read of a [`GroupReader`]: entries, each with its stream id.
pub type ReadEntries = Vec<(String, Result<Event, event::CodecError>)>;

/// The reading side of one (consumer, partition): `XREADGROUP` on a
/// connection of its own (one key per read, so any slot is fine).
///
/// A read whose reply is lost (a response timeout while Redis is paused, a
/// connection cut) may still run in Redis later. [`GroupReader::reconnect`]
/// therefore kills the previous connection server-side, on the node that
/// owns the partition, before reading again.
pub struct GroupReader {
    keys: ConsumerKeys,
    p: u32,
    conn: Option<(Conn, i64)>,
    dead_client: Option<i64>,
    /// This instance's fencing token on the partition: a read is refused
    /// ([`LogError::Fenced`]) once another instance acquired it, so a former
    /// owner never moves entries into the group's pending list.
    token: Option<u64>,
}

impl GroupReader {
    pub fn new(keys: ConsumerKeys, p: u32, token: Option<u64>) -> GroupReader {
        GroupReader {
            keys,
            p,
            conn: None,
            dead_client: None,
            token,
        }
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Open a new connection and kill the previous one (if a read failed on it).
    pub async fn connect(&mut self, log: &Log) -> Result<(), LogError> {
        let key = self.keys.stream(self.p);
        let mut c = log.blocking_conn().await?;
        let id: i64 = c
            .query_on_node_of(redis::cmd("CLIENT").arg("ID").clone(), &key)
            .await?;
        if let Some(old) = self.dead_client {
            // "No such client" is fine: it is gone already.
            let _: redis::RedisResult<i64> = c
                .query_on_node_of(
                    redis::cmd("CLIENT").arg("KILL").arg("ID").arg(old).clone(),
                    &key,
                )
                .await;
        }
        self.dead_client = None;
        self.conn = Some((c, id));
        Ok(())
    }

    /// Forget the connection after a failed read; the next
    /// [`GroupReader::connect`] kills it server-side.
    pub fn drop_connection(&mut self) {
        if let Some((_, id)) = self.conn.take() {
            self.dead_client = Some(id);
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, LogError> {
        self.conn
            .as_mut()
            .map(|(c, _)| c)
            .ok_or_else(|| LogError::Unavailable("the reader is not connected".into()))
    }

    /// Entries already delivered to this reader (its pending list) after `after`.
    pub async fn read_pending(
        &mut self,
        after: &str,
        count: usize,
    ) -> Result<ReadEntries, ReadError> {
        self.read(after, count, None).await
    }

    /// New entries, waiting up to `block_ms` for some.
    pub async fn read_new(
        &mut self,
        count: usize,
        block_ms: usize,
    ) -> Result<ReadEntries, ReadError> {
        self.read(">", count, Some(block_ms)).await
    }

    async fn read(
        &mut self,
        from: &str,
        count: usize,
        block: Option<usize>,
    ) -> Result<ReadEntries, ReadError> {
        let key = self.keys.stream(self.p);
        let fence = self.keys.fence(self.p);
        let group = self.keys.consumer.clone();
        let token = self.token.map(|t| t.to_string()).unwrap_or_default();
        let fail = |e: redis::RedisError| {
            if e.code() == Some("NOGROUP") {
                ReadError::NoGroup
            } else {
                ReadError::Other(e.into())
            }
        };
        let mut waited = false;
        loop {
            let c = self.conn().map_err(ReadError::Other)?;
            // The group read itself runs in a fenced script (which cannot block) ...
            let v: redis::Value = READ_SCRIPT
                .key(&fence)
                .arg(&token)
                .key(&key)
                .arg(&group)
                .arg(GROUP_CONSUMER)
                .arg(count)
                .arg(from)
                .invoke_async(c)
                .await
                .map_err(fail)?;
            let last = match &v {
                redis::Value::Array(_) => {
                    let r: StreamReadReply = redis::from_redis_value(v)
                        .map_err(|e| ReadError::Other(LogError::Protocol(e.to_string())))?;
                    return Ok(r
                        .keys
                        .into_iter()
                        .flat_map(|k| k.ids)
                        .map(|e| {
                            let ev = decode_entry(&e);
                            (e.id, ev)
                        })
                        .collect());
                }
                redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                redis::Value::SimpleString(s) => s.clone(),
                _ => return Ok(Vec::new()),
            };
            let Some(ms) = block else {
                return Ok(Vec::new());
            };
            if waited {
                return Ok(Vec::new());
            }
            // ... so waiting for new entries is a plain XREAD past the group's
            // last-delivered id (it changes nothing, whoever runs it).
            let opts = StreamReadOptions::default().count(1).block(ms);
            let _: Option<StreamReadReply> =
                redis::AsyncCommands::xread_options(c, &[&key], &[&last], &opts)
                    .await
                    .map_err(fail)?;
            waited = true;
        }
    }

    /// Recreate the group (the stream or group vanished, e.g. Redis lost its
    /// data) at the start of the stream.
    pub async fn recreate_group(&mut self) -> Result<(), LogError> {
        let key = self.keys.stream(self.p);
        let group = self.keys.consumer.clone();
        let c = self.conn()?;
        let _: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(&group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(c)
            .await;
        Ok(())
    }
}

/// Why a [`GroupReader`] read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream or the consumer group is gone: [`GroupReader::recreate_group`].
    #[error("the consumer group is missing")]
    NoGroup,
    #[error(transparent)]
    Other(LogError),
}
