//! A consumer's backlog per partition, read in one script call so the
//! numbers agree with each other. Keys: the partition's stream, DLQ, parked
//! and deferred sets, all with the partition's hash tag (one slot), plus the
//! defer lists named inside the script (same tag, same slot).

use crate::client::Conn;
use crate::consumer::ConsumerKeys;
use crate::log::LogError;

/// Per partition: `{lag_events, oldest_ms (0: none), dlq, parked, now_ms}`.
/// The group's `lag` (XINFO GROUPS, Redis 7) counts unread entries; when
/// Redis cannot tell (nil after deletions) entries after the last-delivered
/// id are counted, up to 100000. Pending entries (read, not acknowledged)
/// and deferred events (defer lists, up to 1000 accounts per partition) are
/// undelivered too. The oldest undelivered event is the oldest of: the
/// oldest pending entry, the first unread entry, each defer list's head.
const LAG_LUA: &str = r#"
local stream, dlq, parked, deferred = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, prefix = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lag, pending, oldest = 0, 0, 0
local function id_ms(id)
  local ms = string.match(id, '^(%d+)%-')
  return tonumber(ms) or 0
end
local function older(ms)
  if ms > 0 and (oldest == 0 or ms < oldest) then oldest = ms end
end
if redis.call('EXISTS', stream) == 1 then
  local found, last, glag = false, '0-0', false
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local m = {}
    for i = 1, #g, 2 do m[g[i]] = g[i + 1] end
    if m['name'] == group then
      found, last, glag, pending = true, m['last-delivered-id'], m['lag'], m['pending']
    end
  end
  if found then
    if glag then
      lag = glag
    else
      lag = #redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 100000)
    end
    if pending > 0 then
      local s = redis.call('XPENDING', stream, group)
      older(id_ms(s[2]))
    end
    if lag > 0 then
      local first = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
      if #first > 0 then older(id_ms(first[1][1])) end
    end
  end
end
local deferred_n = 0
for i, a in ipairs(redis.call('SRANDMEMBER', deferred, 1000)) do
  local key = prefix .. a
  deferred_n = deferred_n + redis.call('LLEN', key)
  local head = redis.call('LINDEX', key, 0)
  if head then older(id_ms(head)) end
end
return {lag + pending + deferred_n, oldest, redis.call('XLEN', dlq), redis.call('SCARD', parked), now_ms}
"#;

static LAG_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(LAG_LUA));

/// One partition's backlog of one consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionLag {
    /// Entries not yet delivered: unread, pending and deferred.
    pub backlog: u64,
    /// Stream-id time (ms) of the oldest undelivered entry; 0: none.
    pub oldest_ms: i64,
    /// Entries in the DLQ.
    pub dlq: u64,
    /// Accounts parked behind a dead letter.
    pub parked: u64,
    /// Redis' clock (ms), to age `oldest_ms` against.
    pub now_ms: i64,
}

/// Read consumer `group`'s backlog in partition `p`.
pub async fn partition_lag(
    conn: &mut Conn,
    keys: &ConsumerKeys,
    group: &str,
    p: u32,
) -> Result<PartitionLag, LogError> {
    let defer_prefix = keys.defer_list(p, "");
    let (backlog, oldest_ms, dlq, parked, now_ms): (u64, i64, u64, u64, i64) = LAG_SCRIPT
        .key(keys.stream(p))
        .key(keys.dlq(p))
        .key(keys.parked_set(p))
        .key(keys.deferred_set(p))
        .arg(group)
        .arg(&defer_prefix)
        .invoke_async(conn)
        .await?;
    Ok(PartitionLag {
        backlog,
        oldest_ms,
        dlq,
        parked,
        now_ms,
    })
}
