//! The wasmtime `Engine` of a process: its configuration, the epoch ticker that drives timeouts and
//! cancellation, and the fingerprint that keys precompiled artifacts.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, PoolingAllocationConfig};

use super::limits::{MAX_INSTANCES_PER_TASK, MAX_MEMORIES_PER_TASK, MAX_TABLES_PER_TASK};

/// How often the epoch advances. Timeouts and cancellation are checked at each tick, and a running
/// task yields to the executor at each tick, so this bounds how late either takes effect.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Bytes of each linear memory and table kept resident between tasks (bounds the extra RSS to
/// this much per pool slot).
pub const KEEP_RESIDENT: usize = 2 << 20;

/// Process-wide sandbox settings (per-task settings are [`super::Limits`]).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Most tasks that run at once; sizes the pooling allocator.
    pub max_concurrency: usize,
    /// Largest memory any single task may be given (pool slots are reserved at this size).
    pub max_memory: u64,
    /// Guest stack in bytes: deeper recursion traps with a stack overflow (default 512 KiB).
    pub max_stack: usize,
    /// Largest table any single task may be given (pool slots are reserved at this size).
    pub max_table_elements: usize,
    /// Where precompiled artifacts are kept; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Compile fuel metering into every module so that tasks can have an instruction budget and
    /// report the fuel they used.
    pub metering: bool,
    /// Use the pooling allocator (fast instantiation from pre-reserved slots). Off, every
    /// instantiation maps fresh memory.
    pub pooling: bool,
    /// Outbound HTTP of component tasks: the worker's ceiling (`--allow-hosts`), caps, TLS roots
    /// and resolver. The default allows no request.
    pub http: crate::http::HttpConfig,
}

pub const DEFAULT_MAX_STACK: usize = 512 << 10;
/// Default size of the pool's table slots: twice the default table cap.
pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 200_000;
/// Default upper bound on a task's memory (`--max-memory`).
pub const DEFAULT_MAX_MEMORY: u64 = 4 << 30;

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            max_memory: DEFAULT_MAX_MEMORY,
            max_stack: DEFAULT_MAX_STACK,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
            cache_dir: default_cache_dir(),
            metering: true,
            pooling: true,
            http: crate::http::HttpConfig::default(),
        }
    }
}

/// `$WASMQ_CACHE_DIR`, else `$XDG_CACHE_HOME/wasmq`, else `~/.cache/wasmq`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("WASMQ_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("wasmq"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("wasmq"))
}

/// Builds the engine for a configuration.
pub fn build(config: &SandboxConfig) -> wasmtime::Result<Engine> {
    let mut cfg = Config::new();
    cfg.epoch_interruption(true)
        .consume_fuel(config.metering)
        .max_wasm_stack(config.max_stack)
        // The host stack of a task's fiber must hold the guest stack plus host frames.
        .async_stack_size(config.max_stack.saturating_add(1 << 20))
        .wasm_backtrace_max_frames(None)
        // Explicit, so that WASMTIME_BACKTRACE_DETAILS in the environment cannot change the
        // engine (and with it the artifact fingerprint).
        .wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable)
        .parallel_compilation(true);
    if config.pooling {
        // Slots for the tasks that may run at once, a few spare for the precompile check, each
        // task allowed a handful of core instances (a component instantiates several).
        let tasks = config.max_concurrency.max(1) as u32 + 2;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(tasks * MAX_INSTANCES_PER_TASK as u32)
            .total_component_instances(tasks)
            .total_memories(tasks * MAX_MEMORIES_PER_TASK as u32)
            .total_tables(tasks * MAX_TABLES_PER_TASK as u32)
            .total_stacks(tasks)
            .max_memory_size(config.max_memory.min(usize::MAX as u64) as usize)
            .max_core_instances_per_component(MAX_INSTANCES_PER_TASK as u32)
            .max_memories_per_component(MAX_MEMORIES_PER_TASK as u32)
            .max_tables_per_component(MAX_TABLES_PER_TASK as u32)
            // A core module may use several memories and tables too (multi-memory, reference
            // types), within the same per-task counts as a component.
            .max_memories_per_module(MAX_MEMORIES_PER_TASK as u32)
            .max_tables_per_module(MAX_TABLES_PER_TASK as u32)
            .table_elements(config.max_table_elements)
            .max_core_instance_size(2 << 20)
            .max_component_instance_size(2 << 20);
        // Resetting a slot for the next task by unmapping its pages costs page faults and TLB
        // shootdowns on reuse. Instead keep up to KEEP_RESIDENT bytes of each memory resident and
        // zero only the pages the task dirtied (found with the PAGEMAP_SCAN ioctl where the kernel
        // has it, Linux 6.7+). Measured: a small Rust preview-1 task 32 µs -> 10 µs, a component
        // 55 µs -> 24 µs (see docs/performance.md).
        pool.linear_memory_keep_resident(KEEP_RESIDENT).table_keep_resident(KEEP_RESIDENT).pagemap_scan(wasmtime::Enabled::Auto);
        cfg.allocation_strategy(pool);
    }
    Engine::new(&cfg)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread for as long as the
/// engine lives.
pub fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasmq-epoch".into())
        .spawn(move || {
            while let Some(e) = weak.upgrade() {
                e.increment_epoch();
                drop(e);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch thread");
}

/// A Hasher that feeds SHA-256, so that the fingerprint is stable across builds of this program
/// (std's hasher makes no such promise).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

/// Identifies everything that makes a precompiled artifact loadable by this engine: the wasmtime
/// version, the compiler settings and the target. Artifacts live under a folder of this name, so
/// a new version or configuration never loads an old artifact.
pub fn fingerprint(engine: &Engine) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(&h.0.finalize()[..8])
}
