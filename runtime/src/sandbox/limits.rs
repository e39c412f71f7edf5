//! Per-task limits and the resource limiter that enforces the memory and table caps.

use std::time::Duration;

use serde::Serialize;

/// What one task run may use. Every field has a documented default (`Limits::default()`) and a
/// flag on `wasmq run` and `wasmq worker` (`cli::SandboxLimitArgs`); a task may set its own
/// timeout, memory and fuel at enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Wall-clock time from instantiation to exit (default 30 s).
    pub timeout: Duration,
    /// Linear memory, summed over all memories of the instance (default 256 MiB).
    pub memory: u64,
    /// Bytes of stdout; writing more fails the task with `output_limit` (default 16 MiB).
    pub stdout: usize,
    /// Bytes of stderr kept as the log; the rest is dropped and the log marked truncated
    /// (default 1 MiB).
    pub stderr: usize,
    /// Instruction budget (fuel); `None` runs unmetered (the default).
    pub fuel: Option<u64>,
    /// Elements per table (default 100 000).
    pub table_elements: usize,
    /// Fixed clocks and seeded randomness, so that a run can be reproduced.
    pub deterministic: bool,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MEMORY: u64 = 256 << 20;
pub const DEFAULT_STDOUT: usize = 16 << 20;
pub const DEFAULT_STDERR: usize = 1 << 20;
pub const DEFAULT_TABLE_ELEMENTS: usize = 100_000;
/// Largest output a task may be allowed: half of Redis's default `proto-max-bulk-len` (512 MB), so
/// that a result is always a value Redis takes (workers lower it further against a server
/// configured with a smaller bound).
pub const MAX_STDOUT: usize = 256 << 20;
/// Largest log kept of a task.
pub const MAX_STDERR: usize = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            memory: DEFAULT_MEMORY,
            stdout: DEFAULT_STDOUT,
            stderr: DEFAULT_STDERR,
            fuel: None,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            deterministic: false,
        }
    }
}

impl Limits {
    /// Refuses limits no result could be written with, with a one-line reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.stdout > MAX_STDOUT {
            return Err(format!("the stdout limit ({} bytes) is over the largest allowed, {MAX_STDOUT} bytes", self.stdout));
        }
        if self.stderr > MAX_STDERR {
            return Err(format!("the stderr limit ({} bytes) is over the largest allowed, {MAX_STDERR} bytes", self.stderr));
        }
        Ok(())
    }
}

/// The error a memory or table growth past the cap traps with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResourceLimitExceeded {
    #[error("the task tried to grow its memory to {desired} bytes, over its cap of {cap} bytes")]
    Memory { desired: usize, cap: u64 },
    #[error("the task tried to grow a table to {desired} elements, over its cap of {cap}")]
    Table { desired: usize, cap: usize },
}

/// Most instances, memories and tables one task may create (a component instantiates a few core
/// instances; a plain module one).
pub const MAX_INSTANCES_PER_TASK: usize = 16;
pub const MAX_MEMORIES_PER_TASK: usize = 4;
pub const MAX_TABLES_PER_TASK: usize = 16;

/// Enforces the caps of one store. A memory growth past the cap is refused the way wasm says:
/// `memory.grow` returns -1, so that a guest whose allocator can handle a failed allocation (C's
/// `malloc` returning NULL) does. The refusal is remembered: if the task then fails (most guests
/// abort on a failed allocation), it is reported as `memory_limit`, not as the abort it led to.
/// A table growth past its cap traps.
#[derive(Debug)]
pub struct TaskLimiter {
    memory_cap: u64,
    table_cap: usize,
    /// Bytes in use by the memories grown so far (a component may have several).
    memory_in_use: u64,
    /// The last memory growth refused, if any.
    pub(crate) denied: Option<ResourceLimitExceeded>,
}

impl TaskLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self { memory_cap: limits.memory, table_cap: limits.table_elements, memory_in_use: 0, denied: None }
    }
}

impl wasmtime::ResourceLimiter for TaskLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_in_use - (current as u64).min(self.memory_in_use) + desired as u64;
        if total > self.memory_cap {
            self.denied = Some(ResourceLimitExceeded::Memory { desired: total as usize, cap: self.memory_cap });
            return Ok(false);
        }
        self.memory_in_use = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_cap {
            return Err(wasmtime::Error::new(ResourceLimitExceeded::Table { desired, cap: self.table_cap }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES_PER_TASK
    }

    fn tables(&self) -> usize {
        MAX_TABLES_PER_TASK
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_TASK
    }
}
