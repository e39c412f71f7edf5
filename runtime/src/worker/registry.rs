//! The worker's entry in the registry of live workers (`queue::workers`), written every second
//! whether or not it holds tasks: an operator sees at a glance which workers are alive, what
//! they consume and how busy they are, and a worker that dies disappears within seconds.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::queue::workers::{WORKER_BEAT_INTERVAL, WORKER_TTL, WorkerInfo};

use super::Shared;

/// Writes this worker's entry every second, until the worker stops (the task is aborted).
pub async fn beat(shared: Arc<Shared>, started_ms: u64) {
    let mut conn = shared.conn.clone();
    let mut tick = tokio::time::interval(WORKER_BEAT_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let report = shared.report();
        let info = WorkerInfo {
            id: shared.config.worker_id.clone(),
            host: super::config::hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            queues: shared.queues().iter().map(|q| q.to_string()).collect(),
            concurrency: shared.config.concurrency as u64,
            busy: shared.busy.load(Ordering::Relaxed),
            held: shared.held.load().0 as u64,
            succeeded: report.succeeded,
            failed: report.dead,
            retried: report.retried,
            started_ms,
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
