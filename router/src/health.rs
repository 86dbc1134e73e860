//! Readiness: `/readyz` (on the main and the admin listener) answers 200
//! only when Redis answers a PING and no component has reported a reason
//! not to be ready. Components report through [`set`]: the CDC monitor (a
//! stalled replication slot), the SLA evaluator (a `critical` consumer in
//! breach). `/healthz` only says the process lives and never looks here.

use std::collections::BTreeMap;
use std::sync::Mutex;

use http::StatusCode;
use serde_json::{json, Value};

use crate::log::Log;

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

/// The `/readyz` answer: status and JSON body (`reasons` when not ready).
pub async fn readyz(log: &Log) -> (StatusCode, Value) {
    let mut reasons = Vec::new();
    if let Err(e) = log.ping().await {
        reasons.push(format!("Redis is unreachable: {e}"));
    }
    reasons.extend(self::reasons());
    if reasons.is_empty() {
        (StatusCode::OK, json!({"status": "ready"}))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not ready", "error": reasons.join("; "), "reasons": reasons}),
        )
    }
}
