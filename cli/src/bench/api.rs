//! The `api` scenario: `wasmq serve`'s router (the library the binary serves) in this process
//! on a 127.0.0.1 ephemeral port, driven over keep-alive HTTP/1.1 connections:
//!
//! - **enqueue rate**: `--api-clients` clients, each on one connection, send
//!   `POST /v1/queues/{q}/tasks` back to back until `--tasks` tasks are enqueued;
//! - **read latency under that load**: meanwhile 4 more clients read `GET /v1/tasks/{id}` of
//!   random tasks of the queue, one request at a time, and each request's time is recorded;
//! - **the Redis cost of each dashboard page** with `--page-tasks` (1,000,000) pending tasks, plus
//!   finished and dead ones, in a queue: `INFO stats`'s `total_commands_processed` before and
//!   after one request, less the first `INFO` itself (Redis counts a command once it ran, so the
//!   second `INFO` is not in its own count). Commands that scripts run count too, as Redis counts
//!   them. Nothing else talks to that Redis meanwhile (the in-process server's wake-up listener is
//!   idle without long polls): run it with `--fresh-redis`.
//!
//! Every loop is bounded (request counts, a timeout per request) and every connection goes to
//! loopback. The load generator shares the process and its two runtime threads with the server:
//! the figures are those of one small host doing both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use wasmq::client::{Client, EnqueueOptions};
use wasmq::queue::TaskId;
use wasmq::worker::{QueueWeight, WorkerConfig};

use super::{Bench, Metric, NOOP_WAT, pct};

/// A task that traps: the dead tasks of the pages' queue.
const TRAP_WAT: &str = r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#;

/// Clients that read tasks while the others enqueue.
const READERS: usize = 4;
/// Tasks the readers pick from (enqueued before the load starts).
const READ_POOL: usize = 1000;
/// Longest a request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Finished tasks in the pages' queue, besides the pending ones.
const PAGE_SUCCEEDED: usize = 10_000;
const PAGE_DEAD: usize = 1_000;

/// One keep-alive HTTP/1.1 connection to the server.
struct Http {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None }
    }

    /// One request: (status, body). Reconnects when the server closed the connection.
    async fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, Vec<u8>)> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(method, path, body))
            .await
            .with_context(|| format!("{method} {path}: no answer in {REQUEST_TIMEOUT:?}"))?
    }

    async fn exchange(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, Vec<u8>)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(BufReader::new(s));
        }
        let s = self.stream.as_mut().expect("connected above");
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(b) = body {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        s.get_mut().write_all(&bytes).await?;

        // The head: a status line and at most 100 header lines.
        let mut line = String::new();
        s.read_line(&mut line).await?;
        let status: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).with_context(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        for _ in 0..100 {
            line.clear();
            if s.read_line(&mut line).await? == 0 {
                bail!("the connection closed in the response head");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else { continue };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = Some(v.parse::<usize>()?),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => close = v == "close",
                _ => {}
            }
        }
        let mut out = Vec::new();
        if chunked {
            // At most 1,000,000 chunks: a page is a few of them.
            for _ in 0..1_000_000 {
                line.clear();
                s.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or_default(), 16)?;
                let mut chunk = vec![0; n + 2];
                s.read_exact(&mut chunk).await?;
                out.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        } else {
            let n = length.context("a response without Content-Length or chunks")?;
            out.resize(n, 0);
            s.read_exact(&mut out).await?;
        }
        if close {
            self.stream = None;
        }
        Ok((status, out))
    }
}

/// `total_commands_processed` of the bench's Redis.
async fn commands(client: &Client) -> anyhow::Result<u64> {
    let info: redis::InfoDict = redis::cmd("INFO").arg("stats").query_async(&mut client.conn()).await?;
    info.get("total_commands_processed").context("no total_commands_processed in INFO stats")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    bench.push("bench-noop", NOOP_WAT.as_bytes()).await?;
    bench.push("bench-trap", TRAP_WAT.as_bytes()).await?;
    // The server: the router `wasmq serve` runs, over a client of its own, on loopback.
    let redis = bench.client.redis().clone();
    let client = Client::with_conn(redis.clone(), redis.connect().await?, bench.client.db().clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = wasmq_serve::ServeConfig {
        max_module_size: wasmq::store::DEFAULT_MAX_MODULE_SIZE,
        max_input_size: wasmq::client::DEFAULT_MAX_INPUT_SIZE,
        ..Default::default()
    }
    .for_address(addr)?;
    let app = wasmq_serve::router(client, config)?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let result = async {
        load(bench, addr).await?;
        pages(bench, addr).await
    }
    .await;
    server.abort();
    result
}

/// Enqueue rate and read latency, 3 runs.
async fn load(bench: &mut Bench, addr: SocketAddr) -> anyhow::Result<()> {
    let n = bench.config.tasks;
    let clients = bench.config.api_clients;
    let (mut rates, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
    let mut reads_total = 0;
    for round in 0..3 {
        let q = bench.queue(&format!("api{round}"));
        let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
        let pool: Arc<Vec<TaskId>> =
            Arc::new(bench.client.enqueue_bulk("bench-noop", &vec![Vec::new(); READ_POOL], &opts).await?.into_iter().map(|e| e.id).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let path = format!("/v1/queues/{q}/tasks");
        let body = br#"{"module": "bench-noop", "input": ""}"#;

        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let (pool, done) = (pool.clone(), done.clone());
                tokio::spawn(async move {
                    let mut http = Http::new(addr);
                    let mut times = Vec::new();
                    // Bounded: stops with the enqueuers, or after 10 reads per enqueue.
                    while !done.load(Ordering::Relaxed) && times.len() < 10 * n.max(100) {
                        let id = &pool[fastrand::usize(..pool.len())];
                        let t = Instant::now();
                        let (status, body) = http.request("GET", &format!("/v1/tasks/{id}"), None).await?;
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                        ensure!(status == 200, "GET /v1/tasks/{id}: {status} {}", String::from_utf8_lossy(&body));
                    }
                    anyhow::Ok(times)
                })
            })
            .collect();
        let start = Instant::now();
        let writers: Vec<_> = (0..clients)
            .map(|_| {
                let (next, path) = (next.clone(), path.clone());
                tokio::spawn(async move {
                    let mut http = Http::new(addr);
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let (status, reply) = http.request("POST", &path, Some(body)).await?;
                        ensure!(status == 201, "POST {path}: {status} {}", String::from_utf8_lossy(&reply));
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        let mut failed = None;
        for w in writers {
            if let Err(e) = w.await.map_err(anyhow::Error::from).and_then(|r| r) {
                failed.get_or_insert(e);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        let mut times = Vec::new();
        for r in readers {
            match r.await.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(t) => times.extend(t),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        let stats = bench.client.stats(&q).await?;
        bench.drop_queue(&q).await?;
        if let Some(e) = failed {
            return Err(e);
        }
        ensure!(stats.pending as usize == n + READ_POOL, "{} tasks pending after {n} enqueues through the API and {READ_POOL} in bulk", stats.pending);
        times.sort_by(f64::total_cmp);
        rates.push(n as f64 / secs);
        p50s.push(pct(&times, 0.5));
        p99s.push(pct(&times, 0.99));
        reads_total += times.len();
    }
    let note = format!("median of 3 runs of {n} enqueues over {clients} keep-alive connections");
    bench.report.push(Metric::new("api", &format!("enqueue rate, POST /v1/queues/{{q}}/tasks, {clients} clients"), median(rates), "tasks/s").note(&note));
    let note = format!("{READERS} clients reading during the enqueue load; median of 3 runs ({} reads in all)", reads_total);
    bench.report.push(Metric::new("api", "GET /v1/tasks/{id} p50 under enqueue load", median(p50s), "ms").note(&note));
    bench.report.push(Metric::new("api", "GET /v1/tasks/{id} p99 under enqueue load", median(p99s), "ms").note(&note));
    Ok(())
}

/// The Redis commands (and time) of one request of each dashboard page, with many tasks queued.
async fn pages(bench: &mut Bench, addr: SocketAddr) -> anyhow::Result<()> {
    let pending = bench.config.page_tasks;
    let succeeded = PAGE_SUCCEEDED.min(pending.max(10));
    let dead = PAGE_DEAD.min(pending.max(10));
    let q = bench.queue("pages");
    let result = async {
        // Finished tasks first (a worker in this process runs them), then the pending ones.
        let opts = EnqueueOptions { queue: q.clone(), ..Default::default() };
        let ok = bench.client.enqueue_bulk("bench-noop", &vec![Vec::new(); succeeded], &opts).await?;
        let dead_opts = EnqueueOptions { max_attempts: Some(1), ..opts.clone() };
        let failed = bench.client.enqueue_bulk("bench-trap", &vec![Vec::new(); dead], &dead_opts).await?;
        let config = WorkerConfig {
            queues: vec![QueueWeight { queue: q.clone(), weight: 1 }],
            concurrency: 2,
            exit_when_idle: true,
            sandbox: wasmq::sandbox::SandboxConfig { max_concurrency: 2, cache_dir: Some(bench.cache_dir.path().join("warm")), ..Default::default() },
            ..WorkerConfig::default()
        };
        let worker = wasmq::worker::run(bench.client.redis().clone(), bench.client.db().clone(), config, tokio::time::sleep(Duration::from_secs(600)));
        worker.await?;
        let stats = bench.client.stats(&q).await?;
        ensure!(stats.succeeded as usize == succeeded && stats.dead as usize == dead, "the worker left {stats:?}");
        let t = Instant::now();
        let chunk = vec![Vec::new(); 100_000.min(pending)];
        let mut left = pending;
        while left > 0 {
            let k = left.min(chunk.len());
            bench.client.enqueue_bulk("bench-noop", &chunk[..k], &opts).await?;
            left -= k;
        }
        eprintln!("    {pending} pending tasks enqueued in {:.1} s", t.elapsed().as_secs_f64());

        // (as reported, as requested)
        let pages = [
            ("/", "/".to_string()),
            ("/queues/{q}?state=succeeded", format!("/queues/{q}?state=succeeded")),
            ("/queues/{q}?state=dead", format!("/queues/{q}?state=dead")),
            ("/queues/{q} (pending)", format!("/queues/{q}")),
            ("/tasks/{id} (succeeded)", format!("/tasks/{}", ok[0].id)),
            ("/tasks/{id} (dead)", format!("/tasks/{}", failed[0].id)),
            ("/workers", "/workers".to_string()),
            ("/modules", "/modules".to_string()),
            ("/metrics", "/metrics".to_string()),
        ];
        let mut http = Http::new(addr);
        let setting = format!("{pending} pending, {succeeded} succeeded, {dead} dead tasks in the queue");
        for (name, page) in &pages {
            let (mut counts, mut times) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                let before = commands(&bench.client).await?;
                let t = Instant::now();
                let (status, body) = http.request("GET", page, None).await?;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let after = commands(&bench.client).await?;
                ensure!(status == 200, "GET {page}: {status} {}", String::from_utf8_lossy(&body));
                counts.push((after - before).saturating_sub(1) as f64);
                times.push(ms);
            }
            bench.report.push(Metric::new("api", &format!("Redis commands, GET {name}"), median(counts), "commands").note(&setting));
            bench.report.push(Metric::new("api", &format!("time, GET {name}"), median(times), "ms").note("median of 3 requests"));
        }
        anyhow::Ok(())
    }
    .await;
    bench.drop_queue(&q).await?;
    result
}
