//! `wasmq queue ...`, `wasmq dead ...`, `wasmq purge`.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::table::Table;
use super::{Global, Outcome, exit, value};
use wasmq::client::{Policy, WsjfSettings};
use wasmq::parse::{self, QueueName, TaskId};
use wasmq::task::TaskState;

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
        #[arg(long, default_value_t = 1000.0)]
        stretch: f64,
        /// wsjf aging: no task is overtaken by tasks enqueued more than this long after it.
        #[arg(long, default_value = "10m", value_parser = value::duration)]
        max_wait: Duration,
        /// wsjf: expected run time of a module with no completed task yet.
        #[arg(long, default_value = "100ms", value_parser = value::duration)]
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
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Dead tasks, oldest first, with their last error.
    List {
        #[arg(long, short, default_value = "default", value_parser = value::queue)]
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
        #[arg(long, short, default_value = "default", value_parser = value::queue)]
        queue: QueueName,
    },
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[arg(long, short, value_parser = value::queue)]
    pub queue: QueueName,
    /// succeeded, dead or cancelled.
    #[arg(long, value_parser = ["succeeded", "dead", "cancelled"])]
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
            let mut t = Table::new(&["QUEUE", "PENDING", "DELAYED", "ACTIVE", "SUCCEEDED", "DEAD", "CANCELLED", "POLICY", "PAUSED"]);
            for s in &all {
                t.row(vec![
                    s.queue.clone(),
                    s.pending.to_string(),
                    s.delayed.to_string(),
                    s.active.to_string(),
                    s.succeeded.to_string(),
                    s.dead.to_string(),
                    s.cancelled.to_string(),
                    s.policy.clone(),
                    if s.paused { "yes".into() } else { "no".into() },
                ]);
            }
            if t.is_empty() {
                eprintln!("no queues yet");
            } else {
                print!("{}", t.render());
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
        QueueCommand::Pause { queue } => {
            client.set_queue_meta(&queue, &[("paused", "1".into())]).await?;
            println!("{queue} paused");
            Ok(exit::OK)
        }
        QueueCommand::Resume { queue } => {
            client.set_queue_meta(&queue, &[("paused", "0".into())]).await?;
            client.wake(&queue).await?;
            println!("{queue} resumed");
            Ok(exit::OK)
        }
    }
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
            let retried = if all {
                client.retry_dead(&queue, None).await?
            } else {
                let mut retried = Vec::new();
                let mut by_queue: std::collections::BTreeMap<QueueName, Vec<u64>> = Default::default();
                for id in &ids {
                    by_queue.entry(id.queue.clone()).or_default().push(id.seq);
                }
                for (q, seqs) in by_queue {
                    retried.extend(client.retry_dead(&q, Some(&seqs)).await?);
                }
                for id in &ids {
                    if !retried.contains(id) {
                        eprintln!("{id} is not dead; skipped");
                    }
                }
                retried
            };
            for id in &retried {
                println!("{id}");
            }
            eprintln!("{} task(s) requeued", retried.len());
            Ok(if !all && retried.len() < ids.len() { exit::ERROR } else { exit::OK })
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
