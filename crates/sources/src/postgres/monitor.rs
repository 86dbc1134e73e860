//! Watches a Postgres source's replication slot every `monitor.interval`
//! over its own SQL connection (`pg_replication_slots`): lag in bytes and
//! seconds, whether a walsender is attached, the slot's `wal_status`, and
//! whether it is stalled (then `/readyz` fails with the reason).
//!
//! - **Lag in bytes**: `pg_current_wal_lsn() - confirmed_flush_lsn`.
//! - **Lag in seconds**: each poll records (time, current WAL position); the
//!   lag is the age of the oldest recorded position already beyond the
//!   slot's confirmed position, i.e. how long ago the server's WAL was where
//!   the source has confirmed (resolution: one interval; 0 when caught up).
//! - **Stalled**: for `monitor.cdc_stall_after`, the slot was behind without
//!   its confirmed position advancing, or had no walsender, or could not be
//!   read (Postgres down, slot missing); at once when `wal_status = lost`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{ConnParams, PostgresSourceConfig};
use switchyard_core::metrics::{self, SlotState, SourceLabel};

const STATES: [&str; 6] = [
    "reserved",
    "extended",
    "unreserved",
    "lost",
    "missing",
    "unknown",
];

/// One reading of the slot.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotReading {
    pub active: bool,
    pub wal_status: String,
    pub confirmed: Option<i64>,
    pub current: i64,
}

/// The pure part: readings in, gauges and stall verdict out.
pub struct SlotWatch {
    stall_after: Duration,
    samples: VecDeque<(Instant, i64)>,
    last_confirmed: Option<i64>,
    last_ok: Instant,
    pub lag_bytes: i64,
    pub lag_seconds: f64,
    pub active: bool,
    pub state: &'static str,
}

impl SlotWatch {
    pub fn new(stall_after: Duration, now: Instant) -> SlotWatch {
        SlotWatch {
            stall_after,
            samples: VecDeque::new(),
            last_confirmed: None,
            last_ok: now,
            lag_bytes: 0,
            lag_seconds: 0.0,
            active: false,
            state: "unknown",
        }
    }

    /// Feed one poll (`None`: the slot could not be read, `Some(None)`: no such slot).
    pub fn observe(&mut self, now: Instant, r: Option<Option<SlotReading>>) {
        let Some(Some(r)) = r else {
            self.active = false;
            self.state = if matches!(r, Some(None)) {
                "missing"
            } else {
                "unknown"
            };
            return;
        };
        self.active = r.active;
        self.state = STATES
            .iter()
            .find(|s| **s == r.wal_status)
            .copied()
            .unwrap_or("unknown");
        self.samples.push_back((now, r.current));
        while self.samples.len() > 2
            && now.duration_since(self.samples[1].0)
                > self.stall_after.max(Duration::from_secs(3600))
        {
            self.samples.pop_front();
        }
        let confirmed = r.confirmed.unwrap_or(0);
        self.lag_bytes = (r.current - confirmed).max(0);
        self.lag_seconds = if self.lag_bytes == 0 {
            0.0
        } else {
            self.samples
                .iter()
                .find(|(_, wal)| *wal > confirmed)
                .map(|(t, _)| now.duration_since(*t).as_secs_f64())
                .unwrap_or(0.0)
        };
        let advanced = self.last_confirmed.is_some_and(|c| confirmed > c);
        self.last_confirmed = Some(confirmed);
        if r.active && (advanced || self.lag_bytes == 0) {
            self.last_ok = now;
        }
    }

    /// Why the slot counts as stalled, if it does.
    pub fn stalled(&self, now: Instant) -> Option<String> {
        if self.state == "lost" {
            return Some("its WAL was removed (wal_status = lost): recreate the slot".into());
        }
        let quiet = now.duration_since(self.last_ok);
        (quiet > self.stall_after).then(|| {
            let what = match (self.state, self.active) {
                ("missing", _) => "the slot is missing".to_string(),
                ("unknown", _) => "the slot cannot be read".to_string(),
                (_, false) => "no walsender is attached to the slot".to_string(),
                _ => format!(
                    "the slot is {} bytes behind and has not advanced",
                    self.lag_bytes
                ),
            };
            format!("{what} for {}s", quiet.as_secs())
        })
    }
}

pub fn spawn(
    name: String,
    cfg: PostgresSourceConfig,
    interval: Duration,
    stall_after: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let path = format!("sources.{name}.url");
    let conn = ConnParams::from_url(&cfg.url).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let tls = match conn.tls.mode {
        super::tls::SslMode::Disable => None,
        _ => Some(conn.tls.client_config(&path)?),
    };
    tokio::spawn(async move {
        let mut watch = SlotWatch::new(stall_after, Instant::now());
        publish(&name, &watch, false);
        let mut client: Option<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
                client = None;
            }
            if client.is_none() {
                client = connect(&conn, tls.as_ref()).await.ok();
            }
            let reading = match &client {
                Some((c, _)) => match read_slot(c, &cfg.slot).await {
                    Ok(r) => Some(r),
                    Err(e) => {
                        if !warned {
                            tracing::warn!(source = %name, error = %super::catalog::pg_message(&e), "monitor: cannot read the replication slot");
                            warned = true;
                        }
                        client = None;
                        None
                    }
                },
                None => None,
            };
            if reading.is_none() {
                metrics::get().monitor_errors.inc();
            } else {
                warned = false;
            }
            let now = Instant::now();
            watch.observe(now, reading);
            let stalled = watch.stalled(now);
            publish(&name, &watch, stalled.is_some());
            switchyard_core::health::set(
                &format!("cdc:{name}"),
                stalled.map(|why| {
                    format!("CDC source `{name}` (slot {}) is stalled: {why}", cfg.slot)
                }),
            );
        }
        if let Some((_, task)) = client {
            task.abort();
        }
    });
    Ok(())
}

fn publish(name: &str, w: &SlotWatch, stalled: bool) {
    let m = metrics::get();
    let l = SourceLabel {
        source: name.to_string(),
    };
    m.cdc_lag_bytes.get_or_create(&l).set(w.lag_bytes);
    m.cdc_lag_seconds.get_or_create(&l).set(w.lag_seconds);
    m.cdc_slot_active.get_or_create(&l).set(w.active as i64);
    m.cdc_slot_stalled.get_or_create(&l).set(stalled as i64);
    for s in STATES {
        m.cdc_slot_state
            .get_or_create(&SlotState {
                source: name.to_string(),
                state: s.to_string(),
            })
            .set((s == w.state) as i64);
    }
}

async fn connect(
    conn: &ConnParams,
    tls: Option<&rustls::ClientConfig>,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let mut sql = conn.sql.clone();
    sql.application_name("switchyard-monitor");
    sql.connect_timeout(Duration::from_secs(5));
    match tls {
        None => {
            let (c, connection) = sql.connect(tokio_postgres::NoTls).await?;
            Ok((
                c,
                tokio::spawn(async move {
                    let _ = connection.await;
                }),
            ))
        }
        Some(cfg) => {
            let (c, connection) = sql
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(cfg.clone()))
                .await?;
            Ok((
                c,
                tokio::spawn(async move {
                    let _ = connection.await;
                }),
            ))
        }
    }
}

async fn read_slot(
    c: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<SlotReading>, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "SELECT active, coalesce(wal_status, 'unknown'), \
                    (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint, \
                    (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| SlotReading {
        active: r.get(0),
        wal_status: r.get(1),
        confirmed: r.get(2),
        current: r.get(3),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(active: bool, confirmed: i64, current: i64) -> Option<Option<SlotReading>> {
        Some(Some(SlotReading {
            active,
            wal_status: "reserved".into(),
            confirmed: Some(confirmed),
            current,
        }))
    }

    #[test]
    fn lag_seconds_is_the_age_of_the_first_wal_position_beyond_the_confirmed_one() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = SlotWatch::new(Duration::from_secs(60), t0);
        w.observe(t0, reading(true, 100, 100));
        assert_eq!((w.lag_bytes, w.lag_seconds), (0, 0.0));
        w.observe(t0 + s, reading(true, 100, 200));
        w.observe(t0 + 3 * s, reading(true, 150, 300));
        // WAL was at 200 (> 150) at t0+1s: 2 s behind.
        assert_eq!((w.lag_bytes, w.lag_seconds), (150, 2.0));
        w.observe(t0 + 4 * s, reading(true, 300, 300));
        assert_eq!((w.lag_bytes, w.lag_seconds), (0, 0.0));
    }

    #[test]
    fn a_slot_behind_that_does_not_advance_stalls_one_that_advances_does_not() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut w = SlotWatch::new(Duration::from_secs(10), t0);
        for i in 0..30 {
            w.observe(t0 + i * s, reading(true, 100 + i as i64, 1000));
        }
        assert_eq!(w.stalled(t0 + 30 * s), None, "advancing, though behind");
        for i in 30..50 {
            w.observe(t0 + i * s, reading(true, 500, 1000));
        }
        assert!(w.stalled(t0 + 50 * s).unwrap().contains("500 bytes behind"));
        // Caught up again.
        w.observe(t0 + 51 * s, reading(true, 1000, 1000));
        assert_eq!(w.stalled(t0 + 51 * s), None);
        // Unreadable (Postgres down) long enough.
        for i in 52..70 {
            w.observe(t0 + i * s, None);
        }
        assert!(w.stalled(t0 + 70 * s).unwrap().contains("cannot be read"));
    }
}
