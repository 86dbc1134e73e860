//! Engine limits, in one place, each with its reason.
//!
//! | limit | default | why |
//! |---|---|---|
//! | per-call deadline | 100 ms | a transform is in the delivery path of every event; a guest that loops must not stall a consumer. Enforced with epoch interruption, set right before every guest entry (instantiation + `init` count too). |
//! | epoch tick | 10 ms | granularity of the deadline: a call is interrupted between `deadline` and `deadline + tick`. A tick is one atomic increment, so 100 Hz costs nothing. |
//! | memory cap per instance | 64 MiB | a Rust guest needs 1–2 MiB; Python starts at ~12.6 MB and grows per call. The cap is enforced by our [`MemoryLimiter`] (not by the pool) so each module can have its own cap and a memory-exhaustion failure is classifiable. |
//! | largest allowed cap (pool slot) | 256 MiB | the pooling allocator sizes every memory slot for the largest guest: slot = largest configurable cap. A module asking for more is a config error. |
//! | component instances alive (pool) | 200 | idle pooled instances (≤ 8 per module) + in-flight calls for all chains of one router. Exhaustion is a retryable failure, not a crash. |
//! | linear memories / core instances / tables | 400 / 2000 / 800 | a Rust component has 1 memory and ~4 core instances; Python/JS components have a few memories and up to ~20 core instances. Virtual reservation is 400 × 4 GiB (PROT_NONE, no RSS). |
//! | table elements | 100 000 | interpreter guests (CPython) have large function tables. |
//! | idle instances kept per module | 8 | enough for every guest thread (2–8) to find a warm instance. |
//! | calls per instance before recycling | 100 000 (module `recycle_after_calls`) | some guest runtimes leak per call (componentize-py grows by each returned `list<u8>`); a fresh instance costs ~5 µs (Rust) to a few ms (Python, JS), paid by the next call. |
//! | recycle above | 50 % of the cap (module `recycle_above`, at most the cap) | an instance whose memory passed the mark is replaced after the call instead of failing a later one. |
//! | guest threads | the machine's cores, 2–8 | every guest call of async callers (delivery) runs on these, never on a Tokio worker: a module at its deadline holds one of them, not the network I/O. More threads than cores would only time-slice guests against each other. |

use std::time::Duration;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * 1024;

/// Default per-call deadline.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(100);
/// Largest per-call deadline a module may configure (a longer one would hold
/// a delivery worker for too long; do the slow thing outside the transform).
pub const MAX_DEADLINE: Duration = Duration::from_secs(10);
/// Epoch tick: the granularity of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Default memory cap of one instance.
pub const DEFAULT_MEMORY_CAP: u64 = 64 * MIB;
/// Smallest memory cap a module may configure.
pub const MIN_MEMORY_CAP: u64 = MIB;
/// Largest memory cap a module may configure = size of a pool memory slot.
pub const MAX_MEMORY_CAP: u64 = 256 * MIB;
/// Longest `kv` key (bytes): keys live in Redis next to the consumer's own
/// keys; a module needs an identifier, not a document.
pub const KV_MAX_KEY: usize = 256;
/// Largest `kv` value (bytes): state per account, not a blob store; it is
/// staged in memory until the event's outcome is committed.
pub const KV_MAX_VALUE: usize = 64 * 1024;
/// Distinct keys one module may write (set or delete) for one event: the
/// commit is one Redis script per event.
pub const KV_WRITES_PER_EVENT: usize = 64;
/// `kv` calls (get/set/delete) one module may make for one event: each
/// `get` may be a Redis round trip on a guest thread.
pub const KV_OPS_PER_EVENT: usize = 256;
/// Events one module may emit for one event: a loop in a module must not
/// flood the log.
pub const EMITS_PER_EVENT: usize = 16;

/// Limits of one [`TransformEngine`](super::TransformEngine).
#[derive(Debug, Clone)]
pub struct EngineLimits {
    pub default_deadline: Duration,
    pub epoch_tick: Duration,
    pub default_memory_cap: u64,
    /// Pool slot size; caps above it are refused.
    pub max_memory_cap: u64,
    pub total_component_instances: u32,
    pub total_memories: u32,
    pub total_core_instances: u32,
    pub total_tables: u32,
    pub max_core_instances_per_component: u32,
    pub max_memories_per_component: u32,
    pub max_tables_per_component: u32,
    pub table_elements: usize,
    pub max_idle_per_module: usize,
    pub max_calls_per_instance: u64,
    /// Recycle an instance after a call once its memory exceeds this fraction
    /// of its cap (in percent).
    pub recycle_memory_percent: u64,
    /// Threads that run guest code for async callers (`threads.rs`).
    pub guest_threads: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            default_deadline: DEFAULT_DEADLINE,
            epoch_tick: EPOCH_TICK,
            default_memory_cap: DEFAULT_MEMORY_CAP,
            max_memory_cap: MAX_MEMORY_CAP,
            total_component_instances: 200,
            total_memories: 400,
            total_core_instances: 2000,
            total_tables: 800,
            max_core_instances_per_component: 64,
            max_memories_per_component: 16,
            max_tables_per_component: 16,
            table_elements: 100_000,
            max_idle_per_module: 8,
            max_calls_per_instance: 100_000,
            recycle_memory_percent: 50,
            guest_threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
        }
    }
}

impl EngineLimits {
    /// Epoch ticks to allow for `deadline`: at least `deadline`, at most one
    /// tick more.
    pub fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.epoch_tick.as_nanos().max(1);
        (deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1
    }
}

/// Per-store memory limiter: enforces the module's cap and records that the
/// cap was hit, so the resulting trap can be classified as memory exhaustion
/// (the trap a failed `memory.grow` leads to is not downcastable to `Trap`).
#[derive(Debug)]
pub struct MemoryLimiter {
    pub cap: usize,
    /// Set when a growth past the cap was refused; reset before each call.
    pub exceeded: bool,
    /// Largest memory size (bytes) seen in this store.
    pub peak: usize,
}

impl MemoryLimiter {
    pub fn new(cap: u64) -> Self {
        MemoryLimiter {
            cap: cap as usize,
            exceeded: false,
            peak: 0,
        }
    }
}

#[cfg(feature = "engine")]
impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap || maximum.is_some_and(|m| desired > m) {
            self.exceeded = true;
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|m| desired <= m))
    }
}

pub use switchyard_core::config::fmt_bytes;
