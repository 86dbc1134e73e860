//! Many instances, one config: which (consumer, partition) this instance
//! delivers. Every `renew_interval` the coordinator
//!
//! 1. records this instance's heartbeat and reads the live instances
//!    (`switchyard_store::lease::heartbeat`);
//! 2. renews every lease it holds; a lease another instance acquired since
//!    (its fencing token is no longer current) stops that partition at once;
//! 3. rebalances: slot `i` of the consumers × partitions (in config order)
//!    belongs to live instance `i mod n` (sorted by id). A partition this
//!    instance should no longer own stops gracefully (in-flight deliveries
//!    finish and are recorded, the lease is renewed meanwhile) and its lease
//!    is released at once; a partition it should own is acquired when free
//!    and started (its pending entries are taken over under the lease).
//!
//! On shutdown every partition stops gracefully, each lease is released as
//! its partition finishes, and the instance leaves the membership, so the
//! others take over on their next tick instead of after the lease timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{partition, ConsumerCtx};
use switchyard_config::coordination::CoordinationConfig;
use switchyard_store::lease;
use switchyard_store::log::Log;

/// This instance's hold on one (consumer, partition).
pub struct Lease {
    pub token: u64,
    /// Until when the lease is surely still ours (monotonic clock, which keeps
    /// running while the process is stopped): the last successful renewal's
    /// start + the lease timeout. Redis expires the lease no earlier.
    valid_until: Mutex<Instant>,
    /// Fired when another instance holds the partition now (a renewal or a
    /// state transition found the token superseded).
    pub lost: CancellationToken,
}

impl Lease {
    fn new(token: u64, valid_until: Instant) -> Lease {
        Lease {
            token,
            valid_until: Mutex::new(valid_until),
            lost: CancellationToken::new(),
        }
    }

    /// Surely still ours right now: a send may start.
    pub fn valid(&self) -> bool {
        !self.lost.is_cancelled() && Instant::now() < *self.valid_until.lock().unwrap()
    }

    fn extend(&self, until: Instant) {
        let mut v = self.valid_until.lock().unwrap();
        if until > *v {
            *v = until;
        }
    }

    /// Wait until the lease is surely ours (a renewal may be late while Redis
    /// is slow or unreachable). `false`: lost, or `cancel` fired.
    pub async fn wait_valid(&self, cancel: &CancellationToken) -> bool {
        loop {
            if self.valid() {
                return true;
            }
            if self.lost.is_cancelled() || cancel.is_cancelled() {
                return false;
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.lost.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

/// What the coordinator shows to `status` and the metrics.
#[derive(Default)]
pub struct Ownership {
    /// Per consumer, the partitions this instance delivers now.
    pub owned: Mutex<BTreeMap<String, BTreeSet<u32>>>,
    /// Leases lost to another instance (renewal or a fenced write).
    pub lost_total: std::sync::atomic::AtomicU64,
    /// Leases acquired.
    pub acquired_total: std::sync::atomic::AtomicU64,
    /// Live instances at the last heartbeat.
    pub live_instances: std::sync::atomic::AtomicU64,
}

struct Held {
    lease: Arc<Lease>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Stopping (rebalance or shutdown): release the lease when the task ends.
    leaving: bool,
}

/// The default instance id: `<host>-<pid>-<random>`.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".into());
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    let rand = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{}-{}-{}",
        if host.is_empty() { "host" } else { &host },
        std::process::id(),
        &rand[rand.len() - 6..]
    )
}

pub(super) async fn run(
    id: String,
    consumers: Vec<Arc<ConsumerCtx>>,
    log: Log,
    cfg: CoordinationConfig,
    ownership: Arc<Ownership>,
    shutdown: CancellationToken,
) {
    let ttl = cfg.lease_timeout;
    let ttl_ms = ttl.as_millis() as u64;
    let ns = log.keys().namespace.clone();
    let slots: Vec<(usize, u32)> = consumers
        .iter()
        .enumerate()
        .flat_map(|(c, _)| (0..log.partitions()).map(move |p| (c, p)))
        .collect();
    let mut held: HashMap<(usize, u32), Held> = HashMap::new();
    let mut last_renewal = Instant::now();
    let mut tick = tokio::time::interval(cfg.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(instance = %id, lease_timeout = ?ttl, renew_interval = ?cfg.renew_interval, "coordinating partitions with other instances");
    loop {
        let stopping = shutdown.is_cancelled();
        if stopping && held.is_empty() {
            break;
        }
        if stopping {
            // Draining: look at the partitions often, renew as usual.
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => {}
            }
        }
        let mut conn = match log.conn().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "coordinator: Redis unreachable; leases are not renewed");
                if stopping {
                    // The leases expire by themselves; do not wait for Redis to stop.
                    held.retain(|_, h| !h.task.is_finished());
                }
                continue;
            }
        };
        let t0 = Instant::now();

        // 1. Membership.
        let live = if stopping {
            None
        } else {
            match lease::heartbeat(&mut conn, &ns, &id, ttl_ms, false).await {
                Ok((live, _)) => Some(live),
                Err(e) => {
                    tracing::warn!(error = %e, "coordinator: heartbeat failed");
                    None
                }
            }
        };

        // 2. Renew what is held (all at once; one slot each).
        let renew_now = !stopping || last_renewal.elapsed() >= cfg.renew_interval;
        if renew_now {
            last_renewal = t0;
        }
        let renewals = held.iter().filter(|_| renew_now).map(|(&(c, p), h)| {
            let mut conn = conn.clone();
            let keys = consumers[c].keys.clone();
            let (id, token) = (id.clone(), h.lease.token);
            async move {
                (
                    (c, p),
                    lease::renew(&mut conn, &keys, p, &id, token, ttl_ms).await,
                )
            }
        });
        for ((c, p), r) in futures_util::future::join_all(renewals).await {
            let h = held.get_mut(&(c, p)).expect("held");
            match r {
                Ok(true) => h.lease.extend(t0 + ttl),
                Ok(false) => {
                    if !h.lease.lost.is_cancelled() {
                        tracing::warn!(consumer = %consumers[c].name, partition = p, "lease taken over by another instance; stopping the partition");
                    }
                    h.lease.lost.cancel();
                    h.stop.cancel();
                }
                Err(e) => {
                    tracing::warn!(consumer = %consumers[c].name, partition = p, error = %e, "lease renewal failed; sends pause once the lease may have expired")
                }
            }
        }

        // 3. Finished partitions: fenced, or stopped for a rebalance / shutdown.
        let done: Vec<(usize, u32)> = held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            let h = held.remove(&k).expect("held");
            if h.lease.lost.is_cancelled() {
                ownership
                    .lost_total
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                if let Err(e) =
                    lease::release(&mut conn, &consumers[k.0].keys, k.1, h.lease.token).await
                {
                    tracing::warn!(consumer = %consumers[k.0].name, partition = k.1, error = %e, "cannot release a lease; it expires by itself");
                }
                if h.leaving {
                    tracing::info!(consumer = %consumers[k.0].name, partition = k.1, "partition handed over");
                }
            }
        }

        if stopping {
            for h in held.values_mut() {
                h.leaving = true;
            }
        } else if let Some(live) = live {
            ownership
                .live_instances
                .store(live.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let ids: Vec<String> = live.into_iter().map(|i| i.id).collect();
            // 4. Rebalance.
            for (i, &(c, p)) in slots.iter().enumerate() {
                let mine = lease::assigned(i, &ids) == Some(id.as_str());
                match held.get_mut(&(c, p)) {
                    Some(h) if !mine && !h.leaving => {
                        tracing::info!(consumer = %consumers[c].name, partition = p, "another instance's share now; handing the partition over");
                        h.leaving = true;
                        h.stop.cancel();
                    }
                    Some(_) => {}
                    None if mine => {
                        match lease::acquire(&mut conn, &consumers[c].keys, p, &id, ttl_ms).await {
                            Ok(Some(token)) => {
                                let lease = Arc::new(Lease::new(token, t0 + ttl));
                                let stop = shutdown.child_token();
                                let task = tokio::spawn(partition::run(
                                    consumers[c].clone(),
                                    p,
                                    log.clone(),
                                    stop.clone(),
                                    lease.clone(),
                                ));
                                tracing::info!(consumer = %consumers[c].name, partition = p, token, "lease acquired; partition started");
                                ownership
                                    .acquired_total
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                held.insert(
                                    (c, p),
                                    Held {
                                        lease,
                                        stop,
                                        task,
                                        leaving: false,
                                    },
                                );
                            }
                            Ok(None) => {} // still held by its previous owner
                            Err(e) => {
                                tracing::warn!(consumer = %consumers[c].name, partition = p, error = %e, "cannot acquire a lease")
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        let mut owned: BTreeMap<String, BTreeSet<u32>> = consumers
            .iter()
            .map(|c| (c.name.clone(), BTreeSet::new()))
            .collect();
        for ((c, p), h) in &held {
            if !h.leaving && !h.lease.lost.is_cancelled() {
                owned
                    .get_mut(&consumers[*c].name)
                    .expect("every consumer")
                    .insert(*p);
            }
        }
        *ownership.owned.lock().unwrap() = owned;
    }
    if let Ok(mut conn) = log.conn().await {
        let _ = lease::heartbeat(&mut conn, &ns, &id, ttl_ms, true).await;
    }
    ownership.owned.lock().unwrap().clear();
    tracing::info!(instance = %id, "every partition released");
}
