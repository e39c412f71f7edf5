//! Leases: the heartbeat that extends the leases of the tasks this worker holds (it also records
//! which have started running, and learns of cancellations and lost leases), and the reaper that
//! returns other workers' expired leases to the queue.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::parse::{self, QueueName};
use crate::scripts;

use super::Shared;

/// Every `interval`: one `heartbeat.lua` call per queue with held tasks.
pub async fn heartbeat(shared: Arc<Shared>, interval: Duration) {
    let mut conn = shared.conn.clone();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let held = shared.held();
        let mut by_queue: BTreeMap<QueueName, Vec<(u64, u64, u64)>> = BTreeMap::new();
        for (q, seq, token, started) in held {
            by_queue.entry(q).or_default().push((seq, token, started));
        }
        for (queue, tasks) in by_queue {
            for chunk in tasks.chunks(500) {
                let k = shared.keys.queue(&queue);
                let mut inv = scripts::HEARTBEAT.prepare_invoke();
                inv.key(k.active()).arg(k.base()).arg(parse::now_ms()).arg(shared.config.lease.as_millis() as u64);
                for (seq, token, started) in chunk {
                    inv.arg(*seq).arg(*token).arg(*started);
                }
                match inv.invoke_async::<(Vec<u64>, Vec<u64>, Vec<u64>)>(&mut conn).await {
                    Ok((cancelled, lost, finished)) => {
                        for seq in cancelled {
                            tracing::info!(task = %format!("{queue}:{seq}"), "cancel requested; stopping the task");
                            shared.cancel(&queue, seq);
                        }
                        for seq in lost {
                            tracing::warn!(task = %format!("{queue}:{seq}"), "lease lost; stopping the task");
                            shared.cancel(&queue, seq);
                        }
                        for seq in finished {
                            tracing::debug!(task = %format!("{queue}:{seq}"), "finished meanwhile");
                            shared.cancel(&queue, seq);
                        }
                    }
                    Err(e) => tracing::warn!(%queue, error = %e, "heartbeat failed"),
                }
            }
        }
    }
}

/// Every `interval` (with jitter, so that many workers do not reap in lockstep): returns expired
/// leases of every queue to the queue, or to the dead set when their attempts are used up.
pub async fn reaper(shared: Arc<Shared>, interval: Duration) {
    let mut conn = shared.conn.clone();
    loop {
        for queue in shared.queues() {
            let k = shared.keys.queue(&queue);
            // Bounded: at most 20 batches per round; the rest waits for the next round.
            for _ in 0..20 {
                let reply: redis::RedisResult<(Vec<u64>, Vec<u64>)> = scripts::invocation(&scripts::REAP, scripts::keys::reap(&k))
                    .arg(k.base())
                    .arg(parse::now_ms())
                    .arg(shared.config.retention.as_millis() as u64)
                    .arg(100)
                    .arg(shared.config.max_attempts)
                    .arg(shared.config.max_stalls)
                    .invoke_async(&mut conn)
                    .await;
                match reply {
                    Ok((requeued, dead)) => {
                        if !requeued.is_empty() || !dead.is_empty() {
                            tracing::info!(%queue, requeued = requeued.len(), dead = dead.len(), "returned expired leases");
                        }
                        if requeued.len() + dead.len() < 100 {
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
        let jitter = interval.mul_f64(0.5 + fastrand::f64());
        tokio::time::sleep(jitter).await;
    }
}
