//! Test module: passes every event through unchanged except
//! `attributes["calls"]` = number of `transform` calls on this instance
//! (1 for the first event). Shows whether the host reused or replaced an
//! instance.
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard_guest::{transform, Error, Event, Output};

static CALLS: AtomicU64 = AtomicU64::new(0);

#[transform]
fn transform(mut ev: Event) -> Result<Vec<Output>, Error> {
    let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    ev.attributes.insert("calls".into(), n.to_string());
    Ok(vec![Output::event(ev)])
}
