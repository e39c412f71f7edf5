//! Flows (`wasmq map`): a set of children and, optionally, a tree of reducers over them, kept in a
//! hash `P:{Q}:flow:<n>` with the lists of its children (in input order) and reducers. The id `n`
//! comes from the queue's task counter, so no task shares it, and `QUEUE:n` finds a flow as it
//! finds a task. The flow's state follows from its members' ends inside the finishing scripts
//! (`flow_member_finished` in lib.lua); here are its creation and its reads.

use std::collections::HashMap;

use redis::AsyncCommands;

use super::ids::{QueueName, TaskId};
use super::scripts::ParentFailure;
use super::{Db, task};
use crate::conn::Conn;

/// Where a flow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// Its members are being enqueued.
    Building,
    Running,
    Succeeded,
    /// A child died under the `block` or `cancel` policy.
    Failed,
    Cancelled,
}

impl FlowState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "building" => Self::Building,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A flow as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowRecord {
    pub id: String,
    pub state: FlowState,
    pub children: u64,
    pub reducers: u64,
    /// The last reducer, whose output is the flow's result (None without `--reduce`).
    pub root: Option<String>,
    pub policy: ParentFailure,
    /// Members that finished, by state (`dead` counts those dead now).
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Members claimed by a worker now (running, or prefetched and about to run).
    pub active: u64,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
}

/// A bounded view of a flow's members (see [`Db::flow_members_page`]).
#[derive(Debug, Clone, Default)]
pub struct FlowMembersPage {
    pub children: Vec<u64>,
    pub children_total: u64,
    pub reducers: Vec<u64>,
    pub reducers_total: u64,
}

impl FlowRecord {
    /// Members not finished yet.
    pub fn unfinished(&self) -> u64 {
        (self.children + self.reducers).saturating_sub(self.succeeded + self.dead + self.cancelled)
    }
}

impl Db {
    pub(crate) fn flow_key(&self, q: &QueueName, n: u64) -> String {
        self.keys.queue(q).flow(n)
    }

    /// Creates a flow in the state `building`; returns its number (drawn from the queue's task
    /// counter).
    pub async fn create_flow(&self, conn: &mut Conn, q: &QueueName, children: u64, policy: ParentFailure) -> redis::RedisResult<u64> {
        self.register_queue(conn, q).await?;
        let n: u64 = conn.incr(self.keys.queue(q).seq(), 1).await?;
        let now = self.now_ms(conn, q).await?;
        let _: () = redis::cmd("HSET")
            .arg(self.flow_key(q, n))
            .arg("state")
            .arg("building")
            .arg("children")
            .arg(children)
            .arg("root")
            .arg(0)
            .arg("policy")
            .arg(policy.as_str())
            .arg("created")
            .arg(now)
            .query_async(conn)
            .await?;
        // The index of flows that have not ended (lib.lua's flow_ended takes them off), so that
        // deleting the queue finds them.
        let _: () = conn.zadd(self.keys.queue(q).flows_open(), n, now).await?;
        Ok(n)
    }

    /// A flow, or None when `id` names none.
    pub async fn flow(&self, conn: &mut Conn, id: &TaskId) -> redis::RedisResult<Option<FlowRecord>> {
        let key = self.flow_key(&id.queue, id.seq);
        let (h, reducers): (HashMap<String, String>, u64) = redis::pipe().hgetall(&key).llen(format!("{key}:reducers")).query_async(conn).await?;
        let Some(state) = h.get("state").and_then(|s| FlowState::parse(s)) else { return Ok(None) };
        let num = |k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0).max(0) as u64;
        let root = num("root");
        Ok(Some(FlowRecord {
            id: id.to_string(),
            state,
            children: num("children"),
            reducers,
            root: (root > 0).then(|| TaskId::new(id.queue.clone(), root).to_string()),
            policy: h.get("policy").and_then(|p| p.parse().ok()).unwrap_or_default(),
            succeeded: num("succeeded"),
            dead: num("dead"),
            cancelled: num("cancelled"),
            active: num("active"),
            created_ms: num("created"),
            finished_ms: h.get("finished").and_then(|v| v.parse().ok()),
        }))
    }

    /// A flow's members: its children in input order, then its reducers.
    pub async fn flow_members(&self, conn: &mut Conn, id: &TaskId) -> redis::RedisResult<(Vec<u64>, Vec<u64>)> {
        let key = self.flow_key(&id.queue, id.seq);
        redis::pipe().lrange(format!("{key}:children"), 0, -1).lrange(format!("{key}:reducers"), 0, -1).query_async(conn).await
    }

    /// The first `limit` children and the first `limit` reducers of a flow, with how many of each
    /// it has: four commands in one round trip whatever the flow's size (the dashboard's view).
    pub async fn flow_members_page(&self, conn: &mut Conn, id: &TaskId, limit: usize) -> redis::RedisResult<FlowMembersPage> {
        let key = self.flow_key(&id.queue, id.seq);
        let (children, reducers) = (format!("{key}:children"), format!("{key}:reducers"));
        let stop = limit as isize - 1;
        let (children, children_total, reducers, reducers_total) =
            redis::pipe().lrange(&children, 0, stop).llen(&children).lrange(&reducers, 0, stop).llen(&reducers).query_async(conn).await?;
        Ok(FlowMembersPage { children, children_total, reducers, reducers_total })
    }

    /// The dead members of a flow with their last error (kind, message), at most `limit`.
    pub async fn flow_dead(&self, conn: &mut Conn, id: &TaskId, limit: usize) -> redis::RedisResult<Vec<(TaskId, String, String)>> {
        let (children, reducers) = self.flow_members(conn, id).await?;
        let seqs: Vec<u64> = children.into_iter().chain(reducers).collect();
        let mut out = Vec::new();
        for chunk in seqs.chunks(1000) {
            let mut pipe = redis::pipe();
            for s in chunk {
                pipe.cmd("HMGET").arg(self.keys.queue(&id.queue).task(*s)).arg(task::field::STATE).arg(task::field::ERROR_KIND).arg(task::field::ERROR);
            }
            let rows: Vec<(Option<String>, Option<String>, Option<String>)> = pipe.query_async(conn).await?;
            for (s, (state, kind, error)) in chunk.iter().zip(rows) {
                if state.as_deref() == Some("dead") && out.len() < limit {
                    out.push((TaskId::new(id.queue.clone(), *s), kind.unwrap_or_default(), error.unwrap_or_default()));
                }
            }
        }
        Ok(out)
    }
}
