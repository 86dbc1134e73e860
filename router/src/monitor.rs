//! The monitor: every `monitor.interval` it reads, per consumer, the lag
//! (events and seconds), the DLQ depth and the parked accounts from Redis
//! (one Lua call per partition, on that partition's slot), sets the gauges,
//! and runs the SLA evaluation (`sla.rs`). Postgres sources get their own
//! loop (`source/postgres/monitor.rs`), started from here too.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::delivery::{ConsumerCtx, Delivery};
use crate::metrics;
use crate::sla::{Observed, Sla, Target};
use switchyard_config::Config;
use switchyard_store::log::{Log, LogError};

/// Read one consumer's lag, DLQ depth and parked accounts over every partition.
pub async fn observe_consumer(log: &Log, c: &ConsumerCtx) -> Result<(Observed, u64), LogError> {
    let mut conn = log.conn().await?;
    let mut seen = Observed::default();
    let mut parked = 0u64;
    let mut oldest_age_ms = 0i64;
    for p in 0..log.partitions() {
        let r = switchyard_store::lag::partition_lag(&mut conn, &c.keys, &c.name, p).await?;
        let (lag, oldest, dlq, pk, now) = (r.backlog, r.oldest_ms, r.dlq, r.parked, r.now_ms);
        seen.lag_events += lag;
        seen.dlq += dlq;
        parked += pk;
        if oldest > 0 {
            oldest_age_ms = oldest_age_ms.max(now - oldest);
        }
    }
    seen.lag_seconds = oldest_age_ms.max(0) as f64 / 1000.0;
    Ok((seen, parked))
}

/// Start the monitor loops (consumers + SLA, and one per Postgres source).
pub fn start(
    config: &Config,
    log: &Log,
    delivery: Arc<Delivery>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut sla = Sla::new(&config.alerts)?;
    // Every series exists from the start (an absent series is not a 0).
    for c in &delivery.consumers {
        set_gauges(&c.name, Observed::default(), 0);
        if let Some(s) = &c.cfg.sla {
            sla.init(&c.name, s);
        }
    }
    let interval = config.monitor.interval;
    let source_names: Vec<String> = config.sources.keys().cloned().collect();
    let log = log.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            for name in &source_names {
                let accepted = metrics::get()
                    .ingest_events
                    .get_or_create(&metrics::SourceStatus {
                        source: name.clone(),
                        status: "accepted".into(),
                    })
                    .get();
                crate::admin_api::history().record_source(name, accepted);
            }
            for c in &delivery.consumers {
                match observe_consumer(&log, c).await {
                    Ok((seen, parked)) => {
                        if failing {
                            tracing::info!("monitor: reading consumer lag works again");
                            failing = false;
                        }
                        set_gauges(&c.name, seen, parked);
                        crate::admin_api::history().record(
                            &c.name,
                            crate::admin_api::Sample {
                                at: chrono::Utc::now(),
                                mono: std::time::Instant::now(),
                                lag_events: seen.lag_events,
                                lag_seconds: seen.lag_seconds,
                                dlq: seen.dlq,
                                parked,
                                delivered: c
                                    .stats
                                    .delivered
                                    .load(std::sync::atomic::Ordering::Relaxed),
                                p99_ms: c.stats.p99_ms(Duration::from_secs(300)),
                            },
                        );
                        if let Some(s) = &c.cfg.sla {
                            sla.evaluate(
                                &Target {
                                    consumer: &c.name,
                                    sla: s,
                                    critical: c.cfg.critical,
                                },
                                seen,
                            );
                        }
                    }
                    Err(e) => {
                        metrics::get().monitor_errors.inc();
                        if !failing {
                            tracing::warn!(consumer = %c.name, error = %e, "monitor: cannot read consumer lag; gauges keep their last value");
                            failing = true;
                        }
                        break;
                    }
                }
            }
        }
    });
    for (name, pg) in config.postgres_sources() {
        switchyard_sources::postgres::monitor::spawn(
            name.clone(),
            pg.clone(),
            config.monitor.interval,
            config.monitor.cdc_stall_after,
            shutdown.clone(),
        )?;
    }
    Ok(())
}

fn set_gauges(consumer: &str, seen: Observed, parked: u64) {
    let m = metrics::get();
    let l = metrics::ConsumerLabel {
        consumer: consumer.to_string(),
    };
    m.consumer_lag_events
        .get_or_create(&l)
        .set(seen.lag_events as i64);
    m.consumer_lag_seconds
        .get_or_create(&l)
        .set(seen.lag_seconds);
    m.dlq_events.get_or_create(&l).set(seen.dlq as i64);
    m.parked_accounts.get_or_create(&l).set(parked as i64);
}
