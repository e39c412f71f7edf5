//! What flow control costs the claim script: `claim.lua` called straight from the bench (no
//! worker, so that only Redis's work is timed), 64 tasks per call, over a queue of pending no-op
//! tasks: without limits; with a rate limit that never binds (1,000,000 per ms); with a
//! concurrency limit that never binds; and without limits but an expiry on every task. Each is
//! reported as Redis CPU per claimed task (`used_cpu_user + used_cpu_sys` over the claims: the
//! script's own cost, whatever the client) and wall time per task, and the CPU as a ratio to the
//! first (median of 3 runs each).

use std::time::{Duration, Instant};

use wasmq::client::EnqueueOptions;
use wasmq::queue::{ClaimRequest, RateLimit};

use super::{Bench, Metric, NOOP_WAT, redis_cpu};

/// Tasks per claim call.
const BATCH: usize = 64;

struct Case {
    label: &'static str,
    concurrency: Option<u64>,
    rate: Option<RateLimit>,
    expires: bool,
}

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    b.push("bench-noop", NOOP_WAT.as_bytes()).await?;
    let n = b.config.tasks;
    let cases = [
        Case { label: "no limit", concurrency: None, rate: None, expires: false },
        Case {
            label: "rate limit 1000000/1ms (never binds)",
            concurrency: None,
            rate: Some(RateLimit { n: 1_000_000, per: Duration::from_millis(1) }),
            expires: false,
        },
        Case { label: "concurrency limit (never binds)", concurrency: Some(u64::MAX / 2), rate: None, expires: false },
        Case { label: "an expiry on every task", concurrency: None, rate: None, expires: true },
    ];
    let mut base = None;
    for (i, case) in cases.iter().enumerate() {
        let mut per_task = Vec::new();
        let mut cpu_per_task = Vec::new();
        for round in 0..3 {
            let q = b.queue(&format!("flowctl{i}x{round}"));
            let opts = EnqueueOptions {
                queue: q.clone(),
                expires: case.expires.then_some(wasmq::parse::Expires::After(Duration::from_secs(3600))),
                ..Default::default()
            };
            b.client.enqueue_bulk("bench-noop", &vec![Vec::new(); n], &opts).await?;
            b.client.set_limits(&q, case.concurrency, case.rate).await?;
            let mut conn = b.client.conn();
            let request = ClaimRequest { n: BATCH, max_bytes: 0, lease: Duration::from_secs(600), worker: "bench", max_input: 0, run_slots: BATCH };
            let anchor = b.client.db().anchor(&q);
            let cpu_before = redis_cpu(&mut conn, &anchor).await?;
            let start = Instant::now();
            let mut claimed = 0;
            while claimed < n {
                let batch = b.client.db().claim(&mut conn, &q, request).await?;
                anyhow::ensure!(!batch.tasks.is_empty(), "{}: a claim took nothing after {claimed} of {n} tasks", case.label);
                claimed += batch.tasks.len();
            }
            per_task.push(start.elapsed().as_secs_f64() * 1e6 / n as f64);
            cpu_per_task.push((redis_cpu(&mut conn, &anchor).await? - cpu_before) * 1e6 / n as f64);
            b.drop_queue(&q).await?;
        }
        per_task.sort_by(f64::total_cmp);
        cpu_per_task.sort_by(f64::total_cmp);
        let cpu = cpu_per_task[1];
        let base_cpu = *base.get_or_insert(cpu);
        let note = format!("median of 3 runs of {n} tasks claimed {BATCH} per call; {:.2}x the Redis CPU of claims without limits", cpu / base_cpu);
        b.report.push(Metric::new("flow-control", &format!("Redis CPU per claimed task, {}", case.label), cpu, "µs").note(&note));
        b.report.push(Metric::new("flow-control", &format!("claim wall time per task, {}", case.label), per_task[1], "µs"));
    }
    Ok(())
}
