//! Running one claimed task, and turning how it ended into the record `complete.lua` writes:
//! succeeded, retry (with backoff), dead, cancelled, or released back to the queue. The record is
//! built in one place, [`completion`], from the outcome and the reason the run was stopped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::Semaphore;

use crate::queue::task::field;
use crate::queue::{Action, AttemptFailure, ClaimedTask, Completion, TaskId, TaskSpec};
use crate::sandbox::host::Spawns;
use crate::sandbox::{CancelReason, CancelToken, Failure, FailureKind, Limits, Outcome, TaskHost};

use super::backoff::retry_delay;
use super::held::HeldRun;
use super::{Shared, WorkerConfig};

/// A finished run, waiting to be written.
#[derive(Debug)]
pub struct Done {
    pub id: TaskId,
    pub completion: Completion,
}

/// The limits a task runs under: its own requests where it made them, the worker's defaults
/// elsewhere, never above the worker's caps (the output cap also below what this worker's Redis
/// takes as one value).
pub fn resolve_limits(spec: &TaskSpec, config: &WorkerConfig, max_output: usize) -> Limits {
    let d = &config.default_limits;
    Limits {
        timeout: spec.limits.timeout.unwrap_or(d.timeout).min(config.max_timeout),
        memory: spec.limits.memory.unwrap_or(d.memory).min(config.sandbox.max_memory),
        fuel: spec.limits.fuel.or(d.fuel),
        deterministic: spec.deterministic || d.deterministic,
        stdout: d.stdout.min(max_output),
        ..*d
    }
}

/// Runs one held task once a run slot is free and returns what to write: its outcome; a
/// hand-back when the worker stops before it started; `cancelled` when its cancel arrives first;
/// or an `internal` failure if running it panicked (so that the task is reported, not stuck).
pub async fn run_held(shared: Arc<Shared>, task: ClaimedTask, run: HeldRun, slots: Arc<Semaphore>, stopping: CancelToken) -> Done {
    use futures_util::FutureExt;
    let (id, token, attempt) = (task.id.clone(), task.token, task.attempt);
    // Biased: a stop or a cancel that is already known wins over a slot that frees up.
    let slot = tokio::select! {
        biased;
        _ = stopping.cancelled() => None,
        _ = run.cancel.cancelled() => None,
        slot = slots.acquire_owned() => slot.ok(),
    };
    let Some(slot) = slot else {
        let reason = run.cancel.reason().unwrap_or(CancelReason::Shutdown);
        let outcome = Outcome::not_run(Failure::new(FailureKind::Cancelled, "the task was cancelled before it started"));
        let completion = completion(&shared.config, id.seq, token, outcome, attempt, attempt, Some(reason));
        return Done { id, completion };
    };
    let started_ms = crate::parse::now_ms();
    run.started.store(started_ms, Ordering::Relaxed);
    shared.busy.fetch_add(1, Ordering::Relaxed);
    let clock = std::time::Instant::now();
    // Boxed: the run's state machine is large, and an unboxed one would be copied into every
    // spawned task.
    let exec = Box::pin(execute(&shared, task, &run));
    let mut completion = match std::panic::AssertUnwindSafe(exec).catch_unwind().await {
        Ok(c) => c,
        Err(panic) => {
            let what =
                panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "a panic".into());
            tracing::error!(task = %id, panic = ?what, "running the task panicked");
            // A bug of the worker would only repeat: the task is dead at once.
            let outcome = Outcome::not_run(Failure::new(FailureKind::Internal, format!("the worker panicked running the task: {what}")));
            completion(&shared.config, id.seq, token, outcome, attempt, attempt, None)
        }
    };
    drop(slot);
    shared.busy.fetch_sub(1, Ordering::Relaxed);
    shared.observe_task(clock.elapsed());
    if completion.action != Action::Release {
        completion.fields.push((field::STARTED, started_ms.to_string().into_bytes()));
    }
    Done { id, completion }
}

/// Runs a claimed task to its completion record. `cancel` is tripped (with its reason) when the
/// task is cancelled, its lease is lost, or the worker stops.
async fn execute(shared: &Shared, task: ClaimedTask, run: &HeldRun) -> Completion {
    let ClaimedTask { id, token, attempt, mut spec, oversized_input } = task;
    let cancel = &run.cancel;
    let config = &shared.config;
    let mut children = Vec::new();
    let mut ran: Option<Limits> = None;
    let (outcome, max_attempts) = match &mut spec {
        Err(e) => (Outcome::not_run(Failure::new(FailureKind::InvalidTask, e.to_string())), attempt),
        Ok(spec) => {
            // The claim sends the length instead of an input over the limit; a shorter one is
            // checked again here, since the limit is this worker's.
            let input_len = oversized_input.unwrap_or(spec.input.len() as u64);
            let max = spec.max_attempts.unwrap_or(config.max_attempts);
            if input_len > config.max_input_size {
                let message = format!("the input is {input_len} bytes, more than this worker's limit of {} bytes", config.max_input_size);
                (Outcome::not_run(Failure::new(FailureKind::InvalidTask, message)), max)
            } else {
                // Moved, not copied: the sandbox's stdin takes the buffer itself, so a running
                // task holds its input once (a copy per run slot adds up with large inputs).
                let input = match spec.input_from.is_empty() {
                    true => Ok(std::mem::take(&mut spec.input)),
                    false => parents_input(shared, &id, &spec.input_from).await,
                };
                let outcome = match (input, shared.modules.get(&spec.module).await) {
                    (Err(failure), _) | (_, Err(failure)) => Outcome::not_run(failure),
                    (Ok(input), Ok(module)) => {
                        let limits = resolve_limits(spec, config, shared.max_output);
                        ran = Some(limits);
                        let name = shared.modules.name(&spec.module);
                        match http_grant(spec) {
                            Err(failure) => Outcome::not_run(failure),
                            Ok(http) => {
                                let broker =
                                    super::spawn::QueueBroker::new(shared.db.clone(), shared.conn.clone(), shared.modules.store().clone(), id.queue.clone());
                                let spawns = Spawns::new(Arc::new(broker), config.max_children, config.max_input_size);
                                let host = TaskHost {
                                    progress: run.progress.clone(),
                                    config: super::settings::of(shared, &id.queue).await,
                                    spawns: Some(spawns.clone()),
                                    http,
                                };
                                let outcome = shared.sandbox.run_with(&module, &name, input, &limits, cancel, host).await;
                                children = super::spawn::children(spawns.take(), &inherited_grants(spec));
                                outcome
                            }
                        }
                    }
                };
                (outcome, max)
            }
        }
    };
    let mut c = completion(config, id.seq, token, outcome, attempt, max_attempts, cancel.reason());
    // Only a success commits what the attempt spawned.
    if c.action == Action::Succeeded {
        c.children = children;
    }
    // A failed attempt records what it ran under, for `wasmq replay`.
    if let (Some(l), Action::Retry | Action::Dead) = (ran, c.action) {
        let r = crate::queue::task::RanLimits {
            timeout_ms: l.timeout.as_millis() as u64,
            memory: l.memory,
            fuel: l.fuel,
            stdout: l.stdout as u64,
            stderr: l.stderr as u64,
            table_elements: l.table_elements as u64,
            stack: config.sandbox.max_stack as u64,
            deterministic: l.deterministic,
        };
        c.fields.push((field::LIMITS, serde_json::to_vec(&r).unwrap_or_default()));
    }
    c
}

/// What a spawned child gets of its spawner's grants: the same HTTP allow-list and caps (a
/// child never gets more than its spawner).
fn inherited_grants(spec: &TaskSpec) -> Vec<(&'static str, Vec<u8>)> {
    let mut f = Vec::new();
    if let Some(a) = &spec.allow_hosts {
        f.push((field::ALLOW_HOSTS, a.clone().into_bytes()));
    }
    if let Some(n) = spec.max_http_requests {
        f.push((field::MAX_HTTP_REQUESTS, n.to_string().into_bytes()));
    }
    if let Some(n) = spec.max_http_response_bytes {
        f.push((field::MAX_HTTP_RESPONSE_BYTES, n.to_string().into_bytes()));
    }
    f
}

/// The task's HTTP grant: its host patterns (an unreadable field fails the task as
/// `invalid_task`, like any malformed field) and its own caps. The worker's ceiling and caps
/// apply on top, in the sandbox.
fn http_grant(spec: &TaskSpec) -> Result<crate::http::HttpGrant, Failure> {
    let allow = match &spec.allow_hosts {
        None => crate::http::AllowList::default(),
        Some(text) => crate::http::AllowList::parse(text).map_err(|e| {
            let e = crate::queue::task::TaskDataError::Invalid { field: field::ALLOW_HOSTS, reason: e.to_string() };
            Failure::new(FailureKind::InvalidTask, e.to_string())
        })?,
    };
    Ok(crate::http::HttpGrant { allow, max_requests: spec.max_http_requests, max_response_bytes: spec.max_http_response_bytes })
}

/// The input of an `--input-from-after` task: the JSON array of its parents' outputs, in order,
/// each embedded as JSON, a string or `{"base64": ...}`. Fetched here, after the claim, so that
/// large outputs never pass through the claim script.
async fn parents_input(shared: &Shared, id: &TaskId, parents: &[u64]) -> Result<Vec<u8>, Failure> {
    let outputs = shared
        .db
        .outputs(&mut shared.conn.clone(), &id.queue, parents)
        .await
        .map_err(|e| Failure::new(FailureKind::Internal, format!("could not read the parents' outputs: {e}")))?;
    let input = crate::queue::task::embed_outputs_array(&outputs);
    let max = shared.config.max_input_size;
    if input.len() as u64 > max {
        let n = parents.len();
        let message = format!(
            "the outputs of its {n} parents come to {} bytes, more than this worker's --max-input-size of {max} bytes \
             (a flow reducer: a --reduce-fan-in below {n} gives each reducer fewer outputs)",
            input.len()
        );
        return Err(Failure::new(FailureKind::InputLimit, message));
    }
    Ok(input)
}

/// The record for `complete.lua`, from how the run ended (`stopped`: why it was cancelled, if
/// it was).
#[allow(clippy::too_many_arguments)]
pub fn completion(config: &WorkerConfig, seq: u64, token: u64, outcome: Outcome, attempt: u32, max_attempts: u32, stopped: Option<CancelReason>) -> Completion {
    let release = Completion { seq, token, action: Action::Release, delay: Default::default(), error: None, fields: Vec::new(), children: Vec::new() };
    let mut fields: Vec<(&'static str, Vec<u8>)> = vec![(field::DURATION_US, (outcome.duration.as_micros() as u64).to_string().into_bytes())];
    if let Some(f) = outcome.fuel_used {
        fields.push((field::FUEL_USED, f.to_string().into_bytes()));
    }
    // A success implies exit code 0, and an empty log needs no field: fewer writes per task.
    if let Some(c) = outcome.exit_code.filter(|c| *c != 0 || outcome.result.is_err()) {
        fields.push((field::EXIT_CODE, c.to_string().into_bytes()));
    }
    if !outcome.log.is_empty() {
        fields.push((field::LOG, outcome.log));
    }
    if outcome.log_truncated {
        fields.push((field::LOG_TRUNCATED, b"1".to_vec()));
    }
    // When the result was sent, in µs (worker clock): end-to-end latency is measured against it.
    fields.push((field::FINISHED_US, crate::parse::now_us().to_string().into_bytes()));
    let failure = match outcome.result {
        Ok(()) => {
            fields.push((field::OUTPUT, outcome.output));
            return Completion { action: Action::Succeeded, fields, ..release };
        }
        Err(f) => f,
    };
    if failure.kind == FailureKind::Cancelled {
        match stopped {
            // Stopped by this worker's shutdown: back to the queue as if never claimed.
            Some(CancelReason::Shutdown) | None => return release,
            // Its result would be refused anyway; a release is as good as any.
            Some(CancelReason::LeaseLost) => return release,
            Some(CancelReason::Requested) => {}
        }
    }
    fields.push((field::ERROR_KIND, failure.kind.as_str().as_bytes().to_vec()));
    fields.push((field::ERROR, failure.message.clone().into_bytes()));
    let error = Some(AttemptFailure { kind: failure.kind.as_str(), message: failure.message });
    let (action, delay) = if failure.kind == FailureKind::Cancelled {
        (Action::Cancelled, Default::default())
    } else if failure.kind.retryable() && attempt < max_attempts {
        (Action::Retry, retry_delay(attempt, config.backoff_base, config.backoff_cap))
    } else {
        (Action::Dead, Default::default())
    };
    Completion { action, delay, error, fields, ..release }
}
