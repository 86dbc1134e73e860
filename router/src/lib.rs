//! Switchyard: a real-time customer-event router. See ARCHITECTURE.md for the
//! bird's-eye view, the code map and the invariants.
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod event;
pub mod log;
pub mod secret;
pub mod server;
pub mod source;
pub mod tls;
pub mod transform;
