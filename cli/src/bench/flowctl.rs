//! What flow control costs the claim script: `claim.lua` called straight from the bench (no
//! worker, so that only Redis's work is timed), 64 tasks per call, over a queue of pending no-op
//! tasks: without limits; with a rate limit that never binds (1,000,000 per ms); with a
//! concurrency limit that never binds; without limits but an expiry on every task; with the tasks
//! spread over 10,000 groups (`enqueue --group`: claims go round-robin across them); and the same
//! with group limits that never bind. Each is
//! reported as Redis CPU per claimed task (`used_cpu_user + used_cpu_sys` over the claims: the
//! script's own cost, whatever the client) and wall time per task, and the CPU as a ratio to the
//! first (median of 3 runs each).

use std::time::{Duration, Instant};

use wasmq::client::EnqueueOptions;
use wasmq::queue::{ClaimRequest, GroupKey, QueueLimits, RateLimit};

use super::{Bench, Metric, NOOP_WAT, redis_cpu};

/// Tasks per claim call.
const BATCH: usize = 64;

/// Groups of the grouped cases.
const GROUPS: usize = 10_000;

struct Case {
    label: &'static str,
    limits: QueueLimits,
    expires: bool,
    /// Tasks spread round-robin over this many groups (0: none).
    groups: usize,
}

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    b.push("bench-noop", NOOP_WAT.as_bytes()).await?;
    let n = b.config.tasks;
    let never = RateLimit { n: 1_000_000, per: Duration::from_millis(1) };
    let none = QueueLimits::default();
    let cases = [
        Case { label: "no limit", limits: none, expires: false, groups: 0 },
        Case { label: "rate limit 1000000/1ms (never binds)", limits: QueueLimits { rate: Some(never), ..none }, expires: false, groups: 0 },
        Case { label: "concurrency limit (never binds)", limits: QueueLimits { concurrency: Some(u64::MAX / 2), ..none }, expires: false, groups: 0 },
        Case { label: "an expiry on every task", limits: none, expires: true, groups: 0 },
        Case { label: "10,000 groups, no limit", limits: none, expires: false, groups: GROUPS },
        Case {
            label: "10,000 groups, group limits (never bind)",
            limits: QueueLimits { group_concurrency: Some(u64::MAX / 2), group_rate: Some(never), ..none },
            expires: false,
            groups: GROUPS,
        },
    ];
    let mut base = None;
    for (i, case) in cases.iter().enumerate() {
        let mut per_task = Vec::new();
        let mut cpu_per_task = Vec::new();
        for round in 0..3 {
            let q = b.queue(&format!("flowctl{i}x{round}"));
            let mut opts = EnqueueOptions {
                queue: q.clone(),
                expires: case.expires.then_some(wasmq::parse::Expires::After(Duration::from_secs(3600))),
                ..Default::default()
            };
            if case.groups == 0 {
                b.client.enqueue_bulk("bench-noop", &vec![Vec::new(); n], &opts).await?;
            } else {
                // Group g gets tasks g, g + groups, ...: every group has work until the end.
                for g in 0..case.groups.min(n) {
                    opts.group = Some(GroupKey::new(&format!("tenant-{g}"))?);
                    let tasks = (n - g).div_ceil(case.groups);
                    b.client.enqueue_bulk("bench-noop", &vec![Vec::new(); tasks], &opts).await?;
                }
            }
            b.client.set_limits(&q, case.limits).await?;
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
