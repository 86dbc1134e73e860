//! `switchyard transform diff`: run a consumer's current chain and the chain
//! with a new module over the consumer's recent events from the log, and
//! print, per event, what the new build would change. Nothing is sent.
//!
//! Exit status as diff(1): 0 when no event's outcome changes, 1 when one
//! does (errors exit 2, from main).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use globset::{Glob, GlobSetBuilder};
use serde_json::Value;
use similar::TextDiff;

use switchyard_config::Config;
use switchyard_store::log::Log;
use switchyard_wasm_host::{
    outcome_lines, Chain, ChainOutcome, EngineLimits, ModuleConfig, TransformEngine,
};

pub struct DiffArgs {
    pub config: PathBuf,
    pub consumer: String,
    pub module: PathBuf,
    /// Which module of the chain the new one replaces (name or file stem).
    pub replace: Option<String>,
    /// How many of the consumer's newest events.
    pub last: usize,
    /// JSON lines instead of text.
    pub json: bool,
}

/// What the two chains did with one event, as comparable JSON: each request
/// with a JSON body parsed (so a field change shows as one line), or the
/// dropped / failed record.
fn comparable(outcome: &ChainOutcome) -> Vec<Value> {
    let mut lines = outcome_lines(outcome);
    for l in &mut lines {
        if let Some(Value::String(b)) = l.get("body") {
            if let Ok(v) = serde_json::from_str::<Value>(b) {
                l["body"] = v;
            }
        }
        // Which module made a request is not what the vendor sees.
        if let Some(o) = l.as_object_mut() {
            o.remove("module");
        }
    }
    lines
}

fn pretty(v: &[Value]) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON");
    s.push('\n');
    s
}

/// The new chain: the consumer's modules with `replace` swapped for the new
/// file (keeping that module's config and limits), or just the new module
/// when the consumer has none.
fn new_chain(
    current: &[ModuleConfig],
    module: &std::path::Path,
    replace: Option<&str>,
) -> anyhow::Result<Vec<ModuleConfig>> {
    if current.is_empty() {
        return Ok(vec![ModuleConfig::new(module)]);
    }
    let stem = module
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let names: Vec<String> = current.iter().map(|m| m.display_name()).collect();
    let idx = match replace {
        Some(r) => names
            .iter()
            .position(|n| n == r)
            .with_context(|| format!("--replace `{r}`: the chain's modules are {}", names.join(", ")))?,
        None if current.len() == 1 => 0,
        None => match names.iter().position(|n| *n == stem) {
            Some(i) => i,
            None => bail!(
                "the chain has {} modules ({}) and none is named `{stem}`: say which one the new module replaces with --replace NAME",
                names.len(),
                names.join(", ")
            ),
        },
    };
    let mut chain = current.to_vec();
    chain[idx].path = module.to_path_buf();
    Ok(chain)
}

pub async fn diff(args: DiffArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<bool> {
    let config = Config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let consumer = config.consumers.get(&args.consumer).with_context(|| {
        format!(
            "no consumer `{}` in {}",
            args.consumer,
            args.config.display()
        )
    })?;
    if !args.module.is_file() {
        bail!("--module {}: no such file", args.module.display());
    }
    let current = consumer.modules.clone();
    let candidate = new_chain(&current, &args.module, args.replace.as_deref())?;

    let mut topics = GlobSetBuilder::new();
    for t in &consumer.topics {
        topics.add(Glob::new(t).with_context(|| format!("consumer topic `{t}`"))?);
    }
    let topics = topics.build()?;
    let log = Log::connect(&config.redis, &config.log)
        .await
        .context("connecting to Redis (redis.url)")?;
    let last = args.last.max(1);
    let entries =
        switchyard_store::tail::recent(&log, last, last.saturating_mul(50).max(10_000), |ev| {
            topics.is_match(&ev.topic)
        })
        .await
        .context("reading the log")?;

    let (old_chain, new_chain, events) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let engine =
                TransformEngine::new(EngineLimits::default(), config.transforms.cache_dir())?;
            let old = Chain::load(&engine, "diff-current", &current)
                .context("loading the current chain")?;
            let new = Chain::load(&engine, "diff-new", &candidate)
                .context("loading the chain with the new module")?;
            Ok((old, new, entries))
        })
        .await??;

    let (mut same, mut changed) = (0usize, 0usize);
    for e in &events {
        let Ok(ev) = &e.event else { continue };
        let (a, b) = (
            comparable(&old_chain.run(ev)),
            comparable(&new_chain.run(ev)),
        );
        let differs = a != b;
        if differs {
            changed += 1;
        } else {
            same += 1;
        }
        if args.json {
            let line = serde_json::json!({
                "event_id": ev.id, "topic": ev.topic, "account_id": ev.account_id,
                "stream_id": e.stream_id, "changed": differs, "current": a, "new": b,
            });
            writeln!(out, "{line}")?;
            continue;
        }
        let tag = if differs { "changed" } else { "unchanged" };
        writeln!(
            out,
            "event {} ({}, account {}): {tag}",
            ev.id, ev.topic, ev.account_id
        )?;
        if differs {
            let (ta, tb) = (pretty(&a), pretty(&b));
            let d = TextDiff::from_lines(&ta, &tb);
            write!(
                out,
                "{}",
                d.unified_diff().context_radius(3).header("current", "new")
            )?;
        }
    }
    if !args.json {
        writeln!(
            out,
            "{} events of consumer `{}`: {changed} changed, {same} unchanged (nothing was sent)",
            same + changed,
            args.consumer
        )?;
    }
    Ok(changed == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(path: &str) -> ModuleConfig {
        ModuleConfig::new(std::path::Path::new(path))
    }

    #[test]
    fn replaces_the_only_module_or_the_one_of_the_same_name() {
        let new = std::path::Path::new("/tmp/klaviyo.wasm");
        let c = new_chain(&[m("/a/filter.wasm")], new, None).unwrap();
        assert_eq!(c[0].path, new);
        let c = new_chain(&[m("/a/filter.wasm"), m("/a/klaviyo.wasm")], new, None).unwrap();
        assert_eq!(c[0].path, std::path::Path::new("/a/filter.wasm"));
        assert_eq!(c[1].path, new);
        let e = new_chain(
            &[m("/a/filter.wasm"), m("/a/redact.wasm")],
            std::path::Path::new("/tmp/x.wasm"),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--replace"), "{e}");
        let c = new_chain(
            &[m("/a/filter.wasm"), m("/a/redact.wasm")],
            std::path::Path::new("/tmp/x.wasm"),
            Some("redact"),
        )
        .unwrap();
        assert_eq!(c[1].path, std::path::Path::new("/tmp/x.wasm"));
    }
}
