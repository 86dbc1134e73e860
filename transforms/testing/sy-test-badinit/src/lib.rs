//! Test module: `init` misbehaves as config `mode` says, so the host's load
//! path (instantiate + `init`, under the per-call deadline) can be tested:
//! `loop` never returns, `trap` panics (a trap), `ok` accepts the config
//! (the control case: then events pass through unchanged).
use switchyard_guest::{transform, Config, Error, Event, Output};

fn init(cfg: &Config) -> Result<(), String> {
    match cfg.get_or("mode", "loop") {
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "trap" => panic!("sy-test-badinit: deliberate panic in init"),
        "ok" => Ok(()),
        other => Err(format!("unknown mode `{other}` (loop, trap or ok)")),
    }
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    Ok(vec![Output::event(ev)])
}
