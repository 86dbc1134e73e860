//! Per-record fault tolerance for the CDC sources: a row or event that
//! cannot be mapped does not stop the source. It goes to the source's
//! quarantine (`switchyard_store::quarantine`) with the source, table, key,
//! position and reason, the rest of the batch flows and the position
//! advances. `switchyard quarantine list|replay` works on it.
//!
//! What is quarantined:
//! - an event whose topic, rendered from column values, breaks the topic
//!   rule (`invalid topic`), with the whole event (replay with `--topic`);
//! - an event larger than the source's `max_event_size` (`oversized`);
//! - a row the source cannot decode (a tuple that does not fit the table's
//!   columns, a value the binlog decoder cannot read): no event, only its
//!   identity and position (it cannot be replayed; the reason says so);
//! - an event the schema registry refuses (`schema`, see `crate::schema`),
//!   with the violation; replayed once the schema or the row is fixed.
//!
//! A mapping pushes records into its [`Sink`] (synchronously, while
//! decoding); the source's loop [`flush`]es the sink to Redis before the
//! position that covers them is confirmed. Records are keyed by event id
//! (or a deterministic id of the position), so a re-read after a crash
//! replaces them rather than adding copies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use switchyard_core::event::{self, Event};
use switchyard_store::log::{Log, LogError};

/// Namespace of the ids of quarantined rows that have no event (UUIDv5).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x91c4_0e7d_2a6b_4f35_8e19_b3d7_40a2_6c58);

/// The default `max_event_size` of the CDC sources.
pub fn default_max_event_size() -> switchyard_core::config::ByteSize {
    switchyard_core::config::ByteSize(1 << 20)
}

/// One quarantined record (stored as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The event id, or a deterministic id of the position.
    pub id: String,
    pub source: String,
    pub table: String,
    pub key: Value,
    /// Source position (Postgres commit LSN, MySQL `file:pos`) and the
    /// change's sequence in its transaction.
    pub position: String,
    pub seq: u64,
    /// `invalid_topic`, `oversized` or `undecodable`.
    pub kind: String,
    pub reason: String,
    pub quarantined_at: DateTime<Utc>,
    /// The event as mapped, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

impl Quarantined {
    /// A row that could not be decoded: no event.
    pub fn undecodable(
        source: &str,
        table: &str,
        position: &str,
        seq: u64,
        reason: String,
    ) -> Quarantined {
        Quarantined {
            id: uuid::Uuid::new_v5(
                &ID_NAMESPACE,
                format!("{source}/{table}/{position}/{seq}").as_bytes(),
            )
            .to_string(),
            source: source.to_string(),
            table: table.to_string(),
            key: Value::Null,
            position: position.to_string(),
            seq,
            kind: "undecodable".into(),
            reason,
            quarantined_at: Utc::now(),
            event: None,
        }
    }
}

/// Records waiting to be written, per table mapping.
#[derive(Debug, Default)]
pub struct Sink {
    items: Mutex<Vec<Quarantined>>,
    len: AtomicUsize,
}

impl Sink {
    pub fn push(&self, q: Quarantined) {
        tracing::warn!(source = %q.source, table = %q.table, key = %q.key, position = %q.position,
            kind = %q.kind, reason = %q.reason, "CDC record quarantined; the source goes on (see `switchyard quarantine list`)");
        switchyard_core::metrics::quarantined(&q.source, quarantine_kind(&q.kind));
        let mut v = self.items.lock().unwrap_or_else(|e| e.into_inner());
        v.push(q);
        self.len.store(v.len(), Ordering::Release);
    }

    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    pub fn take(&self) -> Vec<Quarantined> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut v = self.items.lock().unwrap_or_else(|e| e.into_inner());
        self.len.store(0, Ordering::Release);
        std::mem::take(&mut *v)
    }
}

fn quarantine_kind(k: &str) -> &'static str {
    match k {
        "invalid_topic" => "invalid_topic",
        "oversized" => "oversized",
        "schema" => "schema",
        _ => "undecodable",
    }
}

/// Why `ev` cannot be written as it is, if it cannot: its topic breaks the
/// topic rule, or it encodes to more than `max_size` bytes.
pub fn problem(ev: &Event, max_size: u64) -> Option<(&'static str, String)> {
    if !event::valid_topic(&ev.topic) {
        return Some((
            "invalid_topic",
            format!(
                "its topic, made from column values, is not a valid topic ({}); fix the row or the template, or replay with --topic",
                event::TOPIC_RULE
            ),
        ));
    }
    let size = event::encode(ev)
        .map(|b| b.len() as u64)
        .unwrap_or(u64::MAX);
    if size > max_size {
        return Some((
            "oversized",
            format!("the event is {size} bytes, more than max_event_size ({max_size} bytes)"),
        ));
    }
    None
}

/// Move the events of one row change that cannot be written into `sink`
/// (each with its reason); the others stay in `events`.
pub fn screen(events: &mut Vec<Event>, sink: &Sink, table: &str, max_size: u64) {
    events.retain(|ev| match problem(ev, max_size) {
        None => true,
        Some((kind, reason)) => {
            sink.push(Quarantined::of_event(ev, table, kind, reason));
            false
        }
    });
}

impl Quarantined {
    /// A mapped event that cannot be written as it is, with its identity.
    pub fn of_event(ev: &Event, table: &str, kind: &str, reason: String) -> Quarantined {
        let (position, seq) = ev
            .commit
            .as_ref()
            .map(|c| (c.id.clone(), c.seq))
            .unwrap_or_else(|| ("snapshot".into(), 0));
        Quarantined {
            id: ev.id.clone(),
            source: ev.source.clone(),
            table: table.to_string(),
            key: ev.key.clone().unwrap_or(Value::Null),
            position,
            seq,
            kind: kind.into(),
            reason,
            quarantined_at: Utc::now(),
            event: Some(ev.clone()),
        }
    }
}

/// Write `records` to `source`'s quarantine (one `HSET`, keyed by id).
pub async fn put(log: &Log, source: &str, records: &[Quarantined]) -> Result<(), LogError> {
    let entries: Vec<(String, String)> = records
        .iter()
        .map(|q| (q.id.clone(), serde_json::to_string(q).unwrap_or_default()))
        .collect();
    switchyard_store::quarantine::put(log, source, &entries).await
}

/// Write what `sinks` hold to `source`'s quarantine.
pub async fn flush<'a>(
    log: &Log,
    source: &str,
    sinks: impl Iterator<Item = &'a Sink>,
) -> Result<(), LogError> {
    let mut all = Vec::new();
    for s in sinks {
        all.extend(s.take());
    }
    put(log, source, &all).await
}

/// `source`'s quarantined records, oldest first.
pub async fn list(log: &Log, source: &str) -> Result<Vec<Quarantined>, LogError> {
    let mut v: Vec<Quarantined> = switchyard_store::quarantine::all(log, source)
        .await?
        .into_iter()
        .filter_map(|(_, j)| serde_json::from_str(&j).ok())
        .collect();
    v.sort_by(|a, b| (a.quarantined_at, &a.id).cmp(&(b.quarantined_at, &b.id)));
    Ok(v)
}

/// The outcome of replaying one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Appended to the log (or already there) and removed from quarantine.
    Appended,
    /// Still cannot be written; kept. The text says why and what to do.
    Kept(String),
}

/// Replay one record: its event (with `topic` instead of its own, when
/// given) is appended to the log and the record removed; a record that
/// still cannot be written is kept, with the reason. With a schema
/// registry, the event must match its schema now, as the source requires.
pub async fn replay(
    log: &Log,
    q: &Quarantined,
    topic: Option<&str>,
    max_size: u64,
    schemas: Option<&crate::schema::Registry>,
) -> Result<Replayed, LogError> {
    let Some(ev) = &q.event else {
        return Ok(Replayed::Kept(format!(
            "no event to replay: the row at {} (change {}) could not be decoded ({}); \
             update the row at the source (a new change is captured) or snapshot the table again",
            q.position, q.seq, q.reason
        )));
    };
    let mut ev = ev.clone();
    if let Some(t) = topic {
        ev.topic = t.to_string();
    }
    if let Some((_, why)) = problem(&ev, max_size) {
        return Ok(Replayed::Kept(format!("still not writable: {why}")));
    }
    if let Some(reg) = schemas {
        if let Err(v) = reg.check(&mut ev) {
            return Ok(Replayed::Kept(format!(
                "still does not match its schema: {v}; fix the schema (`switchyard schema check`) or the row"
            )));
        }
    }
    log.append(std::slice::from_ref(&ev)).await?;
    switchyard_store::quarantine::remove(log, &q.source, &q.id).await?;
    Ok(Replayed::Appended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ev(topic: &str, data: Value) -> Event {
        Event {
            id: "e1".into(),
            topic: topic.into(),
            source: "crm".into(),
            op: event::Op::Insert,
            account_id: "a".into(),
            key: Some(serde_json::json!({"id": 1})),
            before: None,
            after: None,
            data: Some(data),
            changed: vec![],
            occurred_at: Utc::now(),
            ingested_at: Utc::now(),
            commit: Some(event::Commit {
                id: "0/16B3748".into(),
                seq: 2,
            }),
            trace: None,
            consent: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn screen_moves_invalid_and_oversized_events_with_their_identity() {
        let sink = Sink::default();
        let mut evs = vec![
            ev("ok.topic", Value::Null),
            ev("bad topic", Value::Null),
            ev("ok.big", Value::String("x".repeat(2000))),
        ];
        screen(&mut evs, &sink, "public.t", 1000);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].topic, "ok.topic");
        let q = sink.take();
        assert!(sink.is_empty());
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].kind, "invalid_topic");
        assert_eq!(q[0].position, "0/16B3748");
        assert_eq!(q[0].seq, 2);
        assert_eq!(q[0].key, serde_json::json!({"id": 1}));
        assert_eq!(q[0].table, "public.t");
        assert_eq!(q[1].kind, "oversized");
        assert!(q[1].reason.contains("max_event_size"), "{}", q[1].reason);
        assert!(q[1].event.is_some());
    }

    #[test]
    fn undecodable_ids_are_deterministic() {
        let a = Quarantined::undecodable("s", "t", "f:4", 1, "x".into());
        let b = Quarantined::undecodable("s", "t", "f:4", 1, "y".into());
        let c = Quarantined::undecodable("s", "t", "f:4", 2, "x".into());
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        let back: Quarantined = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
