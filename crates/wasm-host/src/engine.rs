//! `TransformEngine`: the wasmtime engine (component model, epoch
//! interruption, pooling allocator), the linker (our `host` import + WASI p2
//! with an empty context, `wasi:io/poll` bounded by the call's deadline),
//! the threads that run guest code, and the on-disk compile cache.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::{self, Level, CONTRACT_VERSION, CONTRACT_VERSIONS, GUEST_EXPORT};
use super::effects::CallCtx;
use super::limits::{EngineLimits, MemoryLimiter};
use super::threads::GuestThreads;
use super::LoadError;

/// Data of one instance's `Store`.
pub struct State {
    pub(crate) module: Arc<str>,
    pub(crate) limiter: MemoryLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) stderr: TailPipe,
    /// Deadline of the guest call in progress (set with the epoch deadline
    /// before every guest entry); host-side waits end there (`deadline.rs`).
    pub(crate) deadline: Instant,
    /// A host-side wait was cut short by `deadline`; reset before each call.
    pub(crate) wait_timed_out: bool,
    /// The `kv`/`emit` context of the `transform` call in progress (contract
    /// 0.2); `None` outside one, where those imports return an error.
    pub(crate) call: Option<CallCtx>,
}

impl State {
    pub(crate) fn new(module: Arc<str>, memory_cap: u64) -> State {
        let stderr = TailPipe::new(2048);
        // Empty WASI context: no preopens, no env, no args, no network, no
        // inherited stdio. stdout is discarded; the tail of stderr is kept
        // so a panic message can be reported with the trap.
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        State {
            module,
            limiter: MemoryLimiter::new(memory_cap),
            wasi,
            table: ResourceTable::new(),
            stderr,
            // Until a call arms it, any wait ends at once.
            deadline: Instant::now(),
            wait_timed_out: false,
            call: None,
        }
    }

    /// What `deadline.rs` needs, borrowed apart.
    pub(crate) fn poll_parts(&mut self) -> (&mut ResourceTable, Instant, &mut bool) {
        (&mut self.table, self.deadline, &mut self.wait_timed_out)
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::switchyard::transform::types::Host for State {}

impl bindings::switchyard::transform::host::Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.guest_log(level, message)
    }
}

/// Contract 0.1's `host` import: the same log.
impl bindings::v01::switchyard::transform::host::Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.guest_log(level, message)
    }
}

const NO_CALL: &str = "kv and emit are only available inside transform";

/// `kv`: staged in the call's context (`effects.rs`).
impl bindings::switchyard::transform::kv::Host for State {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.call.as_mut().ok_or(NO_CALL)?.get(&key)
    }
    fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: u32) -> Result<(), String> {
        self.call
            .as_mut()
            .ok_or(NO_CALL)?
            .set(&key, value, ttl_seconds)
    }
    fn delete(&mut self, key: String) -> Result<(), String> {
        self.call.as_mut().ok_or(NO_CALL)?.delete(&key)
    }
}

/// `emit`: staged in the call's context (`effects.rs`).
impl bindings::switchyard::transform::emit::Host for State {
    fn emit(&mut self, event: bindings::NewEvent) -> Result<String, String> {
        self.call.as_mut().ok_or(NO_CALL)?.emit(event)
    }
}

impl State {
    /// Guest log lines → `tracing`, target `switchyard::transform::guest`, with
    /// the module name. Messages are cut at 4 KiB.
    fn guest_log(&mut self, level: Level, message: String) {
        let mut msg = message;
        if msg.len() > 4096 {
            let mut cut = 4096;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let module = &*self.module;
        match level {
            Level::Trace => {
                tracing::trace!(target: "switchyard::transform::guest", module, "{msg}")
            }
            Level::Debug => {
                tracing::debug!(target: "switchyard::transform::guest", module, "{msg}")
            }
            Level::Info => tracing::info!(target: "switchyard::transform::guest", module, "{msg}"),
            Level::Warn => tracing::warn!(target: "switchyard::transform::guest", module, "{msg}"),
            Level::Error => {
                tracing::error!(target: "switchyard::transform::guest", module, "{msg}")
            }
        }
    }
}

/// A guest output stream that keeps only its last `cap` bytes.
#[derive(Clone)]
pub(crate) struct TailPipe {
    cap: usize,
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl TailPipe {
    fn new(cap: usize) -> Self {
        TailPipe {
            cap,
            buf: Arc::new(Mutex::new(VecDeque::with_capacity(cap))),
        }
    }
    fn push(&self, bytes: &[u8]) {
        let mut b = self.buf.lock().unwrap();
        let bytes = &bytes[bytes.len().saturating_sub(self.cap)..];
        let over = (b.len() + bytes.len()).saturating_sub(self.cap);
        b.drain(..over);
        b.extend(bytes);
    }
    pub(crate) fn clear(&self) {
        self.buf.lock().unwrap().clear();
    }
    /// The kept tail as text, trimmed.
    pub(crate) fn tail(&self) -> String {
        let b = self.buf.lock().unwrap();
        let v: Vec<u8> = b.iter().copied().collect();
        String::from_utf8_lossy(&v).trim().to_string()
    }
}

impl wasmtime_wasi::cli::IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for TailPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Shared, cheap to clone. One per router process (tests make their own).
#[derive(Clone)]
pub struct TransformEngine {
    pub(crate) inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<State>,
    pub(crate) limits: EngineLimits,
    /// Where guest code runs when the caller is async (see `threads.rs`).
    pub(crate) threads: GuestThreads,
    cache_dir: Option<PathBuf>,
    /// Hex digest of wasmtime's precompile-compatibility hash (covers the
    /// wasmtime version and every compilation-relevant engine setting).
    fingerprint: String,
    ticker_stop: Arc<AtomicBool>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

/// Feeds `Hash` output into SHA-256 (stable across Rust releases, unlike
/// `DefaultHasher`).
struct ShaHasher(Sha256);
impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("use the digest")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compiled component and where it came from.
pub(crate) struct Compiled {
    pub component: Component,
    pub hash: String,
    pub cache_hit: bool,
    pub contract_version: String,
}

impl TransformEngine {
    /// `cache_dir`: where compiled components are kept between runs (created
    /// if missing); `None` compiles every time.
    pub fn new(
        limits: EngineLimits,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<TransformEngine> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(limits.total_component_instances)
            .total_memories(limits.total_memories)
            .total_core_instances(limits.total_core_instances)
            .total_tables(limits.total_tables)
            .max_core_instances_per_component(limits.max_core_instances_per_component)
            .max_memories_per_component(limits.max_memories_per_component)
            .max_tables_per_component(limits.max_tables_per_component)
            .max_memories_per_module(limits.max_memories_per_component)
            .max_tables_per_module(limits.max_tables_per_component)
            .table_elements(limits.table_elements)
            .max_memory_size(limits.max_memory_cap as usize)
            .max_unused_warm_slots(limits.total_component_instances / 2);
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(anyhow::Error::from)?;

        let mut linker: Linker<State> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(anyhow::Error::from)?;
        // Waits in `wasi:io/poll` end at the call's deadline (deadline.rs).
        super::deadline::link(&mut linker).map_err(anyhow::Error::from)?;
        // Both contract versions: 0.2's imports (host, kv, emit) and 0.1's host.
        bindings::BatchTransformer::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        bindings::v01::Transformer::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)?;
        // 0.1's `types` (types only, shared with 0.2's through `with`, so its
        // bindings did not name it): the instance a 0.1 module imports.
        linker
            .instance("switchyard:transform/types@0.1.0")
            .map_err(anyhow::Error::from)?;

        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = hex(&h.0.finalize()[..8]);

        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create transform cache dir {}: {e}", dir.display())
            })?;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            let tick = limits.epoch_tick;
            std::thread::Builder::new()
                .name("sy-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })?
        };

        let threads = GuestThreads::start(limits.guest_threads)?;

        Ok(TransformEngine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                threads,
                limits,
                cache_dir,
                fingerprint,
                ticker_stop: stop,
                ticker: Mutex::new(Some(ticker)),
            }),
        })
    }

    pub fn limits(&self) -> &EngineLimits {
        &self.inner.limits
    }

    pub fn cache_dir(&self) -> Option<&Path> {
        self.inner.cache_dir.as_deref()
    }

    pub fn wasmtime_engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Read, check and compile (or load from cache) the component at `file`.
    pub(crate) fn compile(&self, file: &Path) -> Result<Compiled, LoadError> {
        let name = file.display().to_string();
        let bytes = std::fs::read(file)
            .map_err(|e| LoadError::new(&name, format!("cannot read module {name}: {e}")))?;
        let hash = hex(&Sha256::digest(&bytes));
        let engine = &self.inner.engine;

        let cache_path = self.inner.cache_dir.as_ref().map(|d| {
            d.join(format!(
                "{hash}-wasmtime48-{}.cwasm",
                self.inner.fingerprint
            ))
        });
        let mut cached = None;
        if let Some(p) = &cache_path {
            if p.is_file() {
                // SAFETY: files in the cache dir are written only by
                // `store_cache` below from `Component::serialize` of this
                // engine configuration (the key includes wasmtime's
                // compatibility hash), via write-to-temp + rename, so a reader
                // never sees a partial file. The cache dir must not be
                // writable by anyone less trusted than the router.
                match unsafe { Component::deserialize_file(engine, p) } {
                    Ok(c) => cached = Some(c),
                    Err(e) => {
                        tracing::warn!(file = %p.display(), error = %e, "ignoring unusable cached transform; recompiling")
                    }
                }
            }
        }
        let cache_hit = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                // A core module (wasm32-unknown-unknown, wasm32-wasip1, a
                // hand-written .wat) is the most common wrong file: say so
                // instead of wasmparser's "unknown binary version".
                if bytes.starts_with(b"\0asm\x01\0\0\0") {
                    return Err(LoadError::new(
                        &name,
                        format!(
                            "module {name} is a core WebAssembly module, not a component: build it for wasm32-wasip2 with switchyard-guest (see guest-sdk/README.md)"
                        ),
                    ));
                }
                let c = Component::from_binary(engine, &bytes).map_err(|e| {
                    LoadError::new(
                        &name,
                        format!("module {name} is not a valid WebAssembly component: {e:#}"),
                    )
                })?;
                if let Some(p) = &cache_path {
                    if let Err(e) = store_cache(&c, p) {
                        tracing::warn!(file = %p.display(), error = %e, "cannot write transform compile cache");
                    }
                }
                c
            }
        };
        let contract_version = check_contract(engine, &component, &name)?;
        Ok(Compiled {
            component,
            hash,
            cache_hit,
            contract_version,
        })
    }
}

fn store_cache(c: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = c.serialize().map_err(anyhow::Error::from)?;
    let tmp = path.with_extension(format!("tmp.{}.{:x}", std::process::id(), rand_u64()));
    std::fs::write(&tmp, &bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Check the component's exports before instantiating: it must export
/// `switchyard:transform/guest@0.2.x` or `@0.1.x`. Returns the version it
/// was built for.
fn check_contract(engine: &Engine, component: &Component, file: &str) -> Result<String, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let prefix = format!("{GUEST_EXPORT}@");
    let found = exports
        .iter()
        .find_map(|n| n.strip_prefix(&prefix).map(str::to_string));
    let Some(version) = found else {
        let unversioned = exports.iter().any(|n| n == GUEST_EXPORT);
        let what = if exports.is_empty() {
            "nothing".to_string()
        } else {
            exports.join(", ")
        };
        return Err(LoadError::new(
            file,
            if unversioned {
                format!(
                    "module {file} exports an unversioned {GUEST_EXPORT}; this router speaks {} — rebuild it with switchyard-guest 0.2", CONTRACT_VERSIONS.join(" and ")
                )
            } else {
                format!(
                    "module {file} does not implement world switchyard:transform/transformer@{CONTRACT_VERSION} (it exports {what}); build it with switchyard-guest 0.2"
                )
            },
        ));
    };
    if !CONTRACT_VERSIONS.iter().any(|v| compatible(&version, v)) {
        return Err(LoadError::new(
            file,
            format!(
                "module {file} was built against switchyard:transform@{version}; this router speaks {} — rebuild it with switchyard-guest 0.2",
                CONTRACT_VERSIONS.join(" and ")
            ),
        ));
    }
    Ok(version)
}

/// Semver compatibility as the component model uses it: same major, and for
/// 0.x the same minor (0.1.0 and 0.1.3 are compatible, 0.0.1 and 0.2.0 are not).
fn compatible(found: &str, ours: &str) -> bool {
    let parse = |s: &str| -> Option<(u64, u64, u64)> {
        let core = s.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
        Some((it.next()??, it.next()??, it.next()??))
    };
    match (parse(found), parse(ours)) {
        (Some((a, b, c)), Some((x, y, z))) => {
            if x > 0 {
                a == x
            } else if y > 0 {
                a == 0 && b == y
            } else {
                (a, b, c) == (x, y, z)
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod unit {
    #[test]
    fn semver_compat() {
        assert!(super::compatible("0.1.0", "0.1.0"));
        assert!(super::compatible("0.1.4", "0.1.0"));
        assert!(!super::compatible("0.0.1", "0.1.0"));
        assert!(!super::compatible("0.2.0", "0.1.0"));
        assert!(!super::compatible("1.0.0", "0.1.0"));
        assert!(super::compatible("0.2.1", "0.2.0"));
        assert!(!super::compatible("0.1.0", "0.2.0"));
    }
}
