//! What running a task produced: a typed outcome with a failure kind that the queue uses to
//! decide between retrying and giving up.

use std::time::Duration;

/// Why a task attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The guest trapped (unreachable, out-of-bounds access, division by zero, stack overflow, ...).
    Trap,
    /// It ran past its wall-clock timeout.
    Timeout,
    /// It tried to grow memory (or a table) beyond its cap.
    MemoryLimit,
    /// It overflowed its call stack (the worker's `--stack-size`).
    StackOverflow,
    /// It wrote more to stdout than the output cap allows.
    OutputLimit,
    /// It ran out of fuel (instruction budget).
    FuelExhausted,
    /// It exited with a non-zero status (other than 2).
    ExitCode,
    /// It said its failure is permanent: exit status 2 (a core module; the SDK's status for input
    /// it cannot decode). Never retried: the same input fails the same way.
    Permanent,
    /// The bytes are not a runnable WASI command (bad wasm, missing `_start`, unknown imports).
    InvalidModule,
    /// The module's bytes in Redis do not match their hash.
    Integrity,
    /// The task names a module that is not in the store.
    UnknownModule,
    /// The task's hash has missing or malformed fields.
    InvalidTask,
    /// Its input is larger than the worker takes (`--max-input-size`), e.g. the outputs of its
    /// parents put together.
    InputLimit,
    /// It was cancelled while running.
    Cancelled,
    /// Its worker stopped reporting and the lease expired.
    LeaseExpired,
    /// Something on the host side failed (e.g. no free instance slot); not the task's fault.
    Internal,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trap => "trap",
            Self::Timeout => "timeout",
            Self::MemoryLimit => "memory_limit",
            Self::StackOverflow => "stack_overflow",
            Self::OutputLimit => "output_limit",
            Self::FuelExhausted => "fuel_exhausted",
            Self::ExitCode => "exit_code",
            Self::Permanent => "permanent",
            Self::InvalidModule => "invalid_module",
            Self::Integrity => "integrity",
            Self::UnknownModule => "unknown_module",
            Self::InvalidTask => "invalid_task",
            Self::InputLimit => "input_limit",
            Self::Cancelled => "cancelled",
            Self::LeaseExpired => "lease_expired",
            Self::Internal => "internal",
        }
    }

    /// Whether another attempt could succeed. A bad module, a tampered module, a missing module,
    /// malformed task data or a task that says so itself will fail the same way every time.
    pub fn retryable(self) -> bool {
        !matches!(self, Self::InvalidModule | Self::Integrity | Self::UnknownModule | Self::InvalidTask | Self::InputLimit | Self::Cancelled | Self::Permanent)
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed attempt: its kind and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // One line, bounded: messages go into result hashes and terminals.
        let mut line: String = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        if line.len() > 1000 {
            let mut cut = 1000;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push('…');
        }
        Self { kind, message: line }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Everything one run of a task produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `Ok` when the task exited with status 0.
    pub result: Result<(), Failure>,
    /// What it wrote to stdout (up to the cap; partial on failure).
    pub output: Vec<u8>,
    /// What it wrote to stderr, up to the log cap.
    pub log: Vec<u8>,
    /// True when the log was cut at the cap.
    pub log_truncated: bool,
    /// The exit status, when the task exited by itself.
    pub exit_code: Option<i32>,
    /// Wall-clock time from instantiation to exit.
    pub duration: Duration,
    /// Fuel consumed, when metering is on.
    pub fuel_used: Option<u64>,
}

impl Outcome {
    /// An outcome for a task that never ran (bad module, bad task data, ...).
    pub fn not_run(failure: Failure) -> Self {
        Self { result: Err(failure), output: Vec::new(), log: Vec::new(), log_truncated: false, exit_code: None, duration: Duration::ZERO, fuel_used: None }
    }

    pub fn is_success(&self) -> bool {
        self.result.is_ok()
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.result.as_ref().err()
    }
}
