//! The `wasmq` command line: argument definitions, logging set-up, exit codes and dispatch. Each
//! command's work lives in its own module; errors get context here, at the edge.

mod bench;
mod config;
mod demo;
mod enqueue;
mod flow;
mod module;
mod queue;
mod replay;
mod results;
mod run;
mod schedule;
mod serve;
mod split;
mod table;

pub(crate) use table::Table;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use wasmq::client::Client;
use wasmq::conn::{Redis, RedisOptions};

/// Exit codes, documented in the README.
pub mod exit {
    /// Success (for `result`/`status`: the task succeeded).
    pub const OK: u8 = 0;
    /// The command failed (bad input, Redis unreachable, ...); the reason is on stderr.
    pub const ERROR: u8 = 1;
    /// Invalid command-line usage.
    pub const USAGE: u8 = 2;
    /// No task has that id.
    pub const UNKNOWN_TASK: u8 = 3;
    /// The task has not finished (or `--wait` timed out).
    pub const NOT_FINISHED: u8 = 4;
    /// The task failed (dead after its last attempt, or `wasmq run` of a failing task).
    pub const TASK_FAILED: u8 = 5;
    /// The task was cancelled.
    pub const CANCELLED: u8 = 6;
    /// The task expired: still waiting when its `--expires` passed, it never ran.
    pub const EXPIRED: u8 = 7;
}

#[derive(Debug, Parser)]
#[command(
    name = "wasmq",
    version,
    about = "A distributed task runner for WebAssembly tasks on Redis",
    long_about = "A distributed task runner for WebAssembly tasks on Redis.\n\n\
        Push a task module (a WASI command: input on stdin, output on stdout) into Redis, enqueue \
        tasks that reference it, and run `wasmq worker` on any number of hosts: workers claim tasks \
        from the priority queue, run each in a fresh wasmtime sandbox and write the result into the \
        task's hash.\n\n\
        Exit codes: 0 success, 1 error, 2 usage, 3 unknown task, 4 not finished, 5 task failed, \
        6 task cancelled.",
    after_help = "Start with `wasmq demo`, or see README.md."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command that talks to Redis understands.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Connection and logging (every command)")]
pub struct Global {
    /// Redis to use: redis://[user:pass@]host:port[/db], rediss://... (TLS),
    /// redis+sentinel://host:port[,host:port]/MASTER, redis+cluster://host:port[,host:port].
    #[arg(long, global = true, env = "WASMQ_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of every Redis key (lets several deployments share one Redis).
    #[arg(long, global = true, env = "WASMQ_PREFIX", default_value = "wasmq")]
    pub prefix: String,
    /// PEM file with the CA certificate(s) for TLS (rediss://).
    #[arg(long, global = true, env = "WASMQ_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for TLS client authentication (with --tls-key).
    #[arg(long, global = true, env = "WASMQ_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "WASMQ_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// More log output (-v: info, -vv: debug); WASMQ_LOG=filter overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors in the log.
    #[arg(long, global = true)]
    pub quiet: bool,
}

impl Global {
    pub fn redis_options(&self) -> RedisOptions {
        let mut o = RedisOptions::new(&self.redis_url);
        o.tls_ca = self.tls_ca.clone();
        o.tls_cert = self.tls_cert.clone();
        o.tls_key = self.tls_key.clone();
        o
    }

    pub fn redis(&self) -> anyhow::Result<Redis> {
        Ok(Redis::open(self.redis_options())?)
    }

    pub fn db(&self) -> anyhow::Result<wasmq::queue::Db> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}', ' ', '*', '?', '[', ']']) {
            anyhow::bail!("invalid --prefix {:?}: use letters, digits, ':', '-', '_' or '.'", self.prefix);
        }
        let db = wasmq::queue::Db::new(&self.prefix);
        // For tests only: moves the clock the scripts see (see `Db::with_clock_offset`).
        match std::env::var("WASMQ_TEST_CLOCK_OFFSET_MS") {
            Ok(v) => Ok(db.with_clock_offset(v.parse().map_err(|_| anyhow::anyhow!("invalid WASMQ_TEST_CLOCK_OFFSET_MS {v:?}"))?)),
            Err(_) => Ok(db),
        }
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let redis = self.redis()?;
        let conn = redis.connect().await?;
        Ok(Client::with_conn(redis, conn, self.db()?))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a task module locally, without Redis: input from --input, --input-file or stdin; output
    /// to stdout, log to stderr.
    Run(run::RunArgs),
    /// Push, list and remove task modules in the Redis module store.
    #[command(subcommand)]
    Module(module::ModuleCommand),
    /// Enqueue a task (or many, from a JSON-lines file) for a module given by name or hash.
    Enqueue(enqueue::EnqueueArgs),
    /// Split text files into chunks cut at whitespace, one JSON line per chunk (`{"text": ...}`), for
    /// `enqueue --inputs-file`. Needs no Redis.
    Split(split::SplitArgs),
    /// Run an executor host: claim tasks, run them sandboxed, write their results.
    Worker(worker::WorkerArgs),
    /// The live workers: id, host, queues, busy slots, tasks done (an entry disappears within 5 s
    /// of its worker stopping or dying).
    Workers(worker::WorkersArgs),
    /// Map-reduce: one task per input line and, with --reduce, reducers over their outputs.
    Map(flow::MapArgs),
    /// Run a task again locally, with no worker: its module (hash checked), its input, the
    /// limits its last failed attempt ran with; output, log and exit codes as `wasmq run`.
    Replay(replay::ReplayArgs),
    /// Show a task's (or a flow's) state and result.
    Status(results::StatusArgs),
    /// Print a task's output bytes exactly (exit code tells how it ended).
    Result(results::ResultArgs),
    /// Cancel a task: removed if it waits, stopped if it runs.
    Cancel(results::CancelArgs),
    /// Queue statistics and settings.
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// A queue's config values and secret grants, which its tasks read through the host API.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Tasks that exhausted their attempts.
    #[command(subcommand)]
    Dead(queue::DeadCommand),
    /// Delete finished tasks of one state older than a given age.
    Purge(queue::PurgeArgs),
    /// Periodic tasks (cron).
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Serve the HTTP API (/v1), Prometheus metrics (/metrics) and the web dashboard (/).
    Serve(serve::ServeArgs),
    /// Measure throughput, latency, cold start, Redis memory per task and scheduling policies
    /// against a Redis (a throwaway redis-server when none answers at --redis-url).
    Bench(bench::BenchArgs),
    /// Build the example tasks and run them end to end (starts a throwaway redis-server if none
    /// is reachable).
    Demo(demo::DemoArgs),
}

fn init_logging(global: &Global, default: &str) {
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => default,
            1 => "info",
            _ => "debug",
        }
    };
    let filter = std::env::var("WASMQ_LOG").unwrap_or_else(|_| format!("warn,wasmq={level}"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// True when a Redis answers PING at --redis-url within 2 s.
async fn redis_reachable(g: &Global) -> bool {
    let Ok(redis) = g.redis() else { return false };
    let ping = async {
        let mut c = redis.connect().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    };
    matches!(tokio::time::timeout(std::time::Duration::from_secs(2), ping).await, Ok(Some(_)))
}

/// The Redis to use for `demo` and `bench`: the one at --redis-url if it answers (and `fresh` is
/// not set), else a throwaway `redis-server` that is stopped when the returned handle drops. The
/// throwaway one listens on 127.0.0.1 only and has a random password, which the returned
/// `Global`'s URL carries (so the workers that `bench` spawns connect with it too).
async fn redis_or_throwaway(g: &Global, fresh: bool) -> anyhow::Result<(Global, Option<wasmq_testkit::redis_server::RedisServer>)> {
    use wasmq_testkit::redis_server::RedisServer;
    let mut g = g.clone();
    if !fresh && redis_reachable(&g).await {
        eprintln!("==> using the Redis at {}", wasmq::conn::redact(&g.redis_url));
        return Ok((g, None));
    }
    if !RedisServer::installed() {
        anyhow::bail!(
            "no Redis answers at {} and redis-server is not installed; install it (Debian/Ubuntu: `sudo apt-get install redis-server`, macOS: `brew install redis`) or pass --redis-url",
            wasmq::conn::redact(&g.redis_url)
        );
    }
    let server = anyhow::Context::context(RedisServer::start(), "cannot start a throwaway redis-server")?;
    // Its URL carries its password: shown redacted, like every URL.
    eprintln!("==> started a throwaway redis-server on {} (stopped at the end)", wasmq::conn::redact(&server.url()));
    g.redis_url = server.url();
    Ok((g, Some(server)))
}

/// A command's result: an exit code, or an error printed as one line (with its causes).
pub type Outcome = anyhow::Result<u8>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let long_running = matches!(cli.command, Command::Worker(_) | Command::Demo(_) | Command::Serve(_));
    init_logging(&cli.global, if long_running { "info" } else { "warn" });
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Do not wait for detached background tasks (e.g. a blocked wake-up connection).
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit::ERROR)
        }
    }
}

/// `outer: inner: innermost`, skipping causes whose text the outer message already contains, with
/// control characters escaped: causes may quote data read from Redis or a task's own text.
fn one_line(e: &anyhow::Error) -> String {
    one_line_chain(e.chain())
}

/// An error and its causes on one line.
pub(crate) fn one_line_error(e: &(dyn std::error::Error + 'static)) -> String {
    one_line_chain(anyhow::Chain::new(e))
}

fn one_line_chain<'a>(chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut out = String::new();
    for cause in chain {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    wasmq::text::escape_control(&out.replace('\n', " "), false).into_owned()
}

async fn dispatch(cli: Cli) -> Outcome {
    let g = &cli.global;
    match cli.command {
        Command::Run(a) => run::run(a).await,
        Command::Replay(a) => replay::replay(g, a).await,
        Command::Module(c) => module::run(g, c).await,
        Command::Enqueue(a) => enqueue::run(g, a).await,
        Command::Split(a) => split::run(a),
        Command::Worker(a) => worker::run(g, a).await,
        Command::Map(a) => flow::map(g, a).await,
        Command::Status(a) => results::status(g, a).await,
        Command::Result(a) => results::result(g, a).await,
        Command::Cancel(a) => results::cancel(g, a).await,
        Command::Queue(c) => queue::run(g, c).await,
        Command::Workers(a) => worker::list(g, a).await,
        Command::Config(c) => config::run(g, c).await,
        Command::Dead(c) => queue::dead(g, c).await,
        Command::Purge(a) => queue::purge(g, a).await,
        Command::Schedule(c) => schedule::run(g, c).await,
        Command::Serve(a) => serve::run(g, a).await,
        Command::Demo(a) => demo::run(g, a).await,
        Command::Bench(a) => bench::run(g, a).await,
    }
}

/// Per-task limits, as `enqueue` and `schedule add` take them (unset: the worker's defaults).
#[derive(Debug, Args, Clone)]
pub struct TaskLimitArgs {
    /// Attempts before the task is dead (default: the worker's, 3).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: Option<u32>,
    /// Wall-clock timeout per attempt (default: the worker's, 30s).
    #[arg(long, value_parser = value::positive_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Memory cap (default: the worker's, 256MiB).
    #[arg(long, value_parser = value::size)]
    pub memory: Option<u64>,
    /// Fuel budget (instructions, roughly) per attempt.
    #[arg(long)]
    pub fuel: Option<u64>,
}

impl TaskLimitArgs {
    /// Enqueue options for `queue` and `priority` with these limits, the rest default.
    pub fn options(&self, queue: wasmq::queue::QueueName, priority: i64) -> wasmq::client::EnqueueOptions {
        wasmq::client::EnqueueOptions {
            queue,
            priority,
            max_attempts: self.max_attempts,
            timeout: self.timeout,
            memory: self.memory,
            fuel: self.fuel,
            ..Default::default()
        }
    }
}

/// A task's HTTP grant, as `enqueue` and `map` take it.
#[derive(Debug, Args, Clone)]
pub struct HttpGrantArgs {
    /// A host the task may send HTTP requests to (components, through wasi:http): a name,
    /// `*.domain`, an IP, a CIDR range or `*`, with `:PORT` or `:*` (without a port: 80 and 443).
    /// Repeatable or comma-separated. The worker's --allow-hosts must allow it too, and only an
    /// IP or range there reaches a loopback or private address. Without it, every request is denied.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]", value_delimiter = ',', value_parser = value::host_pattern)]
    pub allow_host: Vec<wasmq::http::HostPattern>,
    /// Most HTTP requests per attempt (default and upper bound: the worker's --max-http-requests).
    #[arg(long)]
    pub max_http_requests: Option<u32>,
    /// Most HTTP response body bytes per attempt, all responses together (default and upper
    /// bound: the worker's --max-http-response-bytes).
    #[arg(long, value_parser = value::size)]
    pub max_http_response_bytes: Option<u64>,
}

impl HttpGrantArgs {
    /// Sets the grant on enqueue options.
    pub fn apply(&self, o: &mut wasmq::client::EnqueueOptions) {
        o.allow_hosts = wasmq::http::AllowList::new(self.allow_host.clone());
        o.max_http_requests = self.max_http_requests;
        o.max_http_response_bytes = self.max_http_response_bytes;
    }
}

/// The sandbox limits of a task run, as `run` and `worker` take them (for `worker`: the limits of
/// tasks that did not set their own).
#[derive(Debug, Args, Clone)]
pub struct SandboxLimitArgs {
    /// Wall-clock timeout.
    #[arg(long, default_value = value::text_duration(wasmq::sandbox::DEFAULT_TIMEOUT), value_parser = value::positive_duration)]
    pub timeout: std::time::Duration,
    /// Memory cap, all linear memories of the task together (e.g. 256MiB).
    #[arg(long, default_value = value::text_size(wasmq::sandbox::DEFAULT_MEMORY), value_parser = value::size)]
    pub memory: u64,
    /// Fuel budget (instructions, roughly); unmetered if not given.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Stdout cap: writing more fails the task (`output_limit`).
    /// At most 256MiB, so that a result is always a value Redis takes.
    #[arg(long, default_value = value::text_size(wasmq::sandbox::DEFAULT_STDOUT as u64), value_parser = value::stdout_limit)]
    pub stdout_limit: u64,
    /// Stderr kept as the log; the rest is dropped and the log marked truncated (at most 64MiB).
    #[arg(long, default_value = value::text_size(wasmq::sandbox::DEFAULT_STDERR as u64), value_parser = value::stderr_limit)]
    pub stderr_limit: u64,
    /// Guest stack size (16KiB to 256MiB): deeper recursion traps with a stack overflow.
    #[arg(long, default_value = value::text_size(wasmq::sandbox::DEFAULT_MAX_STACK as u64), value_parser = value::stack_size)]
    pub stack_size: u64,
    /// Most elements per table (function tables grow with the code's indirect calls).
    #[arg(long, default_value_t = wasmq::sandbox::DEFAULT_TABLE_ELEMENTS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub table_elements: usize,
    /// Fixed clocks and seeded randomness, so that a run can be reproduced.
    #[arg(long)]
    pub deterministic: bool,
}

impl SandboxLimitArgs {
    pub fn limits(&self) -> wasmq::sandbox::Limits {
        wasmq::sandbox::Limits {
            timeout: self.timeout,
            memory: self.memory,
            stdout: self.stdout_limit.min(usize::MAX as u64) as usize,
            stderr: self.stderr_limit.min(usize::MAX as u64) as usize,
            fuel: self.fuel,
            table_elements: self.table_elements,
            deterministic: self.deterministic,
        }
    }

    /// Table slots of the pooling allocator: room for the largest table a task may have.
    pub fn max_table_elements(&self) -> usize {
        self.table_elements.max(wasmq::sandbox::DEFAULT_MAX_TABLE_ELEMENTS)
    }
}

/// Clap value parsers that reuse the library's parsers (so the CLI and task specs agree).
pub mod value {
    use std::time::{Duration, SystemTime};

    pub fn duration(s: &str) -> Result<Duration, String> {
        wasmq::parse::duration(s).map_err(|e| e.to_string())
    }

    pub fn positive_duration(s: &str) -> Result<Duration, String> {
        let d = duration(s)?;
        if d.is_zero() {
            return Err(format!("invalid duration {s:?}: must be positive"));
        }
        Ok(d)
    }

    pub fn size(s: &str) -> Result<u64, String> {
        wasmq::parse::size(s).map_err(|e| e.to_string())
    }

    /// A guest stack size between 16 KiB and 256 MiB.
    pub fn stack_size(s: &str) -> Result<u64, String> {
        let v = size(s)?;
        if !(16 << 10..=256 << 20).contains(&v) {
            return Err(format!("stack size {s:?} must be between 16KiB and 256MiB"));
        }
        Ok(v)
    }

    /// A size no larger than `max`.
    fn bounded_size(s: &str, max: usize, what: &str) -> Result<u64, String> {
        let v = size(s)?;
        if v > max as u64 {
            return Err(format!("{what} {s:?} is over the largest allowed, {}", wasmq::parse::format_size(max as u64)));
        }
        Ok(v)
    }

    pub fn stdout_limit(s: &str) -> Result<u64, String> {
        bounded_size(s, wasmq::sandbox::MAX_STDOUT, "stdout limit")
    }

    pub fn stderr_limit(s: &str) -> Result<u64, String> {
        bounded_size(s, wasmq::sandbox::MAX_STDERR, "stderr limit")
    }

    /// A duration as its flag's default: `30s`, `5m`, `1h`.
    pub fn text_duration(d: std::time::Duration) -> String {
        humantime::format_duration(d).to_string()
    }

    /// A size as its flag's default, in the largest binary unit that divides it: `16MiB`.
    pub fn text_size(n: u64) -> String {
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            if n >= 1 << shift && n.is_multiple_of(1 << shift) {
                return format!("{}{unit}", n >> shift);
            }
        }
        n.to_string()
    }

    /// A `--limit`: a count of at least 1. Zero is refused rather than read as "no limit" (what a
    /// Redis range ending at `limit - 1` would make of it) or as an empty listing nobody asks for.
    pub fn limit(s: &str) -> Result<usize, String> {
        match s.parse::<usize>() {
            Ok(0) => Err("--limit must be at least 1".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("--limit must be a whole number of at least 1, got {s:?}")),
        }
    }

    pub fn time(s: &str) -> Result<SystemTime, String> {
        wasmq::parse::time(s).map_err(|e| e.to_string())
    }

    pub fn group(s: &str) -> Result<wasmq::queue::GroupKey, String> {
        wasmq::queue::GroupKey::new(s).map_err(|e| e.to_string())
    }

    pub fn expires(s: &str) -> Result<wasmq::parse::Expires, String> {
        wasmq::parse::expires(s).map_err(|e| e.to_string())
    }

    pub fn rate(s: &str) -> Result<wasmq::queue::RateLimit, String> {
        s.parse()
    }

    pub fn priority(s: &str) -> Result<i64, String> {
        wasmq::parse::priority(s).map_err(|e| e.to_string())
    }

    pub fn queue(s: &str) -> Result<wasmq::queue::QueueName, String> {
        wasmq::queue::QueueName::new(s).map_err(|e| e.to_string())
    }

    pub fn host_pattern(s: &str) -> Result<wasmq::http::HostPattern, String> {
        s.parse().map_err(|e: wasmq::http::HttpError| e.to_string())
    }

    pub fn task_id(s: &str) -> Result<wasmq::queue::TaskId, String> {
        wasmq::queue::TaskId::parse(s).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
