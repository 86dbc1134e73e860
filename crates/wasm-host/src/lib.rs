//! Per-consumer WebAssembly transforms (see "Transforms" in `ARCHITECTURE.md`).
//!
//! A consumer's `modules` form a [`Chain`] run on every event before
//! delivery. Modules are WebAssembly components implementing
//! `wit/transform.wit` (world `switchyard:transform/transformer@0.1.0`).
//! [`TransformEngine`] owns the wasmtime engine, the linker and the compile
//! cache, and the threads guest code runs on; [`ChainHandle`] holds a
//! consumer's live chain and hot-reloads it.

mod bindings;
mod chain;
mod cli;
mod config;
mod convert;
mod deadline;
mod engine;
pub mod limits;
mod module_config;
mod reload;
mod threads;

pub use bindings::CONTRACT_VERSION;
pub use chain::{Chain, ChainOutcome, LoadError, Module, ModuleStats, OutRequest};
pub use cli::{print_outcome, run_chain_once};
pub use config::TransformsConfig;
pub use convert::{from_wit as event_from_wit, to_wit as event_to_wit};
pub use engine::TransformEngine;
pub use limits::EngineLimits;
pub use module_config::{validate_chain, ModuleConfig};
pub use switchyard_core::config::ByteSize;
pub use reload::{
    spawn_watcher, ChainHandle, ChainStatus, ModuleStatus, ReloadError, TransformWatcher,
    WATCH_DEBOUNCE,
};

#[cfg(test)]
mod tests;
