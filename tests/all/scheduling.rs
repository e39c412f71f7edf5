//! Delayed tasks, queue policies (priority, wsjf with aging, fifo), weighted and strict queues,
//! pause/resume, unique tasks and periodic tasks, against real `redis-server` processes.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::common::{RedisServer, Wasmq, eventually, server};
use redis::Commands;

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn delayed_tasks_run_once_due_and_not_before() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let mut worker = w.spawn_worker(&[]);
    std::thread::sleep(Duration::from_millis(500));
    let at = humantime::format_rfc3339_millis(std::time::SystemTime::now() + Duration::from_millis(1500)).to_string();
    let mut ids = vec![w.enqueue("echo", "at", &["--at", &at])];
    for d in ["300ms", "700ms", "1s", "2s"] {
        ids.push(w.enqueue("echo", d, &["--delay", d]));
    }
    assert_eq!(w.status(&ids[0]).unwrap()["state"], "delayed");
    let mut lateness = Vec::new();
    for id in &ids {
        let st = eventually(Duration::from_secs(20), || w.status(id).filter(|s| s["state"] == "succeeded"))
            .unwrap_or_else(|| panic!("{id} never ran: {}", worker.log()));
        let (due, started) = (u(&st["due_ms"]), u(&st["started_ms"]));
        assert!(started >= due, "{id} started {} ms early", due - started);
        lateness.push(started - due);
    }
    lateness.sort();
    eprintln!("delayed tasks: lateness {lateness:?} ms");
    // Functional bound only (the benchmark measures lateness): a delayed task is not left waiting
    // for a poll interval of seconds.
    assert!(lateness[lateness.len() / 2] < 1000, "{lateness:?}");
    assert_eq!(worker.stop(), Some(0));
}

/// Start order of the tasks (by start time, then id).
fn start_order(w: &Wasmq, ids: &[String]) -> Vec<usize> {
    let started: Vec<u64> = ids.iter().map(|id| u(&w.status(id).unwrap()["started_ms"])).collect();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| (started[i], i));
    order
}

#[test]
fn wsjf_runs_the_best_ratio_of_run_time_to_priority_first() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("busy.wat"), "busy");
    w.ok(&["queue", "policy", "default", "wsjf"]);
    // (estimate, priority): ratios 50, 10, 10, 5, 200 -> order 3, 1, 2, 0, 4.
    let tasks = [("50ms", "1"), ("10ms", "1"), ("100ms", "10"), ("5ms", "1"), ("200ms", "1")];
    let ids: Vec<String> = tasks.iter().map(|(e, p)| w.enqueue("busy", "", &["--estimate", e, "--priority", p])).collect();
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--concurrency", "1", "--prefetch", "0"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    assert_eq!(start_order(&w, &ids), vec![3, 1, 2, 0, 4]);
    // The learned run time of the module is kept for tasks without an estimate.
    let mut c = crate::common::redis_conn(&s);
    let learned: HashMap<String, u64> = c.hgetall(crate::common::qk("default").estimates()).unwrap();
    assert_eq!(learned.len(), 1);
    assert!(learned.values().all(|us| *us > 0));
}

#[test]
fn changing_the_policy_reorders_pending_tasks() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("busy.wat"), "busy");
    let ids: Vec<String> = [0, 9, 5].iter().map(|p| w.enqueue("busy", "", &["--priority", &p.to_string()])).collect();
    let out = w.ok(&["queue", "policy", "default", "fifo"]);
    assert!(out.contains("3 pending"), "{out}");
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--concurrency", "1", "--prefetch", "0"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0));
    assert_eq!(start_order(&w, &ids), vec![0, 1, 2], "fifo ignores priorities");
    assert_eq!(w.run(&["queue", "policy", "default", "shortest"]).status.code(), Some(2));
}

#[test]
fn wsjf_aging_keeps_a_long_task_from_starving() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("busy.wat"), "busy");
    w.ok(&["queue", "policy", "default", "wsjf", "--max-wait", "2s"]);
    // A backlog of short tasks, then one long task, then a stream of short tasks faster than the
    // worker can run them, for 6 s. By run time / priority alone the long task would wait for the
    // whole stream; aging bounds its wait.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = rt.block_on(wasmq::client::Client::connect(wasmq::conn::RedisOptions::new(s.url()), "wasmq")).unwrap();
    let opts = wasmq::client::EnqueueOptions { estimate: Some(Duration::from_millis(1)), ..Default::default() };
    let backlog: Vec<Vec<u8>> = vec![Vec::new(); 300];
    rt.block_on(client.enqueue_bulk("busy", &backlog, &opts)).unwrap();
    let long = w.enqueue("busy", "", &["--estimate", "1h"]);
    let mut worker = w.spawn_worker(&["--concurrency", "1", "--prefetch", "0"]);
    let started = Instant::now();
    let short: Vec<String> = rt.block_on(async {
        let mut ids = Vec::new();
        while started.elapsed() < Duration::from_secs(6) {
            ids.push(client.enqueue("busy", b"", &opts).await.unwrap().id.to_string());
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        ids
    });
    let st = eventually(Duration::from_secs(30), || w.status(&long).filter(|s| s["started_ms"].is_u64())).expect("never started");
    let waited = u(&st["started_ms"]) - u(&st["created_ms"]);
    // Short tasks enqueued after the long one's aging horizon must not have overtaken it.
    let last_short = w.status(short.last().unwrap()).unwrap();
    let pending_after: bool = last_short["started_ms"].is_null() || u(&last_short["started_ms"]) > u(&st["started_ms"]);
    eprintln!("wsjf aging: the long task waited {waited} ms behind a stream of {} short tasks (max wait 2 s)", short.len());
    assert!(pending_after, "the long task only ran once the stream was over");
    assert!(waited < 5000, "waited {waited} ms");
    worker.signal(crate::common::Signal::TERM);
    worker.wait(Duration::from_secs(30));
}

#[test]
fn weighted_queues_share_a_worker_in_proportion() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "\"x\"\n".repeat(200)).unwrap();
    let mut ids: HashMap<String, Vec<String>> = HashMap::new();
    for q in ["critical", "default", "low"] {
        let out = w.ok(&["enqueue", "echo", "--queue", q, "--inputs-file", file.path().to_str().unwrap()]);
        ids.insert(q.into(), out.lines().map(str::to_string).collect());
    }
    let mut worker =
        w.spawn_worker(&["--queue", "critical=6", "--queue", "default=3", "--queue", "low=1", "--concurrency", "1", "--prefetch", "0", "--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(120)), Some(0), "{}", worker.log());
    let mut all: Vec<(u64, String)> = Vec::new();
    for (q, list) in &ids {
        for id in list {
            all.push((u(&w.status(id).unwrap()["started_ms"]), q.clone()));
        }
    }
    all.sort();
    let first: Vec<&str> = all.iter().take(150).map(|(_, q)| q.as_str()).collect();
    let share = |q: &str| first.iter().filter(|x| **x == q).count();
    let (c, d, l) = (share("critical"), share("default"), share("low"));
    eprintln!("weighted queues 6:3:1, first 150 tasks: critical {c}, default {d}, low {l}");
    assert!(c > d && d > l, "{c} {d} {l}");
    assert!(l > 0, "the lightest queue starved");
}

#[test]
fn strict_queues_drain_in_weight_order() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let critical: Vec<String> = (0..20).map(|_| w.enqueue("echo", "c", &["--queue", "critical"])).collect();
    let low: Vec<String> = (0..20).map(|_| w.enqueue("echo", "l", &["--queue", "low"])).collect();
    let mut worker = w.spawn_worker(&["--queue", "low=1", "--queue", "critical=5", "--strict", "--concurrency", "1", "--prefetch", "0", "--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0));
    let last_critical = critical.iter().map(|id| u(&w.status(id).unwrap()["started_ms"])).max().unwrap();
    let first_low = low.iter().map(|id| u(&w.status(id).unwrap()["started_ms"])).min().unwrap();
    assert!(last_critical <= first_low, "a low task started before the critical queue was empty");
}

#[test]
fn a_paused_queue_is_not_claimed_until_resumed() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    w.ok(&["queue", "pause", "default"]);
    let ids: Vec<String> = (0..3).map(|i| w.enqueue("echo", &i.to_string(), &[])).collect();
    let mut worker = w.spawn_worker(&[]);
    std::thread::sleep(Duration::from_millis(1500));
    for id in &ids {
        assert_eq!(w.status(id).unwrap()["state"], "pending", "{id} ran in a paused queue");
    }
    assert!(w.ok(&["queue", "stats", "--queue", "default"]).contains("yes"));
    w.ok(&["queue", "resume", "default"]);
    for id in &ids {
        assert!(eventually(Duration::from_secs(20), || w.status(id).filter(|s| s["state"] == "succeeded")).is_some(), "{id}");
    }
    assert_eq!(worker.stop(), Some(0));
}

#[test]
fn unique_keys_return_the_existing_task() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let first = w.enqueue("echo", "a", &["--unique-key", "report-42"]);
    let out = w.run(&["enqueue", "echo", "--input", "b", "--unique-key", "report-42"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first, "a second task was created");
    assert!(String::from_utf8_lossy(&out.stderr).contains("held by"));
    let other = w.enqueue("echo", "c", &["--unique-key", "report-43"]);
    assert_ne!(other, first);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0));
    // Finished: the key is free again.
    let again = w.enqueue("echo", "d", &["--unique-key", "report-42"]);
    assert_ne!(again, first);
    // --unique-for bounds how long the key is held, even by a task that has not run.
    let held = w.enqueue("echo", "e", &["--unique-key", "k2", "--unique-for", "500ms"]);
    assert_eq!(w.enqueue("echo", "f", &["--unique-key", "k2", "--unique-for", "500ms"]), held);
    std::thread::sleep(Duration::from_millis(800));
    assert_ne!(w.enqueue("echo", "g", &["--unique-key", "k2"]), held);
}

fn scheduled(s: &RedisServer, name: &str) -> Vec<(u64, u64)> {
    // (scheduled_for, created) of every task fired by a schedule.
    let mut c = crate::common::redis_conn(s);
    let n: u64 = c.get(crate::common::qk("default").seq()).unwrap_or(0);
    let mut out = Vec::new();
    for seq in 1..=n {
        let h: HashMap<String, String> = c.hgetall(crate::common::task_key("default", seq)).unwrap();
        if h.get("schedule").map(String::as_str) == Some(name) {
            out.push((h["scheduled_for"].parse().unwrap(), h["created"].parse().unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn each_tick_of_a_periodic_task_fires_exactly_once_across_workers() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let out = w.ok(&["schedule", "add", "every-second", "echo", "--cron", "* * * * * *", "--input", "tick"]);
    assert!(out.contains("next run"), "{out}");
    assert!(w.ok(&["schedule", "list"]).contains("every-second"));
    let mut workers: Vec<_> = (0..3).map(|_| w.spawn_worker(&[])).collect();
    std::thread::sleep(Duration::from_millis(4500));
    w.ok(&["schedule", "rm", "every-second"]);
    std::thread::sleep(Duration::from_millis(1500));
    let runs = scheduled(&s, "every-second");
    let ticks: HashSet<u64> = runs.iter().map(|(t, _)| *t).collect();
    eprintln!("periodic: {} runs over ~4.5 s with 3 workers; ticks {:?}", runs.len(), runs.iter().map(|r| r.0 % 100_000).collect::<Vec<_>>());
    assert_eq!(ticks.len(), runs.len(), "a tick fired twice: {runs:?}");
    assert!((3..=6).contains(&runs.len()), "{} runs in 4.5 s", runs.len());
    for (tick, created) in &runs {
        assert_eq!(tick % 1000, 0, "ticks fall on whole seconds");
        assert!(created >= tick, "fired before its tick");
    }
    // Removed: no more runs.
    let after = scheduled(&s, "every-second").len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(scheduled(&s, "every-second").len(), after);
    for wk in &mut workers {
        assert_eq!(wk.stop(), Some(0));
    }
    assert_eq!(w.run(&["schedule", "add", "bad", "echo", "--cron", "every day"]).status.code(), Some(1));
    assert_eq!(w.run(&["schedule", "rm", "nonexistent"]).status.code(), Some(1));
}

#[test]
fn ticks_missed_while_no_worker_ran_fire_once() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    w.ok(&["schedule", "add", "missed", "echo", "--cron", "* * * * * *"]);
    let added = wasmq::parse::now_ms();
    // A worker whose (server) clock runs 3.5 s ahead: to it, three ticks passed with no worker.
    let mut worker = w.spawn_worker_at(3500, &[]);
    let worker_started = wasmq::parse::now_ms() + 3500;
    let first = eventually(Duration::from_secs(10), || scheduled(&s, "missed").first().copied()).expect("no catch-up run");
    std::thread::sleep(Duration::from_millis(1500));
    let runs = scheduled(&s, "missed");
    let catch_up: Vec<_> = runs.iter().filter(|(tick, _)| *tick < worker_started).collect();
    assert_eq!(catch_up.len(), 1, "missed ticks fired more than once: {runs:?} (worker started at {worker_started})");
    assert!(first.0 >= added + 2000, "the catch-up run is not for the latest missed tick: {first:?}, added at {added}");
    let ticks: HashSet<u64> = runs.iter().map(|(t, _)| *t).collect();
    assert_eq!(ticks.len(), runs.len(), "{runs:?}");
    assert_eq!(worker.stop(), Some(0));
}

#[test]
fn a_tick_more_than_a_minute_late_is_dropped_under_the_skip_policy() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    // Two yearly schedules whose tick is made two minutes overdue, as if no worker had run.
    w.ok(&["schedule", "add", "late-skip", "echo", "--cron", "0 0 1 1 *", "--missed", "skip"]);
    w.ok(&["schedule", "add", "late-once", "echo", "--cron", "0 0 1 1 *", "--missed", "once"]);
    let overdue = wasmq::parse::now_ms() - 120_000;
    let mut c = crate::common::redis_conn(&s);
    for name in ["late-skip", "late-once"] {
        let _: () = c.zadd(crate::common::qk("default").schedule_due(), name, overdue).unwrap();
    }
    let worker = w.spawn_worker(&[]);
    // Both move on to their next tick (next year); only `once` enqueued a catch-up run.
    let moved = eventually(Duration::from_secs(20), || {
        let dues: Vec<(String, u64)> = c.zrange_withscores(crate::common::qk("default").schedule_due(), 0, -1).unwrap();
        (dues.len() == 2 && dues.iter().all(|(_, d)| *d > wasmq::parse::now_ms())).then_some(())
    });
    assert!(moved.is_some(), "the overdue schedules never moved on: {}", worker.log());
    let once = eventually(Duration::from_secs(10), || Some(scheduled(&s, "late-once")).filter(|r| !r.is_empty())).expect("no catch-up run");
    assert_eq!(once.len(), 1, "{once:?}");
    assert!(scheduled(&s, "late-skip").is_empty(), "a tick more than a minute late ran under --missed skip");
}

/// A periodic task's HTTP grant (`schedule add --allow-host`) is every run's: the fired tasks
/// carry it, as an enqueued one would.
#[test]
fn a_schedule_s_http_grant_reaches_its_runs() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    w.ok(&["schedule", "add", "hook", "echo", "--cron", "* * * * * *", "--allow-host", "hooks.example.com", "--max-http-requests", "2"]);
    let listed = w.ok(&["schedule", "list", "--json"]);
    assert!(listed.contains("\"allow_hosts\": \"hooks.example.com\""), "{listed}");
    let mut worker = w.spawn_worker(&[]);
    eventually(Duration::from_secs(10), || scheduled(&s, "hook").first().copied()).expect("no run");
    assert_eq!(worker.stop(), Some(0));
    let mut c = crate::common::redis_conn(&s);
    let h: HashMap<String, String> = c.hgetall(crate::common::task_key("default", 1)).unwrap();
    assert_eq!((h.get("allow_hosts").map(String::as_str), h.get("max_http_requests").map(String::as_str)), (Some("hooks.example.com"), Some("2")), "{h:?}");
}

/// `schedule add --expires`: every run of the schedule carries the expiry; on a paused queue the
/// runs that waited past it are finished as expired by the workers' sweep, and none ever ran.
#[test]
fn runs_of_a_schedule_with_expires_expire_when_they_wait_too_long() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    w.ok(&["queue", "pause", "default"]);
    w.ok(&["schedule", "add", "alert", "echo", "--cron", "* * * * * *", "--input", "late is worthless", "--expires", "1s"]);
    let listed = w.ok(&["schedule", "list", "--json"]);
    assert!(listed.contains(r#""expires_ms": 1000"#), "{listed}");
    let mut worker = w.spawn_worker(&[]);
    let expired = eventually(Duration::from_secs(20), || {
        let runs = scheduled(&s, "alert");
        let states: Vec<HashMap<String, String>> = (1..=runs.len() as u64 + 2).map(|n| crate::common::task_hash(&s, &format!("default:{n}"))).collect();
        let expired = states.iter().filter(|h| h.get("state").map(String::as_str) == Some("expired")).count();
        (expired >= 2).then_some(states)
    })
    .expect("two runs expired within 20 s");
    w.ok(&["schedule", "rm", "alert"]);
    assert_eq!(worker.stop(), Some(0));
    for h in expired.iter().filter(|h| h.contains_key("schedule")) {
        let created: u64 = h["created"].parse().unwrap();
        assert_eq!(h["expires"].parse::<u64>().unwrap(), created + 1000, "{h:?}");
        assert!(!h.contains_key("started"), "an expiring run never started: {h:?}");
    }
    let stats: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "-q", "default", "--json"])).unwrap();
    assert!(stats[0]["expired"].as_u64().unwrap() >= 2, "{stats}");
}
