//! Loaded modules, their instance pools, and running a chain.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use globset::GlobSet;
use wasmtime::component::InstancePre;
use wasmtime::{Store, Trap};

use super::bindings::{self as wit};
use super::convert;
use super::effects::{CallCtx, Effects, KvStore, NoKv};
use super::engine::{State, TransformEngine};
use super::limits::fmt_bytes;
use super::module_config::ModuleConfig;
use super::threads::{self, panic_message};
use switchyard_core::event::Event;

/// A module could not be loaded (bad file, wrong contract, init refused…).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
    /// The module file.
    pub file: String,
    pub message: String,
    /// The module loaded but its `init` refused the configured values; this
    /// is what it said (`message` has it too, with context). `switchyard
    /// check` reports it at `consumers.<c>.modules[i].config`.
    pub init_refused: Option<String>,
}

impl LoadError {
    pub(crate) fn new(file: &str, message: String) -> Self {
        LoadError {
            file: file.to_string(),
            message,
            init_refused: None,
        }
    }
}

/// How `instantiate` words a refusal by `init` (followed by the guest's message).
const INIT_REFUSED: &str = "init refused the config: ";

pub use switchyard_core::outbound::OutRequest;

/// Result of running a chain on one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainOutcome {
    /// Send these (one event may fan out to several requests).
    Requests(Vec<OutRequest>),
    /// A module returned zero outputs (for every branch): the event is done.
    Dropped { module: String },
    /// The chain failed. `retryable` as the guest said for guest errors;
    /// false for traps, timeouts and memory exhaustion; true for host-side
    /// resource problems (instance pool exhausted).
    Failed {
        module: String,
        message: String,
        retryable: bool,
    },
}

/// Counters of one module name; they survive reloads of the chain.
#[derive(Debug, Default)]
pub struct ModuleStats {
    pub calls: AtomicU64,
    pub drops: AtomicU64,
    pub errors: AtomicU64,
    /// Instances created (instantiate + init).
    pub instantiations: AtomicU64,
    /// Instances replaced after `recycle_after_calls` calls or above
    /// `recycle_above` (not counting instances dropped after a trap).
    pub recycled: AtomicU64,
    /// Largest linear memory (bytes) an instance of this module has had.
    pub max_memory: AtomicU64,
}

type GuestV02 = wit::exports::switchyard::transform::guest::Guest;
type BatchV02 = wit::exports::switchyard::transform::batch::Guest;
type GuestV01 = wit::v01::exports::switchyard::transform::guest::Guest;

/// Where a module's exports are, by contract version (looked up once per load).
enum Indices {
    V01(wit::v01::exports::switchyard::transform::guest::GuestIndices),
    V02 {
        guest: wit::exports::switchyard::transform::guest::GuestIndices,
        batch: Option<wit::exports::switchyard::transform::batch::GuestIndices>,
    },
}

/// The exports of one instance.
enum Api {
    V01(GuestV01),
    V02 {
        guest: GuestV02,
        batch: Option<BatchV02>,
    },
}

impl Api {
    fn init(
        &self,
        store: &mut Store<State>,
        cfg: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Api::V01(g) => g.call_init(store, cfg),
            Api::V02 { guest, .. } => guest.call_init(store, cfg),
        }
    }
    fn transform(
        &self,
        store: &mut Store<State>,
        ev: &wit::Event,
    ) -> wasmtime::Result<Result<Vec<wit::Output>, wit::TransformError>> {
        match self {
            Api::V01(g) => g.call_transform(store, ev),
            Api::V02 { guest, .. } => guest.call_transform(store, ev),
        }
    }
    fn batch(&self) -> Option<&BatchV02> {
        match self {
            Api::V02 { batch, .. } => batch.as_ref(),
            Api::V01(_) => None,
        }
    }
}

/// An instantiated, initialised module.
struct Instance {
    store: Store<State>,
    guest: Api,
    calls: u64,
}

/// Why a call failed.
enum CallError {
    /// The guest returned an error (the instance is fine).
    Guest(wit::TransformError),
    /// Trap / timeout / memory: the instance is gone.
    Fatal(String),
    /// Could not get an instance.
    Instantiate(String),
}

/// A loaded module: compiled, linked, initialised once, with a pool of idle
/// initialised instances.
pub struct Module {
    pub name: String,
    pub file: PathBuf,
    /// SHA-256 of the component bytes (hex).
    pub hash: String,
    /// Contract version the module was built against (e.g. "0.1.0").
    pub version: String,
    /// It exports `switchyard:transform/batch` (contract 0.2): it can build
    /// one request from several events.
    pub batches: bool,
    /// Topics it may `emit` to (`emit_topics`); `None`: it may not emit.
    pub emit_topics: Option<Arc<GlobSet>>,
    pub deadline: Duration,
    pub memory_cap: u64,
    /// An instance is replaced after this many calls…
    pub recycle_after_calls: u64,
    /// …or after a call that left a linear memory above this many bytes.
    pub recycle_above: u64,
    pub init_config: Vec<(String, String)>,
    pub loaded_at: SystemTime,
    /// The compiled code came from the on-disk cache.
    pub cache_hit: bool,
    pub stats: Arc<ModuleStats>,
    name_arc: Arc<str>,
    engine: TransformEngine,
    pre: InstancePre<State>,
    indices: Indices,
    deadline_ticks: u64,
    idle: Mutex<Vec<Instance>>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("hash", &self.hash)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Module {
    /// Compile (or fetch from cache), check the contract, link, and create +
    /// initialise a first instance (so a refused config fails the load).
    pub fn load(
        engine: &TransformEngine,
        cfg: &ModuleConfig,
        stats: Option<Arc<ModuleStats>>,
    ) -> Result<Module, LoadError> {
        let limits = engine.limits();
        let file = cfg.resolved_path().to_path_buf();
        let fname = file.display().to_string();
        let name = cfg.display_name();
        let deadline = cfg.deadline.unwrap_or(limits.default_deadline);
        let memory_cap = cfg.memory.map(|m| m.0).unwrap_or(limits.default_memory_cap);
        if memory_cap > limits.max_memory_cap {
            return Err(LoadError::new(
                &fname,
                format!(
                    "module {fname}: memory cap {} is above the engine's maximum {}",
                    fmt_bytes(memory_cap),
                    fmt_bytes(limits.max_memory_cap)
                ),
            ));
        }
        let recycle_after_calls = cfg
            .recycle_after_calls
            .unwrap_or(limits.max_calls_per_instance)
            .max(1);
        let recycle_above = cfg
            .recycle_above
            .map_or(memory_cap * limits.recycle_memory_percent / 100, |b| {
                b.0.min(memory_cap)
            });
        let compiled = engine.compile(&file)?;
        let pre: InstancePre<State> = engine
            .inner
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(|e| {
                LoadError::new(
                    &fname,
                    format!("module {fname} needs imports this router does not provide: {e:#}"),
                )
            })?;
        let mismatch = |e: wasmtime::Error| {
            LoadError::new(&fname, format!(
                "module {fname} does not implement world switchyard:transform/transformer@{}: {e:#}",
                compiled.contract_version
            ))
        };
        let indices = if compiled.contract_version.starts_with("0.1.") {
            Indices::V01(
                wit::v01::exports::switchyard::transform::guest::GuestIndices::new(&pre)
                    .map_err(mismatch)?,
            )
        } else {
            let batch_name = format!("{}@{}", wit::BATCH_EXPORT, compiled.contract_version);
            let batch = if compiled
                .component
                .get_export_index(None, &batch_name)
                .is_some()
            {
                Some(
                    wit::exports::switchyard::transform::batch::GuestIndices::new(&pre)
                        .map_err(mismatch)?,
                )
            } else {
                None
            };
            Indices::V02 {
                guest: wit::exports::switchyard::transform::guest::GuestIndices::new(&pre)
                    .map_err(mismatch)?,
                batch,
            }
        };
        let emit_topics = cfg
            .emit_globs()
            .map_err(|m| LoadError::new(&fname, format!("module {fname}: {m}")))?
            .map(Arc::new);
        let module = Module {
            name_arc: Arc::from(name.as_str()),
            name,
            file,
            hash: compiled.hash,
            batches: matches!(&indices, Indices::V02 { batch: Some(_), .. }),
            emit_topics,
            version: compiled.contract_version,
            deadline,
            memory_cap,
            recycle_after_calls,
            recycle_above,
            init_config: cfg
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            loaded_at: SystemTime::now(),
            cache_hit: compiled.cache_hit,
            stats: stats.unwrap_or_default(),
            engine: engine.clone(),
            pre,
            indices,
            deadline_ticks: limits.deadline_ticks(deadline),
            idle: Mutex::new(Vec::new()),
        };
        // `init` is guest code: off the async workers (threads.rs).
        let (module, first) = engine
            .inner
            .threads
            .run_blocking(move || {
                let first = module.instantiate();
                (module, first)
            })
            .map_err(|m| LoadError::new(&fname, format!("module {fname}: the host failed: {m}")))?;
        let first = first.map_err(|m| LoadError {
            init_refused: m.strip_prefix(INIT_REFUSED).map(str::to_string),
            ..LoadError::new(&fname, format!("module {fname}: {m}"))
        })?;
        module.idle.lock().unwrap().push(first);
        Ok(module)
    }

    /// Short content hash (12 hex digits) for display.
    pub fn short_hash(&self) -> &str {
        &self.hash[..12.min(self.hash.len())]
    }

    /// Create and initialise an instance, then drop it (benchmarks:
    /// instantiation + `init` cost). Runs guest code on the calling thread:
    /// call it outside any Tokio runtime.
    #[doc(hidden)]
    pub fn instantiate_and_drop(&self) -> Result<(), String> {
        self.instantiate().map(drop)
    }

    /// Instances currently idle in the pool.
    pub fn idle_instances(&self) -> usize {
        self.idle.lock().unwrap().len()
    }

    /// Arm the limits right before a guest entry: the epoch deadline (guest
    /// code), the same deadline for host-side waits, fresh failure flags.
    fn arm(&self, store: &mut Store<State>) {
        store.set_epoch_deadline(self.deadline_ticks);
        let d = store.data_mut();
        d.limiter.exceeded = false;
        d.wait_timed_out = false;
        d.deadline = Instant::now() + self.deadline;
    }

    fn classify(&self, store: &Store<State>, e: &wasmtime::Error) -> String {
        if store.data().limiter.exceeded {
            return format!("exceeded memory cap {}", fmt_bytes(self.memory_cap));
        }
        let timed_out = store.data().wait_timed_out;
        if timed_out || matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            return format!(
                "timed out after {}",
                humantime::format_duration(self.deadline)
            );
        }
        let trap = match e.downcast_ref::<Trap>() {
            Some(t) => t.to_string(),
            None => format!("{e:#}"),
        };
        let stderr = store.data().stderr.tail();
        if stderr.is_empty() {
            format!("trapped: {trap}")
        } else {
            let last = stderr
                .lines()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            format!("trapped: {trap} (guest stderr: {last})")
        }
    }

    /// A fresh store + instance, with `init` called. Errors are messages.
    fn instantiate(&self) -> Result<Instance, String> {
        let mut store = Store::new(
            &self.engine.inner.engine,
            State::new(self.name_arc.clone(), self.memory_cap),
        );
        store.limiter(|s| &mut s.limiter);
        // Instantiation runs guest code (start functions) and counts against
        // the deadline: set it right before.
        self.arm(&mut store);
        // Two steps, so a failure is named for what it is: instantiating
        // runs guest code (start functions: traps, deadline, memory cap);
        // looking up the typed exports checks the function types against
        // the contract (TransformerPre::new only checked the names).
        let instance = match self.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => {
                let msg = self.classify(&store, &e);
                return Err(format!("instantiation failed: {msg}"));
            }
        };
        let mismatch = |e: wasmtime::Error| {
            format!(
                "does not implement world switchyard:transform/transformer@{}: {e:#}",
                self.version
            )
        };
        let guest = match &self.indices {
            Indices::V01(i) => Api::V01(i.load(&mut store, &instance).map_err(mismatch)?),
            Indices::V02 { guest, batch } => Api::V02 {
                guest: guest.load(&mut store, &instance).map_err(mismatch)?,
                batch: match batch {
                    Some(b) => Some(b.load(&mut store, &instance).map_err(mismatch)?),
                    None => None,
                },
            },
        };
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        self.arm(&mut store);
        match guest.init(&mut store, &self.init_config) {
            Ok(Ok(())) => {
                let peak = store.data().limiter.peak as u64;
                self.stats.max_memory.fetch_max(peak, Ordering::Relaxed);
                Ok(Instance {
                    store,
                    guest,
                    calls: 0,
                })
            }
            Ok(Err(msg)) => Err(format!("{INIT_REFUSED}{msg}")),
            Err(e) => Err(format!("init failed: {}", self.classify(&store, &e))),
        }
    }

    /// `transform` one event; `ctx` is what its `kv`/`emit` calls see,
    /// given back with what they staged.
    fn call(
        &self,
        ev: &wit::Event,
        ctx: CallCtx,
    ) -> (Result<Vec<wit::Output>, CallError>, Option<CallCtx>) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        // A panic in the host (wasmtime, WASI, our imports) fails this call
        // like a trap: the instance unwinds with it and is never reused.
        catch_unwind(AssertUnwindSafe(|| self.call_instance(ev, ctx))).unwrap_or_else(|p| {
            (
                Err(CallError::Fatal(format!(
                    "the host failed during the call: {}",
                    panic_message(&*p)
                ))),
                None,
            )
        })
    }

    fn call_instance(
        &self,
        ev: &wit::Event,
        ctx: CallCtx,
    ) -> (Result<Vec<wit::Output>, CallError>, Option<CallCtx>) {
        let (r, ctx) = self.with_instance(|inst| {
            inst.store.data_mut().call = Some(ctx);
            let r = inst.guest.transform(&mut inst.store, ev);
            let ctx = inst.store.data_mut().call.take();
            (r, ctx)
        });
        (r, ctx.flatten())
    }

    /// Run `f` on a pooled (or new) instance under the deadline; a trap
    /// drops the instance, anything else returns it to the pool.
    fn with_instance<T, X>(
        &self,
        f: impl FnOnce(&mut Instance) -> (wasmtime::Result<Result<T, wit::TransformError>>, X),
    ) -> (Result<T, CallError>, Option<X>) {
        let pooled = self.idle.lock().unwrap().pop();
        let mut inst = match pooled {
            Some(i) => i,
            None => match self.instantiate() {
                Ok(i) => i,
                Err(m) => return (Err(CallError::Instantiate(m)), None),
            },
        };
        self.arm(&mut inst.store);
        let (r, x) = f(&mut inst);
        inst.calls += 1;
        match r {
            Ok(r) => {
                self.release(inst);
                (r.map_err(CallError::Guest), Some(x))
            }
            Err(e) => {
                // The instance trapped: never reuse it (dropped here).
                (Err(CallError::Fatal(self.classify(&inst.store, &e))), None)
            }
        }
    }

    /// `transform-batch` (the module must export `batch`).
    fn call_batch(&self, events: &[wit::Event]) -> Result<wit::Batch, CallError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        catch_unwind(AssertUnwindSafe(|| {
            self.with_instance(|inst| {
                let r = match inst.guest.batch() {
                    Some(b) => b.call_transform_batch(&mut inst.store, events),
                    None => Ok(Err(wit::TransformError {
                        message: "the module does not export switchyard:transform/batch".into(),
                        retryable: false,
                    })),
                };
                (r, ())
            })
            .0
        }))
        .unwrap_or_else(|p| {
            Err(CallError::Fatal(format!(
                "the host failed during the call: {}",
                panic_message(&*p)
            )))
        })
    }

    /// `batch-response`: the module's reading of the vendor's answer.
    fn call_batch_response(
        &self,
        req: &wit::Request,
        items: u32,
        status: u16,
        body: &[u8],
    ) -> Result<Vec<wit::ItemOutcome>, CallError> {
        catch_unwind(AssertUnwindSafe(|| {
            self.with_instance(|inst| {
                let r = match inst.guest.batch() {
                    Some(b) => b
                        .call_batch_response(&mut inst.store, req, items, status, body)
                        .map(Ok),
                    None => Ok(Ok(Vec::new())),
                };
                (r, ())
            })
            .0
        }))
        .unwrap_or_else(|p| {
            Err(CallError::Fatal(format!(
                "the host failed during the call: {}",
                panic_message(&*p)
            )))
        })
    }

    /// Back to the idle pool, unless it is due for recycling (dropped here:
    /// the next call gets a fresh instance from `InstancePre`).
    fn release(&self, inst: Instance) {
        let limits = self.engine.limits();
        let peak = inst.store.data().limiter.peak as u64;
        self.stats.max_memory.fetch_max(peak, Ordering::Relaxed);
        if inst.calls >= self.recycle_after_calls || peak > self.recycle_above {
            self.stats.recycled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        inst.store.data().stderr.clear();
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < limits.max_idle_per_module {
            idle.push(inst);
        }
    }
}

/// The ordered modules of one consumer. Cloning shares the modules.
#[derive(Debug, Clone)]
pub struct Chain {
    pub consumer: String,
    pub modules: Vec<Arc<Module>>,
    /// Increases with every successful (re)load of a [`ChainHandle`](super::ChainHandle).
    pub generation: u64,
}

/// The host panicked outside any one module's call (not expected: calls
/// catch their own).
fn host_failure(message: String) -> ChainOutcome {
    ChainOutcome::Failed {
        module: "(host)".into(),
        message: format!("the transform host failed: {message}"),
        retryable: false,
    }
}

/// One chain run's accumulators.
struct Run<'a> {
    source: &'a Event,
    kv: &'a Arc<dyn KvStore>,
    out: Vec<OutRequest>,
    first_drop: Option<String>,
    effects: Effects,
    /// Batching: events stop before the last module and are collected here.
    batching: bool,
    items: Vec<wit::Event>,
}

impl<'a> Run<'a> {
    fn new(source: &'a Event, kv: &'a Arc<dyn KvStore>, batching: bool) -> Self {
        Run {
            source,
            kv,
            out: Vec::new(),
            first_drop: None,
            effects: Effects::default(),
            batching,
            items: Vec::new(),
        }
    }
}

/// An event on its way into a batch (opaque: the WIT record).
#[derive(Debug, Clone)]
pub struct BatchItem {
    ev: wit::Event,
    /// Bytes of its JSON texts and strings: what `batch.max_bytes` counts.
    pub approx_bytes: usize,
}

fn approx_size(e: &wit::Event) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    e.id.len()
        + e.topic.len()
        + e.account_id.len()
        + opt(&e.key)
        + opt(&e.before)
        + opt(&e.after)
        + opt(&e.data)
        + e.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + 64
}

/// Batching step 1's result for one event.
#[derive(Debug)]
pub enum PrefixOutcome {
    /// Events for the batch module (usually one), and requests that earlier
    /// modules' outputs already built (sent one by one).
    Items {
        items: Vec<BatchItem>,
        requests: Vec<OutRequest>,
    },
    Dropped {
        module: String,
    },
    Failed {
        module: String,
        message: String,
        retryable: bool,
    },
}

/// What `transform-batch` made of a batch.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub module: String,
    /// Each request with the indices (into the batch) of the items it
    /// carries, in the request's item order.
    pub requests: Vec<(OutRequest, Vec<usize>)>,
    /// Items the module could not put in a request: (index, message, retryable).
    pub failed: Vec<(usize, String, bool)>,
}

#[derive(Debug, Clone)]
pub enum BatchOutcome {
    Plan(BatchPlan),
    /// `transform-batch` failed: every item of the batch fails this way.
    Failed {
        module: String,
        message: String,
        retryable: bool,
    },
}

/// The module's verdict on one item of a batch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemVerdict {
    Ok,
    Retry(String),
    Fail(String),
}

enum Step {
    Ok,
    Fail {
        module: String,
        message: String,
        retryable: bool,
    },
}

impl Chain {
    /// Load every module (in order). The first failure fails the load.
    pub fn load(
        engine: &TransformEngine,
        consumer: &str,
        configs: &[ModuleConfig],
    ) -> Result<Chain, LoadError> {
        Self::load_with_stats(engine, consumer, configs, |_| None, 1)
    }

    pub(crate) fn load_with_stats(
        engine: &TransformEngine,
        consumer: &str,
        configs: &[ModuleConfig],
        stats: impl Fn(&str) -> Option<Arc<ModuleStats>>,
        generation: u64,
    ) -> Result<Chain, LoadError> {
        let mut modules = Vec::with_capacity(configs.len());
        for cfg in configs {
            let s = stats(&cfg.display_name());
            modules.push(Arc::new(Module::load(engine, cfg, s)?));
        }
        Ok(Chain {
            consumer: consumer.to_string(),
            modules,
            generation,
        })
    }

    pub fn stats_for(&self, name: &str) -> Option<Arc<ModuleStats>> {
        self.modules
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.stats.clone())
    }

    /// Run the chain on one event, blocking the calling thread.
    ///
    /// `Send + Sync`: call it from many threads at once. Guest code runs on
    /// this thread if it has no Tokio context (CLI, benchmarks, tests), else
    /// on the engine's guest threads while this one waits (see
    /// `threads.rs`): it never panics inside a runtime, but it blocks. Async
    /// code uses [`Chain::run_async`] instead.
    ///
    /// Semantics: an `event` output goes to the next module; a `request`
    /// output ends the chain for that output; several outputs fan out (in
    /// order). An `event` leaving the **last** module is sent as the
    /// canonical event JSON (`application/json`), so a chain of pure
    /// filters/enrichers needs no "serialise" module. If any module fails,
    /// the whole event fails (outputs of other branches are discarded: the
    /// event is retried or dead-lettered as a unit).
    ///
    /// `kv` reads see an empty store and staged effects are thrown away:
    /// delivery uses [`Chain::run_async_effects`].
    pub fn run(&self, ev: &Event) -> ChainOutcome {
        self.run_effects(ev, Arc::new(NoKv)).0
    }

    /// [`Chain::run`], also returning what the modules staged (`kv` writes,
    /// emitted events), reading committed values from `kv`.
    pub fn run_effects(&self, ev: &Event, kv: Arc<dyn KvStore>) -> (ChainOutcome, Effects) {
        let Some(first) = self.modules.first() else {
            return self.run_here(ev, &kv);
        };
        if threads::can_run_here() {
            return self.run_here(ev, &kv);
        }
        let (chain, ev) = (self.clone(), ev.clone());
        first
            .engine
            .inner
            .threads
            .run_blocking(move || chain.run_here(&ev, &kv))
            .unwrap_or_else(|m| (host_failure(m), Effects::default()))
    }

    /// [`Chain::run`] for async callers: the chain runs on the engine's guest
    /// threads and the caller awaits it, so a Tokio worker never runs guest
    /// code (a call may take up to its module's deadline, ≤ 10 s).
    pub async fn run_async(self: Arc<Chain>, ev: Event) -> ChainOutcome {
        self.run_async_effects(ev, Arc::new(NoKv)).await.0
    }

    /// [`Chain::run_async`] with the staged effects (see [`Chain::run_effects`]).
    pub async fn run_async_effects(
        self: Arc<Chain>,
        ev: Event,
        kv: Arc<dyn KvStore>,
    ) -> (ChainOutcome, Effects) {
        let Some(engine) = self.modules.first().map(|m| m.engine.clone()) else {
            return self.run_here(&ev, &kv);
        };
        engine
            .inner
            .threads
            .run(move || self.run_here(&ev, &kv))
            .await
            .unwrap_or_else(|m| (host_failure(m), Effects::default()))
    }

    /// The module that builds batches: the last one, if it exports `batch`.
    pub fn batch_module(&self) -> Option<&Arc<Module>> {
        self.modules.last().filter(|m| m.batches)
    }

    /// Batching, step 1 (one event): every module but the last, as
    /// [`Chain::run_async_effects`] runs them; the events that would enter
    /// the last module are returned for [`Chain::batch_async`].
    pub async fn prefix_async(
        self: Arc<Chain>,
        ev: Event,
        kv: Arc<dyn KvStore>,
    ) -> (PrefixOutcome, Effects) {
        let Some(engine) = self.modules.first().map(|m| m.engine.clone()) else {
            return (
                PrefixOutcome::Failed {
                    module: String::new(),
                    message: "batching needs a module that exports switchyard:transform/batch"
                        .into(),
                    retryable: false,
                },
                Effects::default(),
            );
        };
        engine
            .inner
            .threads
            .run(move || self.prefix_here(&ev, &kv))
            .await
            .unwrap_or_else(|m| {
                let ChainOutcome::Failed {
                    module,
                    message,
                    retryable,
                } = host_failure(m)
                else {
                    unreachable!()
                };
                (
                    PrefixOutcome::Failed {
                        module,
                        message,
                        retryable,
                    },
                    Effects::default(),
                )
            })
    }

    fn prefix_here(&self, ev: &Event, kv: &Arc<dyn KvStore>) -> (PrefixOutcome, Effects) {
        let mut run = Run::new(ev, kv, true);
        match self.step(0, &convert::to_wit(ev), &mut run) {
            Step::Fail {
                module,
                message,
                retryable,
            } => (
                PrefixOutcome::Failed {
                    module,
                    message,
                    retryable,
                },
                Effects::default(),
            ),
            Step::Ok if run.items.is_empty() && run.out.is_empty() => (
                PrefixOutcome::Dropped {
                    module: run.first_drop.unwrap_or_default(),
                },
                run.effects,
            ),
            Step::Ok => (
                PrefixOutcome::Items {
                    items: run
                        .items
                        .into_iter()
                        .map(|ev| {
                            let approx_bytes = approx_size(&ev);
                            BatchItem { ev, approx_bytes }
                        })
                        .collect(),
                    requests: run.out,
                },
                run.effects,
            ),
        }
    }

    /// Batching, step 2: the last module's `transform-batch` over `items`
    /// (of several events), on a guest thread.
    pub async fn batch_async(self: Arc<Chain>, items: Vec<BatchItem>) -> BatchOutcome {
        let Some(m) = self.batch_module().cloned() else {
            return BatchOutcome::Failed {
                module: String::new(),
                message: "batching needs a last module that exports switchyard:transform/batch"
                    .into(),
                retryable: false,
            };
        };
        let engine = m.engine.clone();
        engine
            .inner
            .threads
            .run(move || self.batch_here(&m, items))
            .await
            .unwrap_or_else(|message| BatchOutcome::Failed {
                module: "(host)".into(),
                message: format!("the transform host failed: {message}"),
                retryable: false,
            })
    }

    fn batch_here(&self, m: &Module, items: Vec<BatchItem>) -> BatchOutcome {
        let events: Vec<wit::Event> = items.into_iter().map(|i| i.ev).collect();
        let started = Instant::now();
        let r = m.call_batch(&events);
        switchyard_core::metrics::module_call(&self.consumer, &m.name, started.elapsed());
        match r {
            Ok(b) => {
                let n = events.len();
                let mut requests = Vec::with_capacity(b.requests.len());
                let mut failed = Vec::new();
                for br in b.requests {
                    if let Some(bad) = br.items.iter().find(|&&i| i as usize >= n) {
                        m.stats.errors.fetch_add(1, Ordering::Relaxed);
                        return BatchOutcome::Failed {
                            module: m.name.clone(),
                            message: format!(
                                "transform-batch returned item index {bad} for a batch of {n} events"
                            ),
                            retryable: false,
                        };
                    }
                    let items = br.items.iter().map(|&i| i as usize).collect();
                    requests.push((convert::request_from_wit(br.request, &m.name), items));
                }
                for (i, e) in b.failed {
                    if (i as usize) < n {
                        failed.push((i as usize, e.message, e.retryable));
                    }
                }
                BatchOutcome::Plan(BatchPlan {
                    module: m.name.clone(),
                    requests,
                    failed,
                })
            }
            Err(e) => {
                m.stats.errors.fetch_add(1, Ordering::Relaxed);
                let (message, retryable) = match e {
                    CallError::Guest(te) => (te.message, te.retryable),
                    CallError::Fatal(msg) => (msg, false),
                    CallError::Instantiate(msg) => (msg, true),
                };
                BatchOutcome::Failed {
                    module: m.name.clone(),
                    message,
                    retryable,
                }
            }
        }
    }

    /// Batching, step 3: the last module reads the vendor's answer to one
    /// batch request: one verdict per item, or `Ok(vec![])` when the answer
    /// has no per-item detail. `Err`: the module failed to read it.
    pub async fn batch_response_async(
        self: Arc<Chain>,
        req: OutRequest,
        items: u32,
        status: u16,
        body: Vec<u8>,
    ) -> Result<Vec<ItemVerdict>, String> {
        let Some(m) = self.batch_module().cloned() else {
            return Ok(Vec::new());
        };
        let engine = m.engine.clone();
        engine
            .inner
            .threads
            .run(move || {
                let wreq = wit::Request {
                    body: req.body,
                    content_type: req.content_type,
                    method: req.method,
                    path: req.path,
                    headers: req.headers,
                };
                match m.call_batch_response(&wreq, items, status, &body) {
                    Ok(v) => Ok(v
                        .into_iter()
                        .map(|o| match o {
                            wit::ItemOutcome::Ok => ItemVerdict::Ok,
                            wit::ItemOutcome::Retry(m) => ItemVerdict::Retry(m),
                            wit::ItemOutcome::Fail(m) => ItemVerdict::Fail(m),
                        })
                        .collect()),
                    Err(CallError::Guest(te)) => Err(te.message),
                    Err(CallError::Fatal(m)) | Err(CallError::Instantiate(m)) => Err(m),
                }
            })
            .await
            .unwrap_or_else(Err)
    }

    /// Run the chain on this thread (which may run guest code).
    fn run_here(&self, ev: &Event, kv: &Arc<dyn KvStore>) -> (ChainOutcome, Effects) {
        if self.modules.is_empty() {
            return (
                match convert::event_request(convert::to_wit(ev), "") {
                    Ok(r) => ChainOutcome::Requests(vec![r]),
                    Err(message) => ChainOutcome::Failed {
                        module: String::new(),
                        message,
                        retryable: false,
                    },
                },
                Effects::default(),
            );
        }
        let mut run = Run::new(ev, kv, false);
        match self.step(0, &convert::to_wit(ev), &mut run) {
            Step::Fail {
                module,
                message,
                retryable,
            } => (
                ChainOutcome::Failed {
                    module,
                    message,
                    retryable,
                },
                Effects::default(),
            ),
            Step::Ok if run.out.is_empty() => (
                ChainOutcome::Dropped {
                    module: run.first_drop.unwrap_or_default(),
                },
                run.effects,
            ),
            Step::Ok => (ChainOutcome::Requests(run.out), run.effects),
        }
    }

    fn step(&self, i: usize, ev: &wit::Event, run: &mut Run<'_>) -> Step {
        let m = &self.modules[i];
        let last = i + 1 == self.modules.len();
        if last && run.batching {
            // The last module gets this event in a batch (`batch_async`).
            run.items.push(ev.clone());
            return Step::Ok;
        }
        let started = std::time::Instant::now();
        let ctx = CallCtx::new(&self.consumer, m, run.source, run.kv, &run.effects);
        let (called, ctx) = m.call(ev, ctx);
        switchyard_core::metrics::module_call(&self.consumer, &m.name, started.elapsed());
        if let (Ok(_), Some(ctx)) = (&called, ctx) {
            ctx.into_effects(&mut run.effects);
        }
        let outputs = match called {
            Ok(o) => o,
            Err(e) => {
                m.stats.errors.fetch_add(1, Ordering::Relaxed);
                let (message, retryable) = match e {
                    CallError::Guest(te) => (te.message, te.retryable),
                    CallError::Fatal(msg) => (msg, false),
                    CallError::Instantiate(msg) => (msg, true),
                };
                return Step::Fail {
                    module: m.name.clone(),
                    message,
                    retryable,
                };
            }
        };
        if outputs.is_empty() {
            m.stats.drops.fetch_add(1, Ordering::Relaxed);
            run.first_drop.get_or_insert_with(|| m.name.clone());
            return Step::Ok;
        }
        for o in outputs {
            // An emitted event enters the next module or becomes the body
            // sent as the canonical event: its topic must obey the event
            // contract like one that entered the log. (Not quoted: a
            // module may build topics from payload values.)
            if let wit::Output::Event(e) = &o {
                if !switchyard_core::event::valid_topic(&e.topic) {
                    m.stats.errors.fetch_add(1, Ordering::Relaxed);
                    return Step::Fail {
                        module: m.name.clone(),
                        message: format!(
                            "returned an event whose topic ({} bytes) breaks the event contract: topics {}",
                            e.topic.len(),
                            switchyard_core::event::TOPIC_RULE
                        ),
                        retryable: false,
                    };
                }
            }
            match o {
                wit::Output::Request(r) => run.out.push(convert::request_from_wit(r, &m.name)),
                wit::Output::Event(e) if last => match convert::event_request(e, &m.name) {
                    Ok(r) => run.out.push(r),
                    Err(msg) => {
                        m.stats.errors.fetch_add(1, Ordering::Relaxed);
                        return Step::Fail {
                            module: m.name.clone(),
                            message: format!("returned an invalid event: {msg}"),
                            retryable: false,
                        };
                    }
                },
                wit::Output::Event(e) => {
                    if let f @ Step::Fail { .. } = self.step(i + 1, &e, run) {
                        return f;
                    }
                }
            }
        }
        Step::Ok
    }
}
