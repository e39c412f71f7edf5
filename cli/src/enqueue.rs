//! `wasmq enqueue MODULE`: one task, or one per line of a JSON-lines file.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;

use super::{Global, Outcome, exit, value};
use wasmq::client::{ClientError, EnqueueOptions};
use wasmq::queue::QueueName;

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Module name or hash.
    pub module: String,
    /// Read the input from stdin.
    #[arg(value_name = "-", num_args = 0..=1, value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    pub stdin: Option<String>,
    /// The task's input.
    #[arg(long, conflicts_with_all = ["input_file", "inputs_file", "stdin"])]
    pub input: Option<String>,
    /// Read the task's input from a file.
    #[arg(long, conflicts_with_all = ["inputs_file", "stdin"])]
    pub input_file: Option<PathBuf>,
    /// Enqueue one task per line of a JSON-lines file (blank lines skipped); every line is checked
    /// before anything is enqueued. Prints one id per line.
    #[arg(long, conflicts_with = "stdin")]
    pub inputs_file: Option<PathBuf>,
    /// Priority: higher runs first; FIFO within one priority (-1000000..=1000000).
    #[arg(long, short, default_value = "0", allow_hyphen_values = true, value_parser = value::priority)]
    pub priority: i64,
    /// Queue.
    #[arg(long, short, default_value = wasmq::queue::DEFAULT_QUEUE, value_parser = value::queue)]
    pub queue: QueueName,
    #[command(flatten)]
    pub limits: super::TaskLimitArgs,
    #[command(flatten)]
    pub http: super::HttpGrantArgs,
    /// Run no earlier than this long from now.
    #[arg(long, value_parser = value::duration, conflicts_with = "at")]
    pub delay: Option<Duration>,
    /// Run no earlier than this time (RFC 3339 or Unix seconds).
    #[arg(long, value_parser = value::time)]
    pub at: Option<SystemTime>,
    /// A task still waiting (pending, delayed or blocked) after this is finished as `expired`
    /// and never runs (`result` exits 7): a duration from now (30s, 5m; a bare number is seconds)
    /// or an RFC 3339 time. Default: never.
    #[arg(long, value_name = "DUR|TIME", value_parser = value::expires)]
    pub expires: Option<wasmq::parse::Expires>,
    /// The task's group: a tenant, a customer, a device. Workers take tasks round-robin across
    /// the groups of a queue, so that a group with many tasks does not hold up one with few, and
    /// `queue limit --group-concurrency/--group-rate` apply to each group on its own.
    #[arg(long, value_name = "KEY", value_parser = value::group)]
    pub group: Option<wasmq::queue::GroupKey>,
    /// While a task with this key is queued or running, return its id instead of adding a task.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Hold the unique key at most this long.
    #[arg(long, value_parser = value::positive_duration, requires = "unique_key")]
    pub unique_for: Option<Duration>,
    /// Expected run time, for the wsjf policy (default: learned from the module's runs).
    #[arg(long, value_parser = value::positive_duration)]
    pub estimate: Option<Duration>,
    /// Fixed clocks and seeded randomness.
    #[arg(long)]
    pub deterministic: bool,
    /// Wait until the task is fsynced to the AOF or on a replica before printing its id.
    #[arg(long)]
    pub durable: bool,
    /// Run only after these tasks (ids in this task's queue, comma-separated or repeated) have
    /// all succeeded; until then the task is `blocked`.
    #[arg(long, value_delimiter = ',', value_parser = value::task_id)]
    pub after: Vec<wasmq::queue::TaskId>,
    /// What a dead parent does: `block` (the task waits; `dead retry` of the parent lets it go
    /// on) or `cancel` (the task is cancelled, reason `parent_dead`). A cancelled parent always
    /// cancels the task.
    #[arg(long, default_value = "block", requires = "after")]
    pub on_parent_failure: wasmq::queue::ParentFailure,
    /// The task's input is the JSON array of its parents' outputs, in the order of --after (valid
    /// JSON embedded as JSON, other UTF-8 as a string, anything else as {"base64": ...}).
    #[arg(long, requires = "after", conflicts_with_all = ["input", "input_file", "inputs_file", "stdin"])]
    pub input_from_after: bool,
    /// Largest input accepted.
    #[arg(long, default_value = value::text_size(wasmq::client::DEFAULT_MAX_INPUT_SIZE), value_parser = value::size)]
    pub max_input_size: u64,
}

pub(crate) fn read_limited(mut r: impl Read, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.by_ref().take(max.saturating_add(1)).read_to_end(&mut buf).with_context(|| format!("cannot read {what}"))?;
    if buf.len() as u64 > max {
        anyhow::bail!("{what} is larger than the limit of {max} bytes (--max-input-size)");
    }
    Ok(buf)
}

/// Splits a JSON-lines file into inputs, checking that every non-blank line is JSON; with each
/// input, its line index (0-based) in the file.
/// A JSON-lines file of task inputs (`--inputs-file`), every line checked: the inputs and the
/// file line of each.
pub(crate) fn read_inputs_file(p: &std::path::Path) -> anyhow::Result<(Vec<Vec<u8>>, Vec<usize>)> {
    let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
    let text = read_limited(f, 4 << 30, &p.display().to_string())?;
    json_lines(&text, &p.display().to_string())
}

pub(crate) fn json_lines(text: &[u8], source: &str) -> anyhow::Result<(Vec<Vec<u8>>, Vec<usize>)> {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for (i, line) in text.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            anyhow::bail!("{source} line {}: not valid JSON ({e}); nothing was enqueued", i + 1);
        }
        out.push(line.to_vec());
        lines.push(i);
    }
    if out.is_empty() {
        anyhow::bail!("{source} holds no input lines; nothing was enqueued");
    }
    Ok((out, lines))
}

/// Ranges of input positions as ranges of the file's line indices (blank lines between inputs of
/// one range are inside it: they were never inputs).
fn line_ranges(lines: &[usize], inputs: &[std::ops::Range<usize>]) -> Vec<std::ops::Range<usize>> {
    inputs.iter().filter(|r| !r.is_empty()).map(|r| lines[r.start]..lines[r.end - 1] + 1).collect()
}

pub async fn run(g: &Global, a: EnqueueArgs) -> Outcome {
    let mut options = EnqueueOptions {
        at: a.at,
        delay: a.delay,
        expires: a.expires,
        group: a.group.clone(),
        unique_key: a.unique_key.clone(),
        unique_for: a.unique_for,
        estimate: a.estimate,
        deterministic: a.deterministic,
        durable: a.durable,
        after: a.after.clone(),
        on_parent_failure: a.on_parent_failure,
        input_from_after: a.input_from_after,
        ..a.limits.options(a.queue.clone(), a.priority)
    };
    a.http.apply(&mut options);
    if let Some(p) = a.after.iter().find(|p| p.queue != a.queue) {
        eprintln!("error: parent {p} is not in queue {}: a task and its parents share one queue (use --queue {})", a.queue, p.queue);
        return Ok(exit::USAGE);
    }
    // Read and check all input before connecting: a bad input enqueues nothing.
    let bulk = a.inputs_file.as_deref().map(read_inputs_file).transpose()?;
    let single = if bulk.is_some() {
        None
    } else if let Some(t) = &a.input {
        Some(t.clone().into_bytes())
    } else if let Some(p) = &a.input_file {
        let f = std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        Some(read_limited(f, a.max_input_size, &p.display().to_string())?)
    } else if a.stdin.is_some() {
        Some(read_limited(std::io::stdin(), a.max_input_size, "stdin")?)
    } else {
        if !std::io::stdin().is_terminal() {
            tracing::debug!("stdin is not read without `-`; enqueueing an empty input");
        }
        Some(Vec::new())
    };
    let mut client = g.client().await?;
    client.set_max_input_size(a.max_input_size);
    if let Some((inputs, lines)) = bulk {
        let ids = match client.enqueue_bulk(&a.module, &inputs, &options).await {
            Ok(ids) => ids.into_iter().map(|e| e.id).collect::<Vec<_>>(),
            Err(ClientError::NotDurable { enqueued, reason }) => return not_durable(&enqueued, &reason),
            Err(ClientError::Partial { enqueued, missing, source }) => {
                // Exactly what did get queued goes to stdout, in input order, and the input lines
                // that did not are named, so that a rerun of just those lines enqueues nothing
                // twice.
                print_ids(&enqueued)?;
                eprintln!(
                    "error: {} task(s) enqueued (ids on stdout); input lines {} were not enqueued: {}",
                    enqueued.len(),
                    wasmq::client::ranges(&line_ranges(&lines, &missing)),
                    crate::one_line_error(&source)
                );
                return Ok(exit::ERROR);
            }
            Err(e) => return Err(e.into()),
        };
        print_ids(&ids)?;
        return Ok(exit::OK);
    }
    let e = match client.enqueue(&a.module, &single.unwrap_or_default(), &options).await {
        Ok(e) => e,
        Err(ClientError::NotDurable { enqueued, reason }) => return not_durable(&enqueued, &reason),
        Err(e @ ClientError::UnknownParent(_)) => {
            eprintln!("error: {e}");
            return Ok(exit::UNKNOWN_TASK);
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}", e.id);
    if !e.new {
        eprintln!("unique key {:?} is held by {}: no new task", a.unique_key.as_deref().unwrap_or(""), e.id);
    }
    Ok(exit::OK)
}

fn print_ids(ids: &[wasmq::queue::TaskId]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for id in ids {
        writeln!(out, "{id}")?;
    }
    Ok(())
}

/// The tasks are queued (their ids go to stdout as usual), but the command fails.
fn not_durable(ids: &[wasmq::queue::TaskId], reason: &str) -> Outcome {
    print_ids(ids)?;
    eprintln!("error: enqueued but not confirmed durable: {reason}");
    Ok(exit::ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_checks_every_line() {
        let (ok, lines) = json_lines(b"{\"a\":1}\n\n  \n[2]\r\n\"x\"", "f").unwrap();
        assert_eq!(lines, [0, 3, 4]);
        assert_eq!(wasmq::client::ranges(&line_ranges(&lines, &[1..3, 0..1])), "4-5, 1");
        assert_eq!(ok, vec![b"{\"a\":1}".to_vec(), b"[2]".to_vec(), b"\"x\"".to_vec()]);
        let err = json_lines(b"{\"a\":1}\n{oops\n", "f").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(json_lines(b"\n\n", "f").is_err());
    }

    proptest::proptest! {
        #[test]
        fn json_lines_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Ok((lines, _)) = json_lines(&bytes, "f") {
                for l in lines {
                    proptest::prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&l).is_ok());
                }
            }
        }
    }
}
