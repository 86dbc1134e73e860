//! W3C trace context (`traceparent`) for events, and the `tracing` spans
//! that follow an event through the router.
//!
//! - **Ingest** keeps a valid `traceparent` header in the event's `trace`
//!   field or, without one, starts a trace there ([`new_traceparent`]).
//! - **CDC** derives it from the commit ([`from_commit`]): the same change
//!   read twice has the same trace, one trace per transaction.
//! - **Delivery** sends `traceparent` on every request: the event's trace id
//!   and flags with a new span id ([`child`]); a module that sets the header
//!   itself wins.
//!
//! Spans (all at debug level, so they cost nothing at the default level):
//! `ingest{source, trace_id}` around a request, `event{id, trace_id, partition}`
//! per appended event, `log_append{events}` around the Redis write,
//! `deliver{consumer, partition, event, trace_id}` around an event's delivery
//! and `transform{consumer}` around its module chain. OTLP export is not
//! built in: the spans go to the log (JSON with `SWITCHYARD_LOG_FORMAT=json`).

use sha2::{Digest, Sha256};

use crate::event::Event;
use crate::outbound::OutRequest;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut b = [0u8; N];
        for x in &mut b {
            *x = fastrand::u8(..);
        }
        if b.iter().any(|x| *x != 0) {
            return b;
        }
    }
}

/// A new sampled trace: `00-<random trace id>-<random span id>-01`.
pub fn new_traceparent() -> String {
    format!(
        "00-{}-{}-01",
        hex(&random_nonzero::<16>()),
        hex(&random_nonzero::<8>())
    )
}

/// The trace of a CDC change: trace id from the commit id (one trace per
/// transaction), span id from the commit id and the change's sequence.
pub fn from_commit(commit_id: &str, seq: u64) -> String {
    let t = Sha256::digest(commit_id.as_bytes());
    let mut s = Sha256::new();
    s.update(commit_id.as_bytes());
    s.update(seq.to_be_bytes());
    let s = s.finalize();
    let mut trace = [0u8; 16];
    trace.copy_from_slice(&t[..16]);
    let mut span = [0u8; 8];
    span.copy_from_slice(&s[..8]);
    // All-zero ids are invalid; a hash has them with probability 2^-64.
    if trace.iter().all(|b| *b == 0) {
        trace[15] = 1;
    }
    if span.iter().all(|b| *b == 0) {
        span[7] = 1;
    }
    format!("00-{}-{}-01", hex(&trace), hex(&span))
}

/// The trace id of a traceparent (`""` when absent).
pub fn trace_id(tp: Option<&str>) -> &str {
    tp.and_then(|t| t.split('-').nth(1)).unwrap_or("")
}

/// A child of `parent` (same trace id and flags, new span id); a new trace
/// when `parent` is absent or invalid.
pub fn child(parent: Option<&str>) -> String {
    match parent.filter(|p| crate::event::valid_traceparent(p)) {
        Some(p) => {
            let parts: Vec<&str> = p.split('-').collect();
            format!(
                "00-{}-{}-{}",
                parts[1],
                hex(&random_nonzero::<8>()),
                parts[3]
            )
        }
        None => new_traceparent(),
    }
}

/// Add a `traceparent` (a child of the event's trace) to each request that
/// has none.
pub fn inject(requests: &mut [OutRequest], ev: &Event) {
    for r in requests {
        if !r
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
        {
            r.headers
                .push(("traceparent".into(), child(ev.trace.as_deref())));
        }
    }
}

/// The span of one event's delivery to one consumer.
pub fn delivery_span(consumer: &str, partition: u32, ev: &Event) -> tracing::Span {
    tracing::debug_span!("deliver", consumer, partition, event = %ev.id, trace_id = trace_id(ev.trace.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::valid_traceparent;

    #[test]
    fn generated_and_derived_traceparents_are_valid() {
        let a = new_traceparent();
        assert!(valid_traceparent(&a), "{a}");
        assert_ne!(a, new_traceparent());
        let c = from_commit("sy_crm/0/16B3748", 3);
        assert!(valid_traceparent(&c), "{c}");
        assert_eq!(c, from_commit("sy_crm/0/16B3748", 3), "deterministic");
        assert_eq!(
            trace_id(Some(&c)),
            trace_id(Some(&from_commit("sy_crm/0/16B3748", 4))),
            "one trace per transaction"
        );
        assert_ne!(c, from_commit("sy_crm/0/16B3748", 4));
    }

    #[test]
    fn a_child_keeps_trace_id_and_flags_with_a_new_span() {
        let p = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let c = child(Some(p));
        assert!(valid_traceparent(&c));
        assert_eq!(trace_id(Some(&c)), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(c.ends_with("-00"));
        assert_ne!(c.split('-').nth(2), Some("00f067aa0ba902b7"));
        assert!(valid_traceparent(&child(None)));
        assert!(valid_traceparent(&child(Some("garbage"))));
    }
}
