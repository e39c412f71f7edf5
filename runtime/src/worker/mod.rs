//! The executor host: claims tasks from one or more queues, runs each in the sandbox and writes
//! its result, with leases so that no task is lost when a worker dies.
//!
//! Inside one worker process:
//! - the *claim loop* ([`claim_loop`]) leases batches of tasks (as many as it has room for:
//!   `concurrency` running plus a prefetch that adapts to how long tasks take, bounded in bytes)
//!   and hands each to the executor runtime;
//! - the *executor runtime* (its own threads) runs at most `concurrency` tasks at once
//!   (`execute`), each task parsed once at the claim into a [`ClaimedTask`];
//! - the *completer* writes results in batches, one writer per queue (`complete`);
//! - the *heartbeat* extends held leases every second and stops tasks that were cancelled or whose
//!   lease was lost; the *reaper* requeues other workers' expired leases and applies retention
//!   (`lease`);
//! - *wake listeners* block on each queue's signal list while the worker is idle (`wake`);
//! - periodic tasks are fired by every worker, each tick once (`periodic`).
//!
//! On shutdown (SIGINT/SIGTERM) the worker stops claiming, releases tasks it had not started,
//! lets running tasks finish within the grace period, then stops the rest and hands them back to
//! the queue at once, writes every result, and exits ([`shut_down`]).

mod backoff;
mod complete;
mod config;
mod execute;
mod held;
mod lease;
mod modules;
mod periodic;
mod registry;
mod settings;
mod spawn;
mod wake;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::conn::{Conn, ConnError, Redis};
use crate::queue::{Action, ClaimRequest, ClaimedTask, Db};
use crate::sandbox::{CancelReason, CancelToken, Sandbox};
use crate::store::ModuleStore;

pub use backoff::{Backoff, retry_delay};
pub use config::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_GRACE, DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_STALLS, DEFAULT_MAX_TIMEOUT,
    DEFAULT_PREFETCH_BYTES, DEFAULT_REAP_INTERVAL, MAX_CONCURRENCY, MAX_PREFETCH, QueueWeight, Secrets, WorkerConfig, default_worker_id,
};
pub use execute::resolve_limits;

/// Counters of one worker run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WorkerReport {
    pub succeeded: u64,
    pub retried: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub released: u64,
    /// Results refused because the lease had passed to another claim.
    pub stale: u64,
}

/// What a worker is doing now: a cheap snapshot (atomics read, no Redis command) for the
/// registry entry it writes every second and for its own `/metrics` (`wasmq worker
/// --metrics-listen`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerStats {
    pub id: String,
    pub version: String,
    pub queues: Vec<String>,
    /// Run slots.
    pub concurrency: u64,
    /// Run slots in use.
    pub busy: u64,
    /// Tasks held: running and prefetched.
    pub held: u64,
    /// Input bytes of the held tasks.
    pub held_bytes: u64,
    /// Unix ms when the worker started.
    pub started_ms: u64,
    /// Results by outcome since the worker started.
    pub report: WorkerReport,
    /// Wall time of this worker's runs (from taking a run slot to the end of the run), in the buckets of
    /// [`crate::queue::HISTOGRAM_BOUNDS_US`] (not cumulative; the last bucket holds the rest).
    #[serde(skip)]
    pub run_time: crate::queue::Histogram,
}

/// Reads a running worker's [`WorkerStats`] from outside it: pass one to [`run_with`], keep a
/// clone. It holds no reference that keeps the worker's state alive after [`run_with`] returns.
#[derive(Clone, Default)]
pub struct WorkerHandle(Arc<std::sync::OnceLock<std::sync::Weak<Shared>>>);

impl WorkerHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// The worker's numbers now; None before it connected or after it stopped.
    pub fn stats(&self) -> Option<WorkerStats> {
        self.0.get()?.upgrade().map(|s| s.stats())
    }
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").field("running", &self.0.get().is_some_and(|w| w.strong_count() > 0)).finish()
    }
}

/// Run times in the buckets of `HISTOGRAM_BOUNDS_US`, as atomics (one add per run).
#[derive(Default)]
struct RunHistogram {
    buckets: [AtomicU64; crate::queue::HISTOGRAM_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl RunHistogram {
    fn observe(&self, us: u64) {
        let i = crate::queue::HISTOGRAM_BOUNDS_US.iter().position(|b| us <= *b).unwrap_or(crate::queue::HISTOGRAM_BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn load(&self) -> crate::queue::Histogram {
        crate::queue::Histogram {
            buckets: self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// State shared by the worker's loops.
pub(crate) struct Shared {
    conn: Conn,
    db: Db,
    config: WorkerConfig,
    sandbox: Sandbox,
    modules: modules::ModuleLoader,
    held: held::HeldTasks,
    /// Largest output a task may write: the configured cap, lowered below what this worker's
    /// Redis takes as one value (`proto-max-bulk-len`).
    max_output: usize,
    /// Mean wall time of running one task, µs (exponentially weighted; 0 until known).
    avg_task_us: AtomicU64,
    counters: [AtomicU64; 6],
    /// What tasks may read through the host API's `config`, per queue.
    settings: settings::TaskSettings,
    /// Set when tasks are claimed; the module warm-up runs again only after some were.
    claimed: std::sync::atomic::AtomicBool,
    /// Run slots in use (the registry shows them).
    busy: AtomicU64,
    /// This worker's run times (its `/metrics`).
    run_time: RunHistogram,
    /// Unix ms when the worker started.
    started_ms: u64,
}

impl Shared {
    fn queues(&self) -> Vec<crate::queue::QueueName> {
        self.config.queues.iter().map(|q| q.queue.clone()).collect()
    }

    /// Records how long one task took, for the adaptive prefetch.
    fn observe_task(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.avg_task_us.load(Ordering::Relaxed);
        let new = if old == 0 { us.max(1) } else { (old * 7 + us) / 8 };
        self.avg_task_us.store(new.max(1), Ordering::Relaxed);
        self.run_time.observe(us);
    }

    fn stats(&self) -> WorkerStats {
        let (held, held_bytes) = self.held.load();
        WorkerStats {
            id: self.config.worker_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            queues: self.queues().iter().map(|q| q.to_string()).collect(),
            concurrency: self.config.concurrency as u64,
            busy: self.busy.load(Ordering::Relaxed),
            held: held as u64,
            held_bytes,
            started_ms: self.started_ms,
            report: self.report(),
            run_time: self.run_time.load(),
        }
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

/// Runs a worker until `shutdown` resolves (or, with `exit_when_idle`, until there is no work
/// left). Returns what it did.
pub async fn run(redis: Redis, db: Db, config: WorkerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<WorkerReport, WorkerError> {
    run_with(redis, db, config, shutdown, &WorkerHandle::new()).await
}

/// [`run`], with `handle` reading the worker's numbers while it runs.
pub async fn run_with(
    redis: Redis,
    db: Db,
    config: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
    handle: &WorkerHandle,
) -> Result<WorkerReport, WorkerError> {
    config.validate().map_err(WorkerError::Config)?;
    let sandbox = Sandbox::new(config.sandbox.clone()).map_err(|e| WorkerError::Config(e.to_string()))?;
    if let Some(w) = sandbox.artifact_warning() {
        tracing::warn!("{w}; compiled modules are kept in memory only");
    }
    tokio::pin!(shutdown);
    let Some(conn) = connect_with_retry(&redis, &mut shutdown).await? else {
        return Ok(WorkerReport::default());
    };
    // Task execution gets threads of its own, so that a task between two epoch ticks never delays
    // the Redis traffic of the others.
    let exec_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.concurrency)
        .thread_name("wasmq-exec")
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)?;
    let max_output = redis_max_value(&mut conn.clone()).await.map_or(config.default_limits.stdout, |m| config.default_limits.stdout.min(m));
    let store = ModuleStore::new(conn.clone(), db.keys().clone(), config.max_module_size);
    let shared = Arc::new(Shared {
        modules: modules::ModuleLoader::new(store, sandbox.clone()),
        conn: conn.clone(),
        db: db.clone(),
        sandbox,
        config,
        held: Default::default(),
        max_output,
        avg_task_us: AtomicU64::new(0),
        counters: Default::default(),
        settings: Default::default(),
        claimed: Default::default(),
        busy: AtomicU64::new(0),
        run_time: Default::default(),
        started_ms: crate::parse::now_ms(),
    });
    let _ = handle.0.set(Arc::downgrade(&shared));
    // Register the queues so that `queue stats` and `module rm` see them.
    for q in shared.queues() {
        let _ = db.register_queue(&mut conn.clone(), &q).await;
    }
    warn_about_eviction(&mut conn.clone()).await;
    tracing::info!(worker = %shared.config.worker_id, queues = ?shared.queues().iter().map(|q| q.to_string()).collect::<Vec<_>>(),
        concurrency = shared.config.concurrency, redis = %redis.describe(), "worker started");

    let background = [
        tokio::spawn(lease::heartbeat(shared.clone(), shared.config.heartbeat)),
        tokio::spawn(lease::reaper(shared.clone(), shared.config.reap_interval)),
        tokio::spawn(periodic::run(shared.clone())),
        tokio::spawn(modules::warm(shared.clone(), settings::REFRESH)),
        tokio::spawn(registry::beat(shared.clone())),
    ];
    let wake = wake::Wake::new();
    let stop_listeners = Arc::new(Notify::new());
    let listeners: Vec<_> =
        shared.queues().into_iter().map(|q| tokio::spawn(wake::listen(redis.clone(), db.clone(), q, wake.clone(), stop_listeners.clone()))).collect();

    let mut runs = Runs { slots: Arc::new(Semaphore::new(shared.config.concurrency)), stopping: CancelToken::new(), set: JoinSet::new(), exec: exec_rt };
    let completer = claim_loop(&shared, &mut runs, &wake, shutdown).await;
    stop_listeners.notify_waiters();
    for l in &listeners {
        l.abort();
    }
    shut_down(&shared, runs, completer).await;
    for b in background {
        b.abort();
    }
    if let Err(e) = shared.db.worker_gone(&mut conn.clone(), &shared.config.worker_id).await {
        tracing::debug!(error = %e, "could not remove this worker from the registry; it expires by itself");
    }
    let report = shared.report();
    tracing::info!(?report, "worker stopped");
    Ok(report)
}

/// The runs of held tasks.
struct Runs {
    slots: Arc<Semaphore>,
    /// Tripped on shutdown: tasks still waiting for a run slot are handed back at once.
    stopping: CancelToken,
    set: JoinSet<execute::Done>,
    exec: tokio::runtime::Runtime,
}

/// Claims tasks while there is room, until `shutdown` (or, with `exit_when_idle`, no work left).
/// Returns the completer, with every result of a finished run handed to it.
async fn claim_loop(shared: &Arc<Shared>, runs: &mut Runs, wake: &Arc<wake::Wake>, shutdown: impl std::future::Future<Output = ()>) -> complete::Completer {
    let config = &shared.config;
    let mut completer = complete::Completer::new(shared.clone());
    tokio::pin!(shutdown);
    let mut claim_conn = shared.conn.clone();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    'claiming: loop {
        while let Some(done) = runs.set.try_join_next() {
            collect(&mut completer, done);
        }
        // Wait for room (a held task's result written), or shutdown.
        let (held, mut held_bytes) = shared.held.load();
        let target = shared.target_held();
        if held >= target || (held > 0 && held_bytes >= config.prefetch_bytes) {
            tokio::select! {
                _ = shared.held.released() => continue 'claiming,
                Some(done) = runs.set.join_next() => { collect(&mut completer, done); continue 'claiming }
                _ = &mut shutdown => break 'claiming,
            }
        }
        let mut claimed_any = false;
        let mut claimed_n = 0usize;
        let mut next_due: Option<Duration> = None;
        let mut rate_wait: Option<Duration> = None;
        let mut failed = false;
        let mut want = (target - held).min(MAX_PREFETCH);
        for i in claim_order(&config.queues, config.strict) {
            if want == 0 || (held + claimed_any as usize > 0 && held_bytes >= config.prefetch_bytes) {
                break;
            }
            let queue = &config.queues[i].queue;
            let request = ClaimRequest {
                n: want,
                max_bytes: config.prefetch_bytes.saturating_sub(held_bytes).max(1),
                lease: config.lease,
                worker: &config.worker_id,
                max_input: config.max_input_size,
                // A queue with a flow-control limit is claimed only for free run slots: tasks
                // prefetched into this worker would hold the queue's slots (and its rate
                // window) while they wait, and start in bunches.
                run_slots: config.concurrency.saturating_sub(held + claimed_n),
            };
            let batch = match shared.db.claim(&mut claim_conn, queue, request).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "claim failed");
                    failed = true;
                    continue;
                }
            };
            if batch.paused {
                tracing::debug!(%queue, "queue is paused");
            }
            if let Some(d) = batch.next_due {
                next_due = Some(next_due.map_or(d, |n| n.min(d)));
            }
            if let Some(d) = batch.rate_wait {
                rate_wait = Some(rate_wait.map_or(d, |n| n.min(d)));
            }
            if !batch.tasks.is_empty() {
                shared.claimed.store(true, Ordering::Relaxed);
            }
            for task in batch.tasks {
                claimed_any = true;
                claimed_n += 1;
                want -= 1;
                let bytes = task.spec.as_ref().map_or(0, |s| s.input.len() as u64);
                held_bytes += bytes;
                start(shared, runs, task, bytes);
            }
        }
        if failed && !claimed_any {
            tokio::select! {
                _ = backoff.wait() => {}
                _ = &mut shutdown => break 'claiming,
            }
            continue;
        }
        backoff.reset();
        if claimed_any {
            continue;
        }
        // `held` was counted before claiming: with nothing outstanding then, the claims saw every
        // retry already written, so an empty answer means no work is left.
        if config.exit_when_idle && next_due.is_none() && held == 0 && shared.held.count() == 0 {
            tracing::info!("no work left; exiting");
            break 'claiming;
        }
        // Idle: wait for a wake-up token, a finished run, or at most a second (less when a
        // delayed task falls due sooner). A queue whose rate limit let nothing start says when
        // it will: the worker sleeps until then rather than polling (tokens still wake it).
        let wait = match rate_wait {
            Some(r) => next_due.unwrap_or(Duration::MAX).min(r.max(Duration::from_millis(1))),
            None => next_due.unwrap_or(Duration::MAX).min(Duration::from_secs(1)),
        };
        let _ = wake.idle.send(true);
        tokio::select! {
            _ = wake.notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(done) = runs.set.join_next() => collect(&mut completer, done),
            _ = &mut shutdown => { let _ = wake.idle.send(false); break 'claiming; }
        }
        let _ = wake.idle.send(false);
    }
    completer
}

fn collect(completer: &mut complete::Completer, done: Result<execute::Done, tokio::task::JoinError>) {
    match done {
        Ok(d) => completer.send(d),
        // Runs catch panics themselves; a join error means the run was aborted at shutdown.
        Err(e) => tracing::error!(error = %e, "a task run ended abnormally"),
    }
}

/// Holds a claimed task and starts its run on the executor runtime.
fn start(shared: &Arc<Shared>, runs: &mut Runs, task: ClaimedTask, input_bytes: u64) {
    let run = shared.held.hold(&task.id, task.token, input_bytes);
    let fut = execute::run_held(shared.clone(), task, run, runs.slots.clone(), runs.stopping.clone());
    runs.set.spawn_on(fut, runs.exec.handle());
}

/// Shutdown: hand back at once what has not started, give running tasks the grace period, then
/// stop the rest (handed back too), and write every result.
async fn shut_down(shared: &Arc<Shared>, mut runs: Runs, mut completer: complete::Completer) {
    runs.stopping.cancel(CancelReason::Shutdown);
    let held = shared.held.count();
    if held > 0 {
        tracing::info!(tasks = held, grace_s = shared.config.grace.as_secs_f64(), "shutting down: letting running tasks finish");
    }
    let drained = tokio::time::timeout(shared.config.grace, async {
        while let Some(done) = runs.set.join_next().await {
            collect(&mut completer, done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(tasks = shared.held.count(), "grace period over: stopping the remaining tasks and handing them back");
        shared.held.cancel_all(CancelReason::Shutdown);
        while let Some(done) = runs.set.join_next().await {
            collect(&mut completer, done);
        }
    }
    // Results are written before exiting; the writers retry through Redis hiccups for as long as
    // the heartbeat keeps the leases (bounded here so that a dead Redis cannot hold us forever).
    if tokio::time::timeout(shared.config.lease, completer.finish()).await.is_err() {
        tracing::error!("could not write every result before exiting; those tasks run again after their lease expires");
    }
    runs.exec.shutdown_background();
}

/// Connects, retrying with backoff while Redis is unreachable (a worker may start before its
/// Redis does). Bad credentials fail at once. None if shutdown came first.
async fn connect_with_retry(redis: &Redis, shutdown: &mut (impl std::future::Future<Output = ()> + Unpin)) -> Result<Option<Conn>, WorkerError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match redis.connect().await {
            Ok(c) => return Ok(Some(c)),
            Err(ConnError::Connect { source, .. })
                if source.kind() == redis::ErrorKind::AuthenticationFailed || matches!(source.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM")) =>
            {
                return Err(WorkerError::Config(format!("Redis refused the credentials: {source}")));
            }
            Err(e @ ConnError::Connect { .. }) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "Redis is unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut *shutdown => return Ok(None),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
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

/// The largest output whose result Redis takes as one value: `proto-max-bulk-len` less room for
/// the rest of the call (None when the server does not say, e.g. CONFIG is not allowed).
async fn redis_max_value(conn: &mut Conn) -> Option<usize> {
    let v: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("proto-max-bulk-len").query_async(conn).await.ok()?;
    let bound: usize = v.get(1)?.parse().ok()?;
    Some(bound.saturating_sub(1 << 20))
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
