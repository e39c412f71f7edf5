//! The worker's entry in the registry of live workers (`queue::workers`), written every second
//! whether or not it holds tasks: an operator sees at a glance which workers are alive, what
//! they consume and how busy they are, and a worker that dies disappears within seconds.

use std::sync::Arc;

use crate::queue::workers::{WORKER_BEAT_INTERVAL, WORKER_TTL, WorkerInfo};

use super::Shared;

/// Writes this worker's entry every second, until the worker stops (the task is aborted).
pub async fn beat(shared: Arc<Shared>) {
    let mut conn = shared.conn.clone();
    let mut tick = tokio::time::interval(WORKER_BEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let s = shared.stats();
        let info = WorkerInfo {
            id: s.id,
            host: super::config::hostname(),
            pid: std::process::id(),
            version: s.version,
            queues: s.queues,
            concurrency: s.concurrency,
            busy: s.busy,
            held: s.held,
            succeeded: s.report.succeeded,
            failed: s.report.dead,
            retried: s.report.retried,
            started_ms: s.started_ms,
            seen_ms: 0,
        };
        match shared.db.worker_beat(&mut conn, &info, WORKER_TTL).await {
            Ok(()) => failing = false,
            // Once per outage: the claim loop reports Redis trouble already.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "could not write this worker's registry entry");
            }
            Err(_) => {}
        }
    }
}
