//! The scrape side of the metrics: the registry of this process's families
//! (defined in `switchyard_core::metrics`) plus the families collected at
//! scrape time from counters the router keeps anyway ([`DeliveryCollector`]).

pub use switchyard_core::metrics::*;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::delivery::Delivery;

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
        "cdc_schema_changes",
        "Schema changes a CDC source detected on its tables, by change (add_column, drop_column, rename_column, type_change, table_added, table_dropped)",
        m.cdc_schema_changes.clone(),
    );
    r.register(
        "cdc_quarantined",
        "Records a CDC source quarantined instead of writing by kind (invalid_topic, oversized, undecodable)",
        m.cdc_quarantined.clone(),
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
        // Many instances: what this instance owns and how its leases fare.
        let own = &self.0.ownership;
        let owned = own.owned.lock().unwrap().clone();
        gauge_family(
            &mut encoder,
            "partitions_owned",
            "Partitions of the consumer this instance delivers now (it holds their leases)",
            consumers.iter().map(|c| {
                (
                    vec![("consumer", c.name.clone())],
                    owned.get(&c.name).map(|s| s.len()).unwrap_or(0) as i64,
                )
            }),
        )?;
        gauge_family(
            &mut encoder,
            "instances_live",
            "Router instances sharing this Redis that renewed their membership within the lease timeout (as of this instance's last renewal)",
            [(Vec::new(), load(&own.live_instances) as i64)],
        )?;
        counter_family(
            &mut encoder,
            "leases_acquired",
            "Partition leases this instance acquired",
            [(Vec::new(), load(&own.acquired_total))],
        )?;
        counter_family(
            &mut encoder,
            "leases_lost",
            "Partition leases this instance lost to another instance (found at renewal or by a fenced write)",
            [(Vec::new(), load(&own.lost_total))],
        )?;
        counter_family(
            &mut encoder,
            "delivery_events",
            "Events per consumer by outcome: delivered, duplicate_skipped (already acknowledged), dead_lettered, parked, deferred (set aside in Redis), filtered (topics or a module)",
            outcomes,
        )?;
        counter_family(
            &mut encoder,
            "policy_filtered",
            "Events the privacy policy stage filtered, per consumer and rule (consent:<purpose>, deleted): acknowledged and audited, never dead-lettered",
            consumers.iter().flat_map(|c| {
                c.stats
                    .filtered_by_rule()
                    .into_iter()
                    .filter(|(rule, _)| rule.starts_with("consent:") || rule == "deleted")
                    .map(|(rule, n)| {
                        (
                            vec![("consumer", c.name.clone()), ("rule", rule)],
                            n,
                        )
                    })
                    .collect::<Vec<_>>()
            }),
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
        let module_rows = |f: &dyn Fn(&switchyard_wasm_host::ModuleStatus) -> u64| {
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
    use std::time::Duration;

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
