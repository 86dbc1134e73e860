//! Sources of events. One module per kind, registered in
//! [`crate::config::SourceConfig`].
pub mod http;
pub mod postgres;
