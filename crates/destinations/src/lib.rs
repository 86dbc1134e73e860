//! `switchyard-destinations`: how to send what a consumer's transform chain
//! decided to send. A destination is one folder behind the [`Destination`]
//! trait, registered in [`build`]. Today there is one kind, [`http`]; the
//! retry decision for every kind is [`classify::classify`].
//!
//! What to send ([`switchyard_core::outbound::OutRequest`]) is decided
//! before a destination sees it: destinations never run modules.

pub mod classify;
pub mod config;
pub mod http;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use classify::Attempt;
use config::{EndpointConfig, RateLimitConfig};
use switchyard_core::outbound::OutRequest;

/// Sends one request of one event and reports what happened. The caller
/// (delivery) decides what to do with the [`Attempt`] through
/// [`classify::classify`].
pub trait Destination: Send + Sync + 'static {
    /// Send `req`, made by the chain for event `event_id`.
    fn send<'a>(
        &'a self,
        event_id: &'a str,
        req: &'a OutRequest,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>>;
}

impl Destination for http::Sender {
    fn send<'a>(
        &'a self,
        event_id: &'a str,
        req: &'a OutRequest,
    ) -> Pin<Box<dyn Future<Output = Attempt> + Send + 'a>> {
        Box::pin(http::Sender::send(self, event_id, req))
    }
}

/// The one registration point: the destination of consumer `name`.
pub fn build(
    name: &str,
    endpoint: &EndpointConfig,
    timeout: Duration,
    concurrency: usize,
    rate_limit: Option<&RateLimitConfig>,
) -> anyhow::Result<Arc<dyn Destination>> {
    Ok(Arc::new(http::Sender::new(
        name,
        endpoint,
        timeout,
        concurrency,
        rate_limit,
    )?))
}
