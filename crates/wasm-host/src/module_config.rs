//! `[[consumers.<name>.modules]]`: how a consumer configures one transform.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::limits::{self, fmt_bytes};
use switchyard_core::config::ByteSize;
use switchyard_core::config::ConfigError;

/// One module of a consumer's transform chain.
///
/// ```toml
/// [[consumers.crm.modules]]
/// path = "transforms/redact.wasm"
/// deadline = "50ms"
/// memory = "32MiB"
/// recycle_after_calls = 10000
/// recycle_above = "24MiB"
/// config = { fields = "email,phone", strict = true }
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleConfig {
    /// Name used in logs, metrics and errors; defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Path of the `.wasm` component.
    pub path: PathBuf,
    /// Per-call deadline ("100ms"); defaults to the engine's.
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// Memory cap of one instance ("64MiB"); defaults to the engine's.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Replace an instance with a fresh one after this many `transform`
    /// calls; defaults to the engine's (100 000). For guest runtimes that
    /// leak per call (componentize-py).
    #[serde(default)]
    pub recycle_after_calls: Option<u64>,
    /// Replace an instance after a call that left one of its linear memories
    /// above this size; defaults to half of `memory`. At most `memory`.
    #[serde(default)]
    pub recycle_above: Option<ByteSize>,
    /// Handed to the module's `init` (strings; TOML numbers and booleans are
    /// turned into their text form).
    #[serde(default, deserialize_with = "de_string_map")]
    pub config: BTreeMap<String, String>,
    /// Topic globs this module may publish to with `emit` (contract 0.2).
    /// Empty (the default): the module may not emit.
    #[serde(default)]
    pub emit_topics: Vec<String>,
}

/// `config` values are not printed: they may be secrets (`redact`'s `salt`).
impl std::fmt::Debug for ModuleConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config: BTreeMap<&str, &str> = self
            .config
            .keys()
            .map(|k| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ModuleConfig")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("deadline", &self.deadline)
            .field("memory", &self.memory)
            .field("recycle_after_calls", &self.recycle_after_calls)
            .field("recycle_above", &self.recycle_above)
            .field("config", &config)
            .field("emit_topics", &self.emit_topics)
            .finish()
    }
}

impl ModuleConfig {
    /// A module at `path` with every default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModuleConfig {
            name: None,
            path: path.into(),
            deadline: None,
            memory: None,
            recycle_after_calls: None,
            recycle_above: None,
            config: BTreeMap::new(),
            emit_topics: Vec::new(),
        }
    }

    /// The `emit_topics` globs, compiled; `None` when the module may not emit.
    pub fn emit_globs(&self) -> Result<Option<globset::GlobSet>, String> {
        if self.emit_topics.is_empty() {
            return Ok(None);
        }
        let mut b = globset::GlobSetBuilder::new();
        for (i, t) in self.emit_topics.iter().enumerate() {
            b.add(
                globset::Glob::new(t)
                    .map_err(|e| format!("emit_topics[{i}]: invalid glob {t:?}: {e}"))?,
            );
        }
        b.build().map(Some).map_err(|e| e.to_string())
    }

    pub fn with_config<K: Into<String>, V: Into<String>>(
        mut self,
        kv: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.config
            .extend(kv.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The configured name, or the file stem.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.path.display().to_string()),
        }
    }

    /// Check this module's settings; `path` is its TOML path, e.g.
    /// `consumers.crm.modules[0]`.
    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let mut err = |field: &str, message: String| {
            errors.push(ConfigError {
                path: format!("{path}.{field}"),
                message,
            })
        };
        if let Some(name) = &self.name {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                err(
                    "name",
                    format!(
                        "`{name}` is not a valid module name (use letters, digits, `-`, `_`, `.`)"
                    ),
                );
            }
        }
        if self.path.as_os_str().is_empty() {
            err(
                "path",
                "is empty; give the path of a .wasm component".into(),
            );
        } else if !self.path.is_file() {
            err(
                "path",
                format!("{} does not exist or is not a file", self.path.display()),
            );
        }
        if let Some(d) = self.deadline {
            if d.is_zero() || d > limits::MAX_DEADLINE {
                err(
                    "deadline",
                    format!(
                        "{} is out of range (must be > 0 and at most {})",
                        humantime::format_duration(d),
                        humantime::format_duration(limits::MAX_DEADLINE)
                    ),
                );
            }
        }
        if let Some(ByteSize(m)) = self.memory {
            if !(limits::MIN_MEMORY_CAP..=limits::MAX_MEMORY_CAP).contains(&m) {
                err(
                    "memory",
                    format!(
                        "{} is out of range ({} to {})",
                        fmt_bytes(m),
                        fmt_bytes(limits::MIN_MEMORY_CAP),
                        fmt_bytes(limits::MAX_MEMORY_CAP)
                    ),
                );
            }
        }
        if let Err(m) = self.emit_globs() {
            err("emit_topics", m);
        }
        if self.recycle_after_calls == Some(0) {
            err(
                "recycle_after_calls",
                "must be at least 1 (calls an instance serves before it is replaced)".into(),
            );
        }
        if let Some(ByteSize(r)) = self.recycle_above {
            let cap = self.memory.map_or(limits::DEFAULT_MEMORY_CAP, |m| m.0);
            if r == 0 || r > cap {
                err(
                    "recycle_above",
                    format!(
                        "{} is out of range (more than 0 B and at most the module's memory cap, {})",
                        fmt_bytes(r),
                        fmt_bytes(cap)
                    ),
                );
            }
        }
    }

    pub fn resolved_path(&self) -> &Path {
        &self.path
    }
}

/// Validate a consumer's whole chain: every module, plus unique names.
/// `path` is the TOML path of the list, e.g. `consumers.crm.modules`.
pub fn validate_chain(modules: &[ModuleConfig], path: &str, errors: &mut Vec<ConfigError>) {
    let mut seen = BTreeMap::new();
    for (i, m) in modules.iter().enumerate() {
        let p = format!("{path}[{i}]");
        m.validate(&p, errors);
        if let Some(first) = seen.insert(m.display_name(), i) {
            errors.push(ConfigError {
                path: format!("{p}.name"),
                message: format!(
                    "module name `{}` is already used by {path}[{first}]; set `name` to tell them apart",
                    m.display_name()
                ),
            });
        }
    }
}

fn de_string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        B(bool),
        I(i64),
        F(f64),
    }
    let raw: BTreeMap<String, Scalar> = BTreeMap::deserialize(d).map_err(|e| {
        serde::de::Error::custom(format!(
            "{e} (config values must be strings, numbers or booleans)"
        ))
    })?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::B(b) => b.to_string(),
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
            };
            (k, v)
        })
        .collect())
}
