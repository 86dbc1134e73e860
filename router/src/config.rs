//! Router configuration. (Placeholder until the integrator's module lands;
//! `ConfigError` is defined identically there.)

/// One problem found while validating the configuration, at a TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}
