//! `wasmq replay ID`: run a task again where you sit, with no worker involved: its module from
//! the store (hash checked), its input (for an `--input-from-after` task, its parents' outputs as
//! the worker would build them), under the limits a failed attempt recorded it ran with, through
//! `wasmq run`, whose output and exit codes it keeps.
//!
//! Host calls behave safely: `spawn` lists what would be spawned and enqueues nothing, `config`
//! sees the queue's values but no secret, HTTP is denied unless `--allow-host` grants it here.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::run::RunArgs;
use super::{Global, Outcome, SandboxLimitArgs, exit};
use wasmq::queue::task::{RanLimits, field};
use wasmq::queue::{TaskId, TaskSpec};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The task (`QUEUE:N`).
    #[arg(value_parser = super::value::task_id)]
    pub id: TaskId,
    /// Fixed clocks and seeded randomness (whatever the task asked for).
    #[arg(long)]
    pub deterministic: bool,
    /// A host the task may send HTTP requests to here: HOST[:PORT], repeatable. Without it every
    /// request is denied, whatever the task was granted.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]", value_delimiter = ',', value_parser = super::value::host_pattern)]
    pub allow_host: Vec<wasmq::http::HostPattern>,
    /// Folder for precompiled artifacts (default: $WASMQ_CACHE_DIR, $XDG_CACHE_HOME/wasmq or ~/.cache/wasmq).
    #[arg(long, env = "WASMQ_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub async fn replay(g: &Global, a: ReplayArgs) -> Outcome {
    let client = g.client().await?;
    let Some(f) = client.db().task_fields(&mut client.conn(), &a.id).await? else {
        eprintln!("error: unknown task {}", a.id);
        return Ok(exit::UNKNOWN_TASK);
    };
    let spec = TaskSpec::from_fields(&f).with_context(|| format!("task {} cannot be replayed", a.id))?;
    let binary = client.store().fetch(&spec.module).await.with_context(|| format!("cannot fetch the module of task {}", a.id))?;
    let name = client.store().names_of(&spec.module).await?.into_iter().next().unwrap_or_else(|| "task".into());
    let input = if spec.input_from.is_empty() {
        spec.input.clone()
    } else {
        let outputs = client.db().outputs(&mut client.conn(), &a.id.queue, &spec.input_from).await?;
        wasmq::queue::task::embed_outputs_array(&outputs)
    };
    let recorded: Option<RanLimits> = f.bytes(field::LIMITS).and_then(|b| serde_json::from_slice(b).ok());
    let d = wasmq::sandbox::Limits::default();
    let limits = match &recorded {
        Some(r) => SandboxLimitArgs {
            timeout: std::time::Duration::from_millis(r.timeout_ms.max(1)),
            memory: r.memory,
            fuel: r.fuel,
            stdout_limit: r.stdout,
            stderr_limit: r.stderr,
            stack_size: r.stack,
            table_elements: r.table_elements as usize,
            deterministic: r.deterministic || a.deterministic,
        },
        None => SandboxLimitArgs {
            timeout: spec.limits.timeout.unwrap_or(d.timeout),
            memory: spec.limits.memory.unwrap_or(d.memory),
            fuel: spec.limits.fuel,
            stdout_limit: d.stdout as u64,
            stderr_limit: d.stderr as u64,
            stack_size: wasmq::sandbox::DEFAULT_MAX_STACK as u64,
            table_elements: d.table_elements,
            deterministic: spec.deterministic || a.deterministic,
        },
    };
    eprintln!(
        "[wasmq: replaying {} ({}, {}) under {}]",
        a.id,
        wasmq::text::escape_control(&name, false),
        &spec.module[..12],
        if recorded.is_some() { "the limits its last failed attempt ran with" } else { "the limits it asked for and this machine's defaults" }
    );
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    // The task is told its module's name, as a worker tells it.
    let file = dir.path().join(format!("{}.wasm", sanitize(&name)));
    std::fs::write(&file, &binary)?;
    let input_file = dir.path().join("input");
    std::fs::write(&input_file, &input)?;
    let config = client.config(&a.id.queue).await?.into_iter().collect();
    super::run::run(RunArgs {
        file,
        input: None,
        input_file: Some(input_file),
        limits,
        repeat: 1,
        cache_dir: a.cache_dir,
        no_cache: false,
        timing: false,
        config,
        allow_host: a.allow_host,
        http_ca: None,
        max_http_requests: spec.max_http_requests.unwrap_or(wasmq::http::DEFAULT_MAX_REQUESTS),
        max_http_response_bytes: spec.max_http_response_bytes.unwrap_or(wasmq::http::DEFAULT_MAX_RESPONSE_BYTES),
    })
    .await
}

/// A module name as a file name (names are already restricted; this keeps it so).
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}
