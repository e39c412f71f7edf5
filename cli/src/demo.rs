//! `wasmq demo`: the whole pipeline on one machine. Builds the example tasks, uses the Redis at
//! --redis-url (or a throwaway `redis-server` when none answers there), pushes the modules,
//! enqueues a mix of tasks and priorities and a map-reduce flow, runs a worker until the queue
//! drains, and prints the results.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use super::table::Table;
use super::{Global, Outcome, exit};
use wasmq::client::FlowOutput;
use wasmq::client::{Client, EnqueueOptions};
use wasmq::queue::{ParentFailure, TaskState};
use wasmq::queue::{QueueName, TaskId};
use wasmq::sandbox::{Sandbox, SandboxConfig};
use wasmq::worker::{QueueWeight, WorkerConfig};
use wasmq_testkit::examples;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Always start a throwaway redis-server, even if one answers at --redis-url.
    #[arg(long)]
    pub fresh_redis: bool,
    /// Worker concurrency.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
}

const LOGS: [&str; 4] = [
    "GET /index.html 200 12ms\nGET /api/users 200 45ms\nPOST /api/login 401 8ms\nGET /api/users 200 39ms\nGET /favicon.ico 404 1ms",
    "ERROR db timeout on shard 3\nWARN retrying query users_by_id\nERROR db timeout on shard 3\nINFO recovered after 2 retries",
    "user 42 viewed product 7\nuser 42 added product 7 to cart\nuser 17 viewed product 7\nuser 42 checked out cart",
    "the quick brown fox jumps over the lazy dog and the dog sleeps while the fox runs",
];

pub async fn run(g: &Global, a: DemoArgs) -> Outcome {
    let started = Instant::now();
    eprintln!("==> building the example tasks (wasm32-wasip1 modules and wasm32-wasip2 components)");
    let (p1, p2) = tokio::task::spawn_blocking(examples::build_both).await??;
    let wat = examples::wat_task()?;

    let (mut g, _server) = super::redis_or_throwaway(g, a.fresh_redis).await?;
    // The demo works under a prefix of its own (`<prefix>-demo`), so that its keys never mix with
    // real data on a shared Redis, and clears only that namespace: a rerun starts clean.
    if !g.prefix.ends_with("-demo") {
        g.prefix = format!("{}-demo", g.prefix);
    }
    let client = g.client().await?;
    clear_namespace(&client).await?;

    eprintln!("==> pushing modules (compiled once to validate, stored under their SHA-256)");
    let sandbox = Sandbox::new(SandboxConfig { max_concurrency: 1, cache_dir: None, pooling: false, ..Default::default() })?;
    let mut modules = Vec::new();
    for (name, path, target) in p1
        .iter()
        .map(|(n, p)| (n.clone(), p.clone(), "p1"))
        .chain(p2.iter().map(|(n, p)| (format!("{n}-p2"), p.clone(), "p2")))
        .chain(std::iter::once(("uppercase-wat".to_string(), wat.clone(), "wat")))
    {
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (binary, _) = wasmq::sandbox::prepare(&bytes)?;
        let kind = sandbox.validate(&binary)?;
        let pushed = client.store().push(&binary, kind, Some(&name)).await?;
        eprintln!("    {name:<22} {} {:>7} bytes  {} ({target})", &pushed.sha256[..16], binary.len(), kind.as_str());
        modules.push(name);
    }

    eprintln!("==> enqueueing tasks with mixed priorities");
    let queue = QueueName::new("demo")?;
    let opts = |priority: i64| EnqueueOptions { queue: queue.clone(), priority, max_attempts: Some(2), ..Default::default() };
    let mut tasks: Vec<(TaskId, String, i64)> = Vec::new();
    let mut add = |id: TaskId, module: &str, p: i64| tasks.push((id, module.to_string(), p));
    for (i, text) in LOGS.iter().enumerate() {
        let module = if i % 2 == 0 { "wordcount" } else { "wordcount-p2" };
        let input = serde_json::json!({ "text": text, "top": 3 }).to_string();
        let p = [0, 5, 9, 5][i];
        add(client.enqueue(module, input.as_bytes(), &opts(p)).await?.id, module, p);
    }
    let columns = serde_json::json!({
        "method": "zscore",
        "columns": { "age": [23, 35, 47, 51, 62], "sessions": [3, 14, 2, 8, 40] }
    });
    add(client.enqueue("normalize", columns.to_string().as_bytes(), &opts(3)).await?.id, "normalize", 3);
    let readings = serde_json::json!({
        "readings": [
            {"sensor": "boiler", "ts": 1, "value": 78.0}, {"sensor": "boiler", "ts": 2, "value": 83.5},
            {"sensor": "boiler", "ts": 3, "value": 86.1}, {"sensor": "intake", "ts": 1, "value": 4.2}
        ],
        "rules": [{"sensor": "boiler", "above": 80.0, "for": 2, "severity": "critical"}, {"sensor": "*", "below": 5.0}]
    });
    add(client.enqueue("threshold-alert-p2", readings.to_string().as_bytes(), &opts(9)).await?.id, "threshold-alert-p2", 9);
    add(client.enqueue("uppercase-wat", b"hello from hand-written wasm", &opts(1)).await?.id, "uppercase-wat", 1);
    // A task that fails: its rule has no threshold. It is retried once, then lands in the dead set.
    let bad = serde_json::json!({ "readings": [], "rules": [{"sensor": "x"}] });
    add(client.enqueue("threshold-alert", bad.to_string().as_bytes(), &opts(0)).await?.id, "threshold-alert", 0);
    eprintln!("    {} tasks on queue {queue}", tasks.len());
    // Map-reduce: every log line a chunk, counted in full by wordcount, merged by a tree of
    // merge-counts reducers over pairs (what `wasmq map` does).
    let chunks: Vec<Vec<u8>> = LOGS.iter().flat_map(|t| t.lines()).map(|l| serde_json::json!({ "text": l, "counts": true }).to_string().into_bytes()).collect();
    let flow = client.map("wordcount", &chunks, Some("merge-counts"), 2, ParentFailure::Block, &opts(0)).await?;
    eprintln!("    flow {flow}: wordcount over {} log lines, merge-counts over pairs", chunks.len());

    eprintln!("==> running a worker (concurrency {}) until the queue drains", a.concurrency);
    let config = WorkerConfig {
        queues: vec![QueueWeight { queue: queue.clone(), weight: 1 }],
        concurrency: a.concurrency.max(1),
        prefetch: Some(0),
        exit_when_idle: true,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(200),
        sandbox: SandboxConfig { max_concurrency: a.concurrency.max(1), ..SandboxConfig::default() },
        ..WorkerConfig::default()
    };
    let report = wasmq::worker::run(g.redis()?, g.db()?, config, std::future::pending()).await?;

    print_results(&client, &tasks).await?;
    print_flow(&client, &flow).await?;
    let stats = client.stats(&queue).await?;
    println!(
        "\n{} succeeded, {} dead, {} retried; worker report: {} succeeded, {} retries, {} dead; {:.1}s in all",
        stats.succeeded,
        stats.dead,
        stats.retried_total,
        report.succeeded,
        report.retried,
        report.dead,
        started.elapsed().as_secs_f64()
    );
    if _server.is_none() {
        println!("Inspect a task: wasmq --prefix {} status {}", g.prefix, tasks[0].0);
    }
    Ok(exit::OK)
}

/// Deletes the keys of an earlier demo run (only keys under the demo's own prefix).
async fn clear_namespace(client: &Client) -> anyhow::Result<()> {
    let mut conn = client.conn();
    let pattern = format!("{}:*", client.db().keys().prefix());
    let mut cursor: u64 = 0;
    // Bounded: a demo namespace holds a few dozen keys.
    for _ in 0..10_000 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500).query_async(&mut conn).await?;
        for k in keys {
            let _: () = redis::cmd("DEL").arg(k).query_async(&mut conn).await?;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    Ok(())
}

/// The flow's state and the top words of its merged count.
async fn print_flow(client: &Client, id: &TaskId) -> anyhow::Result<()> {
    let f = client.flow(id).await?.with_context(|| format!("flow {id} vanished"))?;
    let mut line = format!("flow {id}: {}, {} children and {} reducers", f.state.as_str(), f.children, f.reducers);
    if let Ok(FlowOutput::Reduced(out)) = client.flow_output(&f).await
        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out)
    {
        let top: Vec<String> =
            v["top"].as_array().into_iter().flatten().take(5).map(|w| format!("{} {}", w["word"].as_str().unwrap_or("?"), w["count"])).collect();
        line.push_str(&format!("; {} words, top: {}", v["total_words"], top.join(", ")));
    }
    println!("\n{}", wasmq::text::escape_control(&line, false));
    Ok(())
}

async fn print_results(client: &Client, tasks: &[(TaskId, String, i64)]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (id, module, p) in tasks {
        let r = client.status(id).await?.with_context(|| format!("task {id} vanished"))?;
        rows.push((r.started_ms.unwrap_or(u64::MAX), id, module, p, r));
    }
    // In the order the worker started them: priorities first, FIFO within one.
    rows.sort_by_key(|(started, id, ..)| (*started, id.seq));
    let mut t = Table::new(&["TASK", "MODULE", "PRIO", "STATE", "ATTEMPTS", "TIME", "OUTPUT / ERROR"]);
    for (_, id, module, p, r) in rows {
        let shown = match r.state {
            TaskState::Succeeded => r.output_text.clone().unwrap_or_else(|| format!("{} bytes", r.output_bytes.unwrap_or(0))),
            _ => format!("{}: {}", r.error_kind.as_deref().unwrap_or("?"), r.error.as_deref().unwrap_or("")),
        };
        let shown = shown.replace('\n', " ");
        let shown: String = if shown.chars().count() > 70 { shown.chars().take(69).chain(['…']).collect() } else { shown };
        t.row(vec![
            id.to_string(),
            module.clone(),
            p.to_string(),
            r.state.to_string(),
            r.attempts.to_string(),
            r.duration_us.map(|d| format!("{:.2} ms", d as f64 / 1000.0)).unwrap_or_default(),
            shown,
        ]);
    }
    println!();
    print!("{}", t.render());
    Ok(())
}
