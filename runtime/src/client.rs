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

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::conn::{Conn, ConnError, Redis, RedisOptions};
use crate::http::AllowList;
use crate::parse::{self, ParseError};
use crate::queue::task::field;
use crate::queue::{
    CancelOutcome, CancelReason, Db, Due, Expiry, FlowMembersPage, FlowRecord, GroupKey, MAX_ATTEMPTS, MAX_PRIORITY, MIN_PRIORITY, NewTask, NewTasks,
    ParentFailure, Policy, QueueError, QueueLimits, QueueName, QueueStats, Retention, RetrySelection, TaskId, TaskRecord, TaskState, WaitRegistration,
    WsjfSettings,
};
use crate::store::{DEFAULT_MAX_MODULE_SIZE, ModuleStore, StoreError};

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
    TaskData { id: String, source: crate::queue::task::TaskDataError },
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Redis refused a write because it reached its `maxmemory`.
    #[error(
        "Redis is out of memory (maxmemory reached): nothing more can be enqueued until memory is freed (finished tasks purged or retention lowered: `wasmq queue retention`, `wasmq purge`) or maxmemory raised"
    )]
    OutOfMemory,
    #[error("{0}")]
    Invalid(String),
    /// A parent given with `after` does not exist.
    #[error("unknown parent task {0} (never enqueued, or its result expired); nothing was enqueued")]
    UnknownParent(TaskId),
    /// The tasks were enqueued, but their durability could not be confirmed.
    #[error("{} task(s) enqueued ({}) but not confirmed durable: {reason}", enqueued.len(), first_ids(enqueued))]
    NotDurable { enqueued: Vec<TaskId>, reason: String },
    #[error("Redis error: {0}")]
    Redis(redis::RedisError),
    /// A bulk enqueue failed part-way. `enqueued` are the ids of every task that was queued, in
    /// input order; `missing` the ranges of input positions (0-based) that were not.
    #[error("{} task(s) enqueued, inputs {} not enqueued: {source}", enqueued.len(), ranges(missing))]
    Partial { enqueued: Vec<TaskId>, missing: Vec<Range<usize>>, source: Box<ClientError> },
    /// A map failed while it built its flow. `cancelled` says whether what it had created was
    /// cancelled (otherwise `wasmq cancel FLOW` does it once Redis takes writes again).
    #[error("{}", map_failed(flow, source, cancel_error))]
    MapFailed { flow: TaskId, source: Box<ClientError>, cancel_error: Option<String> },
}

fn map_failed(flow: &TaskId, source: &ClientError, cancel_error: &Option<String>) -> String {
    match cancel_error {
        None => format!("{source}; the flow {flow} it had started is cancelled"),
        Some(e) => format!("{source}; the flow {flow} it had started could not be cancelled ({e}): run `wasmq cancel {flow}` once Redis takes writes"),
    }
}

impl From<redis::RedisError> for ClientError {
    fn from(e: redis::RedisError) -> Self {
        if e.code() == Some("OOM") { Self::OutOfMemory } else { Self::Redis(e) }
    }
}

/// `1-1000, 3001-4000` (1-based, inclusive: what an input file's line numbers are).
pub fn ranges(r: &[Range<usize>]) -> String {
    r.iter().map(|r| if r.len() == 1 { format!("{}", r.start + 1) } else { format!("{}-{}", r.start + 1, r.end) }).collect::<Vec<_>>().join(", ")
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
    /// Not ready before this time (None: at once)...
    pub at: Option<SystemTime>,
    /// ...nor before this long after it is enqueued (by the Redis server's clock).
    pub delay: Option<Duration>,
    /// A task still waiting (pending, delayed, blocked) after this is finished as `expired` and
    /// never runs (None: never).
    pub expires: Option<parse::Expires>,
    pub unique_key: Option<String>,
    pub unique_for: Option<Duration>,
    /// The expected run time, for the `wsjf` policy (overrides the learned mean).
    pub estimate: Option<Duration>,
    /// Fixed clock and seeded randomness for this task.
    pub deterministic: bool,
    /// Wait until the write is on a replica or fsynced to the AOF.
    pub durable: bool,
    /// Parents, in the task's queue: the task is `blocked` until each has succeeded.
    pub after: Vec<TaskId>,
    pub on_parent_failure: ParentFailure,
    /// The task's input is the JSON array of its parents' outputs, in the order of `after`.
    pub input_from_after: bool,
    /// Hosts the task may send HTTP requests to (within the worker's `--allow-hosts`).
    pub allow_hosts: AllowList,
    /// Caps of the task's HTTP use per attempt, below the worker's (None: the worker's).
    pub max_http_requests: Option<u32>,
    pub max_http_response_bytes: Option<u64>,
    /// The task's group (a tenant, a customer): claims go round-robin across a queue's groups,
    /// and the queue's group limits apply to each (`wasmq queue limit --group-*`).
    pub group: Option<GroupKey>,
}

impl Default for EnqueueOptions {
    fn default() -> Self {
        Self {
            queue: QueueName::new(crate::queue::DEFAULT_QUEUE).expect("valid"),
            priority: 0,
            max_attempts: None,
            timeout: None,
            memory: None,
            fuel: None,
            at: None,
            delay: None,
            expires: None,
            unique_key: None,
            unique_for: None,
            estimate: None,
            deterministic: false,
            durable: false,
            after: Vec::new(),
            on_parent_failure: ParentFailure::Block,
            input_from_after: false,
            allow_hosts: AllowList::default(),
            max_http_requests: None,
            max_http_response_bytes: None,
            group: None,
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

pub(crate) fn first_ids(ids: &[TaskId]) -> String {
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

/// Most tasks one `drain.lua` call finishes.
const DRAIN_BATCH: u64 = 1000;

/// Default largest task input accepted by `enqueue` (`--max-input-size`).
pub const DEFAULT_MAX_INPUT_SIZE: u64 = 16 << 20;

/// Default fan-in of a map's reduction tree (`map --reduce-fan-in`, the API's `reduce_fan_in`).
pub const DEFAULT_FAN_IN: usize = 16;
/// Largest fan-in of a reduction tree.
pub const MAX_FAN_IN: usize = 10_000;

/// How a durable enqueue confirms its write, found once per client (see [`Client::enqueue`]).
#[derive(Debug, Clone)]
enum Durability {
    /// The server fsyncs every write before replying (`appendfsync always`).
    Fsynced,
    /// `WAIT 1 <ms>` or `WAITAOF 1 0 <ms>` after the write, on the connection that wrote.
    Wait(redis::Cmd),
    /// Nothing can confirm it, and why.
    Impossible(String),
}

/// How long a durable enqueue waits for its confirmation.
const DURABLE_TIMEOUT_MS: u64 = 5000;

/// A connection to a wasmq deployment.
pub struct Client {
    redis: Redis,
    conn: Conn,
    db: Db,
    store: ModuleStore,
    max_input_size: u64,
    retention: Retention,
    registered: Mutex<HashSet<QueueName>>,
    /// A connection of its own for `result --wait` (its BLPOP blocks it).
    blocking: tokio::sync::Mutex<Option<Conn>>,
    /// A connection of its own for durable enqueues (their WAIT blocks it), and how they confirm.
    durable: tokio::sync::Mutex<Option<(Conn, Durability)>>,
}

impl Client {
    /// Connects to Redis (a single node, Sentinel or Cluster URL).
    pub async fn connect(options: RedisOptions, prefix: &str) -> Result<Self, ClientError> {
        let redis = Redis::open(options)?;
        let conn = redis.connect().await?;
        Ok(Self::with_conn(redis, conn, Db::new(prefix)))
    }

    pub fn with_conn(redis: Redis, conn: Conn, db: Db) -> Self {
        Self {
            store: ModuleStore::new(conn.clone(), db.keys().clone(), DEFAULT_MAX_MODULE_SIZE),
            redis,
            conn,
            db,
            max_input_size: DEFAULT_MAX_INPUT_SIZE,
            retention: Retention::default(),
            registered: Mutex::new(HashSet::new()),
            blocking: tokio::sync::Mutex::new(None),
            durable: tokio::sync::Mutex::new(None),
        }
    }

    pub fn set_max_input_size(&mut self, max: u64) {
        self.max_input_size = max;
    }

    pub fn set_max_module_size(&mut self, max: u64) {
        self.store = ModuleStore::new(self.conn.clone(), self.db.keys().clone(), max);
    }

    /// The retention applied by cancels (which finish tasks themselves) in queues without
    /// retention settings of their own.
    pub fn set_default_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    pub fn store(&self) -> &ModuleStore {
        &self.store
    }

    pub fn db(&self) -> &Db {
        &self.db
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
        self.db.register_queue(&mut self.conn.clone(), q).await?;
        self.registered.lock().expect("lock").insert(q.clone());
        Ok(())
    }

    fn check_input(&self, input: &[u8]) -> Result<(), ClientError> {
        if input.len() as u64 > self.max_input_size {
            return Err(ClientError::InputTooLarge { size: input.len() as u64, max: self.max_input_size });
        }
        Ok(())
    }

    /// The task fields that options set (defaults are not stored: a pending task stays small).
    fn option_fields(o: &EnqueueOptions) -> Vec<(&'static str, Vec<u8>)> {
        let mut f: Vec<(&'static str, String)> = Vec::new();
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
        if o.input_from_after {
            f.push((field::INPUT_FROM_AFTER, "1".into()));
        }
        if !o.allow_hosts.is_empty() {
            f.push((field::ALLOW_HOSTS, o.allow_hosts.to_string()));
        }
        if let Some(v) = o.max_http_requests {
            f.push((field::MAX_HTTP_REQUESTS, v.to_string()));
        }
        if let Some(v) = o.max_http_response_bytes {
            f.push((field::MAX_HTTP_RESPONSE_BYTES, v.to_string()));
        }
        if let Some(g) = &o.group {
            f.push((field::GROUP, g.to_string()));
        }
        f.into_iter().map(|(k, v)| (k, v.into_bytes())).collect()
    }

    fn due(o: &EnqueueOptions) -> Due {
        Due { at_ms: o.at.map(parse::unix_ms).unwrap_or(0), delay: o.delay.unwrap_or_default() }
    }

    fn expiry(o: &EnqueueOptions) -> Expiry {
        match o.expires {
            None => Expiry::default(),
            Some(parse::Expires::After(d)) => Expiry { at_ms: 0, after: d },
            // A time before 1970 is as good as past: 1 ms.
            Some(parse::Expires::At(t)) => Expiry { at_ms: parse::unix_ms(t).max(1), after: Duration::ZERO },
        }
    }

    fn validate_options(o: &EnqueueOptions) -> Result<(), ClientError> {
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&o.priority) {
            return Err(ClientError::Invalid(format!("priority {} is outside {MIN_PRIORITY}..={MAX_PRIORITY}", o.priority)));
        }
        if o.max_attempts == Some(0) || o.max_attempts.is_some_and(|m| m > MAX_ATTEMPTS) {
            return Err(ClientError::Invalid(format!("max attempts must be between 1 and {MAX_ATTEMPTS}")));
        }
        if o.timeout == Some(Duration::ZERO) {
            return Err(ClientError::Invalid("timeout must be positive".into()));
        }
        if let Some(k) = &o.unique_key
            && (k.is_empty() || k.len() > 256)
        {
            return Err(ClientError::Invalid("unique key must be 1 to 256 bytes".into()));
        }
        if let Some(p) = o.after.iter().find(|p| p.queue != o.queue) {
            return Err(ClientError::Invalid(format!("parent {p} is not in queue {}: a task and its parents share one queue", o.queue)));
        }
        if o.input_from_after && o.after.is_empty() {
            return Err(ClientError::Invalid("--input-from-after needs --after".into()));
        }
        Ok(())
    }

    /// Enqueues one task for a module given by name or hash. With `durable`, the write is
    /// confirmed (fsynced or replicated) on the connection that made it, or the error says the
    /// task was enqueued without that confirmation.
    pub async fn enqueue(&self, module: &str, input: &[u8], o: &EnqueueOptions) -> Result<Enqueued, ClientError> {
        self.enqueue_with(module, input, o, &[]).await
    }

    /// `enqueue` with further task fields (a flow's members carry their flow).
    async fn enqueue_with(&self, module: &str, input: &[u8], o: &EnqueueOptions, extra: &[(&'static str, Vec<u8>)]) -> Result<Enqueued, ClientError> {
        Self::validate_options(o)?;
        self.check_input(input)?;
        let sha = self.store.resolve(module).await?;
        self.register_queue(&o.queue).await?;
        let mut fields = Self::option_fields(o);
        fields.extend_from_slice(extra);
        if !input.is_empty() {
            fields.push((field::INPUT, input.to_vec()));
        }
        let task = NewTask {
            module: &sha,
            priority: o.priority,
            due: Self::due(o),
            expires: Self::expiry(o),
            unique_key: o.unique_key.as_deref(),
            unique_for: o.unique_for,
            fields,
            after: o.after.iter().map(|p| p.seq).collect(),
            on_parent_failure: o.on_parent_failure,
        };
        let (reply, durable) = if o.durable {
            let mut guard = self.durable_conn(&o.queue).await?;
            let (conn, how) = guard.as_mut().expect("set by durable_conn");
            let wait = match how {
                Durability::Wait(cmd) => Some(cmd.clone()),
                _ => None,
            };
            let (reply, waited) = self.db.enqueue_and_wait(conn, &o.queue, &task, wait.as_ref()).await.map_err(|e| Self::parent_error(e, &o.queue))?;
            let durable = match (how, waited) {
                (Durability::Fsynced, _) => Ok(()),
                (Durability::Impossible(why), _) => Err(why.clone()),
                (Durability::Wait(_), Some(Ok(n))) if n >= 1 => Ok(()),
                (Durability::Wait(_), Some(Ok(_))) => Err(format!("no replica or AOF fsync acknowledged the write within {DURABLE_TIMEOUT_MS} ms")),
                (Durability::Wait(_), Some(Err(e))) => Err(format!("the confirmation failed: {e}")),
                (Durability::Wait(_), None) => Err("the confirmation was not sent".into()),
            };
            (reply, durable)
        } else {
            (self.db.enqueue(&mut self.conn.clone(), &o.queue, &task).await.map_err(|e| Self::parent_error(e, &o.queue))?, Ok(()))
        };
        let id = TaskId::new(o.queue.clone(), reply.seq);
        if reply.new {
            self.undo_if_module_removing(&sha, std::slice::from_ref(&id)).await?;
        }
        if let Err(reason) = durable {
            return Err(ClientError::NotDurable { enqueued: vec![id], reason });
        }
        Ok(Enqueued { id, new: reply.new })
    }

    fn parent_error(e: QueueError, q: &QueueName) -> ClientError {
        match e {
            QueueError::UnknownParent(seq) => ClientError::UnknownParent(TaskId::new(q.clone(), seq)),
            QueueError::Redis(e) => e.into(),
            other => other.into(),
        }
    }

    /// After tasks of module `sha` were written: if `module rm` is removing the module, cancels
    /// them and fails (see `ModuleStore::remove`).
    async fn undo_if_module_removing(&self, sha: &str, ids: &[TaskId]) -> Result<(), ClientError> {
        if !self.store.is_removing(sha).await? {
            return Ok(());
        }
        for id in ids {
            self.cancel(id).await?;
        }
        Err(StoreError::Removing(sha.to_string()).into())
    }

    /// The durable-enqueue connection, opened (and its way of confirming found) on first use.
    async fn durable_conn(&self, q: &QueueName) -> Result<tokio::sync::MutexGuard<'_, Option<(Conn, Durability)>>, ClientError> {
        let mut guard = self.durable.lock().await;
        if guard.is_none() {
            let mut conn = self.redis.connect_blocking().await?;
            let how = self.durability(&mut conn, q).await;
            *guard = Some((conn, how));
        }
        Ok(guard)
    }

    /// How writes to `q`'s node can be confirmed: `appendfsync always`; WAITAOF (Redis 7.2+,
    /// with the AOF on); WAIT for a replica; or not at all.
    async fn durability(&self, conn: &mut Conn, q: &QueueName) -> Durability {
        let at = self.db.anchor(q);
        let cfg: Result<Vec<String>, _> = conn.query_at(&at, redis::cmd("CONFIG").arg("GET").arg("append*")).await;
        let cfg = cfg.unwrap_or_default();
        let get = |k: &str| cfg.chunks_exact(2).find(|p| p[0] == k).map(|p| p[1].as_str());
        let aof = get("appendonly") == Some("yes");
        if aof && get("appendfsync") == Some("always") {
            return Durability::Fsynced;
        }
        let info: Option<redis::InfoDict> = conn.query_at(&at, redis::cmd("INFO").arg("server").arg("replication")).await.ok();
        let field = |name: &str| info.as_ref().and_then(|i| i.get::<String>(name));
        let version_text = field("redis_version").unwrap_or_default();
        let version: Vec<u32> = version_text.split('.').filter_map(|p| p.parse().ok()).collect();
        if aof && version.as_slice() >= [7, 2].as_slice() {
            let mut c = redis::cmd("WAITAOF");
            c.arg(1).arg(0).arg(DURABLE_TIMEOUT_MS);
            return Durability::Wait(c);
        }
        if field("connected_slaves").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0 {
            let mut c = redis::cmd("WAIT");
            c.arg(1).arg(DURABLE_TIMEOUT_MS);
            return Durability::Wait(c);
        }
        Durability::Impossible("no replica is connected, and the server neither runs with appendfsync always nor can confirm an AOF fsync (WAITAOF)".into())
    }

    /// Enqueues one task per input: one `enqueue_bulk.lua` call per chunk of up to 1000 tasks, four
    /// calls per round trip. Every input is checked before anything is written, so a bad input
    /// enqueues nothing. A failure part-way is [`ClientError::Partial`], which lists exactly the
    /// tasks that were queued (in input order) and the inputs that were not; nothing more is sent
    /// after a round trip with a failure.
    pub async fn enqueue_bulk(&self, module: &str, inputs: &[Vec<u8>], o: &EnqueueOptions) -> Result<Vec<Enqueued>, ClientError> {
        self.enqueue_bulk_with(module, inputs, o, &[]).await
    }

    /// `enqueue_bulk` with further task fields shared by every task.
    async fn enqueue_bulk_with(
        &self,
        module: &str,
        inputs: &[Vec<u8>],
        o: &EnqueueOptions,
        extra: &[(&'static str, Vec<u8>)],
    ) -> Result<Vec<Enqueued>, ClientError> {
        Self::validate_options(o)?;
        if o.unique_key.is_some() || !o.after.is_empty() {
            return match inputs {
                [] => Ok(Vec::new()),
                [one] => Ok(vec![self.enqueue_with(module, one, o, extra).await?]),
                _ => Err(ClientError::Invalid("a unique key or parents cannot be shared by several tasks of one bulk enqueue".into())),
            };
        }
        for input in inputs {
            self.check_input(input)?;
        }
        let sha = self.store.resolve(module).await?;
        self.register_queue(&o.queue).await?;
        let mut shared = Self::option_fields(o);
        shared.extend_from_slice(extra);
        let tasks = NewTasks { module: &sha, priority: o.priority, due: Self::due(o), expires: Self::expiry(o), shared };
        let mut durable_guard = if o.durable { Some(self.durable_conn(&o.queue).await?) } else { None };
        let mut shared_conn = self.conn.clone();
        let mut out = Vec::with_capacity(inputs.len());
        let mut missing: Vec<Range<usize>> = Vec::new();
        let mut first_error: Option<ClientError> = None;
        let mut not_durable: Option<String> = None;
        let chunks = bulk_chunks(inputs);
        let mut start = 0;
        for group in chunks.chunks(4) {
            let group_len: usize = group.iter().map(|c| c.len()).sum();
            if first_error.is_some() {
                push_range(&mut missing, start..start + group_len);
                start += group_len;
                continue;
            }
            let (conn, wait) = match durable_guard.as_mut().and_then(|g| g.as_mut()) {
                Some((conn, Durability::Wait(cmd))) => (conn, Some(cmd.clone())),
                Some((conn, _)) => (conn, None),
                None => (&mut shared_conn, None),
            };
            let round = self.db.enqueue_bulk_round(conn, &o.queue, &tasks, group, wait.as_ref()).await;
            let (replies, waited) = match round {
                Ok(r) => r,
                Err(e) => {
                    push_range(&mut missing, start..start + group_len);
                    start += group_len;
                    first_error = Some(e.into());
                    continue;
                }
            };
            for (reply, chunk) in replies.into_iter().zip(group) {
                match reply {
                    Ok(first) => out.extend((0..chunk.len() as u64).map(|i| Enqueued { id: TaskId::new(o.queue.clone(), first + i), new: true })),
                    Err(e) => {
                        push_range(&mut missing, start..start + chunk.len());
                        first_error.get_or_insert(e.into());
                    }
                }
                start += chunk.len();
            }
            if o.durable && not_durable.is_none() {
                let how = durable_guard.as_ref().and_then(|g| g.as_ref()).map(|(_, h)| h.clone());
                not_durable = match (how, waited) {
                    (Some(Durability::Impossible(why)), _) => Some(why),
                    (Some(Durability::Wait(_)), Some(Ok(n))) if n < 1 => {
                        Some(format!("no replica or AOF fsync acknowledged the write within {DURABLE_TIMEOUT_MS} ms"))
                    }
                    (Some(Durability::Wait(_)), Some(Err(e))) => Some(format!("the confirmation failed: {e}")),
                    _ => None,
                };
            }
        }
        drop(durable_guard);
        let ids: Vec<TaskId> = out.iter().map(|e| e.id.clone()).collect();
        if !ids.is_empty() {
            self.undo_if_module_removing(&sha, &ids).await?;
        }
        if let Some(source) = first_error {
            if out.is_empty() {
                return Err(source);
            }
            return Err(ClientError::Partial { enqueued: ids, missing, source: Box::new(source) });
        }
        if let Some(reason) = not_durable {
            return Err(ClientError::NotDurable { enqueued: ids, reason });
        }
        Ok(out)
    }

    /// The task's spec, state and (once finished) result; None for an unknown id.
    pub async fn status(&self, id: &TaskId) -> Result<Option<TaskRecord>, ClientError> {
        let Some(f) = self.db.task_fields(&mut self.conn.clone(), id).await? else { return Ok(None) };
        let mut record = TaskRecord::from_fields(id, &f).map_err(|source| ClientError::TaskData { id: id.to_string(), source })?;
        record.module_names = self.store.names_of(&record.module).await?;
        if record.state == TaskState::Blocked {
            let seqs: Vec<u64> = record.after.iter().filter_map(|p| TaskId::parse(p).ok()).map(|p| p.seq).collect();
            let states = self.db.states(&mut self.conn.clone(), &id.queue, &seqs).await?;
            record.blocked_on = seqs
                .into_iter()
                .zip(states)
                .filter(|(_, s)| *s != Some(TaskState::Succeeded))
                .map(|(seq, state)| crate::queue::task::ParentState { id: TaskId::new(id.queue.clone(), seq).to_string(), state })
                .collect();
        }
        if record.state == TaskState::Pending {
            record.waiting_on = self.db.binding_limit(&mut self.conn.clone(), &id.queue, record.group.as_deref()).await?.map(str::to_string);
        }
        Ok(Some(record))
    }

    /// Short records of many tasks of one queue, for listings: state, module (with its names),
    /// priority, attempts and last error, read without outputs, inputs or logs. None where a task
    /// is gone or its state is unreadable.
    pub async fn summaries(&self, q: &QueueName, seqs: &[u64]) -> Result<Vec<Option<TaskRecord>>, ClientError> {
        const FIELDS: [&str; 7] = [field::STATE, field::MODULE, field::PRIORITY, field::ATTEMPTS, field::MAX_ATTEMPTS, field::ERROR_KIND, field::ERROR];
        let rows = self.db.task_fields_of_each(&mut self.conn.clone(), q, seqs, &FIELDS).await?;
        let mut names: HashMap<String, Vec<String>> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for (seq, f) in seqs.iter().zip(rows) {
            let Some(mut r) = f.and_then(|f| TaskRecord::from_fields(&TaskId::new(q.clone(), *seq), &f).ok()) else {
                out.push(None);
                continue;
            };
            if !names.contains_key(&r.module) {
                names.insert(r.module.clone(), self.store.names_of(&r.module).await?);
            }
            r.module_names = names[&r.module].clone();
            out.push(Some(r));
        }
        Ok(out)
    }

    /// Waits up to `timeout` for the task to finish; returns its record (finished or not), or
    /// None for an unknown id. Waiting blocks on Redis (no polling loop faster than 1/s).
    pub async fn wait(&self, id: &TaskId, timeout: Duration) -> Result<Option<TaskRecord>, ClientError> {
        match self.db.register_waiter(&mut self.conn.clone(), id).await? {
            WaitRegistration::Unknown => return Ok(None),
            WaitRegistration::Finished => return self.status(id).await,
            WaitRegistration::Registered => {}
        }
        let deadline = tokio::time::Instant::now() + timeout;
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
            match tokio::time::timeout(wait + Duration::from_secs(2), self.db.wait_done(conn, id, wait)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    *blocking = None;
                    return Err(e.into());
                }
                Err(_) => *blocking = None,
            }
            let state = self.db.task_state(&mut self.conn.clone(), id).await?;
            match state.as_deref().map(TaskState::parse) {
                None => return Ok(None),
                Some(Some(s)) if s.is_finished() => break,
                _ => {}
            }
        }
        drop(blocking);
        self.status(id).await
    }

    /// Cancels a task: removed at once if it waits, stopped by its worker if it runs.
    pub async fn cancel(&self, id: &TaskId) -> Result<CancelOutcome, ClientError> {
        Ok(self.db.cancel(&mut self.conn.clone(), id, self.retention, CancelReason::Requested).await?)
    }

    /// Every queue that ever had a task, sorted.
    pub async fn queues(&self) -> Result<Vec<QueueName>, ClientError> {
        Ok(self.db.queues(&mut self.conn.clone()).await?)
    }

    /// Removes the waiting tasks of `q` in `states` (pending, delayed, blocked), finishing each as
    /// cancelled with reason `drained`, a thousand per script call so that Redis never blocks on
    /// a large queue. Returns how many were drained. Running tasks are left alone.
    pub async fn drain(&self, q: &QueueName, states: &[TaskState]) -> Result<u64, ClientError> {
        if let Some(s) = states.iter().find(|s| !matches!(s, TaskState::Pending | TaskState::Delayed | TaskState::Blocked)) {
            return Err(ClientError::Invalid(format!("cannot drain {s} tasks; use pending, delayed or blocked")));
        }
        let mut total = 0;
        let mut cursor = "0".to_string();
        loop {
            let (n, more, next) = self.db.drain(&mut self.conn.clone(), q, self.retention, states, DRAIN_BATCH, &cursor).await?;
            total += n;
            cursor = next;
            if !more {
                return Ok(total);
            }
        }
    }

    /// The live workers (the registry each worker writes every second).
    pub async fn workers(&self) -> Result<Vec<crate::queue::workers::WorkerInfo>, ClientError> {
        Ok(self.db.workers(&mut self.conn.clone()).await?)
    }

    pub async fn stats(&self, q: &QueueName) -> Result<QueueStats, ClientError> {
        Ok(self.db.stats(&mut self.conn.clone(), q).await?)
    }

    /// Redis memory use and its cap (`maxmemory`, 0: none), in bytes, from the node of `q`.
    pub async fn memory(&self, q: &QueueName) -> Result<(u64, u64), ClientError> {
        let info: redis::InfoDict = self.conn.clone().query_at(&self.db.anchor(q), redis::cmd("INFO").arg("memory")).await?;
        Ok((info.get("used_memory").unwrap_or(0), info.get("maxmemory").unwrap_or(0)))
    }

    /// Dead tasks of a queue, oldest first, at most `limit`. An index entry whose task is gone
    /// is removed and skipped.
    pub async fn dead(&self, q: &QueueName, limit: usize) -> Result<Vec<TaskRecord>, ClientError> {
        let mut conn = self.conn.clone();
        let seqs = self.db.finished_seqs(&mut conn, q, TaskState::Dead, limit).await?;
        let mut out = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let id = TaskId::new(q.clone(), seq);
            match self.status(&id).await? {
                Some(r) => out.push(r),
                None => self.db.forget_finished(&mut conn, &id, TaskState::Dead).await?,
            }
        }
        Ok(out)
    }

    /// Puts dead tasks back in their queue with fresh attempts: the given ones, or all of them.
    /// A dead task whose unique key another unfinished task holds stays dead; it is reported.
    pub async fn retry_dead(&self, q: &QueueName, seqs: Option<&[u64]>) -> Result<RetryOutcome, ClientError> {
        let mut conn = self.conn.clone();
        let mut outcome = RetryOutcome::default();
        let mut skip = 0;
        loop {
            let which = match seqs {
                Some(s) => RetrySelection::Seqs(s),
                None => RetrySelection::Oldest { limit: 1000, skip },
            };
            let r = self.db.retry_dead(&mut conn, q, which).await?;
            skip += r.blocked.len();
            outcome.retried.extend(r.retried.into_iter().map(|s| TaskId::new(q.clone(), s)));
            outcome.blocked.extend(r.blocked.into_iter().map(|s| TaskId::new(q.clone(), s)));
            outcome.not_dead.extend(r.gone.into_iter().map(|s| TaskId::new(q.clone(), s)));
            if seqs.is_some() || r.scanned == 0 {
                return Ok(outcome);
            }
        }
    }

    /// Deletes finished tasks of one state that finished at least `older_than` ago; returns how
    /// many were deleted.
    pub async fn purge(&self, q: &QueueName, state: TaskState, older_than: Duration) -> Result<u64, ClientError> {
        let mut total = 0;
        loop {
            let n = self.db.purge(&mut self.conn.clone(), q, state, older_than, 1000).await?;
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
        Ok(self.db.set_policy(&mut self.conn.clone(), q, policy, wsjf).await?)
    }

    /// Pauses or resumes a queue.
    pub async fn set_paused(&self, q: &QueueName, paused: bool) -> Result<(), ClientError> {
        Ok(self.db.set_paused(&mut self.conn.clone(), q, paused).await?)
    }

    /// A queue's retention settings (None: workers apply their defaults).
    pub async fn retention(&self, q: &QueueName) -> Result<Option<Retention>, ClientError> {
        Ok(self.db.retention(&mut self.conn.clone(), q).await?)
    }

    /// Stores a queue's retention settings.
    pub async fn set_retention(&self, q: &QueueName, r: Retention) -> Result<(), ClientError> {
        Ok(self.db.set_retention(&mut self.conn.clone(), q, r).await?)
    }

    /// A queue's flow-control limits.
    pub async fn limits(&self, q: &QueueName) -> Result<QueueLimits, ClientError> {
        Ok(self.db.limits(&mut self.conn.clone(), q).await?)
    }

    /// Sets a queue's limits: each kind given (Some) replaces the stored one, the others stay.
    pub async fn set_limits(&self, q: &QueueName, limits: QueueLimits) -> Result<(), ClientError> {
        if limits.concurrency == Some(0) || limits.group_concurrency == Some(0) {
            return Err(ClientError::Invalid("a concurrency limit must be at least 1 (--clear removes the limits)".into()));
        }
        Ok(self.db.set_limits(&mut self.conn.clone(), q, limits).await?)
    }

    /// Removes a queue's limits.
    pub async fn clear_limits(&self, q: &QueueName) -> Result<(), ClientError> {
        Ok(self.db.clear_limits(&mut self.conn.clone(), q).await?)
    }

    /// Tasks pending in a queue.
    pub async fn pending_count(&self, q: &QueueName) -> Result<u64, ClientError> {
        Ok(self.db.pending_count(&mut self.conn.clone(), q).await?)
    }

    /// Sets (`Some`) or removes a value of a queue's config, which its tasks read through the
    /// host API; returns whether the key existed.
    pub async fn set_config(&self, q: &QueueName, key: &str, value: Option<&str>) -> Result<bool, ClientError> {
        self.register_queue(q).await?;
        Ok(self.db.set_config(&mut self.conn.clone(), q, key, value).await?)
    }

    /// A queue's config values.
    pub async fn config(&self, q: &QueueName) -> Result<HashMap<String, String>, ClientError> {
        Ok(self.db.config(&mut self.conn.clone(), q).await?)
    }

    /// Grants or revokes a queue's tasks the secret `name` (its value lives on workers only);
    /// returns whether anything changed.
    pub async fn set_grant(&self, q: &QueueName, name: &str, granted: bool) -> Result<bool, ClientError> {
        self.register_queue(q).await?;
        Ok(self.db.set_grant(&mut self.conn.clone(), q, name, granted).await?)
    }

    /// The secret names a queue is granted.
    pub async fn grants(&self, q: &QueueName) -> Result<Vec<String>, ClientError> {
        Ok(self.db.grants(&mut self.conn.clone(), q).await?)
    }
}

/// A flow's members' outputs or its reducer's, as `result FLOW` prints them.
pub enum FlowOutput {
    /// The last reducer's output, as it wrote it.
    Reduced(Vec<u8>),
    /// Without a reducer: the children's outputs in input order, as a JSON array.
    Children(Vec<u8>),
}

impl Client {
    /// Map-reduce: one child task of `module` per input, and with `reduce`, a tree of reducer
    /// tasks over their outputs: reducers over at most `fan_in` outputs each, then reducers over
    /// reducers, up to one (a reducer must therefore accept its own output type among its
    /// inputs). Returns the flow's id. The flow is created `building`, its members enqueued,
    /// then sealed; if enqueueing fails part-way, everything created is cancelled and the error
    /// returned (no flow to follow).
    pub async fn map(
        &self,
        module: &str,
        inputs: &[Vec<u8>],
        reduce: Option<&str>,
        fan_in: usize,
        on_child_failure: ParentFailure,
        o: &EnqueueOptions,
    ) -> Result<TaskId, ClientError> {
        Self::validate_options(o)?;
        if inputs.is_empty() {
            return Err(ClientError::Invalid("a map needs at least one input".into()));
        }
        if !(2..=MAX_FAN_IN).contains(&fan_in) {
            return Err(ClientError::Invalid(format!("the reduce fan-in must be from 2 to {MAX_FAN_IN}")));
        }
        if !o.after.is_empty() || o.unique_key.is_some() || o.input_from_after {
            return Err(ClientError::Invalid("a map's children take no --after, --unique-key or --input-from-after".into()));
        }
        // Resolve both modules first: a typo fails before anything is created.
        self.store.resolve(module).await?;
        if let Some(r) = reduce {
            self.store.resolve(r).await?;
        }
        let mut conn = self.conn.clone();
        let n = self.db.create_flow(&mut conn, &o.queue, inputs.len() as u64, on_child_failure).await?;
        let flow = TaskId::new(o.queue.clone(), n);
        match self.build_flow(&flow, module, inputs, reduce, fan_in, on_child_failure, o).await {
            Ok(root) => {
                self.db.seal_flow(&mut conn, &o.queue, n, root).await?;
                Ok(flow)
            }
            Err(e) => {
                // Whatever was created goes: the caller has no flow to follow.
                let cancel_error = self.cancel_flow(&flow).await.err().map(|c| match c {
                    ClientError::OutOfMemory => "Redis is still out of memory".to_string(),
                    c => c.to_string(),
                });
                Err(ClientError::MapFailed { flow, source: Box::new(e), cancel_error })
            }
        }
    }

    /// Enqueues a flow's children and reducers; returns the root reducer's seq (0 for none).
    #[allow(clippy::too_many_arguments)]
    async fn build_flow(
        &self,
        flow: &TaskId,
        module: &str,
        inputs: &[Vec<u8>],
        reduce: Option<&str>,
        fan_in: usize,
        policy: ParentFailure,
        o: &EnqueueOptions,
    ) -> Result<u64, ClientError> {
        let mut conn = self.conn.clone();
        let member = [(field::FLOW, flow.seq.to_string().into_bytes())];
        // Each member joins the flow's lists in its enqueue script (lib.lua's add_task), so that a
        // failure part-way leaves lists of exactly what exists, for the cancel.
        let children = match self.enqueue_bulk_with(module, inputs, o, &member).await {
            Ok(c) => c,
            Err(ClientError::Partial { source, .. }) => return Err(*source),
            Err(e) => return Err(e),
        };
        let mut level: Vec<u64> = children.iter().map(|e| e.id.seq).collect();
        let Some(reducer) = reduce else { return Ok(0) };
        // The reducers, level by level: each group of at most `fan_in` members of the level
        // below gets one, enqueued a thousand per round trip.
        let sha = self.store.resolve(reducer).await?;
        let ro = EnqueueOptions { on_parent_failure: policy, input_from_after: true, ..o.clone() };
        let mut fields = Self::option_fields(&ro);
        fields.extend_from_slice(&member);
        loop {
            let groups: Vec<&[u64]> = level.chunks(fan_in).collect();
            let mut next = Vec::with_capacity(groups.len());
            for batch in groups.chunks(1000) {
                let tasks: Vec<NewTask> = batch
                    .iter()
                    .map(|g| NewTask {
                        module: &sha,
                        priority: o.priority,
                        due: Self::due(o),
                        expires: Self::expiry(o),
                        unique_key: None,
                        unique_for: None,
                        fields: fields.clone(),
                        after: g.to_vec(),
                        on_parent_failure: policy,
                    })
                    .collect();
                let replies = self.db.enqueue_many(&mut conn, &flow.queue, &tasks).await?;
                let seqs: Vec<u64> = replies.iter().filter_map(|r| r.as_ref().ok().map(|r| r.seq)).collect();
                if let Some(Err(e)) = replies.into_iter().find(|r| r.is_err()) {
                    return Err(Self::parent_error(e, &flow.queue));
                }
                let ids: Vec<TaskId> = seqs.iter().map(|s| TaskId::new(flow.queue.clone(), *s)).collect();
                self.undo_if_module_removing(&sha, &ids).await?;
                next.extend(seqs);
            }
            if next.len() == 1 {
                return Ok(next[0]);
            }
            level = next;
        }
    }

    /// A flow, or None when `id` names no flow.
    pub async fn flow(&self, id: &TaskId) -> Result<Option<FlowRecord>, ClientError> {
        Ok(self.db.flow(&mut self.conn.clone(), id).await?)
    }

    /// A flow's first `limit` children and reducers with their states, and how many of each it
    /// has (a bounded view, for the dashboard's flow tree).
    pub async fn flow_members(&self, id: &TaskId, limit: usize) -> Result<(FlowMembersPage, Vec<Option<TaskState>>), ClientError> {
        let mut conn = self.conn.clone();
        let page = self.db.flow_members_page(&mut conn, id, limit).await?;
        let seqs: Vec<u64> = page.children.iter().chain(&page.reducers).copied().collect();
        let states = self.db.states(&mut conn, &id.queue, &seqs).await?;
        Ok((page, states))
    }

    /// The dead members of a flow with their last error, at most `limit`.
    pub async fn flow_dead(&self, id: &TaskId, limit: usize) -> Result<Vec<(TaskId, String, String)>, ClientError> {
        Ok(self.db.flow_dead(&mut self.conn.clone(), id, limit).await?)
    }

    /// Cancels every unfinished member of a flow (`cancel_reason` `flow_cancelled`); returns how
    /// many were cancelled at once and how many running ones were asked to stop.
    pub async fn cancel_flow(&self, id: &TaskId) -> Result<(u64, u64), ClientError> {
        let mut conn = self.conn.clone();
        self.db.cancel_flow(&mut conn, &id.queue, id.seq).await?;
        let (children, reducers) = self.db.flow_members(&mut conn, id).await?;
        let (mut cancelled, mut stopping) = (0, 0);
        // Reducers first: cancelling children would cancel their blocked reducers anyway.
        for seq in reducers.into_iter().rev().chain(children) {
            match self.db.cancel(&mut conn, &TaskId::new(id.queue.clone(), seq), self.retention, CancelReason::FlowCancelled).await? {
                CancelOutcome::Cancelled => cancelled += 1,
                CancelOutcome::Requested => stopping += 1,
                _ => {}
            }
        }
        Ok((cancelled, stopping))
    }

    /// Waits up to `timeout` for a flow to finish (polling its counters, a few commands a
    /// second); `progress` is called with the flow after each look.
    pub async fn wait_flow(&self, id: &TaskId, timeout: Duration, mut progress: impl FnMut(&FlowRecord)) -> Result<Option<FlowRecord>, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Some(f) = self.flow(id).await? else { return Ok(None) };
            progress(&f);
            if f.state.is_finished() || tokio::time::Instant::now() >= deadline {
                return Ok(Some(f));
            }
            tokio::time::sleep(Duration::from_millis(200).min(deadline - tokio::time::Instant::now())).await;
        }
    }

    /// The result of a succeeded flow.
    pub async fn flow_output(&self, f: &FlowRecord) -> Result<FlowOutput, ClientError> {
        let id = TaskId::parse(&f.id)?;
        if let Some(root) = &f.root {
            let r = self.status(&TaskId::parse(root)?).await?;
            return Ok(FlowOutput::Reduced(r.and_then(|r| r.output_raw).unwrap_or_default()));
        }
        let mut conn = self.conn.clone();
        let (children, _) = self.db.flow_members(&mut conn, &id).await?;
        let outputs = self.db.outputs(&mut conn, &id.queue, &children).await?;
        Ok(FlowOutput::Children(crate::queue::task::embed_outputs_array(&outputs)))
    }
}

/// What `retry_dead` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOutcome {
    pub retried: Vec<TaskId>,
    /// Left dead: another unfinished task holds their unique key.
    pub blocked: Vec<TaskId>,
    /// Given ids that are not dead tasks.
    pub not_dead: Vec<TaskId>,
}

/// Appends a range, merging it with the last one when they touch.
fn push_range(v: &mut Vec<Range<usize>>, r: Range<usize>) {
    match v.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => v.push(r),
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
