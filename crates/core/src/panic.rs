//! Panics are log lines: [`install_hook`] replaces the default hook (which
//! writes "thread … panicked at …" and a backtrace as plain text to stderr,
//! breaking a JSON log) with one `tracing` event, target
//! `switchyard::panic`, with the thread, the location, the message and, when
//! `RUST_BACKTRACE` asks for one, the backtrace as a field. Where a panic is
//! caught (a delivery task, a guest call), the caller turns it into an
//! outcome (a DLQ entry with the message): nothing is wedged.

/// The text of a panic payload.
pub fn message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

/// Log every panic through `tracing` (call after the subscriber is set).
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        let msg = message(info.payload());
        let bt = std::backtrace::Backtrace::capture();
        if bt.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(target: "switchyard::panic", thread, %location, backtrace = %bt, "panic: {msg}");
        } else {
            tracing::error!(target: "switchyard::panic", thread, %location, "panic: {msg}");
        }
    }));
}

#[cfg(test)]
mod tests {
    /// In a child process (the hook is process-wide): with a JSON log, a
    /// panic is one JSON line carrying the message, and nothing else is
    /// written to stderr.
    #[test]
    fn a_panic_is_one_json_log_line() {
        if std::env::var_os("SY_PANIC_HOOK_CHILD").is_some() {
            tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(std::io::stderr)
                .init();
            super::install_hook();
            let r = std::thread::Builder::new()
                .name("doomed".into())
                .spawn(|| panic!("deliberate {}", 42))
                .unwrap()
                .join();
            assert_eq!(super::message(&*r.unwrap_err()), "deliberate 42");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic::tests::a_panic_is_one_json_log_line",
                "--nocapture",
            ])
            .env("SY_PANIC_HOOK_CHILD", "1")
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l:?}\n{stderr}"))
            })
            .collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        let l = &lines[0];
        assert_eq!(l["message"], "panic: deliberate 42", "{l}");
        assert_eq!(l["level"], "ERROR");
        assert_eq!(l["thread"], "doomed");
        assert!(l["location"].as_str().unwrap().contains("panic.rs"), "{l}");
        assert!(l["backtrace"].is_string(), "{l}");
    }
}
