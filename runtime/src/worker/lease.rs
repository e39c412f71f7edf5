//! Leases: the heartbeat that extends the leases of the tasks this worker holds (it also records
//! which have started running, and learns of cancellations and lost leases), and the reaper that
//! returns other workers' expired leases to the queue and applies each queue's retention.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::{ReapRequest, TaskId};
use crate::sandbox::CancelReason;

use super::Shared;

/// Held claims per heartbeat call.
const HEARTBEAT_CHUNK: usize = 500;
/// Expired leases (and finished tasks per state, for retention) per reaper call.
const REAP_LIMIT: usize = 500;
/// Reaper calls per queue per round, at most.
const REAP_CALLS: usize = 20;

/// Every `interval`: one `heartbeat.lua` call per queue with held tasks.
pub async fn heartbeat(shared: Arc<Shared>, interval: Duration) {
    let mut conn = shared.conn.clone();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (queue, leases) in shared.held.leases() {
            for chunk in leases.chunks(HEARTBEAT_CHUNK) {
                match shared.db.heartbeat(&mut conn, &queue, shared.config.lease, chunk).await {
                    Ok(r) => {
                        for (seq, token) in r.cancelled {
                            let id = TaskId::new(queue.clone(), seq);
                            tracing::info!(task = %id, "cancel requested; stopping the task");
                            shared.held.cancel(&id, token, CancelReason::Requested);
                        }
                        for (seq, token) in r.lost {
                            let id = TaskId::new(queue.clone(), seq);
                            tracing::warn!(task = %id, token, "lease lost; stopping this claim of the task");
                            shared.held.cancel(&id, token, CancelReason::LeaseLost);
                        }
                        for (seq, token) in r.finished {
                            let id = TaskId::new(queue.clone(), seq);
                            tracing::debug!(task = %id, "finished meanwhile");
                            shared.held.cancel(&id, token, CancelReason::LeaseLost);
                        }
                    }
                    Err(e) => tracing::warn!(%queue, error = %e, "heartbeat failed"),
                }
            }
        }
    }
}

/// Every `interval` (with jitter, so that many workers do not reap in lockstep): returns expired
/// leases of every queue to the queue, or to the dead set when their attempts are used up,
/// finishes waiting tasks past their expiry as expired (paused queues too), and deletes finished
/// tasks past their queue's retention.
pub async fn reaper(shared: Arc<Shared>, interval: Duration) {
    let mut conn = shared.conn.clone();
    let request =
        ReapRequest { limit: REAP_LIMIT, max_attempts: shared.config.max_attempts, max_stalls: shared.config.max_stalls, retention: shared.config.retention };
    loop {
        for queue in shared.queues() {
            for _ in 0..REAP_CALLS {
                match shared.db.reap(&mut conn, &queue, request).await {
                    Ok(r) => {
                        if !r.requeued.is_empty() || !r.dead.is_empty() {
                            tracing::info!(%queue, requeued = r.requeued.len(), dead = r.dead.len(), "returned expired leases");
                        }
                        if r.trimmed > 0 {
                            tracing::debug!(%queue, deleted = r.trimmed, "finished tasks past their retention deleted");
                        }
                        if r.expired > 0 {
                            tracing::info!(%queue, expired = r.expired, "waiting tasks past their expiry finished as expired");
                        }
                        if r.requeued.len() + r.dead.len() < REAP_LIMIT && (r.trimmed as usize) < REAP_LIMIT && (r.expired as usize) < REAP_LIMIT {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%queue, error = %e, "reaper failed");
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(interval.mul_f64(0.5 + fastrand::f64())).await;
    }
}
