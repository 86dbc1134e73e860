//! `SWITCHYARD_LOG` → the tracing filter.
//!
//! A bare level (`trace`, `debug`, `info`…) is the level of the router's own
//! targets (`switchyard::…`). Every other target — the WebAssembly compiler
//! (`cranelift_*`, `wasmtime*`), `hyper`, `h2`, `rustls`, `tokio_postgres`,
//! `redis`… — stays at `warn` unless a directive names it
//! (`trace,cranelift_codegen=debug`). At `trace`, cranelift alone wrote
//! 7.8 GB in ten minutes of start-up.

use tracing_subscriber::filter::{Directive, EnvFilter, LevelFilter};

/// The level of targets that are not the router's own and that no directive names.
pub const OTHERS: LevelFilter = LevelFilter::WARN;

/// Used when `SWITCHYARD_LOG` is unset.
pub const DEFAULT: &str = "info";

/// Rewrite a `SWITCHYARD_LOG` value into `EnvFilter` directives: the bare
/// level `L` becomes `switchyard=L` plus a global `min(L, warn)`; every
/// other directive is kept as written (and, being more specific, wins).
/// Without a bare level the directives are kept as they are.
pub fn directives(spec: &str) -> String {
    let mut bare: Option<LevelFilter> = None;
    let mut named: Vec<&str> = Vec::new();
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.parse::<LevelFilter>() {
            Ok(l) => bare = Some(l),
            Err(_) => named.push(d),
        }
    }
    let Some(level) = bare else {
        return named.join(",");
    };
    let mut out = vec![std::cmp::min(level, OTHERS).to_string().to_lowercase()];
    // An explicit `switchyard=…` directive says it all.
    if !named
        .iter()
        .any(|d| d.split('=').next() == Some("switchyard"))
    {
        out.push(format!("switchyard={}", level.to_string().to_lowercase()));
    }
    out.extend(named.iter().map(|d| d.to_string()));
    out.join(",")
}

/// The filter for `spec` (the value of `SWITCHYARD_LOG`, `None` when
/// unset). A spec that does not parse is reported on stderr and replaced
/// by the default.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.unwrap_or(DEFAULT);
    match EnvFilter::builder().parse(directives(spec)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("SWITCHYARD_LOG={spec:?} is not a valid filter ({e}); using {DEFAULT:?}");
            EnvFilter::builder()
                .parse(directives(DEFAULT))
                .unwrap_or_else(|_| EnvFilter::default().add_directive(Directive::from(OTHERS)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_bare_level_is_the_routers_and_others_stay_at_warn() {
        assert_eq!(directives("trace"), "warn,switchyard=trace");
        assert_eq!(directives("debug"), "warn,switchyard=debug");
        assert_eq!(directives("info"), "warn,switchyard=info");
        // Quieter than warn applies to everyone.
        assert_eq!(directives("error"), "error,switchyard=error");
        assert_eq!(directives("off"), "off,switchyard=off");
        // Named targets are kept and win over the default.
        assert_eq!(
            directives("trace,cranelift_codegen=debug"),
            "warn,switchyard=trace,cranelift_codegen=debug"
        );
        assert_eq!(directives("info,switchyard=debug"), "warn,switchyard=debug");
        assert_eq!(
            directives(" trace , switchyard::transform=info "),
            "warn,switchyard=trace,switchyard::transform=info"
        );
        // No bare level: as written.
        assert_eq!(directives("hyper=debug"), "hyper=debug");
    }

    /// The events a subscriber with `filter(spec)` lets through, as `target level`.
    fn passed(spec: &str) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(filter(Some(spec)))
            .with_writer(move || w.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::trace!(target: "cranelift_codegen::machinst", "c-trace");
            tracing::debug!(target: "wasmtime_cranelift", "w-debug");
            tracing::info!(target: "hyper::proto", "h-info");
            tracing::warn!(target: "h2::codec", "h2-warn");
            tracing::trace!(target: "switchyard::transform", "s-trace");
            tracing::info!(target: "switchyard::app", "s-info");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    }

    #[test]
    fn trace_lets_the_router_through_and_not_the_compiler() {
        assert_eq!(passed("trace"), ["h2-warn", "s-trace", "s-info"]);
        assert_eq!(passed("info"), ["h2-warn", "s-info"]);
        assert_eq!(
            passed("trace,cranelift_codegen=trace"),
            ["c-trace", "h2-warn", "s-trace", "s-info"]
        );
        // Not a filter: the default.
        assert_eq!(passed("not a=filter=at all"), ["h2-warn", "s-info"]);
    }
}
