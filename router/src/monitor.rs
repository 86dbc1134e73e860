//! The monitor: every `monitor.interval` it reads, per consumer, the lag
//! (events and seconds), the DLQ depth and the parked accounts from Redis
//! (one Lua call per partition, on that partition's slot), sets the gauges,
//! and runs the SLA evaluation (`sla.rs`). Postgres sources get their own
//! loop (`source/postgres/monitor.rs`), started from here too.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::delivery::{ConsumerCtx, Delivery};
use crate::log::{Log, LogError};
use crate::metrics;
use crate::sla::{Observed, Sla, Target};

/// `[monitor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// How often lag, DLQ depth and CDC slots are read (and SLAs evaluated).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A CDC slot that stays behind without advancing (or inactive, or
    /// unreadable) this long counts as stalled: `/readyz` fails.
    #[serde(default = "default_stall", with = "humantime_serde")]
    pub cdc_stall_after: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: default_interval(),
            cdc_stall_after: default_stall(),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_stall() -> Duration {
    Duration::from_secs(120)
}

impl MonitorConfig {
    pub fn validate(&self, errors: &mut Vec<ConfigError>) {
        if self.interval < Duration::from_millis(100) {
            errors.push(ConfigError::new(
                "monitor.interval",
                "must be at least 100ms",
            ));
        }
        if self.cdc_stall_after < self.interval {
            errors.push(ConfigError::new(
                "monitor.cdc_stall_after",
                "must be at least monitor.interval",
            ));
        }
    }
}

/// Per partition: `{lag_events, oldest_ms (0: none), dlq, parked, now_ms}`.
/// The group's `lag` (XINFO GROUPS, Redis 7) counts unread entries; when
/// Redis cannot tell (nil after deletions) entries after the last-delivered
/// id are counted, up to 100000. Pending entries (read, not acknowledged)
/// and deferred events (defer lists, up to 1000 accounts per partition) are
/// undelivered too. The oldest undelivered event is the oldest of: the
/// oldest pending entry, the first unread entry, each defer list's head.
const LAG_LUA: &str = r#"
local stream, dlq, parked, deferred = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, prefix = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lag, pending, oldest = 0, 0, 0
local function id_ms(id)
  local ms = string.match(id, '^(%d+)%-')
  return tonumber(ms) or 0
end
local function older(ms)
  if ms > 0 and (oldest == 0 or ms < oldest) then oldest = ms end
end
if redis.call('EXISTS', stream) == 1 then
  local found, last, glag = false, '0-0', false
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local m = {}
    for i = 1, #g, 2 do m[g[i]] = g[i + 1] end
    if m['name'] == group then
      found, last, glag, pending = true, m['last-delivered-id'], m['lag'], m['pending']
    end
  end
  if found then
    if glag then
      lag = glag
    else
      lag = #redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 100000)
    end
    if pending > 0 then
      local s = redis.call('XPENDING', stream, group)
      older(id_ms(s[2]))
    end
    if lag > 0 then
      local first = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', 1)
      if #first > 0 then older(id_ms(first[1][1])) end
    end
  end
end
local deferred_n = 0
for i, a in ipairs(redis.call('SRANDMEMBER', deferred, 1000)) do
  local key = prefix .. a
  deferred_n = deferred_n + redis.call('LLEN', key)
  local head = redis.call('LINDEX', key, 0)
  if head then older(id_ms(head)) end
end
return {lag + pending + deferred_n, oldest, redis.call('XLEN', dlq), redis.call('SCARD', parked), now_ms}
"#;

static LAG_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(LAG_LUA));

/// Read one consumer's lag, DLQ depth and parked accounts over every partition.
pub async fn observe_consumer(log: &Log, c: &ConsumerCtx) -> Result<(Observed, u64), LogError> {
    let mut conn = log.conn().await?;
    let mut seen = Observed::default();
    let mut parked = 0u64;
    let mut oldest_age_ms = 0i64;
    for p in 0..log.partitions() {
        let k = &c.keys;
        let defer_prefix = k.defer_list(p, "");
        let r: (u64, i64, u64, u64, i64) = LAG_SCRIPT
            .key(k.stream(p))
            .key(k.dlq(p))
            .key(k.parked_set(p))
            .key(k.deferred_set(p))
            .arg(&c.name)
            .arg(&defer_prefix)
            .invoke_async(&mut conn)
            .await
            .map_err(LogError::from)?;
        let (lag, oldest, dlq, pk, now) = r;
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
            for c in &delivery.consumers {
                match observe_consumer(&log, c).await {
                    Ok((seen, parked)) => {
                        if failing {
                            tracing::info!("monitor: reading consumer lag works again");
                            failing = false;
                        }
                        set_gauges(&c.name, seen, parked);
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
        crate::source::postgres::monitor::spawn(
            name.clone(),
            pg.clone(),
            config.monitor.clone(),
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
