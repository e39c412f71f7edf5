//! `wasmq schedule add | list | rm`: periodic tasks.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::table::Table;
use super::{Global, Outcome, exit, value};
use wasmq::parse;
use wasmq::queue::QueueName;
use wasmq::schedule::{self, Missed, Schedule};

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add (or replace) a periodic task: every tick of the cron expression (UTC) enqueues one task.
    Add(Box<AddArgs>),
    /// List periodic tasks with their next tick.
    List {
        /// Only this queue (default: every known queue).
        #[arg(long, short, value_parser = value::queue)]
        queue: Option<QueueName>,
        #[arg(long)]
        json: bool,
    },
    /// Remove a periodic task (tasks it already enqueued stay).
    Rm {
        name: String,
        #[arg(long, short, default_value = wasmq::queue::DEFAULT_QUEUE, value_parser = value::queue)]
        queue: QueueName,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Name of the schedule (unique within its queue).
    pub name: String,
    /// Module name (resolved at every tick, so a new push is picked up) or hash.
    pub module: String,
    /// Cron expression in UTC: `MIN HOUR DOM MON DOW`, or with seconds first
    /// (`*/10 * * * * *`: every 10 seconds).
    #[arg(long)]
    pub cron: String,
    #[arg(long, short, default_value = wasmq::queue::DEFAULT_QUEUE, value_parser = value::queue)]
    pub queue: QueueName,
    /// Input of every run (text).
    #[arg(long, conflicts_with = "input_file")]
    pub input: Option<String>,
    /// Read the input of every run from a file (UTF-8 text).
    #[arg(long)]
    pub input_file: Option<PathBuf>,
    #[arg(long, short, default_value = "0", allow_hyphen_values = true, value_parser = value::priority)]
    pub priority: i64,
    #[command(flatten)]
    pub limits: super::TaskLimitArgs,
    #[command(flatten)]
    pub http: super::HttpGrantArgs,
    /// Ticks missed while no worker ran: `once` (one catch-up run) or `skip` (dropped when more
    /// than a minute late).
    #[arg(long, default_value = "once")]
    pub missed: Missed,
    /// Every run still waiting this long after its tick fired is finished as `expired` and never
    /// runs (a check that is worthless when late). Default: runs never expire.
    #[arg(long, value_name = "DUR", value_parser = value::duration)]
    pub expires: Option<std::time::Duration>,
    /// The group of every run (see `enqueue --group`).
    #[arg(long, value_name = "KEY", value_parser = value::group)]
    pub group: Option<wasmq::queue::GroupKey>,
}

pub async fn run(g: &Global, c: ScheduleCommand) -> Outcome {
    let client = g.client().await?;
    let mut conn = client.conn();
    match c {
        ScheduleCommand::Add(a) => {
            let input = match (&a.input, &a.input_file) {
                (Some(t), _) => t.clone(),
                (None, Some(p)) => std::fs::read_to_string(p).with_context(|| format!("cannot read {} as UTF-8 text", p.display()))?,
                (None, None) => String::new(),
            };
            // The module must exist now (a typo is caught here, not at the first tick).
            client.store().resolve(&a.module).await?;
            let s = Schedule {
                name: a.name.clone(),
                queue: a.queue.to_string(),
                cron: a.cron.clone(),
                module: a.module.clone(),
                input,
                priority: a.priority,
                max_attempts: a.limits.max_attempts,
                timeout_ms: a.limits.timeout.map(|d| d.as_millis() as u64),
                memory: a.limits.memory,
                fuel: a.limits.fuel,
                allow_hosts: (!a.http.allow_host.is_empty()).then(|| wasmq::http::AllowList::new(a.http.allow_host.clone()).to_string()),
                max_http_requests: a.http.max_http_requests,
                max_http_response_bytes: a.http.max_http_response_bytes,
                missed: a.missed,
                expires_ms: a.expires.map(|d| (d.as_millis() as u64).max(1)),
                group: a.group.as_ref().map(|g| g.to_string()),
                created_ms: 0,
            };
            let next = schedule::add(&mut conn, client.db(), s).await?;
            println!("{} on {}: next run {}", a.name, a.queue, parse::format_ms(next));
            Ok(exit::OK)
        }
        ScheduleCommand::List { queue, json } => {
            let queues = match queue {
                Some(q) => vec![q],
                None => client.queues().await?,
            };
            let mut all = Vec::new();
            for q in &queues {
                all.extend(schedule::list(&mut conn, client.db(), q).await?);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(exit::OK);
            }
            let mut t = Table::new(&["NAME", "QUEUE", "CRON", "MODULE", "MISSED", "NEXT"]);
            for l in &all {
                let s = &l.schedule;
                t.row(vec![
                    s.name.clone(),
                    s.queue.clone(),
                    s.cron.clone(),
                    s.module.clone(),
                    format!("{:?}", s.missed).to_lowercase(),
                    l.next_ms.map(parse::format_ms).unwrap_or_else(|| "-".into()),
                ]);
            }
            if t.is_empty() {
                eprintln!("no schedules");
            } else {
                print!("{}", t.render());
            }
            Ok(exit::OK)
        }
        ScheduleCommand::Rm { name, queue } => {
            schedule::remove(&mut conn, client.db(), &queue, &name).await?;
            println!("{name} removed from {queue}");
            Ok(exit::OK)
        }
    }
}
