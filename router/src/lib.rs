//! Switchyard: a real-time customer-event router. See ARCHITECTURE.md.
pub mod config;
pub mod event;
pub mod log;
pub mod source;
