//! Test module: `transform` panics (a wasm trap: panic = abort on wasm32-wasip2).
use switchyard_guest::{transform, Error, Event, Output};

#[transform]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    panic!("sy-test-trap: deliberate panic on event {}", ev.id)
}
