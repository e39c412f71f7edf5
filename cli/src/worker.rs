//! `wasmq worker`: run an executor host until SIGINT/SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{Global, Outcome, exit, value};
use wasmq::queue::{MAX_ATTEMPTS, Retention};
use wasmq::sandbox::SandboxConfig;
use wasmq::worker::{
    DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, DEFAULT_GRACE, DEFAULT_LEASE, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_STALLS, DEFAULT_MAX_TIMEOUT,
    DEFAULT_PREFETCH_BYTES, DEFAULT_REAP_INTERVAL, MAX_CONCURRENCY, MAX_PREFETCH, QueueWeight, WorkerConfig,
};

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Queue to consume, with an optional weight: `--queue critical=6 --queue default=3 --queue low=1`.
    /// Repeatable. Default: `default`.
    #[arg(long, short)]
    pub queue: Vec<QueueWeight>,
    /// Take from the heaviest non-empty queue first, always (instead of in proportion to weights).
    #[arg(long)]
    pub strict: bool,
    /// Tasks run at once (default: the number of cores).
    #[arg(long, short)]
    pub concurrency: Option<usize>,
    /// Tasks claimed ahead of free run slots (default: adaptive, about 5 ms of work per slot,
    /// 1 to 1000; 0 claims only when a slot is free).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=MAX_PREFETCH as u64))]
    pub prefetch: Option<u64>,
    /// Most input bytes of the tasks held at once (running and prefetched); one task is always
    /// taken, whatever its size.
    #[arg(long, default_value = value::text_size(DEFAULT_PREFETCH_BYTES), value_parser = value::size)]
    pub prefetch_bytes: u64,
    /// Lease of a claimed task; extended every second while the worker lives.
    #[arg(long, default_value = value::text_duration(DEFAULT_LEASE), value_parser = value::positive_duration)]
    pub lease: Duration,
    /// How often expired leases of other workers are looked for.
    #[arg(long, default_value = value::text_duration(DEFAULT_REAP_INTERVAL), value_parser = value::positive_duration)]
    pub reap_interval: Duration,
    /// Deprecated: how long finished tasks are kept in queues without retention settings of
    /// their own. Set it per queue with `wasmq queue retention` instead (default: 7 days, and at
    /// most 100000 tasks per state).
    #[arg(long, value_parser = value::positive_duration)]
    pub retention: Option<Duration>,
    /// Attempts of tasks that did not set their own.
    #[arg(long, default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=MAX_ATTEMPTS as i64))]
    pub max_attempts: u32,
    /// Leases that may expire before a task was ever seen running (its worker died while it
    /// waited, or a claim reply was lost) before the task is dead. Not counted as attempts.
    #[arg(long, default_value_t = DEFAULT_MAX_STALLS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_stalls: u32,
    /// First retry delay; doubles with each attempt (with jitter).
    #[arg(long, default_value = value::text_duration(DEFAULT_BACKOFF_BASE), value_parser = value::duration)]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = value::text_duration(DEFAULT_BACKOFF_CAP), value_parser = value::duration)]
    pub backoff_cap: Duration,
    /// Limits of tasks that did not set their own (a task may set timeout, memory and fuel).
    #[command(flatten)]
    pub limits: super::SandboxLimitArgs,
    /// Largest timeout a task may ask for.
    #[arg(long, default_value = value::text_duration(DEFAULT_MAX_TIMEOUT), value_parser = value::positive_duration)]
    pub max_timeout: Duration,
    /// Largest memory a task may ask for.
    #[arg(long, default_value = value::text_size(wasmq::sandbox::DEFAULT_MAX_MEMORY), value_parser = value::size)]
    pub max_memory: u64,
    /// Largest task input this worker runs.
    #[arg(long, default_value = value::text_size(wasmq::client::DEFAULT_MAX_INPUT_SIZE), value_parser = value::size)]
    pub max_input_size: u64,
    /// Most children one task may spawn through the host API (their inputs together at most
    /// --max-input-size); 0 refuses every spawn.
    #[arg(long, default_value_t = wasmq::sandbox::host::DEFAULT_MAX_CHILDREN)]
    pub max_children: usize,
    /// Largest module this worker loads.
    #[arg(long, default_value = value::text_size(wasmq::store::DEFAULT_MAX_MODULE_SIZE), value_parser = value::size)]
    pub max_module_size: u64,
    /// On SIGTERM, time running tasks get to finish before they are stopped and handed back.
    #[arg(long, default_value = value::text_duration(DEFAULT_GRACE), value_parser = value::duration)]
    pub grace: Duration,
    /// Exit once every queue is empty and nothing runs.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Folder for precompiled artifacts.
    #[arg(long, env = "WASMQ_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Keep compiled modules in memory only.
    #[arg(long)]
    pub no_cache: bool,
    /// Compile without fuel metering (a little faster; tasks with a fuel budget then fail).
    #[arg(long)]
    pub no_metering: bool,
    /// Worker id in task hashes and logs (default: host-pid-random).
    #[arg(long)]
    pub id: Option<String>,
    /// Hosts this worker's tasks may send HTTP requests to, at most: the ceiling no task grant
    /// (`enqueue --allow-host`) can widen; a request needs both. Patterns as for --allow-host,
    /// comma-separated or repeated; `*` allows any public host a task is granted. Loopback,
    /// private, link-local and other non-public addresses are reached only through an IP or CIDR
    /// range here, never a host name (a metadata address only by itself). Default: none, no task
    /// makes any request.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = value::host_pattern)]
    pub allow_hosts: Vec<wasmq::http::HostPattern>,
    /// PEM file of CA certificates that tasks' HTTPS requests trust besides Mozilla's roots (for
    /// services behind a private CA).
    #[arg(long, value_name = "FILE")]
    pub http_ca: Option<PathBuf>,
    /// Most HTTP requests one attempt of a task makes (a task may ask for fewer); refused
    /// requests count too.
    #[arg(long, default_value_t = wasmq::http::DEFAULT_MAX_REQUESTS)]
    pub max_http_requests: u32,
    /// Most HTTP response body bytes one attempt of a task reads, all responses together (a task
    /// may ask for fewer).
    #[arg(long, default_value = value::text_size(wasmq::http::DEFAULT_MAX_RESPONSE_BYTES), value_parser = value::size)]
    pub max_http_response_bytes: u64,
    /// A secret its tasks may read through the host API's `config` where their queue is granted
    /// NAME (`wasmq config grant QUEUE NAME`): `NAME=@FILE`, the value read from FILE (one
    /// trailing newline dropped). Repeatable. The value never goes to Redis or the logs.
    #[arg(long, value_name = "NAME=@FILE", value_parser = secret)]
    pub secret: Vec<(String, String)>,
    /// Serve this worker's own metrics (results by outcome, busy and held tasks, run times,
    /// memory, CPU) in the Prometheus text format at http://ADDR/metrics, without a token: they
    /// show counts, never task data. Any address is taken (Prometheus scrapes over the network);
    /// port 0 picks a free one, printed on stdout. Default: not served.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `NAME=@FILE`, read now.
fn secret(s: &str) -> Result<(String, String), String> {
    let (name, file) = s.split_once("=@").ok_or("expected NAME=@FILE (the value comes from a file, so that it is not in the process list)")?;
    crate::config::check_name(name)?;
    let mut value = std::fs::read_to_string(file).map_err(|e| format!("cannot read the secret {name} from {file}: {e}"))?;
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok((name.to_string(), value))
}

impl WorkerArgs {
    pub fn config(&self) -> anyhow::Result<WorkerConfig> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let concurrency = self.concurrency.unwrap_or(cores).min(MAX_CONCURRENCY + 1);
        let mut queues = self.queue.clone();
        if queues.is_empty() {
            queues.push(wasmq::queue::DEFAULT_QUEUE.parse().map_err(anyhow::Error::msg)?);
        }
        if self.retention.is_some() {
            tracing::warn!("--retention is deprecated: set retention per queue with `wasmq queue retention`; it applies only to queues without settings");
        }
        let config = WorkerConfig {
            queues,
            strict: self.strict,
            concurrency,
            prefetch: self.prefetch.map(|p| p as usize),
            prefetch_bytes: self.prefetch_bytes,
            lease: self.lease,
            heartbeat: Duration::from_secs(1).min(self.lease / 3),
            reap_interval: self.reap_interval,
            retention: self.retention.map_or_else(Retention::default, Retention::with_age),
            max_attempts: self.max_attempts,
            max_stalls: self.max_stalls,
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            default_limits: self.limits.limits(),
            max_timeout: self.max_timeout,
            max_input_size: self.max_input_size,
            max_children: self.max_children,
            max_module_size: self.max_module_size,
            sandbox: SandboxConfig {
                max_concurrency: concurrency,
                max_memory: self.max_memory,
                max_stack: self.limits.stack_size as usize,
                max_table_elements: self.limits.max_table_elements(),
                cache_dir: if self.no_cache { None } else { self.cache_dir.clone().or_else(wasmq::sandbox::default_cache_dir) },
                metering: !self.no_metering,
                pooling: true,
                http: http_config(self.allow_hosts.clone(), self.http_ca.as_deref(), self.max_http_requests, self.max_http_response_bytes)?,
            },
            grace: self.grace,
            exit_when_idle: self.exit_when_idle,
            worker_id: self.id.clone().unwrap_or_else(wasmq::worker::default_worker_id),
            secrets: wasmq::worker::Secrets(self.secret.iter().cloned().collect()),
        };
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(config)
    }
}

/// The HTTP settings of `worker` and `run`: a ceiling, a private CA, caps.
pub fn http_config(
    allow: Vec<wasmq::http::HostPattern>,
    ca: Option<&std::path::Path>,
    max_requests: u32,
    max_response_bytes: u64,
) -> anyhow::Result<wasmq::http::HttpConfig> {
    let mut http = wasmq::http::HttpConfig::new(wasmq::http::AllowList::new(allow));
    if let Some(ca) = ca {
        http = http.with_ca_file(ca)?;
    }
    http.max_requests = max_requests;
    http.max_response_bytes = max_response_bytes;
    Ok(http)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let term_fut = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term_fut => tracing::info!("SIGTERM received"),
    }
}

pub async fn run(g: &Global, a: WorkerArgs) -> Outcome {
    let config = a.config()?;
    let redis = g.redis()?;
    let handle = wasmq::worker::WorkerHandle::new();
    // Bound before the worker starts, so that a taken port fails at once; stopped with the worker.
    let metrics = match a.metrics_listen {
        Some(addr) => Some(serve_metrics(addr, handle.clone()).await?),
        None => None,
    };
    let report = wasmq::worker::run_with(redis, g.db()?, config, shutdown_signal(), &handle).await;
    if let Some(m) = metrics {
        m.abort();
    }
    tracing::debug!(report = ?report?, "done");
    Ok(exit::OK)
}

/// Starts the worker's `/metrics` server on `addr` (see `wasmq_serve::worker_metrics`).
async fn serve_metrics(addr: std::net::SocketAddr, handle: wasmq::worker::WorkerHandle) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?;
    let bound = listener.local_addr()?;
    // The address actually bound (with port 0, the one the OS chose): tests and scripts read it.
    println!("metrics on http://{bound}/metrics");
    tracing::info!("worker metrics on http://{bound}/metrics");
    let app = wasmq_serve::worker_metrics::router(handle);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    }))
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `wasmq workers`: the registry of live workers.
pub async fn list(g: &Global, a: WorkersArgs) -> Outcome {
    let client = g.client().await?;
    let workers = client.workers().await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(exit::OK);
    }
    if workers.is_empty() {
        eprintln!("no live workers");
        return Ok(exit::OK);
    }
    let now = wasmq::parse::now_ms();
    let mut t = super::table::Table::new(&["WORKER", "HOST", "PID", "VERSION", "QUEUES", "BUSY", "HELD", "SUCCEEDED", "FAILED", "UP"]);
    for w in &workers {
        t.row(vec![
            w.id.clone(),
            w.host.clone(),
            w.pid.to_string(),
            w.version.clone(),
            w.queues.join(","),
            format!("{}/{}", w.busy, w.concurrency),
            w.held.to_string(),
            w.succeeded.to_string(),
            w.failed.to_string(),
            humantime_secs(now.saturating_sub(w.started_ms) / 1000),
        ]);
    }
    print!("{}", t.render());
    Ok(exit::OK)
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`: how long a worker has been up.
fn humantime_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}
