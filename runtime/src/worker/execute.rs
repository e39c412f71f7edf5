//! Running one claimed task and turning its outcome into a completion record: succeeded, retry
//! (with backoff), dead, cancelled, or released back to the queue.

use std::time::Duration;

use crate::parse;
use crate::sandbox::{CancelToken, Failure, FailureKind, Limits, Outcome};
use crate::task::{TaskSpec, field};

use super::claim::Claimed;
use super::{Shared, WorkerConfig};

/// What the completion script does with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Succeeded,
    Retry,
    Dead,
    Cancelled,
    /// Back to pending unfinished, not counted as an attempt (worker shutdown).
    Release,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retry => "retry",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Release => "release",
        }
    }
}

/// One record for `complete.lua`.
#[derive(Debug)]
pub struct Completion {
    pub queue: crate::parse::QueueName,
    pub seq: u64,
    pub token: u64,
    pub action: Action,
    /// For `Retry`: when the task is due again (Unix ms).
    pub due_ms: u64,
    /// This attempt's error as a JSON object (empty for success and release).
    pub error_json: String,
    pub fields: Vec<(&'static str, Vec<u8>)>,
}

impl Completion {
    /// Hands a task back to the queue unfinished, not counted as an attempt.
    pub fn release(queue: crate::parse::QueueName, seq: u64, token: u64) -> Self {
        Self { queue, seq, token, action: Action::Release, due_ms: 0, error_json: String::new(), fields: Vec::new() }
    }

    /// A failure of the worker rather than of the task (`attempt` is the attempt that failed):
    /// the task is dead at once, since a bug of the worker would only repeat.
    pub fn internal_failure(shared: &Shared, queue: crate::parse::QueueName, seq: u64, token: u64, attempt: u32, message: &str) -> Self {
        let outcome = Outcome::not_run(Failure::new(FailureKind::Internal, message));
        completion(shared, queue, seq, token, outcome, attempt, attempt, false)
    }
}

/// The limits a task runs under: its own requests where it made them, the worker's defaults
/// elsewhere, never above the worker's caps.
pub fn resolve_limits(spec: &TaskSpec, config: &WorkerConfig) -> Limits {
    let d = &config.default_limits;
    Limits {
        timeout: spec.limits.timeout.unwrap_or(d.timeout).min(config.max_timeout),
        memory: spec.limits.memory.unwrap_or(d.memory).min(config.sandbox.max_memory),
        fuel: spec.limits.fuel.or(d.fuel),
        deterministic: spec.deterministic || d.deterministic,
        ..*d
    }
}

/// Exponential backoff with "equal jitter": half the delay fixed, half random, so that retries of
/// many tasks that failed together spread out.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(cap);
    d / 2 + d.mul_f64(fastrand::f64() / 2.0)
}

/// Runs a claimed task to its completion record. `cancel` is the token the heartbeat trips when
/// the task is cancelled or its lease is lost; `shutting_down` tells a release from a cancel.
pub async fn execute(shared: &Shared, task: Claimed, cancel: CancelToken) -> Completion {
    let Claimed { queue, seq, token, fields, oversized_input } = task;
    let config = &shared.config;
    let spec = TaskSpec::from_fields(&fields);
    // The claim sends the length instead of an input over the limit; a shorter one is checked
    // again here, since the limit is this worker's.
    let input_len = |spec: &TaskSpec| oversized_input.unwrap_or(spec.input.len() as u64);
    let (outcome, attempts, max_attempts) = match &spec {
        Err(e) => (Outcome::not_run(Failure::new(FailureKind::InvalidTask, e.to_string())), 1, 1),
        Ok(spec) if input_len(spec) > config.max_input_size => (
            Outcome::not_run(Failure::new(
                FailureKind::InvalidTask,
                format!("the input is {} bytes, more than this worker's limit of {} bytes", input_len(spec), config.max_input_size),
            )),
            spec.attempts,
            spec.attempts,
        ),
        Ok(spec) => {
            let max = spec.max_attempts.unwrap_or(config.max_attempts);
            let outcome = match shared.modules.get(&spec.module).await {
                Err(failure) => Outcome::not_run(failure),
                Ok(module) => {
                    let limits = resolve_limits(spec, config);
                    let name = shared.modules.name(&spec.module);
                    shared.sandbox.run(&module, &name, spec.input.clone(), &limits, &cancel).await
                }
            };
            (outcome, spec.attempts, max)
        }
    };
    completion(shared, queue, seq, token, outcome, attempts, max_attempts, cancel.is_cancelled())
}

#[allow(clippy::too_many_arguments)]
fn completion(
    shared: &Shared,
    queue: crate::parse::QueueName,
    seq: u64,
    token: u64,
    outcome: Outcome,
    attempts: u32,
    max_attempts: u32,
    cancelled: bool,
) -> Completion {
    let config = &shared.config;
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
    let failure = match outcome.result {
        Ok(()) => {
            fields.push((field::OUTPUT, outcome.output));
            return Completion { queue, seq, token, action: Action::Succeeded, due_ms: 0, error_json: String::new(), fields };
        }
        Err(f) => f,
    };
    let now = parse::now_ms();
    // A task stopped by this worker's shutdown goes back to the queue as if never claimed.
    if cancelled && failure.kind == FailureKind::Cancelled && shared.is_releasing(&queue, seq) {
        return Completion { queue, seq, token, action: Action::Release, due_ms: 0, error_json: String::new(), fields: Vec::new() };
    }
    fields.push((field::ERROR_KIND, failure.kind.as_str().as_bytes().to_vec()));
    fields.push((field::ERROR, failure.message.clone().into_bytes()));
    let error_json = serde_json::json!({
        "attempt": attempts,
        "kind": failure.kind.as_str(),
        "message": failure.message,
        "worker": shared.worker_id,
        "at": now,
    })
    .to_string();
    let (action, due_ms) = if failure.kind == FailureKind::Cancelled {
        (Action::Cancelled, 0)
    } else if failure.kind.retryable() && attempts < max_attempts {
        (Action::Retry, now + backoff(attempts, config.backoff_base, config.backoff_cap).as_millis() as u64)
    } else {
        (Action::Dead, 0)
    };
    Completion { queue, seq, token, action, due_ms, error_json, fields }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        for attempt in 1..=10 {
            let d = backoff(attempt, base, cap);
            let full = (base * 2u32.pow(attempt - 1)).min(cap);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} not in [{:?}, {full:?}]", full / 2);
        }
        assert!(backoff(1000, base, cap) <= cap);
    }
}
