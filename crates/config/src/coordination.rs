//! `[coordination]`: how router instances sharing one Redis split the work
//! (partition leases; see `switchyard_store::lease`).

use std::time::Duration;

use serde::Deserialize;
use switchyard_core::config::ConfigError;

/// `[coordination]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    /// How long a partition lease (and an instance's membership) lasts
    /// without renewal: a dead instance's partitions move after at most this.
    #[serde(default = "default_lease_timeout", with = "humantime_serde")]
    pub lease_timeout: Duration,
    /// How often an instance renews its leases and membership and rebalances.
    #[serde(default = "default_renew_interval", with = "humantime_serde")]
    pub renew_interval: Duration,
    /// This instance's name in Redis and `switchyard status`; unique per
    /// running instance. Default: `<host>-<pid>-<random>`.
    #[serde(default)]
    pub instance_id: Option<String>,
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        CoordinationConfig {
            lease_timeout: default_lease_timeout(),
            renew_interval: default_renew_interval(),
            instance_id: None,
        }
    }
}

fn default_lease_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_renew_interval() -> Duration {
    Duration::from_secs(2)
}

impl CoordinationConfig {
    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        if self.lease_timeout < Duration::from_millis(500) {
            errors.push(ConfigError::new(
                "coordination.lease_timeout",
                "must be at least 500ms",
            ));
        }
        if self.renew_interval < Duration::from_millis(50) {
            errors.push(ConfigError::new(
                "coordination.renew_interval",
                "must be at least 50ms",
            ));
        } else if self.renew_interval * 3 > self.lease_timeout {
            errors.push(ConfigError::new(
                "coordination.renew_interval",
                "must be at most a third of coordination.lease_timeout (a lease must survive a missed renewal)",
            ));
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty()
                || id.len() > 128
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                errors.push(ConfigError::new(
                    "coordination.instance_id",
                    "must be 1-128 letters, digits, '-', '_' or '.'",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CoordinationConfig;
    use std::time::Duration;

    #[test]
    fn renewals_must_fit_three_times_in_the_lease() {
        let mut e = Vec::new();
        CoordinationConfig::default().validate(&mut e);
        assert!(e.is_empty());
        let c = CoordinationConfig {
            lease_timeout: Duration::from_secs(3),
            renew_interval: Duration::from_secs(2),
            instance_id: Some("a b".into()),
        };
        c.validate(&mut e);
        let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["coordination.renew_interval", "coordination.instance_id"]
        );
    }
}
