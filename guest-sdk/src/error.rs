//! Transform errors.

use crate::bindings::switchyard::transform::types::TransformError;

/// Why an event could not be transformed.
///
/// * [`Error::retryable`]: transient; the host tries the event again later.
/// * [`Error::fatal`]: the event can never succeed; it goes to the dead-letter queue.
///
/// `?` works on `serde_json::Error` and [`crate::ConfigError`] (both fatal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Human-readable reason (shown in logs and the dead-letter queue).
    pub message: String,
    /// Whether trying again later may succeed.
    pub retryable: bool,
}

impl Error {
    /// A transient failure: the host retries the event later.
    pub fn retryable(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            retryable: true,
        }
    }

    /// A permanent failure: the event goes to the dead-letter queue.
    pub fn fatal(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            retryable: false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.retryable { "retryable" } else { "fatal" };
        write!(f, "{} ({kind})", self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::fatal(format!("JSON: {e}"))
    }
}

impl From<crate::ConfigError> for Error {
    fn from(e: crate::ConfigError) -> Error {
        Error::fatal(e.to_string())
    }
}

impl From<Error> for TransformError {
    fn from(e: Error) -> TransformError {
        TransformError {
            message: e.message,
            retryable: e.retryable,
        }
    }
}
