//! Test module: `init` always refuses with "refused: <reason>", where the
//! reason is config `reason` (default "this module refuses every config").
use switchyard_guest::{transform, Config, Error, Event, Output};

fn init(cfg: &Config) -> Result<(), String> {
    Err(format!(
        "refused: {}",
        cfg.get_or("reason", "this module refuses every config")
    ))
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    Ok(vec![Output::event(ev)])
}
