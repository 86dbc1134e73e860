//! Readiness reasons: components report why the router is not ready
//! through [`set`] (the CDC monitor: a stalled replication slot; the SLA
//! evaluator: a `critical` consumer in breach). The router's `/readyz`
//! (`router/src/health.rs`) adds its Redis PING and answers from [`reasons`].

use std::collections::BTreeMap;
use std::sync::Mutex;

static REASONS: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// Record (`Some(reason)`) or clear (`None`) why component `key` makes the
/// router not ready. Keys: `cdc:<source>`, `sla:<consumer>`.
pub fn set(key: &str, reason: Option<String>) {
    let mut r = REASONS.lock().unwrap();
    match reason {
        Some(why) => {
            r.insert(key.to_string(), why);
        }
        None => {
            r.remove(key);
        }
    }
}

/// Every current reason, sorted by key.
pub fn reasons() -> Vec<String> {
    REASONS.lock().unwrap().values().cloned().collect()
}
