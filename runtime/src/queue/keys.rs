//! The Redis key schema, in one place. `docs/architecture.md` describes the same schema for
//! people; a change here must be reflected there.
//!
//! Every key starts with a configurable prefix (default `wasmq`). The keys of one queue share the
//! hash tag `{queue}`, so that every script touching a queue runs on one Redis Cluster slot. The
//! module store is global (no hash tag): a module is fetched with a single `GET`, which works on any
//! shard.
//!
//! | key                               | type   | holds                                                  |
//! |-----------------------------------|--------|--------------------------------------------------------|
//! | `P:module:<sha256>`               | string | module bytes; the key is the SHA-256 of the bytes      |
//! | `P:module:<sha256>:info`          | hash   | size, kind (module/component), pushed_at               |
//! | `P:modules`                       | hash   | module name → sha256                                   |
//! | `P:module-index`                  | zset   | sha256 scored by push time (every stored module)       |
//! | `P:queues`                        | set    | names of the queues that ever had a task               |
//! | `P:{Q}:seq`                       | string | the queue's task counter (task ids and FIFO order)     |
//! | `P:{Q}:p:<level>`                 | list   | ready task seqs of one priority (priority, fifo)       |
//! | `P:{Q}:levels`                    | zset   | non-empty priority levels, highest first (score -level)|
//! | `P:{Q}:pending`                   | zset   | ready task seqs under wsjf; lowest score runs first    |
//! | `P:{Q}:delayed`                   | zset   | task seqs not yet due (retries too); score = due ms    |
//! | `P:{Q}:active`                    | zset   | claimed task seqs; score = lease deadline ms           |
//! | `P:{Q}:succeeded`                 | zset   | finished task seqs; score = finish ms                  |
//! | `P:{Q}:dead`                      | zset   | task seqs that exhausted their attempts; finish ms     |
//! | `P:{Q}:cancelled`                 | zset   | cancelled task seqs; score = cancel ms                 |
//! | `P:{Q}:expired`                   | zset   | expired task seqs; score = expiry (finish) ms          |
//! | `P:{Q}:expiring`                  | zset   | waiting task seqs with an expiry; score = expiry ms    |
//! | `P:{Q}:rate`                      | list   | rate-limit window: `<ms>:<count>` per claim, oldest 1st|
//! | `P:{Q}:g:<group>:pending`         | zset   | a group's pending tasks; score -prio * 2^32 + seq      |
//! | `P:{Q}:g:<group>:rate`            | list   | a group's rate window: a claim ms per task; expires    |
//! | `P:{Q}:groups:ready`              | list   | the rotation: groups with work under their limits      |
//! | `P:{Q}:groups:state`              | hash   | group → ready, parked or rate (absent: idle)           |
//! | `P:{Q}:groups:active`             | hash   | group → its active tasks                               |
//! | `P:{Q}:groups:rate-parked`        | zset   | groups whose rate window is full; score = when it frees|
//! | `P:{Q}:task:<seq>`                | hash   | the task's spec and, once finished, its result         |
//! | `P:{Q}:done:<seq>`                | list   | completion wake-ups for `result --wait` (short TTL)    |
//! | `P:{Q}:signal`                    | list   | wake-up tokens for idle workers (bounded length)       |
//! | `P:{Q}:meta`                      | hash   | queue settings: policy, paused, retention, limits      |
//! | `P:{Q}:stats`                     | hash   | counters: enqueued, succeeded, retried, dead, ...      |
//! | `P:{Q}:minutes`                   | hash   | last hour's finished attempts per minute (a ring of 60)|
//! | `P:{Q}:modrefs`                   | hash   | sha256 → number of unfinished tasks that reference it  |
//! | `P:{Q}:estimates`                 | hash   | sha256 → learned mean run time in µs (wsjf policy)     |
//! | `P:{Q}:unique:<key>`              | string | seq of the queued/running task holding a unique key    |
//! | `P:{Q}:schedules`                 | hash   | periodic task name → JSON schedule                     |
//! | `P:{Q}:schedule-due`              | zset   | periodic task name → next fire time ms                 |
//! | `P:{~workers}:index`              | zset   | live worker ids → last beat ms (the registry)          |
//! | `P:{~workers}:w:<id>`             | hash   | a live worker's description; expires without beats     |

use super::ids::{QueueName, TaskId};

/// Builds key names for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new("wasmq")
    }
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn module(&self, sha: &str) -> String {
        format!("{}:module:{sha}", self.prefix)
    }

    pub fn module_info(&self, sha: &str) -> String {
        format!("{}:module:{sha}:info", self.prefix)
    }

    pub fn module_names(&self) -> String {
        format!("{}:modules", self.prefix)
    }

    pub fn module_index(&self) -> String {
        format!("{}:module-index", self.prefix)
    }

    pub fn queues(&self) -> String {
        format!("{}:queues", self.prefix)
    }

    /// The key-name prefix shared by every key of one queue, hash tag included:
    /// `P:{Q}:`. Lua scripts build per-task keys from it.
    pub fn queue_base(&self, q: &QueueName) -> String {
        format!("{}:{{{q}}}:", self.prefix)
    }

    pub fn queue(&self, q: &QueueName) -> QueueKeys {
        QueueKeys { base: self.queue_base(q) }
    }

    pub fn task(&self, id: &TaskId) -> String {
        self.queue(&id.queue).task(id.seq)
    }

    /// The registry of live workers: one hash tag that no queue name can take (`~` is not
    /// allowed in queue names), so that its keys share a Cluster slot with each other only.
    pub fn workers_base(&self) -> String {
        format!("{}:{{~workers}}:", self.prefix)
    }

    pub fn workers_index(&self) -> String {
        format!("{}index", self.workers_base())
    }

    pub fn worker(&self, id: &str) -> String {
        format!("{}w:{id}", self.workers_base())
    }
}

/// The keys of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    base: String,
}

macro_rules! queue_keys {
    ($($name:ident => $suffix:literal),* $(,)?) => {
        impl QueueKeys {
            $(pub fn $name(&self) -> String { format!("{}{}", self.base, $suffix) })*
        }
    };
}

queue_keys! {
    seq => "seq",
    pending => "pending",
    levels => "levels",
    delayed => "delayed",
    blocked => "blocked",
    kept => "kept",
    active => "active",
    succeeded => "succeeded",
    dead => "dead",
    cancelled => "cancelled",
    expired => "expired",
    expiring => "expiring",
    rate => "rate",
    signal => "signal",
    meta => "meta",
    stats => "stats",
    minutes => "minutes",
    modrefs => "modrefs",
    estimates => "estimates",
    schedules => "schedules",
    schedule_due => "schedule-due",
    config => "config",
    grants => "grants",
    flows_open => "flows:open",
    flows_members => "flows:members",
    groups_ready => "groups:ready",
    groups_state => "groups:state",
    groups_active => "groups:active",
    groups_rate_parked => "groups:rate-parked",
}

impl QueueKeys {
    /// `P:{Q}:` — scripts append `task:<seq>`, `done:<seq>` and `unique:<key>` to it.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn task(&self, seq: u64) -> String {
        format!("{}task:{seq}", self.base)
    }

    /// The list of pending tasks of one priority level.
    pub fn level(&self, level: &str) -> String {
        format!("{}p:{level}", self.base)
    }

    /// The key prefix of a group's pool and rate window, `P:{Q}:g:<group>:` (lib.lua
    /// `pool_prefix`): `pending`, `levels`, `p:<level>` and `rate` follow it.
    pub fn group(&self, group: &str) -> String {
        format!("{}g:{group}:", self.base)
    }

    /// A group's pending pool (a zset; lib.lua `pool_prefix` .. 'pending').
    pub fn group_pool(&self, group: &str) -> String {
        format!("{}pending", self.group(group))
    }

    /// A group's rate window (lib.lua `group_rate_key`).
    pub fn group_rate(&self, group: &str) -> String {
        format!("{}rate", self.group(group))
    }

    pub fn done(&self, seq: u64) -> String {
        format!("{}done:{seq}", self.base)
    }

    pub fn unique(&self, key: &str) -> String {
        format!("{}unique:{key}", self.base)
    }

    /// A flow's hash; `:children` and `:reducers` appended name its member lists.
    pub fn flow(&self, n: u64) -> String {
        format!("{}flow:{n}", self.base)
    }

    /// The flows that ended in `end` (succeeded, failed, cancelled), by end time.
    pub fn flows_ended(&self, end: &str) -> String {
        format!("{}flows:{end}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_one_hash_tag() {
        let keys = Keys::new("wasmq");
        let q = QueueName::new("critical").unwrap();
        let k = keys.queue(&q);
        assert_eq!(k.pending(), "wasmq:{critical}:pending");
        assert_eq!(k.task(7), "wasmq:{critical}:task:7");
        assert_eq!(keys.task(&TaskId::new(q, 7)), "wasmq:{critical}:task:7");
        assert_eq!(keys.module("ab"), "wasmq:module:ab");
    }
}
