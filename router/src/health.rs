//! Readiness: `/readyz` (on the main and the admin listener) answers 200
//! only when Redis answers a PING and no component has reported a reason
//! not to be ready. Components report through [`set`]: the CDC monitor (a
//! stalled replication slot), the SLA evaluator (a `critical` consumer in
//! breach). `/healthz` only says the process lives and never looks here.

use http::StatusCode;
use serde_json::{json, Value};

pub use switchyard_core::health::{reasons, set};
use switchyard_store::log::Log;

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
