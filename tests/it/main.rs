//! Switchyard's integration tests: one binary, real Redis/Postgres processes
//! started per test, the real `switchyard` binary. Run with
//! `cargo test -p switchyard --test it` (or the README's test command).

mod support;

mod batching;
mod cdc;
mod check;
mod cluster;
mod console;
mod contract;
mod delivery;
mod drift;
mod ingest;
mod ingest_compat;
mod mysql;
mod ops;
mod polyglot;
mod privacy;
mod redis_loss;
mod scaffold;
mod scale;
mod schema;
mod security;
mod startup;
mod stateful;
mod transforms;
mod vendors;
