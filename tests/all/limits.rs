//! Flow control (issue #17): task expiry, a queue's concurrency limit and its rate limit, against
//! a real redis-server, the real binary and several worker processes. Timing is judged from the
//! times the scripts record in the task hashes (`claimed`, `finished`: the server's clock), not
//! from how long the test waited.

use std::time::Duration;

use redis::Commands;
use wasmq::queue::{Db, QueueName, TaskId};

use crate::common::{RedisServer, Signal, Wasmq, eventually, fixture, rt, task_hash};

fn server() -> RedisServer {
    RedisServer::start().expect("redis-server")
}

fn db() -> Db {
    Db::new("wasmq")
}

fn id(s: &str) -> TaskId {
    TaskId::parse(s).unwrap()
}

/// `queue stats -q Q --json` of one queue.
fn stats(w: &Wasmq, q: &str) -> serde_json::Value {
    let out = w.ok(&["queue", "stats", "-q", q, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// A copy of sleep.wat that sleeps `ms` milliseconds, pushed as `name`.
fn push_nap(w: &Wasmq, dir: &std::path::Path, name: &str, ms: u64) {
    let nap = dir.join(format!("{name}.wat"));
    std::fs::write(&nap, std::fs::read_to_string(fixture("sleep.wat")).unwrap().replace("10000000000", &(ms * 1_000_000).to_string())).unwrap();
    w.push(&nap, name);
}

/// The most intervals `[start, end)` that overlap at any instant.
fn max_overlap(intervals: &[(u64, u64)]) -> usize {
    let mut events: Vec<(u64, i64)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // An end at the same ms as a start comes first: the slot was free when the claim was made.
    events.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

/// The most times in any window `[t, t + width)`.
fn max_in_window(times: &[u64], width: u64) -> usize {
    let mut t = times.to_vec();
    t.sort();
    let mut most = 0;
    let mut lo = 0;
    for hi in 0..t.len() {
        while t[hi] - t[lo] >= width {
            lo += 1;
        }
        most = most.max(hi - lo + 1);
    }
    most
}

/// Waiting tasks whose expiry passes are finished as `expired` by the reaper of a worker of a
/// paused queue: never run, counted in `queue stats`, their unique key, module references and
/// `result --wait` waiters released, their blocked dependents cancelled (`parent_expired`), and
/// purged with `purge --state expired`. Tasks without an expiry (or a later one) still run.
#[test]
fn expired_tasks_never_run_and_the_numbers_add_up() {
    let s = server();
    let w = Wasmq::new(&s);
    let sha = w.push(&fixture("echo.wat"), "echo");
    w.ok(&["queue", "pause", "exp"]);
    let enq = |input: &str, extra: &[&str]| {
        let mut args = vec!["--queue", "exp"];
        args.extend_from_slice(extra);
        w.enqueue("echo", input, &args)
    };
    let short: Vec<String> = (0..4).map(|i| enq(&format!("s{i}"), &["--expires", "1s"])).collect();
    let uniq = enq("u", &["--expires", "1s", "--unique-key", "k1"]);
    let delayed = enq("d", &["--expires", "1s", "--delay", "1h"]);
    let keep: Vec<String> = (0..3).map(|i| enq(&format!("k{i}"), &[])).collect();
    let later = enq("l", &["--expires", "1h"]);
    let blocked = enq("b", &["--after", &keep[0], "--expires", "1s"]);
    let dependent = enq("c", &["--after", &short[0]]);
    let waiter = {
        let (url, id) = (s.url(), short[1].clone());
        std::thread::spawn(move || Wasmq { url, prefix: "wasmq".into() }.run(&["result", &id, "--wait", "--timeout", "30s"]))
    };
    let expired: Vec<&String> = short.iter().chain([&uniq, &delayed, &blocked]).collect();

    let _worker = w.spawn_worker(&["--queue", "exp", "--reap-interval", "200ms"]);
    let st = eventually(Duration::from_secs(20), || Some(stats(&w, "exp")).filter(|st| st["expired"] == 7)).expect("the tasks never expired");
    assert_eq!((st["expired_total"].as_u64(), st["cancelled"].as_u64(), st["pending"].as_u64()), (Some(7), Some(1), Some(4)), "{st}");
    assert_eq!((st["blocked"].as_u64(), st["delayed"].as_u64()), (Some(0), Some(0)), "{st}");
    let out = waiter.join().unwrap();
    assert_eq!(out.status.code(), Some(7), "result --wait of an expired task: {}", String::from_utf8_lossy(&out.stderr));
    for t in &expired {
        let h = task_hash(&s, t);
        assert_eq!(h.get("state").map(String::as_str), Some("expired"), "{t}: {h:?}");
        assert_eq!(w.run(&["status", t]).status.code(), Some(7));
    }
    let d = w.status(&dependent).unwrap();
    assert_eq!((d["state"].as_str(), d["cancel_reason"].as_str()), (Some("cancelled"), Some("parent_expired")), "{d}");
    // The unique key is free again, the module references count only the unfinished tasks, and
    // only the task with a later expiry is left in the expiring index.
    let again = w.ok(&["enqueue", "echo", "--queue", "exp", "--input", "u2", "--unique-key", "k1"]).trim().to_string();
    assert_ne!(again, uniq);
    let mut c = crate::common::redis_conn(&s);
    let k = crate::common::qk("exp");
    let refs: i64 = c.hget(k.modrefs(), &sha).unwrap();
    assert_eq!(refs, 5, "keep (3), later, and the new unique task");
    let expiring: Vec<u64> = c.zrange(k.expiring(), 0, -1).unwrap();
    assert_eq!(expiring, [id(&later).seq]);

    w.ok(&["queue", "resume", "exp"]);
    let st = eventually(Duration::from_secs(30), || Some(stats(&w, "exp")).filter(|st| st["succeeded"] == 5)).expect("the other tasks never ran");
    let total = |n: &str| st[n].as_u64().unwrap();
    assert_eq!(total("enqueued_total"), total("succeeded_total") + total("expired_total") + total("cancelled_total"), "{st}");
    assert_eq!(total("expired_total"), 7, "{st}");
    for t in &expired {
        let h = task_hash(&s, t);
        assert_eq!(h.get("state").map(String::as_str), Some("expired"), "{t}: {h:?}");
        for f in ["claimed", "started", "attempts", "output"] {
            assert!(!h.contains_key(f), "expired task {t} has {f}: {h:?}");
        }
    }
    assert!(w.ok(&["purge", "--queue", "exp", "--state", "expired", "--older-than", "0"]).starts_with("7 expired"));
    let st = stats(&w, "exp");
    assert_eq!((st["expired"].as_u64(), st["expired_total"].as_u64()), (Some(0), Some(7)), "{st}");
    assert!(w.status(&short[2]).is_none(), "purged");
}

/// A claim never starts a task past its expiry, even before any sweep: it finishes it as expired
/// instead. A task claimed before its expiry leaves the expiring index, and an expiry already past
/// at enqueue expires the task at once.
#[test]
fn a_claim_expires_a_task_instead_of_starting_it() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let soon = w.enqueue("echo", "a", &["--expires", "10s"]);
    let later = w.enqueue("echo", "b", &["--expires", "1h"]);
    let past = w.enqueue("echo", "c", &["--expires", "2000-01-01T00:00:00Z"]);
    assert_eq!(w.status(&past).unwrap()["state"], "expired");
    assert_eq!(w.run(&["result", &past]).status.code(), Some(7));
    let claimed = rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        let claim = wasmq::queue::ClaimRequest { n: 10, max_bytes: 0, lease: Duration::from_secs(30), worker: "w", max_input: 0, run_slots: 0 };
        // A minute later (by the scripts' clock): the first task's expiry has passed.
        db().with_clock_offset(60_000).claim(&mut conn, &QueueName::new("default").unwrap(), claim).await.unwrap()
    });
    let ids: Vec<String> = claimed.tasks.iter().map(|t| t.id.to_string()).collect();
    assert_eq!(ids, [later]);
    assert_eq!(w.status(&soon).unwrap()["state"], "expired");
    let st = stats(&w, "default");
    assert_eq!((st["expired"].as_u64(), st["active"].as_u64()), (Some(2), Some(1)), "{st}");
    let expiring: u64 = crate::common::redis_conn(&s).zcard(crate::common::qk("default").expiring()).unwrap();
    assert_eq!(expiring, 0, "the claimed task left the expiring index");
}

/// Three workers of concurrency 8 and a queue limit of 5: never more than 5 tasks of the queue
/// claimed at once (from the claim and finish times the scripts recorded), and the limit is used.
/// A waiting task's status says what holds it back, and `queue stats` shows the limit in use.
#[test]
fn a_concurrency_limit_holds_across_workers() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    push_nap(&w, dir.path(), "nap", 200);
    w.ok(&["queue", "limit", "cc", "--concurrency", "5"]);
    let inputs = dir.path().join("in.jsonl");
    std::fs::write(&inputs, "1\n".repeat(60)).unwrap();
    let tasks: Vec<String> = w.ok(&["enqueue", "nap", "--queue", "cc", "--inputs-file", inputs.to_str().unwrap()]).lines().map(str::to_string).collect();
    assert_eq!(tasks.len(), 60);
    let _workers: Vec<_> = (0..3).map(|_| w.spawn_worker(&["--queue", "cc", "--concurrency", "8"])).collect();
    let last = tasks.last().unwrap().clone();
    let waiting = eventually(Duration::from_secs(20), || w.status(&last).filter(|st| st["waiting_on"] == "concurrency_limit"));
    assert!(waiting.is_some(), "a pending task's status never said it waits for the concurrency limit");
    let text = w.ok_any(&["status", &last]);
    assert!(text.contains("waiting     concurrency limit") || !text.contains("pending"), "{text}");
    let st = stats(&w, "cc");
    assert_eq!(st["limits"]["concurrency"], 5, "{st}");
    assert!(st["active"].as_u64().unwrap() <= 5, "{st}");
    eventually(Duration::from_secs(60), || (stats(&w, "cc")["succeeded"] == 60).then_some(())).expect("the tasks never all ran");
    let intervals: Vec<(u64, u64)> = tasks
        .iter()
        .map(|t| {
            let h = task_hash(&s, t);
            (h["claimed"].parse().unwrap(), h["finished"].parse().unwrap())
        })
        .collect();
    let most = max_overlap(&intervals);
    assert!(most <= 5, "{most} tasks held at once under a limit of 5");
    assert!(most >= 4, "the limit of 5 was never used ({most} at most): the workers claimed too little");
    let text = w.ok(&["queue", "stats", "-q", "cc"]);
    assert!(text.contains("concurrency 0/5"), "{text}");
    w.ok(&["queue", "limit", "cc", "--clear"]);
    assert_eq!(stats(&w, "cc")["limits"]["concurrency"], serde_json::Value::Null);
}

/// A worker SIGKILLed while it holds all of a queue's slots does not leak them beyond its lease:
/// the reaper of another worker returns its tasks and that worker fills the slots again, never
/// more than the limit.
#[test]
fn a_killed_worker_frees_its_slots_after_its_lease() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    push_nap(&w, dir.path(), "nap", 3000);
    w.ok(&["queue", "limit", "kk", "--concurrency", "3"]);
    let tasks: Vec<String> = (0..6).map(|_| w.enqueue("nap", "", &["--queue", "kk", "--timeout", "20s", "--max-attempts", "5"])).collect();
    let mut first = w.spawn_worker(&["--queue", "kk", "--concurrency", "8", "--lease", "2s"]);
    let mut c = crate::common::redis_conn(&s);
    let active = crate::common::qk("kk").active();
    eventually(Duration::from_secs(20), || (c.zcard::<_, u64>(&active).unwrap() == 3).then_some(())).expect("never 3 active");
    // Only 3 claimed though the worker had 8 slots, and none prefetched.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.zcard::<_, u64>(&active).unwrap(), 3);
    let first_id = tasks.iter().find_map(|t| task_hash(&s, t).get("worker").cloned()).expect("a claimed task names its worker");
    first.signal(Signal::KILL);
    first.wait(Duration::from_secs(5));
    let _second = w.spawn_worker(&["--queue", "kk", "--concurrency", "8", "--lease", "2s", "--reap-interval", "500ms"]);
    // Within the lease and a reaper round, the second worker runs 3 tasks: the slots came back.
    let back = eventually(Duration::from_secs(15), || {
        let theirs = tasks
            .iter()
            .map(|t| task_hash(&s, t))
            .filter(|h| h.get("state").map(String::as_str) == Some("active") && h.get("worker") != Some(&first_id))
            .count();
        assert!(c.zcard::<_, u64>(&active).unwrap() <= 3, "more than the limit active");
        (theirs == 3).then_some(())
    });
    assert!(back.is_some(), "the killed worker's slots never came back");
    eventually(Duration::from_secs(60), || (stats(&w, "kk")["succeeded"] == 6).then_some(())).expect("the tasks never all ran");
}

/// Three workers, a limit of 50/s, 500 short tasks: in any 1 s window of claim times at most 50
/// (exact: the window is a sliding one on the server's clock; the test allows one more for the
/// ms rounding of the recorded times), and the run takes about 10 s, not far more.
#[test]
fn a_rate_limit_holds_across_workers() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("noop.wat"), "noop");
    w.ok(&["queue", "limit", "rr", "--rate", "50/s"]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.jsonl");
    std::fs::write(&p, "1\n".repeat(500)).unwrap();
    let tasks: Vec<String> = w.ok(&["enqueue", "noop", "--queue", "rr", "--inputs-file", p.to_str().unwrap()]).lines().map(str::to_string).collect();
    assert_eq!(tasks.len(), 500);
    let _workers: Vec<_> = (0..3).map(|_| w.spawn_worker(&["--queue", "rr", "--concurrency", "8"])).collect();
    let last = tasks.last().unwrap().clone();
    let waiting = eventually(Duration::from_secs(10), || w.status(&last).filter(|st| st["waiting_on"] == "rate_limit"));
    assert!(waiting.is_some(), "a pending task's status never said it waits for the rate limit");
    eventually(Duration::from_secs(40), || (stats(&w, "rr")["succeeded"] == 500).then_some(())).expect("the tasks never all ran");
    let mut claimed = Vec::new();
    let mut started = Vec::new();
    for t in &tasks {
        let h = task_hash(&s, t);
        claimed.push(h["claimed"].parse::<u64>().unwrap());
        started.push(h["started"].parse::<u64>().unwrap());
    }
    let most = max_in_window(&claimed, 1000);
    assert!(most <= 51, "{most} tasks claimed in one 1 s window under a limit of 50/s");
    let most_started = max_in_window(&started, 1000);
    let span = claimed.iter().max().unwrap() - claimed.iter().min().unwrap();
    eprintln!("rate: at most {most} claims and {most_started} starts in a 1 s window; 500 tasks claimed over {span} ms");
    // 500 at 50/s: the last claim comes 9 s after the first at best.
    assert!((8_900..=13_000).contains(&span), "500 tasks at 50/s took {span} ms");
    let st = stats(&w, "rr");
    assert_eq!(st["limits"]["rate"]["n"], 50, "{st}");
    assert_eq!(st["limits"]["rate"]["per_ms"], 1000, "{st}");
}

/// Scripts run by the server so far (EVALSHA and EVAL calls), from `INFO commandstats`.
fn script_calls(c: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split(&[':', ','][..]).find_map(|kv| kv.strip_prefix("calls=")).and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// A worker whose run slots are all busy does not spin on a limited queue with work left: its
/// claims take nothing (no free run slot) and must not pass a wake-up token on, which its own
/// idle listener would take back at once.
#[test]
fn a_full_worker_does_not_spin_on_a_limited_queue() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    push_nap(&w, dir.path(), "nap", 3000);
    w.ok(&["queue", "limit", "full", "--concurrency", "5"]);
    let tasks: Vec<String> = (0..3).map(|_| w.enqueue("nap", "", &["--queue", "full", "--timeout", "20s"])).collect();
    let _worker = w.spawn_worker(&["--queue", "full", "--concurrency", "1", "--prefetch", "2"]);
    eventually(Duration::from_secs(20), || tasks.iter().any(|t| task_hash(&s, t).contains_key("running")).then_some(())).expect("never running");
    let mut c = crate::common::redis_conn(&s);
    let before = script_calls(&mut c);
    std::thread::sleep(Duration::from_millis(1000));
    let calls = script_calls(&mut c) - before;
    // A heartbeat, a registry beat, a reaper round and a claim or two per second: not hundreds.
    assert!(calls < 40, "{calls} script calls in 1 s from one busy worker");
    let active: u64 = c.zcard(crate::common::qk("full").active()).unwrap();
    assert_eq!(active, 1, "claimed only for its free run slot");
}

/// A task that waits again after a claim (here: for a retry after a failed attempt) is under its
/// expiry again: the reaper's sweep expires it when its expiry passes, long before the retry
/// would be due (the recorded finish comes within a few reaper rounds of the expiry).
#[test]
fn a_task_waiting_for_a_retry_expires_when_its_expiry_passes() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("exit3.wat"), "exit3");
    let t = w.enqueue("exit3", "", &["--expires", "2s", "--max-attempts", "5"]);
    let _worker = w.spawn_worker(&["--backoff-base", "1h", "--backoff-cap", "1h", "--reap-interval", "200ms"]);
    let h = eventually(Duration::from_secs(20), || Some(task_hash(&s, &t)).filter(|h| h.get("state").map(String::as_str) == Some("expired")))
        .expect("the task never expired");
    assert_eq!(h.get("attempts").map(String::as_str), Some("1"), "{h:?}");
    let (expires, finished): (u64, u64) = (h["expires"].parse().unwrap(), h["finished"].parse().unwrap());
    assert!(finished >= expires && finished - expires < 3000, "expired at {finished}, {} ms after its expiry", finished.saturating_sub(expires));
    assert_eq!(stats(&w, "default")["expired_total"], 1);
}
