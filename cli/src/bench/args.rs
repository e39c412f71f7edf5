//! `wasmq bench`: see `crate::bench`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::{Bench, BenchConfig, Scenario};
use crate::{Global, Outcome, exit, value};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scenarios to run (repeatable; default: all).
    #[arg(long, short, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Tasks per enqueue and throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub tasks: usize,
    /// Spread the throughput runs over this many queues (against a Redis Cluster, queues on
    /// different shards).
    #[arg(long, default_value_t = 1)]
    pub queues: usize,
    /// Worker concurrency in the throughput runs.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// Paced load for the latency scenario: tasks per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Paced load for the latency scenario: how long.
    #[arg(long, default_value = "10s", value_parser = value::positive_duration)]
    pub duration: Duration,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The flow scenario's corpus: a folder of text files, gzipped or not (Debian's manual pages
    /// by default).
    #[arg(long, default_value = "/usr/share/man")]
    pub corpus: PathBuf,
    /// Children of the flow scenario's wide flow of no-op tasks.
    #[arg(long, default_value_t = 100_000)]
    pub flow_children: usize,
    /// Clients (keep-alive connections) of the api scenario's enqueue load.
    #[arg(long, default_value_t = 16)]
    pub api_clients: usize,
    /// Pending tasks in the queue whose dashboard pages the api scenario measures.
    #[arg(long, default_value_t = 1_000_000)]
    pub page_tasks: usize,
    /// Always start a throwaway redis-server, even if one answers at --redis-url.
    #[arg(long)]
    pub fresh_redis: bool,
}

pub async fn run(g: &Global, a: BenchArgs) -> Outcome {
    if a.tasks == 0 || a.concurrency == 0 {
        anyhow::bail!("--tasks and --concurrency must be at least 1");
    }
    let (g, _server) = crate::redis_or_throwaway(g, a.fresh_redis).await?;
    let mut scenarios = a.scenario.clone();
    if scenarios.is_empty() {
        scenarios = vec![
            Scenario::Enqueue,
            Scenario::Throughput,
            Scenario::Wordcount,
            Scenario::Latency,
            Scenario::Delayed,
            Scenario::ColdStart,
            Scenario::Memory,
            Scenario::Policies,
            Scenario::Flow,
            Scenario::Scripts,
            Scenario::Api,
            Scenario::FlowControl,
        ];
    }
    scenarios.dedup();
    let built = if scenarios.iter().any(|s| matches!(s, Scenario::Wordcount | Scenario::ColdStart | Scenario::Flow)) {
        eprintln!("==> building the example tasks");
        match tokio::task::spawn_blocking(|| wasmq_testkit::examples::build(wasmq_testkit::examples::WasmTarget::P1)).await? {
            Ok(built) => built,
            Err(e) => {
                eprintln!("    cannot build them ({e}); the wordcount and flow scenarios are skipped");
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let example = |name: &str| built.iter().find(|(n, _)| n == name).and_then(|(_, p)| std::fs::read(p).ok());
    let mut worker_env = vec![("WASMQ_REDIS_URL".to_string(), g.redis_url.clone()), ("WASMQ_PREFIX".to_string(), g.prefix.clone())];
    for (k, v) in [("WASMQ_TLS_CA", &g.tls_ca), ("WASMQ_TLS_CERT", &g.tls_cert), ("WASMQ_TLS_KEY", &g.tls_key)] {
        if let Some(p) = v {
            worker_env.push((k.into(), p.display().to_string()));
        }
    }
    let config = BenchConfig {
        scenarios,
        tasks: a.tasks,
        queues: a.queues.max(1),
        concurrency: a.concurrency,
        rate: a.rate,
        duration: a.duration,
        worker_bin: std::env::current_exe().context("cannot find this program's path")?,
        worker_env,
        wordcount: example("wordcount"),
        merge_counts: example("merge-counts"),
        corpus: a.corpus.clone(),
        flow_children: a.flow_children.max(1),
        api_clients: a.api_clients.max(1),
        page_tasks: a.page_tasks,
    };
    let client = g.client().await?;
    let mut conn = client.conn();
    let info: Option<redis::InfoDict> = redis::cmd("INFO").arg("server").query_async(&mut conn).await.ok();
    let redis_version = info.and_then(|i| i.get::<String>("redis_version")).unwrap_or_else(|| "?".into());
    let mut bench = Bench::new(client, config)?;
    bench.report.machine = Some(crate::bench::report_machine(&redis_version));
    bench.run().await?;
    println!("{}", bench.report.table());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&bench.report)?).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(exit::OK)
}
