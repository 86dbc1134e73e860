//! The one place that decides what a delivery attempt means: delivered,
//! retry later, or dead-letter. Every sink goes through [`classify`].

use std::time::Duration;

use crate::config::RetryConfig;

/// What came back from one attempt.
#[derive(Debug, Clone)]
pub enum Attempt {
    /// The endpoint answered.
    Response {
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    },
    /// No answer within the consumer's timeout.
    Timeout,
    /// Could not connect or the connection broke.
    Connect(String),
    /// The transform chain failed; the module says whether a retry can help.
    Module {
        module: String,
        message: String,
        retryable: bool,
    },
    /// The request a module built cannot be sent as it is (a header name or
    /// value, a method that is not valid HTTP): nothing went out.
    Unsendable { module: String, reason: String },
    /// The vendor answered a batch request and reported this event's item as
    /// rejected; the batching module read it (`batch-response`) and says
    /// whether a retry can help.
    Rejected {
        module: String,
        message: String,
        retryable: bool,
    },
}

impl Attempt {
    /// The `class` label of the responses metric: `2xx`…`5xx`, `timeout`,
    /// `connect_error`; `None` for a module's failure (the module families
    /// count those).
    pub fn metric_class(&self) -> Option<&'static str> {
        Some(match self {
            Attempt::Response { status, .. } => match status {
                200..=299 => "2xx",
                300..=399 => "3xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
            Attempt::Timeout => "timeout",
            Attempt::Connect(_) => "connect_error",
            Attempt::Module { .. } | Attempt::Unsendable { .. } | Attempt::Rejected { .. } => {
                return None
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Try again after at least this long (None: use the backoff policy).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Can never succeed: dead-letter it now.
    Fail {
        reason: String,
    },
}

/// 2xx delivered; 408, 429, 5xx, timeouts and connection errors retried
/// (honouring `Retry-After`); other 4xx dead-lettered at once; module errors
/// as the module says; a request a module built that cannot be sent
/// dead-lettered at once (the same request would fail the same way).
pub fn classify(a: &Attempt) -> Verdict {
    match a {
        Attempt::Response { status, .. } if (200..300).contains(status) => Verdict::Delivered,
        Attempt::Response {
            status,
            retry_after,
            body,
        } if *status == 408 || *status == 429 || *status >= 500 => Verdict::Retry {
            after: *retry_after,
            reason: http_reason(*status, body),
        },
        Attempt::Response { status, body, .. } => Verdict::Fail {
            reason: http_reason(*status, body),
        },
        Attempt::Timeout => Verdict::Retry {
            after: None,
            reason: "timed out".into(),
        },
        Attempt::Connect(e) => Verdict::Retry {
            after: None,
            reason: format!("connection failed: {e}"),
        },
        Attempt::Module {
            module,
            message,
            retryable: true,
        } => Verdict::Retry {
            after: None,
            reason: format!("module {module}: {message}"),
        },
        Attempt::Module {
            module,
            message,
            retryable: false,
        } => Verdict::Fail {
            reason: format!("module {module}: {message}"),
        },
        Attempt::Unsendable { module, reason } => Verdict::Fail {
            reason: format!("module {module}: {reason}"),
        },
        Attempt::Rejected {
            module,
            message,
            retryable: true,
        } => Verdict::Retry {
            after: None,
            reason: format!("item rejected (read by module {module}): {message}"),
        },
        Attempt::Rejected {
            module,
            message,
            retryable: false,
        } => Verdict::Fail {
            reason: format!("item rejected (read by module {module}): {message}"),
        },
    }
}

/// The reason for an HTTP answer: the status only. Vendors echo the request
/// (emails, phone numbers) in error bodies, and reasons are logged; the body
/// itself is kept in the DLQ entry's `response` field (`switchyard dlq show`).
fn http_reason(status: u16, _body: &str) -> String {
    format!("HTTP {status}")
}

/// Parse `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let t = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = t.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(d.to_std().unwrap_or(Duration::ZERO))
}

/// The delay before attempt `attempt + 1`, after `attempt` failed attempts (1-based).
pub fn backoff(policy: &RetryConfig, schedule: &[Duration], attempt: u32) -> Duration {
    let base = if !schedule.is_empty() {
        schedule[(attempt as usize - 1).min(schedule.len() - 1)]
    } else {
        let f = policy
            .multiplier
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let d = policy.initial.as_secs_f64() * f;
        Duration::from_secs_f64(d.min(policy.max_delay.as_secs_f64()))
    };
    if policy.jitter {
        base.mul_f64(0.5 + fastrand::f64() * 0.5)
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16) -> Attempt {
        Attempt::Response {
            status,
            retry_after: None,
            body: "b".into(),
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(classify(&resp(200)), Verdict::Delivered);
        assert_eq!(classify(&resp(204)), Verdict::Delivered);
        for s in [408, 429, 500, 502, 503] {
            assert!(matches!(classify(&resp(s)), Verdict::Retry { .. }), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(matches!(classify(&resp(s)), Verdict::Fail { .. }), "{s}");
        }
        assert!(matches!(classify(&Attempt::Timeout), Verdict::Retry { .. }));
        assert!(matches!(
            classify(&Attempt::Connect("refused".into())),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn retry_after_is_carried() {
        let a = Attempt::Response {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            body: String::new(),
        };
        assert!(
            matches!(classify(&a), Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn module_errors_as_the_module_says() {
        let m = |r| Attempt::Module {
            module: "klaviyo".into(),
            message: "no email".into(),
            retryable: r,
        };
        assert!(matches!(classify(&m(true)), Verdict::Retry { .. }));
        assert!(
            matches!(classify(&m(false)), Verdict::Fail { reason } if reason.contains("klaviyo"))
        );
    }

    #[test]
    fn an_unsendable_request_is_dead_lettered_naming_the_module() {
        let a = Attempt::Unsendable {
            module: "klaviyo".into(),
            reason: "invalid header name \"a b\" in its request".into(),
        };
        assert_eq!(
            classify(&a),
            Verdict::Fail {
                reason: "module klaviyo: invalid header name \"a b\" in its request".into()
            }
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let p = RetryConfig {
            jitter: false,
            ..RetryConfig::default()
        };
        assert_eq!(backoff(&p, &[], 1), Duration::from_millis(500));
        assert_eq!(backoff(&p, &[], 2), Duration::from_secs(1));
        assert_eq!(backoff(&p, &[], 40), p.max_delay);
        let j = RetryConfig::default();
        for _ in 0..100 {
            let d = backoff(&j, &[], 3);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
        let sched = [Duration::from_secs(1), Duration::from_secs(5)];
        assert_eq!(backoff(&p, &sched, 1), Duration::from_secs(1));
        assert_eq!(backoff(&p, &sched, 9), Duration::from_secs(5));
    }
}
