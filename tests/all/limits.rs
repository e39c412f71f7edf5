//! Flow control (issue #17): task expiry, a queue's concurrency limit and its rate limit, against
//! a real redis-server, the real binary and several worker processes. Timing is judged from the
//! times the scripts record in the task hashes (`claimed`, `finished`: the server's clock), not
//! from how long the test waited.

use std::time::Duration;

use redis::Commands;
use wasmq::queue::QueueName;

use crate::common::{RedisServer, Signal, Wasmq, db, eventually, fixture, id, rt, server, task_hash};

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

/// When each of these finished tasks was held: from its claim to its finish (the server's clock).
fn held(s: &RedisServer, tasks: &[String]) -> Vec<(u64, u64)> {
    tasks
        .iter()
        .map(|t| {
            let h = task_hash(s, t);
            (h["claimed"].parse().unwrap(), h["finished"].parse().unwrap())
        })
        .collect()
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
    let tasks: Vec<String> = w.ok(&["enqueue", "nap", "--queue", "cc", "--inputs-file", &inputs_file(dir.path(), 60)]).lines().map(str::to_string).collect();
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
    let most = max_overlap(&held(&s, &tasks));
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
    let tasks: Vec<String> = w.ok(&["enqueue", "noop", "--queue", "rr", "--inputs-file", &inputs_file(dir.path(), 500)]).lines().map(str::to_string).collect();
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

/// Claims `n` times one task each from `q` straight through `claim.lua` (no worker), returning
/// the claimed ids in order (a claim that took nothing ends it).
fn claim_one_by_one(s: &RedisServer, q: &str, n: usize) -> Vec<String> {
    rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        let claim = wasmq::queue::ClaimRequest { n: 1, max_bytes: 0, lease: Duration::from_secs(600), worker: "w", max_input: 0, run_slots: 1 };
        let mut out = Vec::new();
        for _ in 0..n {
            let batch = db().claim(&mut conn, &QueueName::new(q).unwrap(), claim).await.unwrap();
            if batch.tasks.is_empty() {
                break;
            }
            out.extend(batch.tasks.iter().map(|t| t.id.to_string()));
        }
        out
    })
}

/// `n` inputs in a file, for `enqueue --inputs-file`.
fn inputs_file(dir: &std::path::Path, n: usize) -> String {
    let p = dir.join(format!("in{n}.jsonl"));
    std::fs::write(&p, "1\n".repeat(n)).unwrap();
    p.to_str().unwrap().to_string()
}

/// Fairness between groups, at the script: group A enqueues 5,000 tasks, then group B one, then
/// a task without a group: claims take them round-robin, so B's task is the 2nd claimed and the
/// ungrouped one the 3rd (the bound: a group that gets work waits behind at most one task of each
/// other group with work). In FIFO order both would wait for all 5,000. With a group
/// concurrency limit of 2, A's third claim waits for a release, and B's task still comes 2nd.
#[test]
fn groups_take_turns_so_a_small_group_is_not_held_up() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let dir = tempfile::tempdir().unwrap();
    let file = inputs_file(dir.path(), 5000);
    for (q, limit) in [("fair", None), ("fairlim", Some("2"))] {
        if let Some(l) = limit {
            w.ok(&["queue", "limit", q, "--group-concurrency", l]);
        }
        let a = w.ok(&["enqueue", "echo", "--queue", q, "--group", "A", "--inputs-file", &file]);
        assert_eq!(a.lines().count(), 5000);
        let b = w.enqueue("echo", "b", &["--queue", q, "--group", "B"]);
        let plain = w.enqueue("echo", "c", &["--queue", q]);
        let st = stats(&w, q);
        assert_eq!((st["pending"].as_u64(), st["groups"].as_u64()), (Some(5002), Some(3)), "{st}");
        assert_eq!(w.status(&b).unwrap()["group"], "B");
        let claimed = claim_one_by_one(&s, q, 6);
        assert_eq!(claimed.get(1), Some(&b), "{q}: B's task was not the 2nd claimed: {claimed:?}");
        assert_eq!(claimed.get(2), Some(&plain), "{q}: the task without a group was not the 3rd claimed: {claimed:?}");
        let of_a = claimed.iter().filter(|t| **t != b && **t != plain).count();
        match limit {
            // A, B, -, A, A, A: A alone goes on.
            None => assert_eq!(of_a, 4, "{claimed:?}"),
            // A, B, -, A, then A is parked at its limit and nothing else waits.
            Some(_) => {
                assert_eq!(of_a, 2, "{q}: {claimed:?}");
                let next = a.lines().nth(2).unwrap();
                assert_eq!(w.status(next).unwrap()["waiting_on"], "group_concurrency_limit");
                let text = w.ok(&["queue", "stats", "-q", q]);
                assert!(text.contains("per group: concurrency 2"), "{text}");
            }
        }
        let st = stats(&w, q);
        assert_eq!(st["pending"].as_u64(), Some(5002 - claimed.len() as u64), "{st}");
    }
}

/// A worker that runs group A's 3,000 tasks is handed group B's one task (enqueued later) at its
/// next claim: at most one of A's tasks is claimed after B's was enqueued by a claim before the
/// one that takes B (the tasks a worker claimed before B arrived still run first, as claimed). Then, with a group concurrency limit of 2 and
/// two workers, A never has more than 2 tasks claimed at once, its parked turn comes back as its
/// tasks finish (all of them run), and B's task again waits for at most one of A's.
#[test]
fn a_worker_serves_a_late_group_at_once_and_holds_group_limits() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    w.push(&fixture("noop.wat"), "noop");
    push_nap(&w, dir.path(), "nap", 30);
    // When a task was claimed (0: not yet).
    let claimed = |t: &str| task_hash(&s, t).get("claimed").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    for (q, module, n, limit) in [("wfair", "noop", 3000, None), ("wlim", "nap", 40, Some("2"))] {
        if let Some(l) = limit {
            w.ok(&["queue", "limit", q, "--group-concurrency", l]);
        }
        let a: Vec<String> =
            w.ok(&["enqueue", module, "--queue", q, "--group", "A", "--inputs-file", &inputs_file(dir.path(), n)]).lines().map(str::to_string).collect();
        let workers: Vec<_> = (0..if limit.is_some() { 2 } else { 1 }).map(|_| w.spawn_worker(&["--queue", q, "--concurrency", "4"])).collect();
        // B arrives while A's tasks are being worked through.
        eventually(Duration::from_secs(30), || (stats(&w, q)["succeeded"].as_u64() >= Some(3)).then_some(())).expect("A never started");
        let b = w.enqueue(module, "1", &["--queue", q, "--group", "B"]);
        eventually(Duration::from_secs(30), || (w.status(&b)?["state"] == "succeeded").then_some(())).expect("B's task never ran");
        let hb = task_hash(&s, &b);
        let (b_created, b_claimed): (u64, u64) = (hb["created"].parse().unwrap(), hb["claimed"].parse().unwrap());
        // Claimed after B's task arrived (a claim made before it cannot know it) by a claim before
        // the one that took B (the tasks of one claim share its ms; B is at most 2nd in it). One
        // such claim may take one of A's first, if it was for a single task.
        let ahead = a.iter().map(|t| claimed(t)).filter(|&c| c > b_created && c < b_claimed).count();
        assert!(ahead <= 1, "{q}: {ahead} of A's tasks were claimed after B's task was enqueued and before the claim that took it");
        if limit.is_some() {
            eventually(Duration::from_secs(60), || (stats(&w, q)["succeeded"] == n + 1).then_some(()))
                .expect("A's tasks never all ran: a parked group did not come back");
            let most = max_overlap(&held(&s, &a));
            assert!(most <= 2, "{most} of A's tasks held at once under a group limit of 2");
            assert_eq!(most, 2, "the group limit of 2 was never used");
        }
        drop(workers);
    }
}

/// A group rate limit of 10/s holds for each group on its own: groups A and B, 30 tasks each,
/// two workers: no 1 s window of one group's claim times holds more than 10 (one more allowed
/// for the rounding of recorded times), while the two groups together go faster than one would
/// alone. A waiting task of a rate-parked group says so.
#[test]
fn a_group_rate_limit_holds_for_each_group() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    w.push(&fixture("noop.wat"), "noop");
    w.ok(&["queue", "limit", "grate", "--group-rate", "10/s"]);
    let file = inputs_file(dir.path(), 30);
    let a: Vec<String> = w.ok(&["enqueue", "noop", "--queue", "grate", "--group", "A", "--inputs-file", &file]).lines().map(str::to_string).collect();
    let b: Vec<String> = w.ok(&["enqueue", "noop", "--queue", "grate", "--group", "B", "--inputs-file", &file]).lines().map(str::to_string).collect();
    let _workers: Vec<_> = (0..2).map(|_| w.spawn_worker(&["--queue", "grate", "--concurrency", "8"])).collect();
    let last = a.last().unwrap().clone();
    let waiting = eventually(Duration::from_secs(10), || w.status(&last).filter(|st| st["waiting_on"] == "group_rate_limit"));
    assert!(waiting.is_some(), "a pending task's status never said its group waits for its rate limit");
    eventually(Duration::from_secs(30), || (stats(&w, "grate")["succeeded"] == 60).then_some(())).expect("the tasks never all ran");
    let times = |ids: &[String]| -> Vec<u64> { ids.iter().map(|t| task_hash(&s, t)["claimed"].parse().unwrap()).collect() };
    let (ta, tb) = (times(&a), times(&b));
    for (g, t) in [("A", &ta), ("B", &tb)] {
        let most = max_in_window(t, 1000);
        assert!(most <= 11, "group {g}: {most} claims in one 1 s window under 10/s");
        let span = t.iter().max().unwrap() - t.iter().min().unwrap();
        assert!((1_900..=6_000).contains(&span), "group {g}: 30 tasks at 10/s took {span} ms");
    }
    let all: Vec<u64> = ta.iter().chain(&tb).copied().collect();
    assert!(max_in_window(&all, 1000) > 11, "the two groups were not limited each on its own");
}

/// The numbers add up with groups: pending counts the groups' tasks (a cancel's tombstone not
/// counted), `queue drain` empties every group's pool (the scan of the groups carried over
/// script calls), and the groups leave the rotation at the next claim.
#[test]
fn groups_count_cancel_and_drain() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let dir = tempfile::tempdir().unwrap();
    let file = inputs_file(dir.path(), 3);
    // 1,500 groups of 3 tasks (through the library: 1,500 processes would be slow): more
    // groups than one drain call scans.
    let mut all: Vec<String> = w.ok(&["enqueue", "echo", "--queue", "gd", "--group", "g0", "--inputs-file", &file]).lines().map(str::to_string).collect();
    all.push(w.enqueue("echo", "plain", &["--queue", "gd"]));
    rt().block_on(async {
        let client = wasmq::client::Client::connect(wasmq::conn::RedisOptions::new(s.url()), "wasmq").await.unwrap();
        for g in 1..1500 {
            let o = wasmq::client::EnqueueOptions {
                queue: QueueName::new("gd").unwrap(),
                group: Some(wasmq::queue::GroupKey::new(&format!("g{g}")).unwrap()),
                ..Default::default()
            };
            let ids = client.enqueue_bulk("echo", &[b"1".to_vec(), b"2".to_vec(), b"3".to_vec()], &o).await.unwrap();
            all.extend(ids.iter().map(|e| e.id.to_string()));
        }
    });
    assert_eq!(all.len(), 4501);
    let st = stats(&w, "gd");
    assert_eq!((st["pending"].as_u64(), st["groups"].as_u64()), (Some(4501), Some(1501)), "{st}");
    w.ok(&["cancel", &all[0]]);
    assert_eq!(stats(&w, "gd")["pending"], 4500);
    let out = w.ok(&["queue", "drain", "gd"]);
    assert!(out.contains("4500"), "{out}");
    let st = stats(&w, "gd");
    assert_eq!((st["pending"].as_u64(), st["cancelled"].as_u64()), (Some(0), Some(4501)), "{st}");
    assert_eq!(w.status(&all[4500]).unwrap()["cancel_reason"], "drained");
    // A claim visits at most about 1,000 groups that left nothing to claim: two calls.
    assert!(claim_one_by_one(&s, "gd", 1).is_empty());
    assert!(claim_one_by_one(&s, "gd", 1).is_empty());
    assert_eq!(stats(&w, "gd")["groups"], 0, "the drained groups left the rotation");
    let bad = w.run(&["enqueue", "echo", "--group", "a b"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("group"), "{bad:?}");
}

/// `queue policy` re-orders the tasks in every group's pool, and deleting a queue removes its
/// groups' pools and rate windows with the rest: no key of the queue is left.
#[test]
fn a_policy_change_reorders_every_group_and_a_deleted_queue_leaves_no_group_key() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let a1 = w.enqueue("echo", "a1", &["--queue", "gp", "--group", "a", "--priority", "1"]);
    let a5 = w.enqueue("echo", "a5", &["--queue", "gp", "--group", "a", "--priority", "5"]);
    let b = w.enqueue("echo", "b", &["--queue", "gp", "--group", "b"]);
    let plain = w.enqueue("echo", "plain", &["--queue", "gp"]);
    // Under `priority`, a5 would come first in group a; under fifo, a1 does.
    w.ok(&["queue", "policy", "gp", "fifo"]);
    let claimed = claim_one_by_one(&s, "gp", 10);
    assert_eq!(claimed.len(), 4, "{claimed:?}");
    for t in [&a1, &a5, &b, &plain] {
        assert!(claimed.contains(t), "{t} not claimed: {claimed:?}");
    }
    let at = |t: &String| claimed.iter().position(|c| c == t).unwrap();
    assert!(at(&a1) < at(&a5), "group a kept its priority order after the change to fifo: {claimed:?}");

    // A queue with a group at work (a rate window), a waiting group and tasks without a group.
    w.ok(&["queue", "limit", "gdel", "--group-rate", "100/1s"]);
    w.enqueue("echo", "x", &["--queue", "gdel", "--group", "x"]);
    w.enqueue("echo", "y", &["--queue", "gdel", "--group", "y"]);
    w.enqueue("echo", "z", &["--queue", "gdel"]);
    assert_eq!(claim_one_by_one(&s, "gdel", 1).len(), 1);
    let mut c = crate::common::redis_conn(&s);
    let keys = |c: &mut redis::Connection| -> Vec<String> { c.keys("wasmq:{gdel}:*").unwrap() };
    assert!(keys(&mut c).iter().any(|k| k.ends_with(":rate")), "{:?}", keys(&mut c));
    rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        db().delete_queue(&mut conn, &QueueName::new("gdel").unwrap()).await.unwrap();
    });
    assert_eq!(keys(&mut c), Vec::<String>::new());
}
