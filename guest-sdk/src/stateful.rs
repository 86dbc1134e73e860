//! Stateful modules (contract 0.2): a key-value store and `emit`.
//!
//! Both are **staged**: nothing is written or published while the module
//! runs. The host commits the writes and appends the emitted events only
//! with the event's outcome (delivered or filtered), once per event id, so
//! a redelivered event (after a crash or a retry) never applies state twice
//! and never emits twice (emitted events get deterministic ids).
//!
//! ```no_run
//! use switchyard_guest::{emit, kv, transform, Error, Event, Output};
//!
//! #[transform]
//! fn transform(ev: Event) -> Result<Vec<Output>, Error> {
//!     let seen: u64 = kv::get_json("count")?.unwrap_or(0);
//!     kv::set_json("count", &(seen + 1), 0)?; // no TTL
//!     if seen == 0 {
//!         emit::event("customer.parent.first_seen", &ev.account_id)
//!             .data(switchyard_guest::json!({"from": ev.topic}))
//!             .send()?;
//!     }
//!     Ok(vec![])
//! }
//! ```

/// The key-value store of (consumer, module, account of the event being
/// transformed). Keys 1–256 bytes, values up to 64 KiB, at most 64 keys
/// written per event (the host's limits; a breach is a fatal error).
pub mod kv {
    use super::host_error;
    use crate::bindings::switchyard::transform::kv as wit;
    use crate::Error;

    /// The value of `key` (this call's own writes first), or `None`.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
        wit::get(key).map_err(host_error)
    }

    /// Set `key`; `ttl_seconds` 0 keeps it until deleted.
    pub fn set(key: &str, value: &[u8], ttl_seconds: u32) -> Result<(), Error> {
        wit::set(key, value, ttl_seconds).map_err(host_error)
    }

    /// Delete `key`.
    pub fn delete(key: &str) -> Result<(), Error> {
        wit::delete(key).map_err(host_error)
    }

    /// [`get`], parsed as JSON (a value that does not parse is a fatal error).
    pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
        match get(key)? {
            Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                Error::fatal(format!("kv value of {key:?} is not the JSON expected: {e}"))
            }),
            None => Ok(None),
        }
    }

    /// [`set`] with `value` as JSON.
    pub fn set_json<T: serde::Serialize>(
        key: &str,
        value: &T,
        ttl_seconds: u32,
    ) -> Result<(), Error> {
        set(key, &serde_json::to_vec(value)?, ttl_seconds)
    }
}

/// Publish new events into the log. The module's `emit_topics` (consumer
/// config) must allow the topic; at most 16 emits per event.
pub mod emit {
    use super::host_error;
    use crate::bindings::switchyard::transform::{emit as wit, types::NewEvent};
    use crate::Error;

    /// Start an event for `topic` and `account_id`; finish with [`Emit::send`].
    pub fn event(topic: &str, account_id: &str) -> Emit {
        Emit(NewEvent {
            topic: topic.to_string(),
            account_id: account_id.to_string(),
            data: None,
            attributes: Vec::new(),
        })
    }

    /// An event being built.
    pub struct Emit(NewEvent);

    impl Emit {
        /// The payload.
        pub fn data(mut self, data: serde_json::Value) -> Emit {
            self.0.data = Some(data.to_string());
            self
        }
        /// A string attribute.
        pub fn attribute(mut self, k: &str, v: &str) -> Emit {
            self.0.attributes.push((k.to_string(), v.to_string()));
            self
        }
        /// Stage it; returns its (deterministic) id.
        pub fn send(self) -> Result<String, Error> {
            wit::emit(&self.0).map_err(host_error)
        }
    }
}

/// The host's refusals are fatal (a limit or a topic the config does not
/// allow: trying again cannot help), except a failed read, which the host
/// words as "retry".
fn host_error(m: String) -> crate::Error {
    use crate::Error;
    if m.contains("retry the event") {
        Error::retryable(m)
    } else {
        Error::fatal(m)
    }
}
