#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

// Lets the generated code and the macros name this crate as
// `::switchyard_guest` from inside the crate too.
extern crate self as switchyard_guest;

mod config;
mod error;
mod event;
mod glob;
pub mod log;
pub mod normalize;
mod output;
mod state;

pub use config::{Config, ConfigError};
pub use error::Error;
pub use event::{Commit, Event, Op};
pub use glob::{glob_match, Glob, GlobError};
pub use output::{Output, Request};
pub use state::State;
pub use serde_json::{self, json, Value};

/// Marks the function that transforms one event; see the crate docs.
///
/// Forms:
/// * `#[transform]`
/// * `#[transform(init = my_init)]` where `fn my_init(cfg: &Config) -> Result<(), E>`
///   and `E: Display` (e.g. `String` or [`ConfigError`]).
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

/// Glue used by the `#[transform]` expansion. Not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::fmt::Display;
    use std::rc::Rc;

    pub use crate::bindings;
    pub use crate::bindings::exports::switchyard::transform::guest::Guest;
    use crate::bindings::switchyard::transform::types as wit;
    pub use wit::{Event as WitEvent, Output as WitOutput, TransformError as WitError};

    use crate::{Config, Error, Event, Output};

    thread_local! {
        // One instance = one module = one config. Wasm guests are single-threaded.
        static CONFIG: RefCell<Option<Rc<Config>>> = const { RefCell::new(None) };
    }

    fn init_with<E: Display>(
        cfg: Config,
        hook: impl FnOnce(&Config) -> Result<(), E>,
    ) -> Result<Rc<Config>, String> {
        let cfg = Rc::new(cfg);
        hook(&cfg).map_err(|e| e.to_string())?;
        CONFIG.with(|c| *c.borrow_mut() = Some(cfg.clone()));
        Ok(cfg)
    }

    /// `guest.init`: store the config, then run the author's hook.
    pub fn init<E: Display>(
        config: Vec<(String, String)>,
        hook: impl FnOnce(&Config) -> Result<(), E>,
    ) -> Result<(), String> {
        init_with(Config::from_pairs(config), hook).map(|_| ())
    }

    /// `guest.transform`: convert, call the author's function, convert back.
    /// If the host never called `init`, behave as if it had with an empty
    /// config (the hook still runs; its refusal becomes a fatal error).
    pub fn transform<E: Display>(
        event: WitEvent,
        f: impl FnOnce(Event, &Config) -> Result<Vec<Output>, Error>,
        hook: impl FnOnce(&Config) -> Result<(), E>,
    ) -> Result<Vec<WitOutput>, WitError> {
        let cfg = match CONFIG.with(|c| c.borrow().clone()) {
            Some(cfg) => cfg,
            None => init_with(Config::default(), hook).map_err(|m| WitError {
                message: format!("module refused an empty config (init was not called): {m}"),
                retryable: false,
            })?,
        };
        let event = Event::from_wit(event).map_err(WitError::from)?;
        match f(event, &*cfg) {
            Ok(outputs) => Ok(outputs.into_iter().map(Output::into_wit).collect()),
            Err(e) => Err(e.into()),
        }
    }
}
