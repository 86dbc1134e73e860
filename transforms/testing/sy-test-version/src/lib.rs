//! Test module: returns one request whose body is config `version`
//! (`text/plain`; empty if unset) and with header `x-module-version` set to
//! the same value. Hot-reload tests use it to see which module version
//! transformed an event.
use switchyard_guest::{transform, Config, Error, Event, Output};

#[transform]
fn transform(ev: Event, cfg: &Config) -> Result<Vec<Output>, Error> {
    let version = cfg.get_or("version", "");
    Ok(vec![Output::request(version, "text/plain")
        .header("x-module-version", version)
        .header("x-event-id", ev.id)])
}
