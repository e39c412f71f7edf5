//! `wasmq map`, and what `status`, `result` and `cancel` do with a flow's id.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{Global, Outcome, exit, value};
use wasmq::client::{Client, FlowOutput};
use wasmq::queue::{FlowRecord, FlowState, ParentFailure, QueueName, TaskId};
use wasmq::text::escape_control;

use wasmq::client::{DEFAULT_FAN_IN, MAX_FAN_IN};

#[derive(Debug, Args)]
pub struct MapArgs {
    /// Module of the children (name or hash): one child per input line.
    pub module: String,
    /// JSON-lines file: one child task per line (blank lines skipped).
    #[arg(long)]
    pub inputs_file: PathBuf,
    /// Module of the reducer (name or hash): it runs after the children and reads their outputs
    /// as a JSON array, in input order. It must accept its own output type too: with more than
    /// --reduce-fan-in children the reduction runs as a tree of reducers.
    #[arg(long)]
    pub reduce: Option<String>,
    /// Most outputs one reducer reads.
    #[arg(long, default_value_t = DEFAULT_FAN_IN, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=MAX_FAN_IN as u64))]
    pub reduce_fan_in: usize,
    /// Queue of the flow and all its tasks.
    #[arg(long, short, default_value = wasmq::queue::DEFAULT_QUEUE, value_parser = value::queue)]
    pub queue: QueueName,
    /// Priority of every task of the flow.
    #[arg(long, short, default_value = "0", allow_hyphen_values = true, value_parser = value::priority)]
    pub priority: i64,
    /// A dead child: `block` (the flow fails; `dead retry` of the child resumes it), `cancel`
    /// (its reducer is cancelled and the flow fails) or `ignore` (the reducer gets null in its
    /// place and the flow can succeed).
    #[arg(long, default_value = "block")]
    pub on_child_failure: ParentFailure,
    #[command(flatten)]
    pub limits: super::TaskLimitArgs,
    /// Every task of the flow (children and reducers) still waiting after this is finished as
    /// `expired` and never runs: a duration from now or an RFC 3339 time. Default: never.
    #[arg(long, value_name = "DUR|TIME", value_parser = value::expires)]
    pub expires: Option<wasmq::parse::Expires>,
    /// The group of every task of the flow (children and reducers): see `enqueue --group`.
    #[arg(long, value_name = "KEY", value_parser = value::group)]
    pub group: Option<wasmq::queue::GroupKey>,
    /// The HTTP grant of every task of the flow (children and reducers).
    #[command(flatten)]
    pub http: super::HttpGrantArgs,
    /// Wait for the flow to finish and print its result (with a progress bar on a terminal).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits at most (`--timeout` is the tasks' own).
    #[arg(long, default_value = "1h", value_parser = value::duration, requires = "wait")]
    pub wait_timeout: Duration,
    /// Largest input of one child.
    #[arg(long, default_value = value::text_size(wasmq::client::DEFAULT_MAX_INPUT_SIZE), value_parser = value::size)]
    pub max_input_size: u64,
}

pub async fn map(g: &Global, a: MapArgs) -> Outcome {
    let (inputs, _) = super::enqueue::read_inputs_file(&a.inputs_file)?;
    let mut client = g.client().await?;
    client.set_max_input_size(a.max_input_size);
    let mut o = a.limits.options(a.queue.clone(), a.priority);
    o.expires = a.expires;
    o.group = a.group.clone();
    a.http.apply(&mut o);
    let flow = client.map(&a.module, &inputs, a.reduce.as_deref(), a.reduce_fan_in, a.on_child_failure, &o).await.context("the map was not created")?;
    if !a.wait {
        println!("{flow}");
        return Ok(exit::OK);
    }
    // Without a terminal, nothing but the result.
    if std::io::stderr().is_terminal() {
        eprintln!("flow {flow}: {} children{}", inputs.len(), a.reduce.as_ref().map(|_| ", reduced").unwrap_or_default());
    }
    finish(&client, &flow, true, a.wait_timeout).await
}

/// Waits (with `wait`) for a flow and prints its result; the exit code says how it ended.
pub async fn finish(client: &Client, id: &TaskId, wait: bool, timeout: Duration) -> Outcome {
    let record = if wait { wait_with_progress(client, id, timeout).await? } else { client.flow(id).await? };
    let Some(f) = record else {
        eprintln!("error: unknown task or flow {id}");
        return Ok(exit::UNKNOWN_TASK);
    };
    match f.state {
        FlowState::Succeeded => {
            let out = match client.flow_output(&f).await? {
                FlowOutput::Reduced(b) | FlowOutput::Children(b) => b,
            };
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out)?;
            stdout.flush()?;
            Ok(exit::OK)
        }
        FlowState::Failed => {
            eprintln!("error: flow {id} failed: {} dead task(s); see `wasmq status {id}`", f.dead);
            Ok(exit::TASK_FAILED)
        }
        FlowState::Cancelled => {
            eprintln!("error: flow {id} was cancelled");
            Ok(exit::CANCELLED)
        }
        s => {
            eprintln!("flow {id} is {}{}", s.as_str(), if wait { " (timed out waiting)" } else { "" });
            Ok(exit::NOT_FINISHED)
        }
    }
}

/// Waits for a flow, drawing a progress bar of its members on stderr when stderr is a terminal
/// (nothing otherwise).
async fn wait_with_progress(client: &Client, id: &TaskId, timeout: Duration) -> anyhow::Result<Option<FlowRecord>> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} tasks {msg} (eta {eta})")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let f = client
        .wait_flow(id, timeout, |f| {
            if let Some(bar) = &bar {
                bar.set_length(f.children + f.reducers);
                bar.set_position(f.succeeded + f.dead + f.cancelled);
                bar.set_message(format!("({} running, {} failed)", f.active, f.dead));
            }
        })
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(f)
}

/// `status FLOW`.
pub async fn status(client: &Client, id: &TaskId, json: bool) -> Outcome {
    let Some(f) = client.flow(id).await? else {
        eprintln!("error: unknown task or flow {id} (never enqueued, or its result expired)");
        return Ok(exit::UNKNOWN_TASK);
    };
    // Finding the dead reads every member: only when there are some.
    let dead = if f.dead > 0 { client.flow_dead(id, 20).await? } else { Vec::new() };
    if json {
        let mut v = serde_json::to_value(&f)?;
        v["kind"] = "flow".into();
        v["dead_tasks"] = dead.iter().map(|(t, k, e)| serde_json::json!({"id": t.to_string(), "error_kind": k, "error": e})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<12}{}", "flow", f.id);
        println!("{:<12}{}", "state", f.state.as_str());
        println!("{:<12}{} children, {} reducers; on a dead child: {}", "tasks", f.children, f.reducers, f.policy.as_str());
        println!(
            "{:<12}{} succeeded, {} dead, {} cancelled, {} running, {} waiting",
            "progress",
            f.succeeded,
            f.dead,
            f.cancelled,
            f.active,
            f.unfinished().saturating_sub(f.active)
        );
        if let Some(r) = &f.root {
            println!("{:<12}{r}", "reducer");
        }
        for (t, k, e) in &dead {
            println!("{:<12}{t}: {}: {}", "dead", escape_control(k, false), escape_control(e, false));
        }
    }
    Ok(match f.state {
        FlowState::Succeeded => exit::OK,
        FlowState::Failed => exit::TASK_FAILED,
        FlowState::Cancelled => exit::CANCELLED,
        _ => exit::NOT_FINISHED,
    })
}

/// `cancel FLOW`.
pub async fn cancel(client: &Client, id: &TaskId) -> Outcome {
    match client.flow(id).await? {
        None => {
            eprintln!("error: unknown task or flow {id}");
            Ok(exit::UNKNOWN_TASK)
        }
        Some(f) if f.state.is_finished() => {
            eprintln!("error: flow {id} already finished ({})", f.state.as_str());
            Ok(exit::ERROR)
        }
        Some(_) => {
            let (cancelled, stopping) = client.cancel_flow(id).await?;
            println!("flow {id} cancelled: {cancelled} task(s) cancelled, {stopping} running task(s) being stopped");
            Ok(exit::OK)
        }
    }
}
