//! Writing results: completions are batched (whatever accumulated while the previous write was in
//! flight) into one `complete.lua` call per queue, and retried until Redis takes them, so a result
//! survives a Redis restart or a dropped connection. A task's slot is freed only once its result
//! is written (or refused as stale).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::parse::{self, QueueName};
use crate::scripts;
use crate::task::field;

use super::Shared;
use super::execute::{Action, Completion};

/// A completion waiting to be written (its task stays held until then).
pub struct Pending {
    pub completion: Completion,
}

/// Most records per script call.
const BATCH: usize = 512;

/// Runs until the channel closes and everything received is written.
pub async fn run(shared: std::sync::Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut conn = shared.conn.clone();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut by_queue: BTreeMap<QueueName, Vec<Pending>> = BTreeMap::new();
        for p in batch {
            by_queue.entry(p.completion.queue.clone()).or_default().push(p);
        }
        for (queue, records) in by_queue {
            write_with_retry(&shared, &mut conn, &queue, records).await;
        }
    }
}

/// Writes a batch, retrying through connection trouble for as long as it lasts. A batch that the
/// server refuses as such (a script error, e.g. a task key overwritten with junk) is retried a few
/// times, then written one record at a time so that one bad record cannot hold up every later
/// result; a single record still refused is given up: its lease expires and the reaper returns
/// the task to the queue.
async fn write_with_retry(shared: &Shared, conn: &mut crate::conn::Conn, queue: &QueueName, records: Vec<Pending>) {
    let mut delay = Duration::from_millis(50);
    let mut refusals = 0;
    loop {
        let t = std::time::Instant::now();
        match write(shared, conn, queue, &records).await {
            Ok(applied) => {
                tracing::trace!(%queue, n = records.len(), us = t.elapsed().as_micros() as u64, "results written");
                for (p, ok) in records.into_iter().zip(applied) {
                    let c = &p.completion;
                    if ok == 1 {
                        tracing::debug!(task = %format!("{queue}:{}", c.seq), action = c.action.as_str(), "task completed");
                        shared.count(c.action);
                    } else {
                        // Another worker holds the task now (our lease expired): its result wins.
                        tracing::warn!(task = %format!("{queue}:{}", c.seq), "result refused: this worker no longer holds the task's lease");
                        shared.count_stale();
                    }
                    // The task's room is free only now that its result is written.
                    shared.forget(queue, c.seq);
                }
                return;
            }
            Err(e) if refused_by_server(&e) && refusals >= 2 => {
                if records.len() > 1 {
                    tracing::warn!(%queue, error = %e, n = records.len(), "results refused; writing them one at a time");
                    for r in records {
                        Box::pin(write_with_retry(shared, conn, queue, vec![r])).await;
                    }
                } else {
                    for p in records {
                        tracing::error!(task = %format!("{queue}:{}", p.completion.seq), error = %e,
                            "result refused by Redis; giving it up (the task runs again once its lease expires)");
                        shared.forget(queue, p.completion.seq);
                    }
                }
                return;
            }
            Err(e) => {
                refusals += refused_by_server(&e) as u32;
                tracing::warn!(%queue, error = %e, retry_in_ms = delay.as_millis() as u64, "could not write results; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// True for an error that the same call would meet again: the server ran the script and it failed
/// (as opposed to a lost connection, a failover, a full or loading server, or missing rights,
/// which pass, or which an operator fixes while the worker waits).
fn refused_by_server(e: &redis::RedisError) -> bool {
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

async fn write(shared: &Shared, conn: &mut crate::conn::Conn, queue: &QueueName, records: &[Pending]) -> redis::RedisResult<Vec<i64>> {
    let k = shared.keys.queue(queue);
    let mut inv = scripts::invocation(&scripts::COMPLETE, scripts::keys::complete(&k));
    inv.arg(k.base()).arg(parse::now_ms()).arg(shared.config.retention.as_millis() as u64);
    // When the result was sent, in µs: end-to-end latency is measured against it.
    let sent_us = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    for p in records {
        let c = &p.completion;
        let stamped = c.action != Action::Release;
        inv.arg(c.seq).arg(c.token).arg(c.action.as_str()).arg(c.due_ms).arg(&c.error_json).arg(c.fields.len() + stamped as usize);
        for (name, value) in &c.fields {
            inv.arg(*name).arg(value.as_slice());
        }
        if stamped {
            inv.arg(field::FINISHED_US).arg(sent_us);
        }
    }
    inv.invoke_async(conn).await
}
