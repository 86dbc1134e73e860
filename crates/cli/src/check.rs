//! `switchyard check`: every problem of a config at once, each with its TOML
//! path — the config's own rules and, for every consumer's modules, what
//! `switchyard run` would find when it loads them: the module compiles
//! (through the compile cache, so a later `run` starts warm), implements
//! the contract, and its `init` accepts the configured values.

use std::path::Path;

use switchyard_config::{Config, ConfigError, ConfigErrors};
use switchyard_wasm_host::{EngineLimits, Module, TransformEngine};

/// Check the config at `path`. `Ok` when there is nothing to report.
pub fn check(path: &Path) -> Result<Config, ConfigErrors> {
    let (config, mut errs) = Config::load_all(path);
    if let Some(c) = &config {
        let found = module_errors(c, &errs.errors);
        errs.errors.extend(found);
    }
    match config {
        Some(c) if errs.errors.is_empty() => Ok(c),
        _ => Err(errs),
    }
}

/// Load every module of every consumer as `run` would (compile or take it
/// from the cache, link, instantiate, `init` with the configured values)
/// and report each failure at its TOML path: an `init` refusal at
/// `consumers.<c>.modules[i].config` with the module's own message, any
/// other load failure at `consumers.<c>.modules[i]`. Modules that already
/// have a config error (`known`) are skipped: they cannot be loaded.
pub fn module_errors(config: &Config, known: &[ConfigError]) -> Vec<ConfigError> {
    let mut out = Vec::new();
    // (path, module, the consumer's `batch` path when this is the last
    // module of a batching consumer: it must export the batch interface).
    let todo: Vec<(String, &switchyard_wasm_host::ModuleConfig, Option<String>)> = config
        .consumers
        .iter()
        .flat_map(|(name, c)| {
            let last = c.modules.len().saturating_sub(1);
            let batching = c.batch.is_some();
            c.modules.iter().enumerate().map(move |(i, m)| {
                (
                    format!("consumers.{name}.modules[{i}]"),
                    m,
                    (batching && i == last).then(|| format!("consumers.{name}.batch")),
                )
            })
        })
        .filter(|(path, _, _)| {
            !known
                .iter()
                .any(|e| e.path == *path || e.path.starts_with(&format!("{path}.")))
        })
        .collect();
    if todo.is_empty() {
        return out;
    }
    let engine = match TransformEngine::new(EngineLimits::default(), config.transforms.cache_dir())
    {
        Ok(e) => e,
        Err(e) => {
            out.push(ConfigError::new(
                "transforms",
                format!("cannot start the WebAssembly engine to check the modules: {e:#}"),
            ));
            return out;
        }
    };
    for (path, m, batch) in todo {
        match Module::load(&engine, m, None) {
            Ok(module) => {
                if let (Some(bpath), false) = (batch, module.batches) {
                    out.push(ConfigError::new(
                        bpath,
                        format!(
                            "the last module, {} (contract {}), does not export switchyard:transform/batch@0.2.0: build it with #[transform(batch = ...)] (switchyard-guest 0.2) or remove the batch table",
                            module.name, module.version
                        ),
                    ));
                }
            }
            Err(e) => out.push(match e.init_refused {
                Some(said) => ConfigError::new(
                    format!("{path}.config"),
                    format!("module {} refused it: {said}", m.display_name()),
                ),
                None => ConfigError::new(path, e.message),
            }),
        }
    }
    out
}
