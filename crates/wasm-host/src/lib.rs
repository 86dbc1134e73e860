//! Per-consumer WebAssembly transforms (see "Transforms" in `ARCHITECTURE.md`).
//!
//! A consumer's `modules` form a [`Chain`] run on every event before
//! delivery. Modules are WebAssembly components implementing
//! `wit/transform.wit` (world `switchyard:transform/transformer@0.1.0`).
//! [`TransformEngine`] owns the wasmtime engine, the linker and the compile
//! cache, and the threads guest code runs on; [`ChainHandle`] holds a
//! consumer's live chain and hot-reloads it.
//!
//! Feature `engine` (default) is the runtime: wasmtime and everything that
//! runs guest code. Without it only the configuration remains
//! ([`ModuleConfig`], [`validate_chain`], [`TransformsConfig`], [`limits`]),
//! so a crate that only parses config (the fuzz targets) does not build
//! wasmtime.

#[cfg(feature = "engine")]
mod bindings;
#[cfg(feature = "engine")]
mod chain;
#[cfg(feature = "engine")]
mod cli;
mod config;
#[cfg(feature = "engine")]
mod convert;
#[cfg(feature = "engine")]
mod deadline;
#[cfg(feature = "engine")]
mod engine;
pub mod limits;
mod module_config;
#[cfg(feature = "engine")]
mod reload;
#[cfg(feature = "engine")]
mod threads;

#[cfg(feature = "engine")]
pub use bindings::CONTRACT_VERSION;
#[cfg(feature = "engine")]
pub use chain::{Chain, ChainOutcome, LoadError, Module, ModuleStats, OutRequest};
#[cfg(feature = "engine")]
pub use cli::{outcome_lines, print_outcome, run_chain_once, run_chain_once_cached};
pub use config::TransformsConfig;
#[cfg(feature = "engine")]
pub use convert::{from_wit as event_from_wit, to_wit as event_to_wit};
#[cfg(feature = "engine")]
pub use engine::TransformEngine;
pub use limits::EngineLimits;
pub use module_config::{validate_chain, ModuleConfig};
#[cfg(feature = "engine")]
pub use reload::{
    spawn_watcher, ChainHandle, ChainStatus, ModuleStatus, ReloadError, TransformWatcher,
    WATCH_DEBOUNCE,
};
pub use switchyard_core::config::ByteSize;

#[cfg(all(test, feature = "engine"))]
mod tests;
