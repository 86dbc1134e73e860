//! Per-instance state built at `init` (parsed config, compiled patterns…).

use std::sync::{Arc, RwLock};

/// A slot for state the init hook builds and `transform` reads.
///
/// ```
/// use switchyard_guest::{Config, State};
/// struct Rules { keep: Vec<String> }
/// static RULES: State<Rules> = State::new();
///
/// fn init(cfg: &Config) -> Result<(), String> {
///     RULES.set(Rules { keep: cfg.list("keep") });
///     Ok(())
/// }
/// # init(&Config::default()).unwrap();
/// assert!(RULES.get().keep.is_empty());
/// ```
///
/// The SDK runs `transform` only after the init hook succeeded, so `get` in
/// `transform` finds what the hook `set`.
pub struct State<T> {
    slot: RwLock<Option<Arc<T>>>,
}

impl<T> State<T> {
    /// An empty slot (usable in a `static`).
    pub const fn new() -> State<T> {
        State {
            slot: RwLock::new(None),
        }
    }

    /// Store (or replace) the value.
    pub fn set(&self, value: T) {
        *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(value));
    }

    /// The value, if set.
    pub fn try_get(&self) -> Option<Arc<T>> {
        self.slot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The value. Panics (a trap) if it was never set: set it in the init hook.
    pub fn get(&self) -> Arc<T> {
        self.try_get()
            .expect("switchyard_guest::State::get before set: set it in the init hook")
    }
}

impl<T> Default for State<T> {
    fn default() -> Self {
        State::new()
    }
}
