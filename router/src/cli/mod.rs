//! Subcommands of the `switchyard` binary (one module each; clap wiring in main.rs).
pub mod tail;
