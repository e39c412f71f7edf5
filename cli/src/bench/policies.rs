//! Scheduling policies compared on two workloads, each run by one worker slot (so that the order
//! of tasks is all that differs):
//!
//! - **batch**: 80 short and long tasks with priorities 1-5, enqueued at once. The figure of merit
//!   is the weighted mean completion time, sum(priority x completion) / sum(priority), which
//!   Smith's rule (wsjf) minimises.
//! - **stream**: for 3 s, short tasks (priorities 2-5) arrive at 90% of what the worker can run
//!   and long priority-1 tasks add another 20%. Ordering by run time / priority alone leaves the
//!   long tasks waiting for as long as short ones keep coming; aging bounds their wait. The rates
//!   are calibrated on this machine by timing a batch of each kind first.
//!
//! Run times are learned by each queue from a few warm-up tasks of two modules (`bench-spin-short`,
//! `bench-spin-long`), as a production queue learns them.

use std::time::{Duration, Instant};

use wasmq::client::EnqueueOptions;
use wasmq::queue::task::field;
use wasmq::queue::{Policy, WsjfSettings};
use wasmq::queue::{QueueName, TaskId};
use wasmq::worker::{QueueWeight, WorkerConfig};

use super::{Bench, Metric, SPIN_WAT};

/// Iterations of the spin task: about 2 ms and 20 ms with fuel metering on this machine class.
const SHORT: u64 = 1_000_000;
const LONG: u64 = 10_000_000;

#[derive(Clone, Copy)]
struct Job {
    long: bool,
    priority: i64,
}

/// The spin module with an export that tells the two variants apart (different bytes, different
/// hash, separately learned run times).
fn variant(name: &str) -> String {
    SPIN_WAT.replacen("(memory (export \"memory\") 1)", &format!("(memory (export \"memory\") 1)\n  (global (export \"{name}\") i32 (i32.const 0))"), 1)
}

fn worker_config(bench: &Bench, q: &QueueName, exit_when_idle: bool) -> WorkerConfig {
    WorkerConfig {
        queues: vec![QueueWeight { queue: q.clone(), weight: 1 }],
        concurrency: 1,
        prefetch: Some(0),
        exit_when_idle,
        sandbox: wasmq::sandbox::SandboxConfig { max_concurrency: 1, cache_dir: Some(bench.cache_dir.path().join("warm")), ..Default::default() },
        ..WorkerConfig::default()
    }
}

async fn enqueue(bench: &Bench, q: &QueueName, job: Job) -> anyhow::Result<TaskId> {
    let (module, n) = if job.long { ("bench-spin-long", LONG) } else { ("bench-spin-short", SHORT) };
    let opts = EnqueueOptions { queue: q.clone(), priority: job.priority, ..Default::default() };
    Ok(bench.client.enqueue(module, n.to_string().as_bytes(), &opts).await?.id)
}

/// A queue with the policy set and the two modules' run times learned.
async fn prepared_queue(bench: &Bench, label: &str, policy: Policy, wsjf: WsjfSettings) -> anyhow::Result<QueueName> {
    let q = bench.queue(&format!("policy-{label}"));
    bench.client.set_policy(&q, policy, wsjf).await?;
    for long in [false, true] {
        for _ in 0..3 {
            enqueue(bench, &q, Job { long, priority: 1 }).await?;
        }
    }
    wasmq::worker::run(bench.client.redis().clone(), bench.client.db().clone(), worker_config(bench, &q, true), std::future::pending()).await?;
    Ok(q)
}

struct Figures {
    /// Sum of the tasks' run times, ms.
    busy_ms: f64,
    weighted_completion: f64,
    worst_wait: f64,
    worst_long_wait: f64,
}

async fn figures(bench: &Bench, ids: &[(TaskId, Job)]) -> anyhow::Result<Figures> {
    let only: Vec<TaskId> = ids.iter().map(|(i, _)| i.clone()).collect();
    let rows = bench.task_fields(&only, &[field::CREATED, field::STARTED, field::FINISHED_US, field::DURATION_US]).await?;
    let (mut wsum, mut wc, mut worst, mut worst_long, mut busy) = (0.0, 0.0, 0.0f64, 0.0f64, 0.0);
    for (row, (_, job)) in rows.iter().zip(ids) {
        busy += row[3].unwrap_or(0) as f64 / 1000.0;
        let (created, started, finished_us) = (row[0].unwrap_or(0), row[1].unwrap_or(0), row[2].unwrap_or(0));
        let completion = finished_us as f64 / 1000.0 - created as f64;
        let wait = started.saturating_sub(created) as f64;
        wsum += job.priority as f64;
        wc += job.priority as f64 * completion;
        worst = worst.max(wait);
        if job.long {
            worst_long = worst_long.max(wait);
        }
    }
    Ok(Figures { busy_ms: busy, weighted_completion: wc / wsum, worst_wait: worst, worst_long_wait: worst_long })
}

async fn batch(bench: &Bench, label: &str, policy: Policy, wsjf: WsjfSettings) -> anyhow::Result<Figures> {
    let q = prepared_queue(bench, &format!("batch{label}"), policy, wsjf).await?;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut jobs: Vec<Job> = (0..80).map(|i| Job { long: i % 4 == 0, priority: rng.i64(1..=5) }).collect();
    rng.shuffle(&mut jobs);
    let mut ids = Vec::new();
    for j in jobs {
        ids.push((enqueue(bench, &q, j).await?, j));
    }
    wasmq::worker::run(bench.client.redis().clone(), bench.client.db().clone(), worker_config(bench, &q, true), std::future::pending()).await?;
    let f = figures(bench, &ids).await?;
    bench.drop_queue(&q).await?;
    Ok(f)
}

/// Mean end-to-end cost of one task of a kind, µs, from a batch of `n` run by one worker slot.
async fn calibrate(bench: &Bench, q: &QueueName, long: bool, n: usize) -> anyhow::Result<f64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push((enqueue(bench, q, Job { long, priority: 1 }).await?, Job { long, priority: 1 }));
    }
    wasmq::worker::run(bench.client.redis().clone(), bench.client.db().clone(), worker_config(bench, q, true), std::future::pending()).await?;
    let only: Vec<TaskId> = ids.into_iter().map(|(i, _)| i).collect();
    let rows = bench.task_fields(&only, &[field::STARTED, field::FINISHED_US]).await?;
    let first = rows.iter().filter_map(|r| r[0]).min().unwrap_or(0) as f64 * 1000.0;
    let last = rows.iter().filter_map(|r| r[1]).max().unwrap_or(0) as f64;
    Ok(((last - first) / n as f64).max(1.0))
}

async fn stream(bench: &Bench, label: &str, policy: Policy, wsjf: WsjfSettings) -> anyhow::Result<Figures> {
    let q = prepared_queue(bench, &format!("stream{label}"), policy, wsjf).await?;
    // Calibrate first, with no other worker on the queue: what one short and one long task cost
    // end to end on this machine (run time plus the claim and result round trips of a worker slot
    // with no prefetch).
    let short_us = calibrate(bench, &q, false, 40).await?;
    let long_us = calibrate(bench, &q, true, 8).await?;
    let done_before = bench.client.stats(&q).await?.succeeded;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(wasmq::worker::run(bench.client.redis().clone(), bench.client.db().clone(), worker_config(bench, &q, false), async move {
        let _ = stop_rx.await;
    }));
    // Each cycle: one long task and as many short ones as make 90% of the cycle; the long task
    // adds 20% more, so a backlog builds up.
    let cycle_us = long_us / 0.2;
    let shorts = ((0.9 * cycle_us / short_us).round() as usize).max(1);
    let per_task = Duration::from_micros((cycle_us / (shorts + 1) as f64) as u64);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut ids = Vec::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(per_task);
    let total = (Duration::from_secs(3).as_micros() / per_task.as_micros().max(1)) as usize;
    for i in 0..total {
        tick.tick().await;
        let job = if i % (shorts + 1) == shorts / 2 { Job { long: true, priority: 1 } } else { Job { long: false, priority: rng.i64(2..=5) } };
        ids.push((enqueue(bench, &q, job).await?, job));
    }
    let n = done_before + ids.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while bench.client.stats(&q).await?.succeeded < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    worker.await??;
    let finished = bench.client.stats(&q).await?.succeeded;
    anyhow::ensure!(finished >= n, "stream {label}: only {} of {} tasks finished within 120 s", finished - done_before, ids.len());
    let arrivals = start.elapsed();
    let f = figures(bench, &ids).await?;
    tracing::debug!(?label, arrivals_s = arrivals.as_secs_f64(), load = f.busy_ms / arrivals.as_millis() as f64, "stream done");
    bench.drop_queue(&q).await?;
    Ok(f)
}

pub async fn run(bench: &mut Bench) -> anyhow::Result<()> {
    bench.push("bench-spin-short", variant("short").as_bytes()).await?;
    bench.push("bench-spin-long", variant("long").as_bytes()).await?;
    let no_aging = WsjfSettings { max_wait: Duration::from_secs(3600), ..WsjfSettings::default() };
    let aging = WsjfSettings { max_wait: Duration::from_millis(300), ..WsjfSettings::default() };
    let batch_note = "80 tasks (60 x ~2 ms, 20 x ~20 ms), priorities 1-5, enqueued at once, one worker slot";
    for (label, policy, wsjf) in [("fifo", Policy::Fifo, no_aging), ("priority", Policy::Priority, no_aging), ("wsjf", Policy::Wsjf, WsjfSettings::default())] {
        let f = batch(bench, label, policy, wsjf).await?;
        bench.report.push(Metric::new("policies", &format!("batch, {label}: weighted mean completion"), f.weighted_completion, "ms").note(batch_note));
        bench.report.push(Metric::new("policies", &format!("batch, {label}: worst wait"), f.worst_wait, "ms"));
    }
    let stream_note = "3 s of arrivals: short tasks (priority 2-5) at 90% load plus long priority-1 tasks at 20%";
    for (label, policy, wsjf) in
        [("priority", Policy::Priority, no_aging), ("wsjf without aging", Policy::Wsjf, no_aging), ("wsjf, max wait 300ms", Policy::Wsjf, aging)]
    {
        let slug: String = label.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let f = stream(bench, &slug, policy, wsjf).await?;
        bench.report.push(Metric::new("policies", &format!("stream, {label}: weighted mean completion"), f.weighted_completion, "ms").note(stream_note));
        bench.report.push(Metric::new("policies", &format!("stream, {label}: worst wait of a long task"), f.worst_long_wait, "ms"));
    }
    Ok(())
}
