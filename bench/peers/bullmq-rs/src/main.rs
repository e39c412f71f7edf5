//! The bench/peers scenarios for BullMQ's official Rust crate (`bullmq-official`), scenario by
//! scenario what `bullmq_bench.mjs` does for Node's BullMQ, printing the same JSON (which
//! `report.py` reads):
//!
//! ```text
//! bullmq-rs-bench --redis-url redis://127.0.0.1:PORT [--scenario enqueue|throughput|latency]...
//!     [--tasks 20000] [--rate 500] [--duration 10] [--concurrency 50] [--rounds 3]
//! ```
//!
//! As in the Node script, the workers run in child processes (this binary again, with
//! `--role worker-throughput` or `--role worker-latency`), apart from the producer, as wasmq's
//! bench runs its workers as separate processes. A worker process also exits when its stdin
//! closes, so none outlives the producer, however the producer ends.
//!
//! Crate options: its defaults everywhere (completed jobs are kept: no `remove_on_complete`),
//! except the Worker's `concurrency` (50 by default here) and the connection. Job data is `{}`;
//! the processor returns `null` at once, which is what Node's `async () => {}` stores.
//!
//! Every timestamp is wall-clock milliseconds since the epoch with a microsecond fraction, so the
//! producer's and the worker's agree.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bullmq::options::RedisConnectionOptions;
use bullmq::worker::{CancellationToken, WorkerEvent};
use bullmq::{BulkJob, Job, Queue, QueueOptions, Worker, WorkerOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

type Result<T> = std::result::Result<T, String>;

/// Jobs per `Queue::add_bulk` call, as `bullmq_bench.mjs` passes to `Queue.addBulk`.
const BULK: usize = 1000;

struct Opts {
    redis_url: String,
    scenarios: Vec<String>,
    tasks: usize,
    rate: f64,
    duration: f64,
    concurrency: usize,
    rounds: usize,
    role: String,
    queue: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Opts> {
    let mut o = Opts {
        redis_url: String::new(),
        scenarios: Vec::new(),
        tasks: 20000,
        rate: 500.0,
        duration: 10.0,
        concurrency: 50,
        rounds: 3,
        role: "bench".to_string(),
        queue: None,
    };
    while let Some(k) = args.next() {
        let v = args.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--redis-url" => o.redis_url = v,
            "--scenario" => o.scenarios.push(v),
            "--tasks" => o.tasks = positive_int(&k, &v)?,
            "--rate" => o.rate = positive_number(&k, &v)?,
            "--duration" => o.duration = positive_number(&k, &v)?,
            "--concurrency" => o.concurrency = positive_int(&k, &v)?,
            "--rounds" => o.rounds = positive_int(&k, &v)?,
            "--role" => o.role = v,
            "--queue" => o.queue = Some(v),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    if o.redis_url.is_empty() {
        return Err("--redis-url is required".to_string());
    }
    check_redis_url(&o.redis_url)?;
    if o.scenarios.is_empty() {
        o.scenarios = ["enqueue", "throughput", "latency"].map(String::from).to_vec();
    }
    Ok(o)
}

fn positive_int(k: &str, v: &str) -> Result<usize> {
    v.parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("{k} must be a positive integer, not {v}"))
}

fn positive_number(k: &str, v: &str) -> Result<f64> {
    v.parse().ok().filter(|x: &f64| x.is_finite() && *x > 0.0).ok_or_else(|| format!("{k} must be a positive number, not {v}"))
}

/// The same rule as `bullmq_bench.mjs`: `redis://[USER:PASSWORD@]HOST:PORT[/DB]` with an explicit
/// port, so that a forgotten port never lands on a shared Redis at 6379 (the crate's default).
fn check_redis_url(url: &str) -> Result<()> {
    let bad = || format!("--redis-url must be redis://HOST:PORT[/DB] with an explicit port, not {url}");
    let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(bad()),
    }
}

fn connection(o: &Opts) -> RedisConnectionOptions {
    RedisConnectionOptions::new().url(&o.redis_url)
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// Same rule as wasmq's bench: the element at `round((len - 1) * p)` of the sorted values.
fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).round() as usize])
}

/// The element at `len / 2` of the sorted values, as `bullmq_bench.mjs` takes it.
fn median(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Peak resident set size of this process so far (VmHWM), in bytes: what `bullmq_bench.mjs`
/// samples from the outside, read here by the worker itself, since a peak only grows.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

fn print_line(line: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("cannot write to stdout: {e}"))
}

/// The no-op processor: `Ok(null)` at once, the crate's counterpart of Node's `async () => {}`.
fn noop(_job: Job, _token: CancellationToken) -> Ready<bullmq::Result<Value>> {
    ready(Ok(Value::Null))
}

fn worker_options(o: &Opts) -> WorkerOptions {
    WorkerOptions::new().connection(connection(o)).concurrency(o.concurrency)
}

// ---------------------------------------------------------------- worker processes

/// Throughput worker: runs until `tasks` jobs finished, then prints
/// `{"first_start_ms", "last_completed_ms", "completed", "failed", "peak_rss_bytes"}` and exits.
/// First start = the first call of the processor; last completed = the last `Completed` event,
/// which the crate sends after `moveToFinished` has written the job's result into Redis.
async fn worker_throughput(o: &Opts, queue: &str) -> Result<()> {
    let first = Arc::new(OnceLock::new());
    let first_in_processor = first.clone();
    let processor = move |job: Job, token: CancellationToken| {
        first_in_processor.get_or_init(now_ms);
        noop(job, token)
    };
    let worker = Worker::with_options(queue, processor, worker_options(o)).await.map_err(|e| format!("cannot start the worker: {e}"))?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let (mut completed, mut failed, mut last) = (0, 0, None);
    while completed + failed < o.tasks {
        tokio::select! {
            event = worker.next_event() => match event {
                Some(WorkerEvent::Completed { .. }) => {
                    last = Some(now_ms());
                    completed += 1;
                }
                Some(WorkerEvent::Failed { job_id, error }) => {
                    eprintln!("bullmq-rs worker: job {job_id} failed: {error}");
                    failed += 1;
                }
                Some(WorkerEvent::Error(e)) => eprintln!("bullmq-rs worker: {e}"),
                Some(_) => {}
                None => return Err("the worker's event channel closed".to_string()),
            },
            _ = stdin.next_line() => {
                return Err(format!("the producer went away after {} of {} jobs", completed + failed, o.tasks));
            }
        }
    }
    let answer = json!({
        "first_start_ms": first.get(),
        "last_completed_ms": last,
        "completed": completed,
        "failed": failed,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    print_line(&answer.to_string())?;
    worker.close(5_000).await.map_err(|e| format!("cannot close the worker: {e}"))
}

/// Latency worker: prints "ready" once connected, records the completion time of every job,
/// and on "dump" (a line on stdin) or the end of stdin prints `{"completed_ms": {id: ms}}`
/// and exits.
async fn worker_latency(o: &Opts, queue: &str) -> Result<()> {
    let worker = Worker::with_options(queue, noop, worker_options(o)).await.map_err(|e| format!("cannot start the worker: {e}"))?;
    print_line("ready")?;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut times: HashMap<String, f64> = HashMap::new();
    loop {
        tokio::select! {
            // Events first: those already sent when "dump" arrives are recorded before the dump.
            biased;
            event = worker.next_event() => match event {
                Some(WorkerEvent::Completed { job_id, .. }) => {
                    times.insert(job_id, now_ms());
                }
                Some(WorkerEvent::Error(e)) => eprintln!("bullmq-rs worker: {e}"),
                Some(_) => {}
                None => return Err("the worker's event channel closed".to_string()),
            },
            line = stdin.next_line() => match line {
                Ok(Some(l)) if l.trim() != "dump" => {}
                _ => break,
            },
        }
    }
    print_line(&json!({ "completed_ms": times }).to_string())?;
    worker.close(5_000).await.map_err(|e| format!("cannot close the worker: {e}"))
}

// ---------------------------------------------------------------- producer side

/// A worker process of this binary, answering on its stdout one JSON (or "ready") line at a time.
struct WorkerProcess {
    role: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl WorkerProcess {
    fn spawn(o: &Opts, role: &'static str, queue: &str) -> Result<Self> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
        let mut child = Command::new(exe)
            .args(["--role", role, "--queue", queue, "--redis-url", o.redis_url.as_str()])
            .args(["--tasks", o.tasks.to_string().as_str()])
            .args(["--concurrency", o.concurrency.to_string().as_str()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // An error on the producer's side drops the child: it must not keep draining.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the {role} process: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        Ok(Self { role, child, stdin, stdout })
    }

    async fn next_line(&mut self, timeout: Duration) -> Result<String> {
        match tokio::time::timeout(timeout, self.stdout.next_line()).await {
            Err(_) => Err(format!("no answer from the {} process within {} s", self.role, timeout.as_secs())),
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => Err(format!("the {} process exited without answering", self.role)),
            Ok(Err(e)) => Err(format!("cannot read from the {} process: {e}", self.role)),
        }
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| format!("the {} process's stdin is closed", self.role))?;
        stdin.write_all(format!("{line}\n").as_bytes()).await.map_err(|e| format!("cannot write to the {} process: {e}", self.role))
    }

    /// Closes the worker's stdin (it answers if it has not, and exits) and waits up to 10 s for
    /// it to exit, then kills it.
    async fn finish(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// `n` no-op jobs (data `{}`), in calls of `BULK`.
fn noop_chunks(n: usize) -> Vec<Vec<BulkJob>> {
    (0..n).step_by(BULK).map(|i| (i..n.min(i + BULK)).map(|_| BulkJob::new("noop", json!({}))).collect()).collect()
}

async fn add_all(queue: &Queue, n: usize) -> Result<()> {
    for chunk in noop_chunks(n) {
        queue.add_bulk(chunk).await.map_err(|e| format!("add_bulk: {e}"))?;
    }
    Ok(())
}

/// Runs `f` on a new queue called `name`, then deletes the queue (as wasmq's bench deletes its
/// own after each run), whether `f` succeeded or not.
async fn with_queue<T>(o: &Opts, name: &str, f: impl AsyncFnOnce(&Queue) -> Result<T>) -> Result<T> {
    let queue = Queue::with_options(name, QueueOptions::new().connection(connection(o))).await.map_err(|e| format!("cannot open queue {name}: {e}"))?;
    let result = f(&queue).await;
    // 1000 keys per script call, Node's `obliterate` default.
    if let Err(e) = queue.obliterate(true, 1000).await {
        eprintln!("    cannot obliterate {name}: {e}");
    }
    queue.close().await;
    result
}

#[derive(Default)]
struct Metrics(Vec<Value>);

impl Metrics {
    #[allow(clippy::too_many_arguments)] // the fields of one metric, as bullmq_bench.mjs's metric()
    fn add(&mut self, key: &str, scenario: &str, name: &str, value: Option<f64>, unit: &str, note: &str, extra: Value) {
        let value = value.filter(|v| v.is_finite());
        match value {
            Some(v) if v >= 100.0 => eprintln!("    {name}: {v:.0} {unit}"),
            Some(v) => eprintln!("    {name}: {v:.3} {unit}"),
            None => eprintln!("    {name}: - {unit}"),
        }
        let mut m = json!({ "key": key, "scenario": scenario, "name": name, "value": value, "unit": unit, "note": note });
        if let (Value::Object(m), Value::Object(extra)) = (&mut m, extra) {
            m.extend(extra);
        }
        self.0.push(m);
    }
}

/// Bulk enqueue: N no-op jobs with `Queue::add_bulk` in calls of 1000, one call after another;
/// median of `rounds` runs. The crate sends a call's jobs as 1000 concurrent `addStandardJob`
/// script calls on its multiplexed connection (Node's `addBulk` sends one MULTI).
async fn enqueue(o: &Opts, metrics: &mut Metrics) -> Result<()> {
    let mut rates = Vec::new();
    for round in 0..o.rounds {
        let name = format!("bench-enqueue-{}-{round}", std::process::id());
        let rate = with_queue(o, &name, async |queue| {
            let chunks = noop_chunks(o.tasks);
            let t = Instant::now();
            for chunk in chunks {
                queue.add_bulk(chunk).await.map_err(|e| format!("add_bulk: {e}"))?;
            }
            let secs = t.elapsed().as_secs_f64();
            let count = queue.count().await.map_err(|e| format!("count: {e}"))?;
            if count != o.tasks as u64 {
                return Err(format!("enqueued {count} of {}", o.tasks));
            }
            Ok(o.tasks as f64 / secs)
        })
        .await?;
        rates.push(rate);
    }
    metrics.add(
        "enqueue",
        "enqueue",
        "bulk enqueue (Queue::add_bulk, 1000 per call)",
        Some(median(&rates)),
        "tasks/s",
        &format!("median of {} runs of {}", o.rounds, o.tasks),
        json!({}),
    );
    Ok(())
}

/// Throughput: N jobs enqueued first, then one worker process (concurrency C) drains them;
/// first processor call to last `Completed` event, median of `rounds` runs.
async fn throughput(o: &Opts, metrics: &mut Metrics) -> Result<()> {
    let mut rates = Vec::new();
    let mut peak = 0;
    for round in 0..o.rounds {
        let name = format!("bench-noop-{}-{round}", std::process::id());
        let answer = with_queue(o, &name, async |queue| {
            add_all(queue, o.tasks).await?;
            let mut child = WorkerProcess::spawn(o, "worker-throughput", &name)?;
            let line = child.next_line(Duration::from_secs(600)).await;
            child.finish().await;
            serde_json::from_str::<Value>(&line?).map_err(|e| format!("unreadable answer from the worker: {e}"))
        })
        .await?;
        peak = peak.max(answer["peak_rss_bytes"].as_u64().unwrap_or(0));
        let completed = answer["completed"].as_u64().unwrap_or(0);
        if completed != o.tasks as u64 {
            return Err(format!("{completed} of {} jobs completed ({} failed)", o.tasks, answer["failed"]));
        }
        let (first, last) = (answer["first_start_ms"].as_f64(), answer["last_completed_ms"].as_f64());
        let (Some(first), Some(last)) = (first, last) else {
            return Err(format!("the worker's answer lacks a start or completion time: {answer}"));
        };
        rates.push(o.tasks as f64 / ((last - first) / 1000.0));
    }
    metrics.add(
        "throughput",
        "noop",
        &format!("throughput, 1 worker process x concurrency {}", o.concurrency),
        Some(median(&rates)),
        "tasks/s",
        &format!("median of {} runs of {}, first start to last completed", o.rounds, o.tasks),
        json!({}),
    );
    let peak_mib = (peak > 0).then(|| peak as f64 / f64::from(1 << 20));
    metrics.add("rss", "noop", "worker peak RSS, 1 process", peak_mib, "MiB", "VmHWM of the worker process", json!({}));
    Ok(())
}

/// Waits until `n` jobs of `queue` are completed or failed, polling every 50 ms for at most
/// `timeout`.
async fn wait_completed(queue: &Queue, n: u64, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let completed = queue.get_completed_count().await.map_err(|e| format!("get_completed_count: {e}"))?;
        let failed = queue.get_failed_count().await.map_err(|e| format!("get_failed_count: {e}"))?;
        if completed + failed >= n {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("{} of {n} jobs finished after {} s", completed + failed, timeout.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Latency: one idle worker process (concurrency C), warmed up with 4 jobs; the producer adds one
/// job every 1/R s for D s (`queue.add` awaited each time; when it falls behind it catches up
/// without sleeping); latency = completion time in the worker (`Completed` event) - submit time
/// here.
async fn latency(o: &Opts, metrics: &mut Metrics) -> Result<()> {
    let name = format!("bench-latency-{}", std::process::id());
    with_queue(o, &name, async |queue| {
        let mut child = WorkerProcess::spawn(o, "worker-latency", &name)?;
        let result = paced_load(o, queue, &mut child, metrics).await;
        child.finish().await;
        result
    })
    .await
}

async fn paced_load(o: &Opts, queue: &Queue, child: &mut WorkerProcess, metrics: &mut Metrics) -> Result<()> {
    let ready = child.next_line(Duration::from_secs(60)).await?;
    if ready != "ready" {
        return Err(format!("unexpected answer from the worker: {ready}"));
    }
    for _ in 0..4 {
        queue.add("noop", json!({})).await.map_err(|e| format!("add: {e}"))?;
    }
    wait_completed(queue, 4, Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = (o.rate * o.duration).floor() as usize;
    let mut sent = Vec::with_capacity(total);
    let t0 = Instant::now();
    for i in 0..total {
        let due = t0 + Duration::from_secs_f64(i as f64 / o.rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let submit = now_ms();
        let job = queue.add("noop", json!({})).await.map_err(|e| format!("add: {e}"))?;
        sent.push((job.id().to_string(), submit));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    wait_completed(queue, 4 + total as u64, Duration::from_secs(120)).await?;
    child.send("dump").await?;
    let dump: Value = serde_json::from_str(&child.next_line(Duration::from_secs(30)).await?).map_err(|e| format!("unreadable answer from the worker: {e}"))?;
    let done = &dump["completed_ms"];
    let mut lat: Vec<f64> = sent.iter().filter_map(|(id, submit)| Some(done[id].as_f64()? - submit)).collect();
    if lat.len() != total {
        return Err(format!("{} of {total} jobs have a completion time", lat.len()));
    }
    lat.sort_by(f64::total_cmp);
    let note =
        format!("{total} no-op jobs at {}/s (sent in {elapsed:.2} s) into 1 idle worker process x concurrency {}; submit -> completed", o.rate, o.concurrency);
    for (key, name, p) in [("latency_p50", "end-to-end p50", 0.5), ("latency_p99", "end-to-end p99", 0.99), ("latency_max", "end-to-end max", 1.0)] {
        metrics.add(key, "latency", name, pct(&lat, p), "ms", &note, json!({ "sent_s": elapsed }));
    }
    Ok(())
}

async fn bench(o: &Opts) -> Result<i32> {
    let mut metrics = Metrics::default();
    let mut failed = false;
    for s in &o.scenarios {
        eprintln!("==> bullmq-rs: {s}");
        let result = match s.as_str() {
            "enqueue" => enqueue(o, &mut metrics).await,
            "throughput" => throughput(o, &mut metrics).await,
            "latency" => latency(o, &mut metrics).await,
            _ => return Err(format!("unknown scenario {s}")),
        };
        if let Err(e) = result {
            eprintln!("    failed: {e}");
            failed = true;
            metrics.0.push(json!({ "key": s, "scenario": s, "name": "failed", "value": null, "unit": "", "note": e }));
        }
    }
    let out = json!({
        "peer": "bullmq-rs",
        "versions": {
            "bullmq-official": env!("LOCKED_BULLMQ_OFFICIAL"),
            "redis-rs": env!("LOCKED_REDIS"),
            "tokio": env!("LOCKED_TOKIO"),
            "rustc": env!("BUILD_RUSTC_VERSION"),
        },
        "config": {
            "tasks": o.tasks, "rate": o.rate, "duration_s": o.duration,
            "concurrency": o.concurrency, "rounds": o.rounds,
        },
        "metrics": metrics.0,
    });
    let text = serde_json::to_string_pretty(&out).map_err(|e| format!("cannot encode the results: {e}"))?;
    print_line(&text)?;
    Ok(if failed { 1 } else { 0 })
}

async fn run() -> Result<i32> {
    let o = parse_args(std::env::args().skip(1))?;
    let queue = || o.queue.as_deref().ok_or_else(|| format!("--role {} needs --queue", o.role));
    match o.role.as_str() {
        "bench" => bench(&o).await,
        "worker-throughput" => worker_throughput(&o, queue()?).await.map(|()| 0),
        "worker-latency" => worker_latency(&o, queue()?).await.map(|()| 0),
        role => Err(format!("unknown role {role}")),
    }
}

#[tokio::main]
async fn main() {
    let code = run().await.unwrap_or_else(|e| {
        eprintln!("bullmq-rs-bench: {e}");
        1
    });
    // Exit at once: a runtime shutdown would wait for the blocking read of stdin.
    std::process::exit(code);
}
