//! Stateful modules (contract 0.2): the `kv` and `emit` imports.
//!
//! Nothing a module does through them takes effect during the call. Writes
//! and emitted events are **staged** in the call's [`CallCtx`] and returned
//! with the chain's outcome as [`Effects`]; the caller (delivery) commits
//! them only together with the event's outcome, once per event id (see
//! "Stateful modules" in ARCHITECTURE.md). `get` reads the committed value
//! through a [`KvStore`] and sees the call's own staged writes first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use globset::GlobSet;
use switchyard_core::event::Event;

use crate::limits;

/// Reads committed values (the router implements it on Redis, in the
/// source event's partition). Called on a guest thread: it may block.
pub trait KvStore: Send + Sync {
    /// The committed value of `key` of (consumer, `module`, `account`).
    fn get(&self, module: &str, account: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
}

/// A store that holds nothing (`switchyard transform test`, benchmarks):
/// every `get` is empty; staged writes are reported, never kept.
pub struct NoKv;

impl KvStore for NoKv {
    fn get(&self, _: &str, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

/// One staged write of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrite {
    pub module: String,
    pub key: String,
    /// `None`: delete.
    pub value: Option<Vec<u8>>,
    /// `None`: no expiry.
    pub ttl: Option<Duration>,
}

/// Everything a chain run staged for one event, to be committed with its
/// outcome (or thrown away if the event is retried or dead-lettered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Last write per (module, key), in key order.
    pub writes: Vec<KvWrite>,
    /// New events, in emit order, with their deterministic ids.
    pub emits: Vec<Event>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.emits.is_empty()
    }
}

/// The id of the `index`-th event `module` of `consumer` emits while
/// transforming `source_id`: a UUIDv5, so a redelivered event's emits carry
/// the ids of the first delivery's and the log drops them as duplicates.
pub fn emit_id(consumer: &str, module: &str, source_id: &str, index: usize) -> String {
    /// Fixed forever: changing it would change every derived id.
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x8a3f_52c1_0b7d_4e69_a1d4_73c0_5e2b_9f18);
    let name = format!(
        "{}:{consumer}{}:{module}{source_id}/{index}",
        consumer.len(),
        module.len()
    );
    uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).to_string()
}

/// What a module's `kv`/`emit` calls see during one `transform` call.
pub(crate) struct CallCtx {
    pub consumer: String,
    pub module: String,
    pub source: Event,
    pub store: Arc<dyn KvStore>,
    pub emit_topics: Option<Arc<GlobSet>>,
    /// Staged writes of this module for this event.
    pub staged: BTreeMap<String, (Option<Vec<u8>>, Option<Duration>)>,
    pub emits: Vec<Event>,
    /// Events this module already emitted for this event (an earlier call
    /// in a fan-out): the index of the next emit continues from there.
    pub emit_base: usize,
    pub kv_ops: usize,
}

impl CallCtx {
    /// The context of one `transform` call of `module` on (a descendant of)
    /// `source`; earlier calls of the same module for this event staged
    /// `so_far`'s writes, which it sees.
    pub fn new(
        consumer: &str,
        module: &crate::chain::Module,
        source: &Event,
        store: &Arc<dyn KvStore>,
        so_far: &Effects,
    ) -> CallCtx {
        let staged = so_far
            .writes
            .iter()
            .filter(|w| w.module == module.name)
            .map(|w| (w.key.clone(), (w.value.clone(), w.ttl)))
            .collect();
        let prefix = format!("{}/{}", consumer, module.name);
        let emit_base = so_far
            .emits
            .iter()
            .filter(|e| e.attributes.get("emitted_by") == Some(&prefix))
            .count();
        CallCtx {
            consumer: consumer.to_string(),
            module: module.name.clone(),
            source: source.clone(),
            store: store.clone(),
            emit_topics: module.emit_topics.clone(),
            staged,
            emits: Vec::new(),
            emit_base,
            kv_ops: 0,
        }
    }

    fn key_ok(&mut self, key: &str) -> Result<(), String> {
        self.kv_ops += 1;
        if self.kv_ops > limits::KV_OPS_PER_EVENT {
            return Err(format!(
                "more than {} kv operations for one event",
                limits::KV_OPS_PER_EVENT
            ));
        }
        if key.is_empty() || key.len() > limits::KV_MAX_KEY {
            return Err(format!(
                "kv key of {} bytes: keys are 1-{} bytes",
                key.len(),
                limits::KV_MAX_KEY
            ));
        }
        Ok(())
    }

    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.key_ok(key)?;
        if let Some((v, _)) = self.staged.get(key) {
            return Ok(v.clone());
        }
        self.store
            .get(&self.module, &self.source.account_id, key)
            .map_err(|e| format!("kv get failed (retry the event): {e}"))
    }

    pub fn set(&mut self, key: &str, value: Vec<u8>, ttl_seconds: u32) -> Result<(), String> {
        self.key_ok(key)?;
        if value.len() > limits::KV_MAX_VALUE {
            return Err(format!(
                "kv value of {} bytes for key {key:?}: at most {} bytes",
                value.len(),
                limits::KV_MAX_VALUE
            ));
        }
        if !self.staged.contains_key(key) && self.staged.len() >= limits::KV_WRITES_PER_EVENT {
            return Err(format!(
                "more than {} kv keys written for one event",
                limits::KV_WRITES_PER_EVENT
            ));
        }
        let ttl = (ttl_seconds > 0).then(|| Duration::from_secs(ttl_seconds.into()));
        self.staged.insert(key.to_string(), (Some(value), ttl));
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<(), String> {
        self.key_ok(key)?;
        if !self.staged.contains_key(key) && self.staged.len() >= limits::KV_WRITES_PER_EVENT {
            return Err(format!(
                "more than {} kv keys written for one event",
                limits::KV_WRITES_PER_EVENT
            ));
        }
        self.staged.insert(key.to_string(), (None, None));
        Ok(())
    }

    pub fn emit(&mut self, ne: crate::bindings::NewEvent) -> Result<String, String> {
        if self.emit_base + self.emits.len() >= limits::EMITS_PER_EVENT {
            return Err(format!(
                "more than {} events emitted for one event",
                limits::EMITS_PER_EVENT
            ));
        }
        let Some(allowed) = &self.emit_topics else {
            return Err(format!(
                "module {} may not emit: its config has no emit_topics",
                self.module
            ));
        };
        if !switchyard_core::event::valid_topic(&ne.topic) {
            return Err(format!(
                "emitted topic ({} bytes) breaks the event contract: topics {}",
                ne.topic.len(),
                switchyard_core::event::TOPIC_RULE
            ));
        }
        if !allowed.is_match(&ne.topic) {
            return Err(format!(
                "topic {:?} is not in this module's emit_topics",
                ne.topic
            ));
        }
        if ne.account_id.is_empty()
            || ne.account_id.len() > 256
            || ne.account_id.chars().any(char::is_control)
        {
            return Err("emitted account-id must be 1-256 bytes without control characters".into());
        }
        let data = match ne.data {
            Some(s) => Some(
                serde_json::from_str(&s)
                    .map_err(|e| format!("emitted data is not valid JSON: {e}"))?,
            ),
            None => None,
        };
        let id = emit_id(
            &self.consumer,
            &self.module,
            &self.source.id,
            self.emit_base + self.emits.len(),
        );
        let mut attributes: BTreeMap<String, String> = ne.attributes.into_iter().collect();
        attributes.insert(
            "emitted_by".into(),
            format!("{}/{}", self.consumer, self.module),
        );
        attributes.insert("emitted_from".into(), self.source.id.clone());
        let ev = Event {
            id: id.clone(),
            topic: ne.topic,
            source: format!("emit:{}", self.consumer),
            op: switchyard_core::event::Op::Event,
            account_id: ne.account_id,
            key: None,
            before: None,
            after: None,
            data,
            changed: Vec::new(),
            occurred_at: self.source.occurred_at,
            ingested_at: chrono::Utc::now(),
            commit: None,
            trace: self.source.trace.clone(),
            consent: Default::default(),
            attributes: attributes.into_iter().collect(),
        };
        self.emits.push(ev);
        Ok(id)
    }

    /// This call's contribution to the event's effects.
    pub fn into_effects(self, into: &mut Effects) {
        into.writes.retain(|w| w.module != self.module);
        for (key, (value, ttl)) in self.staged {
            into.writes.push(KvWrite {
                module: self.module.clone(),
                key,
                value,
                ttl,
            });
        }
        into.emits.extend(self.emits);
    }
}

#[cfg(test)]
mod unit {
    #[test]
    fn emit_ids_are_deterministic_and_distinct() {
        let a = super::emit_id("c", "m", "e1", 0);
        assert_eq!(a, super::emit_id("c", "m", "e1", 0));
        assert_ne!(a, super::emit_id("c", "m", "e1", 1));
        assert_ne!(a, super::emit_id("c", "m", "e2", 0));
        assert_ne!(a, super::emit_id("c2", "m", "e1", 0));
        // Length prefixes: no two (consumer, module) pairs read the same.
        assert_ne!(
            super::emit_id("ab", "c", "e", 0),
            super::emit_id("a", "bc", "e", 0)
        );
    }
}
