//! `[transforms]`: settings shared by every consumer's modules. Each
//! module's own settings are [`crate::ModuleConfig`].

use std::path::PathBuf;

use serde::Deserialize;

/// Settings shared by every consumer's WebAssembly modules. Per-module limits
/// (deadline, memory) live with each module; engine-wide limits and their
/// reasons are in `limits.rs`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TransformsConfig {
    /// Where compiled modules are cached (keyed by content hash and wasmtime
    /// version). Default: `$XDG_CACHE_HOME/switchyard` or `~/.cache/switchyard`.
    /// Set to "" to disable the cache.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl TransformsConfig {
    pub fn cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|d| d.join("switchyard")),
        }
    }
}
