//! The admin API: one set of JSON routes shared by the CLI, the console and
//! the MCP server (README, "Admin API"). Served on the `[admin]` listener
//! (`admin_routes.rs`) and under `/admin/` on the main listener; the token
//! is checked before a request gets here.
//!
//! | method | path | body / query | answer |
//! |---|---|---|---|
//! | GET | `/admin/status` | | [`status`] |
//! | POST | `/admin/reload` | | per consumer `ok`, `generation` or `error` (the runtime's) |
//! | GET | `/admin/consumers/{c}/dlq` | `?account=&since=&limit=` | `{"entries": [...]}` without event bodies |
//! | GET | `/admin/consumers/{c}/dlq/{id}` | | one entry with its event (DLQ id or event id) |
//! | POST | `/admin/consumers/{c}/dlq/replay` | `{"account"?, "since"?, "id"?}` | `{"replayed": n}` |
//! | POST | `/admin/consumers/{c}/dlq/drop` | `{"account"?, "since"?, "id"?}` | `{"dropped": n}` |
//! | POST | `/admin/consumers/{c}/rewind` | `{"to": "earliest" \| RFC 3339}` | `{"rewound_to": stream id}` |
//! | GET | `/admin/accounts/{a}/events` | `?limit=` | the account's newest events, newest first |
//!
//! Errors: `{"error": message, "field": name}` with 400 (a field), 404 (an
//! unknown consumer or entry) or 503 (Redis).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::delivery::Delivery;
use switchyard_config::{Config, SourceConfig};
use switchyard_store::admin::ConsumerAdmin;
use switchyard_store::log::Log;

/// How far back the console's chart and the delivery rate look.
pub const HISTORY: Duration = Duration::from_secs(3600);
/// Samples are kept at most this often (the monitor may run faster).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// One monitor reading of one consumer.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub mono: Instant,
    pub lag_events: u64,
    pub lag_seconds: f64,
    pub dlq: u64,
    pub parked: u64,
    pub delivered: u64,
    pub p99_ms: Option<f64>,
}

/// What the monitor read over the last hour, in memory (lost on restart).
#[derive(Default)]
pub struct History {
    consumers: Mutex<BTreeMap<String, VecDeque<Sample>>>,
    /// Per source: (time, events accepted so far).
    sources: Mutex<BTreeMap<String, VecDeque<(Instant, u64)>>>,
}

static SAMPLES: LazyLock<History> = LazyLock::new(History::default);

/// The process's history (written by the monitor).
pub fn history() -> &'static History {
    &SAMPLES
}

fn push<T: Copy>(q: &mut VecDeque<T>, v: T, at: impl Fn(&T) -> Instant) {
    // The newest sample is always current; older ones are kept SAMPLE_EVERY apart.
    if q.len() >= 2 {
        let prev = at(&q[q.len() - 2]);
        if at(&v).duration_since(prev) < SAMPLE_EVERY {
            q.pop_back();
        }
    }
    q.push_back(v);
    while q
        .front()
        .is_some_and(|f| at(&v).duration_since(at(f)) > HISTORY)
    {
        q.pop_front();
    }
}

impl History {
    pub fn record(&self, consumer: &str, s: Sample) {
        let mut m = self.consumers.lock().unwrap();
        push(m.entry(consumer.to_string()).or_default(), s, |s| s.mono);
    }

    pub fn record_source(&self, source: &str, accepted: u64) {
        let mut m = self.sources.lock().unwrap();
        push(
            m.entry(source.to_string()).or_default(),
            (Instant::now(), accepted),
            |s| s.0,
        );
    }

    /// A consumer's samples, oldest first.
    pub fn of(&self, consumer: &str) -> Vec<Sample> {
        self.consumers
            .lock()
            .unwrap()
            .get(consumer)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    fn source_rate(&self, source: &str) -> Option<f64> {
        let m = self.sources.lock().unwrap();
        rate(m.get(source)?.iter().map(|(t, n)| (*t, *n)))
    }
}

/// Events per second between the first sample within the last minute and the newest.
fn rate(samples: impl DoubleEndedIterator<Item = (Instant, u64)> + Clone) -> Option<f64> {
    let (t1, n1) = samples.clone().next_back()?;
    let (t0, n0) = samples
        .into_iter()
        .find(|(t, _)| t1.duration_since(*t) <= Duration::from_secs(60))?;
    let dt = t1.duration_since(t0).as_secs_f64();
    if dt <= 0.0 {
        return Some(0.0);
    }
    Some(n1.saturating_sub(n0) as f64 / dt)
}

/// The Redis half of a consumer's status (the same with or without a
/// running router): `ConsumerAdmin::status` plus lag in events and seconds.
pub async fn consumer_from_redis(log: &Log, name: &str) -> anyhow::Result<Value> {
    let mut admin = ConsumerAdmin::connect(log.clone(), name).await?;
    let mut v = admin.status().await?;
    let mut conn = log.conn().await?;
    let (mut lag_events, mut oldest_age_ms) = (0u64, 0i64);
    for p in 0..log.partitions() {
        let r = switchyard_store::lag::partition_lag(&mut conn, &admin.keys, name, p).await?;
        lag_events += r.backlog;
        if r.oldest_ms > 0 {
            oldest_age_ms = oldest_age_ms.max(r.now_ms - r.oldest_ms);
        }
    }
    v["lag_events"] = json!(lag_events);
    v["lag_seconds"] = json!(oldest_age_ms.max(0) as f64 / 1000.0);
    // Which instance delivers which partition (the leases in Redis).
    let mut owners: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut unowned = Vec::new();
    for p in 0..log.partitions() {
        match switchyard_store::lease::lease_state(&mut conn, &admin.keys, p).await? {
            Some(l) => owners.entry(l.owner).or_default().push(p),
            None => unowned.push(p),
        }
    }
    v["owners"] = json!(owners);
    v["unowned_partitions"] = json!(unowned);
    Ok(v)
}

/// The live instances sharing this Redis, with their last lease renewal
/// (heartbeat): `[{id, last_renewal, age_seconds}]`.
pub async fn instances(log: &Log, config: &Config) -> anyhow::Result<Value> {
    let mut conn = log.conn().await?;
    let ns = &log.keys().namespace;
    let list = switchyard_store::lease::instances(
        &mut conn,
        ns,
        config.coordination.lease_timeout.as_millis() as u64,
    )
    .await?;
    let now = Utc::now().timestamp_millis();
    Ok(json!(list
        .into_iter()
        .map(|i| json!({
            "id": i.id,
            "last_renewal": chrono::DateTime::<Utc>::from_timestamp_millis(i.last_heartbeat_ms)
                .map(|t| t.to_rfc3339()),
            "age_seconds": (now - i.last_heartbeat_ms).max(0) as f64 / 1000.0,
        }))
        .collect::<Vec<_>>()))
}

/// `running`: live figures are known (a router answered); otherwise the
/// state is read from Redis only and `failing` cannot be told.
pub fn state_of(v: &Value, last_error_age: Option<Duration>) -> &'static str {
    if last_error_age.is_some_and(|a| a < Duration::from_secs(60)) {
        "failing"
    } else if v["parked_accounts"].as_u64().unwrap_or(0) > 0 {
        "blocked"
    } else if v["lag_events"].as_u64().unwrap_or(0) > 0 {
        "behind"
    } else {
        "current"
    }
}

/// A consumer the running router does not run (the config names it, the
/// router's does not): read from Redis, live-only fields `null`.
pub async fn consumer_not_running(
    log: &Log,
    name: &str,
    c: &switchyard_config::consumer::ConsumerConfig,
) -> anyhow::Result<Value> {
    let mut v = consumer_from_redis(log, name).await?;
    v["state"] = json!(state_of(&v, None));
    v["delivery_rate"] = Value::Null;
    v["p99_latency_ms"] = Value::Null;
    v["last_error"] = Value::Null;
    v["modules"] = json!(c
        .modules
        .iter()
        .map(|m| m.path.display().to_string())
        .collect::<Vec<_>>());
    Ok(v)
}

/// Status read from Redis alone (no router runs): the same document as the
/// live one, with the live-only fields `null` and `router.running` false.
pub async fn status_from_redis(config: &Config, log: &Log) -> anyhow::Result<Value> {
    let mut consumers = serde_json::Map::new();
    for (name, c) in &config.consumers {
        consumers.insert(name.clone(), consumer_not_running(log, name, c).await?);
    }
    let health = match log.ping().await {
        Ok(()) => json!({"status": "router not running", "reasons": ["no router answered"]}),
        Err(e) => json!({"status": "not ready", "reasons": [format!("Redis is unreachable: {e}")]}),
    };
    Ok(json!({
        "router": {"running": false},
        "health": health,
        "instances": instances(log, config).await?,
        "consumers": consumers,
        "sources": with_source_leaders(log, config, sources(config, None)).await?,
    }))
}

fn sources(config: &Config, hist: Option<&History>) -> Value {
    let m = crate::metrics::get();
    let mut out = serde_json::Map::new();
    for (name, s) in &config.sources {
        let kind = match s {
            SourceConfig::Http(_) => "http",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
        };
        let mut v = json!({"type": kind, "rate": Value::Null, "lag_seconds": Value::Null, "lag_bytes": Value::Null});
        if let Some(h) = hist {
            let accepted = m
                .ingest_events
                .get_or_create(&crate::metrics::SourceStatus {
                    source: name.clone(),
                    status: "accepted".into(),
                })
                .get();
            v["accepted"] = json!(accepted);
            v["rate"] = json!(h.source_rate(name).unwrap_or(0.0));
            if kind == "postgres" || kind == "mysql" {
                let l = crate::metrics::SourceLabel {
                    source: name.clone(),
                };
                v["lag_seconds"] = json!(m.cdc_lag_seconds.get_or_create(&l).get());
                v["lag_bytes"] = json!(m.cdc_lag_bytes.get_or_create(&l).get());
            }
        }
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

/// Add each CDC source's leader (the instance reading it; `null`: none now).
async fn with_source_leaders(log: &Log, config: &Config, mut v: Value) -> anyhow::Result<Value> {
    let mut conn = log.conn().await?;
    for (name, s) in &config.sources {
        if matches!(s, SourceConfig::Http(_)) {
            continue;
        }
        let (key, _) = switchyard_store::lease::source_leader_keys(&log.keys().namespace, name);
        let l = switchyard_store::lease::lease_state_of(&mut conn, &key).await?;
        v[name]["leader"] = json!(l.map(|l| l.owner));
    }
    Ok(v)
}

/// What the admin API works with.
pub struct Api {
    pub log: Log,
    pub delivery: Arc<Delivery>,
    pub config: Arc<Config>,
}

/// A status and a JSON body.
pub type Answer = (StatusCode, Value);

fn bad(status: StatusCode, field: &str, message: impl std::fmt::Display) -> Answer {
    (
        status,
        json!({"error": message.to_string(), "field": field}),
    )
}

fn redis_err(e: anyhow::Error) -> Answer {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": format!("Redis: {e:#}")}),
    )
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

/// The body of replay and drop.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Only this account.
    #[serde(default)]
    pub account: Option<String>,
    /// Only entries dead-lettered at or after this RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
    /// One entry (DLQ id or event id): its account, from that entry on.
    #[serde(default)]
    pub id: Option<String>,
}

fn parse_since(s: Option<&str>) -> Result<Option<DateTime<Utc>>, Answer> {
    s.filter(|s| !s.is_empty())
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| {
                    bad(
                        StatusCode::BAD_REQUEST,
                        "since",
                        format!(
                            "`since` must be an RFC 3339 time (e.g. 2026-11-23T09:00:00Z): {e}"
                        ),
                    )
                })
        })
        .transpose()
}

fn parse_body<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        bad(
            StatusCode::BAD_REQUEST,
            &field,
            format!("invalid request body at `{field}`: {}", e.inner()),
        )
    })
}

/// A DLQ entry as the API shows it: the fields, the event's account, topic
/// and id, and the event itself only when asked for.
pub fn entry_json(e: &switchyard_store::consumer::DlqEntry, with_event: bool) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    let ms: i64 = e
        .dlq_id
        .split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    v["dead_lettered_at"] =
        json!(DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339()));
    v["age_seconds"] = json!(((Utc::now().timestamp_millis() - ms).max(0)) / 1000);
    if let Some(ev) = &e.event {
        v["topic"] = json!(ev.topic);
        v["event_id"] = json!(ev.id);
        v["account"] = json!(ev.account_id);
    }
    if !with_event {
        if let Some(o) = v.as_object_mut() {
            o.remove("event");
        }
        v["has_event"] = json!(e.event.is_some());
    }
    v
}

impl Api {
    fn consumer(&self, name: &str) -> Option<&Arc<crate::delivery::ConsumerCtx>> {
        self.delivery.consumers.iter().find(|c| c.name == name)
    }

    /// The status document (README, "Admin API").
    pub async fn status(&self) -> Answer {
        let live = self.delivery.status();
        let mut consumers = serde_json::Map::new();
        for c in &self.delivery.consumers {
            let mut v = match consumer_from_redis(&self.log, &c.name).await {
                Ok(v) => v,
                Err(e) => return redis_err(e),
            };
            let samples = history().of(&c.name);
            let last_error = c.stats.last_error();
            let age = last_error
                .as_ref()
                .and_then(|(_, t)| (Utc::now() - *t).to_std().ok());
            v["state"] = json!(state_of(&v, age));
            v["delivery_rate"] =
                json!(rate(samples.iter().map(|s| (s.mono, s.delivered))).unwrap_or(0.0));
            v["p99_latency_ms"] = json!(c.stats.p99_ms(Duration::from_secs(300)));
            v["last_error"] = match last_error {
                Some((reason, at)) => json!({"reason": reason, "at": at.to_rfc3339()}),
                None => Value::Null,
            };
            v["modules"] = json!(match &c.chain {
                Some(ch) => ch
                    .chain()
                    .modules
                    .iter()
                    .map(|m| format!("{}@{}", m.name, m.short_hash()))
                    .collect::<Vec<_>>(),
                None => Vec::new(),
            });
            // The live counters (delivered, retries, filtered, transforms…)
            // at the top level, as `/admin/status` always had them.
            if let (Some(o), Some(l)) = (v.as_object_mut(), live[&c.name].as_object()) {
                for (k, x) in l {
                    o.entry(k.clone()).or_insert_with(|| x.clone());
                }
            }
            consumers.insert(c.name.clone(), v);
        }
        let (ready, health) = crate::health::readyz(&self.log).await;
        let health = json!({
            "status": if ready == StatusCode::OK { "ok" } else { "degraded" },
            "reasons": health.get("reasons").cloned().unwrap_or(json!([])),
        });
        let instances = match instances(&self.log, &self.config).await {
            Ok(v) => v,
            Err(e) => return redis_err(e),
        };
        let srcs = match with_source_leaders(
            &self.log,
            &self.config,
            sources(&self.config, Some(history())),
        )
        .await
        {
            Ok(v) => v,
            Err(e) => return redis_err(e),
        };
        (
            StatusCode::OK,
            json!({
                "router": {
                    "running": true,
                    "version": env!("CARGO_PKG_VERSION"),
                    "pid": std::process::id(),
                    "instance": self.delivery.instance_id,
                    "owned_partitions": *self.delivery.ownership.owned.lock().unwrap(),
                },
                "health": health,
                "instances": instances,
                "consumers": consumers,
                "sources": srcs,
            }),
        )
    }

    /// Route one admin request (`path` may carry a `?query`). `None`: not an
    /// API route (the caller answers 404 or handles it, e.g. reload).
    pub async fn handle(&self, method: &Method, path: &str, body: &[u8]) -> Option<Answer> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let q = query_map(query);
        let segs: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        Some(match (method, segs.as_slice()) {
            (&Method::GET, ["admin", "status"]) => self.status().await,
            (m, ["admin", "consumers", c, rest @ ..]) => {
                if self.consumer(c).is_none() {
                    let known: Vec<&str> = self
                        .delivery
                        .consumers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    return Some(bad(
                        StatusCode::NOT_FOUND,
                        "consumer",
                        format!("no consumer `{c}` (known: {known:?})"),
                    ));
                }
                match (m, rest) {
                    (&Method::GET, ["dlq"]) => self.dlq_list(c, &q).await,
                    (&Method::POST, ["dlq", "replay"]) => self.dlq_change(c, body, true).await,
                    (&Method::POST, ["dlq", "drop"]) => self.dlq_change(c, body, false).await,
                    (&Method::GET, ["dlq", id]) => self.dlq_show(c, id).await,
                    (&Method::POST, ["rewind"]) => self.rewind(c, body).await,
                    _ => return None,
                }
            }
            (&Method::GET, ["admin", "accounts", a, "events"]) => {
                let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
                    None => 20,
                    Some(Ok(n)) if (1..=1000).contains(&n) => n,
                    Some(_) => {
                        return Some(bad(
                            StatusCode::BAD_REQUEST,
                            "limit",
                            "`limit` must be an integer from 1 to 1000",
                        ))
                    }
                };
                match switchyard_store::tail::recent_of_account(&self.log, a, limit, 10_000).await {
                    Ok(entries) => (
                        StatusCode::OK,
                        json!({"account": a, "events": entries.into_iter().filter_map(|e| {
                            let ev = e.event.ok()?;
                            Some(json!({"stream_id": e.stream_id, "partition": e.partition, "event": ev}))
                        }).collect::<Vec<_>>()}),
                    ),
                    Err(e) => redis_err(e.into()),
                }
            }
            (&Method::GET, ["admin", "accounts", a, "audit"]) => self.audit(a, &q).await,
            _ => return None,
        })
    }

    /// An account's audit records (consumers with a privacy policy record
    /// every outcome; ids and field names only), oldest first; `event=ID`
    /// keeps that event's.
    async fn audit(&self, account: &str, q: &BTreeMap<String, String>) -> Answer {
        use switchyard_store::privacy::{audit_key, read_audit};
        let since = match parse_since(q.get("since").map(String::as_str)) {
            Ok(s) => s,
            Err(a) => return a,
        };
        let key = audit_key(
            &self.log.keys().namespace,
            self.log.partition_of(account),
            account,
        );
        let mut conn = match self.log.conn().await {
            Ok(c) => c,
            Err(e) => return redis_err(e.into()),
        };
        let since_ms = since.map(|t| t.timestamp_millis().max(0) as u64);
        match read_audit(&mut conn, &key, since_ms).await {
            Ok(recs) => {
                let event = q.get("event").filter(|e| !e.is_empty());
                let recs: Vec<_> = recs
                    .into_iter()
                    .filter(|r| event.is_none_or(|e| &r.event == e))
                    .collect();
                (StatusCode::OK, json!({"account": account, "records": recs}))
            }
            Err(e) => redis_err(e.into()),
        }
    }

    async fn admin(&self, consumer: &str) -> Result<ConsumerAdmin, Answer> {
        ConsumerAdmin::connect(self.log.clone(), consumer)
            .await
            .map_err(redis_err)
    }

    async fn dlq_list(&self, consumer: &str, q: &BTreeMap<String, String>) -> Answer {
        let since = match parse_since(q.get("since").map(String::as_str)) {
            Ok(s) => s,
            Err(a) => return a,
        };
        let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
            None => 1000,
            Some(Ok(n)) if n > 0 => n,
            Some(_) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "limit",
                    "`limit` must be a positive integer",
                )
            }
        };
        let account = q
            .get("account")
            .map(String::as_str)
            .filter(|a| !a.is_empty());
        let mut admin = match self.admin(consumer).await {
            Ok(a) => a,
            Err(a) => return a,
        };
        match admin.dlq_list(account, since).await {
            Ok(entries) => {
                let total = entries.len();
                (
                    StatusCode::OK,
                    json!({
                        "consumer": consumer,
                        "total": total,
                        "entries": entries.iter().take(limit).map(|e| entry_json(e, false)).collect::<Vec<_>>(),
                    }),
                )
            }
            Err(e) => redis_err(e),
        }
    }

    async fn dlq_show(&self, consumer: &str, id: &str) -> Answer {
        let mut admin = match self.admin(consumer).await {
            Ok(a) => a,
            Err(a) => return a,
        };
        match admin.dlq_show(id).await {
            Ok(Some(e)) => (StatusCode::OK, entry_json(&e, true)),
            Ok(None) => bad(
                StatusCode::NOT_FOUND,
                "id",
                format!("no DLQ entry with id `{id}` for consumer {consumer}"),
            ),
            Err(e) => redis_err(e),
        }
    }

    async fn dlq_change(&self, consumer: &str, body: &[u8], replay: bool) -> Answer {
        let sel: Selection = match parse_body(body) {
            Ok(s) => s,
            Err(a) => return a,
        };
        let mut admin = match self.admin(consumer).await {
            Ok(a) => a,
            Err(a) => return a,
        };
        let (account, since) = match resolve(&mut admin, consumer, &sel).await {
            Ok(x) => x,
            Err(a) => return a,
        };
        let r = if replay {
            admin.dlq_replay(account.as_deref(), since).await
        } else {
            admin.dlq_drop(account.as_deref(), since).await
        };
        match r {
            Ok(n) => {
                tracing::info!(
                    consumer,
                    account = account.as_deref().unwrap_or("*"),
                    n,
                    replay,
                    "admin API: DLQ {}",
                    if replay { "replay" } else { "drop" }
                );
                (
                    StatusCode::OK,
                    json!({ if replay { "replayed" } else { "dropped" }: n }),
                )
            }
            Err(e) => redis_err(e),
        }
    }

    async fn rewind(&self, consumer: &str, body: &[u8]) -> Answer {
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Rewind {
            #[serde(default)]
            to: Option<String>,
        }
        let r: Rewind = match parse_body(body) {
            Ok(r) => r,
            Err(a) => return a,
        };
        let Some(to) = r.to else {
            return bad(
                StatusCode::BAD_REQUEST,
                "to",
                "`to` is required: `earliest` or an RFC 3339 time",
            );
        };
        let to = match switchyard_config::consumer::Start::parse(&to) {
            Ok(t) if t != switchyard_config::consumer::Start::Latest => t,
            Ok(_) => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "to",
                    "`to` takes `earliest` or an RFC 3339 time",
                )
            }
            Err(e) => return bad(StatusCode::BAD_REQUEST, "to", e),
        };
        let mut admin = match self.admin(consumer).await {
            Ok(a) => a,
            Err(a) => return a,
        };
        match admin.rewind(&to).await {
            Ok(()) => (
                StatusCode::OK,
                json!({"consumer": consumer, "rewound_to": to.stream_id()}),
            ),
            Err(e) => redis_err(e),
        }
    }
}

/// The account and time a replay or drop applies to: `id` names one entry
/// (its account, from its time on), otherwise `account` and `since`.
pub async fn resolve(
    admin: &mut ConsumerAdmin,
    consumer: &str,
    sel: &Selection,
) -> Result<(Option<String>, Option<DateTime<Utc>>), Answer> {
    let since = parse_since(sel.since.as_deref())?;
    match &sel.id {
        None => Ok((sel.account.clone().filter(|a| !a.is_empty()), since)),
        Some(id) => {
            let e = admin
                .dlq_show(id)
                .await
                .map_err(redis_err)?
                .ok_or_else(|| {
                    bad(
                        StatusCode::NOT_FOUND,
                        "id",
                        format!("no DLQ entry with id `{id}` for consumer {consumer}"),
                    )
                })?;
            let account = e
                .fields
                .get("account")
                .filter(|a| !a.is_empty())
                .cloned()
                .ok_or_else(|| {
                    bad(
                        StatusCode::BAD_REQUEST,
                        "id",
                        "this entry has no account (its event does not decode): drop it by account-less selection or inspect it",
                    )
                })?;
            let ms: i64 = e
                .dlq_id
                .split('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Ok((Some(account), DateTime::<Utc>::from_timestamp_millis(ms)))
        }
    }
}
