//! `wasmq status`, `wasmq result`, `wasmq cancel`.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::{Global, Outcome, exit, value};
use wasmq::parse;
use wasmq::queue::CancelOutcome;
use wasmq::queue::TaskId;
use wasmq::queue::{TaskRecord, TaskState};
use wasmq::text::escape_control;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Task id (QUEUE:NUMBER, as printed by enqueue).
    #[arg(value_parser = value::task_id)]
    pub id: TaskId,
    /// Print JSON (the output is included as text when it is UTF-8).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    /// Task id.
    #[arg(value_parser = value::task_id)]
    pub id: TaskId,
    /// Wait for the task to finish.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits at most.
    #[arg(long, default_value = "60s", value_parser = value::duration, requires = "wait")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Task id.
    #[arg(value_parser = value::task_id)]
    pub id: TaskId,
}

/// The exit code that tells how a task stands.
pub fn code_for(state: TaskState) -> u8 {
    match state {
        TaskState::Succeeded => exit::OK,
        TaskState::Dead => exit::TASK_FAILED,
        TaskState::Cancelled => exit::CANCELLED,
        TaskState::Expired => exit::EXPIRED,
        TaskState::Pending | TaskState::Delayed | TaskState::Blocked | TaskState::Active => exit::NOT_FINISHED,
    }
}

fn unknown(id: &TaskId) -> u8 {
    eprintln!("error: unknown task {id} (never enqueued, or its result expired)");
    exit::UNKNOWN_TASK
}

pub async fn status(g: &Global, a: StatusArgs) -> Outcome {
    let client = g.client().await?;
    let Some(r) = client.status(&a.id).await? else { return super::flow::status(&client, &a.id, a.json).await };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", describe(&r));
    }
    Ok(code_for(r.state))
}

/// The human view of a task. Every value is escaped (task output, log and errors are the task's
/// own text; every other field could have been written into Redis by hand): one `key value` line
/// per field, and the log's lines indented under it, so nothing can forge a line.
fn describe(r: &TaskRecord) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<12}{}\n", escape_control(&v, false)));
    line("id", r.id.clone());
    line("state", r.state.to_string());
    line("module", if r.module_names.is_empty() { r.module.clone() } else { format!("{} ({})", r.module, r.module_names.join(", ")) });
    line("priority", r.priority.to_string());
    if let Some(g) = &r.group {
        line("group", g.clone());
    }
    line("attempts", format!("{}{}", r.attempts, r.max_attempts.map(|m| format!(" of {m}")).unwrap_or_default()));
    line("enqueued", parse::format_ms(r.created_ms));
    if let Some(d) = r.due_ms {
        line("due", parse::format_ms(d));
    }
    if let Some(d) = r.expires_ms {
        line("expires", parse::format_ms(d));
    }
    if let Some(w) = &r.waiting_on {
        line("waiting", w.replace('_', " "));
    }
    if !r.spawned.is_empty() {
        line("spawned", id_list(&r.spawned));
    }
    if !r.after.is_empty() {
        line("after", id_list(&r.after));
    }
    if let Some(f) = &r.flow {
        line("flow", f.clone());
    }
    for p in &r.blocked_on {
        line("blocked on", format!("{} ({})", p.id, p.state.map_or("gone", |s| s.as_str())));
    }
    if let Some(hosts) = &r.allow_hosts {
        line("http hosts", hosts.clone());
    }
    if let Some(why) = &r.cancel_reason {
        line("cancelled", why.clone());
    }
    if let Some(t) = r.claimed_ms.filter(|_| r.started_ms.is_none() && r.state == wasmq::queue::task::TaskState::Active) {
        line("claimed", format!("{} (waiting for a run slot)", parse::format_ms(t)));
    }
    if let Some(t) = r.started_ms {
        line("started", parse::format_ms(t));
    }
    if let Some(p) = &r.progress {
        line("progress", format!("{:.0}%{}", p.fraction * 100.0, if p.message.is_empty() { String::new() } else { format!(" {}", p.message) }));
    }
    if let Some(t) = r.finished_ms {
        line("finished", parse::format_ms(t));
    }
    if let Some(d) = r.duration_us {
        line("duration", format!("{:.3} ms", d as f64 / 1000.0));
    }
    if let Some(w) = &r.worker {
        line("worker", w.clone());
    }
    if let Some(f) = r.fuel_used {
        line("fuel used", f.to_string());
    }
    if let Some(c) = r.exit_code {
        line("exit code", c.to_string());
    }
    if let (Some(k), Some(e)) = (&r.error_kind, &r.error) {
        line("error", format!("{k}: {e}"));
    }
    for e in &r.errors {
        line("  attempt", format!("{}: {}: {}", e.attempt, e.kind, e.message));
    }
    if r.stalls > 0 {
        line("stalls", format!("{} (leases that expired before the task ran; not attempts)", r.stalls));
    }
    if r.cancel_requested && !r.state.is_finished() {
        line("cancel", "requested".into());
    }
    line("input", format!("{} bytes", r.input_bytes));
    if let Some(n) = r.output_bytes {
        let preview = r.output_text.as_deref().map(|t| format!(": {}", t.chars().take(200).collect::<String>()));
        line("output", format!("{n} bytes{}", preview.unwrap_or_default()));
    }
    if let Some(l) = &r.log
        && !l.is_empty()
    {
        // Multi-line: its newlines stay (indented under `log`), everything else is escaped.
        let t: String = l.chars().take(500).collect();
        let t = escape_control(t.trim_end(), true);
        s.push_str(&format!("{:<12}{}{}\n", "log", t.replace('\n', "\n            "), if r.log_truncated { " [truncated]" } else { "" }));
    }
    s
}

pub async fn result(g: &Global, a: ResultArgs) -> Outcome {
    let client = g.client().await?;
    if client.status(&a.id).await?.is_none() && client.flow(&a.id).await?.is_some() {
        return super::flow::finish(&client, &a.id, a.wait, a.timeout).await;
    }
    let record = if a.wait { client.wait(&a.id, a.timeout).await? } else { client.status(&a.id).await? };
    let Some(r) = record else { return Ok(unknown(&a.id)) };
    match r.state {
        TaskState::Succeeded => {
            let mut out = std::io::stdout().lock();
            out.write_all(r.output_raw.as_deref().unwrap_or_default())?;
            out.flush()?;
        }
        // Stdout above is the raw contract; this line is for a person, so the task's text in it is
        // escaped.
        TaskState::Dead => eprintln!(
            "error: task {} failed after {} attempt(s): {}: {}",
            r.id,
            r.attempts,
            escape_control(r.error_kind.as_deref().unwrap_or("error"), false),
            escape_control(r.error.as_deref().unwrap_or("no message"), false)
        ),
        TaskState::Cancelled => eprintln!("error: task {} was cancelled", r.id),
        TaskState::Expired => eprintln!("error: task {} expired before it ran", r.id),
        s => eprintln!("task {} is {s}{}", r.id, if a.wait { " (timed out waiting)" } else { "" }),
    }
    Ok(code_for(r.state))
}

pub async fn cancel(g: &Global, a: CancelArgs) -> Outcome {
    let client = g.client().await?;
    match client.cancel(&a.id).await? {
        CancelOutcome::Cancelled => {
            println!("{} cancelled", a.id);
            Ok(exit::OK)
        }
        CancelOutcome::Requested => {
            println!("{} is running; its worker will stop it", a.id);
            Ok(exit::OK)
        }
        CancelOutcome::AlreadyFinished(s) => {
            eprintln!("error: task {} already finished ({s})", a.id);
            Ok(exit::ERROR)
        }
        CancelOutcome::Unknown => super::flow::cancel(&client, &a.id).await,
    }
}

/// Task ids for `status` (parents, spawned children): all of a few, the count and the first five
/// of many.
fn id_list(ids: &[String]) -> String {
    match ids {
        [] => String::new(),
        [a, b, c, d, e, ..] if ids.len() > 5 => format!("{} tasks: {a}, {b}, {c}, {d}, {e}, …", ids.len()),
        _ => ids.join(", "),
    }
}
