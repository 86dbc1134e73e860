//! The module's configuration, as given to `init`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The consumer's `config` table for this module: string keys to string
/// values. A key given twice keeps its last value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: BTreeMap<String, String>,
}

/// A config problem, naming the key. Converts into `String` (for init hooks)
/// and into [`crate::Error`] (fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending key.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for String {
    fn from(e: ConfigError) -> String {
        e.to_string()
    }
}

impl Config {
    /// Build from key/value pairs (what the host passes to `init`).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Config {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// The value of `key`, or `default`.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key`, or an error naming the key.
    pub fn require(&self, key: &str) -> Result<&str, ConfigError> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            Some(_) => Err(ConfigError::new(key, "is empty")),
            None => Err(ConfigError::new(key, "is required but not set")),
        }
    }

    /// `key` split on commas, items trimmed, empty items dropped. Unset = empty.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key).map(split_list).unwrap_or_default()
    }

    /// `key` as a comma-separated list of globs (see [`crate::Glob`]); commas
    /// inside `{…}` or `[…]` belong to the pattern. Unset = empty. An invalid
    /// pattern is an error naming the key.
    pub fn glob_list(&self, key: &str) -> Result<Vec<crate::Glob>, ConfigError> {
        let Some(v) = self.get(key) else {
            return Ok(Vec::new());
        };
        let (mut items, mut cur, mut depth, mut in_class, mut esc) =
            (Vec::new(), String::new(), 0i32, false, false);
        for c in v.chars() {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if in_class {
                in_class =
                    c != ']' || cur.ends_with('[') || cur.ends_with("[!") || cur.ends_with("[^");
            } else if c == '[' {
                in_class = true;
            } else if c == '{' {
                depth += 1;
            } else if c == '}' {
                depth -= 1;
            } else if c == ',' && depth <= 0 {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            cur.push(c);
        }
        items.push(cur);
        items
            .iter()
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .map(|p| crate::Glob::new(p).map_err(|e| ConfigError::new(key, e.to_string())))
            .collect()
    }

    /// `key` parsed with `FromStr`; `Ok(None)` if unset.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| ConfigError::new(key, format!("{v:?}: {e}"))),
        }
    }

    /// `key` as a boolean (`true/false/yes/no/1/0/on/off`); `default` if unset.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) => match v.as_str() {
                "true" | "yes" | "1" | "on" => Ok(true),
                "false" | "no" | "0" | "off" => Ok(false),
                _ => Err(ConfigError::new(
                    key,
                    format!("{v:?} is not a boolean (true/false)"),
                )),
            },
        }
    }

    /// Entries whose key starts with `prefix`, as (rest of key, value), in key order.
    /// `cfg.with_prefix("eq.")` on `eq.after.country = US` yields `("after.country", "US")`.
    pub fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v.as_str()))
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn split_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let c = Config::from_pairs([
            ("topics", " a.* , ,b "),
            ("n", "3"),
            ("eq.after.x", "1"),
            ("eq.y", "2"),
            ("eqz", "no"),
            ("empty", " "),
        ]);
        assert_eq!(c.get("n"), Some("3"));
        assert_eq!(c.get_or("missing", "d"), "d");
        assert_eq!(c.list("topics"), vec!["a.*", "b"]);
        assert!(c.list("missing").is_empty());
        assert_eq!(c.parse::<u32>("n").unwrap(), Some(3));
        assert!(c
            .parse::<u32>("topics")
            .unwrap_err()
            .to_string()
            .starts_with("config `topics`"));
        assert!(c.bool("missing", true).unwrap());
        assert!(c.bool("n", true).is_err());
        let e = c.require("api_key").unwrap_err();
        assert_eq!(e.to_string(), "config `api_key`: is required but not set");
        assert!(c.require("empty").is_err());
        let p: Vec<_> = c.with_prefix("eq.").collect();
        assert_eq!(p, vec![("after.x", "1"), ("y", "2")]);
        let g = Config::from_pairs([("t", "a.{b,c}.*, [,]x ,\\,y, d")])
            .glob_list("t")
            .unwrap();
        let pats: Vec<&str> = g.iter().map(|g| g.as_str()).collect();
        assert_eq!(pats, vec!["a.{b,c}.*", "[,]x", "\\,y", "d"]);
        let bad = Config::from_pairs([("t", "a.{b")])
            .glob_list("t")
            .unwrap_err();
        assert!(bad.to_string().starts_with("config `t`: invalid glob"));
        let s: String = e.into();
        assert!(s.contains("api_key"));
    }
}
