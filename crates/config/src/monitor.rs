//! `[monitor]`: how often lag, DLQ depth and CDC slots are read.

use std::time::Duration;

use serde::Deserialize;
use switchyard_core::config::ConfigError;

/// `[monitor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// How often lag, DLQ depth and CDC slots are read (and SLAs evaluated).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A CDC slot that stays behind without advancing (or inactive, or
    /// unreadable) this long counts as stalled: `/readyz` fails.
    #[serde(default = "default_stall", with = "humantime_serde")]
    pub cdc_stall_after: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: default_interval(),
            cdc_stall_after: default_stall(),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_stall() -> Duration {
    Duration::from_secs(120)
}

impl MonitorConfig {
    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        if self.interval < Duration::from_millis(100) {
            errors.push(ConfigError::new(
                "monitor.interval",
                "must be at least 100ms",
            ));
        }
        if self.cdc_stall_after < self.interval {
            errors.push(ConfigError::new(
                "monitor.cdc_stall_after",
                "must be at least monitor.interval",
            ));
        }
    }
}
