//! SLA alerts: per consumer `sla.max_lag` / `sla.max_dlq`, evaluated after
//! every monitor pass (`monitor.rs`). A breach logs at warn, sets
//! `switchyard_sla_breached{consumer,sla}` to 1 and, with `[alerts] webhook`,
//! POSTs one `firing` alert, again (`repeat`) every `alerts.repeat_interval`
//! while it lasts, and one `resolved` notice when it ends. A consumer with
//! `critical = true` also makes `/readyz` fail while it is in breach.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::metrics;
use switchyard_config::alerts::{AlertsConfig, SlaConfig};

/// What the monitor measured for one consumer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observed {
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub dlq: u64,
}

struct Breach {
    since: chrono::DateTime<chrono::Utc>,
    last_sent: Instant,
}

/// The state of every consumer's SLA; call [`Sla::evaluate`] after each monitor pass.
pub struct Sla {
    alerts: AlertsConfig,
    client: reqwest::Client,
    breaches: HashMap<(String, &'static str), Breach>,
}

/// One consumer's SLA settings, as the evaluator needs them.
pub struct Target<'a> {
    pub consumer: &'a str,
    pub sla: &'a SlaConfig,
    pub critical: bool,
}

impl Sla {
    pub fn new(alerts: &AlertsConfig) -> anyhow::Result<Sla> {
        Ok(Sla {
            alerts: alerts.clone(),
            client: reqwest::Client::builder()
                .timeout(alerts.timeout)
                .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
                .build()?,
            breaches: HashMap::new(),
        })
    }

    /// Create the breach gauges of a consumer's configured limits (at 0).
    pub fn init(&self, consumer: &str, s: &SlaConfig) {
        for (kind, on) in [("lag", s.max_lag.is_some()), ("dlq", s.max_dlq.is_some())] {
            if on {
                metrics::get()
                    .sla_breached
                    .get_or_create(&metrics::ConsumerSla {
                        consumer: consumer.to_string(),
                        sla: kind,
                    })
                    .set(0);
            }
        }
    }

    /// Compare `seen` with `t`'s limits; log, set gauges, post alerts, update readiness.
    pub fn evaluate(&mut self, t: &Target<'_>, seen: Observed) {
        let checks: [(&'static str, Option<(f64, f64)>); 2] = [
            (
                "lag",
                t.sla.max_lag.map(|m| (seen.lag_seconds, m.as_secs_f64())),
            ),
            ("dlq", t.sla.max_dlq.map(|m| (seen.dlq as f64, m as f64))),
        ];
        let mut in_breach = Vec::new();
        for (kind, check) in checks {
            let Some((value, limit)) = check else {
                continue;
            };
            let key = (t.consumer.to_string(), kind);
            let breached = value > limit;
            metrics::get()
                .sla_breached
                .get_or_create(&metrics::ConsumerSla {
                    consumer: t.consumer.to_string(),
                    sla: kind,
                })
                .set(breached as i64);
            match (breached, self.breaches.get_mut(&key)) {
                (true, None) => {
                    let since = chrono::Utc::now();
                    tracing::warn!(consumer = %t.consumer, sla = kind, value, limit, critical = t.critical,
                        lag_events = seen.lag_events, "consumer breaches its SLA");
                    self.post("firing", t, kind, value, limit, since, seen);
                    self.breaches.insert(
                        key,
                        Breach {
                            since,
                            last_sent: Instant::now(),
                        },
                    );
                }
                (true, Some(b)) => {
                    if b.last_sent.elapsed() >= self.alerts.repeat_interval {
                        b.last_sent = Instant::now();
                        let since = b.since;
                        tracing::warn!(consumer = %t.consumer, sla = kind, value, limit, since = %since,
                            "consumer still breaches its SLA");
                        self.post("repeat", t, kind, value, limit, since, seen);
                    }
                }
                (false, Some(_)) => {
                    let b = self.breaches.remove(&key).expect("present");
                    tracing::info!(consumer = %t.consumer, sla = kind, value, limit,
                        lasted_s = (chrono::Utc::now() - b.since).num_seconds(), "consumer SLA recovered");
                    self.post("resolved", t, kind, value, limit, b.since, seen);
                }
                (false, None) => {}
            }
            if breached {
                in_breach.push(format!("{kind} {value} > {limit}"));
            }
        }
        if t.critical {
            crate::health::set(
                &format!("sla:{}", t.consumer),
                (!in_breach.is_empty()).then(|| {
                    format!(
                        "critical consumer `{}` breaches its SLA ({})",
                        t.consumer,
                        in_breach.join(", ")
                    )
                }),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn post(
        &self,
        kind: &'static str,
        t: &Target<'_>,
        sla: &'static str,
        value: f64,
        limit: f64,
        since: chrono::DateTime<chrono::Utc>,
        seen: Observed,
    ) {
        let Some(url) = self.alerts.webhook.clone() else {
            return;
        };
        let status = if kind == "resolved" {
            "resolved"
        } else {
            "firing"
        };
        let body = json!({
            "status": status,
            "repeat": kind == "repeat",
            "alert": format!("consumer_{sla}"),
            "consumer": t.consumer,
            "critical": t.critical,
            "sla": sla,
            "value": value,
            "limit": limit,
            "lag_events": seen.lag_events,
            "lag_seconds": seen.lag_seconds,
            "dlq": seen.dlq,
            "since": since.to_rfc3339(),
            "at": chrono::Utc::now().to_rfc3339(),
            "summary": match (status, sla) {
                ("firing", "lag") => format!("consumer `{}` is {value:.0}s behind (limit {limit:.0}s)", t.consumer),
                ("firing", _) => format!("consumer `{}` has {value} dead-lettered events (limit {limit})", t.consumer),
                _ => format!("consumer `{}` is within its {sla} SLA again", t.consumer),
            },
        });
        let mut req = self.client.post(&url).json(&body);
        if let Some(tok) = &self.alerts.token {
            req = req.bearer_auth(tok.expose());
        }
        let consumer = t.consumer.to_string();
        tokio::spawn(async move {
            // A few tries: an alert that never arrives is worse than a late one.
            let mut delay = Duration::from_millis(500);
            for attempt in 1..=3 {
                let Some(r) = req.try_clone() else { break };
                match r.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        inc_alert(kind, "sent");
                        return;
                    }
                    Ok(resp) => {
                        tracing::warn!(consumer = %consumer, kind, status = resp.status().as_u16(), attempt, "alert webhook refused the alert")
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %consumer, kind, error = %e.without_url(), attempt, "alert webhook unreachable")
                    }
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            inc_alert(kind, "failed");
        });
    }
}

fn inc_alert(kind: &'static str, result: &'static str) {
    metrics::get()
        .alerts
        .get_or_create(&metrics::AlertLabels { kind, result })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_lag_takes_seconds_or_a_duration() {
        let a: SlaConfig = toml::from_str("max_lag = 30").unwrap();
        assert_eq!(a.max_lag, Some(Duration::from_secs(30)));
        let b: SlaConfig = toml::from_str("max_lag = \"2m\"\nmax_dlq = 5").unwrap();
        assert_eq!(b.max_lag, Some(Duration::from_secs(120)));
        assert_eq!(b.max_dlq, Some(5));
        assert!(toml::from_str::<SlaConfig>("max_lag = \"soon\"").is_err());
        let mut errors = Vec::new();
        SlaConfig::default().validate("consumers.x.sla", &mut errors);
        assert_eq!(errors[0].path, "consumers.x.sla");
    }

    #[tokio::test]
    async fn a_breach_fires_once_then_resolves_and_a_critical_one_fails_readiness() {
        let mut sla = Sla::new(&AlertsConfig::default()).unwrap();
        let cfg = SlaConfig {
            max_lag: Some(Duration::from_secs(10)),
            max_dlq: None,
        };
        let t = Target {
            consumer: "unit_crit",
            sla: &cfg,
            critical: true,
        };
        let lagging = Observed {
            lag_events: 3,
            lag_seconds: 11.0,
            dlq: 0,
        };
        sla.evaluate(&t, lagging);
        assert!(sla.breaches.contains_key(&("unit_crit".into(), "lag")));
        assert!(crate::health::reasons()
            .iter()
            .any(|r| r.contains("unit_crit")));
        sla.evaluate(&t, Observed::default());
        assert!(sla.breaches.is_empty());
        assert!(!crate::health::reasons()
            .iter()
            .any(|r| r.contains("unit_crit")));
    }
}
