//! Test module for contract 0.2's `kv` and `emit`: counts the events of each
//! account in `kv` key `count`, emits one `<emit_topic>` event (data
//! `{"first": <event id>}`) on an account's first event, and sends a
//! `text/plain` request whose body is the count after this event. With
//! config `drop = true` it returns no outputs (filtered) instead.
//! `bad_topic = <topic>` makes it emit to that topic (to test refusals).
use switchyard_guest::{emit, json, kv, transform, Config, Error, Event, Output};

#[transform]
fn transform(ev: Event, cfg: &Config) -> Result<Vec<Output>, Error> {
    let n: u64 = kv::get_json("count")?.unwrap_or(0) + 1;
    kv::set_json("count", &n, 0)?;
    if n == 1 {
        let topic = cfg.get_or("emit_topic", "customer.parent.first_seen");
        emit::event(topic, &ev.account_id)
            .data(json!({ "first": ev.id }))
            .attribute("banner", "test")
            .send()?;
    }
    if let Some(t) = cfg.get("bad_topic") {
        emit::event(t, &ev.account_id).send()?;
    }
    if cfg.get("drop") == Some("true") {
        return Ok(vec![]);
    }
    Ok(vec![
        Output::request(n.to_string(), "text/plain").header("x-count", n.to_string())
    ])
}
