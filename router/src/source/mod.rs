//! Event sources: the Postgres CDC source (the HTTP ingest lives elsewhere).
pub mod postgres;
