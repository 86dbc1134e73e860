//! Test module: passes every event through unchanged except
//! `attributes["calls"]` = number of `transform` calls on this instance
//! (1 for the first event). Shows whether the host reused or replaced an
//! instance. With config `topic`, the event it emits gets that topic (the
//! host must refuse one that breaks the topic rule).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use switchyard_guest::{transform, Config, Error, Event, Output};

static CALLS: AtomicU64 = AtomicU64::new(0);
static TOPIC: OnceLock<Option<String>> = OnceLock::new();

fn init(cfg: &Config) -> Result<(), String> {
    let _ = TOPIC.set(cfg.get("topic").map(str::to_string));
    Ok(())
}

#[transform(init = init)]
fn transform(mut ev: Event) -> Result<Vec<Output>, Error> {
    let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    ev.attributes.insert("calls".into(), n.to_string());
    if let Some(Some(t)) = TOPIC.get() {
        ev.topic = t.clone();
    }
    Ok(vec![Output::event(ev)])
}
