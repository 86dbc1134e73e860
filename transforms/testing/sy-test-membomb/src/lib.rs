//! Test module: `transform` allocates (and touches) memory without bound,
//! 1 MiB at a time, until the host's memory limit stops it.
use switchyard_guest::{transform, Error, Event, Output};

#[transform]
fn transform(_ev: Event) -> Result<Vec<Output>, Error> {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
        std::hint::black_box(&hoard);
    }
}
