//! TEMPORARY stub on the `cdc` branch: the integrator's config.rs replaces it
//! when main is merged. Only what the CDC source and its tests need.

/// One configuration problem, with its TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Stub of the router configuration (only what the stub log reads).
#[derive(Debug, Clone)]
pub struct Config {
    pub redis_url: String,
    pub partitions: u32,
    pub idempotency_window_secs: u64,
}
