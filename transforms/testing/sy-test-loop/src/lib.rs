//! Test module: `transform` never returns (for the host's fuel/epoch deadline).
use switchyard_guest::{transform, Error, Event, Output};

#[transform]
fn transform(_ev: Event) -> Result<Vec<Output>, Error> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
