//! `switchyard transform test`: run a module chain on one event and print
//! what it produces — the transform author's inner loop.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};

use switchyard_config::Config;
use switchyard_wasm_host::{print_outcome, run_chain_once_cached, ModuleConfig};

pub struct TestArgs {
    pub config: Option<PathBuf>,
    pub consumer: Option<String>,
    pub modules: Vec<PathBuf>,
    /// `key=value` module config (for `--module`).
    pub set: Vec<String>,
    pub event: PathBuf,
    /// Per-call deadline of every module (as a module's `deadline` key).
    pub deadline: Option<std::time::Duration>,
}

pub fn test(args: TestArgs, out: &mut impl Write) -> anyhow::Result<bool> {
    // The compile cache: the config's `[transforms] cache_dir`, else the default one.
    let mut cache_dir = switchyard_wasm_host::TransformsConfig::default().cache_dir();
    let modules: Vec<ModuleConfig> = match (&args.config, &args.consumer, args.modules.is_empty()) {
        (Some(cfg), Some(c), true) => {
            let config = Config::load(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            cache_dir = config.transforms.cache_dir();
            let consumer = config
                .consumers
                .get(c)
                .with_context(|| format!("no consumer `{c}` in {}", cfg.display()))?;
            if consumer.modules.is_empty() {
                bail!("consumer `{c}` has no modules: it sends the canonical event as JSON");
            }
            consumer.modules.clone()
        }
        (_, _, false) => {
            let mut kv = std::collections::BTreeMap::new();
            for s in &args.set {
                let (k, v) = s
                    .split_once('=')
                    .with_context(|| format!("--set `{s}`: expected key=value"))?;
                kv.insert(k.to_string(), v.to_string());
            }
            args.modules
                .iter()
                .map(|m| ModuleConfig::new(m).with_config(kv.clone()))
                .collect()
        }
        _ => bail!("give --config FILE --consumer NAME, or one or more --module FILE.wasm"),
    };
    let modules: Vec<ModuleConfig> = match args.deadline {
        Some(d) => modules
            .into_iter()
            .map(|mut m| {
                m.deadline = Some(d);
                m
            })
            .collect(),
        None => modules,
    };
    let text = std::fs::read_to_string(&args.event)
        .with_context(|| format!("reading {}", args.event.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.event.display()))?;
    let ev = switchyard_sources::http::to_event("event", v, "cli", None, chrono::Utc::now())
        .map_err(|r| anyhow::anyhow!("{}: {}", r.field.unwrap_or_default(), r.message))?;
    let outcome = run_chain_once_cached(&modules, &ev, cache_dir)?;
    print_outcome(&outcome, out)?;
    Ok(!matches!(
        outcome,
        switchyard_wasm_host::ChainOutcome::Failed { .. }
    ))
}
