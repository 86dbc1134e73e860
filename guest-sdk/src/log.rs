//! Logging through the host's `log` import.
//!
//! Functions ([`info()`], [`warn()`], …) take a message; the macros of the same
//! names take `format!` arguments:
//!
//! ```
//! use switchyard_guest::log;
//! log::info("started");
//! log::warn!("dropping event {}: {}", "e1", "no email");
//! ```
//!
//! On a native target (unit tests) there is no host: messages go to stderr
//! and are kept per thread for [`take_captured`].

pub use crate::bindings::switchyard::transform::types::Level;

/// Log `message` at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::switchyard::transform::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::log(level, message);
}

/// Log at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message)
}
/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message)
}
/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}
/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message)
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::Level;
    use std::cell::RefCell;

    thread_local! {
        pub(super) static CAPTURED: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn log(level: Level, message: &str) {
        eprintln!("[{level:?}] {message}");
        CAPTURED.with(|c| c.borrow_mut().push((level, message.to_string())));
    }
}

/// Native targets only: the messages logged on this thread so far (and forget them).
#[cfg(not(target_arch = "wasm32"))]
pub fn take_captured() -> Vec<(Level, String)> {
    native::CAPTURED.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

#[doc(hidden)]
#[macro_export]
macro_rules! __sy_log_trace { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Trace, &::std::format!($($t)*)) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sy_log_debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, &::std::format!($($t)*)) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sy_log_info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, &::std::format!($($t)*)) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sy_log_warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, &::std::format!($($t)*)) }; }
#[doc(hidden)]
#[macro_export]
macro_rules! __sy_log_error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, &::std::format!($($t)*)) }; }

/// `log::debug!("fmt", args…)`
#[doc(inline)]
pub use crate::__sy_log_debug as debug;
/// `log::error!("fmt", args…)`
#[doc(inline)]
pub use crate::__sy_log_error as error;
/// `log::info!("fmt", args…)`
#[doc(inline)]
pub use crate::__sy_log_info as info;
/// `log::trace!("fmt", args…)`
#[doc(inline)]
pub use crate::__sy_log_trace as trace;
/// `log::warn!("fmt", args…)`
#[doc(inline)]
pub use crate::__sy_log_warn as warn;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    #[test]
    fn functions_and_macros_capture() {
        super::info("a");
        crate::log::warn!("b {}", 1);
        let got = super::take_captured();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1, "b 1");
        assert!(matches!(got[1].0, super::Level::Warn));
    }
}
