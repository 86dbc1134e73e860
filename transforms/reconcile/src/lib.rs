//! `reconcile`: cross-banner reconciliation as an internal consumer
//! (contract 0.2 `kv` + `emit`). See README.md.
//!
//! Two steps, because state is scoped to the account of the event being
//! transformed:
//!
//! 1. `customer.<banner>.<change>` (any banner but `parent`): the identity
//!    (by default the SHA-256 of the normalised email, from `data` or
//!    `after`) is computed and the change is re-emitted as
//!    `reconcile.identity.<change>` with **the identity as account id**, so
//!    every banner's events of one person meet in one account.
//! 2. `reconcile.identity.<change>`: the identity's banners (banner →
//!    account id) live in `kv` key `banners`. When a banner joins and the
//!    identity is then in two or more, `customer.parent.cross_banner_merged`
//!    is emitted (data: identity and the banner account ids). Every later
//!    change of a merged identity is mirrored to `customer.parent.<change>`.
//!
//! It never sends a request: every event ends filtered (by this module),
//! which commits its state and emits (once per event id).

use std::collections::BTreeMap;

use customer::hash;
use switchyard_guest::{
    emit, json, kv, log, transform, Config, ConfigError, Error, Event, Output, State, Value,
};

struct Settings {
    identity_field: String,
    parent: String,
    internal: String,
}

static SETTINGS: State<Settings> = State::new();

fn init(cfg: &Config) -> Result<(), ConfigError> {
    for (k, _) in cfg.iter() {
        if !["identity_field", "parent_banner", "identity_topic"].contains(&k) {
            return Err(ConfigError::new(
                k,
                "unknown key (expected identity_field, parent_banner, identity_topic)",
            ));
        }
    }
    SETTINGS.set(Settings {
        identity_field: cfg.get_or("identity_field", "email").to_string(),
        parent: cfg.get_or("parent_banner", "parent").to_string(),
        internal: cfg
            .get_or("identity_topic", "reconcile.identity")
            .to_string(),
    });
    Ok(())
}

#[transform(init = init)]
fn transform(ev: Event) -> Result<Vec<Output>, Error> {
    let s = SETTINGS.get();
    if let Some(change) = ev.topic.strip_prefix(&format!("{}.", s.internal)) {
        on_identity(&s, &ev, change)?;
        return Ok(vec![]);
    }
    let mut parts = ev.topic.splitn(3, '.');
    let (Some("customer"), Some(banner), Some(change)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(vec![]);
    };
    if banner == s.parent {
        return Ok(vec![]);
    }
    let payload = ev
        .data
        .clone()
        .or_else(|| ev.after.clone())
        .unwrap_or(Value::Null);
    let Some(raw) = payload.get(&s.identity_field).and_then(Value::as_str) else {
        log::info!(
            "reconcile: event {} has no {} to match on",
            ev.id,
            s.identity_field
        );
        return Ok(vec![]);
    };
    let identity = hash::email(raw);
    emit::event(&format!("{}.{change}", s.internal), &identity)
        .data(json!({"banner": banner, "account_id": ev.account_id, "data": payload, "source_event": ev.id}))
        .send()?;
    Ok(vec![])
}

fn on_identity(s: &Settings, ev: &Event, change: &str) -> Result<(), Error> {
    let d = ev.data.clone().unwrap_or(Value::Null);
    let (Some(banner), Some(account)) = (
        d.get("banner").and_then(Value::as_str),
        d.get("account_id").and_then(Value::as_str),
    ) else {
        return Err(Error::fatal("identity event without banner/account_id"));
    };
    let mut banners: BTreeMap<String, String> = kv::get_json("banners")?.unwrap_or_default();
    let joined = banners
        .insert(banner.to_string(), account.to_string())
        .is_none();
    if joined {
        kv::set_json("banners", &banners, 0)?;
    }
    if banners.len() < 2 {
        return Ok(());
    }
    let parent = |c: &str| format!("customer.{}.{c}", s.parent);
    if joined {
        emit::event(&parent("cross_banner_merged"), &ev.account_id)
            .data(json!({"identity": ev.account_id, "banners": banners}))
            .send()?;
    }
    if !(joined && change == "created") {
        emit::event(&parent(change), &ev.account_id)
            .data(
                json!({"identity": ev.account_id, "banner": banner, "account_id": account,
                         "data": d.get("data").cloned().unwrap_or(Value::Null)}),
            )
            .send()?;
    }
    Ok(())
}
