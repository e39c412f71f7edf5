//! The queue layer: the one place that knows how queues and tasks are kept in Redis.
//!
//! - [`keys`]: the key schema (every key name is built there).
//! - [`ids`]: queue names and task ids, and the ranges of priorities and attempts.
//! - [`task`]: the task hash's fields, the states, and typed views of a task.
//! - [`policy`]: queue settings kept in the queue's meta hash (ordering policy, retention).
//! - `scripts` and `lua/`: one Lua script per state change and one typed function per script on
//!   [`Db`], which owns the script's KEYS, ARGV order and reply.
//!
//! [`Db`] is the handle everything else goes through: the client, the worker, the scheduler, the
//! CLI, the benchmarks and the tests call its functions and never build keys or scripts
//! themselves.

mod flow;
pub mod ids;
pub mod keys;
pub mod policy;
mod scripts;
pub mod task;
pub mod workers;

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;

pub use flow::{FlowMembersPage, FlowRecord, FlowState};
pub use ids::{DEFAULT_QUEUE, GroupKey, MAX_ATTEMPTS, MAX_PRIORITY, MIN_PRIORITY, QueueName, TaskId};
pub use keys::Keys;
pub use policy::{DEFAULT_RETENTION_AGE, DEFAULT_RETENTION_COUNT, Policy, QueueLimits, RateLimit, Retention, WsjfSettings};
pub use scripts::{
    Action, AttemptFailure, CancelOutcome, CancelReason, ChildTask, ClaimBatch, ClaimRequest, ClaimedTask, Completion, Due, EnqueueReply, Expiry, FireReply,
    HeartbeatReply, HeldLease, NewTask, NewTasks, ParentFailure, ReapReply, ReapRequest, RetryReply, RetrySelection, Tick, WaitRegistration,
};
pub use task::{Fields, TaskRecord, TaskSpec, TaskState};

use crate::conn::Conn;

/// What went wrong in the queue layer (besides Redis errors).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot purge {0} tasks; use succeeded, dead, cancelled or expired")]
    NotFinished(TaskState),
    #[error("unknown parent task {0} (never enqueued in this queue, or its result expired)")]
    UnknownParent(u64),
    #[error("the parents and the children they spawned come to {0} tasks, more than a task may wait for (10000)")]
    TooManyParents(u64),
    #[error("queue {queue} has malformed settings: {reason}")]
    Settings { queue: String, reason: String },
}

/// The queue layer's handle: the key schema of one prefix and the clock offset of the scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Db {
    keys: Keys,
    clock_offset_ms: i64,
}

/// A page of a queue's pending tasks without a group ([`Db::pending_page`]).
#[derive(Debug, Clone, Default)]
pub struct PendingPage {
    pub seqs: Vec<u64>,
    /// Pending tasks without a group (the queue's own pool).
    pub own: u64,
    /// Pending tasks in the groups' pools.
    pub grouped: u64,
}

/// Counts and settings of one queue.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub pending: u64,
    pub delayed: u64,
    /// Waiting for their parents.
    pub blocked: u64,
    pub active: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Finished as expired (still waiting when their `--expires` passed), kept by retention.
    pub expired: u64,
    pub paused: bool,
    pub policy: String,
    /// Flow control (`wasmq queue limit`).
    pub limits: QueueLimits,
    /// With a rate limit: tasks started in the current window (the window's running total).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_used: Option<u64>,
    /// Groups with work (`enqueue --group`): in the rotation or parked at a limit (the tasks
    /// without a group count as one).
    pub groups: u64,
    /// Cumulative counters since the queue was created.
    pub enqueued_total: u64,
    pub succeeded_total: u64,
    pub dead_total: u64,
    pub cancelled_total: u64,
    pub expired_total: u64,
    pub retried_total: u64,
    pub requeued_total: u64,
    /// When a worker last claimed a task of the queue (Unix ms, Redis clock).
    pub last_claim_ms: Option<u64>,
    /// Attempts' run times, from running totals kept by `complete.lua` (`/metrics`).
    #[serde(skip)]
    pub run_time: Histogram,
    /// Waits from enqueue to first claim, kept by `claim.lua` (`/metrics`).
    #[serde(skip)]
    pub wait_time: Histogram,
}

/// Upper bounds (µs) of the histogram buckets the scripts keep (lib.lua's `HIST_BOUNDS_US`; a
/// last bucket holds everything above).
pub const HISTOGRAM_BOUNDS_US: [u64; 10] = [5_000, 25_000, 100_000, 500_000, 1_000_000, 5_000_000, 30_000_000, 120_000_000, 600_000_000, 3_600_000_000];

/// A histogram kept as running totals in a queue's stats hash: per bucket a count (not
/// cumulative; `buckets[i]` counts observations up to `HISTOGRAM_BOUNDS_US[i]`, the last one the
/// rest), their sum and count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
    pub count: u64,
}

impl Histogram {
    fn from_counters(name: &str, c: &HashMap<String, i64>) -> Self {
        let get = |k: String| c.get(&k).copied().unwrap_or(0).max(0) as u64;
        Self {
            buckets: (1..=HISTOGRAM_BOUNDS_US.len() + 1).map(|i| get(format!("{name}_b{i}"))).collect(),
            sum_us: get(format!("{name}_sum_us")),
            count: get(format!("{name}_count")),
        }
    }
}

impl Db {
    pub fn new(prefix: &str) -> Self {
        Self { keys: Keys::new(prefix), clock_offset_ms: 0 }
    }

    /// A handle whose scripts see the server's clock moved by `offset_ms`: for tests that drive
    /// leases, due times and schedules at a chosen time without sleeping.
    pub fn with_clock_offset(mut self, offset_ms: i64) -> Self {
        self.clock_offset_ms = offset_ms;
        self
    }

    /// The key schema (for reading keys in tests and tools; writes go through this module).
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The time the scripts see: the Redis server's clock (plus the test offset), Unix ms. In a
    /// Cluster, the clock of the node that holds `q`.
    pub async fn now_ms(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<u64> {
        let (secs, micros): (u64, u64) = conn.query_at(&self.keys.queue(q).meta(), &redis::cmd("TIME")).await?;
        Ok((secs * 1000 + micros / 1000).saturating_add_signed(self.clock_offset_ms))
    }

    /// Adds a queue to the registry of queues (for stats, module references and the reaper).
    pub async fn register_queue(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<()> {
        conn.sadd(self.keys.queues(), q.as_str()).await
    }

    /// Every queue that ever had a task, sorted. Members that are not valid names are skipped.
    pub async fn queues(&self, conn: &mut Conn) -> redis::RedisResult<Vec<QueueName>> {
        let names: Vec<Vec<u8>> = conn.smembers(self.keys.queues()).await?;
        let mut qs: Vec<QueueName> = names.iter().filter_map(|n| std::str::from_utf8(n).ok().and_then(|n| QueueName::new(n).ok())).collect();
        qs.sort();
        Ok(qs)
    }

    /// Reserves the next task number of queue `q` for a task that is enqueued later (a spawned
    /// child, committed by its spawner's completion). A number never committed is a gap.
    pub async fn reserve_seq(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<u64> {
        conn.incr(self.keys.queue(q).seq(), 1).await
    }

    /// The raw fields of a task hash (None for an unknown task).
    pub async fn task_fields(&self, conn: &mut Conn, id: &TaskId) -> redis::RedisResult<Option<Fields>> {
        let flat: Vec<Vec<u8>> = conn.hgetall(self.keys.task(id)).await?;
        Ok((!flat.is_empty()).then(|| Fields::from_flat(flat)))
    }

    /// Some fields of many tasks of one queue, in order (None where a task is gone): one
    /// pipelined `HMGET` per task, so that a listing never reads outputs, inputs or logs.
    pub async fn task_fields_of_each(&self, conn: &mut Conn, q: &QueueName, seqs: &[u64], names: &[&str]) -> redis::RedisResult<Vec<Option<Fields>>> {
        let k = self.keys.queue(q);
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(1000) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.cmd("HMGET").arg(k.task(*s)).arg(names);
            }
            let rows: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(conn).await?;
            out.extend(rows.into_iter().map(|vals| {
                let present: HashMap<String, Vec<u8>> = names.iter().zip(vals).filter_map(|(n, v)| Some((n.to_string(), v?))).collect();
                (!present.is_empty()).then_some(Fields(present))
            }));
        }
        Ok(out)
    }

    /// The outputs of tasks of one queue, in order (None where a task or its output is gone).
    pub async fn outputs(&self, conn: &mut Conn, q: &QueueName, seqs: &[u64]) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
        self.field_of_each(conn, q, seqs, task::field::OUTPUT).await
    }

    /// One field of many tasks of one queue, in order, a thousand per round trip.
    async fn field_of_each<T: redis::FromRedisValue>(&self, conn: &mut Conn, q: &QueueName, seqs: &[u64], name: &str) -> redis::RedisResult<Vec<Option<T>>> {
        let k = self.keys.queue(q);
        let mut out = Vec::with_capacity(seqs.len());
        for chunk in seqs.chunks(1000) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.hget(k.task(*s), name);
            }
            out.extend(pipe.query_async::<Vec<Option<T>>>(conn).await?);
        }
        Ok(out)
    }

    /// The states of tasks of one queue, in order (None where a task is gone).
    pub async fn states(&self, conn: &mut Conn, q: &QueueName, seqs: &[u64]) -> redis::RedisResult<Vec<Option<TaskState>>> {
        let raw: Vec<Option<String>> = self.field_of_each(conn, q, seqs, task::field::STATE).await?;
        Ok(raw.into_iter().map(|s| s.as_deref().and_then(TaskState::parse)).collect())
    }

    /// A task's state field, raw (None for an unknown task).
    pub async fn task_state(&self, conn: &mut Conn, id: &TaskId) -> redis::RedisResult<Option<String>> {
        conn.hget(self.keys.task(id), task::field::STATE).await
    }

    /// Waits up to `timeout` for the done token of a task that has a registered waiter (see
    /// `wait.lua`), and passes it on to the next waiter. `conn` must be a connection of its own:
    /// the wait blocks it. True when a token came.
    pub async fn wait_done(&self, conn: &mut Conn, id: &TaskId, timeout: Duration) -> redis::RedisResult<bool> {
        let done = self.keys.queue(&id.queue).done(id.seq);
        let secs = (timeout.as_secs_f64() * 1000.0).ceil().max(10.0) / 1000.0;
        let popped: Option<(String, String)> = redis::cmd("BLPOP").arg(&done).arg(secs).query_async(conn).await?;
        if popped.is_some() {
            let _: () = redis::pipe().rpush(&done, 1).ignore().pexpire(&done, 60_000).ignore().query_async(conn).await?;
        }
        Ok(popped.is_some())
    }

    /// `wait_done` for many tasks of one queue at once (one slot: they share the queue's hash
    /// tag): waits up to `timeout` for the first done token of any of `ids`, passes it on, and
    /// returns whose it was. One blocked connection serves every waiter of a server this way.
    pub async fn wait_any_done(&self, conn: &mut Conn, q: &QueueName, ids: &[TaskId], timeout: Duration) -> redis::RedisResult<Option<TaskId>> {
        let k = self.keys.queue(q);
        let keys: Vec<String> = ids.iter().filter(|id| &id.queue == q).map(|id| k.done(id.seq)).collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let secs = (timeout.as_secs_f64() * 1000.0).ceil().max(10.0) / 1000.0;
        let popped: Option<(String, String)> = redis::cmd("BLPOP").arg(&keys).arg(secs).query_async(conn).await?;
        let Some((key, _)) = popped else { return Ok(None) };
        let _: () = redis::pipe().rpush(&key, 1).ignore().pexpire(&key, 60_000).ignore().query_async(conn).await?;
        let seq = key.rsplit(':').next().and_then(|s| s.parse().ok());
        Ok(seq.map(|s| TaskId::new(q.clone(), s)))
    }

    /// Waits up to `timeout` (whole seconds, at least 1) for a wake-up token of an idle worker of
    /// `q`. `conn` must be a connection of its own: the wait blocks it.
    pub async fn wait_signal(&self, conn: &mut Conn, q: &QueueName, timeout_s: u64) -> redis::RedisResult<bool> {
        let popped: Option<(String, String)> = redis::cmd("BLPOP").arg(self.keys.queue(q).signal()).arg(timeout_s.max(1)).query_async(conn).await?;
        Ok(popped.is_some())
    }

    /// Wakes one idle worker of `q` (after a resume, or to pass on a token a worker did not use).
    pub async fn wake(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<()> {
        conn.rpush(self.keys.queue(q).signal(), 1).await
    }

    /// Tasks pending in a queue, in whichever structure its policy keeps them, tombstones left
    /// by cancels not counted. The groups' pools count through the stats field
    /// `grouped_pending` (lib.lua keeps it), so this is O(priority levels), whatever the groups.
    pub async fn pending_count(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<u64> {
        let (own, grouped) = self.pending_counts(conn, q).await?;
        Ok(own + grouped)
    }

    /// Pending tasks without a group (the queue's own pool) and in the groups' pools.
    pub async fn pending_counts(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<(u64, u64)> {
        let k = self.keys.queue(q);
        let levels: Vec<String> = conn.zrange(k.levels(), 0, -1).await?;
        let mut pipe = redis::pipe();
        pipe.hget(k.stats(), "tombstones").hget(k.stats(), "grouped_pending").zcard(k.pending());
        for l in &levels {
            pipe.llen(k.level(l));
        }
        let reply: Vec<Option<i64>> = pipe.query_async(conn).await?;
        let n = |i: usize| reply.get(i).copied().flatten().unwrap_or(0).max(0);
        let own: i64 = (2..reply.len()).map(n).sum::<i64>() - n(0);
        Ok((own.max(0) as u64, n(1) as u64))
    }

    /// One page of a group's pending tasks, in the order workers claim them within the group,
    /// and how many it holds: two commands.
    pub async fn group_page(&self, conn: &mut Conn, q: &QueueName, group: &GroupKey, offset: usize, limit: usize) -> redis::RedisResult<(Vec<u64>, u64)> {
        let pool = self.keys.queue(q).group_pool(group.as_str());
        let stop = (offset + limit.max(1) - 1) as isize;
        redis::pipe().zrange(&pool, offset as isize, stop).zcard(&pool).query_async(conn).await
    }

    /// Up to about `limit` of a queue's groups with work (one `HSCAN` page, in no particular
    /// order): each with where it is (`ready`, `parked`, `rate`) and its pending tasks. The tasks
    /// without a group are not among them.
    pub async fn groups(&self, conn: &mut Conn, q: &QueueName, limit: usize) -> redis::RedisResult<Vec<(String, String, u64)>> {
        let k = self.keys.queue(q);
        let (_, page): (String, Vec<(String, String)>) = redis::cmd("HSCAN").arg(k.groups_state()).arg(0).arg("COUNT").arg(limit).query_async(conn).await?;
        let page: Vec<(String, String)> = page.into_iter().filter(|(g, _)| !g.is_empty()).take(limit).collect();
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (g, _) in &page {
            pipe.zcard(k.group_pool(g));
        }
        let counts: Vec<u64> = pipe.query_async(conn).await?;
        Ok(page.into_iter().zip(counts).map(|((g, st), n)| (g, st, n)).collect())
    }

    /// Counts and settings of one queue, in two round trips to its slot.
    pub async fn stats(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<QueueStats> {
        let k = self.keys.queue(q);
        let pending = self.pending_count(conn, q).await?;
        type Counts = (u64, u64, u64, u64, u64, u64, u64, u64, HashMap<String, String>, HashMap<String, i64>);
        let (delayed, blocked, active, succeeded, dead, cancelled, expired, groups, meta, counters): Counts = redis::pipe()
            .zcard(k.delayed())
            .zcard(k.blocked())
            .zcard(k.active())
            .zcard(k.succeeded())
            .zcard(k.dead())
            .zcard(k.cancelled())
            .zcard(k.expired())
            .hlen(k.groups_state())
            .hgetall(k.meta())
            .hgetall(k.stats())
            .query_async(conn)
            .await?;
        let c = |n: &str| counters.get(n).copied().unwrap_or(0).max(0) as u64;
        let limits = QueueLimits::from_fields(&policy::LIMIT_FIELDS.map(|f| meta.get(f).cloned()));
        let rate_used = match limits.rate {
            Some(r) => Some(self.rate_used(conn, q, r).await?),
            None => None,
        };
        Ok(QueueStats {
            queue: q.to_string(),
            pending,
            delayed,
            blocked,
            active,
            succeeded,
            dead,
            cancelled,
            expired,
            paused: meta.get("paused").is_some_and(|v| v == "1"),
            policy: meta.get("policy").cloned().unwrap_or_else(|| Policy::Priority.as_str().into()),
            limits,
            rate_used,
            groups,
            enqueued_total: c("enqueued"),
            succeeded_total: c("succeeded"),
            dead_total: c("dead"),
            cancelled_total: c("cancelled"),
            expired_total: c("expired"),
            retried_total: c("retried"),
            requeued_total: c("requeued"),
            last_claim_ms: counters.get("last_claim").map(|v| (*v).max(0) as u64),
            run_time: Histogram::from_counters("run", &counters),
            wait_time: Histogram::from_counters("wait", &counters),
        })
    }

    /// When the task that a worker would claim next was enqueued (Unix ms), or None when nothing
    /// is pending: the head of the highest priority list or of the wsjf set, whichever the
    /// queue's policy takes first. Two round trips, whatever the queue's size. The head may be
    /// a tombstone of a task cancelled while it waited (its age is shown until a claim drops it).
    pub async fn next_task_created_ms(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<Option<u64>> {
        let k = self.keys.queue(q);
        let (levels, zhead, policy): (Vec<String>, Vec<String>, Option<String>) =
            redis::pipe().zrange(k.levels(), 0, 0).zrange(k.pending(), 0, 0).hget(k.meta(), "policy").query_async(conn).await?;
        let list_head = match levels.first() {
            Some(l) => conn.lindex::<_, Option<String>>(k.level(l), 0).await?,
            None => None,
        };
        let wsjf_first = policy.as_deref() == Some(Policy::Wsjf.as_str());
        let head = if wsjf_first { zhead.first().cloned().or(list_head) } else { list_head.or_else(|| zhead.first().cloned()) };
        let Some(seq) = head.and_then(|s| s.parse::<u64>().ok()) else { return Ok(None) };
        let created: Option<u64> = conn.hget(k.task(seq), task::field::CREATED).await?;
        Ok(created)
    }

    /// The seqs of a queue's oldest finished tasks of one state, at most `limit`.
    pub async fn finished_seqs(&self, conn: &mut Conn, q: &QueueName, state: TaskState, limit: usize) -> redis::RedisResult<Vec<u64>> {
        let k = self.keys.queue(q);
        let set = match state {
            TaskState::Succeeded => k.succeeded(),
            TaskState::Dead => k.dead(),
            TaskState::Cancelled => k.cancelled(),
            TaskState::Expired => k.expired(),
            _ => return Ok(Vec::new()),
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        conn.zrange(set, 0, limit as isize - 1).await
    }

    /// One page of the seqs of a queue's tasks in a state that has an index set (delayed,
    /// blocked, active and the finished states; newest first for finished ones), and how many
    /// the set holds: two commands whatever the queue's size. Pending tasks live in per-priority
    /// lists and are not paged here.
    pub async fn state_page(&self, conn: &mut Conn, q: &QueueName, state: TaskState, offset: usize, limit: usize) -> redis::RedisResult<(Vec<u64>, u64)> {
        let k = self.keys.queue(q);
        let (set, newest_first) = match state {
            TaskState::Delayed => (k.delayed(), false),
            TaskState::Blocked => (k.blocked(), false),
            TaskState::Active => (k.active(), false),
            TaskState::Succeeded => (k.succeeded(), true),
            TaskState::Dead => (k.dead(), true),
            TaskState::Cancelled => (k.cancelled(), true),
            TaskState::Expired => (k.expired(), true),
            TaskState::Pending => {
                let page = self.pending_page(conn, q, offset, limit).await?;
                return Ok((page.seqs, page.own));
            }
        };
        if limit == 0 {
            return Ok((Vec::new(), conn.zcard(&set).await?));
        }
        let (start, stop) = (offset as isize, (offset + limit - 1) as isize);
        let mut pipe = redis::pipe();
        if newest_first {
            pipe.zrevrange(&set, start, stop);
        } else {
            pipe.zrange(&set, start, stop);
        }
        pipe.zcard(&set);
        pipe.query_async(conn).await
    }

    /// One page of a queue's pending tasks without a group in the order workers would claim them
    /// (the priority lists, highest level first, and the wsjf set, in the policy's order), with
    /// the counts of [`Db::pending_counts`] (see [`Db::group_page`] for a group's tasks). A
    /// list's length and a range of it per priority level up to the page's end: the cost grows
    /// with the page and the number of levels, never with the number of tasks. A task cancelled
    /// while it waited may still sit in a list (a tombstone) and is listed.
    pub async fn pending_page(&self, conn: &mut Conn, q: &QueueName, offset: usize, limit: usize) -> redis::RedisResult<PendingPage> {
        let k = self.keys.queue(q);
        let (own, grouped) = self.pending_counts(conn, q).await?;
        let (levels, policy): (Vec<String>, Option<String>) = redis::pipe().zrange(k.levels(), 0, -1).hget(k.meta(), "policy").query_async(conn).await?;
        let mut sources: Vec<Option<String>> = levels.into_iter().map(Some).collect();
        // None stands for the wsjf set.
        if policy.as_deref() == Some(Policy::Wsjf.as_str()) {
            sources.insert(0, None);
        } else {
            sources.push(None);
        }
        let (mut skip, mut out) = (offset, Vec::new());
        for src in sources {
            if out.len() >= limit {
                break;
            }
            let len: u64 = match &src {
                Some(l) => conn.llen(k.level(l)).await?,
                None => conn.zcard(k.pending()).await?,
            };
            if skip as u64 >= len {
                skip -= len as usize;
                continue;
            }
            let (start, stop) = (skip as isize, (skip + limit - out.len() - 1) as isize);
            let seqs: Vec<u64> = match &src {
                Some(l) => conn.lrange(k.level(l), start, stop).await?,
                None => conn.zrange(k.pending(), start, stop).await?,
            };
            out.extend(seqs);
            skip = 0;
        }
        Ok(PendingPage { seqs: out, own, grouped })
    }

    /// The last hour's finished attempts per minute, oldest first: `(minute start ms, succeeded,
    /// failed)` for each of the 60 minutes up to `now_ms` (zero where nothing finished). One
    /// `HGETALL` of a hash of at most 180 fields.
    pub async fn minutes(&self, conn: &mut Conn, q: &QueueName, now_ms: u64) -> redis::RedisResult<Vec<(u64, u64, u64)>> {
        let h: HashMap<String, u64> = conn.hgetall(self.keys.queue(q).minutes()).await?;
        let now_min = now_ms / 60_000;
        Ok((0..60)
            .rev()
            .map(|back| {
                let m = now_min.saturating_sub(back);
                let i = m % 60;
                let held = h.get(&format!("m{i}")) == Some(&m);
                let get = |f: &str| if held { h.get(&format!("{f}{i}")).copied().unwrap_or(0) } else { 0 };
                (m * 60_000, get("s"), get("f"))
            })
            .collect())
    }

    /// Removes a finished task's index entry whose task hash is gone (found by a reader).
    pub async fn forget_finished(&self, conn: &mut Conn, id: &TaskId, state: TaskState) -> redis::RedisResult<()> {
        let k = self.keys.queue(&id.queue);
        let set = match state {
            TaskState::Succeeded => k.succeeded(),
            TaskState::Dead => k.dead(),
            TaskState::Cancelled => k.cancelled(),
            TaskState::Expired => k.expired(),
            _ => return Ok(()),
        };
        conn.zrem(set, id.seq).await
    }

    async fn set_meta(&self, conn: &mut Conn, q: &QueueName, pairs: &[(&str, String)]) -> redis::RedisResult<()> {
        self.register_queue(conn, q).await?;
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.queue(q).meta());
        for (k, v) in pairs {
            cmd.arg(*k).arg(v);
        }
        cmd.query_async(conn).await
    }

    /// Pauses (no claims) or resumes a queue; a resume wakes its idle workers.
    pub async fn set_paused(&self, conn: &mut Conn, q: &QueueName, paused: bool) -> redis::RedisResult<()> {
        self.set_meta(conn, q, &[("paused", if paused { "1" } else { "0" }.into())]).await?;
        if !paused {
            self.wake(conn, q).await?;
        }
        Ok(())
    }

    /// Sets a queue's ordering policy with every wsjf setting, then moves its pending tasks into
    /// the new policy's structure; returns how many moved.
    pub async fn set_policy(&self, conn: &mut Conn, q: &QueueName, policy: Policy, wsjf: WsjfSettings) -> redis::RedisResult<u64> {
        self.set_meta(
            conn,
            q,
            &[
                ("policy", policy.as_str().to_string()),
                ("stretch", wsjf.stretch.to_string()),
                ("max_wait_ms", (wsjf.max_wait.as_millis() as u64).to_string()),
                ("default_estimate_us", (wsjf.default_estimate.as_micros() as u64).to_string()),
            ],
        )
        .await?;
        self.repolicy(conn, q).await
    }

    /// A queue's retention settings (None: it has none, and workers apply their defaults).
    pub async fn retention(&self, conn: &mut Conn, q: &QueueName) -> Result<Option<Retention>, QueueError> {
        let v: Vec<Option<String>> = redis::cmd("HMGET").arg(self.keys.queue(q).meta()).arg(&policy::RETENTION_FIELDS[..]).query_async(conn).await?;
        if v.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut values = [0u64; 8];
        for (i, s) in v.iter().enumerate() {
            // Settings from before the expired state: expired tasks follow cancelled ones.
            let s = s.as_deref().or_else(|| if i >= 6 { v[i - 2].as_deref() } else { None }).unwrap_or("0");
            values[i] = s.parse().map_err(|_| QueueError::Settings { queue: q.to_string(), reason: format!("{} is {s:?}", policy::RETENTION_FIELDS[i]) })?;
        }
        Ok(Some(Retention::from_values(values)))
    }

    /// Stores a queue's retention settings (all of them, so that they do not mix with a
    /// worker's defaults).
    pub async fn set_retention(&self, conn: &mut Conn, q: &QueueName, r: Retention) -> redis::RedisResult<()> {
        let pairs: Vec<(&str, String)> = policy::RETENTION_FIELDS.iter().zip(r.to_values()).map(|(f, v)| (*f, v.to_string())).collect();
        self.set_meta(conn, q, &pairs).await
    }

    /// A queue's flow-control limits.
    pub async fn limits(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<QueueLimits> {
        let v: Vec<Option<String>> = redis::cmd("HMGET").arg(self.keys.queue(q).meta()).arg(&policy::LIMIT_FIELDS[..]).query_async(conn).await?;
        Ok(QueueLimits::from_fields(&v))
    }

    /// Sets a queue's limits: a kind given as Some replaces the stored one, None leaves it. A
    /// raised limit wakes idle workers. A group parked at its limit takes a changed one at its
    /// next turn: when one of its tasks finishes, or its rate window frees.
    pub async fn set_limits(&self, conn: &mut Conn, q: &QueueName, limits: QueueLimits) -> redis::RedisResult<()> {
        let pairs = limits.to_fields();
        if !pairs.is_empty() {
            self.set_meta(conn, q, &pairs).await?;
            self.wake(conn, q).await?;
        }
        Ok(())
    }

    /// Removes a queue's limits and the state of its rate window; wakes idle workers.
    pub async fn clear_limits(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<()> {
        let k = self.keys.queue(q);
        let _: () = redis::pipe().atomic().hdel(k.meta(), &policy::LIMIT_FIELDS[..]).del(k.rate()).hdel(k.stats(), "rate_window").query_async(conn).await?;
        self.wake(conn, q).await
    }

    /// Tasks of `q` started (claimed) in the rate window that ends now: the window's running
    /// total less the entries at its head that left the window and that no claim dropped yet
    /// (none when the newest entry left it too). No read of the whole window.
    pub async fn rate_used(&self, conn: &mut Conn, q: &QueueName, r: RateLimit) -> redis::RedisResult<u64> {
        let k = self.keys.queue(q);
        let now = self.now_ms(conn, q).await?;
        let horizon = now.saturating_sub(r.per.as_millis() as u64);
        let entry = |e: &str| e.split_once(':').and_then(|(t, c)| Some((t.parse::<u64>().ok()?, c.parse::<u64>().ok()?)));
        let (total, newest): (Option<u64>, Option<String>) = redis::pipe().hget(k.stats(), "rate_window").lindex(k.rate(), -1).query_async(conn).await?;
        if newest.as_deref().and_then(entry).is_none_or(|(t, _)| t <= horizon) {
            return Ok(0);
        }
        let mut used = total.unwrap_or(0);
        let mut start = 0isize;
        loop {
            let page: Vec<String> = conn.lrange(k.rate(), start, start + 255).await?;
            if page.is_empty() {
                return Ok(used);
            }
            for (t, c) in page.iter().filter_map(|e| entry(e)) {
                if t > horizon {
                    return Ok(used);
                }
                used = used.saturating_sub(c);
            }
            start += 256;
        }
    }

    /// Which limit holds a pending task of `group` back now, if one does: the queue's
    /// concurrency limit when its active tasks reach it, its rate limit when its window is full,
    /// the group's when the group is out of the rotation for one (parked or rate-parked).
    pub async fn binding_limit(&self, conn: &mut Conn, q: &QueueName, group: Option<&str>) -> redis::RedisResult<Option<&'static str>> {
        let limits = self.limits(conn, q).await?;
        if let Some(c) = limits.concurrency {
            let active: u64 = conn.zcard(self.keys.queue(q).active()).await?;
            if active >= c {
                return Ok(Some("concurrency_limit"));
            }
        }
        if let Some(r) = limits.rate
            && self.rate_used(conn, q, r).await? >= r.n
        {
            return Ok(Some("rate_limit"));
        }
        if let Some(g) = group {
            let state: Option<String> = conn.hget(self.keys.queue(q).groups_state(), g).await?;
            match state.as_deref() {
                Some("parked") => return Ok(Some("group_concurrency_limit")),
                Some("rate") => return Ok(Some("group_rate_limit")),
                _ => {}
            }
        }
        Ok(None)
    }

    /// How many unfinished tasks of queue `q` reference module `sha`.
    pub async fn module_references(&self, conn: &mut Conn, q: &QueueName, sha: &str) -> redis::RedisResult<u64> {
        let n: Option<i64> = conn.hget(self.keys.queue(q).modrefs(), sha).await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Stores (or replaces) a periodic task's definition with its next due time.
    pub async fn put_schedule(&self, conn: &mut Conn, q: &QueueName, name: &str, json: &str, next_ms: u64) -> redis::RedisResult<()> {
        self.register_queue(conn, q).await?;
        let k = self.keys.queue(q);
        redis::pipe().atomic().hset(k.schedules(), name, json).ignore().zadd(k.schedule_due(), name, next_ms).ignore().query_async(conn).await
    }

    /// Removes a periodic task; false if there was none of that name.
    pub async fn remove_schedule(&self, conn: &mut Conn, q: &QueueName, name: &[u8]) -> redis::RedisResult<bool> {
        let k = self.keys.queue(q);
        let (removed, _): (u64, u64) = redis::pipe().atomic().hdel(k.schedules(), name).zrem(k.schedule_due(), name).query_async(conn).await?;
        Ok(removed > 0)
    }

    /// Every periodic task of a queue: (name, definition) and (name, next due ms).
    #[allow(clippy::type_complexity)]
    pub async fn schedules(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<(Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, f64)>)> {
        let k = self.keys.queue(q);
        let defs: Vec<(Vec<u8>, Vec<u8>)> = conn.hgetall(k.schedules()).await?;
        let dues: Vec<(Vec<u8>, f64)> = conn.zrange_withscores(k.schedule_due(), 0, -1).await?;
        Ok((defs, dues))
    }

    /// One periodic task's definition.
    pub async fn schedule(&self, conn: &mut Conn, q: &QueueName, name: &str) -> redis::RedisResult<Option<Vec<u8>>> {
        conn.hget(self.keys.queue(q).schedules(), name).await
    }

    /// Periodic tasks of a queue due at `now_ms`, at most `limit`: (name, due ms).
    pub async fn due_schedules(&self, conn: &mut Conn, q: &QueueName, now_ms: u64, limit: usize) -> redis::RedisResult<Vec<(Vec<u8>, f64)>> {
        redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.queue(q).schedule_due())
            .arg("-inf")
            .arg(now_ms)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(conn)
            .await
    }

    /// The earliest next due time of a queue's periodic tasks.
    pub async fn earliest_schedule(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<Option<u64>> {
        let first: Vec<(Vec<u8>, f64)> = conn.zrange_withscores(self.keys.queue(q).schedule_due(), 0, 0).await?;
        Ok(first.first().map(|(_, d)| d.max(0.0) as u64))
    }

    /// Stops a periodic task from firing (its definition is unreadable, or it has no future tick).
    pub async fn drop_schedule_tick(&self, conn: &mut Conn, q: &QueueName, name: &[u8]) -> redis::RedisResult<()> {
        conn.zrem(self.keys.queue(q).schedule_due(), name).await
    }

    /// A key of queue `q`, for commands that must reach the node holding the queue but name no
    /// key themselves (INFO, CONFIG, TIME, CLUSTER KEYSLOT): route them with [`Conn::query_at`].
    pub fn anchor(&self, q: &QueueName) -> String {
        self.keys.queue(q).meta()
    }

    /// Numeric fields of many tasks of one queue, pipelined in batches (None where missing or
    /// not a number).
    pub async fn task_numbers(&self, conn: &mut Conn, ids: &[TaskId], fields: &[&str]) -> redis::RedisResult<Vec<Vec<Option<u64>>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HMGET").arg(self.keys.task(id)).arg(fields);
            }
            let rows: Vec<Vec<Option<String>>> = pipe.query_async(conn).await?;
            out.extend(rows.into_iter().map(|r| r.into_iter().map(|v| v.and_then(|v| v.parse().ok())).collect()));
        }
        Ok(out)
    }

    /// Bytes Redis uses for one task's hash (`MEMORY USAGE`).
    pub async fn task_memory(&self, conn: &mut Conn, id: &TaskId) -> redis::RedisResult<Option<u64>> {
        redis::cmd("MEMORY").arg("USAGE").arg(self.keys.task(id)).query_async(conn).await
    }

    /// Deletes a queue and everything in it (for throwaway queues: benchmarks, tests). Finished
    /// tasks go through their indexes; a queue with unfinished tasks loses them.
    pub async fn delete_queue(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<()> {
        let k = self.keys.queue(q);
        // Flows first: their finished members may have left the task indexes (lib.lua).
        for set in [k.flows_open(), k.flows_ended("succeeded"), k.flows_ended("failed"), k.flows_ended("cancelled")] {
            loop {
                let flows: Vec<u64> = conn.zrange(&set, 0, 99).await?;
                if flows.is_empty() {
                    break;
                }
                for n in &flows {
                    let f = k.flow(*n);
                    for list in [format!("{f}:children"), format!("{f}:reducers")] {
                        delete_listed_tasks(conn, &k, &list).await?;
                    }
                    let _: () = conn.del(&f).await?;
                }
                let _: () = conn.zrem(&set, &flows).await?;
            }
        }
        for set in [k.succeeded(), k.dead(), k.cancelled(), k.expired(), k.kept(), k.delayed(), k.blocked(), k.active(), k.pending()] {
            loop {
                let seqs: Vec<u64> = conn.zrange(&set, 0, 999).await?;
                if seqs.is_empty() {
                    break;
                }
                let mut pipe = redis::pipe();
                for s in &seqs {
                    pipe.del(k.task(*s)).ignore();
                }
                pipe.zrem(&set, &seqs).ignore();
                let _: () = pipe.query_async(conn).await?;
            }
        }
        let levels: Vec<String> = conn.zrange(k.levels(), 0, -1).await?;
        for l in &levels {
            delete_listed_tasks(conn, &k, &k.level(l)).await?;
        }
        // The groups' pools: every group with work has a state (lib.lua).
        let groups: Vec<String> = conn.hkeys(k.groups_state()).await?;
        for g in groups.iter().filter(|g| !g.is_empty()) {
            let pool = k.group_pool(g);
            let pending: Vec<u64> = conn.zrange(&pool, 0, -1).await?;
            if !pending.is_empty() {
                let tasks: Vec<String> = pending.iter().map(|s| k.task(*s)).collect();
                let _: () = conn.del(&tasks[..]).await?;
            }
            let _: () = conn.del(&[pool, k.group_rate(g)][..]).await?;
        }
        let keys = [
            k.seq(),
            k.blocked(),
            k.kept(),
            k.pending(),
            k.levels(),
            k.delayed(),
            k.active(),
            k.meta(),
            k.stats(),
            k.minutes(),
            k.modrefs(),
            k.signal(),
            k.estimates(),
            k.succeeded(),
            k.dead(),
            k.cancelled(),
            k.expired(),
            k.expiring(),
            k.rate(),
            k.schedules(),
            k.schedule_due(),
            k.flows_members(),
            k.config(),
            k.grants(),
            k.groups_ready(),
            k.groups_state(),
            k.groups_active(),
            k.groups_rate_parked(),
        ];
        let _: () = conn.del(&keys[..]).await?;
        conn.srem(self.keys.queues(), q.as_str()).await
    }
}

/// Empties a list of task seqs, deleting each task, a thousand at a time.
async fn delete_listed_tasks(conn: &mut Conn, k: &keys::QueueKeys, list: &str) -> redis::RedisResult<()> {
    loop {
        let seqs: Vec<u64> = redis::cmd("LPOP").arg(list).arg(1000).query_async::<Option<Vec<u64>>>(conn).await?.unwrap_or_default();
        if seqs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for s in &seqs {
            pipe.del(k.task(*s)).ignore();
        }
        let _: () = pipe.query_async(conn).await?;
    }
}

// ---------------------------------------------------------------------------------------------
// Queue config and secret grants (host API `config`): `P:{Q}:config` holds settings by key,
// `P:{Q}:grants` the names of the secrets the queue's tasks may read. Secret values are never
// in Redis: workers hold them.

impl Db {
    /// Sets (`Some`) or removes (`None`) a config value; returns whether the key existed.
    pub async fn set_config(&self, conn: &mut Conn, q: &QueueName, key: &str, value: Option<&str>) -> redis::RedisResult<bool> {
        let k = self.keys.queue(q).config();
        match value {
            Some(v) => Ok(conn.hset::<_, _, _, i64>(k, key, v).await? == 0),
            None => Ok(conn.hdel::<_, _, i64>(k, key).await? == 1),
        }
    }

    /// A queue's config values.
    pub async fn config(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<HashMap<String, String>> {
        conn.hgetall(self.keys.queue(q).config()).await
    }

    /// Grants (`true`) or revokes a secret name; returns whether anything changed.
    pub async fn set_grant(&self, conn: &mut Conn, q: &QueueName, name: &str, granted: bool) -> redis::RedisResult<bool> {
        let k = self.keys.queue(q).grants();
        let n: i64 = if granted { conn.sadd(k, name).await? } else { conn.srem(k, name).await? };
        Ok(n == 1)
    }

    /// The secret names a queue is granted, sorted.
    pub async fn grants(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<Vec<String>> {
        let mut g: Vec<String> = conn.smembers(self.keys.queue(q).grants()).await?;
        g.sort();
        Ok(g)
    }

    /// A queue's config values and granted secret names, in one round trip (what a worker
    /// refreshes).
    pub async fn task_settings(&self, conn: &mut Conn, q: &QueueName) -> redis::RedisResult<(HashMap<String, String>, Vec<String>)> {
        let k = self.keys.queue(q);
        conn.pipeline_at(&k.meta(), redis::pipe().hgetall(k.config()).smembers(k.grants())).await.and_then(|v| {
            let mut it = v.into_iter();
            let config = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
            let grants = redis::from_redis_value(it.next().unwrap_or(redis::Value::Nil))?;
            Ok((config, grants))
        })
    }
}

impl Db {
    /// The modules (SHA-256) that unfinished tasks of `q` reference, at most `limit` of them.
    pub async fn referenced_modules(&self, conn: &mut Conn, q: &QueueName, limit: usize) -> redis::RedisResult<Vec<String>> {
        let (_, shas): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(self.keys.queue(q).modrefs())
            .arg(0)
            .arg("COUNT")
            .arg(limit)
            .query_async::<(u64, Vec<String>)>(conn)
            .await
            .map(|(c, kv)| (c, kv.chunks(2).filter(|p| p.get(1).and_then(|n| n.parse::<i64>().ok()).unwrap_or(0) > 0).map(|p| p[0].clone()).collect()))?;
        Ok(shas.into_iter().take(limit).collect())
    }
}
