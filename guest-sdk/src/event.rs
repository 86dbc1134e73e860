//! The canonical event as a transform sees it.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bindings::switchyard::transform::types as wit;
use crate::Error;

/// What happened at the source.
///
/// Its text form ([`Op::as_str`], serde) is the canonical one used in the
/// host's JSON (`soft_delete`); [`Op::parse`] also accepts the WIT spelling
/// (`soft-delete`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// A row was inserted.
    Insert,
    /// A row was updated.
    Update,
    /// A row was deleted.
    Delete,
    /// A row was marked deleted.
    SoftDelete,
    /// A soft-deleted row came back.
    Restore,
    /// A row emitted by an initial CDC snapshot.
    Snapshot,
    /// An application event (not a row change).
    Event,
}

impl Op {
    /// Every op, in WIT order.
    pub const ALL: [Op; 7] = [
        Op::Insert,
        Op::Update,
        Op::Delete,
        Op::SoftDelete,
        Op::Restore,
        Op::Snapshot,
        Op::Event,
    ];

    /// Canonical name (`insert`, …, `soft_delete`, …).
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

    /// Parse a name; `-` and `_` are interchangeable, case is ignored.
    pub fn parse(s: &str) -> Option<Op> {
        let s = s.trim().to_ascii_lowercase().replace('-', "_");
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }

    fn from_wit(op: wit::Op) -> Op {
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

    fn into_wit(self) -> wit::Op {
        match self {
            Op::Insert => wit::Op::Insert,
            Op::Update => wit::Op::Update,
            Op::Delete => wit::Op::Delete,
            Op::SoftDelete => wit::Op::SoftDelete,
            Op::Restore => wit::Op::Restore,
            Op::Snapshot => wit::Op::Snapshot,
            Op::Event => wit::Op::Event,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Source position of a CDC change: commit id (LSN) and sequence in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Commit id (for Postgres: the commit LSN).
    pub id: String,
    /// Sequence of the change inside the commit.
    pub seq: u64,
}

/// One canonical event, with its JSON fields parsed.
///
/// Serde gives the same JSON layout as the host's canonical event
/// (`traceparent` is written `trace`; empty fields are omitted), which makes
/// [`Event::from_json`] handy in tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// Routing topic, e.g. `customer.banner-a.email_changed`.
    pub topic: String,
    /// Name of the configured source that produced the event.
    #[serde(default)]
    pub source: String,
    /// What happened.
    pub op: Op,
    /// Partition key: every event of one account keeps its order.
    #[serde(default)]
    pub account_id: String,
    /// Primary key of the changed entity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// Row image before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Row image after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Application-event payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Names of the fields whose value changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// RFC 3339 source time.
    #[serde(default)]
    pub occurred_at: String,
    /// RFC 3339 time Switchyard accepted the event.
    #[serde(default)]
    pub ingested_at: String,
    /// CDC source position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<Commit>,
    /// W3C traceparent.
    #[serde(
        default,
        rename = "trace",
        alias = "traceparent",
        skip_serializing_if = "Option::is_none"
    )]
    pub traceparent: Option<String>,
    /// Consent per channel: `granted`, `denied` or `unknown`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consent: BTreeMap<String, String>,
    /// Free-form string attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

fn parse_json(field: &str, text: Option<String>) -> Result<Option<Value>, Error> {
    match text {
        None => Ok(None),
        Some(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| Error::fatal(format!("event field `{field}` is not valid JSON: {e}"))),
    }
}

fn to_json(v: Option<Value>) -> Option<String> {
    // Serialising a `Value` cannot fail.
    v.map(|v| v.to_string())
}

fn shape_error(field: &str, e: serde_json::Error) -> Error {
    Error::fatal(format!(
        "event field `{field}` does not have the expected shape: {e}"
    ))
}

impl Event {
    /// A new event with the given topic and op and every other field empty.
    /// Mostly for tests.
    pub fn new(topic: impl Into<String>, op: Op) -> Event {
        Event {
            id: String::new(),
            topic: topic.into(),
            source: String::new(),
            op,
            account_id: String::new(),
            key: None,
            before: None,
            after: None,
            data: None,
            changed: Vec::new(),
            occurred_at: String::new(),
            ingested_at: String::new(),
            commit: None,
            traceparent: None,
            consent: BTreeMap::new(),
            attributes: BTreeMap::new(),
        }
    }

    /// Parse the canonical JSON form (as the host writes it). Missing
    /// `source`, `account_id`, times default to empty.
    pub fn from_json(text: &str) -> Result<Event, Error> {
        serde_json::from_str(text).map_err(|e| Error::fatal(format!("not a canonical event: {e}")))
    }

    /// The canonical JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an Event always serialises")
    }

    /// `after` deserialised into `T`; a fatal error if absent or of another shape.
    pub fn after_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Self::part_as("after", &self.after)
    }
    /// `before` deserialised into `T`; a fatal error if absent or of another shape.
    pub fn before_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Self::part_as("before", &self.before)
    }
    /// `data` deserialised into `T`; a fatal error if absent or of another shape.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Self::part_as("data", &self.data)
    }
    /// `key` deserialised into `T`; a fatal error if absent or of another shape.
    pub fn key_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Self::part_as("key", &self.key)
    }

    fn part_as<T: DeserializeOwned>(name: &str, v: &Option<Value>) -> Result<T, Error> {
        match v {
            None => Err(Error::fatal(format!("event has no `{name}`"))),
            Some(v) => T::deserialize(v).map_err(|e| shape_error(name, e)),
        }
    }

    /// The entity's current state: `after`, or else `data` (application events).
    pub fn payload(&self) -> Option<&Value> {
        self.after.as_ref().or(self.data.as_ref())
    }

    /// Consent state of a channel (`granted`, `denied`, `unknown`), if given.
    pub fn consent(&self, channel: &str) -> Option<&str> {
        self.consent.get(channel).map(String::as_str)
    }

    /// Whether the channel's consent is `granted`.
    pub fn consent_granted(&self, channel: &str) -> bool {
        self.consent(channel) == Some("granted")
    }

    fn root(&self, name: &str) -> Option<&Option<Value>> {
        match name {
            "key" => Some(&self.key),
            "before" => Some(&self.before),
            "after" => Some(&self.after),
            "data" => Some(&self.data),
            _ => None,
        }
    }

    fn root_mut(&mut self, name: &str) -> Option<&mut Option<Value>> {
        match name {
            "key" => Some(&mut self.key),
            "before" => Some(&mut self.before),
            "after" => Some(&mut self.after),
            "data" => Some(&mut self.data),
            _ => None,
        }
    }

    /// A value inside one of the JSON parts by dotted path: `after.email`,
    /// `data.address.zip`, `before.tags.0`. The first segment must be `key`,
    /// `before`, `after` or `data`; numeric segments index arrays.
    pub fn json(&self, path: &str) -> Option<&Value> {
        let mut segs = path.split('.');
        let mut cur = self.root(segs.next()?)?.as_ref()?;
        for seg in segs {
            cur = step(cur, seg)?;
        }
        Some(cur)
    }

    /// Mutable form of [`Event::json`].
    pub fn json_mut(&mut self, path: &str) -> Option<&mut Value> {
        let mut segs = path.split('.');
        let mut cur = self.root_mut(segs.next()?)?.as_mut()?;
        for seg in segs {
            cur = step_mut(cur, seg)?;
        }
        Some(cur)
    }

    /// Remove the value at a JSON path (see [`Event::json`]) and return it.
    /// A bare root (`after`) clears that part.
    pub fn remove_json(&mut self, path: &str) -> Option<Value> {
        match path.rsplit_once('.') {
            None => self.root_mut(path)?.take(),
            Some((parent, last)) => match self.json_mut(parent)? {
                Value::Object(m) => m.remove(last),
                Value::Array(a) => {
                    let i: usize = last.parse().ok()?;
                    (i < a.len()).then(|| a.remove(i))
                }
                _ => None,
            },
        }
    }

    /// Any field by path, as a JSON value: the JSON paths of [`Event::json`],
    /// plus `id`, `topic`, `source`, `op`, `account_id`, `occurred_at`,
    /// `ingested_at`, `traceparent`, `changed`, `commit.id`, `commit.seq`,
    /// `attributes.<name>` and `consent.<channel>`.
    pub fn field(&self, path: &str) -> Option<Value> {
        let s = |v: &str| Some(Value::String(v.to_string()));
        match path {
            "id" => return s(&self.id),
            "topic" => return s(&self.topic),
            "source" => return s(&self.source),
            "op" => return s(self.op.as_str()),
            "account_id" => return s(&self.account_id),
            "occurred_at" => return s(&self.occurred_at),
            "ingested_at" => return s(&self.ingested_at),
            "traceparent" | "trace" => return self.traceparent.as_deref().and_then(s),
            "changed" => {
                return Some(
                    self.changed
                        .iter()
                        .map(|c| Value::String(c.clone()))
                        .collect(),
                )
            }
            "commit.id" => return self.commit.as_ref().and_then(|c| s(&c.id)),
            "commit.seq" => return self.commit.as_ref().map(|c| Value::from(c.seq)),
            _ => {}
        }
        if let Some(name) = path.strip_prefix("attributes.") {
            return self.attributes.get(name).and_then(|v| s(v));
        }
        if let Some(ch) = path.strip_prefix("consent.") {
            return self.consent.get(ch).and_then(|v| s(v));
        }
        self.json(path).cloned()
    }

    /// Convert from the WIT record (parses the JSON text fields).
    pub fn from_wit(ev: wit::Event) -> Result<Event, Error> {
        Ok(Event {
            key: parse_json("key", ev.key)?,
            before: parse_json("before", ev.before)?,
            after: parse_json("after", ev.after)?,
            data: parse_json("data", ev.data)?,
            id: ev.id,
            topic: ev.topic,
            source: ev.source,
            op: Op::from_wit(ev.op),
            account_id: ev.account_id,
            changed: ev.changed,
            occurred_at: ev.occurred_at,
            ingested_at: ev.ingested_at,
            commit: ev.commit.map(|c| Commit {
                id: c.id,
                seq: c.seq,
            }),
            traceparent: ev.traceparent,
            consent: ev.consent.into_iter().collect(),
            attributes: ev.attributes.into_iter().collect(),
        })
    }

    /// Convert to the WIT record (JSON parts become JSON text).
    pub fn into_wit(self) -> wit::Event {
        wit::Event {
            id: self.id,
            topic: self.topic,
            source: self.source,
            op: self.op.into_wit(),
            account_id: self.account_id,
            key: to_json(self.key),
            before: to_json(self.before),
            after: to_json(self.after),
            data: to_json(self.data),
            changed: self.changed,
            occurred_at: self.occurred_at,
            ingested_at: self.ingested_at,
            commit: self.commit.map(|c| wit::CommitInfo {
                id: c.id,
                seq: c.seq,
            }),
            traceparent: self.traceparent,
            consent: self.consent.into_iter().collect(),
            attributes: self.attributes.into_iter().collect(),
        }
    }
}

fn step<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => a.get(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

fn step_mut<'a>(v: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    match v {
        Value::Object(m) => m.get_mut(seg),
        Value::Array(a) => a.get_mut(seg.parse::<usize>().ok()?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Event {
        Event::from_json(
            r#"{"id":"e1","topic":"customer.a.updated","source":"crm","op":"soft_delete",
            "account_id":"42","key":{"id":42},"after":{"email":"A@x.com","addr":{"zip":"123"},"tags":["a","b"]},
            "changed":["email"],"occurred_at":"2026-01-01T00:00:00Z","ingested_at":"2026-01-01T00:00:01Z",
            "commit":{"id":"0/1","seq":3},"trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "consent":{"email":"granted"},"attributes":{"banner":"a"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn wit_roundtrip_keeps_every_field() {
        let ev = sample();
        let back = Event::from_wit(ev.clone().into_wit()).unwrap();
        assert_eq!(back, ev);
        let w = ev.into_wit();
        assert_eq!(w.op, wit::Op::SoftDelete);
        assert_eq!(w.key.as_deref(), Some(r#"{"id":42}"#));
        assert_eq!(w.commit.unwrap().seq, 3);
    }

    #[test]
    fn bad_json_from_host_is_a_fatal_error_naming_the_field() {
        let mut w = sample().into_wit();
        w.before = Some("{nope".into());
        let e = Event::from_wit(w).unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("`before`"), "{}", e.message);
    }

    #[test]
    fn paths() {
        let mut ev = sample();
        assert_eq!(ev.json("after.addr.zip"), Some(&json!("123")));
        assert_eq!(ev.json("after.tags.1"), Some(&json!("b")));
        assert_eq!(ev.json("after.nope"), None);
        assert_eq!(ev.json("nope.x"), None);
        assert_eq!(ev.field("op"), Some(json!("soft_delete")));
        assert_eq!(ev.field("attributes.banner"), Some(json!("a")));
        assert_eq!(ev.field("consent.email"), Some(json!("granted")));
        assert_eq!(ev.field("commit.seq"), Some(json!(3)));
        *ev.json_mut("after.email").unwrap() = json!("b@x.com");
        assert_eq!(ev.remove_json("after.email"), Some(json!("b@x.com")));
        assert_eq!(ev.remove_json("after.tags.0"), Some(json!("a")));
        assert_eq!(ev.json("after.tags"), Some(&json!(["b"])));
        assert_eq!(ev.remove_json("key"), Some(json!({"id": 42})));
        assert_eq!(ev.key, None);
    }

    #[test]
    fn typed_access() {
        #[derive(Debug, Deserialize)]
        struct Cust {
            email: String,
        }
        let ev = sample();
        assert_eq!(ev.after_as::<Cust>().unwrap().email, "A@x.com");
        assert!(ev
            .data_as::<Cust>()
            .unwrap_err()
            .message
            .contains("no `data`"));
        assert!(ev.key_as::<Cust>().unwrap_err().message.contains("`key`"));
        assert_eq!(ev.payload(), ev.after.as_ref());
        assert!(ev.consent_granted("email"));
        assert!(!ev.consent_granted("sms"));
    }

    #[test]
    fn op_names() {
        assert_eq!(Op::parse("soft-delete"), Some(Op::SoftDelete));
        assert_eq!(Op::parse("SOFT_DELETE"), Some(Op::SoftDelete));
        assert_eq!(Op::parse("upsert"), None);
    }
}
