//! Writing results. Each queue has a writer of its own, so that a queue (or a Cluster shard) that
//! cannot be written holds back nothing but its own results. A writer batches what accumulated
//! while its previous write was in flight into one `complete.lua` call, and retries until Redis
//! takes it: a result survives a Redis restart, a dropped connection or a full memory. A task's
//! slot is freed only once its result is written (or refused as stale).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::queue::{Completion, QueueName};

use super::Shared;
use super::backoff::Backoff;
use super::execute::Done;

/// Most records per script call.
const BATCH: usize = 512;
/// Most result bytes per script call (Redis buffers a whole call before it runs it).
const BATCH_BYTES: usize = 64 << 20;

/// Hands finished runs to the writer of their queue.
pub struct Completer {
    shared: Arc<Shared>,
    writers: HashMap<QueueName, mpsc::UnboundedSender<Done>>,
    tasks: JoinSet<()>,
}

impl Completer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared, writers: HashMap::new(), tasks: JoinSet::new() }
    }

    pub fn send(&mut self, done: Done) {
        let q = done.id.queue.clone();
        let tx = self.writers.entry(q.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.tasks.spawn(write_queue(self.shared.clone(), q, rx));
            tx
        });
        let _ = tx.send(done);
    }

    /// Writes everything received so far, then ends.
    pub async fn finish(mut self) {
        self.writers.clear();
        while self.tasks.join_next().await.is_some() {}
    }
}

fn size(c: &Completion) -> usize {
    c.fields.iter().map(|(_, v)| v.len()).sum::<usize>() + c.error.as_ref().map_or(0, |e| e.message.len())
}

/// The writer of one queue: runs until its channel closes and everything received is written.
async fn write_queue(shared: Arc<Shared>, queue: QueueName, mut rx: mpsc::UnboundedReceiver<Done>) {
    let mut conn = shared.conn.clone();
    let mut next: Option<Done> = None;
    loop {
        let first = match next.take() {
            Some(d) => d,
            None => match rx.recv().await {
                Some(d) => d,
                None => return,
            },
        };
        let mut bytes = size(&first.completion);
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(d) if bytes + size(&d.completion) > BATCH_BYTES => {
                    next = Some(d);
                    break;
                }
                Ok(d) => {
                    bytes += size(&d.completion);
                    batch.push(d);
                }
                Err(_) => break,
            }
        }
        write_with_retry(&shared, &mut conn, &queue, batch).await;
    }
}

/// Writes a batch, retrying through connection trouble and a full Redis for as long as they
/// last. A batch that the server refuses as such (a script error, e.g. a task key overwritten
/// with junk) is retried a few times, then written one record at a time so that one bad record
/// cannot hold up the others; a single record still refused is given up: its lease expires and
/// the reaper returns the task to the queue.
async fn write_with_retry(shared: &Shared, conn: &mut crate::conn::Conn, queue: &QueueName, batch: Vec<Done>) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut refusals = 0;
    loop {
        let records: Vec<&Completion> = batch.iter().map(|d| &d.completion).collect();
        match shared.db.complete(conn, queue, &shared.config.worker_id, shared.config.retention, &records).await {
            Ok(applied) => {
                for (d, ok) in batch.into_iter().zip(applied) {
                    if ok {
                        tracing::debug!(task = %d.id, action = d.completion.action.as_str(), "task completed");
                        shared.count(d.completion.action);
                    } else {
                        // Another claim holds the task now (our lease expired): its result wins.
                        tracing::warn!(task = %d.id, "result refused: this worker no longer holds the task's lease");
                        shared.count_stale();
                    }
                    // The task's room is free only now that its result is written.
                    shared.held.forget(&d.id, d.completion.token);
                }
                return;
            }
            Err(e) if refused_by_server(&e) && refusals >= 2 => {
                if batch.len() > 1 {
                    tracing::warn!(%queue, error = %e, n = batch.len(), "results refused; writing them one at a time");
                    for d in batch {
                        Box::pin(write_with_retry(shared, conn, queue, vec![d])).await;
                    }
                } else {
                    for d in batch {
                        tracing::error!(task = %d.id, error = %e, "result refused by Redis; giving it up (the task runs again once its lease expires)");
                        shared.held.forget(&d.id, d.completion.token);
                    }
                }
                return;
            }
            Err(e) => {
                refusals += refused_by_server(&e) as u32;
                let delay = backoff.next_delay();
                if e.code() == Some("OOM") {
                    tracing::warn!(%queue, retry_in_ms = delay.as_millis() as u64, "Redis is out of memory; keeping results until it takes them");
                } else {
                    tracing::warn!(%queue, error = %e, retry_in_ms = delay.as_millis() as u64, "could not write results; retrying");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// True for an error that the same call would meet again: the server ran the script and it failed
/// (as opposed to a lost connection, a failover, a full or loading server, or missing rights,
/// which pass, or which an operator fixes while the worker waits).
pub(crate) fn refused_by_server(e: &redis::RedisError) -> bool {
    if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() || e.is_unrecoverable_error() {
        return false;
    }
    if matches!(
        e.code(),
        Some(
            "OOM"
                | "NOPERM"
                | "NOAUTH"
                | "WRONGPASS"
                | "LOADING"
                | "BUSY"
                | "TRYAGAIN"
                | "MASTERDOWN"
                | "CLUSTERDOWN"
                | "READONLY"
                | "MOVED"
                | "ASK"
                | "NOSCRIPT"
                | "MISCONF"
                | "NOREPLICAS"
        )
    ) {
        return false;
    }
    matches!(
        e.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
            | redis::ErrorKind::Extension
            | redis::ErrorKind::UnexpectedReturnType
            | redis::ErrorKind::Parse
    )
}
