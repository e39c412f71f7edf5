//! Waking idle workers without polling. Enqueues push a token onto the queue's signal list; an
//! idle worker blocks on it with `BLPOP` (one dedicated connection per queue, since a blocking
//! command holds its connection). A token popped after the worker found other work is pushed back
//! for another worker. The wait is bounded (1 s), so an idle worker sends at most a few commands
//! per second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::conn::{Conn, Redis};
use crate::queue::{Db, QueueName};

use super::backoff::Backoff;

/// Shared between the claim loop and the listeners.
pub struct Wake {
    /// True while the claim loop waits for work.
    pub idle: watch::Sender<bool>,
    pub notify: Notify,
}

impl Wake {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { idle: watch::channel(false).0, notify: Notify::new() })
    }
}

/// Listens on one queue's signal list while the worker is idle.
pub async fn listen(redis: Redis, db: Db, queue: QueueName, wake: Arc<Wake>, stop: Arc<Notify>) {
    let mut idle = wake.idle.subscribe();
    let mut conn: Option<Conn> = None;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        // Wait until the worker is idle.
        while !*idle.borrow_and_update() {
            tokio::select! {
                r = idle.changed() => if r.is_err() { return },
                _ = stop.notified() => return,
            }
        }
        if conn.is_none() {
            match redis.connect_blocking().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "cannot open the wake-up connection; retrying");
                    backoff.wait().await;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match tokio::time::timeout(Duration::from_secs(4), db.wait_signal(c, &queue, 1)).await {
            Ok(Ok(true)) => {
                backoff.reset();
                if *wake.idle.borrow() {
                    wake.notify.notify_one();
                } else {
                    // Found work meanwhile: hand the token to another worker.
                    let _ = db.wake(c, &queue).await;
                }
            }
            Ok(Ok(false)) => backoff.reset(),
            Ok(Err(e)) => {
                tracing::warn!(%queue, error = %e, "wake-up wait failed; reconnecting");
                conn = None;
                backoff.wait().await;
            }
            Err(_) => conn = None,
        }
    }
}
