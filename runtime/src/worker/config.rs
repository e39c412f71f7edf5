//! What a worker can be told, with its defaults (the CLI's flags take their defaults from here)
//! and the checks that make a configuration usable.

use std::time::Duration;

use crate::queue::{MAX_ATTEMPTS, QueueName, Retention};
use crate::sandbox::{Limits, SandboxConfig};

/// Upper bound of the adaptive prefetch (and of `--prefetch`).
pub const MAX_PREFETCH: usize = 1000;
/// Default bound on the input bytes of the tasks one worker holds (`--prefetch-bytes`).
pub const DEFAULT_PREFETCH_BYTES: u64 = 16 << 20;
/// Default lease of a claimed task (`--lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default attempts of a task that did not set its own (`--max-attempts`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default expired leases of a task never seen running before it is dead (`--max-stalls`).
pub const DEFAULT_MAX_STALLS: u32 = 5;
/// Default largest timeout a task may ask for (`--max-timeout`).
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default interval of the reaper (`--reap-interval`), jittered.
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(5);
/// Default first retry delay (`--backoff-base`) and longest one (`--backoff-cap`).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Default time running tasks get to finish on shutdown (`--grace`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Most tasks a worker runs at once.
pub const MAX_CONCURRENCY: usize = 4096;

/// A queue this worker consumes, with its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueWeight {
    pub queue: QueueName,
    pub weight: u32,
}

impl std::str::FromStr for QueueWeight {
    type Err = String;
    /// `NAME` or `NAME=WEIGHT` (weight 1 to 1000, default 1).
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, weight) = match s.split_once('=') {
            Some((n, w)) => {
                let w: u32 = w.parse().map_err(|_| format!("invalid queue weight {w:?} in {s:?}: expected an integer"))?;
                if !(1..=1000).contains(&w) {
                    return Err(format!("queue weight in {s:?} must be between 1 and 1000"));
                }
                (n, w)
            }
            None => (s, 1),
        };
        Ok(Self { queue: QueueName::new(name).map_err(|e| e.to_string())?, weight })
    }
}

/// Everything a worker can be told.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queues: Vec<QueueWeight>,
    /// Always take from the heaviest non-empty queue first (instead of weighted random order).
    pub strict: bool,
    /// Tasks run at once.
    pub concurrency: usize,
    /// Tasks claimed ahead of free run slots (saves round trips when tasks are short). `None`
    /// adapts it: about 5 ms worth of work per slot, from 1 to [`MAX_PREFETCH`] tasks.
    pub prefetch: Option<usize>,
    /// Most input bytes of the tasks held at once (claimed, running or waiting): a worker never
    /// holds more, except one task whatever its size.
    pub prefetch_bytes: u64,
    /// Lease length; a held task's lease is extended every `heartbeat`.
    pub lease: Duration,
    pub heartbeat: Duration,
    pub reap_interval: Duration,
    /// Retention of finished tasks in queues that have no retention settings of their own
    /// (`wasmq queue retention`); the deprecated `--retention` sets its ages.
    pub retention: Retention,
    /// Attempts of tasks that did not set their own.
    pub max_attempts: u32,
    /// Expired leases of a task never seen running (not attempts) before it is dead.
    pub max_stalls: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Limits of tasks that did not set their own.
    pub default_limits: Limits,
    /// Largest timeout a task may ask for.
    pub max_timeout: Duration,
    /// Largest input a task may carry (checked again here: task hashes can be written by anyone
    /// with access to Redis, not only through `enqueue`).
    pub max_input_size: u64,
    /// Most children one attempt may spawn (host API `spawn`); their inputs together are at most
    /// `max_input_size`. 0: spawning is refused.
    pub max_children: usize,
    /// Largest module this worker loads.
    pub max_module_size: u64,
    pub sandbox: SandboxConfig,
    /// Time running tasks get to finish on shutdown before they are stopped and released.
    pub grace: Duration,
    /// Exit once every queue is empty and nothing runs (for batch jobs and the demo).
    pub exit_when_idle: bool,
    /// Identifies this worker in task hashes and logs.
    pub worker_id: String,
    /// Secret values by name (`wasmq worker --secret NAME=@FILE`): a task reads one through the
    /// host API's `config` when its queue is granted the name. Never written to Redis or logs.
    pub secrets: Secrets,
}

/// Secret values by name; their `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Secrets(pub std::collections::HashMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_set().entries(names.iter().map(|n| format!("{n}=***"))).finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let sandbox = SandboxConfig::default();
        Self {
            queues: vec![QueueWeight { queue: QueueName::new(crate::queue::DEFAULT_QUEUE).expect("valid"), weight: 1 }],
            strict: false,
            concurrency: sandbox.max_concurrency,
            prefetch: None,
            prefetch_bytes: DEFAULT_PREFETCH_BYTES,
            lease: DEFAULT_LEASE,
            heartbeat: Duration::from_secs(1),
            reap_interval: DEFAULT_REAP_INTERVAL,
            retention: Retention::default(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_stalls: DEFAULT_MAX_STALLS,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            default_limits: Limits::default(),
            max_timeout: DEFAULT_MAX_TIMEOUT,
            max_input_size: crate::client::DEFAULT_MAX_INPUT_SIZE,
            max_children: crate::sandbox::host::DEFAULT_MAX_CHILDREN,
            max_module_size: crate::store::DEFAULT_MAX_MODULE_SIZE,
            sandbox,
            grace: DEFAULT_GRACE,
            exit_when_idle: false,
            worker_id: default_worker_id(),
            secrets: Secrets::default(),
        }
    }
}

impl WorkerConfig {
    /// Refuses a configuration the worker cannot honour, with a one-line reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.queues.is_empty() {
            return Err("no queue to consume".into());
        }
        let mut seen = std::collections::HashSet::new();
        for q in &self.queues {
            if !seen.insert(&q.queue) {
                return Err(format!("queue {} is given twice", q.queue));
            }
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(format!("concurrency must be between 1 and {MAX_CONCURRENCY}"));
        }
        if self.prefetch.is_some_and(|p| p > MAX_PREFETCH) {
            return Err(format!("prefetch must be at most {MAX_PREFETCH}"));
        }
        if self.lease < Duration::from_secs(2) {
            return Err("the lease must be at least 2s (leases are extended every second)".into());
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.lease {
            return Err("the heartbeat must be positive and at most half the lease".into());
        }
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!("max attempts must be between 1 and {MAX_ATTEMPTS}"));
        }
        if self.max_stalls == 0 {
            return Err("max stalls must be at least 1".into());
        }
        if self.default_limits.memory > self.sandbox.max_memory {
            return Err(format!("the default memory ({}) is larger than the memory cap ({})", self.default_limits.memory, self.sandbox.max_memory));
        }
        self.default_limits.validate()?;
        Ok(())
    }
}

/// `host-pid-xxxx`: unique per process, readable in task hashes.
pub fn default_worker_id() -> String {
    format!("{}-{}-{:04x}", hostname(), std::process::id(), fastrand::u16(..))
}

/// This machine's name (`host` where it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).unwrap_or_else(|| "host".into())
}
