//! The one place host bindings are generated from the guest contract
//! (`wit/transform.wit`, `switchyard:transform@0.2.0`, and the previous
//! minor version kept in `wit/v0.1/`). Everything else in
//! `switchyard-wasm-host` refers to these types; nothing else runs `bindgen!`.
//!
//! Both versions share one set of Rust types: 0.1's `types` interface is a
//! subset of 0.2's (the records and variants have the same shape, which is
//! what the component model checks), so `v01` reuses 0.2's types and only
//! its `host` import and `guest` export are its own.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "batch-transformer",
});

/// `switchyard:transform@0.1.0`: modules built for it still load and run.
pub mod v01 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "transformer",
        with: {
            "switchyard:transform/types@0.1.0": super::switchyard::transform::types,
        },
    });
}

pub use self::switchyard::transform::types::{
    Batch, CommitInfo, Event, ItemOutcome, Level, NewEvent, Op, Output, Request, TransformError,
};

/// The newest contract version this router speaks (the WIT package version).
pub const CONTRACT_VERSION: &str = "0.2.0";
/// Every contract version this router loads, newest first.
pub const CONTRACT_VERSIONS: &[&str] = &["0.2.0", "0.1.0"];
/// Name of the exported guest interface, without version.
pub const GUEST_EXPORT: &str = "switchyard:transform/guest";
/// Name of the optional batch interface, without version (0.2 and later).
pub const BATCH_EXPORT: &str = "switchyard:transform/batch";
