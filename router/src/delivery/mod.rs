//! Delivery: every consumer reads every partition through its own consumer
//! group, transforms each event with its module chain and sends it over HTTP,
//! in order per account, with retries, a dead-letter queue and dedup.
//!
//! - `config.rs`: `[consumers.<name>]`
//! - `classify.rs`: the one function deciding delivered / retry / dead-letter
//! - `sender.rs`: HTTP, auth, Standard Webhooks signing, rate limit
//! - `store.rs`: the consumer's Redis state and its atomic transitions
//! - `partition.rs`: reader, actor and account tasks of one partition
//! - `coordinator.rs`: which partitions this instance delivers (leases with
//!   fencing tokens, shared fairly with the other instances on the same Redis)
//! - `admin.rs`: DLQ, replay, rewind and status operations (CLI)

mod account;
mod batch;
pub mod coordinator;
pub mod partition;
mod privacy;
mod reader;
mod stateful;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use globset::{Glob, GlobSet, GlobSetBuilder};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use switchyard_config::consumer::{ConsumerConfig, Start};
use switchyard_config::Config;
use switchyard_core::event::Event;
use switchyard_destinations::Destination;
use switchyard_store::consumer::ConsumerKeys;
use switchyard_store::log::Log;
use switchyard_wasm_host::{ChainHandle, ChainOutcome, OutRequest, TransformEngine};

/// Counters of one consumer (reported by `status`).
#[derive(Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub duplicates_skipped: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub parked: AtomicU64,
    pub deferred: AtomicU64,
    filtered: Mutex<BTreeMap<String, u64>>,
    latency_us_sum: AtomicU64,
    latency_n: AtomicU64,
    /// Recent ingest-to-2xx latencies (for the p99 of `status`), newest last.
    recent_latency: Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
    /// The last failed attempt: a reason without PII (status, timeout,
    /// module name) and when.
    last_error: Mutex<Option<(String, chrono::DateTime<chrono::Utc>)>>,
}

/// At most this many latencies are kept for the p99.
const RECENT_LATENCIES: usize = 2048;

impl Stats {
    pub fn inc(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn filtered(&self, rule: &str) {
        *self
            .filtered
            .lock()
            .unwrap()
            .entry(rule.to_string())
            .or_default() += 1;
    }
    /// Events filtered per rule (`topics`, a module's name, `consent:<purpose>`).
    pub fn filtered_by_rule(&self) -> BTreeMap<String, u64> {
        self.filtered.lock().unwrap().clone()
    }
    /// Events filtered by any rule.
    pub fn filtered_total(&self) -> u64 {
        self.filtered.lock().unwrap().values().sum()
    }
    fn observe_latency(&self, ev: &Event) {
        let us = (chrono::Utc::now() - ev.ingested_at)
            .num_microseconds()
            .unwrap_or(0)
            .max(0) as u64;
        self.latency_us_sum.fetch_add(us, Ordering::Relaxed);
        self.latency_n.fetch_add(1, Ordering::Relaxed);
        let mut r = self.recent_latency.lock().unwrap();
        if r.len() >= RECENT_LATENCIES {
            r.pop_front();
        }
        r.push_back((std::time::Instant::now(), us));
    }
    /// The 99th percentile of ingest-to-2xx latencies (ms) of deliveries
    /// within `window`; `None` without any.
    pub fn p99_ms(&self, window: Duration) -> Option<f64> {
        let now = std::time::Instant::now();
        let mut v: Vec<u64> = self
            .recent_latency
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= window)
            .map(|(_, us)| *us)
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i] as f64 / 1000.0)
    }
    /// Record a failed attempt. The reason is the HTTP status, `timed out`,
    /// `connection failed` or the failing module's name: never a response
    /// body or a module's message (either may quote the event).
    pub fn failed(&self, a: &switchyard_destinations::classify::Attempt) {
        let reason = match a {
            switchyard_destinations::classify::Attempt::Response { status, .. } => {
                format!("HTTP {status}")
            }
            switchyard_destinations::classify::Attempt::Timeout => "timed out".into(),
            switchyard_destinations::classify::Attempt::Connect(_) => "connection failed".into(),
            switchyard_destinations::classify::Attempt::Module {
                module, retryable, ..
            } => format!(
                "module {module} failed ({})",
                if *retryable {
                    "retryable"
                } else {
                    "not retryable"
                }
            ),
            switchyard_destinations::classify::Attempt::Unsendable { module, .. } => {
                format!("module {module} built a request that cannot be sent")
            }
            switchyard_destinations::classify::Attempt::Rejected {
                module, retryable, ..
            } => format!(
                "the vendor rejected an item of a batch (read by module {module}, {})",
                if *retryable {
                    "retryable"
                } else {
                    "not retryable"
                }
            ),
        };
        *self.last_error.lock().unwrap() = Some((reason, chrono::Utc::now()));
    }
    /// The last failed attempt's reason and time.
    pub fn last_error(&self) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
        self.last_error.lock().unwrap().clone()
    }
    pub fn snapshot(&self) -> serde_json::Value {
        let n = self.latency_n.load(Ordering::Relaxed);
        serde_json::json!({
            "delivered": self.delivered.load(Ordering::Relaxed),
            "duplicates_skipped": self.duplicates_skipped.load(Ordering::Relaxed),
            "retries": self.retries.load(Ordering::Relaxed),
            "dead_lettered": self.dead_lettered.load(Ordering::Relaxed),
            "parked": self.parked.load(Ordering::Relaxed),
            "deferred": self.deferred.load(Ordering::Relaxed),
            "filtered": *self.filtered.lock().unwrap(),
            "mean_ingest_to_ack_ms": if n == 0 { 0.0 } else {
                self.latency_us_sum.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
            },
        })
    }
}

/// Everything the partitions of one consumer share.
pub struct ConsumerCtx {
    pub name: String,
    pub cfg: ConsumerConfig,
    pub start: Start,
    pub schedule: Vec<Duration>,
    pub topics: GlobSet,
    /// How this consumer's requests are sent (`switchyard-destinations`).
    pub destination: Arc<dyn Destination>,
    /// Requests in flight for this consumer (`concurrency`).
    pub permits: Semaphore,
    /// Account tasks at once, across partitions (`account_workers`): what
    /// bounds the memory of many accounts with work, not their number.
    pub workers: Arc<Semaphore>,
    pub stats: Stats,
    pub keys: ConsumerKeys,
    /// The module chain (hot-reloadable); `None` sends the canonical event as JSON.
    pub chain: Option<Arc<ChainHandle>>,
    /// `[privacy]`, compiled (shared by every consumer).
    pub privacy: Arc<switchyard_privacy::Privacy>,
    /// The content hash of `[privacy]` and this consumer's policy.
    pub policy_version: String,
    /// Whether outcomes go to the audit trail: the consumer has a policy or
    /// `[privacy]` declares classes or jurisdictions.
    pub audited: bool,
    /// Every consumer with a policy: a deletion is complete when each has
    /// delivered it.
    pub policy_consumers: Vec<String>,
}

impl ConsumerCtx {
    pub fn new(
        name: &str,
        cfg: &ConsumerConfig,
        namespace: &str,
        engine: &TransformEngine,
        privacy: &Arc<switchyard_privacy::Privacy>,
        policy_consumers: &[String],
    ) -> anyhow::Result<ConsumerCtx> {
        let mut b = GlobSetBuilder::new();
        for t in &cfg.topics {
            b.add(Glob::new(t)?);
        }
        Ok(ConsumerCtx {
            name: name.to_string(),
            start: Start::parse(&cfg.start).map_err(anyhow::Error::msg)?,
            schedule: cfg.schedule(),
            topics: b.build()?,
            destination: switchyard_destinations::build(
                name,
                &cfg.endpoint,
                cfg.timeout,
                cfg.concurrency,
                cfg.rate_limit.as_ref(),
            )?,
            permits: Semaphore::new(cfg.concurrency),
            workers: Arc::new(Semaphore::new(cfg.account_workers)),
            stats: Stats::default(),
            keys: ConsumerKeys {
                ns: namespace.to_string(),
                consumer: name.to_string(),
            },
            chain: if cfg.modules.is_empty() {
                None
            } else {
                Some(
                    ChainHandle::new(engine, name, cfg.modules.clone())
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?,
                )
            },
            privacy: privacy.clone(),
            policy_version: privacy.policy_version(cfg.policy.as_ref()),
            audited: cfg.policy.is_some() || privacy.cfg.enabled(),
            policy_consumers: policy_consumers.to_vec(),
            cfg: cfg.clone(),
        })
        .and_then(|ctx| {
            if ctx.cfg.batch.is_some() {
                let last = ctx.chain.as_ref().and_then(|c| c.chain().modules.last().cloned());
                match last {
                    Some(m) if m.batches => {}
                    Some(m) => anyhow::bail!(
                        "batch: the last module, {} (contract {}), does not export switchyard:transform/batch@0.2.0; build it with #[transform(batch = ...)] (switchyard-guest 0.2) or remove [consumers.{name}.batch]",
                        m.name, m.version
                    ),
                    None => anyhow::bail!("batch: batching needs a module that exports switchyard:transform/batch@0.2.0"),
                }
            }
            Ok(ctx)
        })
    }

    /// Turn an event into the requests to send: the module chain (run on the
    /// transform engine's guest threads, never on this async worker), or the
    /// canonical event as JSON when the consumer has no modules.
    /// Also returns what stateful modules staged (`kv` writes read through
    /// `kv`, emitted events), to be committed with the event's outcome.
    pub async fn prepare(
        &self,
        ev: &Event,
        kv: Arc<dyn switchyard_wasm_host::KvStore>,
    ) -> (ChainOutcome, switchyard_wasm_host::Effects) {
        match &self.chain {
            Some(c) => {
                let span = tracing::debug_span!("transform", consumer = %self.name);
                tracing::Instrument::instrument(c.chain().run_async_effects(ev.clone(), kv), span)
                    .await
            }
            None => (
                ChainOutcome::Requests(vec![OutRequest::canonical_json(ev, "")]),
                Default::default(),
            ),
        }
    }

    /// Module names and content hashes, recorded with dead letters.
    pub fn module_versions(&self) -> String {
        match &self.chain {
            Some(c) => c
                .chain()
                .modules
                .iter()
                .map(|m| format!("{}@{}", m.name, m.short_hash()))
                .collect::<Vec<_>>()
                .join(","),
            None => String::new(),
        }
    }
}

/// The running consumers.
pub struct Delivery {
    pub consumers: Vec<Arc<ConsumerCtx>>,
    /// This instance's id among the instances sharing the Redis.
    pub instance_id: String,
    /// The partitions this instance owns now, and lease counters.
    pub ownership: Arc<coordinator::Ownership>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Delivery {
    /// Build every consumer, compiling and initialising its module chain.
    /// Slow on a cold compile cache (seconds per module) and blocking: the
    /// router runs it on a thread of its own, so that SIGTERM can stop
    /// start-up without waiting for it.
    pub fn load(
        config: &Config,
        engine: &TransformEngine,
    ) -> anyhow::Result<Vec<Arc<ConsumerCtx>>> {
        let privacy =
            Arc::new(switchyard_privacy::Privacy::new(&config.privacy).context("privacy")?);
        let policy_consumers: Vec<String> = config
            .consumers
            .iter()
            .filter(|(_, c)| c.policy.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        config
            .consumers
            .iter()
            .map(|(name, c)| {
                ConsumerCtx::new(
                    name,
                    c,
                    &config.redis.namespace,
                    engine,
                    &privacy,
                    &policy_consumers,
                )
                .map(Arc::new)
                .with_context(|| format!("consumers.{name}"))
            })
            .collect()
    }

    /// Start the coordinator, which starts each consumer × partition this
    /// instance holds the lease of (all of them when it runs alone).
    pub fn spawn(
        consumers: Vec<Arc<ConsumerCtx>>,
        log: &Log,
        coordination: &switchyard_config::coordination::CoordinationConfig,
        shutdown: &CancellationToken,
    ) -> Delivery {
        let instance_id = coordination
            .instance_id
            .clone()
            .unwrap_or_else(coordinator::default_instance_id);
        let ownership = Arc::new(coordinator::Ownership::default());
        let tasks = vec![tokio::spawn(coordinator::run(
            instance_id.clone(),
            consumers.clone(),
            log.clone(),
            coordination.clone(),
            ownership.clone(),
            shutdown.clone(),
        ))];
        for ctx in &consumers {
            tracing::info!(consumer = %ctx.name, topics = ?ctx.cfg.topics, url = %switchyard_core::secret::redact_url(&ctx.cfg.endpoint.url), "consumer started");
        }
        Delivery {
            consumers,
            instance_id,
            ownership,
            tasks: Mutex::new(tasks),
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for c in &self.consumers {
            let mut v = c.stats.snapshot();
            if let Some(chain) = &c.chain {
                v["transforms"] = serde_json::to_value(chain.status()).unwrap_or_default();
            }
            m.insert(c.name.clone(), v);
        }
        serde_json::Value::Object(m)
    }

    /// Chains of every consumer that has modules (for the watcher and reloads).
    pub fn chains(&self) -> Vec<Arc<ChainHandle>> {
        self.consumers
            .iter()
            .filter_map(|c| c.chain.clone())
            .collect()
    }

    /// Wait for every partition task to stop (after shutdown was cancelled).
    pub async fn join(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in tasks {
            let _ = t.await;
        }
    }
}
