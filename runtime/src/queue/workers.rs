//! The registry of live workers (`wasmq workers`, the dashboard, `/v1/workers`): each worker
//! writes a description of itself every second (`worker_beat.lua`) into a hash that expires a few
//! seconds after its last beat, and an index of ids. A listing costs one `ZRANGE` and one `HGETALL`
//! per live worker, in one round trip; nothing scans.

use std::time::Duration;

use redis::AsyncCommands;

use super::Db;
use super::scripts::WORKER_BEAT;
use crate::conn::Conn;

/// How long an entry lives after its last beat: a worker that stops or dies disappears within
/// this long.
pub const WORKER_TTL: Duration = Duration::from_secs(5);
/// How often a worker writes its entry.
pub const WORKER_BEAT_INTERVAL: Duration = Duration::from_secs(1);

/// A live worker, as it describes itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    /// The wasmq version it runs.
    pub version: String,
    pub queues: Vec<String>,
    pub concurrency: u64,
    /// Run slots in use.
    pub busy: u64,
    /// Tasks it holds (running and prefetched).
    pub held: u64,
    /// Tasks it finished, by outcome, since it started.
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    /// Unix ms when it started, and when it last wrote its entry (Redis clock).
    pub started_ms: u64,
    pub seen_ms: u64,
}

impl WorkerInfo {
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("host", self.host.clone()),
            ("pid", self.pid.to_string()),
            ("version", self.version.clone()),
            ("queues", self.queues.join(",")),
            ("concurrency", self.concurrency.to_string()),
            ("busy", self.busy.to_string()),
            ("held", self.held.to_string()),
            ("succeeded", self.succeeded.to_string()),
            ("failed", self.failed.to_string()),
            ("retried", self.retried.to_string()),
            ("started", self.started_ms.to_string()),
        ]
    }

    /// Reads an entry; fields written by hand that do not parse read as empty or 0.
    fn from_hash(id: String, h: std::collections::HashMap<String, String>) -> Self {
        let n = |k: &str| h.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let s = |k: &str| h.get(k).cloned().unwrap_or_default();
        Self {
            host: s("host"),
            pid: n("pid").min(u32::MAX as u64) as u32,
            version: s("version"),
            queues: h.get("queues").map(|q| q.split(',').filter(|q| !q.is_empty()).map(str::to_string).collect()).unwrap_or_default(),
            concurrency: n("concurrency"),
            busy: n("busy"),
            held: n("held"),
            succeeded: n("succeeded"),
            failed: n("failed"),
            retried: n("retried"),
            started_ms: n("started"),
            seen_ms: n("seen"),
            id,
        }
    }
}

impl Db {
    /// `worker_beat.lua`: writes a live worker's entry, to expire `ttl` after this beat.
    pub async fn worker_beat(&self, conn: &mut Conn, info: &WorkerInfo, ttl: Duration) -> redis::RedisResult<()> {
        let keys = self.keys();
        let mut inv = WORKER_BEAT.prepare_invoke();
        inv.key(keys.workers_index()).key(keys.worker(&info.id));
        inv.arg(keys.workers_base()).arg(self.clock_offset_ms).arg(&info.id).arg(ttl.as_millis() as u64);
        for (k, v) in info.fields() {
            inv.arg(k).arg(v);
        }
        let _: i64 = inv.invoke_async(conn).await?;
        Ok(())
    }

    /// Removes a worker's entry at once (a clean shutdown).
    pub async fn worker_gone(&self, conn: &mut Conn, id: &str) -> redis::RedisResult<()> {
        let keys = self.keys();
        let mut pipe = redis::pipe();
        pipe.del(keys.worker(id)).ignore().zrem(keys.workers_index(), id).ignore();
        conn.pipeline_at(&keys.workers_index(), &pipe).await.map(drop)
    }

    /// The live workers, by id. An id whose entry expired since the last beat pruned the index is
    /// left out.
    pub async fn workers(&self, conn: &mut Conn) -> redis::RedisResult<Vec<WorkerInfo>> {
        let keys = self.keys();
        let ids: Vec<String> = conn.zrange(keys.workers_index(), 0, -1).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(keys.worker(id));
        }
        let replies = conn.pipeline_at(&keys.workers_index(), &pipe).await?;
        let mut out = Vec::new();
        for (id, reply) in ids.into_iter().zip(replies) {
            let h: std::collections::HashMap<String, String> = redis::from_redis_value(reply)?;
            if !h.is_empty() {
                out.push(WorkerInfo::from_hash(id, h));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
