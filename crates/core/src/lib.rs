//! `switchyard-core`: what every other crate of the router shares, and
//! nothing that does I/O against Redis, Postgres, MySQL or WebAssembly.
//! The canonical event and its codec ([`event`]), config pieces and
//! errors ([`config`]), secrets and the secret-or-file reader ([`secret`]),
//! the one token check ([`token`]), TLS loading ([`tls`]), logging,
//! metrics families ([`metrics`]), readiness reasons ([`health`]), trace
//! context ([`tracectx`]) and what a chain asks to send ([`outbound`]).
//! See ARCHITECTURE.md for the dependency rule between crates.
pub mod config;
pub mod event;
pub mod health;
pub mod log_filter;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod panic;
pub mod retry;
pub mod secret;
pub mod tls;
pub mod token;
pub mod tracectx;
