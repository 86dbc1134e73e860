//! Switchyard: a real-time customer-event router. See ARCHITECTURE.md.
pub mod event;
