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
        // A stack overflow recurs with the same input on the same stack size: not retried.
        !matches!(
            self,
            Self::InvalidModule
                | Self::Integrity
                | Self::UnknownModule
                | Self::InvalidTask
                | Self::InputLimit
                | Self::Cancelled
                | Self::Permanent
                | Self::StackOverflow
        )
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

/// The one line of a failed task's log that says why it failed, for the failure's message (the
/// whole log is kept apart). Read from the end of the log, because that is where every runtime
/// puts the reason, and with what each language's runtime prints around it taken away:
///
/// - a Rust panic: `panicked at src/main.rs:10:5: MESSAGE` (its two lines joined);
/// - a Python traceback: its exception, `KeyError: 'threshold'`, rather than the traceback's
///   last frame or the panic that componentize-py's own runtime logs after it (`panicked at
///   runtime/src/lib.rs:…: Python function threw an unexpected exception`), which names the
///   interpreter's source, not the task's;
/// - otherwise the last line that is not a stack frame (JavaScript's `name@file:line:col` and
///   `at …` lines, Rust's backtrace) or a hint such as Rust's `RUST_BACKTRACE` note: a logged
///   JavaScript error followed by its stack gives `TypeError: …`.
///
/// Clipped to 300 characters; `None` when the log has nothing but those.
pub fn summarize_log(log: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let clip = |s: &str| -> String { s.trim().chars().take(300).collect() };
    let python = python_exception(&lines);
    if let Some(p) = lines.iter().rposition(|l| is_panic_header(l)) {
        // A Python exception before the last panic is what the interpreter panicked about.
        if let Some((exception, _)) = python.filter(|&(e, _)| e < p) {
            return Some(clip(lines[exception]));
        }
        let at = lines[p].split_once("panicked at ").map_or(lines[p], |(_, r)| r).trim();
        let message = lines.get(p + 1).map(|m| m.trim()).filter(|m| !m.is_empty() && !is_hint(m)).unwrap_or("");
        return Some(clip(&format!("panicked at {at} {message}")));
    }
    let last = lines.iter().rposition(|l| !l.trim().is_empty() && !is_hint(l) && !is_frame(l))?;
    match python {
        // The last line is the exception, or a further line of its message.
        Some((exception, end)) if (exception..=end).contains(&last) => Some(clip(lines[exception])),
        _ => Some(clip(lines[last])),
    }
}

/// `thread 'main' panicked at src/main.rs:10:5:`, the first line of a Rust panic (with or without
/// the thread).
fn is_panic_header(line: &str) -> bool {
    line.contains(" panicked at ") || line.starts_with("panicked at ")
}

/// What runtimes print after a failure that says nothing about it.
fn is_hint(line: &str) -> bool {
    let l = line.trim();
    l.starts_with("note: run with `RUST_BACKTRACE")
        || l.starts_with("note: Some details are omitted")
        || l == "stack backtrace:"
        || l == "Stack:"
        || l == "Stack trace:"
}

/// A line of a stack trace: JavaScript's `name@file.js:3:7` (SpiderMonkey, as componentize-js
/// prints `error.stack`) or an indented `at …` (V8, QuickJS, Rust's backtrace), or a numbered
/// frame of Rust's backtrace (`  12: main`).
fn is_frame(line: &str) -> bool {
    let indented = line.starts_with(char::is_whitespace);
    let l = line.trim();
    if indented && l.starts_with("at ") {
        return true;
    }
    if indented && l.split_once(": ").is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) {
        return true;
    }
    // name@file:line:col, with no spaces (the name may be empty).
    let mut tail = l.rsplitn(3, ':');
    let (col, row) = (tail.next().unwrap_or(""), tail.next().unwrap_or(""));
    let place = tail.next().unwrap_or("");
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !indented && place.contains('@') && !l.contains(char::is_whitespace) && number(row) && number(col)
}

/// The last Python traceback's exception: the index of its line (`KeyError: 'threshold'`, the
/// first unindented line after `Traceback (most recent call last):`) and of the last line of its
/// message (the lines up to the next empty line or panic).
fn python_exception(lines: &[&str]) -> Option<(usize, usize)> {
    let start = lines.iter().rposition(|l| l.trim_start() == "Traceback (most recent call last):")?;
    let exception = (start + 1..lines.len()).find(|&i| !lines[i].is_empty() && !lines[i].starts_with(char::is_whitespace))?;
    let end = (exception + 1..lines.len()).take_while(|&i| !lines[i].trim().is_empty() && !is_panic_header(lines[i])).last().unwrap_or(exception);
    Some((exception, end))
}

#[cfg(test)]
mod tests {
    use super::summarize_log;

    fn summary(log: &str) -> Option<String> {
        summarize_log(log.as_bytes())
    }

    /// componentize-py 0.25.1, a task whose `run` raised a KeyError: the traceback, then the
    /// panic of componentize-py's own runtime. (Before: "panicked at runtime/src/lib.rs:1293:29:
    /// Python function threw an unexpected exception".)
    #[test]
    fn a_python_exception_before_the_interpreters_panic_is_the_summary() {
        let log = "Traceback (most recent call last):\n  File \"/0/keyerror.py\", line 18, in run\nKeyError: 'threshold'\n\n\
                   thread '<unnamed>' (1) panicked at runtime/src/lib.rs:1293:29:\nPython function threw an unexpected exception\n\
                   note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(summary(log).as_deref(), Some("KeyError: 'threshold'"));
    }

    /// A traceback printed by the task (or CPython's own on exit), the last of two chained
    /// exceptions, with Python 3.11's position markers.
    #[test]
    fn a_tracebacks_exception_is_the_summary_not_its_last_frame() {
        let log = "loading settings\nTraceback (most recent call last):\n  File \"/app.py\", line 4, in load\n    return int(s)\n\
                   ValueError: invalid literal for int() with base 10: 'x'\n\n\
                   During handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  \
                   File \"/app.py\", line 9, in run\n    load(data)\n    ~~~~^^^^^^\n\
                   app.BadSettings: the settings are not numbers\nthey must be integers\n";
        assert_eq!(summary(log).as_deref(), Some("app.BadSettings: the settings are not numbers"));
        // A line logged after the traceback, apart from it, is the summary.
        assert_eq!(summary(&format!("{log}\ngiving up after 3 tries\n")).as_deref(), Some("giving up after 3 tries"));
    }

    /// A Rust task's panic (the Rust 1.95 format), as before: the place and the message.
    #[test]
    fn a_rust_panic_keeps_its_place_and_message() {
        let log = "counting\nthread 'main' (1) panicked at src/main.rs:12:9:\nindex out of bounds: the len is 3 but the index is 7\n\
                   note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(summary(log).as_deref(), Some("panicked at src/main.rs:12:9: index out of bounds: the len is 3 but the index is 7"));
        let log = "thread 'main' panicked at src/lib.rs:3:5:\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(summary(log).as_deref(), Some("panicked at src/lib.rs:3:5:"));
    }

    /// A JavaScript error logged with its stack (componentize-js 0.23 prints nothing for an
    /// uncaught error, so a task logs `${error}` and `error.stack`): SpiderMonkey's frames are
    /// skipped. V8's (Node-style) `at` lines too.
    #[test]
    fn a_javascript_error_is_the_summary_not_its_stack() {
        let log = "TypeError: can't access property \"value\", s.threshold is undefined\nwork@throw2.js:5:5\nrun@throw2.js:13:19\n\
                   export_run_0_2_12$run@/tmp/e257cb70f876/sources/initializer.js:14617:28\n\n";
        assert_eq!(summary(log).as_deref(), Some("TypeError: can't access property \"value\", s.threshold is undefined"));
        let log = "Error while running JS: Uncaught Error: no threshold\n    at work (task.js:4)\n    at run (task.js:9)\n";
        assert_eq!(summary(log).as_deref(), Some("Error while running JS: Uncaught Error: no threshold"));
        let log = "@task.js:1:1\n";
        assert_eq!(summary(log), None);
    }

    /// Anything else: the last line with something in it, as written (trimmed), clipped.
    #[test]
    fn otherwise_the_last_line_is_the_summary() {
        assert_eq!(summary("reading\n  cannot open config.json: no such file  \n\n").as_deref(), Some("cannot open config.json: no such file"));
        assert_eq!(summary("a line with an address user@example.com:25:1 in it").as_deref(), Some("a line with an address user@example.com:25:1 in it"));
        assert_eq!(summary("1: one\n2: two\n").as_deref(), Some("2: two"));
        assert_eq!(summary(""), None);
        assert_eq!(summary("\n \nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"), None);
        assert_eq!(summary(&"x".repeat(1000)).map(|s| s.chars().count()), Some(300));
        assert_eq!(summary("bad byte \u{fffd} kept\n").as_deref(), Some("bad byte \u{fffd} kept"));
    }
}
