//! Subcommands of the `switchyard` binary (one module each; clap wiring in main.rs).
pub mod admin_client;
pub mod check;
pub mod sink;
pub mod tail;
pub mod transform;
