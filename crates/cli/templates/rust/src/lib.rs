//! {{name}}: a Switchyard transform module.
//!
//! Turns each event whose topic matches `topics` (config, comma-separated
//! globs; default `*`) into one JSON request for the consumer's endpoint:
//! `POST {{path}}` with the account, the topic and the fields that changed.
//! Every other event is dropped (zero outputs). Edit `transform` below.
use switchyard_guest::{glob_match, json, transform, Config, ConfigError, Error, Event, Output, State};

struct Settings {
    topics: Vec<String>,
}

static SETTINGS: State<Settings> = State::new();

/// Runs once per instance, before the first event: an error refuses the config.
fn init(cfg: &Config) -> Result<(), ConfigError> {
    let mut topics = cfg.list("topics");
    if topics.is_empty() {
        topics.push("*".to_string());
    }
    SETTINGS.set(Settings { topics });
    Ok(())
}

/// The request body for one event, or `None` when the event is not for us.
pub fn body(ev: &Event, topics: &[String]) -> Option<serde_json::Value> {
    if !topics.iter().any(|g| glob_match(g, &ev.topic)) {
        return None;
    }
    let after = ev.after.as_ref().or(ev.data.as_ref());
    let changed: serde_json::Map<String, serde_json::Value> = ev
        .changed
        .iter()
        .filter_map(|f| Some((f.clone(), after?.get(f)?.clone())))
        .collect();
    Some(json!({
        "account": ev.account_id,
        "event": ev.topic,
        "changed": changed,
    }))
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    match body(&ev, &SETTINGS.get().topics) {
        Some(b) => Ok(vec![Output::json(&b)?.method("POST").path("{{path}}")]),
        None => Ok(vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event::from_json(include_str!("../sample-event.json")).unwrap()
    }

    #[test]
    fn maps_the_changed_fields() {
        let b = body(&sample(), &["customer.*".to_string()]).expect("matches");
        assert_eq!(b["account"], "acct-1001");
        assert_eq!(b["changed"]["email"], "ada@example.com");
        assert!(b["changed"].get("first_name").is_none(), "unchanged fields stay out");
    }

    #[test]
    fn drops_other_topics() {
        assert!(body(&sample(), &["order.*".to_string()]).is_none());
    }
}
