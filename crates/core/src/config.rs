//! Configuration pieces every component shares: the error type with its TOML
//! path, names, sizes, and path resolution. Each component owns its own config
//! type and `validate()`; `switchyard-config` composes them into the file.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

/// One configuration problem, located by its TOML path (e.g. `log.partitions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All the errors found in one config file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {} error(s)\n{}", errors.len(), errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    pub file: String,
    pub errors: Vec<ConfigError>,
}

/// Parse a byte size: `1048576`, `512KiB`, `1MiB`, `64MB`, `2GiB` (one parser for the
/// whole config: [`ByteSize`]).
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<ByteSize>().map(|b| b.0)
}

pub fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        N(u64),
        S(String),
    }
    match Size::deserialize(d)? {
        Size::N(n) => Ok(n),
        Size::S(s) => parse_size(&s).map_err(serde::de::Error::custom),
    }
}

/// A byte size: an integer (bytes) or a string such as "64MiB", "512 KiB",
/// "1GiB", "64MB" (decimal units are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size (expected e.g. \"64MiB\")"))?;
        let mult = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            u => {
                return Err(format!(
                    "`{s}`: unknown size unit `{u}` (use B, KiB, MiB, GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fmt_bytes(self.0))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fmt_bytes(self.0).replace(' ', ""))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A TLS file problem as a config error at its setting's path.
pub fn tls_error(e: crate::tls::TlsError) -> ConfigError {
    use crate::tls::TlsError as T;
    let setting = match &e {
        T::Read { setting, .. }
        | T::NoCertificate { setting, .. }
        | T::NoKey { setting, .. }
        | T::Invalid { setting, .. } => setting.clone(),
    };
    let full = e.to_string();
    let message = full
        .strip_prefix(&format!("{setting}: "))
        .unwrap_or(&full)
        .to_string();
    ConfigError::new(setting, message)
}

/// Names of sources and consumers: used in Redis keys and metrics labels.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A connection URL (`scheme://…?k=v&…`) with the relative file paths of the
/// query parameters `keys` made absolute against `base`, the config file's
/// directory: every path in the config resolves against it, also those
/// inside URLs (`sslrootcert`, `ssl-ca`, …). Other parameters, and absolute
/// paths, are left as written.
pub fn resolve_url_paths(url: &str, keys: &[&str], base: &Path) -> String {
    let Some((head, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
            if !keys.contains(&key.as_ref()) {
                return part.to_string();
            }
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
            let path = Path::new(v.as_ref());
            if v.is_empty() || !path.is_relative() {
                return part.to_string();
            }
            let abs = base.join(path);
            format!(
                "{k}={}",
                percent_encoding::utf8_percent_encode(
                    &abs.to_string_lossy(),
                    percent_encoding::NON_ALPHANUMERIC
                )
            )
        })
        .collect();
    format!("{head}?{}", parts.join("&"))
}

/// Human form of a byte size ("64 MiB").
pub fn fmt_bytes(n: u64) -> String {
    if n >= (1024 * 1024) && n % (1024 * 1024) == 0 {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}
