//! The one retry schedule of the router's own I/O loops (reconnecting a CDC
//! source, re-trying a Redis write until it lands): exponential from a first
//! delay, doubling, capped, without a limit on attempts, from `backon`.
//! (Deliveries to a vendor follow the consumer's `retry` policy instead:
//! `switchyard_destinations::classify`.)

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// Delays before successive attempts: `first`, `2 × first`, … up to `max`.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let builder = ExponentialBuilder::new()
            .with_min_delay(first)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// Start over from the first delay (after a success, or a long healthy spell).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }

    /// Sleep `delay` (from [`Backoff::next_delay`]); `false` if `cancel`
    /// fired first (the caller stops retrying).
    pub async fn sleep(delay: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = cancel.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_first_delay_up_to_the_cap_and_starts_over() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let got: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [50, 100, 200, 300, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_cancelled_wait_says_so_at_once() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let t = std::time::Instant::now();
        assert!(!Backoff::sleep(Duration::from_secs(30), &cancel).await);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
