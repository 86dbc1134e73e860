//! Support for `switchyard transform test`.

use std::io::Write;

use base64::Engine as _;

use super::chain::{Chain, ChainOutcome};
use super::engine::TransformEngine;
use super::limits::EngineLimits;
use super::module_config::ModuleConfig;
use switchyard_core::event::Event;

/// Load the modules (no compile cache) and run them once on `ev`.
pub fn run_chain_once(config_modules: &[ModuleConfig], ev: &Event) -> anyhow::Result<ChainOutcome> {
    run_chain_once_cached(config_modules, ev, None)
}

/// [`run_chain_once`] with the router's compile cache (`cache_dir`, as
/// `[transforms] cache_dir`): an interpreter guest (Python, JS) takes
/// seconds to compile, so running a module on one event after another
/// compiles it once.
pub fn run_chain_once_cached(
    config_modules: &[ModuleConfig],
    ev: &Event,
    cache_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<ChainOutcome> {
    let engine = TransformEngine::new(EngineLimits::default(), cache_dir)?;
    let chain = Chain::load(&engine, "test", config_modules)?;
    Ok(chain.run(ev))
}

/// Print an outcome as JSON lines (see [`outcome_lines`]).
pub fn print_outcome(outcome: &ChainOutcome, out: &mut impl Write) -> std::io::Result<()> {
    for l in outcome_lines(outcome) {
        serde_json::to_writer(&mut *out, &l)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// An outcome as JSON values: one per request (body as UTF-8 text in `body`
/// if valid, else base64 in `body_base64`), or one `dropped` / `failed`.
pub fn outcome_lines(outcome: &ChainOutcome) -> Vec<serde_json::Value> {
    match outcome {
        ChainOutcome::Requests(reqs) => reqs
            .iter()
            .map(|r| {
                let mut o = serde_json::json!({
                    "module": r.module,
                    "content_type": r.content_type,
                    "method": r.method,
                    "path": r.path,
                    "headers": r.headers,
                });
                match std::str::from_utf8(&r.body) {
                    Ok(s) => o["body"] = s.into(),
                    Err(_) => {
                        o["body_base64"] = base64::engine::general_purpose::STANDARD
                            .encode(&r.body)
                            .into()
                    }
                }
                o
            })
            .collect(),
        ChainOutcome::Dropped { module } => {
            vec![serde_json::json!({ "dropped": { "module": module } })]
        }
        ChainOutcome::Failed {
            module,
            message,
            retryable,
        } => {
            vec![
                serde_json::json!({ "failed": { "module": module, "message": message, "retryable": retryable } }),
            ]
        }
    }
}
