//! `wasmq queue ...`, `wasmq dead ...`, `wasmq purge`.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::table::Table;
use super::{Global, Outcome, exit, value};
use wasmq::parse;
use wasmq::queue::{Policy, QueueName, RateLimit, TaskId, TaskState, WsjfSettings};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Task counts per state (all queues, or one).
    Stats {
        #[arg(long, short, value_parser = value::queue)]
        queue: Option<QueueName>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Names of the known queues.
    List,
    /// Set how a queue orders its pending tasks: priority (default: higher first, FIFO within a
    /// priority), wsjf (weighted shortest job first with aging) or fifo. Tasks already pending are
    /// re-ordered.
    Policy {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        /// priority, wsjf or fifo.
        policy: Policy,
        /// wsjf: virtual waiting time per unit of expected run time / priority.
        #[arg(long, default_value_t = WsjfSettings::default().stretch)]
        stretch: f64,
        /// wsjf aging: no task is overtaken by tasks enqueued more than this long after it.
        #[arg(long, default_value = value::text_duration(WsjfSettings::default().max_wait), value_parser = value::duration)]
        max_wait: Duration,
        /// wsjf: expected run time of a module with no completed task yet.
        #[arg(long, default_value = value::text_duration(WsjfSettings::default().default_estimate), value_parser = value::duration)]
        default_estimate: Duration,
    },
    /// Stop workers from claiming from a queue (running tasks finish).
    Pause {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
    },
    /// Let workers claim from a paused queue again.
    Resume {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
    },
    /// Show or set how long a queue keeps finished tasks, by age and by count (the newest N are
    /// kept; 0 means no limit). Unset flags keep their current value (or the default). Enforced
    /// as tasks finish and by every worker's reaper; workers' `--retention` applies only to
    /// queues without these settings.
    Retention {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        #[arg(long, value_parser = value::duration)]
        succeeded_age: Option<Duration>,
        #[arg(long)]
        succeeded_count: Option<u64>,
        #[arg(long, value_parser = value::duration)]
        dead_age: Option<Duration>,
        #[arg(long)]
        dead_count: Option<u64>,
        #[arg(long, value_parser = value::duration)]
        cancelled_age: Option<Duration>,
        #[arg(long)]
        cancelled_count: Option<u64>,
        #[arg(long, value_parser = value::duration)]
        expired_age: Option<Duration>,
        #[arg(long)]
        expired_count: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show or set a queue's flow control, enforced across every worker: at most N tasks active
    /// at once (`--concurrency`), at most N started in any window of a duration (`--rate`), and
    /// the same for each group of tasks (`enqueue --group`) on its own (`--group-concurrency`,
    /// `--group-rate`). A queue with a limit is claimed only for free run slots (no prefetch).
    /// Flags not given keep their current value; without flags, the limits are shown. Default:
    /// no limits.
    Limit {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        /// Most tasks of the queue running at once (claimed, until their result is written or
        /// their lease expires), at least 1.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        concurrency: Option<u64>,
        /// Most tasks started in any window: N/DURATION, e.g. 100/s, 5000/min, 10/250ms (an exact
        /// sliding window, not a token bucket).
        #[arg(long, value_name = "N/DURATION", value_parser = value::rate)]
        rate: Option<RateLimit>,
        /// Most tasks of one group running at once, at least 1 (each group on its own; tasks
        /// without a group have no group limit).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        group_concurrency: Option<u64>,
        /// Most tasks of one group started in any window: N/DURATION.
        #[arg(long, value_name = "N/DURATION", value_parser = value::rate)]
        group_rate: Option<RateLimit>,
        /// Remove the queue's limits.
        #[arg(long, conflicts_with_all = ["concurrency", "rate", "group_concurrency", "group_rate"])]
        clear: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a queue's waiting tasks: each is finished as cancelled with reason `drained` (and
    /// its blocked dependents with it), a thousand per script call. Running tasks are left alone.
    Drain {
        #[arg(value_parser = value::queue)]
        queue: QueueName,
        /// Which waiting tasks: any of pending, delayed, blocked.
        #[arg(long, value_delimiter = ',', default_value = "pending,delayed,blocked", value_parser = waiting_state)]
        state: Vec<TaskState>,
    },
}

/// A state `queue drain` takes.
fn waiting_state(s: &str) -> Result<TaskState, String> {
    match TaskState::parse(s) {
        Some(t @ (TaskState::Pending | TaskState::Delayed | TaskState::Blocked)) => Ok(t),
        _ => Err(format!("cannot drain {s:?} tasks; use pending, delayed or blocked")),
    }
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Dead tasks, oldest first, with their last error.
    List {
        #[arg(long, short, default_value = wasmq::queue::DEFAULT_QUEUE, value_parser = value::queue)]
        queue: QueueName,
        /// Most tasks listed (at least 1).
        #[arg(long, default_value_t = 100, value_parser = value::limit)]
        limit: usize,
    },
    /// Put dead tasks back in their queue with fresh attempts.
    Retry {
        /// Task ids.
        #[arg(value_parser = value::task_id, required_unless_present = "all")]
        ids: Vec<TaskId>,
        /// Every dead task of --queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[arg(long, short, default_value = wasmq::queue::DEFAULT_QUEUE, value_parser = value::queue)]
        queue: QueueName,
    },
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[arg(long, short, value_parser = value::queue)]
    pub queue: QueueName,
    /// succeeded, dead, cancelled or expired.
    #[arg(long, value_parser = ["succeeded", "dead", "cancelled", "expired"])]
    pub state: String,
    /// Only tasks that finished at least this long ago (0 for all).
    #[arg(long, value_parser = value::duration)]
    pub older_than: Duration,
}

pub async fn run(g: &Global, c: QueueCommand) -> Outcome {
    let client = g.client().await?;
    match c {
        QueueCommand::Stats { queue, json } => {
            let queues = match queue {
                Some(q) => vec![q],
                None => client.queues().await?,
            };
            let mut all = Vec::new();
            for q in &queues {
                all.push(client.stats(q).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(exit::OK);
            }
            let mut t = Table::new(&[
                "QUEUE",
                "PENDING",
                "DELAYED",
                "BLOCKED",
                "ACTIVE",
                "SUCCEEDED",
                "DEAD",
                "CANCELLED",
                "EXPIRED",
                "GROUPS",
                "POLICY",
                "PAUSED",
                "LIMITS",
            ]);
            for s in &all {
                t.row(vec![
                    s.queue.clone(),
                    s.pending.to_string(),
                    s.delayed.to_string(),
                    s.blocked.to_string(),
                    s.active.to_string(),
                    s.succeeded.to_string(),
                    s.dead.to_string(),
                    s.cancelled.to_string(),
                    s.expired.to_string(),
                    s.groups.to_string(),
                    s.policy.clone(),
                    if s.paused { "yes".into() } else { "no".into() },
                    s.limits.describe(s.active, s.rate_used),
                ]);
            }
            if t.is_empty() {
                eprintln!("no queues yet");
            } else {
                print!("{}", t.render());
            }
            if let Some(q) = queues.first() {
                print_memory(&client, q).await?;
            }
            Ok(exit::OK)
        }
        QueueCommand::List => {
            for q in client.queues().await? {
                println!("{q}");
            }
            Ok(exit::OK)
        }
        QueueCommand::Policy { queue, policy, stretch, max_wait, default_estimate } => {
            let n = client.set_policy(&queue, policy, WsjfSettings { stretch, max_wait, default_estimate }).await?;
            println!("{queue}: policy {} ({n} pending task(s) re-ordered)", policy.as_str());
            Ok(exit::OK)
        }
        QueueCommand::Drain { queue, state } => {
            let n = client.drain(&queue, &state).await?;
            println!("{queue}: drained {n} task(s)");
            Ok(exit::OK)
        }
        QueueCommand::Pause { queue } => {
            client.set_paused(&queue, true).await?;
            println!("{queue} paused");
            Ok(exit::OK)
        }
        QueueCommand::Resume { queue } => {
            client.set_paused(&queue, false).await?;
            println!("{queue} resumed");
            Ok(exit::OK)
        }
        QueueCommand::Limit { queue, concurrency, rate, group_concurrency, group_rate, clear, json } => {
            if clear {
                client.clear_limits(&queue).await?;
            } else {
                client.set_limits(&queue, wasmq::queue::QueueLimits { concurrency, rate, group_concurrency, group_rate }).await?;
            }
            let limits = client.limits(&queue).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&limits)?);
            } else if limits.is_empty() {
                println!("{queue}: no limits");
            } else {
                let s = client.stats(&queue).await?;
                println!("{queue}: {}", limits.describe(s.active, s.rate_used));
            }
            Ok(exit::OK)
        }
        QueueCommand::Retention {
            queue,
            succeeded_age,
            succeeded_count,
            dead_age,
            dead_count,
            cancelled_age,
            cancelled_count,
            expired_age,
            expired_count,
            json,
        } => {
            let current = client.retention(&queue).await?;
            let mut r = current.unwrap_or_default();
            let changes = [
                succeeded_age.is_some(),
                succeeded_count.is_some(),
                dead_age.is_some(),
                dead_count.is_some(),
                cancelled_age.is_some(),
                cancelled_count.is_some(),
                expired_age.is_some(),
                expired_count.is_some(),
            ];
            r.succeeded_age = succeeded_age.unwrap_or(r.succeeded_age);
            r.succeeded_count = succeeded_count.unwrap_or(r.succeeded_count);
            r.dead_age = dead_age.unwrap_or(r.dead_age);
            r.dead_count = dead_count.unwrap_or(r.dead_count);
            r.cancelled_age = cancelled_age.unwrap_or(r.cancelled_age);
            r.cancelled_count = cancelled_count.unwrap_or(r.cancelled_count);
            r.expired_age = expired_age.unwrap_or(r.expired_age);
            r.expired_count = expired_count.unwrap_or(r.expired_count);
            let set = changes.iter().any(|c| *c);
            if set {
                client.set_retention(&queue, r).await?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
                return Ok(exit::OK);
            }
            let source = if set || current.is_some() { "queue settings" } else { "defaults: the queue has no settings; workers apply theirs" };
            let age = |d: Duration| if d.is_zero() { "forever".to_string() } else { humantime::format_duration(d).to_string() };
            let count = |n: u64| if n == 0 { "all".to_string() } else { n.to_string() };
            let mut t = Table::new(&["STATE", "KEPT FOR", "KEPT AT MOST"]);
            t.row(vec!["succeeded".into(), age(r.succeeded_age), count(r.succeeded_count)]);
            t.row(vec!["dead".into(), age(r.dead_age), count(r.dead_count)]);
            t.row(vec!["cancelled".into(), age(r.cancelled_age), count(r.cancelled_count)]);
            t.row(vec!["expired".into(), age(r.expired_age), count(r.expired_count)]);
            println!("{queue} ({source})");
            print!("{}", t.render());
            Ok(exit::OK)
        }
    }
}

/// A queue's limits with their current use: `concurrency 3/5, rate 12/100 per 1s` (`-`: none).
/// Share of `maxmemory` from which `queue stats` warns.
const MEMORY_WARNING: f64 = 0.9;

/// Redis memory against its cap, with a warning near it: a full Redis refuses every enqueue.
async fn print_memory(client: &wasmq::client::Client, q: &QueueName) -> anyhow::Result<()> {
    let (used, max) = client.memory(q).await?;
    if max == 0 {
        println!("Redis memory: {} (no maxmemory)", parse::format_size(used));
        return Ok(());
    }
    let share = used as f64 / max as f64;
    println!("Redis memory: {} of maxmemory {} ({:.0}%)", parse::format_size(used), parse::format_size(max), share * 100.0);
    if share >= MEMORY_WARNING {
        eprintln!(
            "warning: Redis is near its maxmemory; enqueues fail once it is reached. Free memory (`wasmq purge`, a lower `wasmq queue retention`) or raise maxmemory"
        );
    }
    Ok(())
}

pub async fn dead(g: &Global, c: DeadCommand) -> Outcome {
    let client = g.client().await?;
    match c {
        DeadCommand::List { queue, limit } => {
            let mut t = Table::new(&["ID", "FINISHED", "ATTEMPTS", "ERROR"]);
            for r in client.dead(&queue, limit).await? {
                t.row(vec![
                    r.id.clone(),
                    r.finished_ms.map(parse::format_ms).unwrap_or_default(),
                    r.attempts.to_string(),
                    format!("{}: {}", r.error_kind.as_deref().unwrap_or("?"), r.error.as_deref().unwrap_or("")),
                ]);
            }
            if t.is_empty() {
                eprintln!("no dead tasks in {queue}");
            } else {
                print!("{}", t.render());
            }
            Ok(exit::OK)
        }
        DeadCommand::Retry { ids, all, queue } => {
            let mut outcome = wasmq::client::RetryOutcome::default();
            if all {
                outcome = client.retry_dead(&queue, None).await?;
            } else {
                let mut by_queue: std::collections::BTreeMap<QueueName, Vec<u64>> = Default::default();
                for id in &ids {
                    by_queue.entry(id.queue.clone()).or_default().push(id.seq);
                }
                for (q, seqs) in by_queue {
                    let o = client.retry_dead(&q, Some(&seqs)).await?;
                    outcome.retried.extend(o.retried);
                    outcome.blocked.extend(o.blocked);
                    outcome.not_dead.extend(o.not_dead);
                }
                for id in &outcome.not_dead {
                    eprintln!("{id} is not dead; skipped");
                }
            }
            for id in &outcome.blocked {
                eprintln!("{id} stays dead: another unfinished task holds its unique key");
            }
            for id in &outcome.retried {
                println!("{id}");
            }
            eprintln!("{} task(s) requeued", outcome.retried.len());
            let missed = !outcome.blocked.is_empty() || (!all && outcome.retried.len() < ids.len());
            Ok(if missed { exit::ERROR } else { exit::OK })
        }
    }
}

pub async fn purge(g: &Global, a: PurgeArgs) -> Outcome {
    let client = g.client().await?;
    let state = TaskState::parse(&a.state).expect("clap checked the value");
    let n = client.purge(&a.queue, state, a.older_than).await?;
    println!("{n} {} task(s) purged from {}", a.state, a.queue);
    Ok(exit::OK)
}
