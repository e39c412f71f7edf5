//! Claiming tasks: one `claim.lua` call leases up to N tasks of a queue and returns their hashes.

use redis::Value;

use crate::conn::Conn;
use crate::keys::Keys;
use crate::parse::QueueName;
use crate::scripts;
use crate::task::{Fields, field};

/// A task leased to this worker.
#[derive(Debug)]
pub struct Claimed {
    pub queue: QueueName,
    pub seq: u64,
    /// The fencing token: completions and heartbeats must carry it.
    pub token: u64,
    pub fields: Fields,
    /// The input's length when it is over the worker's limit (it was not sent).
    pub oversized_input: Option<u64>,
}

/// The result of one claim call.
#[derive(Debug, Default)]
pub struct ClaimBatch {
    pub tasks: Vec<Claimed>,
    /// Earliest due time (Unix ms) of a delayed task of the queue, if any.
    pub next_due: Option<u64>,
    pub paused: bool,
}

/// What one claim asks for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub n: usize,
    pub lease_ms: u64,
    pub worker: &'a str,
    pub now: u64,
    /// Largest input the worker takes (bytes); larger ones stay in Redis.
    pub max_input: u64,
}

/// Leases up to `r.n` tasks of `queue`.
pub async fn claim(conn: &mut Conn, keys: &Keys, queue: &QueueName, r: ClaimRequest<'_>) -> redis::RedisResult<ClaimBatch> {
    let k = keys.queue(queue);
    let reply: Vec<Value> = scripts::invocation(&scripts::CLAIM, scripts::keys::claim(&k))
        .arg(k.base())
        .arg(r.now)
        .arg(r.lease_ms)
        .arg(r.n)
        .arg(r.worker)
        .arg(r.max_input)
        .invoke_async(conn)
        .await?;
    parse_reply(queue, reply)
}

fn int(v: &Value) -> redis::RedisResult<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => Err(redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "claim: expected an integer", format!("{other:?}")))),
    }
}

/// The task fields a claim returns, in order, after the seq and the token.
const CLAIMED_FIELDS: [&str; 8] =
    [field::MODULE, field::INPUT, field::MAX_ATTEMPTS, field::TIMEOUT_MS, field::MEMORY, field::FUEL, field::DETERMINISTIC, field::ATTEMPTS];

fn parse_reply(queue: &QueueName, reply: Vec<Value>) -> redis::RedisResult<ClaimBatch> {
    let mut it = reply.into_iter();
    let head = it.next().map(|v| int(&v)).transpose()?.unwrap_or(-1);
    let mut batch = ClaimBatch { paused: head == -2, next_due: (head >= 0).then_some(head as u64), tasks: Vec::new() };
    while let (Some(seq), Some(token)) = (it.next(), it.next()) {
        let mut fields = Fields::default();
        let mut oversized_input = None;
        for name in CLAIMED_FIELDS {
            match it.next() {
                Some(Value::BulkString(b)) => {
                    fields.0.insert(name.to_string(), b);
                }
                Some(Value::Nil) => {}
                Some(Value::Int(len)) if name == field::INPUT => oversized_input = Some(len.max(0) as u64),
                other => {
                    return Err(redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "claim: bad task field", format!("{other:?}"))));
                }
            }
        }
        batch.tasks.push(Claimed { queue: queue.clone(), seq: int(&seq)? as u64, token: int(&token)? as u64, fields, oversized_input });
    }
    Ok(batch)
}
