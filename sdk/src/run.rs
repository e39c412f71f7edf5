//! The `main` that `#[task]` generates: stdin → decode → task → encode → stdout.
//!
//! [`execute`] holds every decision and does no I/O, so the whole contract (what goes to
//! stdout, what goes to stderr, which exit status) is unit tested natively; [`run`] only
//! connects it to the process's stdio and exit status.

use std::fmt::Display;
use std::io::{Read, Write};

use crate::codec::{Decode, Encode};
use crate::exit_code;

/// Everything a task run produces, before it is written out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for stdout; empty unless the task succeeded.
    pub stdout: Vec<u8>,
    /// A diagnostic line for stderr (newline included), empty on success.
    pub stderr: String,
    /// The process exit status, one of [`exit_code`]'s constants.
    pub code: i32,
}

impl Outcome {
    fn failure(code: i32, message: impl Display) -> Self {
        Outcome { stdout: Vec::new(), stderr: format!("{message:#}\n"), code }
    }
}

/// Runs `task` on `input` with the given codecs, without touching any real I/O.
///
/// Task errors are written with the alternate Display form (`{:#}`), which is the same
/// as `{}` for most types but makes `anyhow::Error` print its whole context chain.
pub fn execute<DI, EO, I, O, E>(input: Vec<u8>, task: impl FnOnce(I) -> Result<O, E>) -> Outcome
where
    DI: Decode<I>,
    EO: Encode<O>,
    E: Display,
{
    let value = match DI::decode(input) {
        Ok(value) => value,
        Err(e) => return Outcome::failure(exit_code::INVALID_INPUT, e),
    };
    let output = match task(value) {
        Ok(output) => output,
        Err(e) => return Outcome::failure(exit_code::FAILURE, e),
    };
    match EO::encode(output) {
        Ok(stdout) => Outcome { stdout, stderr: String::new(), code: exit_code::SUCCESS },
        Err(e) => Outcome::failure(exit_code::FAILURE, e),
    }
}

/// Reads all of stdin, runs the task, writes stdout or stderr, and exits the process.
pub fn run<DI, EO, I, O, E>(task: impl FnOnce(I) -> Result<O, E>) -> !
where
    DI: Decode<I>,
    EO: Encode<O>,
    E: Display,
{
    let mut input = Vec::new();
    let outcome = match std::io::stdin().lock().read_to_end(&mut input) {
        Ok(_) => execute::<DI, EO, I, O, E>(input, task),
        Err(e) => Outcome::failure(exit_code::FAILURE, format_args!("cannot read stdin: {e}")),
    };
    let code = match write_stdout(&outcome.stdout) {
        Ok(()) => outcome.code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "cannot write stdout: {e}");
            exit_code::FAILURE
        }
    };
    if !outcome.stderr.is_empty() {
        let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    }
    // A component's exit carries no number: input it cannot decode is a permanent failure
    // through the host API instead of status 2.
    #[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p2"))]
    if code == exit_code::INVALID_INPUT {
        crate::host::fail(outcome.stderr.trim_end());
    }
    std::process::exit(code)
}

fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    // `process::exit` skips destructors, so buffered output must be flushed explicitly.
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BytesCodec, JsonCodec, TextCodec};
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    #[derive(Deserialize)]
    struct Req {
        n: u32,
    }

    #[derive(Serialize)]
    struct Resp {
        doubled: u32,
    }

    fn double(req: Req) -> Result<Resp, String> {
        if req.n > 1000 {
            return Err(format!("n = {} is too large", req.n));
        }
        Ok(Resp { doubled: req.n * 2 })
    }

    #[test]
    fn success_writes_output_and_exits_zero() {
        let out = execute::<JsonCodec, JsonCodec, _, _, _>(br#"{"n": 21}"#.to_vec(), double);
        assert_eq!(out, Outcome { stdout: b"{\"doubled\":42}\n".to_vec(), stderr: String::new(), code: 0 });
    }

    #[test]
    fn task_error_goes_to_stderr_with_status_1() {
        let out = execute::<JsonCodec, JsonCodec, _, _, _>(br#"{"n": 5000}"#.to_vec(), double);
        assert_eq!(out.code, exit_code::FAILURE);
        assert_eq!(out.stderr, "n = 5000 is too large\n");
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn decode_error_names_input_type_with_status_2() {
        let mut called = false;
        let out = execute::<JsonCodec, JsonCodec, _, _, _>(b"{}".to_vec(), |r: Req| {
            called = true;
            double(r)
        });
        assert!(!called, "task must not run on invalid input");
        assert_eq!(out.code, exit_code::INVALID_INPUT);
        assert!(out.stdout.is_empty());
        assert_eq!(out.stderr, format!("invalid input: expected JSON for {}: missing field `n` at line 1 column 2\n", std::any::type_name::<Req>()));
    }

    #[test]
    fn encode_error_exits_1() {
        let out = execute::<TextCodec, JsonCodec, _, _, _>(b"x".to_vec(), |s: String| {
            let mut m = BTreeMap::new();
            m.insert((s, 1), 1);
            Ok::<_, Infallible>(m)
        });
        assert_eq!(out.code, exit_code::FAILURE);
        assert!(out.stderr.starts_with("cannot encode output "), "{}", out.stderr);
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn text_and_bytes_codecs_compose() {
        let out =
            execute::<TextCodec, BytesCodec, _, _, _>(b"abc".to_vec(), |s: String| Ok::<_, Infallible>(s.into_bytes().into_iter().rev().collect::<Vec<u8>>()));
        assert_eq!((out.stdout.as_slice(), out.code), (&b"cba"[..], 0));

        let out = execute::<TextCodec, TextCodec, _, _, _>(vec![0xc3], |s: String| Ok::<_, Infallible>(s));
        assert_eq!(out.code, exit_code::INVALID_INPUT);
        assert!(out.stderr.contains("expected UTF-8 text for alloc::string::String"), "{}", out.stderr);
    }

    #[test]
    fn error_uses_alternate_display() {
        struct Chain;
        impl Display for Chain {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                if f.alternate() { f.write_str("outer: inner cause") } else { f.write_str("outer") }
            }
        }
        let out = execute::<BytesCodec, BytesCodec, _, Vec<u8>, _>(vec![], |_: Vec<u8>| Err(Chain));
        assert_eq!(out.stderr, "outer: inner cause\n");
    }
}
