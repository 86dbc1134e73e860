//! Conversion between the canonical [`Event`] and the WIT records, in one
//! place. Structured values (key, before, after, data) cross as JSON text;
//! times as RFC 3339 (UTC, `Z`).

use chrono::{DateTime, SecondsFormat, Utc};

use super::bindings as wit;
use super::OutRequest;
use switchyard_core::event::{Commit, ConsentState, Event, Op};

fn json(v: &Option<serde_json::Value>) -> Option<String> {
    // serde_json::to_string writes straight into a Vec; `Value::to_string`
    // goes through fmt::Formatter and is noticeably slower.
    v.as_ref()
        .map(|v| serde_json::to_string(v).expect("a JSON value always serialises"))
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn op_to_wit(op: Op) -> wit::Op {
    match op {
        Op::Insert => wit::Op::Insert,
        Op::Update => wit::Op::Update,
        Op::Delete => wit::Op::Delete,
        Op::SoftDelete => wit::Op::SoftDelete,
        Op::Restore => wit::Op::Restore,
        Op::Snapshot => wit::Op::Snapshot,
        Op::Event => wit::Op::Event,
    }
}

pub fn op_from_wit(op: wit::Op) -> Op {
    match op {
        wit::Op::Insert => Op::Insert,
        wit::Op::Update => Op::Update,
        wit::Op::Delete => Op::Delete,
        wit::Op::SoftDelete => Op::SoftDelete,
        wit::Op::Restore => Op::Restore,
        wit::Op::Snapshot => Op::Snapshot,
        wit::Op::Event => Op::Event,
    }
}

/// Canonical event → WIT record.
pub fn to_wit(ev: &Event) -> wit::Event {
    wit::Event {
        id: ev.id.clone(),
        topic: ev.topic.clone(),
        source: ev.source.clone(),
        op: op_to_wit(ev.op),
        account_id: ev.account_id.clone(),
        key: json(&ev.key),
        before: json(&ev.before),
        after: json(&ev.after),
        data: json(&ev.data),
        changed: ev.changed.clone(),
        occurred_at: time(&ev.occurred_at),
        ingested_at: time(&ev.ingested_at),
        commit: ev.commit.as_ref().map(|c| wit::CommitInfo {
            id: c.id.clone(),
            seq: c.seq,
        }),
        traceparent: ev.trace.clone(),
        consent: ev
            .consent
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().to_string()))
            .collect(),
        attributes: ev
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn parse_json(field: &str, v: Option<String>) -> Result<Option<serde_json::Value>, String> {
    v.map(|s| {
        serde_json::from_str(&s).map_err(|e| format!("field `{field}` is not valid JSON: {e}"))
    })
    .transpose()
}

fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("field `{field}` is not an RFC 3339 time ({s:?}): {e}"))
}

/// WIT record (as rewritten by a guest) → canonical event. Fails on invalid
/// JSON text, times or consent states.
pub fn from_wit(ev: wit::Event) -> Result<Event, String> {
    let mut consent = std::collections::BTreeMap::new();
    for (ch, state) in ev.consent {
        let st = ConsentState::parse(&state).ok_or_else(|| {
            format!("consent `{ch}` has state {state:?} (expected granted, denied or unknown)")
        })?;
        consent.insert(ch, st);
    }
    Ok(Event {
        id: ev.id,
        topic: ev.topic,
        source: ev.source,
        op: op_from_wit(ev.op),
        account_id: ev.account_id,
        key: parse_json("key", ev.key)?,
        before: parse_json("before", ev.before)?,
        after: parse_json("after", ev.after)?,
        data: parse_json("data", ev.data)?,
        changed: ev.changed,
        occurred_at: parse_time("occurred-at", &ev.occurred_at)?,
        ingested_at: parse_time("ingested-at", &ev.ingested_at)?,
        commit: ev.commit.map(|c| Commit {
            id: c.id,
            seq: c.seq,
        }),
        trace: ev.traceparent,
        consent,
        attributes: ev.attributes.into_iter().collect(),
    })
}

/// WIT request → outgoing request of `module`.
pub fn request_from_wit(r: wit::Request, module: &str) -> OutRequest {
    OutRequest {
        module: module.to_string(),
        body: r.body,
        content_type: r.content_type,
        method: r.method,
        path: r.path,
        headers: r.headers,
    }
}

/// An event that left the last module: sent as the canonical JSON.
pub fn event_request(ev: wit::Event, module: &str) -> Result<OutRequest, String> {
    Ok(OutRequest::canonical_json(&from_wit(ev)?, module))
}
