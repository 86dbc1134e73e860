//! `switchyard-store`: all of Redis. Every key name, script and command of
//! the router lives in this crate, behind one client type that is either a
//! standalone Redis or a Redis Cluster ([`client`]). No other crate names
//! the `redis` crate (a test checks it).
//!
//! - [`log`]: the partitioned event log (append with dedup, keys, meta guard);
//! - [`consumer`]: a consumer's per-partition state (groups, acks, defer
//!   lists, DLQ) and its group reader;
//! - [`admin`]: operator actions on a consumer (DLQ, rewind, status);
//! - [`lag`]: backlog per consumer and partition;
//! - [`lease`]: instances, partition leases and fencing tokens (many routers on one Redis);
//! - [`tail`]: reading the log outside a consumer group;
//! - [`source_state`]: what a source keeps between runs;
//! - [`privacy`]: the consent store and the audit trail.
//! - [`schema`]: a CDC source's table shapes and schema history;
//! - [`quarantine`]: the records a CDC source could not map or the schema
//!   registry refused.
//!
//! Slots: a partition's keys share the hash tag `{p<N>}`; every multi-key
//! operation stays within one partition, hence one slot (each says so).
pub mod admin;
pub mod client;
pub mod config;
pub mod consumer;
pub mod lag;
pub mod lease;
pub mod log;
pub mod privacy;
pub mod quarantine;
pub mod router_addr;
pub mod schema;
pub mod source_state;
pub mod tail;

pub use client::{Client, Conn};
pub use config::{LogConfig, RedisConfig};
pub use log::{Log, LogError};
