//! `wasmq bench`: throughput, latency, cold start, memory and scheduling policies, measured
//! against a real Redis with real worker processes. Every scenario uses queues of its own
//! (`bench-<scenario>-<pid>`), so a bench can run against a Redis that holds other data.

mod api;
mod args;
mod flow;
mod flowctl;
mod policies;
mod scripts;

pub use args::{BenchArgs, run};
mod report;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use wasmq::client::{Client, EnqueueOptions};
use wasmq::conn::Conn;
use wasmq::queue::task::field;
use wasmq::queue::{QueueName, TaskId};

pub use report::{Machine, Metric, Report};

/// Describes this machine for a report.
pub fn report_machine(redis_version: &str) -> Machine {
    Machine {
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        redis: redis_version.to_string(),
        wasmq: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// The no-op task: instantiate, run nothing, exit 0.
pub const NOOP_WAT: &str = include_str!("noop.wat");
/// A task that counts down from the number on its stdin.
pub const SPIN_WAT: &str = include_str!("spin.wat");

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Scenario {
    /// Bulk enqueue rate (pipelined).
    Enqueue,
    /// Processing throughput of no-op tasks, 1 and 2 worker processes.
    Throughput,
    /// Processing throughput of wordcount tasks on 4 KiB and 1 MiB inputs, 1 and 2 worker
    /// processes, in tasks/s and MB/s.
    Wordcount,
    /// End-to-end latency under a paced load into idle workers.
    Latency,
    /// Lateness of delayed tasks: start time minus due time.
    Delayed,
    /// First task of a module never seen by the worker, with and without its artifact.
    ColdStart,
    /// Redis memory per pending task.
    Memory,
    /// Weighted completion time under fifo, priority and wsjf.
    Policies,
    /// Map-reduce wordcount over a real corpus, checked against a native count; a wide flow.
    Flow,
    /// Redis CPU per task of each script (enqueue, claim, complete) called alone, and of it
    /// each command the script called: where the time goes.
    Scripts,
    /// `wasmq serve`'s API: enqueue rate and read latency under load over loopback, and the
    /// Redis commands of each dashboard page with --page-tasks tasks in a queue.
    Api,
    /// What flow control costs a claim: no limit against limits that never bind and expiries.
    FlowControl,
}

/// How a bench is run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub scenarios: Vec<Scenario>,
    /// Tasks per throughput and enqueue run.
    pub tasks: usize,
    /// Queues the throughput runs spread their tasks over (on a Cluster: different shards).
    pub queues: usize,
    /// Worker concurrency in the throughput runs.
    pub concurrency: usize,
    /// Paced load: tasks per second and seconds.
    pub rate: u32,
    pub duration: Duration,
    /// The wasmq binary that runs the workers (this program by default).
    pub worker_bin: PathBuf,
    /// Environment for the worker processes (Redis URL, prefix, TLS files).
    pub worker_env: Vec<(String, String)>,
    /// Compiled wordcount module, if the example tasks could be built.
    pub wordcount: Option<Vec<u8>>,
    /// Compiled merge-counts module, likewise.
    pub merge_counts: Option<Vec<u8>>,
    /// The flow scenario's corpus (a folder of text files, gzipped or not).
    pub corpus: PathBuf,
    /// Children of the flow scenario's wide flow.
    pub flow_children: usize,
    /// Clients of the api scenario's enqueue load.
    pub api_clients: usize,
    /// Pending tasks in the queue whose dashboard pages the api scenario measures.
    pub page_tasks: usize,
}

/// A worker process started by the bench.
struct WorkerProc {
    child: Child,
    peak_rss: u64,
}

impl WorkerProc {
    fn sample_rss(&mut self) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        if let Some(kb) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()) {
            self.peak_rss = self.peak_rss.max(kb * 1024);
        }
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn terminate(&mut self) {
        wasmq_testkit::redis_server::signal(self.child.id(), wasmq_testkit::redis_server::Signal::TERM);
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Bench {
    client: Client,
    config: BenchConfig,
    cache_dir: tempfile::TempDir,
    pub report: Report,
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

impl Bench {
    pub fn new(client: Client, config: BenchConfig) -> anyhow::Result<Self> {
        Ok(Self { client, config, cache_dir: tempfile::Builder::new().prefix("wasmq-bench-cache-").tempdir()?, report: Report::default() })
    }

    fn queue(&self, scenario: &str) -> QueueName {
        QueueName::new(&format!("bench-{scenario}-{}", std::process::id())).expect("valid queue name")
    }

    async fn push(&self, name: &str, wasm: &[u8]) -> anyhow::Result<String> {
        let (binary, kind) = wasmq::sandbox::prepare(wasm)?;
        let sandbox =
            wasmq::sandbox::Sandbox::new(wasmq::sandbox::SandboxConfig { max_concurrency: 1, cache_dir: None, pooling: false, ..Default::default() })?;
        sandbox.validate(&binary)?;
        Ok(self.client.store().push(&binary, kind, Some(name)).await?.sha256)
    }

    fn spawn_worker(&self, queue: &QueueName, extra: &[&str], cache: &std::path::Path) -> anyhow::Result<WorkerProc> {
        let mut cmd = Command::new(&self.config.worker_bin);
        cmd.arg("worker").arg("--queue").arg(queue.as_str()).args(extra).arg("--quiet");
        cmd.env("WASMQ_CACHE_DIR", cache).env_remove("WASMQ_LOG");
        for (k, v) in &self.config.worker_env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        let child = cmd.spawn().with_context(|| format!("cannot start {}", self.config.worker_bin.display()))?;
        Ok(WorkerProc { child, peak_rss: 0 })
    }

    /// Reads numeric `fields` of many tasks.
    async fn task_fields(&self, ids: &[TaskId], fields: &[&str]) -> anyhow::Result<Vec<Vec<Option<u64>>>> {
        Ok(self.client.db().task_numbers(&mut self.client.conn(), ids, fields).await?)
    }

    async fn wait_until_done(&self, queue: &QueueName, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let s = self.client.stats(queue).await?;
            if s.succeeded + s.dead >= n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                anyhow::bail!("{queue}: {} of {n} tasks finished after {timeout:?}", s.succeeded + s.dead);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn run(&mut self) -> anyhow::Result<()> {
        let scenarios = self.config.scenarios.clone();
        for s in scenarios {
            eprintln!("==> {s:?}");
            let r = match s {
                Scenario::Enqueue => self.enqueue().await,
                Scenario::Throughput => self.throughput("noop", None, self.config.tasks).await,
                Scenario::Wordcount => match self.config.wordcount.clone() {
                    Some(w) => self.wordcount(&w).await,
                    None => {
                        eprintln!("    skipped: the example tasks could not be built (run from the source tree)");
                        Ok(())
                    }
                },
                Scenario::Latency => self.latency().await,
                Scenario::Delayed => self.delayed().await,
                Scenario::ColdStart => self.cold_start().await,
                Scenario::Memory => self.memory().await,
                Scenario::Policies => policies::run(self).await,
                Scenario::Flow => flow::run(self).await,
                Scenario::Scripts => scripts::run(self).await,
                Scenario::Api => api::run(self).await,
                Scenario::FlowControl => flowctl::run(self).await,
            };
            if let Err(e) = r {
                eprintln!("    failed: {e:#}");
                self.report.push(Metric::failed(&format!("{s:?}").to_lowercase(), &format!("{e:#}")));
            }
        }
        Ok(())
    }

    /// Bulk enqueue: pipelined chunks of the enqueue script.
    async fn enqueue(&mut self) -> anyhow::Result<()> {
        self.push("bench-noop", NOOP_WAT.as_bytes()).await?;
        let n = self.config.tasks;
        let inputs = vec![Vec::new(); n];
        let mut rates = Vec::new();
        for round in 0..3 {
            let q = self.queue(&format!("enqueue{round}"));
            let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
            let t = Instant::now();
            let ids = self.client.enqueue_bulk("bench-noop", &inputs, &opts).await?;
            let secs = t.elapsed().as_secs_f64();
            anyhow::ensure!(ids.len() == n, "enqueued {} of {n}", ids.len());
            rates.push(n as f64 / secs);
            self.drop_queue(&q).await?;
        }
        rates.sort_by(f64::total_cmp);
        self.report.push(Metric::new("enqueue", "bulk enqueue (pipelined)", rates[1], "tasks/s").note(&format!("median of 3 runs of {n}")));
        Ok(())
    }

    /// Enqueues `n` tasks, then runs 1 and then 2 worker processes until the queue is drained.
    /// A real task next to the no-op one: wordcount over log text of 4 KiB per task (`--tasks`
    /// of them) and of 1 MiB per task (a hundredth as many, from 20 to 256: at most 256 MiB of
    /// input in all), in tasks/s and MB/s of input.
    async fn wordcount(&mut self, wasm: &[u8]) -> anyhow::Result<()> {
        self.push("bench-wordcount", wasm).await?;
        let big = (self.config.tasks / 100).clamp(20, 256);
        for (what, bytes, n) in [("wordcount-4KiB", 4 << 10, self.config.tasks), ("wordcount-1MiB", 1 << 20, big)] {
            self.throughput(what, Some(("bench-wordcount", wordcount_input(bytes))), n).await?;
        }
        Ok(())
    }

    /// Processing throughput of `n` tasks, with 1 and then 2 worker processes: of the no-op
    /// module (`task` None), or of a pushed module by name with one input for every task.
    async fn throughput(&mut self, what: &str, task: Option<(&str, Vec<u8>)>, n: usize) -> anyhow::Result<()> {
        let (name, input): (&str, Vec<u8>) = match task {
            None => {
                self.push("bench-noop", NOOP_WAT.as_bytes()).await?;
                ("bench-noop", Vec::new())
            }
            Some(t) => t,
        };
        // Artifacts are compiled once, before timing: throughput is measured warm.
        let warm_cache = self.cache_dir.path().join("warm");
        let k = self.config.queues.max(1);
        for workers in [1usize, 2] {
            let mut rates = Vec::new();
            let mut cpu_per_task = Vec::new();
            let mut peak = 0u64;
            for round in 0..3 {
                let queues = self.spread_queues(&format!("{what}{workers}x{round}"), k).await?;
                let mut ids: Vec<TaskId> = Vec::with_capacity(n);
                for (i, q) in queues.iter().enumerate() {
                    let share = n / k + usize::from(i < n % k);
                    let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
                    ids.extend(self.client.enqueue_bulk(name, &vec![input.clone(); share], &opts).await?.into_iter().map(|e| e.id));
                }
                let conc = self.config.concurrency.to_string();
                let mut args: Vec<String> = vec!["--exit-when-idle".into(), "--concurrency".into(), conc];
                for q in &queues[1..] {
                    args.push("--queue".into());
                    args.push(q.to_string());
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let cpu_at = self.client.db().anchor(&queues[0]);
                let cpu_before = redis_cpu(&mut self.client.conn(), &cpu_at).await.ok();
                let mut procs: Vec<WorkerProc> = (0..workers).map(|_| self.spawn_worker(&queues[0], &args, &warm_cache)).collect::<anyhow::Result<_>>()?;
                let deadline = Instant::now() + Duration::from_secs(600);
                while procs.iter_mut().any(|p| p.running()) && Instant::now() < deadline {
                    for p in procs.iter_mut() {
                        p.sample_rss();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                peak = peak.max(procs.iter().map(|p| p.peak_rss).max().unwrap_or(0));
                drop(procs);
                // Redis CPU spent on claims and results (one shard: meaningful with one queue).
                if let (1, Some(before), Ok(after)) = (k, cpu_before, redis_cpu(&mut self.client.conn(), &cpu_at).await) {
                    cpu_per_task.push((after - before) / n as f64 * 1e6);
                }
                let mut first_start_ms = u64::MAX;
                let mut last_finish_us = 0;
                let mut done = 0;
                for q in &queues {
                    let of_q: Vec<TaskId> = ids.iter().filter(|i| &i.queue == q).cloned().collect();
                    let rows = self.task_fields(&of_q, &[field::STARTED, field::FINISHED_US]).await?;
                    first_start_ms = first_start_ms.min(rows.iter().filter_map(|r| r[0]).min().unwrap_or(u64::MAX));
                    last_finish_us = last_finish_us.max(rows.iter().filter_map(|r| r[1]).max().unwrap_or(0));
                    done += rows.iter().filter(|r| r[1].is_some()).count();
                    self.drop_queue(q).await?;
                }
                anyhow::ensure!(done == n, "{done} of {n} tasks finished");
                let secs = (last_finish_us as f64 / 1e6) - (first_start_ms as f64 / 1e3);
                rates.push(n as f64 / secs.max(1e-6));
            }
            rates.sort_by(f64::total_cmp);
            let spread = if k > 1 { format!(", {k} queues") } else { String::new() };
            self.report.push(
                Metric::new(what, &format!("throughput, {workers} worker process(es) x concurrency {}{spread}", self.config.concurrency), rates[1], "tasks/s")
                    .note(&format!("median of 3 runs of {n}, first start to last result")),
            );
            if !input.is_empty() {
                let mb = rates[1] * input.len() as f64 / 1e6;
                self.report.push(
                    Metric::new(what, &format!("input processed, {workers} worker process(es)"), mb, "MB/s")
                        .note(&format!("{} bytes of input per task", input.len())),
                );
            }
            self.report.push(Metric::new(what, &format!("worker peak RSS, {workers} process(es)"), peak as f64 / (1 << 20) as f64, "MiB"));
            if cpu_per_task.len() == 3 {
                cpu_per_task.sort_by(f64::total_cmp);
                self.report.push(
                    Metric::new(what, &format!("Redis CPU per task, {workers} process(es)"), cpu_per_task[1], "µs")
                        .note("used_cpu_user + used_cpu_sys of the queue's Redis over the run, per task: claim and result"),
                );
            }
        }
        Ok(())
    }

    /// `k` queue names for one run. Against a Redis Cluster they are picked so that each lands on
    /// a different shard (as far as there are shards), so that the run spreads over them.
    async fn spread_queues(&self, stem: &str, k: usize) -> anyhow::Result<Vec<QueueName>> {
        let mut conn = self.client.conn();
        let slots: redis::RedisResult<Vec<redis::Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await;
        let shard_of = |slot: u16, ranges: &[(u16, u16, String)]| ranges.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&slot)).map(|r| r.2.clone());
        let ranges: Vec<(u16, u16, String)> = match slots {
            Ok(v) => v
                .into_iter()
                .filter_map(|r| {
                    let parts: Vec<redis::Value> = redis::from_redis_value(r).ok()?;
                    let lo: u16 = redis::from_redis_value(parts.first()?.clone()).ok()?;
                    let hi: u16 = redis::from_redis_value(parts.get(1)?.clone()).ok()?;
                    let node: Vec<redis::Value> = redis::from_redis_value(parts.get(2)?.clone()).ok()?;
                    let port: u16 = redis::from_redis_value(node.get(1)?.clone()).ok()?;
                    Some((lo, hi, port.to_string()))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if ranges.is_empty() && k == 1 {
            return Ok(vec![self.queue(stem)]);
        }
        // One queue: always on the shard that serves slot 0, so that the rounds of a one-shard run
        // all load the same node (each round has a queue name of its own, which would otherwise
        // hash anywhere).
        let first = ranges.iter().min_by_key(|r| r.0).map(|r| r.2.clone());
        let mut out = Vec::new();
        let mut used = std::collections::HashSet::new();
        for i in 0..10_000 {
            if out.len() == k {
                break;
            }
            let q = self.queue(&format!("{stem}s{i}"));
            let key = self.client.db().anchor(&q);
            if ranges.is_empty() {
                out.push(q);
                continue;
            }
            let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).query_async(&mut conn).await?;
            let shard = shard_of(slot, &ranges).unwrap_or_default();
            if k == 1 {
                if Some(&shard) == first.as_ref() {
                    out.push(q);
                }
                continue;
            }
            // Distinct shards first; once every shard has a queue, any queue will do.
            if used.insert(shard) || used.len() >= ranges.iter().map(|r| &r.2).collect::<std::collections::HashSet<_>>().len() {
                out.push(q);
            }
        }
        Ok(out)
    }

    /// Reports the p50, p99 and max of `values` (ms) as `<what> p50` and so on.
    fn push_percentiles(&mut self, scenario: &str, what: &str, mut values: Vec<f64>, note: &str) {
        values.sort_by(f64::total_cmp);
        for (label, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            self.report.push(Metric::new(scenario, &format!("{what} {label}"), pct(&values, p), "ms").note(note));
        }
    }

    /// Two worker processes of concurrency 1 on `q`, started, warmed up (the no-op module loaded,
    /// four tasks run) and idle again. The caller's tasks come after the four warm-up ones.
    async fn idle_workers(&self, q: &QueueName) -> anyhow::Result<Vec<WorkerProc>> {
        self.push("bench-noop", NOOP_WAT.as_bytes()).await?;
        let cache = self.cache_dir.path().join("warm");
        let procs: Vec<WorkerProc> = (0..2).map(|_| self.spawn_worker(q, &["--concurrency", "1"], &cache)).collect::<anyhow::Result<_>>()?;
        let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
        for _ in 0..4 {
            self.client.enqueue("bench-noop", b"", &opts).await?;
        }
        self.wait_until_done(q, 4, Duration::from_secs(60)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(procs)
    }

    /// A paced load into idle workers; latency is submit -> result sent, per task.
    async fn latency(&mut self) -> anyhow::Result<()> {
        let q = self.queue("latency");
        let mut procs = self.idle_workers(&q).await?;
        let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
        let rate = self.config.rate.max(1);
        let total = (rate as f64 * self.config.duration.as_secs_f64()) as usize;
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut sent = Vec::with_capacity(total);
        for _ in 0..total {
            interval.tick().await;
            let submit = now_us();
            let id = self.client.enqueue("bench-noop", b"", &opts).await?.id;
            sent.push((id, submit));
        }
        self.wait_until_done(&q, 4 + total as u64, Duration::from_secs(120)).await?;
        for p in procs.iter_mut() {
            p.terminate();
        }
        let ids: Vec<TaskId> = sent.iter().map(|(id, _)| id.clone()).collect();
        let rows = self.task_fields(&ids, &[field::FINISHED_US]).await?;
        let lat: Vec<f64> = rows.iter().zip(&sent).filter_map(|(r, (_, submit))| r[0].map(|f| f.saturating_sub(*submit) as f64 / 1000.0)).collect();
        let note = format!("{total} no-op tasks at {rate}/s into 2 idle workers; submit -> result sent");
        self.push_percentiles("latency", "end-to-end", lat, &note);
        drop(procs);
        self.drop_queue(&q).await?;
        Ok(())
    }

    /// Delayed tasks due every 20 ms for 4 s, into 2 idle workers: how late each starts after
    /// its due time (the promotion happens inside the claim; idle workers sleep until the
    /// earliest due time).
    async fn delayed(&mut self) -> anyhow::Result<()> {
        let q = self.queue("delayed");
        let mut procs = self.idle_workers(&q).await?;
        let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
        let n = 200;
        let base = std::time::SystemTime::now() + Duration::from_secs(1);
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let opts = EnqueueOptions { at: Some(base + Duration::from_millis(20 * i as u64)), ..opts.clone() };
            ids.push(self.client.enqueue("bench-noop", b"", &opts).await?.id);
        }
        self.wait_until_done(&q, 4 + n as u64, Duration::from_secs(60)).await?;
        for p in procs.iter_mut() {
            p.terminate();
        }
        let rows = self.task_fields(&ids, &[field::DUE, field::STARTED]).await?;
        let late: Vec<f64> = rows.iter().filter_map(|r| Some(r[1]? as f64 - r[0]? as f64)).collect();
        anyhow::ensure!(late.len() == n, "{} of {n} delayed tasks have a due and a start time", late.len());
        let note = format!("{n} tasks due every 20 ms, 2 idle workers; start - due (ms clock)");
        self.push_percentiles("delayed", "lateness", late, &note);
        drop(procs);
        self.drop_queue(&q).await?;
        Ok(())
    }

    /// First task of a module the (idle) worker has never seen, from a fresh cache folder (compile)
    /// and from a folder that holds its artifact (load).
    async fn cold_start(&mut self) -> anyhow::Result<()> {
        let (name, wasm, input) = match self.config.wordcount.clone() {
            Some(w) => ("bench-cold-wordcount", w, serde_json::json!({"text": "a b a"}).to_string().into_bytes()),
            None => ("bench-cold-spin", SPIN_WAT.as_bytes().to_vec(), b"1000".to_vec()),
        };
        self.push(name, &wasm).await?;
        let mut compile = Vec::new();
        let mut artifact = Vec::new();
        for round in 0..3 {
            let cache = self.cache_dir.path().join(format!("cold{round}"));
            for (phase, out) in [("compile", &mut compile), ("artifact", &mut artifact)] {
                let q = self.queue(&format!("cold{round}{phase}"));
                let mut w = self.spawn_worker(&q, &["--concurrency", "1"], &cache)?;
                tokio::time::sleep(Duration::from_millis(700)).await;
                let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
                let submit = now_us();
                let id = self.client.enqueue(name, &input, &opts).await?.id;
                self.wait_until_done(&q, 1, Duration::from_secs(60)).await?;
                let finished = self.task_fields(std::slice::from_ref(&id), &[field::FINISHED_US]).await?[0][0].context("no result")?;
                out.push(finished.saturating_sub(submit) as f64 / 1000.0);
                w.terminate();
                let _ = tokio::task::spawn_blocking(move || w.child.wait()).await;
                self.drop_queue(&q).await?;
            }
        }
        compile.sort_by(f64::total_cmp);
        artifact.sort_by(f64::total_cmp);
        let size = format!("{} ({} KB)", name.trim_start_matches("bench-cold-"), wasm.len() / 1024);
        self.report.push(Metric::new("cold start", "first task, no artifact (fetch + compile + run)", compile[1], "ms").note(&size));
        self.report.push(Metric::new("cold start", "first task, artifact on disk (fetch + load + run)", artifact[1], "ms").note(&size));
        Ok(())
    }

    /// Redis memory per pending task (empty input), from used_memory before and after.
    async fn memory(&mut self) -> anyhow::Result<()> {
        self.push("bench-noop", NOOP_WAT.as_bytes()).await?;
        let q = self.queue("memory");
        let mut conn = self.client.conn();
        let n = 50_000;
        let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
        // The queue's fixed keys first, so that only per-task memory is counted.
        self.client.enqueue("bench-noop", b"", &opts).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let at = self.client.db().anchor(&q);
        let before = used_memory(&mut conn, &at).await?;
        self.client.enqueue_bulk("bench-noop", &vec![Vec::new(); n], &opts).await?;
        // Let Redis finish rehashing its key table (both tables exist meanwhile) and free the
        // query buffers of the bulk calls.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = used_memory(&mut conn, &at).await?;
        let per_task = (after.saturating_sub(before)) as f64 / n as f64;
        let hash: Option<u64> = self.client.db().task_memory(&mut conn, &TaskId::new(q.clone(), 2)).await.ok().flatten();
        // (MEMORY USAGE names its key, so it is routed to the right shard by itself.)
        self.report.push(
            Metric::new("memory", "Redis memory per pending no-op task", per_task, "bytes")
                .note(&format!("used_memory delta over {n} tasks with empty input; task hash alone {} bytes", hash.unwrap_or(0))),
        );
        self.drop_queue(&q).await?;
        Ok(())
    }

    /// Deletes a bench queue's keys.
    async fn drop_queue(&self, q: &QueueName) -> anyhow::Result<()> {
        Ok(self.client.db().delete_queue(&mut self.client.conn(), q).await?)
    }
}

/// CPU seconds (user + system) the Redis node that holds `key` has used.
async fn redis_cpu(conn: &mut Conn, key: &str) -> anyhow::Result<f64> {
    let info: redis::InfoDict = conn.query_at(key, redis::cmd("INFO").arg("cpu")).await?;
    Ok(info.get::<f64>("used_cpu_user").context("no used_cpu_user in INFO")? + info.get::<f64>("used_cpu_sys").context("no used_cpu_sys in INFO")?)
}

/// `used_memory` of the node that holds `key` (on a Cluster: that key's shard).
async fn used_memory(conn: &mut Conn, key: &str) -> anyhow::Result<u64> {
    let info: redis::InfoDict = conn.query_at(key, redis::cmd("INFO").arg("memory")).await?;
    info.get("used_memory").context("no used_memory in INFO")
}

/// A wordcount input of about `bytes` bytes: web-server log lines (many distinct words: ids,
/// times, paths) as the `text` of `{"text": ..., "top": 5}`.
fn wordcount_input(bytes: usize) -> Vec<u8> {
    let mut text = String::with_capacity(bytes + 128);
    let mut i = 0u64;
    while text.len() < bytes.saturating_sub(32) {
        text.push_str(&format!("GET /api/users/{} 200 {}ms user={} region=eu-west cache=hit\n", i % 997, i % 89, i % 4099));
        i += 1;
    }
    serde_json::json!({ "text": text, "top": 5 }).to_string().into_bytes()
}
