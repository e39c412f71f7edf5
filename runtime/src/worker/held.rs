//! The tasks a worker holds: claimed and not yet reported. Each is one claim, keyed by task and
//! lease token, so that when the same worker claims a task again after its lease expired, the
//! two claims never touch each other: the stale run's end forgets only itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::queue::{HeldLease, QueueName, TaskId};
use crate::sandbox::{CancelReason, CancelToken, ProgressSlot};

/// What the run of one held task shares with the heartbeat.
#[derive(Clone, Default)]
pub struct HeldRun {
    pub cancel: CancelToken,
    /// Unix ms when the task started running; 0 while it waits for a run slot.
    pub started: Arc<AtomicU64>,
    /// The task's progress reports (host API), carried to Redis by the heartbeat.
    pub progress: ProgressSlot,
}

struct Held {
    run: HeldRun,
    input_bytes: u64,
}

/// The held tasks, and a notification whenever one is let go.
#[derive(Default)]
pub struct HeldTasks {
    map: Mutex<HashMap<(TaskId, u64), Held>>,
    released: Notify,
}

impl HeldTasks {
    pub fn hold(&self, id: &TaskId, token: u64, input_bytes: u64) -> HeldRun {
        let run = HeldRun::default();
        self.map.lock().expect("held lock").insert((id.clone(), token), Held { run: run.clone(), input_bytes });
        run
    }

    /// Lets go of one claim (its result was written or given up).
    pub fn forget(&self, id: &TaskId, token: u64) {
        self.map.lock().expect("held lock").remove(&(id.clone(), token));
        self.released.notify_one();
    }

    /// Resolves when a held task is let go.
    pub async fn released(&self) {
        self.released.notified().await
    }

    /// (tasks, input bytes) held.
    pub fn load(&self) -> (usize, u64) {
        let m = self.map.lock().expect("held lock");
        (m.len(), m.values().map(|h| h.input_bytes).sum())
    }

    pub fn count(&self) -> usize {
        self.map.lock().expect("held lock").len()
    }

    /// The held claims by queue, as the heartbeat reports them.
    pub fn leases(&self) -> HashMap<QueueName, Vec<HeldLease>> {
        let mut out: HashMap<QueueName, Vec<HeldLease>> = HashMap::new();
        for ((id, token), h) in self.map.lock().expect("held lock").iter() {
            out.entry(id.queue.clone()).or_default().push(HeldLease {
                seq: id.seq,
                token: *token,
                started_ms: h.run.started.load(Ordering::Relaxed),
                progress: h.run.progress.take_new().map(|p| (p.fraction, p.message)),
            });
        }
        out
    }

    /// Stops the run of one claim (no other claim of the same task).
    pub fn cancel(&self, id: &TaskId, token: u64, reason: CancelReason) {
        if let Some(h) = self.map.lock().expect("held lock").get(&(id.clone(), token)) {
            h.run.cancel.cancel(reason);
        }
    }

    /// Stops every held run.
    pub fn cancel_all(&self, reason: CancelReason) {
        for h in self.map.lock().expect("held lock").values() {
            h.run.cancel.cancel(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stale claim's end forgets that claim only: the newer claim of the same task stays held,
    /// and cancelling the stale one leaves the newer one running.
    #[test]
    fn claims_of_one_task_are_held_apart() {
        let held = HeldTasks::default();
        let id = TaskId::parse("q:7").unwrap();
        let old = held.hold(&id, 1, 10);
        let new = held.hold(&id, 2, 10);
        assert_eq!(held.load(), (2, 20));
        held.cancel(&id, 1, CancelReason::LeaseLost);
        assert!(old.cancel.is_cancelled());
        assert!(!new.cancel.is_cancelled());
        held.forget(&id, 1);
        assert_eq!(held.count(), 1);
        let leases = held.leases();
        assert_eq!(leases[&id.queue], [HeldLease { seq: 7, token: 2, started_ms: 0, progress: None }]);
    }
}
