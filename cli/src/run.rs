//! `wasmq run FILE.wasm`: run a task locally, without Redis.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::{Outcome, exit};
use wasmq::sandbox::host::{DEFAULT_MAX_CHILDREN, DryRunBroker, SpawnOptions, Spawns};
use wasmq::sandbox::{CancelToken, Sandbox, SandboxConfig};
use wasmq::store::sha256_hex;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The task: a .wasm core module (WASI preview 1), a component (preview 2), or .wat text.
    pub file: PathBuf,
    /// The task's input (stdin of the task).
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the task's input from a file (`-` for stdin). Without --input or --input-file, stdin
    /// is used when it is not a terminal.
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    #[command(flatten)]
    pub limits: super::SandboxLimitArgs,
    /// Run the task N times (a fresh sandbox each time) and print timing statistics to stderr.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub repeat: u64,
    /// Folder for precompiled artifacts (default: $WASMQ_CACHE_DIR, $XDG_CACHE_HOME/wasmq or ~/.cache/wasmq).
    #[arg(long, env = "WASMQ_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every time; neither read nor write artifacts.
    #[arg(long)]
    pub no_cache: bool,
    /// Print how the module was loaded and how long the run took, to stderr.
    #[arg(long)]
    pub timing: bool,
    /// A value the task reads through the host API's `config` (as `wasmq config set` gives it on
    /// a queue): `KEY=VALUE`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = config_pair)]
    pub config: Vec<(String, String)>,
    /// A host the task may send HTTP requests to (components, through wasi:http): HOST[:PORT],
    /// repeatable or comma-separated. A local run has no worker ceiling: this list is both the
    /// grant and the ceiling, so an IP or CIDR range here reaches a loopback or private address
    /// (`--allow-host 127.0.0.1:8080`), a host name never does. Without it, every request is
    /// denied.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]", value_delimiter = ',', value_parser = super::value::host_pattern)]
    pub allow_host: Vec<wasmq::http::HostPattern>,
    /// PEM file of CA certificates that the task's HTTPS requests trust besides Mozilla's roots.
    #[arg(long, value_name = "FILE")]
    pub http_ca: Option<PathBuf>,
    /// Most HTTP requests of the run.
    #[arg(long, default_value_t = wasmq::http::DEFAULT_MAX_REQUESTS)]
    pub max_http_requests: u32,
    /// Most HTTP response body bytes of the run, all responses together.
    #[arg(long, default_value = super::value::text_size(wasmq::http::DEFAULT_MAX_RESPONSE_BYTES), value_parser = super::value::size)]
    pub max_http_response_bytes: u64,
}

fn read_input(a: &RunArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(t) = &a.input {
        return Ok(t.clone().into_bytes());
    }
    match &a.input_file {
        Some(p) if p.as_os_str() == "-" => read_stdin(),
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read input file {}", p.display())),
        None if !std::io::stdin().is_terminal() => read_stdin(),
        None => Ok(Vec::new()),
    }
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).context("cannot read stdin")?;
    Ok(buf)
}

pub async fn run(a: RunArgs) -> Outcome {
    let bytes = std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let input = read_input(&a)?;
    let (binary, _) = wasmq::sandbox::prepare(&bytes).with_context(|| format!("{} cannot be run", a.file.display()))?;
    let sha = sha256_hex(&binary);
    let config = SandboxConfig {
        max_concurrency: 1,
        max_memory: a.limits.memory.max(1 << 16),
        max_stack: a.limits.stack_size as usize,
        max_table_elements: a.limits.max_table_elements(),
        cache_dir: if a.no_cache { None } else { a.cache_dir.clone().or_else(wasmq::sandbox::default_cache_dir) },
        metering: true,
        pooling: true,
        http: super::worker::http_config(a.allow_host.clone(), a.http_ca.as_deref(), a.max_http_requests, a.max_http_response_bytes)?,
    };
    let sandbox = Sandbox::new(config)?;
    if let Some(w) = sandbox.artifact_warning() {
        tracing::warn!("{w}; compiling without a cache");
    }
    let module = {
        let sandbox = sandbox.clone();
        let sha = sha.clone();
        let binary = binary.into_owned();
        tokio::task::spawn_blocking(move || sandbox.load(&sha, &binary)).await?
    }
    .with_context(|| format!("{} cannot be run", a.file.display()))?;
    if a.timing || a.repeat > 1 {
        eprintln!(
            "module {} ({}): {} in {:.2} ms",
            &sha[..12],
            module.kind.as_str(),
            match module.source {
                wasmq::sandbox::LoadSource::Compiled => "compiled",
                wasmq::sandbox::LoadSource::Artifact => "loaded precompiled artifact",
            },
            module.load_time.as_secs_f64() * 1e3
        );
    }
    let limits = a.limits.limits();
    let name = a.file.file_stem().and_then(|s| s.to_str()).unwrap_or("task").to_string();
    let cancel = CancelToken::new();
    let spawns = Spawns::new(Arc::new(DryRunBroker::default()), DEFAULT_MAX_CHILDREN, wasmq::client::DEFAULT_MAX_INPUT_SIZE);
    let http = wasmq::http::HttpGrant { allow: wasmq::http::AllowList::new(a.allow_host.clone()), ..Default::default() };
    let host = wasmq::sandbox::TaskHost { config: Arc::new(a.config.iter().cloned().collect()), spawns: Some(spawns.clone()), http, ..Default::default() };
    let mut spawned = Vec::new();
    let mut samples = Vec::with_capacity(a.repeat.min(1_000_000) as usize);
    let mut outcome = None;
    for _ in 0..a.repeat {
        let t = Instant::now();
        let o = sandbox.run_with(&module, &name, input.clone(), &limits, &cancel, host.clone()).await;
        samples.push(t.elapsed());
        spawned = spawns.take();
        let failed = !o.is_success();
        outcome = Some(o);
        if failed {
            break;
        }
    }
    let outcome = outcome.expect("at least one run");
    // The output of a failed task is not its output (it may be cut off anywhere): like the worker,
    // which keeps no output for a failure, print it only on success. The log is shown either way.
    if outcome.is_success() {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&outcome.output)?;
        stdout.flush()?;
    }
    let mut stderr = std::io::stderr().lock();
    stderr.write_all(&outcome.log)?;
    if outcome.log_truncated {
        writeln!(stderr, "[wasmq: log truncated at {} bytes]", limits.stderr)?;
    }
    if a.repeat > 1 && samples.len() > 1 {
        writeln!(stderr, "{}", timing_summary(&mut samples))?;
    } else if a.timing {
        writeln!(stderr, "run: {:.1} µs{}", samples[0].as_secs_f64() * 1e6, outcome.fuel_used.map(|f| format!(", fuel used {f}")).unwrap_or_default())?;
    }
    if let Some(p) = host.progress.latest() {
        let message = if p.message.is_empty() { String::new() } else { format!(" {}", wasmq::text::escape_control(&p.message, false)) };
        writeln!(stderr, "[wasmq: last progress {:.0}%{message}]", p.fraction * 100.0)?;
    }
    if !spawned.is_empty() {
        let verb = if outcome.is_success() { "would enqueue" } else { "would not enqueue (the task failed)" };
        writeln!(stderr, "[wasmq: the task spawned {} children; a worker {verb} them:]", spawned.len())?;
        for c in &spawned {
            let name = wasmq::text::escape_control(&c.module, false);
            writeln!(stderr, "[wasmq:   {} {name}, {} input bytes{}]", c.id, c.input.len(), options_text(&c.options))?;
        }
    }
    match outcome.result {
        Ok(()) => Ok(exit::OK),
        Err(f) => {
            // The log above is the task's stderr as it wrote it (the raw contract of `run`); this
            // line is wasmq's, and the failure message quotes the task's last log line: escaped.
            writeln!(stderr, "error: task failed: {}", wasmq::text::escape_control(&f.to_string(), false))?;
            Ok(exit::TASK_FAILED)
        }
    }
}

/// `N runs: median X µs, p90 Y µs, p99 Z µs, min, mean` (the first run excluded when there are
/// many: it warms the pooling allocator's slots).
fn timing_summary(samples: &mut [Duration]) -> String {
    let total = samples.len();
    let body = if samples.len() > 10 { &mut samples[1..] } else { samples };
    body.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pct = |p: f64| us(body[((body.len() - 1) as f64 * p).round() as usize]);
    let mean = body.iter().map(|d| us(*d)).sum::<f64>() / body.len() as f64;
    format!("{total} runs: median {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, min {:.1} µs, mean {:.1} µs", pct(0.5), pct(0.9), pct(0.99), us(body[0]), mean)
}

/// A spawned child's options as `run` shows them (the set ones only).
fn options_text(o: &SpawnOptions) -> String {
    let mut parts = Vec::new();
    if let Some(p) = o.priority {
        parts.push(format!("priority {p}"));
    }
    if let Some(d) = o.delay_ms {
        parts.push(format!("delay {d} ms"));
    }
    if let Some(t) = o.timeout_ms {
        parts.push(format!("timeout {t} ms"));
    }
    if let Some(m) = o.max_attempts {
        parts.push(format!("max attempts {m}"));
    }
    parts.iter().map(|p| format!(", {p}")).collect()
}

/// `KEY=VALUE` of `--config`.
fn config_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    if k.is_empty() || k.len() > wasmq::sandbox::host::MAX_CONFIG_KEY {
        return Err(format!("a key is 1 to {} bytes", wasmq::sandbox::host::MAX_CONFIG_KEY));
    }
    Ok((k.to_string(), v.to_string()))
}
