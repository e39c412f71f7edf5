//! Periodic tasks: a cron expression, a module and an input, kept per queue in Redis. Every worker
//! consuming the queue looks for due ticks; `schedule_fire.lua` lets exactly one of them enqueue
//! each tick (compare-and-set on the schedule's next due time), so no leader process is needed.
//!
//! Times are UTC. Missed ticks (no worker running at the time) follow the schedule's policy:
//! `once` (the default) fires one catch-up run for the latest missed tick and continues from the
//! next future tick; `skip` drops ticks that are more than [`LATE_LIMIT`] late.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::conn::Conn;
use crate::queue::task::field;
use crate::queue::{Db, Expiry, FireReply, NewTask, QueueName, Tick};
use crate::store::{ModuleStore, StoreError};
use crate::text::escape_control;

/// A tick counts as missed, for the `skip` policy, when it is this late.
pub const LATE_LIMIT: Duration = Duration::from_secs(60);

/// What went wrong with a schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("invalid schedule name {0:?}: use 1 to 128 characters from A-Z a-z 0-9 _ - .")]
    Name(String),
    #[error("schedule {name:?} has a malformed definition in Redis: {reason}")]
    Stored { name: String, reason: String },
    #[error("no schedule {name:?} in queue {queue}")]
    Unknown { name: String, queue: String },
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(StoreError),
}

/// What to do with ticks that passed while no worker ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// One catch-up run for the latest missed tick.
    #[default]
    Once,
    /// Drop ticks more than a minute late.
    Skip,
}

impl FromStr for Missed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "once" => Ok(Self::Once),
            "skip" => Ok(Self::Skip),
            _ => Err(format!("invalid missed-tick policy {s:?}: use once or skip")),
        }
    }
}

/// A periodic task, as stored (JSON) in `P:{q}:schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub queue: String,
    pub cron: String,
    /// A module name (resolved at every tick, so a new push is picked up) or a hash.
    pub module: String,
    /// The input of every run (text).
    pub input: String,
    #[serde(default)]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// The HTTP grant of every run (`allow_hosts` of its tasks), as stored on a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_hosts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_http_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_http_response_bytes: Option<u64>,
    #[serde(default)]
    pub missed: Missed,
    /// Every run expires this long after its tick fired, if it is still waiting (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// The group of every run (`enqueue --group`), checked when the schedule is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default)]
    pub created_ms: u64,
}

/// A schedule with its next due time, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub schedule: Schedule,
    pub next_ms: Option<u64>,
}

pub fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    Cron::from_str(expr).map_err(|e| ScheduleError::Cron { expr: expr.to_string(), reason: e.to_string() })
}

fn utc(ms: u64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms as i64).single().unwrap_or_else(Utc::now)
}

/// The first tick strictly after `after_ms`.
pub fn next_tick(cron: &Cron, after_ms: u64) -> Option<u64> {
    cron.find_next_occurrence(&utc(after_ms), false).ok().map(|t| t.timestamp_millis().max(0) as u64)
}

/// The latest tick at or before `at_ms`.
pub fn latest_tick(cron: &Cron, at_ms: u64) -> Option<u64> {
    cron.find_previous_occurrence(&utc(at_ms), true).ok().map(|t| t.timestamp_millis().max(0) as u64)
}

fn check_name(name: &str) -> Result<(), ScheduleError> {
    let ok = !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok { Ok(()) } else { Err(ScheduleError::Name(name.to_string())) }
}

/// Stores (or replaces) a schedule; its first tick is the first one after now (the Redis
/// server's clock). Returns it.
pub async fn add(conn: &mut Conn, db: &Db, mut s: Schedule) -> Result<u64, ScheduleError> {
    check_name(&s.name)?;
    let cron = parse_cron(&s.cron)?;
    let queue = QueueName::new(&s.queue).map_err(|e| ScheduleError::Stored { name: s.name.clone(), reason: e.to_string() })?;
    let now = db.now_ms(conn, &queue).await?;
    let next = next_tick(&cron, now).ok_or_else(|| ScheduleError::Cron { expr: s.cron.clone(), reason: "it never fires".into() })?;
    s.created_ms = now;
    let json = serde_json::to_string(&s).expect("serializable");
    db.put_schedule(conn, &queue, &s.name, &json, next).await?;
    Ok(next)
}

/// Removes a schedule (tasks it already enqueued stay).
pub async fn remove(conn: &mut Conn, db: &Db, queue: &QueueName, name: &str) -> Result<(), ScheduleError> {
    if !db.remove_schedule(conn, queue, name.as_bytes()).await? {
        return Err(ScheduleError::Unknown { name: name.to_string(), queue: queue.to_string() });
    }
    Ok(())
}

/// The schedules of one queue, by name.
pub async fn list(conn: &mut Conn, db: &Db, queue: &QueueName) -> Result<Vec<Listed>, ScheduleError> {
    // Bytes, not strings: an entry written by hand with junk in it is skipped, not fatal.
    let (defs, dues) = db.schedules(conn, queue).await?;
    let mut out: Vec<Listed> = defs
        .into_iter()
        .filter_map(|(name, json)| {
            let schedule = serde_json::from_slice::<Schedule>(&json).ok()?;
            let next_ms = dues.iter().find(|(n, _)| *n == name).map(|(_, d)| d.max(0.0) as u64);
            Some(Listed { schedule, next_ms })
        })
        .collect();
    out.sort_by(|a, b| a.schedule.name.cmp(&b.schedule.name));
    Ok(out)
}

/// What one firing attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    /// A task was enqueued for the tick.
    Enqueued { seq: u64, tick_ms: u64 },
    /// The tick was dropped (missed-tick policy `skip`, or its module is not in the store).
    Skipped,
    /// Another worker fired it first.
    Lost,
}

/// Fires the due ticks of a queue's schedules at `now` (server clock). Returns what happened per
/// schedule. An error (reading a definition, resolving its module, firing) ends the call with
/// that tick still due, so that it fires exactly once, later.
pub async fn fire_due(conn: &mut Conn, db: &Db, store: &ModuleStore, queue: &QueueName, now: u64) -> Result<Vec<(String, Fired)>, ScheduleError> {
    let mut out = Vec::new();
    for (raw_name, due_ms) in db.due_schedules(conn, queue, now, 100).await? {
        let due_ms = due_ms.max(0.0) as u64;
        let Ok(name) = String::from_utf8(raw_name.clone()) else {
            tracing::warn!(%queue, schedule = %escape_control(&String::from_utf8_lossy(&raw_name), false), "dropping a schedule whose name is not UTF-8");
            db.drop_schedule_tick(conn, queue, &raw_name).await?;
            continue;
        };
        let json = db.schedule(conn, queue, &name).await?;
        let Some(s) = json.and_then(|j| serde_json::from_slice::<Schedule>(&j).ok()) else {
            tracing::warn!(%queue, schedule = %escape_control(&name, false), "dropping a schedule without a readable definition");
            db.drop_schedule_tick(conn, queue, name.as_bytes()).await?;
            continue;
        };
        let Ok(cron) = parse_cron(&s.cron) else {
            tracing::warn!(%queue, schedule = %escape_control(&name, false), cron = %escape_control(&s.cron, false), "dropping a schedule with an invalid cron expression");
            db.drop_schedule_tick(conn, queue, name.as_bytes()).await?;
            continue;
        };
        let Some(next) = next_tick(&cron, now) else {
            tracing::info!(%queue, schedule = %escape_control(&name, false), "the schedule has no future tick; it stops here");
            db.drop_schedule_tick(conn, queue, name.as_bytes()).await?;
            continue;
        };
        // The tick this run stands for: the due one, or with missed ticks the latest of them.
        let tick = latest_tick(&cron, now).unwrap_or(due_ms).max(due_ms);
        let fire = match s.missed {
            Missed::Once => true,
            Missed::Skip => now.saturating_sub(due_ms) <= LATE_LIMIT.as_millis() as u64,
        };
        let sha = if fire {
            match store.resolve(&s.module).await {
                Ok(sha) => Some(sha),
                Err(StoreError::Unknown(_) | StoreError::Removing(_)) => {
                    tracing::warn!(%queue, schedule = %escape_control(&name, false), module = %escape_control(&s.module, false), "skipping a tick: the module is not in the store");
                    None
                }
                // Redis could not be asked: the tick stays due.
                Err(e) => return Err(ScheduleError::Store(e)),
            }
        } else {
            None
        };
        let mut fields: Vec<(&'static str, Vec<u8>)> = vec![
            (field::INPUT, s.input.as_bytes().to_vec()),
            (field::SCHEDULE, name.as_bytes().to_vec()),
            (field::SCHEDULED_FOR, tick.to_string().into_bytes()),
        ];
        for (f, v) in [
            (field::MAX_ATTEMPTS, s.max_attempts.map(u64::from)),
            (field::TIMEOUT_MS, s.timeout_ms),
            (field::MEMORY, s.memory),
            (field::FUEL, s.fuel),
            (field::MAX_HTTP_REQUESTS, s.max_http_requests.map(u64::from)),
            (field::MAX_HTTP_RESPONSE_BYTES, s.max_http_response_bytes),
        ] {
            if let Some(v) = v {
                fields.push((f, v.to_string().into_bytes()));
            }
        }
        if let Some(hosts) = s.allow_hosts.as_ref().filter(|h| !h.is_empty()) {
            fields.push((field::ALLOW_HOSTS, hosts.clone().into_bytes()));
        }
        // A group edited by hand into something invalid is dropped rather than made a key.
        if let Some(g) = s.group.as_deref().filter(|g| crate::queue::GroupKey::new(g).is_ok()) {
            fields.push((field::GROUP, g.as_bytes().to_vec()));
        }
        let expires = Expiry { at_ms: 0, after: Duration::from_millis(s.expires_ms.unwrap_or(0)) };
        let task = sha.as_deref().map(|sha| NewTask { module: sha, priority: s.priority, fields: fields.clone(), expires, ..Default::default() });
        let fired = match db.fire_schedule(conn, queue, &Tick { name: &name, expected_ms: due_ms, next_ms: next, task }).await? {
            FireReply::Lost => Fired::Lost,
            FireReply::Skipped => Fired::Skipped,
            FireReply::Enqueued(seq) => Fired::Enqueued { seq, tick_ms: tick },
        };
        out.push((name, fired));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_expression() {
        let every_5_min = parse_cron("*/5 * * * *").unwrap();
        // 2026-11-24T18:02:00Z
        let t = 1_795_543_320_000;
        assert_eq!(next_tick(&every_5_min, t), Some(t + 3 * 60_000));
        assert_eq!(latest_tick(&every_5_min, t), Some(t - 2 * 60_000));
        let every_second = parse_cron("* * * * * *").unwrap();
        assert_eq!(next_tick(&every_second, t), Some(t + 1000));
        for bad in ["", "* * *", "61 * * * *", "every day"] {
            assert!(parse_cron(bad).is_err(), "{bad:?} parsed");
        }
        assert!(check_name("nightly-report.v2").is_ok());
        assert!(check_name("a b").is_err() && check_name("").is_err() && check_name("x:y").is_err());
    }
}
