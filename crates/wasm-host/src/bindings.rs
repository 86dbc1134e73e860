//! The one place host bindings are generated from the guest contract
//! (`wit/transform.wit`, world `transformer`). Everything else in
//! `switchyard-wasm-host` refers to these types; nothing else runs `bindgen!`.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "transformer",
});

pub use self::switchyard::transform::types::{
    CommitInfo, Event, Level, Op, Output, Request, TransformError,
};

/// The contract version this router speaks (the WIT package version).
pub const CONTRACT_VERSION: &str = "0.1.0";
/// Name of the exported guest interface, without version.
pub const GUEST_EXPORT: &str = "switchyard:transform/guest";
