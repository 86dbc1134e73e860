#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// Lets the generated code and the macros name this crate as
// `::switchyard_guest` from inside the crate too.
extern crate self as switchyard_guest;

mod batch;
mod config;
mod error;
mod event;
mod glob;
pub mod log;
pub mod normalize;
mod output;
mod state;
mod stateful;

pub use batch::{Batch, BatchRequest, ItemOutcome};
pub use config::{Config, ConfigError};
pub use error::Error;
pub use event::{Commit, Event, Op};
pub use glob::{glob_match, Glob, GlobError};
pub use output::{Output, Request};
pub use serde_json::{self, json, Value};
pub use state::State;
pub use stateful::{emit, kv};

/// Marks the function that transforms one event; see the crate docs.
///
/// Forms:
/// * `#[transform]`
/// * `#[transform(init = my_init)]` where `fn my_init(cfg: &Config) -> Result<(), E>`
///   and `E: Display` (e.g. `String` or [`ConfigError`]).
/// * `#[transform(batch = my_batch)]` where `fn my_batch(events: Vec<Event>, cfg: &Config)
///   -> Result<Batch, Error>`, optionally with `batch_response = my_response` where
///   `fn my_response(req: &Request, items: usize, status: u16, body: &[u8]) -> Vec<ItemOutcome>`
///   (see [`Batch`]). The module then exports `switchyard:transform/batch`.
///
/// The function takes `(Event, &Config)` (or just `(Event)`) and returns
/// `Result<Vec<Output>, Error>`. One `#[transform]` per module.
pub use switchyard_guest_macros::transform;

/// Bindings generated from `wit/transform.wit`. Not a stable API: use the
/// types re-exported at the crate root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "transformer",
        pub_export_macro: true,
        export_macro_name: "__export_transformer",
        default_bindings_module: "::switchyard_guest::bindings",
    });
}

/// The `batch` export alone (world `batch-export`, on the types of
/// [`bindings`]); a batching module exports both, which together are the
/// `batch-transformer` world. Not a stable API.
#[doc(hidden)]
pub mod batch_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "batch-export",
        pub_export_macro: true,
        export_macro_name: "__export_batch_transformer",
        default_bindings_module: "::switchyard_guest::batch_bindings",
        with: {
            "switchyard:transform/types@0.2.0": crate::bindings::switchyard::transform::types,
        },
    });
}

/// Glue used by the `#[transform]` expansion. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::fmt::Display;
    use std::rc::Rc;

    pub use crate::batch_bindings;
    pub use crate::batch_bindings::exports::switchyard::transform::batch::Guest as BatchGuest;
    pub use crate::bindings;
    pub use crate::bindings::exports::switchyard::transform::guest::Guest;
    use crate::bindings::switchyard::transform::types as wit;
    pub use wit::{
        Batch as WitBatch, Event as WitEvent, ItemOutcome as WitItemOutcome, Output as WitOutput,
        Request as WitRequest, TransformError as WitError,
    };

    use crate::{Batch, Config, Error, Event, ItemOutcome, Output, Request};

    enum InitState {
        NotCalled,
        Refused(String),
        Ready(Rc<Config>),
    }

    thread_local! {
        // One instance = one module = one config. Wasm guests are single-threaded.
        static STATE: RefCell<InitState> = const { RefCell::new(InitState::NotCalled) };
    }

    /// `guest.init`: run the author's hook, then keep the config (or the refusal).
    pub fn init<E: Display>(
        config: Vec<(String, String)>,
        hook: impl FnOnce(&Config) -> Result<(), E>,
    ) -> Result<(), String> {
        let cfg = Rc::new(Config::from_pairs(config));
        let (state, result) = match hook(&cfg) {
            Ok(()) => (InitState::Ready(cfg), Ok(())),
            Err(e) => {
                let msg = e.to_string();
                (InitState::Refused(msg.clone()), Err(msg))
            }
        };
        STATE.with(|s| *s.borrow_mut() = state);
        result
    }

    fn config() -> Result<Rc<Config>, WitError> {
        let cfg = STATE.with(|s| match &*s.borrow() {
            InitState::Ready(cfg) => Ok(cfg.clone()),
            InitState::Refused(m) => Err(format!("module refused its config at init: {m}")),
            InitState::NotCalled => Err("transform called before init (host bug)".to_string()),
        });
        cfg.map_err(|message| WitError {
            message,
            retryable: false,
        })
    }

    /// `batch.transform-batch`: convert, call the author's function, convert
    /// back. An event that does not convert fails alone.
    pub fn transform_batch(
        events: Vec<WitEvent>,
        f: impl FnOnce(Vec<Event>, &Config) -> Result<Batch, Error>,
    ) -> Result<WitBatch, WitError> {
        let cfg = config()?;
        let mut good = Vec::with_capacity(events.len());
        let mut index = Vec::with_capacity(events.len());
        let mut failed = Vec::new();
        for (i, e) in events.into_iter().enumerate() {
            match Event::from_wit(e) {
                Ok(ev) => {
                    good.push(ev);
                    index.push(i as u32);
                }
                Err(e) => failed.push((i as u32, WitError::from(e))),
            }
        }
        let b = f(good, &cfg).map_err(WitError::from)?;
        let mut requests = Vec::with_capacity(b.requests.len());
        for r in b.requests {
            let Output::Request(req) = r.request else {
                return Err(WitError {
                    message: "a batch request must be Output::Request, not an event".into(),
                    retryable: false,
                });
            };
            let mut items = Vec::with_capacity(r.items.len());
            for i in r.items {
                items.push(*index.get(i).ok_or_else(|| WitError {
                    message: format!("batch item index {i} is out of range"),
                    retryable: false,
                })?);
            }
            requests.push(
                crate::bindings::switchyard::transform::types::BatchRequest {
                    request: req.into_wit(),
                    items,
                },
            );
        }
        for (i, e) in b.failed {
            if let Some(&orig) = index.get(i) {
                failed.push((orig, e.into()));
            }
        }
        Ok(WitBatch { requests, failed })
    }

    /// `batch.batch-response`.
    pub fn batch_response(
        req: WitRequest,
        items: u32,
        status: u16,
        body: Vec<u8>,
        f: impl FnOnce(&Request, usize, u16, &[u8]) -> Vec<ItemOutcome>,
    ) -> Vec<WitItemOutcome> {
        let req = Request::from_wit(req);
        f(&req, items as usize, status, &body)
            .into_iter()
            .map(|o| match o {
                ItemOutcome::Ok => WitItemOutcome::Ok,
                ItemOutcome::Retry(m) => WitItemOutcome::Retry(m),
                ItemOutcome::Fail(m) => WitItemOutcome::Fail(m),
            })
            .collect()
    }

    /// `guest.transform`: convert, call the author's function, convert back.
    /// Without a successful `init` every event fails (fatal): running with a
    /// config the module never accepted could let events through that the
    /// consumer's config would have stopped.
    pub fn transform(
        event: WitEvent,
        f: impl FnOnce(Event, &Config) -> Result<Vec<Output>, Error>,
    ) -> Result<Vec<WitOutput>, WitError> {
        let cfg = config()?;
        let event = Event::from_wit(event).map_err(WitError::from)?;
        match f(event, &cfg) {
            Ok(outputs) => Ok(outputs.into_iter().map(Output::into_wit).collect()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod glue_tests {
    use crate::__private::{init, transform};
    use crate::{Config, Error, Event, Op, Output};

    fn wit_event() -> crate::__private::WitEvent {
        Event::new("t", Op::Insert).into_wit()
    }

    fn echo(ev: Event, cfg: &Config) -> Result<Vec<Output>, Error> {
        let mut ev = ev;
        ev.attributes
            .insert("k".into(), cfg.get_or("k", "-").into());
        Ok(vec![Output::event(ev)])
    }

    // Each #[test] runs on its own thread, so each starts with a fresh instance state.
    #[test]
    fn transform_before_init_fails() {
        let e = transform(wit_event(), echo).unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("before init"), "{}", e.message);
    }

    #[test]
    fn refused_init_makes_every_call_fail() {
        let r = init(vec![("k".into(), "v".into())], |_| {
            Err::<(), _>("refused: nope")
        });
        assert_eq!(r, Err("refused: nope".to_string()));
        let e = transform(wit_event(), echo).unwrap_err();
        assert_eq!(
            e.message,
            "module refused its config at init: refused: nope"
        );
    }

    #[test]
    fn init_then_transform_sees_config_and_errors_map() {
        init(vec![("k".into(), "v".into())], |c| {
            c.require("k").map(|_| ())
        })
        .unwrap();
        let out = transform(wit_event(), echo).unwrap();
        match &out[0] {
            crate::__private::WitOutput::Event(e) => {
                assert_eq!(e.attributes, vec![("k".to_string(), "v".to_string())])
            }
            _ => panic!(),
        }
        let e = transform(wit_event(), |_, _| Err(Error::retryable("later"))).unwrap_err();
        assert!(e.retryable && e.message == "later");
        let mut bad = wit_event();
        bad.after = Some("nope".into());
        assert!(!transform(bad, echo).unwrap_err().retryable);
    }
}
