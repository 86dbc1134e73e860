//! Prometheus metrics (`GET /metrics` on the admin listener, see
//! `admin_listener.rs`), with the official client, `prometheus-client`.
//!
//! Two kinds of families:
//! - **instrumented** ones, in the process-wide [`Metrics`] ([`get`]): the
//!   data path updates them through the small hook functions below (ingest,
//!   responses, latencies, module call time) and the monitor sets the gauges
//!   it reads from Redis and Postgres (lag, DLQ depth, CDC slots, SLA);
//! - **collected** ones, read at scrape time from counters the router keeps
//!   anyway ([`DeliveryCollector`]: per-consumer outcome counts, module calls,
//!   drops, errors, loaded versions, reloads), so nothing is counted twice.
//!
//! Labels are bounded by the config: `source`, `consumer`, `module` names,
//! status codes and classes. Never account ids, event ids or URLs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::delivery::classify::Attempt;
use crate::delivery::Delivery;
use crate::event::Event;

/// The `Content-Type` of a scrape (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceStatus {
    pub source: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotState {
    pub source: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabel {
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerSince {
    pub consumer: String,
    /// `source` (the event's `occurred_at`) or `ingest` (its `ingested_at`).
    pub since: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerClass {
    pub consumer: String,
    /// `2xx`, `3xx`, `4xx`, `5xx`, `timeout` or `connect_error`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerModule {
    pub consumer: String,
    pub module: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerSla {
    pub consumer: String,
    /// `lag` or `dlq`.
    pub sla: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// `firing`, `repeat` or `resolved`.
    pub kind: &'static str,
    /// `sent` or `failed`.
    pub result: &'static str,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
        600.0, 1800.0, 3600.0,
    ])
}

fn module_histogram() -> Histogram {
    Histogram::new([
        0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
        0.05, 0.1, 0.25, 0.5, 1.0,
    ])
}

/// The instrumented families of this process.
pub struct Metrics {
    pub ingest_requests: Family<SourceStatus, Counter>,
    pub ingest_events: Family<SourceStatus, Counter>,
    pub delivery_latency: HistFamily<ConsumerSince>,
    pub responses: Family<ConsumerClass, Counter>,
    pub module_call_seconds: HistFamily<ConsumerModule>,
    pub consumer_lag_events: Family<ConsumerLabel, Gauge>,
    pub consumer_lag_seconds: Family<ConsumerLabel, FloatGauge>,
    pub dlq_events: Family<ConsumerLabel, Gauge>,
    pub parked_accounts: Family<ConsumerLabel, Gauge>,
    pub sla_breached: Family<ConsumerSla, Gauge>,
    pub alerts: Family<AlertLabels, Counter>,
    pub cdc_lag_bytes: Family<SourceLabel, Gauge>,
    pub cdc_lag_seconds: Family<SourceLabel, FloatGauge>,
    pub cdc_slot_active: Family<SourceLabel, Gauge>,
    pub cdc_slot_stalled: Family<SourceLabel, Gauge>,
    pub cdc_slot_state: Family<SlotState, Gauge>,
    pub monitor_errors: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    ingest_requests: Family::default(),
    ingest_events: Family::default(),
    delivery_latency: Family::new_with_constructor(latency_histogram),
    responses: Family::default(),
    module_call_seconds: Family::new_with_constructor(module_histogram),
    consumer_lag_events: Family::default(),
    consumer_lag_seconds: Family::default(),
    dlq_events: Family::default(),
    parked_accounts: Family::default(),
    sla_breached: Family::default(),
    alerts: Family::default(),
    cdc_lag_bytes: Family::default(),
    cdc_lag_seconds: Family::default(),
    cdc_slot_active: Family::default(),
    cdc_slot_stalled: Family::default(),
    cdc_slot_state: Family::default(),
    monitor_errors: Counter::default(),
});

/// The process-wide families.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// A registry with every family of this process, plus `delivery`'s
/// collected ones (`None`: a router without consumers).
pub fn registry(delivery: Option<Arc<Delivery>>) -> Registry {
    let m = get();
    let mut r = Registry::with_prefix("switchyard");
    r.register(
        "ingest_requests",
        "HTTP ingest requests, by source (`unauthenticated` before the token is checked) and response status",
        m.ingest_requests.clone(),
    );
    r.register(
        "ingest_events",
        "Events written to the log by source: status `accepted` (new) or `duplicate` (id already seen)",
        m.ingest_events.clone(),
    );
    r.register(
        "delivery_latency_seconds",
        "Time from the event's source time (since=\"source\") or ingest (since=\"ingest\") to the endpoint's 2xx, per consumer",
        m.delivery_latency.clone(),
    );
    r.register(
        "delivery_responses",
        "Delivery attempts per consumer by outcome class (2xx, 3xx, 4xx, 5xx, timeout, connect_error)",
        m.responses.clone(),
    );
    r.register(
        "module_call_seconds",
        "Time of one WebAssembly module call, per consumer and module",
        m.module_call_seconds.clone(),
    );
    r.register(
        "consumer_lag_events",
        "Events not yet delivered per consumer: unread, read but unacknowledged, and deferred (DLQ excluded)",
        m.consumer_lag_events.clone(),
    );
    r.register(
        "consumer_lag_seconds",
        "Age of the consumer's oldest undelivered event (0 when caught up)",
        m.consumer_lag_seconds.clone(),
    );
    r.register(
        "dlq_events",
        "Entries in the consumer's dead-letter queue",
        m.dlq_events.clone(),
    );
    r.register(
        "parked_accounts",
        "Accounts parked behind a dead-lettered event, per consumer",
        m.parked_accounts.clone(),
    );
    r.register(
        "sla_breached",
        "1 while the consumer breaches its SLA (sla=\"lag\": sla.max_lag, sla=\"dlq\": sla.max_dlq)",
        m.sla_breached.clone(),
    );
    r.register(
        "alert_webhooks",
        "SLA alert webhook posts by kind (firing, repeat, resolved) and result",
        m.alerts.clone(),
    );
    r.register(
        "cdc_lag_bytes",
        "WAL bytes between the server's current position and the source's confirmed position",
        m.cdc_lag_bytes.clone(),
    );
    r.register(
        "cdc_lag_seconds",
        "How long ago the server's WAL was at the source's confirmed position (0 when caught up)",
        m.cdc_lag_seconds.clone(),
    );
    r.register(
        "cdc_slot_active",
        "1 when a walsender is attached to the source's replication slot",
        m.cdc_slot_active.clone(),
    );
    r.register(
        "cdc_slot_stalled",
        "1 when the source's slot has not advanced for monitor.cdc_stall_after while behind (readiness fails)",
        m.cdc_slot_stalled.clone(),
    );
    r.register(
        "cdc_slot_state",
        "1 for the slot's current state: reserved, extended, unreserved, lost (pg wal_status), missing or unknown",
        m.cdc_slot_state.clone(),
    );
    r.register(
        "monitor_errors",
        "Failed reads of consumer lag, DLQ depth or CDC slots (the gauges keep their last value)",
        m.monitor_errors.clone(),
    );
    r.register_collector(Box::new(BuildInfo));
    if let Some(d) = delivery {
        r.register_collector(Box::new(DeliveryCollector(d)));
    }
    r
}

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut s = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut s, registry)
        .expect("writing to a String cannot fail");
    s
}

// ---- hooks called from the data path ----

/// One HTTP ingest request finished (`source`: None before authentication).
pub fn ingest_request(source: Option<&str>, status: u16, accepted: u64, duplicates: u64) {
    let m = get();
    let source = source.unwrap_or("unauthenticated").to_string();
    m.ingest_requests
        .get_or_create(&SourceStatus {
            source: source.clone(),
            status: status.to_string(),
        })
        .inc();
    if accepted + duplicates > 0 {
        ingest_events(&source, accepted, duplicates);
    }
}

/// Events a source wrote to the log (HTTP, CDC…).
pub fn ingest_events(source: &str, accepted: u64, duplicates: u64) {
    let m = get();
    for (status, n) in [("accepted", accepted), ("duplicate", duplicates)] {
        if n > 0 {
            m.ingest_events
                .get_or_create(&SourceStatus {
                    source: source.to_string(),
                    status: status.to_string(),
                })
                .inc_by(n);
        }
    }
}

/// One delivery attempt's answer.
pub fn response(consumer: &str, a: &Attempt) {
    let class = match a {
        Attempt::Response { status, .. } => match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Attempt::Timeout => "timeout",
        Attempt::Connect(_) => "connect_error",
        // Module errors are counted by the module families.
        _ => return,
    };
    get()
        .responses
        .get_or_create(&ConsumerClass {
            consumer: consumer.to_string(),
            class,
        })
        .inc();
}

/// `ev` was delivered (its last request got a 2xx) now.
pub fn delivered(consumer: &str, ev: &Event) {
    let now = chrono::Utc::now();
    let secs = |t: chrono::DateTime<chrono::Utc>| {
        (now - t).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6
    };
    let m = get();
    for (since, t) in [("source", ev.occurred_at), ("ingest", ev.ingested_at)] {
        m.delivery_latency
            .get_or_create(&ConsumerSince {
                consumer: consumer.to_string(),
                since,
            })
            .observe(secs(t));
    }
}

/// One module call took `took`.
pub fn module_call(consumer: &str, module: &str, took: Duration) {
    get()
        .module_call_seconds
        .get_or_create(&ConsumerModule {
            consumer: consumer.to_string(),
            module: module.to_string(),
        })
        .observe(took.as_secs_f64());
}

// ---- collected at scrape time ----

#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let g = ConstGauge::new(1i64);
        let mut e = encoder.encode_descriptor(
            "build_info",
            "The running router's version",
            None,
            MetricType::Gauge,
        )?;
        g.encode(e.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)
    }
}

/// Per-consumer outcome counts, module counters and versions, reloads: read
/// from the running consumers at each scrape.
pub struct DeliveryCollector(pub Arc<Delivery>);

impl std::fmt::Debug for DeliveryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeliveryCollector")
    }
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        ConstCounter::new(v).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Vec<(&'static str, String)>, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        ConstGauge::new(v).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for DeliveryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let consumers = &self.0.consumers;
        let mut outcomes = Vec::new();
        let mut retries = Vec::new();
        for c in consumers {
            let s = &c.stats;
            let l = |outcome: &str| {
                vec![
                    ("consumer", c.name.clone()),
                    ("outcome", outcome.to_string()),
                ]
            };
            outcomes.push((l("delivered"), load(&s.delivered)));
            outcomes.push((l("duplicate_skipped"), load(&s.duplicates_skipped)));
            outcomes.push((l("dead_lettered"), load(&s.dead_lettered)));
            outcomes.push((l("parked"), load(&s.parked)));
            outcomes.push((l("deferred"), load(&s.deferred)));
            outcomes.push((l("filtered"), s.filtered_total()));
            retries.push((vec![("consumer", c.name.clone())], load(&s.retries)));
        }
        counter_family(
            &mut encoder,
            "delivery_events",
            "Events per consumer by outcome: delivered, duplicate_skipped (already acknowledged), dead_lettered, parked, deferred (set aside in Redis), filtered (topics or a module)",
            outcomes,
        )?;
        counter_family(
            &mut encoder,
            "delivery_retries",
            "Delivery attempts that will be retried (408, 429, 5xx, timeouts, connection errors), per consumer",
            retries,
        )?;

        let statuses: Vec<_> = consumers
            .iter()
            .filter_map(|c| c.chain.as_ref().map(|ch| ch.status()))
            .collect();
        let module_rows = |f: &dyn Fn(&crate::transform::ModuleStatus) -> u64| {
            statuses
                .iter()
                .flat_map(|st| {
                    st.modules.iter().map(|m| {
                        (
                            vec![
                                ("consumer", st.consumer.clone()),
                                ("module", m.name.clone()),
                            ],
                            f(m),
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        counter_family(
            &mut encoder,
            "module_calls",
            "WebAssembly module calls, per consumer and module (kept across reloads)",
            module_rows(&|m| m.calls),
        )?;
        counter_family(
            &mut encoder,
            "module_drops",
            "Events a module dropped (returned no output)",
            module_rows(&|m| m.drops),
        )?;
        counter_family(
            &mut encoder,
            "module_errors",
            "Module calls that failed (guest error, trap, timeout, memory, invalid output)",
            module_rows(&|m| m.errors),
        )?;
        gauge_family(
            &mut encoder,
            "module_info",
            "The loaded version of each module: 1, with its content hash (SHA-256) and contract version as labels",
            statuses.iter().flat_map(|st| {
                st.modules.iter().map(|m| {
                    (
                        vec![
                            ("consumer", st.consumer.clone()),
                            ("module", m.name.clone()),
                            ("hash", m.hash.clone()),
                            ("contract", m.version.clone()),
                        ],
                        1,
                    )
                })
            }),
        )?;
        counter_family(
            &mut encoder,
            "module_reloads",
            "Reloads of a consumer's module chain by result (ok: swapped in; failed: the old chain kept running)",
            statuses.iter().flat_map(|st| {
                [
                    (
                        vec![
                            ("consumer", st.consumer.clone()),
                            ("result", "ok".to_string()),
                        ],
                        st.reloads,
                    ),
                    (
                        vec![
                            ("consumer", st.consumer.clone()),
                            ("result", "failed".to_string()),
                        ],
                        st.reload_failures,
                    ),
                ]
            }),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format_with_bounded_labels() {
        ingest_request(Some("web"), 202, 3, 1);
        ingest_request(None, 401, 0, 0);
        module_call("esp", "filter", Duration::from_micros(30));
        let text = render(&registry(None));
        assert!(
            text.contains("switchyard_ingest_requests_total{source=\"web\",status=\"202\"}"),
            "{text}"
        );
        assert!(text.contains(
            "switchyard_ingest_requests_total{source=\"unauthenticated\",status=\"401\"}"
        ));
        assert!(text.contains("switchyard_ingest_events_total{source=\"web\",status=\"accepted\"}"));
        assert!(
            text.contains(
                "switchyard_module_call_seconds_count{consumer=\"esp\",module=\"filter\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("switchyard_build_info{version="));
    }
}
