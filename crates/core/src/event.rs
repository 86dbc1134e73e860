//! The canonical event: one type for CDC changes and application events.
//!
//! Every field is documented in ARCHITECTURE.md ("The canonical event").
//! In Redis an event is stored as MessagePack (rmp-serde, struct-as-map so
//! fields can be added without breaking old readers) inside a stream entry
//! whose `v` field carries [`FORMAT_VERSION`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version of the stored encoding. Bump when a change is not readable by the
/// previous decoder; [`decode`] refuses versions it does not know.
pub const FORMAT_VERSION: u32 = 1;

/// What happened at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Insert,
    Update,
    Delete,
    SoftDelete,
    Restore,
    /// A row emitted by an initial CDC snapshot.
    Snapshot,
    /// An application event (not a row change).
    Event,
}

impl Op {
    pub const ALL: [Op; 7] = [
        Op::Insert,
        Op::Update,
        Op::Delete,
        Op::SoftDelete,
        Op::Restore,
        Op::Snapshot,
        Op::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::SoftDelete => "soft_delete",
            Op::Restore => "restore",
            Op::Snapshot => "snapshot",
            Op::Event => "event",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Position of a change in its source (for Postgres: the commit LSN and the
/// change's sequence number inside that transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub id: String,
    pub seq: u64,
}

/// Consent state of one channel (email, sms, push, ads…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    Granted,
    Denied,
    Unknown,
}

impl ConsentState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentState::Granted => "granted",
            ConsentState::Denied => "denied",
            ConsentState::Unknown => "unknown",
        }
    }
    pub fn parse(s: &str) -> Option<ConsentState> {
        match s {
            "granted" => Some(ConsentState::Granted),
            "denied" => Some(ConsentState::Denied),
            "unknown" => Some(ConsentState::Unknown),
            _ => None,
        }
    }
}

/// The canonical event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id. Client-given ids are kept; otherwise a UUIDv7. CDC ids are
    /// derived from (slot, commit LSN, sequence) so a re-read dedups.
    pub id: String,
    /// Routing topic, e.g. `customer.banner-a.email_changed`.
    pub topic: String,
    /// Name of the configured source that produced the event.
    pub source: String,
    pub op: Op,
    /// Partition key: every event of one account keeps its order.
    pub account_id: String,
    /// Primary key of the changed entity (JSON: a string or an object of key columns).
    #[serde(
        default,
        deserialize_with = "de_non_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<Value>,
    /// Row image before the change (CDC update/delete; optional for app events).
    #[serde(
        default,
        deserialize_with = "de_non_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub before: Option<Value>,
    /// Row image after the change.
    #[serde(
        default,
        deserialize_with = "de_non_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub after: Option<Value>,
    /// Application-event payload (`op = event`).
    #[serde(
        default,
        deserialize_with = "de_non_null",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Value>,
    /// Names of the fields whose value changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Source time (commit time for CDC; client time or ingest time for app events).
    pub occurred_at: DateTime<Utc>,
    /// When Switchyard accepted the event.
    pub ingested_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// W3C `traceparent` of the request or transaction that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Consent state per channel, as known at the source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consent: BTreeMap<String, ConsentState>,
    /// Free-form string attributes (banner, location, schema version…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// `key`/`before`/`after`/`data`: a value that reads as JSON `null` is
/// absent (`None`), whatever encoded it (MessagePack `nil`, or a NaN float,
/// which JSON cannot hold). Without this a NaN decoded to `Some(Null)`,
/// which re-encoded as `nil` and then decoded to `None`: the same stored
/// event read differently after a rewrite (found by the `event_decode`
/// fuzz target).
fn de_non_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.filter(|v| !v.is_null()))
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("event format version {0} is not supported by this build (supports {FORMAT_VERSION}); upgrade switchyard")]
    UnsupportedVersion(u32),
    #[error("stream entry has no `{0}` field; it was not written by switchyard")]
    MissingField(&'static str),
    #[error("event body is not valid MessagePack for format {FORMAT_VERSION}: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
}

/// Encode an event body (MessagePack, fields by name).
pub fn encode(ev: &Event) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(ev)?)
}

/// Decode an event body written with format `version`.
pub fn decode(version: u32, body: &[u8]) -> Result<Event, CodecError> {
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion(version));
    }
    Ok(rmp_serde::from_slice(body)?)
}

/// A new UUIDv7 id (time-ordered).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Longest topic.
pub const MAX_TOPIC_LEN: usize = 256;

/// The topic rule of the event contract, as said in errors.
pub const TOPIC_RULE: &str = "must be 1-256 characters of letters, digits, '.', '_' or '-'";

/// Whether `c` may appear in a topic.
pub fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-".contains(c)
}

/// Whether `topic` obeys the event contract ([`TOPIC_RULE`]). Every entry
/// into the log or into a module chain checks it: HTTP ingest, CDC topic
/// templates rendered from column values, events that modules emit.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN && topic.chars().all(topic_char)
}

/// Whether `s` is a syntactically valid W3C traceparent (version 00).
pub fn valid_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 4 {
        return false;
    }
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "00000000000000000000000000000000"
        && hex(parts[2], 16)
        && parts[2] != "0000000000000000"
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Event {
        Event {
            id: new_id(),
            topic: "customer.banner-a.email_changed".into(),
            source: "crm".into(),
            op: Op::Update,
            account_id: "42".into(),
            key: Some(serde_json::json!({"id": 42})),
            before: Some(serde_json::json!({"email": "a@x.com", "n": 1.5, "tags": ["a"]})),
            after: Some(serde_json::json!({"email": "b@x.com", "n": null})),
            data: None,
            changed: vec!["email".into()],
            occurred_at: Utc::now(),
            ingested_at: Utc::now(),
            commit: Some(Commit {
                id: "0/16B3748".into(),
                seq: 3,
            }),
            trace: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            consent: [("email".to_string(), ConsentState::Granted)].into(),
            attributes: [("banner".to_string(), "a".to_string())].into(),
        }
    }

    #[test]
    fn msgpack_roundtrip_keeps_every_field() {
        let ev = sample();
        let bytes = encode(&ev).unwrap();
        assert_eq!(decode(FORMAT_VERSION, &bytes).unwrap(), ev);
    }

    #[test]
    fn unknown_version_is_refused() {
        let bytes = encode(&sample()).unwrap();
        assert!(matches!(
            decode(99, &bytes),
            Err(CodecError::UnsupportedVersion(99))
        ));
    }

    #[test]
    fn decoder_ignores_fields_it_does_not_know() {
        // A newer writer may add fields; an older reader must still decode.
        #[derive(Serialize)]
        struct Newer<'a> {
            #[serde(flatten)]
            ev: &'a Event,
            future_field: u32,
        }
        let ev = sample();
        let bytes = rmp_serde::to_vec_named(&Newer {
            ev: &ev,
            future_field: 7,
        })
        .unwrap();
        assert_eq!(decode(FORMAT_VERSION, &bytes).unwrap(), ev);
    }

    /// Found by the `event_decode` fuzz target: `key` holding a NaN float
    /// (JSON has no NaN) decoded as `Some(Null)` but re-encoded as `nil`,
    /// which decodes as `None`.
    #[test]
    fn a_value_that_is_null_in_json_decodes_as_absent() {
        #[derive(Serialize)]
        struct Raw<'a> {
            #[serde(flatten)]
            ev: &'a Event,
            key: f64,
            data: (),
        }
        let mut ev = sample();
        ev.key = None;
        let bytes = rmp_serde::to_vec_named(&Raw {
            ev: &ev,
            key: f64::NAN,
            data: (),
        })
        .unwrap();
        let decoded = decode(FORMAT_VERSION, &bytes).unwrap();
        assert_eq!(decoded.key, None);
        assert_eq!(decoded.data, None);
        assert_eq!(
            decode(FORMAT_VERSION, &encode(&decoded).unwrap()).unwrap(),
            decoded
        );
    }

    /// Found by the `event_decode` and `ingest_body` fuzz targets: without
    /// serde_json's `float_roundtrip` feature these floats came back one ULP
    /// off after JSON (delivery bodies, the module boundary, ingest).
    #[test]
    fn floats_survive_json_exactly() {
        for f in [
            1.5000000001164153_f64,
            4.1844674407370955e21,
            5e-324,
            f64::MAX,
        ] {
            let text = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), f, "{text}");
            let mut ev = sample();
            ev.data = Some(serde_json::json!({ "n": f }));
            let back: Event = serde_json::from_slice(&serde_json::to_vec(&ev).unwrap()).unwrap();
            assert_eq!(back, ev);
        }
    }

    #[test]
    fn traceparent_validation() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
    }
}
