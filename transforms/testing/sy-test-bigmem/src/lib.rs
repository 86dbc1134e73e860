//! Test module: an ordinary pass-through transform whose linear memory is
//! declared with a 128 MiB minimum (see `build.rs`). Loading it under a
//! smaller memory cap must fail at instantiation, naming the cap.
use switchyard_guest::{transform, Error, Event, Output};

#[transform]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    Ok(vec![Output::event(ev)])
}
