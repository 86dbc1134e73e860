//! Values that must never reach a log: [`Secret`] (tokens, passwords, HMAC
//! secrets) and [`ConnUrl`] (connection URLs that may carry a password).
//! Their `Debug` impls redact, so a config struct can derive `Debug` and be
//! printed without leaking what it holds.

use std::fmt;

use serde::Deserialize;

/// A secret string from the config. `Debug` prints `"<redacted>"`; read the
/// value with [`Secret::expose`] where it is used (never in a log line).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// A connection URL (`redis://…`, `postgres://…` or a libpq `key=value`
/// string). Dereferences to the full text; `Debug` and `Display` hide the
/// password (see [`redact_url`]).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ConnUrl(String);

impl ConnUrl {
    pub fn new(s: impl Into<String>) -> ConnUrl {
        ConnUrl(s.into())
    }
}

impl From<&str> for ConnUrl {
    fn from(s: &str) -> Self {
        ConnUrl(s.into())
    }
}

impl From<String> for ConnUrl {
    fn from(s: String) -> Self {
        ConnUrl(s)
    }
}

impl std::ops::Deref for ConnUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.0))
    }
}

impl fmt::Display for ConnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// `scheme://user:password@host/path?query` → `scheme://user:***@host/path`
/// (the password and the whole query string are replaced: query parameters
/// often carry API keys). A libpq `key=value` string keeps every pair except
/// `password`. Anything else is returned as is.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (before_query, query) = match rest.split_once('?') {
            Some((b, _)) => (b, true),
            None => (rest, false),
        };
        let (authority, path) = match before_query.find('/') {
            Some(i) => before_query.split_at(i),
            None => (before_query, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_string(),
        };
        let q = if query { "?***" } else { "" };
        format!("{scheme}://{authority}{path}{q}")
    } else if url.contains('=') {
        url.split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2-hunter2-hunter2");
        let u = ConnUrl::new("postgres://sy:pa55@db:5432/crm?sslmode=verify-full");
        assert_eq!(format!("{u:?}"), "\"postgres://sy:***@db:5432/crm?***\"");
        assert_eq!(&*u, "postgres://sy:pa55@db:5432/crm?sslmode=verify-full");
    }

    #[test]
    fn urls_lose_passwords_and_queries() {
        assert_eq!(
            redact_url("rediss://:pw@redis:6380/0"),
            "rediss://:***@redis:6380/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            redact_url("https://api.vendor.example/v1/events?api_key=abc"),
            "https://api.vendor.example/v1/events?***"
        );
        assert_eq!(
            redact_url("https://u:p@h.example"),
            "https://u:***@h.example"
        );
        assert_eq!(
            redact_url("host=db user=sy password=pa55 dbname=crm"),
            "host=db user=sy password=*** dbname=crm"
        );
    }
}

/// The one secret-or-file reader: a secret given inline, or read from a file
/// (trailing whitespace trimmed, so a file written with `echo` works).
pub fn read_secret(
    inline: &Option<Secret>,
    file: &Option<std::path::PathBuf>,
) -> std::io::Result<String> {
    match (inline, file) {
        (Some(s), _) => Ok(s.expose().to_string()),
        (None, Some(f)) => Ok(std::fs::read_to_string(f)?.trim_end().to_string()),
        (None, None) => Err(std::io::Error::other(
            "no secret configured: set it inline or give a file",
        )),
    }
}
