//! Hot reload: one [`ChainHandle`] per consumer, swapped atomically.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use serde::Serialize;

use super::chain::{Chain, ChainOutcome, LoadError};
use super::engine::TransformEngine;
use super::module_config::ModuleConfig;
use switchyard_core::event::Event;

/// The live chain of one consumer.
///
/// Invariants: a reload compiles and initialises the new chain off to the
/// side and swaps it in only if every module loaded; a failing reload leaves
/// the old chain running and records the error. Events in flight keep the
/// `Arc<Chain>` they started with and finish on that version.
pub struct ChainHandle {
    consumer: String,
    engine: TransformEngine,
    configs: RwLock<Vec<ModuleConfig>>,
    current: ArcSwap<Chain>,
    reload_lock: Mutex<()>,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    last_reload_error: Mutex<Option<ReloadError>>,
}

/// A failed reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadError {
    pub at: chrono::DateTime<chrono::Utc>,
    pub file: String,
    pub message: String,
}

/// Snapshot of a consumer's chain, for `switchyard status` and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct ChainStatus {
    pub consumer: String,
    pub generation: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    pub last_reload_error: Option<ReloadError>,
    pub modules: Vec<ModuleStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModuleStatus {
    pub name: String,
    pub file: String,
    pub hash: String,
    /// Contract version the module was built against.
    pub version: String,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
    pub cache_hit: bool,
    pub deadline_ms: u64,
    pub memory_cap: u64,
    pub calls: u64,
    pub drops: u64,
    pub errors: u64,
    pub instantiations: u64,
    pub idle_instances: usize,
}

impl ChainHandle {
    /// Load the chain; the first load must succeed.
    pub fn new(
        engine: &TransformEngine,
        consumer: &str,
        configs: Vec<ModuleConfig>,
    ) -> Result<Arc<ChainHandle>, LoadError> {
        let chain = Chain::load(engine, consumer, &configs)?;
        Ok(Arc::new(ChainHandle {
            consumer: consumer.to_string(),
            engine: engine.clone(),
            configs: RwLock::new(configs),
            current: ArcSwap::from_pointee(chain),
            reload_lock: Mutex::new(()),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
        }))
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The current chain. Hold the `Arc` for the duration of one event.
    pub fn chain(&self) -> Arc<Chain> {
        self.current.load_full()
    }

    /// Run the current chain, blocking (see [`Chain::run`]).
    pub fn run(&self, ev: &Event) -> ChainOutcome {
        self.current.load().run(ev)
    }

    /// Run the current chain from async code (see [`Chain::run_async`]).
    pub async fn run_async(&self, ev: Event) -> ChainOutcome {
        self.chain().run_async(ev).await
    }

    /// Re-read the module files and swap in the new chain if it loads.
    pub fn reload(&self) -> Result<(), LoadError> {
        let configs = self.configs.read().unwrap().clone();
        self.load_and_swap(configs, false)
    }

    /// Swap in a chain built from new module configs (config change). On
    /// failure the old chain and the old configs stay.
    pub fn reconfigure(&self, configs: Vec<ModuleConfig>) -> Result<(), LoadError> {
        self.load_and_swap(configs, true)
    }

    fn load_and_swap(
        &self,
        configs: Vec<ModuleConfig>,
        store_configs: bool,
    ) -> Result<(), LoadError> {
        let _g = self.reload_lock.lock().unwrap();
        let old = self.current.load_full();
        let started = Instant::now();
        match Chain::load_with_stats(
            &self.engine,
            &self.consumer,
            &configs,
            |n| old.stats_for(n),
            old.generation + 1,
        ) {
            Ok(chain) => {
                let summary: Vec<String> = chain
                    .modules
                    .iter()
                    .map(|m| format!("{}@{}", m.name, m.short_hash()))
                    .collect();
                self.current.store(Arc::new(chain));
                if store_configs {
                    *self.configs.write().unwrap() = configs;
                }
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *self.last_reload_error.lock().unwrap() = None;
                tracing::info!(consumer = %self.consumer, modules = ?summary, took_ms = started.elapsed().as_millis() as u64, "transform chain reloaded");
                Ok(())
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(consumer = %self.consumer, file = %e.file, error = %e.message, "transform reload failed; the previous version keeps running");
                *self.last_reload_error.lock().unwrap() = Some(ReloadError {
                    at: chrono::Utc::now(),
                    file: e.file.clone(),
                    message: e.message.clone(),
                });
                Err(e)
            }
        }
    }

    pub fn last_reload_error(&self) -> Option<ReloadError> {
        self.last_reload_error.lock().unwrap().clone()
    }

    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Files the current configs point at.
    pub fn module_files(&self) -> Vec<PathBuf> {
        self.configs
            .read()
            .unwrap()
            .iter()
            .map(|c| c.path.clone())
            .collect()
    }

    pub fn status(&self) -> ChainStatus {
        let chain = self.chain();
        ChainStatus {
            consumer: self.consumer.clone(),
            generation: chain.generation,
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_failures: self.reload_failures.load(Ordering::Relaxed),
            last_reload_error: self.last_reload_error(),
            modules: chain
                .modules
                .iter()
                .map(|m| ModuleStatus {
                    name: m.name.clone(),
                    file: m.file.display().to_string(),
                    hash: m.hash.clone(),
                    version: m.version.clone(),
                    loaded_at: m.loaded_at.into(),
                    cache_hit: m.cache_hit,
                    deadline_ms: m.deadline.as_millis() as u64,
                    memory_cap: m.memory_cap,
                    calls: m.stats.calls.load(Ordering::Relaxed),
                    drops: m.stats.drops.load(Ordering::Relaxed),
                    errors: m.stats.errors.load(Ordering::Relaxed),
                    instantiations: m.stats.instantiations.load(Ordering::Relaxed),
                    idle_instances: m.idle_instances(),
                })
                .collect(),
        }
    }
}

/// Debounce window of the file watcher.
pub const WATCH_DEBOUNCE: Duration = Duration::from_millis(200);

/// Stops the watcher when dropped.
pub struct TransformWatcher {
    _watcher: notify::RecommendedWatcher,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TransformWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key(p: &Path) -> Option<(PathBuf, std::ffi::OsString)> {
    let name = p.file_name()?.to_os_string();
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some((parent.canonicalize().unwrap_or(parent), name))
}

/// Watch every module file's directory; when a file changes (debounced by
/// [`WATCH_DEBOUNCE`]), reload the chains that use it. Module paths are taken
/// when the watcher starts: after a config change that adds directories,
/// start a new watcher.
pub fn spawn_watcher(handles: Vec<Arc<ChainHandle>>) -> anyhow::Result<TransformWatcher> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(move |ev| {
        let _ = tx.send(ev);
    })?;
    let mut by_file: HashMap<(PathBuf, std::ffi::OsString), Vec<usize>> = HashMap::new();
    let mut dirs = HashSet::new();
    for (i, h) in handles.iter().enumerate() {
        for f in h.module_files() {
            if let Some(k) = key(&f) {
                dirs.insert(k.0.clone());
                by_file.entry(k).or_default().push(i);
            }
        }
    }
    for d in &dirs {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new().name("sy-transform-watch".into()).spawn(move || {
        let mut pending: HashSet<usize> = HashSet::new();
        let mut last_event = Instant::now();
        while !stop2.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(ev)) => {
                    if matches!(ev.kind, notify::EventKind::Access(_)) {
                        continue;
                    }
                    for p in &ev.paths {
                        if let Some(ids) = key(p).and_then(|k| by_file.get(&k)) {
                            pending.extend(ids.iter().copied());
                            last_event = Instant::now();
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "transform file watcher error"),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !pending.is_empty() && last_event.elapsed() >= WATCH_DEBOUNCE {
                for i in pending.drain() {
                    let h = &handles[i];
                    tracing::info!(consumer = %h.consumer(), "transform module changed on disk; reloading");
                    let _ = h.reload();
                }
            }
        }
    })?;
    Ok(TransformWatcher {
        _watcher: watcher,
        stop,
        thread: Some(thread),
    })
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<ChainHandle>();
    is::<Chain>();
    let _ = SystemTime::now;
}
