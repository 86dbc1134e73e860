//! `[consumers.<name>]`: one downstream system.

use std::time::Duration;

use serde::Deserialize;

use switchyard_core::config::ConfigError;
pub use switchyard_destinations::config::{
    AuthConfig, EndpointConfig, RateLimitConfig, RetryConfig,
};

#[derive(Debug, Clone, Deserialize)]
pub struct ConsumerConfig {
    /// Topic globs this consumer subscribes to (e.g. `customer.*.email_changed`).
    pub topics: Vec<String>,
    /// Where a new consumer starts: `earliest` (oldest retained), `latest`, or an RFC 3339 time.
    #[serde(default = "default_start")]
    pub start: String,
    /// What happens to an account's later events when one of its events exhausts its retries.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Accounts delivered in parallel (across all partitions). Events of one account are
    /// always sent one at a time, in log order.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Accounts being delivered at once (across all partitions): each holds its
    /// event and request in memory, also while it waits for a send permit or in
    /// retry backoff. Bounds memory when many accounts have work (a backlog), not
    /// their number. Accounts beyond it wait their turn, in order; so more accounts
    /// failing at once than this hold up the others until their retries end.
    #[serde(default = "default_account_workers")]
    pub account_workers: usize,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Events one account may hold in memory while it waits; more are set aside in Redis.
    #[serde(default = "default_account_buffer")]
    pub max_account_buffer: usize,
    /// Events one partition reader holds in memory at most (bounded memory under backlog).
    #[serde(default = "default_partition_buffer")]
    pub max_partition_buffer: usize,
    /// How long the record of an acknowledged delivery is kept (redelivery dedup).
    #[serde(default = "default_dedup", with = "humantime_serde")]
    pub dedup_window: Duration,
    pub endpoint: EndpointConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// The transform chain, in order. Without modules the canonical event is sent as JSON.
    #[serde(default)]
    pub modules: Vec<switchyard_wasm_host::ModuleConfig>,
    /// `[consumers.<name>.sla]`: limits that raise alerts (the router's `sla.rs`).
    #[serde(default)]
    pub sla: Option<crate::alerts::SlaConfig>,
    /// A critical consumer in breach of its SLA makes `/readyz` fail.
    #[serde(default)]
    pub critical: bool,
    /// `[consumers.<name>.batch]`: send several events in one request, built
    /// by the last module's `transform-batch` (contract 0.2).
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// `[consumers.<name>.policy]`: the privacy policy the router enforces
    /// before the module chain (`switchyard-privacy`). Required when
    /// `[privacy.classes]` declares any class.
    #[serde(default)]
    pub policy: Option<switchyard_privacy::PolicyConfig>,
    /// Pinned schema versions, per schema family (`{ customer = 1 }`): an
    /// event of a pinned family that was validated against another version
    /// is filtered by the rule `schema_versions` (acknowledged, counted,
    /// not sent). Events of other families pass.
    #[serde(default)]
    pub schema_versions: std::collections::BTreeMap<String, u32>,
}

/// Batch limits: a batch is sent when it holds `max_events` events or
/// `max_bytes`, or `max_wait` after its first event, whichever comes first.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Events per batch (the vendor's limit, e.g. 75 for Braze `/users/track`).
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// Approximate bytes of event data per batch (JSON texts and strings).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: switchyard_core::config::ByteSize,
    /// How long the first event of a batch waits for company.
    #[serde(default = "default_batch_wait", with = "humantime_serde")]
    pub max_wait: Duration,
}

fn default_batch_events() -> usize {
    75
}
fn default_batch_bytes() -> switchyard_core::config::ByteSize {
    switchyard_core::config::ByteSize(1024 * 1024)
}
fn default_batch_wait() -> Duration {
    Duration::from_millis(100)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Later events of that account wait in the DLQ behind the failed one (order survives a replay).
    #[default]
    Park,
    /// Later events of that account keep flowing.
    Skip,
}

fn default_start() -> String {
    "latest".into()
}
fn default_concurrency() -> usize {
    64
}
fn default_account_workers() -> usize {
    1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_account_buffer() -> usize {
    100
}
fn default_partition_buffer() -> usize {
    5000
}
fn default_dedup() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

pub use switchyard_store::consumer::Start;

impl ConsumerConfig {
    /// Whether an event with these attributes passes `schema_versions`.
    pub fn takes_schema_version(
        &self,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        use switchyard_sources::schema::{FAMILY_ATTR, VERSION_ATTR};
        match attributes
            .get(FAMILY_ATTR)
            .and_then(|f| self.schema_versions.get(f))
        {
            None => true,
            Some(pinned) => attributes.get(VERSION_ATTR) == Some(&pinned.to_string()),
        }
    }

    pub fn validate(&self, path: &str, errors: &mut Vec<ConfigError>) {
        let e = |p: &str, m: String| ConfigError::new(format!("{path}.{p}"), m);
        for (family, v) in &self.schema_versions {
            if *v == 0 {
                errors.push(e(
                    &format!("schema_versions.{family}"),
                    "schema versions start at 1".into(),
                ));
            }
        }
        if self.topics.is_empty() {
            errors.push(e("topics", "must list at least one topic glob".into()));
        }
        match &self.sla {
            Some(s) => s.validate(&format!("{path}.sla"), errors),
            None if self.critical => errors.push(e(
                "critical",
                "a critical consumer needs an SLA: set sla.max_lag and/or sla.max_dlq".into(),
            )),
            None => {}
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(err) = globset::Glob::new(t) {
                errors.push(e(&format!("topics[{i}]"), format!("invalid glob: {err}")));
            }
        }
        if let Err(m) = Start::parse(&self.start) {
            errors.push(e("start", m));
        }
        if self.concurrency == 0 {
            errors.push(e("concurrency", "must be at least 1".into()));
        }
        if self.account_workers == 0 {
            errors.push(e("account_workers", "must be at least 1".into()));
        }
        if self.max_account_buffer == 0 {
            errors.push(e("max_account_buffer", "must be at least 1".into()));
        }
        if self.max_partition_buffer < self.max_account_buffer {
            errors.push(e(
                "max_partition_buffer",
                "must be at least max_account_buffer".into(),
            ));
        }
        if self.timeout.is_zero() {
            errors.push(e("timeout", "must be greater than 0".into()));
        }
        self.endpoint.validate(&format!("{path}.endpoint"), errors);
        self.retry.validate(&format!("{path}.retry"), errors);
        if let Some(rl) = &self.rate_limit {
            rl.validate(&format!("{path}.rate_limit"), errors);
        }
        switchyard_wasm_host::validate_chain(&self.modules, &format!("{path}.modules"), errors);
        if let Some(b) = &self.batch {
            if !(1..=10_000).contains(&b.max_events) {
                errors.push(e("batch.max_events", "must be 1 to 10000".into()));
            }
            if b.max_bytes.0 == 0 {
                errors.push(e("batch.max_bytes", "must be greater than 0".into()));
            }
            if b.max_wait > Duration::from_secs(60) {
                errors.push(e("batch.max_wait", "must be at most 60s".into()));
            }
            if self.modules.is_empty() {
                errors.push(e(
                    "batch",
                    "batching needs modules whose last one exports switchyard:transform/batch (e.g. transforms/braze)".into(),
                ));
            }
        }
    }

    /// The retry schedule as durations (validated already).
    pub fn schedule(&self) -> Vec<Duration> {
        self.retry.delays()
    }
}
