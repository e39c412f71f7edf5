//! One typed Rust function per Lua script. Each function owns its script's KEYS (in the order the
//! script's header lists them), its ARGV order and the decoding of its reply; nothing else in
//! wasmq builds a script invocation. A unit test checks every header against its wrapper.
//!
//! The scripts are files in `lua/`; `lib.lua` is prepended to each, so that one formula (the
//! pending score, finishing a task, going back to pending, retention) exists once.

use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, ScriptInvocation, Value};

use super::Db;
use super::ids::{QueueName, TaskId};
use super::keys::QueueKeys;
use super::policy::Retention;
use super::task::{Fields, SPEC_FIELDS, TaskDataError, TaskSpec, TaskState, field};
use crate::conn::Conn;

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`src/queue/lua/", $file, "`")]
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(concat!(include_str!("lua/lib.lua"), "\n", include_str!(concat!("lua/", $file)))));
    };
}

script!(ENQUEUE, "enqueue.lua");
script!(ENQUEUE_BULK, "enqueue_bulk.lua");
script!(CLAIM, "claim.lua");
script!(COMPLETE, "complete.lua");
script!(HEARTBEAT, "heartbeat.lua");
script!(REAP, "reap.lua");
script!(CANCEL, "cancel.lua");
script!(WAIT, "wait.lua");
script!(RETRY_DEAD, "retry_dead.lua");
script!(PURGE, "purge.lua");
script!(SCHEDULE_FIRE, "schedule_fire.lua");
script!(REPOLICY, "repolicy.lua");
script!(SEAL_FLOW, "seal_flow.lua");
script!(CANCEL_FLOW, "cancel_flow.lua");
script!(WORKER_BEAT, "worker_beat.lua");
script!(DRAIN, "drain.lua");

/// The KEYS of each script, in the order its header lists them.
mod keys {
    use super::QueueKeys;

    pub fn enqueue(k: &QueueKeys) -> [String; 8] {
        [k.seq(), k.pending(), k.delayed(), k.meta(), k.stats(), k.modrefs(), k.signal(), k.estimates()]
    }

    pub fn claim(k: &QueueKeys) -> [String; 7] {
        [k.pending(), k.delayed(), k.active(), k.meta(), k.signal(), k.estimates(), k.stats()]
    }

    pub fn complete(k: &QueueKeys) -> [String; 11] {
        [k.active(), k.pending(), k.delayed(), k.succeeded(), k.dead(), k.cancelled(), k.stats(), k.modrefs(), k.estimates(), k.meta(), k.signal()]
    }

    pub fn heartbeat(k: &QueueKeys) -> [String; 1] {
        [k.active()]
    }

    pub fn reap(k: &QueueKeys) -> [String; 10] {
        [k.active(), k.pending(), k.succeeded(), k.dead(), k.cancelled(), k.stats(), k.modrefs(), k.meta(), k.estimates(), k.signal()]
    }

    pub fn cancel(k: &QueueKeys) -> [String; 7] {
        [k.pending(), k.delayed(), k.cancelled(), k.stats(), k.modrefs(), k.meta(), k.signal()]
    }

    pub fn retry_dead(k: &QueueKeys) -> [String; 6] {
        [k.dead(), k.pending(), k.modrefs(), k.meta(), k.estimates(), k.signal()]
    }

    pub fn repolicy(k: &QueueKeys) -> [String; 4] {
        [k.pending(), k.meta(), k.estimates(), k.stats()]
    }

    pub fn schedule_fire(k: &QueueKeys) -> [String; 9] {
        let [a, b, c, d, e, f, g, h] = enqueue(k);
        [a, b, c, d, e, f, g, h, k.schedule_due()]
    }
}

impl Db {
    /// An invocation of `script` on queue `q`: its KEYS, then ARGV[1] (the key base) and ARGV[2]
    /// (the clock offset); the caller adds the rest.
    fn invocation<'a>(&self, script: &'a Script, q: &QueueName, keys: impl IntoIterator<Item = String>) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for key in keys {
            inv.key(key);
        }
        inv.arg(self.keys.queue_base(q)).arg(self.clock_offset_ms);
        inv
    }
}

fn unexpected(what: &str, v: impl std::fmt::Debug) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "unexpected script reply", format!("{what}: {v:?}")))
}

fn int(v: &Value) -> redis::RedisResult<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(unexpected("expected an integer", other)),
    }
}

// ---------------------------------------------------------------------------------------------
// enqueue.lua, enqueue_bulk.lua

/// When a new task becomes ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// Not before this Unix ms (0: no such bound).
    pub at_ms: u64,
    /// Not before this long after the server's now.
    pub delay: Duration,
}

/// When a waiting task expires (`enqueue --expires`): at a Unix ms time, or this long after it
/// was enqueued (by the server's clock); with neither, never.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiry {
    pub at_ms: u64,
    pub after: Duration,
}

/// One task for [`Db::enqueue`].
#[derive(Debug, Clone, Default)]
pub struct NewTask<'a> {
    /// The module's SHA-256 (hex).
    pub module: &'a str,
    pub priority: i64,
    pub due: Due,
    pub expires: Expiry,
    pub unique_key: Option<&'a str>,
    /// How long the unique key may be held at most (None: until the task finishes).
    pub unique_for: Option<Duration>,
    /// Further task fields (input, limits, ...), as set by the task's options.
    pub fields: Vec<(&'static str, Vec<u8>)>,
    /// Parents in the same queue: the task is blocked until each has succeeded.
    pub after: Vec<u64>,
    pub on_parent_failure: ParentFailure,
}

/// What a dead parent does to its dependent (`--on-parent-failure`, `--on-child-failure`). A
/// cancelled parent always cancels its dependents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParentFailure {
    /// The dependent stays blocked; `dead retry` of the parent lets it continue.
    #[default]
    Block,
    /// The dependent is cancelled at once (`cancel_reason` `parent_dead`).
    Cancel,
    /// The dependent goes on without the parent: `null` in its place among the parents' outputs.
    Ignore,
}

impl ParentFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Block => "block",
            Self::Cancel => "cancel",
            Self::Ignore => "ignore",
        }
    }
}

impl std::str::FromStr for ParentFailure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(Self::Block),
            "cancel" => Ok(Self::Cancel),
            "ignore" => Ok(Self::Ignore),
            _ => Err(format!("unknown failure policy {s:?}: use block, cancel or ignore")),
        }
    }
}

/// The errors `enqueue.lua` gives for a parent that does not exist, and for too many parents.
fn unknown_parent(e: redis::RedisError) -> super::QueueError {
    match e.code() {
        Some("UNKNOWNPARENT") => super::QueueError::UnknownParent(e.detail().and_then(|d| d.trim().parse().ok()).unwrap_or(0)),
        Some("TOOMANYPARENTS") => super::QueueError::TooManyParents(e.detail().and_then(|d| d.trim().parse().ok()).unwrap_or(0)),
        _ => e.into(),
    }
}

/// What [`Db::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueReply {
    pub seq: u64,
    /// False when an unfinished task holds the unique key: `seq` is that task.
    pub new: bool,
}

/// Many tasks with the same options for [`Db::enqueue_bulk_round`].
#[derive(Debug, Clone)]
pub struct NewTasks<'a> {
    pub module: &'a str,
    pub priority: i64,
    pub due: Due,
    pub expires: Expiry,
    /// Fields every task of the call gets.
    pub shared: Vec<(&'static str, Vec<u8>)>,
}

impl Db {
    /// `enqueue.lua`: adds one task to queue `q`.
    pub async fn enqueue(&self, conn: &mut Conn, q: &QueueName, t: &NewTask<'_>) -> Result<EnqueueReply, super::QueueError> {
        let (seq, new): (u64, i64) = self.enqueue_invocation(q, t).invoke_async(conn).await.map_err(unknown_parent)?;
        Ok(EnqueueReply { seq, new: new == 1 })
    }

    /// `enqueue.lua`, then `wait` (WAIT or WAITAOF) in the same batch on the same connection to
    /// the queue's node, so that what the wait confirms is this write. Returns the enqueue's reply
    /// and the wait's (None without one).
    pub async fn enqueue_and_wait(
        &self,
        conn: &mut Conn,
        q: &QueueName,
        t: &NewTask<'_>,
        wait: Option<&redis::Cmd>,
    ) -> Result<(EnqueueReply, Option<redis::RedisResult<i64>>), super::QueueError> {
        let Some(wait) = wait else { return Ok((self.enqueue(conn, q, t).await?, None)) };
        ENQUEUE.load_async(conn).await?;
        let mut pipe = redis::pipe();
        pipe.invoke_script(&self.enqueue_invocation(q, t)).add_command(wait.clone());
        let mut replies = conn.pipeline_at(&self.keys.queue(q).meta(), &pipe).await?.into_iter();
        let reply = replies.next().ok_or_else(|| unexpected("enqueue: no reply", ()))?;
        let (seq, new): (u64, i64) = redis::from_redis_value(reply.extract_error().map_err(unknown_parent)?).map_err(redis::RedisError::from)?;
        let waited = replies.next().map(|v| v.extract_error().and_then(|v| Ok(wait_acks(redis::from_redis_value(v)?))));
        Ok((EnqueueReply { seq, new: new == 1 }, waited))
    }

    /// `enqueue.lua` for many tasks with options of their own, pipelined in one round trip to
    /// the queue's node. Each task succeeds or fails on its own: the replies are in order.
    pub async fn enqueue_many(
        &self,
        conn: &mut Conn,
        q: &QueueName,
        tasks: &[NewTask<'_>],
    ) -> redis::RedisResult<Vec<Result<EnqueueReply, super::QueueError>>> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        ENQUEUE.load_async(conn).await?;
        let mut pipe = redis::pipe();
        for t in tasks {
            pipe.invoke_script(&self.enqueue_invocation(q, t));
        }
        let replies = conn.pipeline_at(&self.keys.queue(q).meta(), &pipe).await?;
        Ok(replies
            .into_iter()
            .map(|v| {
                let (seq, new): (u64, i64) = redis::from_redis_value(v.extract_error().map_err(unknown_parent)?).map_err(redis::RedisError::from)?;
                Ok(EnqueueReply { seq, new: new == 1 })
            })
            .collect())
    }

    fn enqueue_invocation<'a>(&self, q: &QueueName, t: &NewTask<'_>) -> ScriptInvocation<'a> {
        let mut inv = self.invocation(&ENQUEUE, q, keys::enqueue(&self.keys.queue(q)));
        inv.arg(t.due.at_ms)
            .arg(t.due.delay.as_millis() as u64)
            .arg(t.module)
            .arg(t.priority)
            .arg(t.unique_key.unwrap_or(""))
            .arg(t.unique_for.map_or(0, |d| d.as_millis() as u64))
            .arg(t.after.iter().map(u64::to_string).collect::<Vec<_>>().join(","))
            .arg(t.on_parent_failure.as_str())
            .arg(t.expires.at_ms)
            .arg(t.expires.after.as_millis() as u64);
        for (k, v) in &t.fields {
            inv.arg(*k).arg(v.as_slice());
        }
        inv
    }

    /// `enqueue_bulk.lua`, once per chunk, all chunks in one batch (one round trip) to the
    /// queue's node, followed by `wait` if given. Each chunk succeeds or fails on its own: the
    /// reply has the first seq of every chunk that was enqueued (its tasks have consecutive seqs)
    /// or the error of one that was not, in order, and the wait's reply.
    #[allow(clippy::type_complexity)]
    pub async fn enqueue_bulk_round(
        &self,
        conn: &mut Conn,
        q: &QueueName,
        t: &NewTasks<'_>,
        chunks: &[&[Vec<u8>]],
        wait: Option<&redis::Cmd>,
    ) -> redis::RedisResult<(Vec<redis::RedisResult<u64>>, Option<redis::RedisResult<i64>>)> {
        // Pipelined EVALSHA does not load a missing script by itself.
        ENQUEUE_BULK.load_async(conn).await?;
        let mut pipe = redis::pipe();
        for chunk in chunks {
            let mut inv = self.invocation(&ENQUEUE_BULK, q, keys::enqueue(&self.keys.queue(q)));
            inv.arg(t.due.at_ms)
                .arg(t.due.delay.as_millis() as u64)
                .arg(t.module)
                .arg(t.priority)
                .arg(t.expires.at_ms)
                .arg(t.expires.after.as_millis() as u64)
                .arg(t.shared.len());
            for (k, v) in &t.shared {
                inv.arg(*k).arg(v.as_slice());
            }
            for input in chunk.iter() {
                inv.arg(input.as_slice());
            }
            pipe.invoke_script(&inv);
        }
        if let Some(w) = wait {
            pipe.add_command(w.clone());
        }
        let mut replies = conn.pipeline_at(&self.keys.queue(q).meta(), &pipe).await?.into_iter();
        let firsts = replies.by_ref().take(chunks.len()).map(|v| v.extract_error().and_then(|v| Ok(redis::from_redis_value::<u64>(v)?))).collect();
        let waited = wait.and(replies.next()).map(|v| v.extract_error().and_then(|v| Ok(wait_acks(redis::from_redis_value(v)?))));
        Ok((firsts, waited))
    }
}

/// The acknowledgements of a WAIT (a count) or WAITAOF (local and replica fsyncs) reply.
fn wait_acks(v: Value) -> i64 {
    match v {
        Value::Int(n) => n,
        Value::Array(a) => a.iter().filter_map(|v| if let Value::Int(n) = v { Some(*n) } else { None }).max().unwrap_or(0),
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// claim.lua

/// What one claim asks for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// Most tasks.
    pub n: usize,
    /// Most input bytes in all (0: no limit); the first task is claimed whatever its size.
    pub max_bytes: u64,
    pub lease: Duration,
    pub worker: &'a str,
    /// Largest input the worker takes (bytes); larger ones stay in Redis.
    pub max_input: u64,
    /// The worker's free run slots: a queue with a limit is claimed for no more (no prefetch).
    pub run_slots: usize,
}

/// A task leased to a worker: parsed once, here.
#[derive(Debug)]
pub struct ClaimedTask {
    pub id: TaskId,
    /// The fencing token: completions and heartbeats must carry it.
    pub token: u64,
    /// Which attempt this claim is (1 for the first).
    pub attempt: u32,
    /// What to run, or why the task's data is unusable.
    pub spec: Result<TaskSpec, TaskDataError>,
    /// The input's length when it is over the worker's limit (it was not sent).
    pub oversized_input: Option<u64>,
}

/// The result of one claim call.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    pub tasks: Vec<ClaimedTask>,
    /// How long until the earliest delayed task of the queue is due, if there is one.
    pub next_due: Option<Duration>,
    pub paused: bool,
    /// The queue's rate limit let no task start: how long until it lets one.
    pub rate_wait: Option<Duration>,
}

impl Db {
    /// `claim.lua`: promotes due delayed tasks and leases up to `r.n` tasks of `q`.
    pub async fn claim(&self, conn: &mut Conn, q: &QueueName, r: ClaimRequest<'_>) -> redis::RedisResult<ClaimBatch> {
        let mut inv = self.invocation(&CLAIM, q, keys::claim(&self.keys.queue(q)));
        inv.arg(r.lease.as_millis() as u64).arg(r.n).arg(r.max_bytes).arg(r.worker).arg(r.max_input).arg(r.run_slots);
        for name in SPEC_FIELDS {
            inv.arg(name);
        }
        let reply: Vec<Value> = inv.invoke_async(conn).await?;
        parse_claim(q, reply)
    }
}

fn parse_claim(q: &QueueName, reply: Vec<Value>) -> redis::RedisResult<ClaimBatch> {
    let mut it = reply.into_iter();
    let head = it.next().map(|v| int(&v)).transpose()?.unwrap_or(-1);
    let rate_wait = it.next().map(|v| int(&v)).transpose()?.unwrap_or(-1);
    let mut batch = ClaimBatch {
        paused: head == -2,
        next_due: (head >= 0).then(|| Duration::from_millis(head as u64)),
        rate_wait: (rate_wait >= 0).then(|| Duration::from_millis(rate_wait as u64)),
        tasks: Vec::new(),
    };
    while let (Some(seq), Some(token), Some(attempt)) = (it.next(), it.next(), it.next()) {
        let mut fields = Fields::default();
        let mut oversized_input = None;
        for name in SPEC_FIELDS {
            match it.next() {
                Some(Value::BulkString(b)) => {
                    fields.0.insert(name.to_string(), b);
                }
                Some(Value::Nil) => {}
                Some(Value::Int(len)) if name == field::INPUT => oversized_input = Some(len.max(0) as u64),
                other => return Err(unexpected("claim: bad task field", other)),
            }
        }
        let attempt = match attempt {
            Value::BulkString(b) => std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()).unwrap_or(1),
            other => int(&other)?.clamp(1, u32::MAX as i64) as u32,
        };
        // The input is moved into the spec, not copied: a claim of large inputs would
        // otherwise hold each of them twice while the batch is parsed.
        let input = fields.0.remove(field::INPUT);
        let spec = TaskSpec::from_fields(&fields).map(|mut s| {
            s.input = input.unwrap_or_default();
            s
        });
        batch.tasks.push(ClaimedTask { id: TaskId::new(q.clone(), int(&seq)? as u64), token: int(&token)? as u64, attempt, spec, oversized_input });
    }
    Ok(batch)
}

// ---------------------------------------------------------------------------------------------
// complete.lua

/// What the completion script does with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Succeeded,
    /// Back to `delayed`, due again after the completion's delay.
    Retry,
    Dead,
    Cancelled,
    /// Back to pending unfinished, not counted as an attempt (worker shutdown).
    Release,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retry => "retry",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Release => "release",
        }
    }
}

/// One attempt's error, as recorded in the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    pub kind: &'static str,
    pub message: String,
}

/// One record for [`Db::complete`].
#[derive(Debug, Clone)]
pub struct Completion {
    pub seq: u64,
    pub token: u64,
    pub action: Action,
    /// For `Retry`: how long until the task is due again.
    pub delay: Duration,
    pub error: Option<AttemptFailure>,
    /// Result fields written to the task hash.
    pub fields: Vec<(&'static str, Vec<u8>)>,
    /// Tasks the attempt spawned, committed only if it is a `Succeeded` that applies.
    pub children: Vec<ChildTask>,
}

/// A task spawned by a running attempt (host API `spawn`), enqueued by that attempt's completion
/// under the number reserved for it ([`Db::reserve_seq`]).
#[derive(Debug, Clone)]
pub struct ChildTask {
    pub seq: u64,
    /// The module's SHA-256 (hex).
    pub module: String,
    pub priority: i64,
    /// Not ready before this long after the completion.
    pub delay: Duration,
    /// Its task fields (input, limits, grants), as an enqueue would write them.
    pub fields: Vec<(&'static str, Vec<u8>)>,
}

impl Db {
    /// `complete.lua`: applies a batch of completions of queue `q`; returns, per record, whether
    /// it was applied (false: the lease had passed on, or the task is gone).
    pub async fn complete(&self, conn: &mut Conn, q: &QueueName, worker: &str, retention: Retention, records: &[&Completion]) -> redis::RedisResult<Vec<bool>> {
        let mut inv = self.invocation(&COMPLETE, q, keys::complete(&self.keys.queue(q)));
        inv.arg(retention.arg()).arg(worker);
        for c in records {
            let (kind, message) = c.error.as_ref().map_or(("", ""), |e| (e.kind, e.message.as_str()));
            inv.arg(c.seq).arg(c.token).arg(c.action.as_str()).arg(c.delay.as_millis() as u64).arg(kind).arg(message).arg(c.fields.len());
            for (name, value) in &c.fields {
                inv.arg(*name).arg(value.as_slice());
            }
            inv.arg(c.children.len());
            for k in &c.children {
                inv.arg(k.seq).arg(&k.module).arg(k.priority).arg(k.delay.as_millis() as u64).arg(k.fields.len());
                for (name, value) in &k.fields {
                    inv.arg(*name).arg(value.as_slice());
                }
            }
        }
        let applied: Vec<i64> = inv.invoke_async(conn).await?;
        if applied.len() != records.len() {
            return Err(unexpected("complete: one answer per record", applied.len()));
        }
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }
}

// ---------------------------------------------------------------------------------------------
// heartbeat.lua

/// One held task as the heartbeat reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldLease {
    pub seq: u64,
    pub token: u64,
    /// Unix ms when it started running (worker clock); 0 while it waits for a run slot.
    pub started_ms: u64,
    /// A progress report (fraction, message) new since the last heartbeat.
    pub progress: Option<(f32, String)>,
}

/// What the heartbeat learned, as (seq, token) pairs: the token names the claim it is about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Cancel was requested: stop them (their completion finishes them as cancelled).
    pub cancelled: Vec<(u64, u64)>,
    /// Leased to another claim, back in the queue, or gone: stop them, report nothing.
    pub lost: Vec<(u64, u64)>,
    /// Finished (normally by this worker's own result, just written).
    pub finished: Vec<(u64, u64)>,
}

impl Db {
    /// `heartbeat.lua`: extends the leases of `held` tasks of `q` to `lease` from now.
    pub async fn heartbeat(&self, conn: &mut Conn, q: &QueueName, lease: Duration, held: &[HeldLease]) -> redis::RedisResult<HeartbeatReply> {
        let mut inv = self.invocation(&HEARTBEAT, q, keys::heartbeat(&self.keys.queue(q)));
        inv.arg(lease.as_millis() as u64);
        for h in held {
            inv.arg(h.seq).arg(h.token).arg(h.started_ms);
            match &h.progress {
                Some((fraction, message)) => inv.arg(format!("{fraction:.4}")).arg(message.as_str()),
                None => inv.arg("").arg(""),
            };
        }
        let (c, l, f): (Vec<u64>, Vec<u64>, Vec<u64>) = inv.invoke_async(conn).await?;
        let pairs = |v: Vec<u64>| v.chunks_exact(2).map(|p| (p[0], p[1])).collect();
        Ok(HeartbeatReply { cancelled: pairs(c), lost: pairs(l), finished: pairs(f) })
    }
}

// ---------------------------------------------------------------------------------------------
// reap.lua

/// What one reaper call may do.
#[derive(Debug, Clone, Copy)]
pub struct ReapRequest {
    /// Most expired leases, and most finished tasks per state, handled per call.
    pub limit: usize,
    /// Attempts of tasks that did not set their own.
    pub max_attempts: u32,
    pub max_stalls: u32,
    pub retention: Retention,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReply {
    pub requeued: Vec<u64>,
    pub dead: Vec<u64>,
    /// Finished tasks deleted under the queue's retention.
    pub trimmed: u64,
    /// Waiting tasks finished as expired (their `expires` passed).
    pub expired: u64,
}

impl Db {
    /// `reap.lua`: returns expired leases of `q` to the queue (or the dead set) and applies the
    /// queue's retention.
    pub async fn reap(&self, conn: &mut Conn, q: &QueueName, r: ReapRequest) -> redis::RedisResult<ReapReply> {
        let mut inv = self.invocation(&REAP, q, keys::reap(&self.keys.queue(q)));
        inv.arg(r.retention.arg()).arg(r.limit).arg(r.max_attempts).arg(r.max_stalls);
        let (requeued, dead, trimmed, expired): (Vec<u64>, Vec<u64>, u64, u64) = inv.invoke_async(conn).await?;
        Ok(ReapReply { requeued, dead, trimmed, expired })
    }
}

// ---------------------------------------------------------------------------------------------
// cancel.lua, wait.lua

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Taken out of the queue and finished as cancelled.
    Cancelled,
    /// Running: its worker was asked to stop it.
    Requested,
    /// Already finished in this state.
    AlreadyFinished(TaskState),
    Unknown,
}

/// Why a task is cancelled (`cancel_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// `wasmq cancel`.
    Requested,
    /// `wasmq cancel FLOW`: every unfinished member of the flow.
    FlowCancelled,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::FlowCancelled => "flow_cancelled",
        }
    }
}

/// What registering a `result --wait` client found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitRegistration {
    Unknown,
    Finished,
    /// Registered: the task's done list will get a token when it finishes.
    Registered,
}

impl Db {
    /// `cancel.lua`: cancels one task for `reason` (`requested`, `flow_cancelled`, ...).
    pub async fn cancel(&self, conn: &mut Conn, id: &TaskId, retention: Retention, reason: CancelReason) -> redis::RedisResult<CancelOutcome> {
        let mut inv = self.invocation(&CANCEL, &id.queue, keys::cancel(&self.keys.queue(&id.queue)));
        inv.arg(retention.arg()).arg(id.seq).arg(reason.as_str());
        let (state, what): (String, String) = inv.invoke_async(conn).await?;
        Ok(match what.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "cancelling" => CancelOutcome::Requested,
            "finished" => CancelOutcome::AlreadyFinished(TaskState::parse(&state).unwrap_or(TaskState::Succeeded)),
            _ => CancelOutcome::Unknown,
        })
    }

    /// `drain.lua`: finishes up to `limit` waiting tasks of `q` in `states` (pending, delayed,
    /// blocked) as cancelled (`drained`), the groups' pools from `cursor` on (start with "0");
    /// returns how many, whether more may remain, and the cursor for the next call.
    pub async fn drain(
        &self,
        conn: &mut Conn,
        q: &QueueName,
        retention: Retention,
        states: &[TaskState],
        limit: u64,
        cursor: &str,
    ) -> redis::RedisResult<(u64, bool, String)> {
        let mut inv = self.invocation(&DRAIN, q, keys::cancel(&self.keys.queue(q)));
        let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        inv.arg(retention.arg()).arg(states.join(",")).arg(limit).arg(cursor);
        let (n, more, cursor): (u64, i64, String) = inv.invoke_async(conn).await?;
        Ok((n, more == 1, cursor))
    }

    /// `wait.lua`.
    pub async fn register_waiter(&self, conn: &mut Conn, id: &TaskId) -> redis::RedisResult<WaitRegistration> {
        let inv = self.invocation(&WAIT, &id.queue, [self.keys.task(id)]);
        let r: i64 = inv.invoke_async(conn).await?;
        Ok(match r {
            -1 => WaitRegistration::Unknown,
            1 => WaitRegistration::Finished,
            _ => WaitRegistration::Registered,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// retry_dead.lua, purge.lua, repolicy.lua

/// Which dead tasks to retry.
#[derive(Debug, Clone, Copy)]
pub enum RetrySelection<'a> {
    Seqs(&'a [u64]),
    /// The oldest `limit` after the first `skip` entries of the dead set.
    Oldest {
        limit: usize,
        skip: usize,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryReply {
    pub retried: Vec<u64>,
    /// Left dead: another unfinished task holds their unique key.
    pub blocked: Vec<u64>,
    /// Not dead tasks (their stale index entries, if any, were removed).
    pub gone: Vec<u64>,
    /// Dead-set entries looked at.
    pub scanned: usize,
}

impl Db {
    /// `retry_dead.lua`.
    pub async fn retry_dead(&self, conn: &mut Conn, q: &QueueName, which: RetrySelection<'_>) -> redis::RedisResult<RetryReply> {
        let mut inv = self.invocation(&RETRY_DEAD, q, keys::retry_dead(&self.keys.queue(q)));
        match which {
            RetrySelection::Seqs(seqs) => {
                inv.arg(0).arg(0);
                for s in seqs {
                    inv.arg(*s);
                }
            }
            RetrySelection::Oldest { limit, skip } => {
                inv.arg(limit).arg(skip);
            }
        }
        let (retried, blocked, gone, scanned): (Vec<u64>, Vec<u64>, Vec<u64>, usize) = inv.invoke_async(conn).await?;
        Ok(RetryReply { retried, blocked, gone, scanned })
    }

    /// `purge.lua`: deletes up to `limit` tasks of a finished `state` that finished at least
    /// `older_than` ago; returns how many.
    pub async fn purge(&self, conn: &mut Conn, q: &QueueName, state: TaskState, older_than: Duration, limit: usize) -> Result<u64, super::QueueError> {
        let k = self.keys.queue(q);
        let set = match state {
            TaskState::Succeeded => k.succeeded(),
            TaskState::Dead => k.dead(),
            TaskState::Cancelled => k.cancelled(),
            TaskState::Expired => k.expired(),
            other => return Err(super::QueueError::NotFinished(other)),
        };
        let mut inv = self.invocation(&PURGE, q, [set]);
        inv.arg(older_than.as_millis() as u64).arg(limit);
        Ok(inv.invoke_async(conn).await?)
    }

    /// `repolicy.lua`: moves the pending tasks of `q` into its (new) policy's structure.
    pub async fn repolicy(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<u64> {
        self.invocation(&REPOLICY, q, keys::repolicy(&self.keys.queue(q))).invoke_async(conn).await
    }
}

// ---------------------------------------------------------------------------------------------
// seal_flow.lua

impl Db {
    /// `seal_flow.lua`: opens a built flow with `root` its last reducer (0: none); returns the
    /// flow's state then.
    pub async fn seal_flow(&self, conn: &mut Conn, q: &QueueName, n: u64, root: u64) -> redis::RedisResult<String> {
        let mut inv = self.invocation(&SEAL_FLOW, q, [self.flow_key(q, n)]);
        inv.arg(root);
        inv.invoke_async(conn).await
    }
}

// ---------------------------------------------------------------------------------------------
// cancel_flow.lua

impl Db {
    /// `cancel_flow.lua`: marks a building or running flow cancelled (the caller cancels its
    /// members); returns its state before (None: no such flow).
    pub async fn cancel_flow(&self, conn: &mut Conn, q: &QueueName, n: u64) -> redis::RedisResult<Option<String>> {
        self.invocation(&CANCEL_FLOW, q, [self.flow_key(q, n)]).invoke_async(conn).await
    }
}

// ---------------------------------------------------------------------------------------------
// schedule_fire.lua

/// One tick of a periodic task for [`Db::fire_schedule`].
#[derive(Debug, Clone)]
pub struct Tick<'a> {
    pub name: &'a str,
    /// The due time the caller read (compare-and-set).
    pub expected_ms: u64,
    /// The schedule's next due time.
    pub next_ms: u64,
    /// The task to enqueue, or None to skip this tick.
    pub task: Option<NewTask<'a>>,
}

/// What one firing attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FireReply {
    Enqueued(u64),
    Skipped,
    /// Another caller fired it first (or the schedule was removed).
    Lost,
}

impl Db {
    /// `schedule_fire.lua`.
    pub async fn fire_schedule(&self, conn: &mut Conn, q: &QueueName, t: &Tick<'_>) -> redis::RedisResult<FireReply> {
        let mut inv = self.invocation(&SCHEDULE_FIRE, q, keys::schedule_fire(&self.keys.queue(q)));
        inv.arg(t.name).arg(t.expected_ms).arg(t.next_ms).arg(t.task.is_some() as u8);
        match &t.task {
            Some(task) => {
                inv.arg(task.module).arg(task.priority).arg(task.expires.after.as_millis() as u64);
                for (k, v) in &task.fields {
                    inv.arg(*k).arg(v.as_slice());
                }
            }
            None => {
                inv.arg("").arg(0).arg(0);
            }
        }
        let r: i64 = inv.invoke_async(conn).await?;
        Ok(match r {
            -1 => FireReply::Lost,
            0 => FireReply::Skipped,
            seq => FireReply::Enqueued(seq as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `KEYS[i] name ...` and `ARGV[i] name ...` lines of a script's header.
    fn header(script: &str) -> (Vec<String>, Vec<String>) {
        let mut keys = Vec::new();
        let mut argv = Vec::new();
        for line in script.lines().take_while(|l| l.starts_with("--")) {
            let mut words = line.trim_start_matches('-').split_whitespace();
            let (Some(slot), Some(name)) = (words.next(), words.next()) else { continue };
            if let Some(n) = slot.strip_prefix("KEYS[").and_then(|r| r.strip_suffix(']')) {
                if n.parse::<usize>().is_ok() {
                    keys.push(name.replace('-', "_"));
                }
            } else if let Some(n) = slot.strip_prefix("ARGV[").and_then(|r| r.strip_suffix(']'))
                && n.parse::<usize>().is_ok()
            {
                argv.push(name.to_string());
            }
        }
        (keys, argv)
    }

    fn names(keys: &[String]) -> Vec<String> {
        // P:{q}:schedule-due -> schedule-due; the key names of the headers are the key suffixes.
        keys.iter().map(|k| k.rsplit(':').next().unwrap().replace('-', "_")).collect()
    }

    /// Every script's header names the KEYS its wrapper passes, in order, and starts its ARGV
    /// with the base and the clock offset that every invocation passes.
    #[test]
    fn every_script_header_matches_its_wrapper() {
        let k = super::super::keys::Keys::new("P").queue(&QueueName::new("q").unwrap());
        let cases: Vec<(&str, Vec<String>)> = vec![
            (include_str!("lua/enqueue.lua"), keys::enqueue(&k).to_vec()),
            (include_str!("lua/claim.lua"), keys::claim(&k).to_vec()),
            (include_str!("lua/complete.lua"), keys::complete(&k).to_vec()),
            (include_str!("lua/heartbeat.lua"), keys::heartbeat(&k).to_vec()),
            (include_str!("lua/reap.lua"), keys::reap(&k).to_vec()),
            (include_str!("lua/cancel.lua"), keys::cancel(&k).to_vec()),
            (include_str!("lua/drain.lua"), keys::cancel(&k).to_vec()),
            (include_str!("lua/retry_dead.lua"), keys::retry_dead(&k).to_vec()),
            (include_str!("lua/repolicy.lua"), keys::repolicy(&k).to_vec()),
        ];
        for (script, wrapper_keys) in cases {
            let (hkeys, argv) = header(script);
            let first = script.lines().next().unwrap();
            assert_eq!(hkeys, names(&wrapper_keys).iter().map(|n| n.to_string()).collect::<Vec<_>>(), "KEYS of {first}");
            assert_eq!(argv.get(..2), Some(&["base".to_string(), "clock".to_string()][..]), "ARGV of {first}");
        }
        // Scripts whose KEYS are described in words rather than one per line.
        for script in [include_str!("lua/enqueue_bulk.lua"), include_str!("lua/schedule_fire.lua"), include_str!("lua/purge.lua"), include_str!("lua/wait.lua")]
        {
            let (_, argv) = header(script);
            assert_eq!(argv.get(..2), Some(&["base".to_string(), "clock".to_string()][..]), "ARGV of {}", script.lines().next().unwrap());
        }
        let (keys, _) = header(include_str!("lua/schedule_fire.lua"));
        assert_eq!(keys, ["schedule_due"]);
        let (keys, argv) = header(include_str!("lua/worker_beat.lua"));
        assert_eq!((keys, argv.get(..2).map(<[String]>::to_vec)), (vec!["index".to_string(), "worker".to_string()], Some(vec!["base".into(), "clock".into()])));
    }

    /// The ARGV each wrapper passes after the base and the clock, against the header's names.
    #[test]
    fn argv_orders_match_the_headers() {
        let expect = |script: &str, names: &[&str]| {
            let (_, argv) = header(script);
            let rest: Vec<&str> = argv.iter().skip(2).map(String::as_str).collect();
            assert_eq!(rest, names, "ARGV of {}", script.lines().next().unwrap());
        };
        expect(
            include_str!("lua/enqueue.lua"),
            &["due_at", "delay_ms", "module", "priority", "unique", "unique_ms", "after", "on_parent_failure", "expires_at", "expires_in"],
        );
        expect(include_str!("lua/enqueue_bulk.lua"), &["due_at", "delay_ms", "module", "priority", "expires_at", "expires_in", "nshared"]);
        expect(include_str!("lua/claim.lua"), &["lease_ms", "n", "max_bytes", "worker", "max_input", "run_slots"]);
        expect(include_str!("lua/complete.lua"), &["retention", "worker"]);
        expect(include_str!("lua/heartbeat.lua"), &["lease_ms"]);
        expect(include_str!("lua/reap.lua"), &["retention", "limit", "max_attempts_default", "max_stalls"]);
        expect(include_str!("lua/cancel.lua"), &["retention", "seq", "reason"]);
        expect(include_str!("lua/retry_dead.lua"), &["limit", "skip"]);
        expect(include_str!("lua/purge.lua"), &["older_ms", "limit"]);
        expect(include_str!("lua/schedule_fire.lua"), &["name", "expected", "next", "fire", "module", "priority", "expires_in"]);
        expect(include_str!("lua/repolicy.lua"), &[]);
        expect(include_str!("lua/wait.lua"), &[]);
        expect(include_str!("lua/seal_flow.lua"), &["root"]);
        expect(include_str!("lua/cancel_flow.lua"), &[]);
        expect(include_str!("lua/worker_beat.lua"), &["id", "ttl_ms"]);
        expect(include_str!("lua/drain.lua"), &["retention", "states", "limit", "cursor"]);
    }
}
