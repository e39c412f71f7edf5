//! The library API for producers and operators: push modules, enqueue tasks, read results, and
//! manage queues. The CLI is a thin layer over it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), wasmq::client::ClientError> {
//! use wasmq::client::{Client, EnqueueOptions};
//! use wasmq::conn::RedisOptions;
//!
//! let client = Client::connect(RedisOptions::new("redis://127.0.0.1:6379"), "wasmq").await?;
//! let id = client.enqueue("wordcount", br#"{"text": "to be or not to be"}"#, &EnqueueOptions::default()).await?.id;
//! let record = client.wait(&id, std::time::Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use redis::AsyncCommands;

use crate::conn::{Conn, ConnError, Redis, RedisOptions};
use crate::keys::Keys;
use crate::parse::{self, ParseError, QueueName, TaskId};
use crate::scripts;
use crate::store::{DEFAULT_MAX_MODULE_SIZE, ModuleStore, StoreError};
use crate::task::{Fields, TaskDataError, TaskRecord, TaskState, field};

/// What went wrong in a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] ConnError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("input is {size} bytes, more than the limit of {max} bytes (--max-input-size)")]
    InputTooLarge { size: u64, max: u64 },
    #[error("task {id}: {source}")]
    TaskData { id: String, source: TaskDataError },
    #[error("{0}")]
    Invalid(String),
    /// The tasks were enqueued, but their durability could not be confirmed.
    #[error("{} task(s) enqueued ({}) but not confirmed durable: {reason}", enqueued.len(), first_ids(enqueued))]
    NotDurable { enqueued: Vec<TaskId>, reason: String },
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A bulk enqueue failed part-way: these tasks were enqueued before it did.
    #[error("{} task(s) enqueued ({}) before the bulk enqueue failed: {source}", enqueued.len(), first_ids(enqueued))]
    Partial { enqueued: Vec<TaskId>, source: Box<ClientError> },
}

/// Options of one enqueue; `Default` is a task on queue `default`, priority 0, due at once, with
/// the worker's default limits.
#[derive(Debug, Clone)]
pub struct EnqueueOptions {
    pub queue: QueueName,
    pub priority: i64,
    pub max_attempts: Option<u32>,
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub fuel: Option<u64>,
    /// When the task becomes ready (None: at once).
    pub due: Option<SystemTime>,
    pub unique_key: Option<String>,
    pub unique_for: Option<Duration>,
    /// The expected run time, for the `wsjf` policy (overrides the learned mean).
    pub estimate: Option<Duration>,
    /// Fixed clock and seeded randomness for this task.
    pub deterministic: bool,
    /// Wait until the write is on a replica or fsynced to the AOF.
    pub durable: bool,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        Self {
            queue: QueueName::new("default").expect("valid"),
            priority: 0,
            max_attempts: None,
            timeout: None,
            memory: None,
            fuel: None,
            due: None,
            unique_key: None,
            unique_for: None,
            estimate: None,
            deterministic: false,
            durable: false,
        }
    }
}

/// A task that was enqueued (or found, for a unique key already held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub id: TaskId,
    /// False when `unique_key` was held by an unfinished task: `id` is that task.
    pub new: bool,
}

/// Counts of one queue.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    pub delayed: u64,
    pub active: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub paused: bool,
    pub policy: String,
    /// Cumulative counters since the queue was created.
    pub enqueued_total: u64,
    pub succeeded_total: u64,
    pub dead_total: u64,
    pub cancelled_total: u64,
    pub retried_total: u64,
    pub requeued_total: u64,
}

/// How a queue orders its pending tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Higher priority first, FIFO within a priority (the default).
    Priority,
    /// Weighted shortest job first (expected run time / priority), with aging.
    Wsjf,
    /// Enqueue order; priorities ignored.
    Fifo,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "priority" => Ok(Self::Priority),
            "wsjf" => Ok(Self::Wsjf),
            "fifo" => Ok(Self::Fifo),
            _ => Err(format!("unknown policy {s:?}: use priority, wsjf or fifo")),
        }
    }
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::Wsjf => "wsjf",
            Self::Fifo => "fifo",
        }
    }
}

/// Settings of the wsjf policy (see docs/scheduling.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WsjfSettings {
    /// Virtual waiting time per unit of expected run time / weight: how strongly shorter and
    /// weightier tasks are preferred over earlier ones.
    pub stretch: f64,
    /// Aging: no task is overtaken by tasks enqueued more than this long after it.
    pub max_wait: Duration,
    /// Expected run time of a module not seen yet (and without --estimate).
    pub default_estimate: Duration,
}

impl Default for WsjfSettings {
    fn default() -> Self {
        Self { stretch: 1000.0, max_wait: Duration::from_secs(600), default_estimate: Duration::from_millis(100) }
    }
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Removed from the queue and marked cancelled.
    Cancelled,
    /// Running: its worker was asked to stop it.
    Requested,
    /// Already finished in this state.
    AlreadyFinished(TaskState),
    Unknown,
}

fn first_ids(ids: &[TaskId]) -> String {
    let mut s: Vec<String> = ids.iter().take(3).map(|i| i.to_string()).collect();
    if ids.len() > 3 {
        s.push("...".into());
    }
    s.join(", ")
}

/// Most tasks and input bytes per `enqueue_bulk.lua` call.
const BULK_CHUNK: usize = 1000;
const BULK_CHUNK_BYTES: usize = 8 << 20;

/// Splits inputs into script calls of at most BULK_CHUNK tasks and about BULK_CHUNK_BYTES of input.
fn bulk_chunks(inputs: &[Vec<u8>]) -> Vec<&[Vec<u8>]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, input) in inputs.iter().enumerate() {
        if i > start && (i - start == BULK_CHUNK || bytes + input.len() > BULK_CHUNK_BYTES) {
            out.push(&inputs[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += input.len();
    }
    if start < inputs.len() {
        out.push(&inputs[start..]);
    }
    out
}

/// Default largest task input accepted by `enqueue` (`--max-input-size`).
pub const DEFAULT_MAX_INPUT_SIZE: u64 = 16 << 20;
/// Default time finished tasks are kept (`--retention`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A connection to a wasmq deployment.
pub struct Client {
    redis: Redis,
    conn: Conn,
    keys: Keys,
    store: ModuleStore,
    max_input_size: u64,
    retention: Duration,
    registered: Mutex<HashSet<QueueName>>,
    blocking: tokio::sync::Mutex<Option<Conn>>,
}

impl Client {
    /// Connects to Redis (a single node, Sentinel or Cluster URL).
    pub async fn connect(options: RedisOptions, prefix: &str) -> Result<Self, ClientError> {
        let redis = Redis::open(options)?;
        let conn = redis.connect().await?;
        Ok(Self::with_conn(redis, conn, Keys::new(prefix)))
    }

    pub fn with_conn(redis: Redis, conn: Conn, keys: Keys) -> Self {
        Self {
            store: ModuleStore::new(conn.clone(), keys.clone(), DEFAULT_MAX_MODULE_SIZE),
            redis,
            conn,
            keys,
            max_input_size: DEFAULT_MAX_INPUT_SIZE,
            retention: DEFAULT_RETENTION,
            registered: Mutex::new(HashSet::new()),
            blocking: tokio::sync::Mutex::new(None),
        }
    }

    pub fn set_max_input_size(&mut self, max: u64) {
        self.max_input_size = max;
    }

    pub fn set_max_module_size(&mut self, max: u64) {
        self.store = ModuleStore::new(self.conn.clone(), self.keys.clone(), max);
    }

    /// How long finished tasks are kept (used by cancel, which finishes tasks itself).
    pub fn set_retention(&mut self, retention: Duration) {
        self.retention = retention;
    }

    pub fn store(&self) -> &ModuleStore {
        &self.store
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Adds the queue to the registry of queues (once per client).
    async fn register_queue(&self, q: &QueueName) -> Result<(), ClientError> {
        if self.registered.lock().expect("lock").contains(q) {
            return Ok(());
        }
        let _: () = self.conn.clone().sadd(self.keys.queues(), q.as_str()).await?;
        self.registered.lock().expect("lock").insert(q.clone());
        Ok(())
    }

    fn check_input(&self, input: &[u8]) -> Result<(), ClientError> {
        if input.len() as u64 > self.max_input_size {
            return Err(ClientError::InputTooLarge { size: input.len() as u64, max: self.max_input_size });
        }
        Ok(())
    }

    /// The task fields that options set (defaults are not stored).
    fn option_fields(o: &EnqueueOptions, due: u64, now: u64) -> Vec<(&'static str, String)> {
        let mut f = Vec::new();
        if due > now {
            f.push((field::DUE, due.to_string()));
        }
        if let Some(v) = o.max_attempts {
            f.push((field::MAX_ATTEMPTS, v.to_string()));
        }
        if let Some(v) = o.timeout {
            f.push((field::TIMEOUT_MS, (v.as_millis() as u64).to_string()));
        }
        if let Some(v) = o.memory {
            f.push((field::MEMORY, v.to_string()));
        }
        if let Some(v) = o.fuel {
            f.push((field::FUEL, v.to_string()));
        }
        if let Some(v) = o.estimate {
            f.push((field::ESTIMATE_US, (v.as_micros() as u64).to_string()));
        }
        if o.deterministic {
            f.push((field::DETERMINISTIC, "1".into()));
        }
        f
    }

    /// One task for `enqueue.lua`.
    fn invocation(&self, sha: &str, input: &[u8], o: &EnqueueOptions, now: u64) -> redis::ScriptInvocation<'static> {
        let mut inv = scripts::invocation(&scripts::ENQUEUE, scripts::keys::enqueue(&self.keys.queue(&o.queue)));
        let due = o.due.map(parse::unix_ms).unwrap_or(0);
        inv.arg(self.keys.queue_base(&o.queue))
            .arg(now)
            .arg(due)
            .arg(sha)
            .arg(o.priority)
            .arg(o.unique_key.as_deref().unwrap_or(""))
            .arg(o.unique_for.map_or(0, |d| d.as_millis() as u64));
        if !input.is_empty() {
            inv.arg(field::INPUT).arg(input);
        }
        for (k, v) in Self::option_fields(o, due, now) {
            inv.arg(k).arg(v);
        }
        inv
    }

    /// Many tasks with the same options for `enqueue_bulk.lua`.
    fn bulk_invocation(&self, sha: &str, inputs: &[Vec<u8>], o: &EnqueueOptions, now: u64) -> redis::ScriptInvocation<'static> {
        let mut inv = scripts::invocation(&scripts::ENQUEUE_BULK, scripts::keys::enqueue(&self.keys.queue(&o.queue)));
        let due = o.due.map(parse::unix_ms).unwrap_or(0);
        let shared = Self::option_fields(o, due, now);
        inv.arg(self.keys.queue_base(&o.queue)).arg(now).arg(due).arg(sha).arg(o.priority).arg(shared.len());
        for (k, v) in shared {
            inv.arg(k).arg(v);
        }
        for input in inputs {
            inv.arg(input.as_slice());
        }
        inv
    }

    fn validate_options(o: &EnqueueOptions) -> Result<(), ClientError> {
        if !(parse::MIN_PRIORITY..=parse::MAX_PRIORITY).contains(&o.priority) {
            return Err(ClientError::Invalid(format!("priority {} is outside -1000000..=1000000", o.priority)));
        }
        if o.max_attempts == Some(0) || o.max_attempts.is_some_and(|m| m > 1000) {
            return Err(ClientError::Invalid("max attempts must be between 1 and 1000".into()));
        }
        if o.timeout == Some(Duration::ZERO) {
            return Err(ClientError::Invalid("timeout must be positive".into()));
        }
        if let Some(k) = &o.unique_key
            && (k.is_empty() || k.len() > 256)
        {
            return Err(ClientError::Invalid("unique key must be 1 to 256 bytes".into()));
        }
        Ok(())
    }

    /// Enqueues one task for a module given by name or hash.
    pub async fn enqueue(&self, module: &str, input: &[u8], o: &EnqueueOptions) -> Result<Enqueued, ClientError> {
        Self::validate_options(o)?;
        self.check_input(input)?;
        let sha = self.store.resolve(module).await?;
        self.register_queue(&o.queue).await?;
        let inv = self.invocation(&sha, input, o, parse::now_ms());
        let (seq, new): (u64, i64) = inv.invoke_async(&mut self.conn.clone()).await?;
        let id = TaskId::new(o.queue.clone(), seq);
        if o.durable
            && let Err(reason) = self.ensure_durable(&o.queue).await
        {
            return Err(ClientError::NotDurable { enqueued: vec![id], reason });
        }
        Ok(Enqueued { id, new: new == 1 })
    }

    /// Enqueues one task per input: one `enqueue_bulk.lua` call per chunk of up to 1000 tasks, four
    /// calls per round trip. Every input is checked before anything is written, so a bad input
    /// enqueues nothing; a failure part-way is [`ClientError::Partial`], listing what was queued.
    pub async fn enqueue_bulk(&self, module: &str, inputs: &[Vec<u8>], o: &EnqueueOptions) -> Result<Vec<Enqueued>, ClientError> {
        Self::validate_options(o)?;
        if o.unique_key.is_some() {
            return match inputs {
                [] => Ok(Vec::new()),
                [one] => Ok(vec![self.enqueue(module, one, o).await?]),
                _ => Err(ClientError::Invalid("a unique key cannot be shared by several tasks of one bulk enqueue".into())),
            };
        }
        for input in inputs {
            self.check_input(input)?;
        }
        let sha = self.store.resolve(module).await?;
        self.register_queue(&o.queue).await?;
        let mut conn = self.conn.clone();
        // Pipelined EVALSHA does not reload a missing script by itself.
        scripts::ENQUEUE_BULK.load_async(&mut conn).await?;
        let mut out = Vec::with_capacity(inputs.len());
        // A few script calls per round trip, each adding up to BULK_CHUNK tasks. Should a round
        // trip fail, the tasks of the earlier ones stay queued, and the error lists them.
        for group in bulk_chunks(inputs).chunks(4) {
            match self.enqueue_bulk_round(&mut conn, &sha, group, o).await {
                Ok(ids) => out.extend(ids),
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => return Err(ClientError::Partial { enqueued: out.into_iter().map(|e| e.id).collect(), source: Box::new(e) }),
            }
        }
        if o.durable
            && let Err(reason) = self.ensure_durable(&o.queue).await
        {
            return Err(ClientError::NotDurable { enqueued: out.into_iter().map(|e| e.id).collect(), reason });
        }
        Ok(out)
    }

    /// One round trip of a bulk enqueue: one `enqueue_bulk.lua` call per chunk, pipelined.
    async fn enqueue_bulk_round(&self, conn: &mut Conn, sha: &str, chunks: &[&[Vec<u8>]], o: &EnqueueOptions) -> Result<Vec<Enqueued>, ClientError> {
        let now = parse::now_ms();
        let mut pipe = redis::pipe();
        for chunk in chunks {
            pipe.invoke_script(&self.bulk_invocation(sha, chunk, o, now));
        }
        let firsts: Vec<u64> = match pipe.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // The server lost its script cache (a restart) since the load: every call of this
                // round trip was refused before running. Load and resend.
                scripts::ENQUEUE_BULK.load_async(conn).await?;
                pipe.query_async(conn).await?
            }
            r => r?,
        };
        let mut out = Vec::new();
        for (first, chunk) in firsts.into_iter().zip(chunks) {
            out.extend((0..chunk.len() as u64).map(|i| Enqueued { id: TaskId::new(o.queue.clone(), first + i), new: true }));
        }
        Ok(out)
    }

    /// Waits until the writes made so far on this connection are durable: fsynced to the AOF
    /// (WAITAOF, Redis 7.2+) or acknowledged by at least one replica (WAIT), or written by a server
    /// that fsyncs every write before replying (`appendfsync always`). Returns why not otherwise.
    pub async fn ensure_durable(&self, queue: &QueueName) -> Result<(), String> {
        let mut c = self.conn.clone();
        // In a Cluster these go to the queue's shard, where the writes were made.
        let at = self.keys.queue(queue).pending();
        let timeout_ms = 5000;
        let waitaof: Result<Vec<i64>, _> = c.query_at(&at, redis::cmd("WAITAOF").arg(1).arg(0).arg(timeout_ms)).await;
        if let Ok(v) = &waitaof
            && v.first().copied().unwrap_or(0) >= 1
        {
            return Ok(());
        }
        // WAIT with no replica connected would just sit out its timeout.
        let info: Result<String, _> = c.query_at(&at, redis::cmd("INFO").arg("replication")).await;
        let connected =
            info.as_deref().ok().and_then(|i| i.lines().find_map(|l| l.strip_prefix("connected_slaves:")).and_then(|n| n.trim().parse::<i64>().ok()));
        if connected.is_none_or(|n| n > 0) {
            let replicas: i64 = c.query_at(&at, redis::cmd("WAIT").arg(1).arg(timeout_ms)).await.map_err(|e| e.to_string())?;
            if replicas >= 1 {
                return Ok(());
            }
        }
        let cfg: Result<Vec<String>, _> = c.query_at(&at, redis::cmd("CONFIG").arg("GET").arg("append*")).await;
        if let Ok(cfg) = cfg {
            let get = |k: &str| cfg.chunks_exact(2).find(|p| p[0] == k).map(|p| p[1].clone());
            if get("appendonly").as_deref() == Some("yes") && get("appendfsync").as_deref() == Some("always") {
                return Ok(());
            }
        }
        Err("no replica acknowledged the write (within 5 s), and the server neither confirmed an AOF fsync (WAITAOF) nor runs with appendfsync always".into())
    }

    async fn fields(&self, id: &TaskId) -> Result<Option<Fields>, ClientError> {
        let flat: Vec<Vec<u8>> = self.conn.clone().hgetall(self.keys.task(id)).await?;
        Ok((!flat.is_empty()).then(|| Fields::from_flat(flat)))
    }

    /// The task's spec, state and (once finished) result; None for an unknown id.
    pub async fn status(&self, id: &TaskId) -> Result<Option<TaskRecord>, ClientError> {
        let Some(f) = self.fields(id).await? else { return Ok(None) };
        let mut record = TaskRecord::from_fields(id, &f).map_err(|source| ClientError::TaskData { id: id.to_string(), source })?;
        record.module_names = self.store.names_of(&record.module).await?;
        Ok(Some(record))
    }

    /// Waits up to `timeout` for the task to finish; returns its record (finished or not), or
    /// None for an unknown id. Waiting blocks on Redis (no polling loop faster than 1/s).
    pub async fn wait(&self, id: &TaskId, timeout: Duration) -> Result<Option<TaskRecord>, ClientError> {
        let task_key = self.keys.task(id);
        let reg: i64 = scripts::WAIT.key(&task_key).invoke_async(&mut self.conn.clone()).await?;
        if reg == -1 {
            return Ok(None);
        }
        if reg == 0 {
            let deadline = tokio::time::Instant::now() + timeout;
            let done_key = self.keys.queue(&id.queue).done(id.seq);
            let mut blocking = self.blocking.lock().await;
            loop {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    break;
                }
                let wait = (deadline - now).min(Duration::from_secs(1));
                if blocking.is_none() {
                    *blocking = Some(self.redis.connect_blocking().await?);
                }
                let conn = blocking.as_mut().expect("set above");
                let secs = (wait.as_secs_f64() * 1000.0).ceil() / 1000.0;
                let popped = tokio::time::timeout(
                    wait + Duration::from_secs(2),
                    redis::cmd("BLPOP").arg(&done_key).arg(secs.max(0.01)).query_async::<Option<(String, String)>>(conn),
                )
                .await;
                match popped {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        *blocking = None;
                        return Err(e.into());
                    }
                    Err(_) => *blocking = None,
                }
                let state: Option<String> = self.conn.clone().hget(&task_key, field::STATE).await?;
                match state.as_deref().and_then(TaskState::parse) {
                    None if state.is_none() => return Ok(None),
                    Some(s) if s.is_finished() => break,
                    _ => {}
                }
            }
        }
        self.status(id).await
    }

    /// Cancels a task: removed at once if it waits, stopped by its worker if it runs.
    pub async fn cancel(&self, id: &TaskId) -> Result<CancelOutcome, ClientError> {
        let qk = self.keys.queue(&id.queue);
        let (state, what): (String, String) = scripts::CANCEL
            .key(qk.pending())
            .key(qk.delayed())
            .key(qk.cancelled())
            .key(qk.stats())
            .key(qk.modrefs())
            .arg(qk.base())
            .arg(parse::now_ms())
            .arg(id.seq)
            .arg(self.retention.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(match what.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "cancelling" => CancelOutcome::Requested,
            "finished" => CancelOutcome::AlreadyFinished(TaskState::parse(&state).unwrap_or(TaskState::Succeeded)),
            _ => CancelOutcome::Unknown,
        })
    }

    /// Every queue that ever had a task, sorted.
    pub async fn queues(&self) -> Result<Vec<QueueName>, ClientError> {
        let names: Vec<Vec<u8>> = self.conn.clone().smembers(self.keys.queues()).await?;
        // Members that are not valid queue names (written by hand) are skipped.
        let mut qs: Vec<QueueName> = names.iter().filter_map(|n| std::str::from_utf8(n).ok().and_then(|n| QueueName::new(n).ok())).collect();
        qs.sort();
        Ok(qs)
    }

    /// Counts of one queue, read in one pipeline (one slot).
    pub async fn stats(&self, q: &QueueName) -> Result<QueueStats, ClientError> {
        let k = self.keys.queue(q);
        let pending = self.pending_count(q).await?;
        type Counts = (u64, u64, u64, u64, u64, std::collections::HashMap<String, String>, std::collections::HashMap<String, i64>);
        let (delayed, active, succeeded, dead, cancelled, meta, counters): Counts = redis::pipe()
            .zcard(k.delayed())
            .zcard(k.active())
            .zcard(k.succeeded())
            .zcard(k.dead())
            .zcard(k.cancelled())
            .hgetall(k.meta())
            .hgetall(k.stats())
            .query_async(&mut self.conn.clone())
            .await?;
        let c = |n: &str| counters.get(n).copied().unwrap_or(0).max(0) as u64;
        Ok(QueueStats {
            queue: q.to_string(),
            pending,
            delayed,
            active,
            succeeded,
            dead,
            cancelled,
            paused: meta.get("paused").is_some_and(|v| v == "1"),
            policy: meta.get("policy").cloned().unwrap_or_else(|| "priority".into()),
            enqueued_total: c("enqueued"),
            succeeded_total: c("succeeded"),
            dead_total: c("dead"),
            cancelled_total: c("cancelled"),
            retried_total: c("retried"),
            requeued_total: c("requeued"),
        })
    }

    /// Dead tasks of a queue, oldest first, at most `limit` (none for 0).
    pub async fn dead(&self, q: &QueueName, limit: usize) -> Result<Vec<TaskRecord>, ClientError> {
        // ZRANGE 0 -1 is the whole set: a limit of 0 must not get there.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        let seqs: Vec<u64> = self.conn.clone().zrange(self.keys.queue(q).dead(), 0, stop).await?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(r) = self.status(&TaskId::new(q.clone(), seq)).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Puts dead tasks back in their queue with fresh attempts: the given ones, or all of them.
    pub async fn retry_dead(&self, q: &QueueName, seqs: Option<&[u64]>) -> Result<Vec<TaskId>, ClientError> {
        let k = self.keys.queue(q);
        let mut conn = self.conn.clone();
        let mut retried = Vec::new();
        loop {
            let mut inv = scripts::RETRY_DEAD.prepare_invoke();
            inv.key(k.dead()).key(k.pending()).key(k.modrefs()).key(k.meta()).key(k.estimates()).key(k.signal());
            inv.arg(k.base()).arg(1000);
            if let Some(s) = seqs {
                for seq in s {
                    inv.arg(*seq);
                }
            }
            let done: Vec<u64> = inv.invoke_async(&mut conn).await?;
            let n = done.len();
            retried.extend(done.into_iter().map(|s| TaskId::new(q.clone(), s)));
            if seqs.is_some() || n == 0 {
                return Ok(retried);
            }
        }
    }

    /// Deletes finished tasks of one state that finished at least `older_than` ago; returns how
    /// many were deleted.
    pub async fn purge(&self, q: &QueueName, state: TaskState, older_than: Duration) -> Result<u64, ClientError> {
        let k = self.keys.queue(q);
        let set = match state {
            TaskState::Succeeded => k.succeeded(),
            TaskState::Dead => k.dead(),
            TaskState::Cancelled => k.cancelled(),
            other => return Err(ClientError::Invalid(format!("cannot purge {other} tasks; use succeeded, dead or cancelled"))),
        };
        let cutoff = parse::now_ms().saturating_sub(older_than.as_millis() as u64);
        let mut total = 0;
        loop {
            let n: u64 = scripts::PURGE.key(&set).arg(k.base()).arg(cutoff).arg(1000).invoke_async(&mut self.conn.clone()).await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Sets a queue's ordering policy and re-scores the tasks already pending under it.
    pub async fn set_policy(&self, q: &QueueName, policy: Policy, wsjf: WsjfSettings) -> Result<u64, ClientError> {
        if !(wsjf.stretch.is_finite() && wsjf.stretch > 0.0) {
            return Err(ClientError::Invalid("--stretch must be a positive number".into()));
        }
        self.set_queue_meta(
            q,
            &[
                ("policy", policy.as_str().to_string()),
                ("stretch", wsjf.stretch.to_string()),
                ("max_wait_ms", (wsjf.max_wait.as_millis() as u64).to_string()),
                ("default_estimate_us", (wsjf.default_estimate.as_micros() as u64).to_string()),
            ],
        )
        .await?;
        let k = self.keys.queue(q);
        let moved: u64 = scripts::REPOLICY.key(k.pending()).key(k.meta()).key(k.estimates()).arg(k.base()).invoke_async(&mut self.conn.clone()).await?;
        Ok(moved)
    }

    /// Tasks pending in a queue (in whichever structure its policy keeps them).
    pub async fn pending_count(&self, q: &QueueName) -> Result<u64, ClientError> {
        let k = self.keys.queue(q);
        let mut conn = self.conn.clone();
        let levels: Vec<String> = conn.zrange(k.levels(), 0, -1).await?;
        let mut pipe = redis::pipe();
        pipe.zcard(k.pending());
        for l in &levels {
            pipe.llen(k.level(l));
        }
        let counts: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(counts.iter().sum())
    }

    /// Wakes idle workers of a queue (after a resume, say).
    pub async fn wake(&self, q: &QueueName) -> Result<(), ClientError> {
        let _: () = self.conn.clone().rpush(self.keys.queue(q).signal(), 1).await?;
        Ok(())
    }

    /// Sets a queue setting in its meta hash (policy, paused, ...).
    pub async fn set_queue_meta(&self, q: &QueueName, pairs: &[(&str, String)]) -> Result<(), ClientError> {
        self.register_queue(q).await?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.queue(q).meta());
        for (k, v) in pairs {
            cmd.arg(*k).arg(v);
        }
        let _: () = cmd.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;

    #[test]
    fn bulk_chunks_bound_tasks_and_bytes() {
        let small = vec![vec![0u8; 10]; 2500];
        let sizes: Vec<usize> = bulk_chunks(&small).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);
        let big = vec![vec![0u8; 3 << 20]; 5];
        let sizes: Vec<usize> = bulk_chunks(&big).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert!(bulk_chunks(&[]).is_empty());
    }
}
