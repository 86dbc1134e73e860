//! Switchyard: a real-time customer-event router. See ARCHITECTURE.md for the
//! bird's-eye view, the code map and the invariants.
pub mod admin_api;
pub mod admin_listener;
pub mod admin_routes;
pub mod app;
pub mod console;
pub mod delivery;
pub mod health;
pub mod metrics;
pub mod monitor;
pub mod server;
pub mod sla;
