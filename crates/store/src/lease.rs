//! Many router instances on one Redis (or one Redis Cluster): membership and
//! partition leases with fencing tokens.
//!
//! - **Membership.** `<ns>:instances` is a sorted set: member = instance id,
//!   score = its last heartbeat in Redis' own clock (ms, `TIME`). An instance
//!   is live while its score is younger than the lease timeout. One key, so
//!   one slot.
//! - **Leases.** Per (consumer, partition), `<ns>:c:<consumer>:lease:{p<N>}`
//!   is a hash `{owner, token, renewed}` that expires after the lease timeout
//!   unless renewed. `token` comes from `<ns>:c:<consumer>:fence:{p<N>}`, a
//!   counter that only grows (never expires): every acquisition gets a larger
//!   token than any before it. Both keys carry the partition's hash tag, so
//!   the check sits in the same slot as every key a state transition touches
//!   (`consumer.rs`), and each transition script first checks that the
//!   caller's token is still the last one issued: a former owner (paused,
//!   partitioned, slow) can never write once another instance acquired the
//!   partition.

use std::sync::LazyLock;

use crate::client::Conn;
use crate::consumer::ConsumerKeys;
use crate::log::LogError;

/// The key of the instance set.
pub fn instances_key(ns: &str) -> String {
    format!("{ns}:instances")
}

// KEYS: 1 instances. ARGV: 1 id, 2 timeout ms, 3 "join" | "leave".
// Returns the live instances, each followed by its last heartbeat (ms).
const HEARTBEAT_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == 'leave' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now, ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
local r = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
r[#r + 1] = tostring(now)
return r
"#;
static HEARTBEAT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(HEARTBEAT_LUA));

// KEYS: 1 lease, 2 fence counter. ARGV: 1 owner, 2 ttl ms.
// Free (or already ours): a new token. Held by another: 0.
// The token is at least Redis' clock in ms: should Redis lose the counter (restart
// without its data), later tokens still exceed every earlier one.
const ACQUIRE_LUA: &str = r#"
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token = redis.call('INCR', KEYS[2])
if token < now then
  token = now
  redis.call('SET', KEYS[2], string.format('%d', token))
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'renewed', t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return token
"#;
static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACQUIRE_LUA));

// KEYS: 1 lease, 2 fence counter. ARGV: 1 token, 2 ttl ms, 3 owner.
// 1: renewed. 0: another instance acquired the partition since (the counter moved on).
// A lease that expired while nobody else took it (Redis paused, a slow renewal) is
// re-established with the same token: no one else can have written meanwhile.
const RENEW_LUA: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'token', ARGV[1], 'renewed', t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000)))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;
static RENEW: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RENEW_LUA));

// KEYS: 1 lease. ARGV: 1 token. Deletes the lease only if it is still this one.
const RELEASE_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
static RELEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE_LUA));

/// The start of every fenced script: `KEYS[1]` is the partition's fencing
/// counter and `ARGV[1]` the caller's token (both removed, so the rest of the
/// script keeps its own numbering). A token is current while it is the last
/// one issued: once another instance acquired the partition, the counter is
/// past it. An empty token means "not fenced" (operator commands such as
/// `dlq replay`, which act with or without an owner).
pub(crate) const FENCE_PREAMBLE: &str = r#"
local __fence = table.remove(KEYS, 1)
local __token = table.remove(ARGV, 1)
if __token ~= '' and redis.call('GET', __fence) ~= __token then
  return redis.error_reply('FENCED this instance no longer holds the lease of this partition')
end
"#;

/// A live instance: its id and its last heartbeat (ms since the epoch, Redis' clock).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instance {
    pub id: String,
    pub last_heartbeat_ms: i64,
}

/// Record a heartbeat of `id` (or its leave) and return the live instances,
/// sorted by id, and Redis' time (ms).
pub async fn heartbeat(
    conn: &mut Conn,
    ns: &str,
    id: &str,
    timeout_ms: u64,
    leave: bool,
) -> Result<(Vec<Instance>, i64), LogError> {
    let r: Vec<String> = HEARTBEAT
        .key(instances_key(ns))
        .arg(id)
        .arg(timeout_ms)
        .arg(if leave { "leave" } else { "join" })
        .invoke_async(conn)
        .await?;
    let now = r.last().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut out: Vec<Instance> = r[..r.len().saturating_sub(1)]
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| Instance {
            id: c[0].clone(),
            last_heartbeat_ms: c[1].parse::<f64>().unwrap_or(0.0) as i64,
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok((out, now))
}

/// The live instances as recorded (no heartbeat of our own): for `status`.
pub async fn instances(
    conn: &mut Conn,
    ns: &str,
    timeout_ms: u64,
) -> Result<Vec<Instance>, LogError> {
    let t: (i64, i64) = redis::cmd("TIME").query_async(conn).await?;
    let now = t.0 * 1000 + t.1 / 1000;
    let r: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
        .arg(instances_key(ns))
        .arg(now - timeout_ms as i64)
        .arg("+inf")
        .arg("WITHSCORES")
        .query_async(conn)
        .await?;
    Ok(r.into_iter()
        .map(|(id, s)| Instance {
            id,
            last_heartbeat_ms: s as i64,
        })
        .collect())
}

/// Try to take the lease of (consumer, partition) for `owner`: its new
/// fencing token, or `None` while another instance holds it.
pub async fn acquire(
    conn: &mut Conn,
    keys: &ConsumerKeys,
    p: u32,
    owner: &str,
    ttl_ms: u64,
) -> Result<Option<u64>, LogError> {
    acquire_keys(conn, &keys.lease(p), &keys.fence(p), owner, ttl_ms).await
}

/// [`acquire`] for any lease: its key and its fencing counter (one slot).
pub async fn acquire_keys(
    conn: &mut Conn,
    lease: &str,
    fence: &str,
    owner: &str,
    ttl_ms: u64,
) -> Result<Option<u64>, LogError> {
    let t: u64 = ACQUIRE
        .key(lease)
        .key(fence)
        .arg(owner)
        .arg(ttl_ms)
        .invoke_async(conn)
        .await?;
    Ok((t > 0).then_some(t))
}

/// Extend a held lease. `false`: another instance acquired the partition since.
pub async fn renew(
    conn: &mut Conn,
    keys: &ConsumerKeys,
    p: u32,
    owner: &str,
    token: u64,
    ttl_ms: u64,
) -> Result<bool, LogError> {
    renew_keys(conn, &keys.lease(p), &keys.fence(p), owner, token, ttl_ms).await
}

/// [`renew`] for any lease.
pub async fn renew_keys(
    conn: &mut Conn,
    lease: &str,
    fence: &str,
    owner: &str,
    token: u64,
    ttl_ms: u64,
) -> Result<bool, LogError> {
    let n: i64 = RENEW
        .key(lease)
        .key(fence)
        .arg(token)
        .arg(ttl_ms)
        .arg(owner)
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

/// Give a lease up at once (graceful stop, rebalancing), if it is still ours.
pub async fn release(
    conn: &mut Conn,
    keys: &ConsumerKeys,
    p: u32,
    token: u64,
) -> Result<(), LogError> {
    release_key(conn, &keys.lease(p), token).await
}

/// [`release`] for any lease.
pub async fn release_key(conn: &mut Conn, lease: &str, token: u64) -> Result<(), LogError> {
    let _: i64 = RELEASE.key(lease).arg(token).invoke_async(conn).await?;
    Ok(())
}

/// Who holds a lease now: owner, token, last renewal (ms), or `None`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseState {
    pub owner: String,
    pub token: u64,
    pub renewed_ms: i64,
}

pub async fn lease_state(
    conn: &mut Conn,
    keys: &ConsumerKeys,
    p: u32,
) -> Result<Option<LeaseState>, LogError> {
    lease_state_of(conn, &keys.lease(p)).await
}

/// [`lease_state`] of any lease.
pub async fn lease_state_of(conn: &mut Conn, lease: &str) -> Result<Option<LeaseState>, LogError> {
    let m: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(lease).query_async(conn).await?;
    Ok(m.get("owner").map(|o| LeaseState {
        owner: o.clone(),
        token: m.get("token").and_then(|t| t.parse().ok()).unwrap_or(0),
        renewed_ms: m.get("renewed").and_then(|t| t.parse().ok()).unwrap_or(0),
    }))
}

/// The leader lease of a CDC source (one active reader per replication
/// slot / binlog position): its key and fencing counter, one slot.
pub fn source_leader_keys(ns: &str, source: &str) -> (String, String) {
    (
        format!("{ns}:source:{{src-{source}}}:leader"),
        format!("{ns}:source:{{src-{source}}}:leader_fence"),
    )
}

/// Who should own slot `i` of `n` (consumer × partition, in a fixed order)
/// among the live instances `ids` (sorted): a fair share, the same answer on
/// every instance that sees the same membership. Leases keep a single owner
/// while views differ for a moment.
pub fn assigned(i: usize, ids: &[String]) -> Option<&str> {
    if ids.is_empty() {
        return None;
    }
    Some(ids[i % ids.len()].as_str())
}

#[cfg(test)]
mod tests {
    use super::assigned;

    #[test]
    fn every_slot_has_one_owner_and_the_shares_differ_by_at_most_one() {
        for n in 1..6 {
            let ids: Vec<String> = (0..n).map(|i| format!("i{i}")).collect();
            let mut count = std::collections::HashMap::new();
            for slot in 0..48 {
                *count.entry(assigned(slot, &ids).unwrap()).or_insert(0) += 1;
            }
            let (min, max) = (count.values().min().unwrap(), count.values().max().unwrap());
            assert!(max - min <= 1, "{n}: {count:?}");
            assert_eq!(count.len(), n);
        }
        assert_eq!(assigned(3, &[]), None);
    }
}
