//! Test module: one request whose body is the event id, with the content
//! type and headers the event's `data` asks for, unchecked:
//! `{"content_type": "application/x-mod", "headers": [["authorization", "Bearer m"], ["x-a", "1"]]}`
//! (`content_type` defaults to `text/plain`). Delivery tests use it to send
//! headers that clash with the consumer's configured ones, and header names
//! or values that are not valid HTTP.
use switchyard_guest::serde_json::Value;
use switchyard_guest::{transform, Error, Event, Output};

#[transform]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    let data = ev.data.clone().unwrap_or(Value::Null);
    let content_type = data
        .get("content_type")
        .and_then(Value::as_str)
        .unwrap_or("text/plain")
        .to_string();
    let mut out = Output::request(ev.id.clone(), content_type);
    if let Output::Request(r) = &mut out {
        // Raw, so a test can also send two headers of one name.
        for pair in data
            .get("headers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = |i: usize| {
                pair.get(i)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            r.headers.push((field(0), field(1)));
        }
    }
    Ok(vec![out])
}
