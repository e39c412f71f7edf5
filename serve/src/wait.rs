//! The one shared wake-up listener behind `GET /v1/tasks/{id}?wait=DUR`.
//!
//! A long poll must not hold a Redis connection per request: a thousand waiting clients would be a
//! thousand blocked connections. Instead every waiting request registers its task here (and with
//! the queue layer's `register_waiter`, which makes the task's end push a token to its `done`
//! list), and one background task blocks on the `done` lists of all waited tasks of a queue at
//! once, on one connection of its own, then wakes the requests of the task whose token came. The
//! token is pushed back (as `Client::wait` does), so that other waiters, here or elsewhere, see it
//! too. Tasks of different queues live in different Cluster slots: the listener takes one queue
//! per round, in turn.
//!
//! A request also re-reads its task's state now and then ([`FALLBACK_CHECK`]), so a listener that
//! lost its connection delays answers but never loses them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use wasmq::conn::Redis;
use wasmq::queue::{Db, QueueName, TaskId};

/// How long one blocking round lasts: a task that starts being waited on is listened for within
/// about this long (its token waits in its list meanwhile, so nothing is missed).
const ROUND: Duration = Duration::from_millis(100);
/// How often a waiting request reads its task's state itself, whatever the listener does.
pub const FALLBACK_CHECK: Duration = Duration::from_secs(5);
/// Most `done` lists one blocking round listens on.
const MAX_KEYS_PER_ROUND: usize = 1000;

struct Entry {
    notify: Arc<Notify>,
    /// Requests waiting on the task.
    refs: usize,
    /// Its token came: the listener stops listening for it.
    fired: bool,
}

/// The registry of waited tasks and the listener's handle.
pub struct Waiter {
    tasks: Arc<Mutex<HashMap<TaskId, Entry>>>,
    /// Wakes the idle listener when the first task is registered.
    changed: Arc<Notify>,
}

/// A request's registration; dropping it unregisters.
pub struct Registration {
    id: TaskId,
    notify: Arc<Notify>,
    tasks: Arc<Mutex<HashMap<TaskId, Entry>>>,
}

impl Registration {
    /// Resolves when the listener saw the task's token (or spuriously; callers re-read the task).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// The future of [`Self::notified`], enabled at once, so that a wake-up between now and the
    /// first poll is not lost.
    pub fn listen(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut n = Box::pin(self.notify.notified());
        n.as_mut().enable();
        n
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut t = self.tasks.lock().expect("lock");
        if let Some(e) = t.get_mut(&self.id) {
            e.refs -= 1;
            if e.refs == 0 {
                t.remove(&self.id);
            }
        }
    }
}

impl Waiter {
    /// Starts the listener on the current tokio runtime; it runs as long as the runtime does.
    pub fn start(redis: Redis, db: Db) -> Self {
        let tasks: Arc<Mutex<HashMap<TaskId, Entry>>> = Arc::default();
        let changed = Arc::new(Notify::new());
        tokio::spawn(listen(redis, db, tasks.clone(), changed.clone()));
        Self { tasks, changed }
    }

    /// Registers interest in a task. Register before reading the task's state, so that an end in
    /// between is not missed.
    pub fn register(&self, id: &TaskId) -> Registration {
        let mut t = self.tasks.lock().expect("lock");
        let e = t.entry(id.clone()).or_insert_with(|| Entry { notify: Arc::new(Notify::new()), refs: 0, fired: false });
        e.refs += 1;
        let notify = e.notify.clone();
        drop(t);
        self.changed.notify_one();
        Registration { id: id.clone(), notify, tasks: self.tasks.clone() }
    }

    /// Tasks being waited on (for tests and the metrics).
    pub fn waiting(&self) -> usize {
        self.tasks.lock().expect("lock").len()
    }
}

/// The listener: one blocking connection, one queue's waited tasks per round.
async fn listen(redis: Redis, db: Db, tasks: Arc<Mutex<HashMap<TaskId, Entry>>>, changed: Arc<Notify>) {
    let mut conn = None;
    let mut turn = 0usize;
    loop {
        // The queues with waited tasks, and this round's queue.
        let (queue, ids) = {
            let t = tasks.lock().expect("lock");
            let mut queues: Vec<&QueueName> = t.iter().filter(|(_, e)| !e.fired).map(|(id, _)| &id.queue).collect();
            queues.sort();
            queues.dedup();
            if queues.is_empty() {
                (None, Vec::new())
            } else {
                let q = queues[turn % queues.len()].clone();
                let ids: Vec<TaskId> = t.iter().filter(|(id, e)| !e.fired && id.queue == q).map(|(id, _)| id.clone()).take(MAX_KEYS_PER_ROUND).collect();
                (Some(q), ids)
            }
        };
        turn = turn.wrapping_add(1);
        let Some(queue) = queue else {
            let _ = tokio::time::timeout(Duration::from_secs(1), changed.notified()).await;
            continue;
        };
        if conn.is_none() {
            match redis.connect_blocking().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!("wake-up listener cannot connect to Redis: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("set above");
        match tokio::time::timeout(ROUND + Duration::from_secs(2), db.wait_any_done(c, &queue, &ids, ROUND)).await {
            Ok(Ok(Some(id))) => {
                let mut t = tasks.lock().expect("lock");
                if let Some(e) = t.get_mut(&id) {
                    e.fired = true;
                    e.notify.notify_waiters();
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!("wake-up listener: {e}");
                conn = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(_) => conn = None,
        }
    }
}
