//! The executor host: claims tasks from one or more queues, runs each in the sandbox and writes
//! its result, with leases so that no task is lost when a worker dies.
//!
//! Inside one worker process:
//! - the *claim loop* leases batches of tasks (as many as it has room for: `concurrency` running
//!   plus a prefetch that adapts to how long tasks take) and hands each to the executor runtime;
//! - the *executor runtime* (its own threads) runs at most `concurrency` tasks at once;
//! - the *completer* writes results in batches, retrying until Redis takes them;
//! - the *heartbeat* extends held leases every second and stops tasks that were cancelled or whose
//!   lease was lost; the *reaper* requeues other workers' expired leases;
//! - *wake listeners* block on each queue's signal list while the worker is idle.
//!
//! On shutdown (SIGINT/SIGTERM) the worker stops claiming, releases tasks it had not started,
//! lets running tasks finish within the grace period, then stops the rest and hands them back to
//! the queue at once, writes every result, and exits.

mod claim;
mod complete;
mod execute;
mod lease;
mod modules;
mod periodic;
mod wake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};

use crate::conn::{Conn, ConnError, Redis};
use crate::keys::Keys;
use crate::parse::{self, QueueName};
use crate::sandbox::{CancelToken, Limits, Sandbox, SandboxConfig};
use crate::store::ModuleStore;

pub use execute::{Action, backoff, resolve_limits};

/// Upper bound of the adaptive prefetch.
pub const MAX_PREFETCH: usize = 1000;

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
    /// adapts it: about 5 ms worth of work per slot, from 1 to 1000 tasks.
    pub prefetch: Option<usize>,
    /// Lease length; a held task's lease is extended every `heartbeat`.
    pub lease: Duration,
    pub heartbeat: Duration,
    pub reap_interval: Duration,
    /// How long finished tasks are kept.
    pub retention: Duration,
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
    /// Largest module this worker loads.
    pub max_module_size: u64,
    pub sandbox: SandboxConfig,
    /// Time running tasks get to finish on shutdown before they are stopped and released.
    pub grace: Duration,
    /// Exit once every queue is empty and nothing runs (for batch jobs and the demo).
    pub exit_when_idle: bool,
    /// Identifies this worker in task hashes and logs.
    pub worker_id: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let sandbox = SandboxConfig::default();
        Self {
            queues: vec![QueueWeight { queue: QueueName::new("default").expect("valid"), weight: 1 }],
            strict: false,
            concurrency: sandbox.max_concurrency,
            prefetch: None,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(1),
            reap_interval: Duration::from_secs(5),
            retention: crate::client::DEFAULT_RETENTION,
            max_attempts: 3,
            max_stalls: 5,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            default_limits: Limits::default(),
            max_timeout: Duration::from_secs(3600),
            max_input_size: crate::client::DEFAULT_MAX_INPUT_SIZE,
            max_module_size: crate::store::DEFAULT_MAX_MODULE_SIZE,
            sandbox,
            grace: Duration::from_secs(30),
            exit_when_idle: false,
            worker_id: default_worker_id(),
        }
    }
}

/// `host-pid-xxxx`: unique per process, readable in task hashes.
pub fn default_worker_id() -> String {
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).unwrap_or_else(|| "host".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// Counters of one worker run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkerReport {
    pub succeeded: u64,
    pub retried: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub released: u64,
    /// Results refused because the lease had passed to another worker.
    pub stale: u64,
}

/// A task this worker holds (claimed and not yet reported).
struct Held {
    token: u64,
    run: HeldHandle,
}

/// What the run of one held task shares with the heartbeat.
#[derive(Clone, Default)]
pub(crate) struct HeldHandle {
    pub cancel: CancelToken,
    /// Unix ms when the task started running; 0 while it waits for a run slot.
    pub started: Arc<AtomicU64>,
}

/// State shared by the worker's loops.
pub(crate) struct Shared {
    conn: Conn,
    keys: Keys,
    config: WorkerConfig,
    sandbox: Sandbox,
    modules: modules::ModuleLoader,
    worker_id: String,
    held: Mutex<HashMap<(QueueName, u64), Held>>,
    /// Signalled whenever a held task is let go (its result written).
    released: Notify,
    /// Mean wall time of running one task, µs (exponentially weighted; 0 until known).
    avg_task_us: AtomicU64,
    releasing: AtomicBool,
    counters: [AtomicU64; 6],
}

impl Shared {
    fn queues(&self) -> Vec<QueueName> {
        self.config.queues.iter().map(|q| q.queue.clone()).collect()
    }

    fn hold(&self, queue: &QueueName, seq: u64, token: u64) -> HeldHandle {
        let run = HeldHandle::default();
        self.held.lock().expect("held lock").insert((queue.clone(), seq), Held { token, run: run.clone() });
        run
    }

    fn forget(&self, queue: &QueueName, seq: u64) {
        self.held.lock().expect("held lock").remove(&(queue.clone(), seq));
        self.released.notify_one();
    }

    /// Records how long one task took, for the adaptive prefetch.
    fn observe_task(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.avg_task_us.load(Ordering::Relaxed);
        let new = if old == 0 { us.max(1) } else { (old * 7 + us) / 8 };
        self.avg_task_us.store(new.max(1), Ordering::Relaxed);
    }

    /// How many tasks to hold at most: the run slots plus a prefetch worth about 5 ms of work per
    /// slot (so that claims and results travel in batches when tasks are short, and a worker does
    /// not hoard long ones).
    fn target_held(&self) -> usize {
        let c = self.config.concurrency;
        let prefetch = match self.config.prefetch {
            Some(p) => p,
            None => match self.avg_task_us.load(Ordering::Relaxed) {
                0 => c,
                avg => (c as u64 * 5_000 / avg).clamp(1, MAX_PREFETCH as u64) as usize,
            },
        };
        c + prefetch
    }

    /// (queue, seq, token, started ms or 0) of every held task.
    fn held(&self) -> Vec<(QueueName, u64, u64, u64)> {
        self.held.lock().expect("held lock").iter().map(|((q, s), h)| (q.clone(), *s, h.token, h.run.started.load(Ordering::Relaxed))).collect()
    }

    fn held_count(&self) -> usize {
        self.held.lock().expect("held lock").len()
    }

    fn cancel(&self, queue: &QueueName, seq: u64) {
        if let Some(h) = self.held.lock().expect("held lock").get(&(queue.clone(), seq)) {
            h.run.cancel.cancel();
        }
    }

    /// True once the worker is handing its remaining tasks back (shutdown after the grace period).
    fn is_releasing(&self, _queue: &QueueName, _seq: u64) -> bool {
        self.releasing.load(Ordering::SeqCst)
    }

    fn count(&self, action: Action) {
        let i = match action {
            Action::Succeeded => 0,
            Action::Retry => 1,
            Action::Dead => 2,
            Action::Cancelled => 3,
            Action::Release => 4,
        };
        self.counters[i].fetch_add(1, Ordering::Relaxed);
    }

    fn count_stale(&self) {
        self.counters[5].fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> WorkerReport {
        let c = |i: usize| self.counters[i].load(Ordering::Relaxed);
        WorkerReport { succeeded: c(0), retried: c(1), dead: c(2), cancelled: c(3), released: c(4), stale: c(5) }
    }
}

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Connect(#[from] ConnError),
    #[error("cannot start the executor threads: {0}")]
    Runtime(std::io::Error),
    #[error("{0}")]
    Config(String),
}

/// Warns when Redis may evict keys under memory pressure: it would silently drop tasks.
async fn warn_about_eviction(conn: &mut Conn) {
    let policy: Result<Vec<String>, _> = redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy").query_async(conn).await;
    if let Ok(p) = policy
        && let Some(v) = p.get(1)
        && v != "noeviction"
    {
        tracing::warn!(policy = %v, "Redis may evict keys when memory is full, which loses tasks; set maxmemory-policy noeviction");
    }
}

/// Orders the queues for one claim round: by weight (strict), or weighted random without
/// replacement, so that over many rounds each queue leads in proportion to its weight.
fn claim_order(queues: &[QueueWeight], strict: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..queues.len()).collect();
    if strict {
        idx.sort_by_key(|&i| std::cmp::Reverse(queues[i].weight));
        return idx;
    }
    let mut order = Vec::with_capacity(idx.len());
    while !idx.is_empty() {
        let total: u64 = idx.iter().map(|&i| queues[i].weight as u64).sum();
        let mut pick = fastrand::u64(0..total);
        let pos = idx
            .iter()
            .position(|&i| {
                let w = queues[i].weight as u64;
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        order.push(idx.remove(pos));
    }
    order
}

/// Runs one held task once a run slot is free, and sends its completion to the completer: its
/// outcome, or a hand-back (`release`) when the worker stops before the task started, or an
/// `internal` failure if running it panicked (so that the task is reported, not stuck as held).
async fn run_one(
    shared: Arc<Shared>,
    task: claim::Claimed,
    handle: HeldHandle,
    run_slots: Arc<Semaphore>,
    stopping: CancelToken,
    done_tx: mpsc::UnboundedSender<complete::Pending>,
) {
    use futures_util::FutureExt;
    let (queue, seq, token) = (task.queue.clone(), task.seq, task.token);
    let attempt = task.fields.uint(crate::task::field::ATTEMPTS, u32::MAX as u64).ok().flatten().unwrap_or(1) as u32;
    // Biased: when a slot frees up as the worker stops, the stop wins.
    let slot = tokio::select! {
        biased;
        _ = stopping.cancelled() => None,
        slot = run_slots.acquire_owned() => slot.ok(),
    };
    let completion = match slot {
        // Shutting down before it started: hand it back untouched.
        None => execute::Completion::release(queue, seq, token),
        Some(slot) => {
            let started_ms = parse::now_ms();
            handle.started.store(started_ms, Ordering::Relaxed);
            let started = std::time::Instant::now();
            // Boxed: the run's state machine is large, and an unboxed one would be copied into
            // every spawned task.
            let run = Box::pin(execute::execute(&shared, task, handle.cancel));
            let mut completion = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
                Ok(c) => c,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    // A panic message may quote anything the task touched: escaped for the log.
                    tracing::error!(task = %format!("{queue}:{seq}"), panic = %crate::text::escape_control(&what, false), "running the task panicked");
                    execute::Completion::internal_failure(&shared, queue, seq, token, attempt, &format!("the worker panicked running the task: {what}"))
                }
            };
            drop(slot);
            shared.observe_task(started.elapsed());
            if completion.action != Action::Release {
                completion.fields.push((crate::task::field::STARTED, started_ms.to_string().into_bytes()));
            }
            completion
        }
    };
    let _ = done_tx.send(complete::Pending { completion });
}

/// Runs a worker until `shutdown` resolves (or, with `exit_when_idle`, until there is no work
/// left). Returns what it did.
pub async fn run(redis: Redis, keys: Keys, config: WorkerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<WorkerReport, WorkerError> {
    if config.queues.is_empty() {
        return Err(WorkerError::Config("no queue to consume".into()));
    }
    if config.concurrency == 0 {
        return Err(WorkerError::Config("concurrency must be at least 1".into()));
    }
    let sandbox = Sandbox::new(config.sandbox.clone()).map_err(|e| WorkerError::Config(e.to_string()))?;
    if let Some(w) = sandbox.artifact_warning() {
        tracing::warn!("{w}; compiled modules are kept in memory only");
    }
    tokio::pin!(shutdown);
    let Some(conn) = connect_with_retry(&redis, &mut shutdown).await? else {
        return Ok(WorkerReport::default());
    };
    run_inner(redis, conn, keys, sandbox, config, shutdown).await
}

/// Connects, retrying with backoff while Redis is unreachable (a worker may start before its
/// Redis does). Bad credentials fail at once. None if shutdown came first.
async fn connect_with_retry(redis: &Redis, shutdown: &mut (impl std::future::Future<Output = ()> + Unpin)) -> Result<Option<Conn>, WorkerError> {
    let mut delay = Duration::from_millis(200);
    loop {
        match redis.connect().await {
            Ok(c) => return Ok(Some(c)),
            Err(ConnError::Connect { source, .. })
                if source.kind() == redis::ErrorKind::AuthenticationFailed || matches!(source.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM")) =>
            {
                return Err(WorkerError::Config(format!("Redis refused the credentials: {source}")));
            }
            Err(e @ ConnError::Connect { .. }) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis is unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut *shutdown => return Ok(None),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

async fn run_inner(
    redis: Redis,
    conn: Conn,
    keys: Keys,
    sandbox: Sandbox,
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<WorkerReport, WorkerError> {
    // Task execution gets threads of its own, so that a task between two epoch ticks never delays
    // the Redis traffic of the others.
    let exec_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.concurrency)
        .thread_name("wasmq-exec")
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)?;

    let store = ModuleStore::new(conn.clone(), keys.clone(), config.max_module_size);
    let shared = Arc::new(Shared {
        modules: modules::ModuleLoader::new(store, sandbox.clone()),
        conn: conn.clone(),
        keys: keys.clone(),
        worker_id: config.worker_id.clone(),
        sandbox,
        config: config.clone(),
        held: Mutex::new(HashMap::new()),
        released: Notify::new(),
        avg_task_us: AtomicU64::new(0),
        releasing: AtomicBool::new(false),
        counters: Default::default(),
    });
    // Register the queues so that `queue stats` and `module rm` see them.
    {
        let mut c = conn.clone();
        for q in shared.queues() {
            let _: redis::RedisResult<()> = redis::cmd("SADD").arg(keys.queues()).arg(q.as_str()).query_async(&mut c).await;
        }
    }
    warn_about_eviction(&mut conn.clone()).await;
    tracing::info!(worker = %config.worker_id, queues = ?shared.queues().iter().map(|q| q.to_string()).collect::<Vec<_>>(),
        concurrency = config.concurrency, redis = %redis.describe(), "worker started");

    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let completer = tokio::spawn(complete::run(shared.clone(), done_rx));
    let heartbeat = tokio::spawn(lease::heartbeat(shared.clone(), config.heartbeat));
    let reaper = tokio::spawn(lease::reaper(shared.clone(), config.reap_interval));
    let periodic = tokio::spawn(periodic::run(shared.clone()));
    let wake = wake::Wake::new();
    let stop_listeners = Arc::new(Notify::new());
    let listeners: Vec<_> =
        shared.queues().into_iter().map(|q| tokio::spawn(wake::listen(redis.clone(), keys.clone(), q, wake.clone(), stop_listeners.clone()))).collect();

    let run_slots = Arc::new(Semaphore::new(config.concurrency));
    // Tripped on shutdown: tasks still waiting for a run slot are handed back at once.
    let stopping = CancelToken::new();
    let mut running = tokio::task::JoinSet::new();

    tokio::pin!(shutdown);
    let mut claim_conn = conn.clone();
    let mut delay = Duration::from_millis(100);
    'claiming: loop {
        // Wait for room (a held task's result written), or shutdown.
        let held = shared.held_count();
        let target = shared.target_held();
        if held >= target {
            tokio::select! {
                _ = shared.released.notified() => continue 'claiming,
                _ = &mut shutdown => break 'claiming,
            }
        }
        let mut claimed_any = false;
        let mut next_due: Option<u64> = None;
        let mut failed = false;
        let mut want = (target - held).min(MAX_PREFETCH);
        for i in claim_order(&config.queues, config.strict) {
            if want == 0 {
                break;
            }
            let queue = &config.queues[i].queue;
            let now = parse::now_ms();
            let t = std::time::Instant::now();
            let request =
                claim::ClaimRequest { n: want, lease_ms: config.lease.as_millis() as u64, worker: &config.worker_id, now, max_input: config.max_input_size };
            let batch = match claim::claim(&mut claim_conn, &keys, queue, request).await {
                Ok(b) => {
                    tracing::trace!(%queue, want, got = b.tasks.len(), us = t.elapsed().as_micros() as u64, "claimed");
                    b
                }
                Err(e) => {
                    tracing::warn!(%queue, error = %e, retry_in_ms = delay.as_millis() as u64, "claim failed");
                    failed = true;
                    continue;
                }
            };
            if batch.paused {
                tracing::debug!(%queue, "queue is paused");
            }
            if let Some(d) = batch.next_due {
                next_due = Some(next_due.map_or(d, |n: u64| n.min(d)));
            }
            for task in batch.tasks {
                claimed_any = true;
                want -= 1;
                let handle = shared.hold(&task.queue, task.seq, task.token);
                let run = run_one(shared.clone(), task, handle, run_slots.clone(), stopping.clone(), done_tx.clone());
                running.spawn_on(run, exec_rt.handle());
            }
        }
        while running.try_join_next().is_some() {}
        if failed && !claimed_any {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut shutdown => break 'claiming,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
            continue;
        }
        delay = Duration::from_millis(100);
        if claimed_any {
            continue;
        }
        // `held` was counted before claiming: with nothing outstanding then, the claims saw every
        // retry already written, so an empty answer means no work is left.
        if config.exit_when_idle && next_due.is_none() && held == 0 && shared.held_count() == 0 {
            tracing::info!("no work left; exiting");
            break 'claiming;
        }
        // Idle: wait for a wake-up token, a delayed task falling due, or at most a second.
        let wait = match next_due {
            Some(d) => Duration::from_millis(d.saturating_sub(parse::now_ms())).min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        let _ = wake.idle.send(true);
        tokio::select! {
            _ = wake.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => { let _ = wake.idle.send(false); break 'claiming; }
        }
        let _ = wake.idle.send(false);
    }

    // Shutdown: stop listening, release what has not started, give running tasks the grace period.
    stopping.cancel();
    stop_listeners.notify_waiters();
    for l in &listeners {
        l.abort();
    }
    let held = shared.held_count();
    if held > 0 {
        tracing::info!(tasks = held, grace_s = config.grace.as_secs_f64(), "shutting down: letting running tasks finish");
    }
    let drained = tokio::time::timeout(config.grace, async { while running.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        shared.releasing.store(true, Ordering::SeqCst);
        let left: Vec<_> = shared.held.lock().expect("held lock").values().map(|h| h.run.cancel.clone()).collect();
        tracing::warn!(tasks = left.len(), "grace period over: stopping the remaining tasks and handing them back");
        for c in left {
            c.cancel();
        }
        while running.join_next().await.is_some() {}
    }
    drop(done_tx);
    // Results are written before exiting; the completer retries through Redis hiccups for as long
    // as the heartbeat keeps the leases (bounded here so that a dead Redis cannot hold us forever).
    if tokio::time::timeout(config.lease, completer).await.is_err() {
        tracing::error!("could not write every result before exiting; those tasks run again after their lease expires");
    }
    heartbeat.abort();
    reaper.abort();
    periodic.abort();
    exec_rt.shutdown_background();
    let report = shared.report();
    tracing::info!(?report, "worker stopped");
    Ok(report)
}
