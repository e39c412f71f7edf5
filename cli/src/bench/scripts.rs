//! Where Redis spends its time per task, script by script: the queue layer's scripts called
//! directly, as a worker calls them but without a worker, so that each phase is measured alone.
//!
//! For each policy (priority, wsjf) and for tasks that were delayed first: `--tasks` no-op tasks
//! are enqueued, then claimed in batches of [`BATCH`] (claim.lua), then completed as a no-op
//! worker completes them, in batches of [`BATCH`] (complete.lua). Around each phase the bench
//! reads the Redis server's CPU time (`INFO cpu`) and its per-command statistics (`INFO
//! commandstats`): the CPU per task of the phase, and of it, the time of the script as a whole
//! (`evalsha`) and of each command the script called. What the script took beyond its commands
//! is Lua itself: argument parsing, string building, tables.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use wasmq::client::EnqueueOptions;
use wasmq::conn::Conn;
use wasmq::queue::task::field;
use wasmq::queue::{Action, ClaimRequest, Completion};
use wasmq::queue::{Policy, QueueName, Retention, WsjfSettings};

use super::{Bench, Metric, NOOP_WAT};

/// Tasks per claim and per completion call: about what a worker of the default concurrency
/// claims and completes at once when it is busy.
const BATCH: usize = 64;

/// Per-command statistics of the node that holds `key`: name to (calls, µs).
async fn commandstats(conn: &mut Conn, key: &str) -> anyhow::Result<HashMap<String, (u64, u64)>> {
    let text: String = conn.query_at(key, redis::cmd("INFO").arg("commandstats")).await?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((name, rest)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let get = |k: &str| rest.split(',').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok()).unwrap_or(0);
        out.insert(name.to_string(), (get("calls"), get("usec")));
    }
    Ok(out)
}

/// What one phase cost per task: CPU, and µs per command name (the script itself under
/// `evalsha`), largest first.
struct Phase {
    cpu_us: f64,
    commands: Vec<(String, f64)>,
}

async fn measure<F, Fut>(b: &Bench, anchor: &str, n: usize, phase: F) -> anyhow::Result<Phase>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut conn = b.client.conn();
    let (cpu0, stats0) = (super::redis_cpu(&mut conn, anchor).await?, commandstats(&mut conn, anchor).await?);
    phase().await?;
    let (cpu1, stats1) = (super::redis_cpu(&mut conn, anchor).await?, commandstats(&mut conn, anchor).await?);
    let mut commands: Vec<(String, f64)> = stats1
        .iter()
        .filter(|(name, _)| *name != "info")
        .map(|(name, (_, us))| (name.clone(), us.saturating_sub(stats0.get(name).map_or(0, |s| s.1)) as f64 / n as f64))
        .filter(|(_, us)| *us >= 0.05)
        .collect();
    commands.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Phase { cpu_us: (cpu1 - cpu0) / n as f64 * 1e6, commands })
}

/// The commands of a phase as one note: `evalsha 9.1 (lua 4.0): hset 2.0, hmget 1.5, ...`.
fn breakdown(p: &Phase) -> String {
    let script = p.commands.iter().find(|(c, _)| c == "evalsha").map_or(0.0, |c| c.1);
    let inner: f64 = p.commands.iter().filter(|(c, _)| c != "evalsha").map(|c| c.1).sum();
    let parts: Vec<String> = p.commands.iter().filter(|(c, _)| c != "evalsha").take(8).map(|(c, us)| format!("{c} {us:.2}")).collect();
    format!("µs per task: script {script:.2} (Lua itself {:.2}); its commands: {}", (script - inner).max(0.0), parts.join(", "))
}

pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    b.push("bench-noop", NOOP_WAT.as_bytes()).await?;
    let n = b.config.tasks;
    for (case, policy, delayed) in [("priority", Policy::Priority, false), ("wsjf", Policy::Wsjf, false), ("delayed", Policy::Priority, true)] {
        let q = QueueName::new(&format!("bench-scripts-{case}"))?;
        b.drop_queue(&q).await?;
        if policy == Policy::Wsjf {
            b.client.set_policy(&q, policy, WsjfSettings::default()).await?;
        }
        let anchor = b.client.db().anchor(&q);
        // Delayed tasks are due 1 ms after the enqueue: the claims promote them.
        let opts = EnqueueOptions { queue: q.clone(), delay: delayed.then_some(Duration::from_millis(1)), ..Default::default() };
        let enqueue = measure(b, &anchor, n, || async {
            for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
                b.client.enqueue_bulk("bench-noop", &vec![Vec::new(); chunk.len()], &opts).await?;
            }
            Ok(())
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut claimed = Vec::with_capacity(n);
        let claim = measure(b, &anchor, n, || async {
            let mut conn = b.client.conn();
            // Bounded: every call claims at least one task while any is left.
            for _ in 0..n.div_ceil(BATCH) + 16 {
                let r = ClaimRequest { n: BATCH, max_bytes: 0, lease: Duration::from_secs(300), worker: "bench-scripts", max_input: 0, run_slots: BATCH };
                let batch = b.client.db().claim(&mut conn, &q, r).await?;
                if batch.tasks.is_empty() && claimed.len() >= n {
                    break;
                }
                claimed.extend(batch.tasks.into_iter().map(|t| (t.id.seq, t.token)));
            }
            anyhow::ensure!(claimed.len() == n, "claimed {} of {n} tasks", claimed.len());
            Ok(())
        })
        .await?;
        let complete = measure(b, &anchor, n, || async {
            let mut conn = b.client.conn();
            for chunk in claimed.chunks(BATCH) {
                // The fields a worker sends for a no-op task that succeeded.
                let now_us = wasmq::parse::now_us();
                let records: Vec<Completion> = chunk
                    .iter()
                    .map(|&(seq, token)| Completion {
                        seq,
                        token,
                        action: Action::Succeeded,
                        delay: Duration::ZERO,
                        error: None,
                        fields: vec![
                            (field::DURATION_US, b"250".to_vec()),
                            (field::FUEL_USED, b"1".to_vec()),
                            (field::FINISHED_US, now_us.to_string().into_bytes()),
                            (field::STARTED, (now_us / 1000).to_string().into_bytes()),
                            (field::OUTPUT, Vec::new()),
                        ],
                        children: Vec::new(),
                    })
                    .collect();
                let refs: Vec<&Completion> = records.iter().collect();
                let applied = b.client.db().complete(&mut conn, &q, "bench-scripts", Retention::default(), &refs).await?;
                anyhow::ensure!(applied.iter().all(|a| *a), "a completion was refused");
            }
            Ok(())
        })
        .await
        .context("completing")?;
        let total = claim.cpu_us + complete.cpu_us;
        b.report.push(Metric::new("scripts", &format!("{case}: enqueue (bulk), Redis CPU per task"), enqueue.cpu_us, "µs").note(&breakdown(&enqueue)));
        b.report.push(Metric::new("scripts", &format!("{case}: claim, Redis CPU per task"), claim.cpu_us, "µs").note(&breakdown(&claim)));
        b.report.push(Metric::new("scripts", &format!("{case}: complete, Redis CPU per task"), complete.cpu_us, "µs").note(&breakdown(&complete)));
        b.report.push(
            Metric::new("scripts", &format!("{case}: claim + complete, Redis CPU per task"), total, "µs").note(&format!("batches of {BATCH}, {n} tasks")),
        );
        b.drop_queue(&q).await?;
    }
    Ok(())
}
