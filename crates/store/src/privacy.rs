//! The privacy layer's Redis state: the consent store and the audit trail.
//!
//! - Consent: `<ns>:c:<consumer>:consent:{p<N>}:<account>`, a hash purpose →
//!   `granted`/`denied`/`unknown`. Each consumer's account task applies an
//!   event's consent changes to it *as it processes that event*, in the
//!   account's log order, so every later event of the account (including
//!   ones already in the log behind a revocation) sees the change, and no
//!   earlier one does.
//! - Audit: `<ns>:audit:{p<N>}:<account>`, a stream per account (in the
//!   account's partition slot, so it works on Redis Cluster): one entry per
//!   delivery outcome and policy decision. Ids and field names only, never
//!   values. Its own retention: `XADD … MAXLEN ~ max`, `XTRIM MINID ~
//!   now-retention` and an expiry on the key. Reading one account is an
//!   `XRANGE` of its own stream, whatever the number of records of others.
//!
//! Slots: each operation names one key.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::streams::StreamRangeReply;
use serde::{Deserialize, Serialize};

use crate::client::Conn;
use crate::log::LogError;
use switchyard_core::event::ConsentState;

/// A consumer's consent view of one account.
pub fn consent_key(ns: &str, consumer: &str, p: u32, account: &str) -> String {
    format!("{ns}:c:{consumer}:consent:{{p{p}}}:{account}")
}

/// One account's audit stream.
pub fn audit_key(ns: &str, p: u32, account: &str) -> String {
    format!("{ns}:audit:{{p{p}}}:{account}")
}

/// Apply `updates` to a consumer's consent view of an account and return
/// the whole view after them (one round trip).
pub async fn apply_consent(
    conn: &mut Conn,
    key: &str,
    updates: &BTreeMap<String, ConsentState>,
) -> Result<BTreeMap<String, ConsentState>, LogError> {
    let mut pipe = redis::pipe();
    if !updates.is_empty() {
        let mut hset = redis::cmd("HSET");
        hset.arg(key);
        for (k, v) in updates {
            hset.arg(k).arg(v.as_str());
        }
        pipe.add_command(hset).ignore();
    }
    pipe.cmd("HGETALL").arg(key);
    let (all,): (BTreeMap<String, String>,) = pipe.query_async(conn).await?;
    Ok(all
        .into_iter()
        .filter_map(|(k, v)| ConsentState::parse(&v).map(|s| (k, s)))
        .collect())
}

/// One audit record: ids, names and counts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The stream id (`<ms>-<seq>`); set when read back.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub event: String,
    pub consumer: String,
    pub topic: String,
    /// `delivered`, `duplicate`, `filtered`, `dead_lettered`, `deleted`…
    pub outcome: String,
    /// The rule that filtered the event, or the dead-letter kind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    /// The vendor's last HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Module names and content hashes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modules: String,
    /// The privacy policy's content hash.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jurisdiction: String,
    /// The consent decision's reason (purpose names, never values).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub consent: String,
    /// Fields removed or changed: `data.email:drop`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Record time (RFC 3339).
    #[serde(default)]
    pub time: String,
}

/// Append `rec` to the account's audit stream, trimmed to `max` records and
/// `retention`.
pub async fn audit(
    conn: &mut Conn,
    key: &str,
    rec: &AuditRecord,
    max: u64,
    retention: Duration,
) -> Result<(), LogError> {
    let body = serde_json::to_string(rec).expect("audit record serialises");
    let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let min = now_ms.saturating_sub(retention.as_millis() as u64);
    let mut pipe = redis::pipe();
    pipe.cmd("XADD")
        .arg(key)
        .arg("MAXLEN")
        .arg("~")
        .arg(max)
        .arg("*")
        .arg("r")
        .arg(body)
        .ignore();
    pipe.cmd("XTRIM")
        .arg(key)
        .arg("MINID")
        .arg("~")
        .arg(min)
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(key)
        .arg(retention.as_millis() as u64)
        .ignore();
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

/// An account's audit records since `since_ms` (oldest first).
pub async fn read_audit(
    conn: &mut Conn,
    key: &str,
    since_ms: Option<u64>,
) -> Result<Vec<AuditRecord>, LogError> {
    let start = since_ms.map_or("-".to_string(), |ms| ms.to_string());
    let mut out = Vec::new();
    let mut cursor = start;
    loop {
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(key)
            .arg(&cursor)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let n = reply.ids.len();
        for e in reply.ids {
            let text: Option<String> = e.get("r");
            let mut rec: AuditRecord = text
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            rec.id = e.id.clone();
            cursor = format!("({}", e.id);
            out.push(rec);
        }
        if n < 1000 {
            return Ok(out);
        }
    }
}

/// An account's deletion record: `requested_at` (the request's source
/// time, the tombstone), `request` (its event id), `done:<consumer>` (when
/// each consumer's vendor acknowledged the request) and `purged` (when the
/// router erased its own copies, with counts).
pub fn deletion_key(ns: &str, p: u32, account: &str) -> String {
    format!("{ns}:deletion:{{p{p}}}:{account}")
}

/// Apply consent updates and read the view (as [`apply_consent`]) and the
/// account's tombstone (the deletion request's source time, if any), in
/// one round trip.
pub async fn consent_and_tombstone(
    conn: &mut Conn,
    consent: &str,
    deletion: &str,
    updates: &BTreeMap<String, ConsentState>,
) -> Result<(BTreeMap<String, ConsentState>, Option<String>), LogError> {
    let mut pipe = redis::pipe();
    if !updates.is_empty() {
        let mut hset = redis::cmd("HSET");
        hset.arg(consent);
        for (k, v) in updates {
            hset.arg(k).arg(v.as_str());
        }
        pipe.add_command(hset).ignore();
    }
    pipe.cmd("HGETALL").arg(consent);
    pipe.cmd("HGET").arg(deletion).arg("requested_at");
    let (all, tomb): (BTreeMap<String, String>, Option<String>) = pipe.query_async(conn).await?;
    Ok((
        all.into_iter()
            .filter_map(|(k, v)| ConsentState::parse(&v).map(|s| (k, s)))
            .collect(),
        tomb,
    ))
}

// KEYS: 1 deletion record. ARGV: 1 requested_at (RFC 3339 UTC, fixed width
// as chrono writes it with `SecondsFormat::Micros`), 2 request event id.
// The tombstone only moves forward.
const REQUEST_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'requested_at')
if (not cur) or cur < ARGV[1] then
  redis.call('HSET', KEYS[1], 'requested_at', ARGV[1], 'request', ARGV[2])
end
return 1
"#;

/// Record a deletion request (the account's tombstone).
pub async fn request_deletion(
    conn: &mut Conn,
    key: &str,
    requested_at: &str,
    event: &str,
) -> Result<(), LogError> {
    redis::cmd("EVAL")
        .arg(REQUEST_LUA)
        .arg(1)
        .arg(key)
        .arg(requested_at)
        .arg(event)
        .query_async::<i64>(conn)
        .await?;
    Ok(())
}

/// Record that `consumer` delivered the deletion request; returns whether
/// every one of `consumers` has.
pub async fn deletion_done(
    conn: &mut Conn,
    key: &str,
    consumer: &str,
    what: &str,
    consumers: &[String],
) -> Result<bool, LogError> {
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg(key)
        .arg(format!("done:{consumer}"))
        .arg(what)
        .ignore();
    let mut hmget = redis::cmd("HMGET");
    hmget.arg(key);
    for c in consumers {
        hmget.arg(format!("done:{c}"));
    }
    pipe.add_command(hmget);
    let (got,): (Vec<Option<String>>,) = pipe.query_async(conn).await?;
    Ok(got.iter().all(Option::is_some))
}

// Erase an account's copies in one partition. KEYS: 1 log stream, 2 account
// index, 3 deletion record, then per consumer: dlq, defer list, deferred set,
// parked set, consent view. ARGV: 1 account, 2 the request's stream id (log
// entries up to it go), 3 number of consumers, 4 now.
// Returns {log entries, dlq entries, deferred events} removed.
const PURGE_LUA: &str = r#"
local function le(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as <= bs)
end
local del, keep = {}, {}
for _, id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if le(id, ARGV[2]) then del[#del + 1] = id else keep[#keep + 1] = id end
end
local n = 0
for i = 1, #del, 500 do
  n = n + redis.call('XDEL', KEYS[1], unpack(del, i, math.min(i + 499, #del)))
end
redis.call('DEL', KEYS[2])
for i = 1, #keep, 500 do
  redis.call('RPUSH', KEYS[2], unpack(keep, i, math.min(i + 499, #keep)))
end
local dlq, deferred = 0, 0
for c = 0, tonumber(ARGV[3]) - 1 do
  local b = 4 + c * 5
  local rm = {}
  for _, e in ipairs(redis.call('XRANGE', KEYS[b], '-', '+')) do
    for i = 1, #e[2], 2 do
      if e[2][i] == 'account' and e[2][i + 1] == ARGV[1] then rm[#rm + 1] = e[1] end
    end
  end
  for i = 1, #rm, 500 do
    dlq = dlq + redis.call('XDEL', KEYS[b], unpack(rm, i, math.min(i + 499, #rm)))
  end
  deferred = deferred + redis.call('LLEN', KEYS[b + 1])
  redis.call('DEL', KEYS[b + 1], KEYS[b + 4])
  redis.call('SREM', KEYS[b + 2], ARGV[1])
  redis.call('SREM', KEYS[b + 3], ARGV[1])
end
redis.call('HSET', KEYS[3], 'purged',
  ARGV[4] .. ' log=' .. n .. ' dlq=' .. dlq .. ' deferred=' .. deferred)
return {n, dlq, deferred}
"#;

/// What [`purge_account`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub log: u64,
    pub dlq: u64,
    pub deferred: u64,
}

/// Erase an account's log entries up to `upto` (its deletion request's
/// stream id), found through the account index (no scan of the log), and
/// its DLQ entries, defer lists and consent views at `consumers`; record
/// the purge in the deletion record. One script: one partition's slot.
pub async fn purge_account(
    conn: &mut Conn,
    ns: &str,
    p: u32,
    account: &str,
    upto: &str,
    consumers: &[String],
) -> Result<Purged, LogError> {
    let log = crate::log::Keys {
        namespace: ns.to_string(),
    };
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(PURGE_LUA)
        .arg(3 + 5 * consumers.len())
        .arg(log.stream(p))
        .arg(log.account_index(p, account))
        .arg(deletion_key(ns, p, account));
    for c in consumers {
        let k = crate::consumer::ConsumerKeys {
            ns: ns.to_string(),
            consumer: c.clone(),
        };
        cmd.arg(k.dlq(p))
            .arg(k.defer_list(p, account))
            .arg(k.deferred_set(p))
            .arg(k.parked_set(p))
            .arg(consent_key(ns, c, p, account));
    }
    cmd.arg(account)
        .arg(upto)
        .arg(consumers.len())
        .arg(chrono::Utc::now().to_rfc3339());
    let (log_n, dlq, deferred): (u64, u64, u64) = cmd.query_async(conn).await?;
    Ok(Purged {
        log: log_n,
        dlq,
        deferred,
    })
}

/// An account's deletion record (empty without one).
pub async fn read_deletion(
    conn: &mut Conn,
    key: &str,
) -> Result<BTreeMap<String, String>, LogError> {
    Ok(redis::cmd("HGETALL").arg(key).query_async(conn).await?)
}
