//! The task hash (`P:{Q}:task:<seq>`): its fields, and typed views of it.
//!
//! A task hash is written by `enqueue.lua` and updated by the other scripts; anything may also
//! have been written by hand or by an older version, so reading is strict about types but never
//! panics: a bad field is a [`TaskDataError`] naming the field.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::ids::{self, TaskId};
use crate::parse;

/// Field names of the task hash.
pub mod field {
    pub const MODULE: &str = "module";
    pub const INPUT: &str = "input";
    pub const PRIORITY: &str = "priority";
    pub const CREATED: &str = "created";
    pub const STATE: &str = "state";
    pub const MAX_ATTEMPTS: &str = "max_attempts";
    pub const TIMEOUT_MS: &str = "timeout_ms";
    pub const MEMORY: &str = "memory";
    pub const FUEL: &str = "fuel";
    pub const ESTIMATE_US: &str = "estimate_us";
    pub const DUE: &str = "due";
    pub const ATTEMPTS: &str = "attempts";
    pub const LEASE: &str = "lease";
    pub const WORKER: &str = "worker";
    pub const STARTED: &str = "started";
    pub const FINISHED: &str = "finished";
    /// When the worker sent the result, in µs since the Unix epoch (for latency measurements).
    pub const FINISHED_US: &str = "finished_us";
    pub const OUTPUT: &str = "output";
    pub const LOG: &str = "log";
    pub const LOG_TRUNCATED: &str = "log_truncated";
    pub const EXIT_CODE: &str = "exit_code";
    pub const ERROR_KIND: &str = "error_kind";
    pub const ERROR: &str = "error";
    /// How many attempt errors were ever recorded; each is in a field `err:<n>` (JSON), the last
    /// few kept (see `lib.lua`).
    pub const ERRN: &str = "errn";
    pub const ERR_PREFIX: &str = "err:";
    /// Why a cancelled task was cancelled (`requested`, ...).
    pub const CANCEL_REASON: &str = "cancel_reason";
    /// The running attempt's last progress report (host API): a fraction from 0 to 1, and its
    /// message; written by heartbeat.lua, cleared when the attempt ends.
    pub const PROGRESS: &str = "progress";
    pub const PROGRESS_MSG: &str = "progress_msg";
    /// Set while a `result --wait` client waits for the task.
    pub const WAITERS: &str = "waiters";
    /// Parent seqs (same queue), comma-separated: the task waits for them to succeed.
    pub const AFTER: &str = "after";
    /// Parents that have not succeeded yet (while `blocked`).
    pub const WAITING: &str = "waiting";
    /// `cancel` when a dead parent cancels the task (default: it stays blocked).
    pub const ON_PARENT_FAILURE: &str = "on_parent_failure";
    /// The flow (`wasmq map`) the task belongs to: the flow's number in the task's queue.
    pub const FLOW: &str = "flow";
    /// The children a succeeded attempt spawned (host API `spawn`): seqs, comma-separated. A task
    /// enqueued `--after` it waits for them too.
    pub const SPAWNED: &str = "spawned";
    /// How many dependents still need the task kept (retention keeps it for them).
    pub const OPEN_DEPS: &str = "open_deps";
    /// `1`: the input is the JSON array of the parents' outputs, built by the worker.
    pub const INPUT_FROM_AFTER: &str = "input_from_after";
    /// The limits a failed attempt ran under (JSON, see `RanLimits`), for `wasmq replay`. Only
    /// failed attempts record it: a success costs no extra field.
    pub const LIMITS: &str = "limits";
    pub const DURATION_US: &str = "duration_us";
    pub const FUEL_USED: &str = "fuel_used";
    pub const UNIQUE_KEY: &str = "unique_key";
    pub const CANCEL: &str = "cancel";
    /// When the current claim was made (Unix ms); `started` is when the task began running.
    pub const CLAIMED: &str = "claimed";
    /// The lease token under which a worker reported the task running (heartbeat.lua).
    pub const RUNNING: &str = "running";
    /// Leases that expired before the task was seen running (not attempts; see reap.lua).
    pub const STALLS: &str = "stalls";
    pub const DETERMINISTIC: &str = "deterministic";
    /// The hosts the task may send HTTP requests to (`enqueue --allow-host`): canonical host
    /// patterns, comma-separated (`crate::http::AllowList`). Absent: none. Spawned children copy
    /// it (at most their spawner's grants).
    pub const ALLOW_HOSTS: &str = "allow_hosts";
    /// The task's own caps on HTTP requests and response body bytes per attempt, below the
    /// worker's (`enqueue --max-http-requests`, `--max-http-response-bytes`).
    pub const MAX_HTTP_REQUESTS: &str = "max_http_requests";
    pub const MAX_HTTP_RESPONSE_BYTES: &str = "max_http_response_bytes";
    /// When the task expires (Unix ms, `enqueue --expires`): if it is still waiting (pending,
    /// delayed, blocked) then, it is finished as `expired` and never runs.
    pub const EXPIRES: &str = "expires";
    /// The task's group (`enqueue --group`): its pool, limits and turn in the queue's rotation.
    pub const GROUP: &str = "group";
    pub const SCHEDULE: &str = "schedule";
    pub const SCHEDULED_FOR: &str = "scheduled_for";
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Pending,
    Delayed,
    /// Waiting for its parents (`enqueue --after`) to succeed.
    Blocked,
    Active,
    Succeeded,
    Dead,
    Cancelled,
    /// Still waiting when its expiry (`enqueue --expires`) passed: finished without running.
    Expired,
}

impl TaskState {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "delayed" => Self::Delayed,
            "blocked" => Self::Blocked,
            "active" => Self::Active,
            "succeeded" => Self::Succeeded,
            "dead" => Self::Dead,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delayed => "delayed",
            Self::Blocked => "blocked",
            Self::Active => "active",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled | Self::Expired)
    }

    /// The finished states, each with its index zset and retention.
    pub const FINISHED: [TaskState; 4] = [Self::Succeeded, Self::Dead, Self::Cancelled, Self::Expired];
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field of a task hash that is missing or does not hold what it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskDataError {
    #[error("task field {0:?} is missing")]
    Missing(&'static str),
    #[error("task field {field:?} is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The raw fields of a task hash.
#[derive(Debug, Clone, Default)]
pub struct Fields(pub HashMap<String, Vec<u8>>);

impl Fields {
    /// From the flat `[name, value, name, value, ...]` array that HGETALL and the claim script
    /// return. Field names that are not UTF-8 are dropped (no field of ours is).
    pub fn from_flat(flat: Vec<Vec<u8>>) -> Self {
        let mut map = HashMap::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let Ok(k) = String::from_utf8(k) {
                map.insert(k, v);
            }
        }
        Self(map)
    }

    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| v.as_slice())
    }

    pub fn text(&self, name: &'static str) -> Result<Option<&str>, TaskDataError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v).map(Some).map_err(|_| TaskDataError::Invalid { field: name, reason: "not UTF-8 text".into() }),
        }
    }

    /// An unsigned integer field, refusing negative, fractional, oversized and non-numeric values.
    pub fn uint(&self, name: &'static str, max: u64) -> Result<Option<u64>, TaskDataError> {
        let Some(t) = self.text(name)? else { return Ok(None) };
        let t = t.trim();
        let invalid = |reason: &str| TaskDataError::Invalid { field: name, reason: format!("{reason}, got {:?}", clip(t)) };
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid("expected a non-negative integer"));
        }
        let v: u64 = t.parse().map_err(|_| invalid("number too large"))?;
        if v > max {
            return Err(invalid(&format!("must be at most {max}")));
        }
        Ok(Some(v))
    }

    pub fn int(&self, name: &'static str, min: i64, max: i64) -> Result<Option<i64>, TaskDataError> {
        let Some(t) = self.text(name)? else { return Ok(None) };
        let v: i64 = t.trim().parse().map_err(|_| TaskDataError::Invalid { field: name, reason: format!("expected an integer, got {:?}", clip(t)) })?;
        if !(min..=max).contains(&v) {
            return Err(TaskDataError::Invalid { field: name, reason: format!("must be between {min} and {max}, got {v}") });
        }
        Ok(Some(v))
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Limits a task asks for; unset ones take the worker's defaults, and none may exceed the
/// worker's caps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestedLimits {
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub fuel: Option<u64>,
}

/// What a worker needs to run one claimed task.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub module: String,
    pub input: Vec<u8>,
    pub max_attempts: Option<u32>,
    pub limits: RequestedLimits,
    pub deterministic: bool,
    /// The parents whose outputs make the input (`--input-from-after`), in order; empty when
    /// the input is the task's own.
    pub input_from: Vec<u64>,
    /// The task's HTTP grant as stored (comma-separated host patterns; the worker parses it).
    pub allow_hosts: Option<String>,
    pub max_http_requests: Option<u32>,
    pub max_http_response_bytes: Option<u64>,
}

/// The limits an attempt ran under, as the worker resolved them (its defaults and caps applied to
/// the task's requests): what `wasmq replay` runs a failed task under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RanLimits {
    pub timeout_ms: u64,
    pub memory: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    pub stdout: u64,
    pub stderr: u64,
    pub table_elements: u64,
    /// The worker's guest stack size (an engine setting).
    pub stack: u64,
    #[serde(default)]
    pub deterministic: bool,
}

/// The task fields a worker needs to run a task: what a claim returns of each task.
pub const SPEC_FIELDS: [&str; 12] = [
    field::MODULE,
    field::INPUT,
    field::MAX_ATTEMPTS,
    field::TIMEOUT_MS,
    field::MEMORY,
    field::FUEL,
    field::DETERMINISTIC,
    field::AFTER,
    field::INPUT_FROM_AFTER,
    field::ALLOW_HOSTS,
    field::MAX_HTTP_REQUESTS,
    field::MAX_HTTP_RESPONSE_BYTES,
];

impl TaskSpec {
    pub fn from_fields(f: &Fields) -> Result<Self, TaskDataError> {
        let module = f.text(field::MODULE)?.ok_or(TaskDataError::Missing(field::MODULE))?;
        if !parse::is_sha256_hex(module) {
            return Err(TaskDataError::Invalid { field: field::MODULE, reason: "expected a 64-digit lowercase hex SHA-256".into() });
        }
        let timeout = f.uint(field::TIMEOUT_MS, parse::MAX_DURATION.as_millis() as u64)?.map(Duration::from_millis);
        if timeout == Some(Duration::ZERO) {
            return Err(TaskDataError::Invalid { field: field::TIMEOUT_MS, reason: "must be positive".into() });
        }
        Ok(Self {
            module: module.to_string(),
            input: f.bytes(field::INPUT).unwrap_or_default().to_vec(),
            max_attempts: f.uint(field::MAX_ATTEMPTS, ids::MAX_ATTEMPTS as u64)?.map(|v| v as u32),
            limits: RequestedLimits { timeout, memory: f.uint(field::MEMORY, 1 << 40)?, fuel: f.uint(field::FUEL, u64::MAX)? },
            deterministic: f.text(field::DETERMINISTIC)? == Some("1"),
            input_from: if f.text(field::INPUT_FROM_AFTER)? == Some("1") { parents(f)? } else { Vec::new() },
            allow_hosts: f.text(field::ALLOW_HOSTS)?.map(str::to_string),
            max_http_requests: f.uint(field::MAX_HTTP_REQUESTS, u32::MAX as u64)?.map(|v| v as u32),
            max_http_response_bytes: f.uint(field::MAX_HTTP_RESPONSE_BYTES, u64::MAX)?,
        })
    }
}

/// The parents a task names in `after`.
fn parents(f: &Fields) -> Result<Vec<u64>, TaskDataError> {
    seq_list(f, field::AFTER)
}

/// A comma-separated list of task numbers (`after`, `spawned`).
fn seq_list(f: &Fields, name: &'static str) -> Result<Vec<u64>, TaskDataError> {
    let Some(t) = f.text(name)? else { return Ok(Vec::new()) };
    t.split(',').map(|p| p.parse().map_err(|_| TaskDataError::Invalid { field: name, reason: format!("expected task numbers, got {:?}", clip(t)) })).collect()
}

/// A parent of a task and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParentState {
    pub id: String,
    /// None when the parent is gone.
    pub state: Option<TaskState>,
}

/// One failed attempt, as kept in the task's `errors` array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Unix ms; scripts write it as a string (64-bit values travel as strings in Lua's JSON).
    #[serde(deserialize_with = "u64_from_string_or_number")]
    pub at: u64,
}

fn u64_from_string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        N(u64),
    }
    match N::deserialize(d)? {
        N::N(n) => Ok(n),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

use serde::Deserialize as _;

/// A task output (or any task-provided bytes) as it travels inside JSON: valid JSON is embedded
/// as JSON, other UTF-8 as a JSON string, anything else as `{"base64": "..."}`.
pub fn embed_output(bytes: &[u8]) -> serde_json::Value {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return v;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => {
            use base64::Engine as _;
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
    }
}

/// Task outputs as one JSON array, as a reducer or an `--input-from-after` task reads them (None,
/// a task that is gone or ignored, is `null`). Each element follows [`embed_output`], but valid
/// JSON is copied as it is rather than parsed into a value and printed again: its bytes, key order
/// and numbers stay exactly as the task wrote them, and a reducer's input of many large outputs
/// costs a validation pass, not a tree of values.
pub fn embed_outputs_array(outputs: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + outputs.iter().map(|o| o.as_ref().map_or(4, |b| b.len() + 1)).sum::<usize>());
    out.push(b'[');
    for (i, o) in outputs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match o.as_deref() {
            None => out.extend_from_slice(b"null"),
            Some(b) if serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok() => {
                let json_space = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\r');
                let start = b.iter().position(|c| !json_space(c)).unwrap_or(b.len());
                let end = b.iter().rposition(|c| !json_space(c)).map_or(start, |e| e + 1);
                out.extend_from_slice(&b[start..end]);
            }
            Some(b) => serde_json::to_writer(&mut out, &embed_output(b)).expect("a JSON value serialises"),
        }
    }
    out.push(b']');
    out
}

/// A running task's progress report, as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskProgress {
    /// From 0 to 1.
    pub fraction: f32,
    pub message: String,
}

/// Everything known about a task, for `status` and `result`.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub id: String,
    pub state: TaskState,
    pub module: String,
    /// Names that point at the module now (filled in by the client).
    pub module_names: Vec<String>,
    pub priority: i64,
    pub attempts: u32,
    pub max_attempts: Option<u32>,
    pub created_ms: u64,
    pub due_ms: Option<u64>,
    /// When the task expires if it still waits then (`enqueue --expires`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// Its group (`enqueue --group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// While pending: the limit that holds it back now (`rate_limit`, `concurrency_limit`,
    /// `group_rate_limit`, `group_concurrency_limit`; filled in by the client).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<String>,
    /// When the current or last claim was made.
    pub claimed_ms: Option<u64>,
    /// When the current or last attempt started running.
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    pub duration_us: Option<u64>,
    pub worker: Option<String>,
    pub exit_code: Option<i64>,
    pub error_kind: Option<String>,
    pub error: Option<String>,
    pub errors: Vec<AttemptError>,
    pub fuel_used: Option<u64>,
    /// Leases that expired before the task was seen running (not counted as attempts).
    pub stalls: u64,
    pub cancel_requested: bool,
    /// Why the task was cancelled (for a cancelled task).
    pub cancel_reason: Option<String>,
    /// The hosts the task may send HTTP requests to (`enqueue --allow-host`), as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_hosts: Option<String>,
    /// The running attempt's last progress report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<TaskProgress>,
    /// Its parents (`enqueue --after`), in order.
    pub after: Vec<String>,
    /// While blocked: the parents that have not succeeded, with their state (filled in by the
    /// client).
    pub blocked_on: Vec<ParentState>,
    /// The children its succeeded attempt spawned, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spawned: Vec<String>,
    /// The flow it belongs to (`QUEUE:N`), when it is a member of one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    pub input_bytes: usize,
    /// The output's bytes, exactly (`wasmq result`).
    #[serde(skip)]
    pub output_raw: Option<Vec<u8>>,
    /// The output as embedded in JSON (see [`embed_output`]).
    pub output: Option<serde_json::Value>,
    /// The output as text when it is UTF-8.
    pub output_text: Option<String>,
    pub output_bytes: Option<usize>,
    pub log: Option<String>,
    pub log_truncated: bool,
}

impl TaskRecord {
    /// Reads a task hash for display. Only `state` must be valid; any other field that is
    /// malformed (written by hand, say) is shown lossily or left out, so that `status` can always
    /// show what went wrong.
    pub fn from_fields(id: &TaskId, f: &Fields) -> Result<Self, TaskDataError> {
        let state_text = f.text(field::STATE)?.ok_or(TaskDataError::Missing(field::STATE))?;
        let state = TaskState::parse(state_text)
            .ok_or_else(|| TaskDataError::Invalid { field: field::STATE, reason: format!("unknown state {:?}", clip(state_text)) })?;
        let lossy = |name: &str| f.bytes(name).map(|b| String::from_utf8_lossy(b).into_owned());
        let uint = |name: &'static str| f.uint(name, u64::MAX).ok().flatten();
        let errors = attempt_errors(f);
        let output = f.bytes(field::OUTPUT).map(|b| b.to_vec());
        Ok(Self {
            id: id.to_string(),
            state,
            module: lossy(field::MODULE).unwrap_or_default(),
            module_names: Vec::new(),
            priority: f.int(field::PRIORITY, i64::MIN, i64::MAX).ok().flatten().unwrap_or(0),
            attempts: uint(field::ATTEMPTS).unwrap_or(0).min(u32::MAX as u64) as u32,
            max_attempts: uint(field::MAX_ATTEMPTS).map(|v| v.min(u32::MAX as u64) as u32),
            created_ms: uint(field::CREATED).unwrap_or(0),
            due_ms: uint(field::DUE),
            expires_ms: uint(field::EXPIRES),
            group: lossy(field::GROUP),
            waiting_on: None,
            claimed_ms: uint(field::CLAIMED),
            started_ms: uint(field::STARTED),
            finished_ms: uint(field::FINISHED),
            duration_us: uint(field::DURATION_US),
            worker: lossy(field::WORKER),
            exit_code: f.int(field::EXIT_CODE, i64::MIN, i64::MAX).ok().flatten(),
            error_kind: lossy(field::ERROR_KIND),
            error: lossy(field::ERROR),
            errors,
            fuel_used: uint(field::FUEL_USED),
            stalls: uint(field::STALLS).unwrap_or(0),
            cancel_requested: f.bytes(field::CANCEL) == Some(b"1"),
            cancel_reason: lossy(field::CANCEL_REASON),
            allow_hosts: lossy(field::ALLOW_HOSTS),
            progress: f
                .text(field::PROGRESS)
                .ok()
                .flatten()
                .and_then(|p| p.parse::<f32>().ok())
                .map(|fraction| TaskProgress { fraction, message: lossy(field::PROGRESS_MSG).unwrap_or_default() }),
            after: parents(f).unwrap_or_default().into_iter().map(|s| TaskId::new(id.queue.clone(), s).to_string()).collect(),
            blocked_on: Vec::new(),
            spawned: seq_list(f, field::SPAWNED).unwrap_or_default().into_iter().map(|s| TaskId::new(id.queue.clone(), s).to_string()).collect(),
            flow: uint(field::FLOW).map(|n| TaskId::new(id.queue.clone(), n).to_string()),
            input_bytes: f.bytes(field::INPUT).map_or(0, |b| b.len()),
            output_text: output.as_ref().and_then(|o| std::str::from_utf8(o).ok().map(str::to_string)),
            output_bytes: output.as_ref().map(|o| o.len()),
            output: output.as_deref().map(embed_output),
            output_raw: output,
            log: lossy(field::LOG),
            log_truncated: f.bytes(field::LOG_TRUNCATED) == Some(b"1"),
        })
    }
}

/// The attempt errors kept in a task's `err:<n>` fields, oldest first; unreadable ones are skipped.
fn attempt_errors(f: &Fields) -> Vec<AttemptError> {
    let mut numbered: Vec<(u64, AttemptError)> =
        f.0.iter()
            .filter_map(|(k, v)| {
                let n: u64 = k.strip_prefix(field::ERR_PREFIX)?.parse().ok()?;
                Some((n, serde_json::from_slice(v).ok()?))
            })
            .collect();
    numbered.sort_by_key(|(n, _)| *n);
    numbered.into_iter().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        Fields(pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect())
    }

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// Valid JSON keeps its bytes (key order, numbers beyond f64, inner spaces), trimmed of the
    /// whitespace around it; text becomes a string, other bytes base64, a missing output null.
    #[test]
    fn outputs_array_embeds_json_as_written() {
        let outputs = vec![
            Some(b"{\"z\": 1, \"a\": 123456789012345678901234567890}\n".to_vec()),
            Some(b"plain \"text\"".to_vec()),
            None,
            Some(vec![0xff, 0x00]),
            Some(b"  [1.50]  ".to_vec()),
            Some(Vec::new()),
        ];
        let out = embed_outputs_array(&outputs);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            r#"[{"z": 1, "a": 123456789012345678901234567890},"plain \"text\"",null,{"base64":"/wA="},[1.50],""]"#
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(v.as_array().unwrap().len(), outputs.len());
    }

    #[test]
    fn spec_reads_and_validates_fields() {
        let f = fields(&[("module", SHA), ("input", "hi"), ("priority", "5"), ("timeout_ms", "1500"), ("memory", "1048576")]);
        let s = TaskSpec::from_fields(&f).unwrap();
        assert_eq!(s.input, b"hi");
        assert_eq!(s.limits.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(s.limits.memory, Some(1 << 20));

        assert_eq!(TaskSpec::from_fields(&fields(&[])).unwrap_err(), TaskDataError::Missing("module"));
        for (k, v) in [("module", "xyz"), ("timeout_ms", "-1"), ("timeout_ms", "0"), ("memory", "1e9"), ("max_attempts", "99999")] {
            let mut f = fields(&[("module", SHA)]);
            f.0.insert(k.into(), v.as_bytes().to_vec());
            assert!(TaskSpec::from_fields(&f).is_err(), "{k}={v} accepted");
        }
        let mut f = fields(&[("module", SHA)]);
        f.0.insert("memory".into(), vec![0xff, 0xfe]);
        assert!(matches!(TaskSpec::from_fields(&f), Err(TaskDataError::Invalid { field: "memory", .. })));
    }

    #[test]
    fn record_parses_errors_array() {
        let id = TaskId::parse("q:1").unwrap();
        let f = fields(&[
            ("state", "dead"),
            ("module", SHA),
            ("err:10", r#"{"attempt":2,"kind":"timeout","message":"slow","at":"1735689600000"}"#),
            ("err:9", r#"{"attempt":1,"kind":"trap","message":"boom","at":5}"#),
            ("err:x", "junk"),
        ]);
        let r = TaskRecord::from_fields(&id, &f).unwrap();
        assert_eq!(r.state, TaskState::Dead);
        let kinds: Vec<_> = r.errors.iter().map(|e| (e.kind.as_str(), e.at)).collect();
        assert_eq!(kinds, [("trap", 5), ("timeout", 1_735_689_600_000)]);
        let none = TaskRecord::from_fields(&id, &fields(&[("state", "pending"), ("module", SHA)])).unwrap();
        assert_eq!(serde_json::to_value(&none).unwrap()["errors"], serde_json::json!([]));
        assert!(TaskRecord::from_fields(&id, &fields(&[("state", "weird")])).is_err());
    }
}

/// Property tests: task hashes written by anyone (bad types, huge numbers, binary junk) never
/// make the readers panic, and what they accept is valid.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const NAMES: &[&str] = &[
        field::MODULE,
        field::INPUT,
        field::PRIORITY,
        field::CREATED,
        field::STATE,
        field::MAX_ATTEMPTS,
        field::TIMEOUT_MS,
        field::MEMORY,
        field::FUEL,
        field::ATTEMPTS,
        "err:1",
        field::DURATION_US,
        field::EXIT_CODE,
        field::STARTED,
        field::FINISHED,
        field::DETERMINISTIC,
        field::LOG,
        field::OUTPUT,
        field::ALLOW_HOSTS,
        field::MAX_HTTP_REQUESTS,
        field::MAX_HTTP_RESPONSE_BYTES,
    ];

    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            any::<Vec<u8>>(),
            any::<i64>().prop_map(|n| n.to_string().into_bytes()),
            any::<u64>().prop_map(|n| n.to_string().into_bytes()),
            "[0-9a-f]{64}".prop_map(String::into_bytes),
            Just(b"succeeded".to_vec()),
            Just(b"[{\"attempt\":1}]".to_vec()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn readers_never_panic(pairs in proptest::collection::vec((0..NAMES.len(), value()), 0..12)) {
            let fields = Fields(pairs.into_iter().map(|(i, v)| (NAMES[i].to_string(), v)).collect());
            if let Ok(spec) = TaskSpec::from_fields(&fields) {
                prop_assert!(crate::parse::is_sha256_hex(&spec.module));
                prop_assert!(spec.limits.timeout.is_none_or(|t| !t.is_zero() && t <= crate::parse::MAX_DURATION));
                prop_assert!(spec.max_attempts.is_none_or(|m| m as u64 <= crate::queue::MAX_ATTEMPTS as u64));
            }
            let id = TaskId::parse("q:1").unwrap();
            let _ = TaskRecord::from_fields(&id, &fields);
        }

        #[test]
        fn flat_field_lists_of_any_shape_are_read(flat in proptest::collection::vec(any::<Vec<u8>>(), 0..9)) {
            let fields = Fields::from_flat(flat.clone());
            // Every pair with a UTF-8 name is kept (the last value wins), a trailing odd name is not.
            let mut expected = HashMap::new();
            for pair in flat.chunks_exact(2) {
                if let Ok(name) = String::from_utf8(pair[0].clone()) {
                    expected.insert(name, pair[1].clone());
                }
            }
            prop_assert_eq!(fields.0, expected);
        }
    }
}
