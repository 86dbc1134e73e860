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

use std::sync::atomic::AtomicU64;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
pub struct SourceChange {
    pub source: String,
    /// `add_column`, `drop_column`, `rename_column`, `type_change`,
    /// `table_added`, `table_dropped`.
    pub change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceKind {
    pub source: String,
    /// `invalid_topic`, `oversized`, `undecodable`.
    pub kind: &'static str,
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
    pub cdc_schema_changes: Family<SourceChange, Counter>,
    pub cdc_quarantined: Family<SourceKind, Counter>,
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
    cdc_schema_changes: Family::default(),
    cdc_quarantined: Family::default(),
    monitor_errors: Counter::default(),
});

/// The process-wide families.
pub fn get() -> &'static Metrics {
    &METRICS
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

/// A CDC source detected a schema change of one of its tables.
pub fn schema_change(source: &str, change: &'static str) {
    get()
        .cdc_schema_changes
        .get_or_create(&SourceChange {
            source: source.to_string(),
            change,
        })
        .inc();
}

/// A CDC source quarantined a record it could not map (`kind`:
/// `invalid_topic`, `oversized`, `undecodable`).
pub fn quarantined(source: &str, kind: &'static str) {
    get()
        .cdc_quarantined
        .get_or_create(&SourceKind {
            source: source.to_string(),
            kind,
        })
        .inc();
}

/// One delivery attempt's answer, by class (`2xx`…`5xx`, `timeout`,
/// `connect_error`); `None` (a module's error) is counted by the module families.
pub fn response(consumer: &str, class: Option<&'static str>) {
    let Some(class) = class else { return };
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
