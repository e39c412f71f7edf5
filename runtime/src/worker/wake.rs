//! Waking idle workers without polling. Enqueues push a token onto the queue's signal list; an
//! idle worker blocks on it with `BLPOP` (one dedicated connection per queue, since a blocking
//! command holds its connection). A token popped after the worker found other work is pushed back
//! for another worker. The wait is bounded (1 s, or less when a delayed task falls due sooner),
//! so an idle worker sends at most a few commands per second.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::conn::{Conn, Redis};
use crate::keys::Keys;
use crate::parse::QueueName;

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
pub async fn listen(redis: Redis, keys: Keys, queue: QueueName, wake: Arc<Wake>, stop: Arc<Notify>) {
    let signal = keys.queue(&queue).signal();
    let mut idle = wake.idle.subscribe();
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(100);
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
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        let popped = tokio::time::timeout(Duration::from_secs(4), redis::cmd("BLPOP").arg(&signal).arg(1).query_async::<Option<(String, String)>>(c)).await;
        match popped {
            Ok(Ok(Some(_))) => {
                backoff = Duration::from_millis(100);
                if *wake.idle.borrow() {
                    wake.notify.notify_one();
                } else {
                    // Found work meanwhile: hand the token to another worker.
                    let _: redis::RedisResult<()> = redis::cmd("RPUSH").arg(&signal).arg(1).query_async(c).await;
                }
            }
            Ok(Ok(None)) => backoff = Duration::from_millis(100),
            Ok(Err(e)) => {
                tracing::warn!(%queue, error = %e, "wake-up wait failed; reconnecting");
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(_) => conn = None,
        }
    }
}
