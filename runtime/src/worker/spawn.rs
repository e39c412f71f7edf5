//! The worker's side of the host API's `spawn`: a child's module is resolved and its options
//! checked when the task asks, and its number reserved in the spawner's queue, so that the task
//! gets the child's id at once. The child itself is written only by the completion of an attempt
//! that succeeds ([`children`]); a number reserved by an attempt that failed stays a gap.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use crate::conn::Conn;
use crate::parse;
use crate::queue::task::field;
use crate::queue::{ChildTask, Db, MAX_ATTEMPTS, MAX_PRIORITY, MIN_PRIORITY, QueueName, TaskId};
use crate::sandbox::host::{Reservation, SpawnBroker, SpawnOptions, SpawnedTask};
use crate::store::ModuleStore;

/// Reserves spawned children in one queue for one run.
pub(crate) struct QueueBroker {
    db: Db,
    conn: Conn,
    store: ModuleStore,
    queue: QueueName,
    /// Modules this run resolved already, by the name it used.
    resolved: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for QueueBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBroker").field("queue", &self.queue).finish_non_exhaustive()
    }
}

impl QueueBroker {
    pub fn new(db: Db, conn: Conn, store: ModuleStore, queue: QueueName) -> Self {
        Self { db, conn, store, queue, resolved: Mutex::default() }
    }

    async fn reserve_checked(&self, module: &str, options: &SpawnOptions) -> Result<Reservation, String> {
        check(options)?;
        let cached = self.resolved.lock().unwrap_or_else(|e| e.into_inner()).get(module).cloned();
        let sha = match cached {
            Some(sha) => sha,
            None => {
                let sha = self.store.resolve(module).await.map_err(|e| format!("cannot spawn {module:?}: {e}"))?;
                self.resolved.lock().unwrap_or_else(|e| e.into_inner()).insert(module.to_string(), sha.clone());
                sha
            }
        };
        let seq = self.db.reserve_seq(&mut self.conn.clone(), &self.queue).await.map_err(|e| format!("cannot reserve the child's id: {e}"))?;
        Ok(Reservation { seq, id: TaskId::new(self.queue.clone(), seq).to_string(), module: sha })
    }
}

impl SpawnBroker for QueueBroker {
    fn reserve<'a>(&'a self, module: &'a str, options: &'a SpawnOptions) -> Pin<Box<dyn Future<Output = Result<Reservation, String>> + Send + 'a>> {
        Box::pin(self.reserve_checked(module, options))
    }
}

/// The same checks `enqueue` makes of its options.
pub fn check(o: &SpawnOptions) -> Result<(), String> {
    if let Some(p) = o.priority
        && !(MIN_PRIORITY..=MAX_PRIORITY).contains(&p)
    {
        return Err(format!("priority {p} is outside {MIN_PRIORITY}..={MAX_PRIORITY}"));
    }
    if o.max_attempts.is_some_and(|m| m == 0 || m > MAX_ATTEMPTS) {
        return Err(format!("max attempts must be between 1 and {MAX_ATTEMPTS}"));
    }
    if o.timeout_ms == Some(0) {
        return Err("timeout must be positive".into());
    }
    let max_ms = parse::MAX_DURATION.as_millis() as u64;
    if o.timeout_ms.is_some_and(|t| t > max_ms) || o.delay_ms.is_some_and(|d| d > max_ms) {
        return Err(format!("a timeout or delay is at most {max_ms} ms"));
    }
    Ok(())
}

/// The task records of spawned children, as an enqueue with the same options would write them;
/// `inherited` are the spawner's fields its children get (its grants).
pub fn children(spawned: Vec<SpawnedTask>, inherited: &[(&'static str, Vec<u8>)]) -> Vec<ChildTask> {
    spawned
        .into_iter()
        .map(|s| {
            let mut fields: Vec<(&'static str, Vec<u8>)> = Vec::new();
            if !s.input.is_empty() {
                fields.push((field::INPUT, s.input));
            }
            if let Some(t) = s.options.timeout_ms {
                fields.push((field::TIMEOUT_MS, t.to_string().into_bytes()));
            }
            if let Some(m) = s.options.max_attempts {
                fields.push((field::MAX_ATTEMPTS, m.to_string().into_bytes()));
            }
            fields.extend(inherited.iter().cloned());
            ChildTask { seq: s.seq, module: s.module, priority: s.options.priority.unwrap_or(0), delay: s.options.delay().unwrap_or(Duration::ZERO), fields }
        })
        .collect()
}
