//! Leases, fencing, retries, dead letters, cancellation, purge and graceful shutdown, against real
//! `redis-server` processes and real worker processes.

use std::time::{Duration, Instant};

use crate::common::{RedisServer, Wasmq, eventually, server, task_hash};
use redis::Commands;

fn seq(id: &str) -> &str {
    id.rsplit(':').next().unwrap()
}

#[test]
fn a_killed_worker_loses_its_lease_and_another_worker_finishes_the_task() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("sleep.wat"), "sleep");
    w.push(&crate::common::fixture("echo.wat"), "echo");
    // sleep.wat sleeps 10 s: with a 20 s timeout it is still running when its worker is killed.
    let long = w.enqueue("sleep", "", &["--timeout", "20s"]);
    let mut a = w.spawn_worker(&["--lease", "2s", "--id", "worker-a"]);
    eventually(Duration::from_secs(20), || w.status(&long).filter(|s| s["state"] == "active")).expect("never claimed");
    // Killed once its heartbeat has reported the task running: the lost lease is an attempt.
    eventually(Duration::from_secs(10), || task_hash(&s, &long).get("running").cloned()).expect("never seen running");
    a.signal(crate::common::Signal::KILL);
    a.wait(Duration::from_secs(5));
    let started = Instant::now();
    let b = w.spawn_worker(&["--lease", "2s", "--reap-interval", "1s", "--id", "worker-b"]);
    let done = eventually(Duration::from_secs(60), || w.status(&long).filter(|s| s["state"] == "succeeded"))
        .unwrap_or_else(|| panic!("not finished: {:?}\n{}", w.status(&long), b.log()));
    assert_eq!(done["worker"], "worker-b");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["errors"][0]["kind"], "lease_expired", "{done}");
    assert!(started.elapsed() < Duration::from_secs(40));
    let h = task_hash(&s, &long);
    assert_eq!(h["lease"], "2", "claimed exactly twice");
}

#[test]
fn a_stale_completion_is_refused_by_the_fencing_token() {
    // Drive the scripts directly: claim as "old", let the lease expire and be reaped, claim as
    // "new"; the old holder's completion must be refused and the new one's accepted.
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let id = w.enqueue("echo", "x", &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let sc = Scripts::new(&s).await;
        let seq: u64 = seq(&id).parse().unwrap();
        use wasmq::queue::Action::Succeeded;
        let first = sc.claim_batch("old", 0).await;
        assert_eq!(first.tasks.len(), 1, "claimed one task: {first:?}");
        let old_token = first.tasks[0].token;
        assert_eq!(first.tasks[0].spec.as_ref().unwrap().input, b"x");
        // The lease (1 s) expires; the reaper puts the task back.
        let (requeued, _dead) = sc.reap(5000, 5).await;
        assert_eq!(requeued.len(), 1);
        let second = sc.claim_batch("new", 5000).await;
        let new_token = second.tasks[0].token;
        assert!(new_token > old_token);
        let stale = sc.complete(seq, old_token, Succeeded, &[("output", "from the old holder")]).await;
        assert!(!stale, "a stale completion was accepted");
        assert!(sc.complete(seq, new_token, Succeeded, &[("output", "from the new holder")]).await);
        let twice = sc.complete(seq, new_token, Succeeded, &[("output", "twice")]).await;
        assert!(!twice, "a second completion was accepted");
    });
    let h = task_hash(&s, &id);
    assert_eq!(h["output"], "from the new holder");
    assert_eq!(h["state"], "succeeded");
}

#[test]
fn failures_are_retried_with_backoff_then_dead_with_every_error() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("exit3.wat"), "exit3");
    w.push(&crate::common::fixture("trap.wat"), "trap");
    let failing = w.enqueue("exit3", "", &[]);
    let once = w.enqueue("trap", "", &["--max-attempts", "1"]);
    let started = Instant::now();
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--backoff-base", "300ms", "--backoff-cap", "1s"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    // Two backoffs of at least 150 ms and 300 ms (equal jitter: half fixed).
    assert!(started.elapsed() >= Duration::from_millis(450));
    let st = w.status(&failing).unwrap();
    assert_eq!(st["state"], "dead");
    assert_eq!(st["attempts"], 3);
    let errors = st["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{st}");
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], i as u64 + 1);
        assert_eq!(e["kind"], "exit_code");
    }
    let st = w.status(&once).unwrap();
    assert_eq!((st["state"].as_str(), st["attempts"].as_u64()), (Some("dead"), Some(1)));
    let dead = w.ok(&["dead", "list"]);
    assert!(dead.contains(&failing) && dead.contains(&once), "{dead}");
}

#[test]
fn malformed_task_data_fails_once_and_the_worker_carries_on() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let bad = w.enqueue("echo", "x", &[]);
    let good = w.enqueue("echo", "y", &[]);
    let mut c = crate::common::redis_conn(&s);
    let _: () = c.hset(crate::common::task_key("default", seq(&bad)), "timeout_ms", "soon").unwrap();
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    let st = w.status(&bad).unwrap();
    assert_eq!(st["state"], "dead");
    assert_eq!(st["error_kind"], "invalid_task");
    assert!(st["error"].as_str().unwrap().contains("timeout_ms"), "{st}");
    assert_eq!(st["attempts"], 1);
    assert_eq!(w.status(&good).unwrap()["state"], "succeeded");
}

#[test]
fn dead_tasks_can_be_retried() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("trap.wat"), "trap");
    let ids: Vec<String> = (0..3).map(|_| w.enqueue("trap", "", &["--max-attempts", "1"])).collect();
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0));
    let out = w.ok(&["dead", "retry", &ids[0]]);
    assert_eq!(out.trim(), ids[0]);
    assert_eq!(w.status(&ids[0]).unwrap()["state"], "pending");
    assert_eq!(w.status(&ids[0]).unwrap()["attempts"], 0);
    let out = w.run(&["dead", "retry", "default:999"]);
    assert_eq!(out.status.code(), Some(1), "retrying a task that is not dead is an error");
    let out = w.ok(&["dead", "retry", "--all"]);
    assert_eq!(out.lines().count(), 2);
    let mut c = crate::common::redis_conn(&s);
    let pending: u64 = crate::common::pending_count(&mut c, "default");
    let dead: u64 = c.zcard(crate::common::qk("default").dead()).unwrap();
    assert_eq!((pending, dead), (3, 0));
}

#[test]
fn cancel_removes_waiting_tasks_and_stops_running_ones() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("loop.wat"), "loop");
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let waiting = w.enqueue("echo", "x", &["--delay", "1h"]);
    assert_eq!(w.ok(&["cancel", &waiting]).trim(), format!("{waiting} cancelled"));
    assert_eq!(w.status(&waiting).unwrap()["state"], "cancelled");
    assert_eq!(w.run(&["cancel", &waiting]).status.code(), Some(1), "already finished");
    assert_eq!(w.run(&["cancel", "default:999"]).status.code(), Some(3));

    let running = w.enqueue("loop", "", &["--timeout", "60s"]);
    let mut worker = w.spawn_worker(&[]);
    eventually(Duration::from_secs(20), || w.status(&running).filter(|s| s["state"] == "active")).expect("never started");
    let asked = Instant::now();
    assert!(w.ok(&["cancel", &running]).contains("will stop it"));
    let st = eventually(Duration::from_secs(10), || w.status(&running).filter(|s| s["state"] == "cancelled"))
        .unwrap_or_else(|| panic!("not cancelled: {}", worker.log()));
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(4), "cancelling a running task took {took:?}");
    assert_eq!(st["error_kind"], "cancelled");
    assert_eq!(w.run(&["result", &running]).status.code(), Some(6));
    // The worker is still there and takes new work.
    let after = w.enqueue("echo", "after", &[]);
    assert!(eventually(Duration::from_secs(20), || w.status(&after).filter(|s| s["state"] == "succeeded")).is_some());
    assert!(worker.is_running());
}

#[test]
fn purge_deletes_finished_tasks_of_one_state() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    w.push(&crate::common::fixture("trap.wat"), "trap");
    let ok: Vec<String> = (0..5).map(|i| w.enqueue("echo", &i.to_string(), &[])).collect();
    let bad = w.enqueue("trap", "", &["--max-attempts", "1"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0));
    let out = w.ok(&["purge", "--queue", "default", "--state", "succeeded", "--older-than", "1h"]);
    assert!(out.starts_with("0 "), "nothing is an hour old: {out}");
    let out = w.ok(&["purge", "--queue", "default", "--state", "succeeded", "--older-than", "0s"]);
    assert!(out.starts_with("5 "), "{out}");
    for id in &ok {
        assert!(w.status(id).is_none(), "{id} survived the purge");
    }
    assert_eq!(w.status(&bad).unwrap()["state"], "dead", "another state was touched");
}

#[test]
fn shutdown_after_the_grace_period_hands_tasks_back_at_once() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("loop.wat"), "loop");
    let ids: Vec<String> = (0..3).map(|_| w.enqueue("loop", "", &["--timeout", "60s"])).collect();
    let mut worker = w.spawn_worker(&["--concurrency", "1", "--prefetch", "2", "--grace", "500ms", "--lease", "60s"]);
    eventually(Duration::from_secs(20), || w.status(&ids[0]).filter(|s| s["state"] == "active")).expect("never started");
    std::thread::sleep(Duration::from_millis(300));
    worker.signal(crate::common::Signal::TERM);
    let stopped = Instant::now();
    assert_eq!(worker.wait(Duration::from_secs(20)), Some(0), "{}", worker.log());
    assert!(stopped.elapsed() < Duration::from_secs(10));
    // Nothing waits for a lease to expire: every task is pending again, no attempt counted.
    for id in &ids {
        let st = w.status(id).unwrap();
        assert_eq!(st["state"], "pending", "{id}: {st}");
        assert_eq!(st["attempts"], 0, "{id}: a released task counted an attempt");
    }
    let mut c = crate::common::redis_conn(&s);
    let active: u64 = c.zcard(crate::common::qk("default").active()).unwrap();
    assert_eq!(active, 0);
}

#[test]
fn durable_enqueue_reports_what_it_can_guarantee() {
    // Without AOF or replicas a durable enqueue cannot be confirmed: the task is queued, the
    // command says so and fails.
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let out = w.run(&["enqueue", "echo", "--input", "x", "--durable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not confirmed durable"), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(w.status(&id).unwrap()["state"], "pending", "the task is queued all the same, and its id printed");
    // With appendfsync always it is.
    let aof = RedisServer::start_with(wasmq_testkit::redis_server::ServerOptions::default().arg("appendonly", "yes").arg("appendfsync", "always")).unwrap();
    let w = Wasmq::new(&aof);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let out = w.run(&["enqueue", "echo", "--input", "x", "--durable"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The scripts a worker runs, driven by hand against one queue (`default`) so that a test can
/// place a worker's death exactly. Times are offsets (ms) from the Redis server's clock, which the
/// scripts read: a test moves time forward instead of sleeping.
pub(crate) struct Scripts {
    conn: wasmq::conn::Conn,
    q: wasmq::queue::QueueName,
}

impl Scripts {
    pub(crate) async fn new(s: &RedisServer) -> Self {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let conn = redis.connect().await.unwrap();
        Self { conn, q: wasmq::queue::QueueName::new("default").unwrap() }
    }

    fn db(at: i64) -> wasmq::queue::Db {
        wasmq::queue::Db::new("wasmq").with_clock_offset(at)
    }

    /// Claims one task for `worker` with a 1 s lease at `at`.
    async fn claim_batch(&self, worker: &str, at: i64) -> wasmq::queue::ClaimBatch {
        let r = wasmq::queue::ClaimRequest { n: 1, max_bytes: 0, lease: Duration::from_secs(1), worker, max_input: 0, run_slots: 0 };
        Self::db(at).claim(&mut self.conn.clone(), &self.q, r).await.unwrap()
    }

    /// Claims one task with a 1 s lease at `at`; returns its lease token.
    pub(crate) async fn claim(&self, at: i64) -> Option<u64> {
        self.claim_batch("w", at).await.tasks.first().map(|t| t.token)
    }

    /// A heartbeat at `at` that reports the task as running.
    async fn heartbeat_running(&self, seq: u64, token: u64, at: i64) {
        let held = [wasmq::queue::HeldLease { seq, token, started_ms: 1, progress: None }];
        Self::db(at).heartbeat(&mut self.conn.clone(), &self.q, Duration::from_secs(1), &held).await.unwrap();
    }

    /// Reaps at `at` with a limit of `max_stalls`; returns (requeued, dead).
    async fn reap(&self, at: i64, max_stalls: u32) -> (Vec<u64>, Vec<u64>) {
        let r = wasmq::queue::ReapRequest { limit: 100, max_attempts: 3, max_stalls, retention: Default::default() };
        let reply = Self::db(at).reap(&mut self.conn.clone(), &self.q, r).await.unwrap();
        (reply.requeued, reply.dead)
    }

    /// Completes a task with `action` and result `fields`; returns whether it was applied.
    pub(crate) async fn complete(&self, seq: u64, token: u64, action: wasmq::queue::Action, fields: &[(&'static str, &str)]) -> bool {
        self.complete_spawning(seq, token, action, fields, Vec::new()).await
    }

    /// Completes a task whose attempt spawned `children` (committed only by a success).
    pub(crate) async fn complete_spawning(
        &self,
        seq: u64,
        token: u64,
        action: wasmq::queue::Action,
        fields: &[(&'static str, &str)],
        children: Vec<wasmq::queue::ChildTask>,
    ) -> bool {
        let c = wasmq::queue::Completion {
            seq,
            token,
            action,
            delay: Duration::from_millis(10),
            error: None,
            fields: fields.iter().map(|(k, v)| (*k, v.as_bytes().to_vec())).collect(),
            children,
        };
        let r = Self::db(0).complete(&mut self.conn.clone(), &self.q, "w", Default::default(), &[&c]).await.unwrap();
        r[0]
    }
}

#[test]
fn an_expired_lease_counts_as_an_attempt_only_if_the_task_was_seen_running() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let id = w.enqueue("echo", "x", &["--max-attempts", "2"]);
    let seq: u64 = seq(&id).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let sc = Scripts::new(&s).await;
        let mut now = 0;
        // Claimed, never run (a prefetched task of a worker that died): not an attempt, a stall.
        sc.claim(now).await.expect("claimed");
        now += 5000;
        assert_eq!(sc.reap(now, 3).await, (vec![seq], vec![]));
        let h = task_hash(&s, &id);
        assert_eq!((h["attempts"].as_str(), h["stalls"].as_str(), h["state"].as_str()), ("0", "1", "pending"), "{h:?}");
        // Claimed and seen running: the expired lease is a failed attempt.
        let token = sc.claim(now).await.expect("claimed again");
        sc.heartbeat_running(seq, token, now).await;
        assert_eq!(task_hash(&s, &id)["running"], token.to_string());
        now += 5000;
        assert_eq!(sc.reap(now, 3).await, (vec![seq], vec![]));
        let h = task_hash(&s, &id);
        assert_eq!((h["attempts"].as_str(), h["error_kind"].as_str()), ("1", "lease_expired"), "{h:?}");
        // Stalls are bounded too: a task that kills its worker before the first heartbeat does
        // not loop forever. Two more stalls make three: dead.
        for round in 0..2 {
            sc.claim(now).await.expect("claimed");
            now += 5000;
            let (requeued, dead) = sc.reap(now, 3).await;
            if round == 0 {
                assert_eq!((requeued, dead), (vec![seq], vec![]));
            } else {
                assert_eq!((requeued, dead), (vec![], vec![seq]));
            }
        }
        let h = task_hash(&s, &id);
        assert_eq!(h["state"], "dead", "{h:?}");
        assert!(h["error"].contains("before the task was seen running"), "{h:?}");
    });
}

#[test]
fn a_worker_killed_with_tasks_waiting_in_its_prefetch_costs_them_no_attempt() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("sleep.wat"), "sleep");
    w.push(&crate::common::fixture("echo.wat"), "echo");
    // The long task runs first; the three others wait in the worker's prefetch. With one attempt
    // each, counting the killed worker's lease against them would leave them dead.
    let long = w.enqueue("sleep", "", &["--timeout", "20s", "--priority", "5"]);
    let waiting: Vec<String> = (0..3).map(|i| w.enqueue("echo", &i.to_string(), &["--max-attempts", "1"])).collect();
    let mut a = w.spawn_worker(&["--concurrency", "1", "--prefetch", "3", "--lease", "2s", "--id", "worker-a"]);
    eventually(Duration::from_secs(20), || w.status(&waiting[2]).filter(|s| s["state"] == "active")).expect("never prefetched");
    // The heartbeat (every second at this lease... at most 2s/3) marks the long task running.
    eventually(Duration::from_secs(10), || task_hash(&s, &long).get("running").cloned()).expect("never seen running");
    a.signal(crate::common::Signal::KILL);
    a.wait(Duration::from_secs(5));
    let b = w.spawn_worker(&["--lease", "2s", "--reap-interval", "1s", "--id", "worker-b"]);
    for (i, id) in waiting.iter().enumerate() {
        let st = eventually(Duration::from_secs(60), || w.status(id).filter(|s| s["state"] != "active" && s["state"] != "pending"))
            .unwrap_or_else(|| panic!("{id} not finished\n{}", b.log()));
        assert_eq!(st["state"], "succeeded", "{id}: {st}");
        assert_eq!(st["attempts"], 1, "{id}: {st}");
        assert_eq!(st["output_text"], i.to_string());
        assert_eq!(task_hash(&s, id)["stalls"], "1", "{id}");
    }
    let st = eventually(Duration::from_secs(60), || w.status(&long).filter(|s| s["state"] == "succeeded")).expect("long task");
    assert_eq!(st["attempts"], 2, "the task that was running lost an attempt: {st}");
    assert_eq!(st["errors"][0]["kind"], "lease_expired");
}

#[test]
fn a_cancel_wins_over_a_retry_or_a_hand_back() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let ids: Vec<String> = (0..2).map(|i| w.enqueue("echo", &i.to_string(), &[])).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let sc = Scripts::new(&s).await;
        for (id, action) in ids.iter().zip([wasmq::queue::Action::Retry, wasmq::queue::Action::Release]) {
            let token = sc.claim(0).await.expect("claimed");
            // Cancel requested while it runs; then its attempt fails (retry) or its worker shuts
            // down (release): either way it must end cancelled, not run again.
            assert!(w.ok(&["cancel", id]).contains("will stop it"));
            assert!(sc.complete(seq(id).parse().unwrap(), token, action, &[]).await);
            let h = task_hash(&s, id);
            assert_eq!(h["state"], "cancelled", "{action:?}: {h:?}");
        }
    });
    let mut c = crate::common::redis_conn(&s);
    let (pending, delayed): (u64, u64) = (crate::common::pending_count(&mut c, "default"), c.zcard(crate::common::qk("default").delayed()).unwrap());
    assert_eq!((pending, delayed), (0, 0));
}

#[test]
fn a_task_cancelled_while_it_waits_for_a_retry_never_runs_again() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("trap.wat"), "trap");
    let id = w.enqueue("trap", "", &["--max-attempts", "5"]);
    let worker = w.spawn_worker(&["--backoff-base", "1h", "--backoff-cap", "1h"]);
    eventually(Duration::from_secs(20), || w.status(&id).filter(|s| s["state"] == "delayed")).unwrap_or_else(|| panic!("{}", worker.log()));
    assert_eq!(w.ok(&["cancel", &id]).trim(), format!("{id} cancelled"));
    let st = w.status(&id).unwrap();
    assert_eq!((st["state"].as_str(), st["attempts"].as_u64()), (Some("cancelled"), Some(1)), "{st}");
    let mut c = crate::common::redis_conn(&s);
    let delayed: u64 = c.zcard(crate::common::qk("default").delayed()).unwrap();
    assert_eq!(delayed, 0);
}

#[test]
fn an_oversized_input_written_around_enqueue_never_reaches_the_worker() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let big = w.enqueue("echo", "x", &[]);
    let good = w.enqueue("echo", "y", &[]);
    let mut c = crate::common::redis_conn(&s);
    let _: () = c.hset(crate::common::task_key("default", seq(&big)), "input", vec![b'a'; 3 << 20]).unwrap();
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--max-input-size", "1MiB"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    let st = w.status(&big).unwrap();
    assert_eq!((st["state"].as_str(), st["error_kind"].as_str()), (Some("dead"), Some("invalid_task")), "{st}");
    assert!(st["error"].as_str().unwrap().contains(&format!("{} bytes", 3 << 20)), "{st}");
    assert_eq!(w.status(&good).unwrap()["state"], "succeeded");
}

#[test]
fn a_task_key_overwritten_while_it_runs_is_dropped_and_the_worker_carries_on() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("loop.wat"), "loop");
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let victim = w.enqueue("loop", "", &["--timeout", "60s", "--priority", "5"]);
    let mut worker = w.spawn_worker(&["--concurrency", "1"]);
    eventually(Duration::from_secs(20), || w.status(&victim).filter(|s| s["state"] == "active")).expect("never started");
    let mut c = crate::common::redis_conn(&s);
    let _: () = c.set(crate::common::task_key("default", seq(&victim)), "not a hash any more").unwrap();
    // The heartbeat finds the task gone and stops it; its result is refused; the slot is free.
    let after = w.enqueue("echo", "after", &[]);
    let st = eventually(Duration::from_secs(30), || w.status(&after).filter(|s| s["state"] == "succeeded"));
    assert!(st.is_some(), "the worker is stuck: {}", worker.log());
    assert!(worker.is_running(), "{}", worker.log());
    let active: u64 = c.zcard(crate::common::qk("default").active()).unwrap();
    assert_eq!(active, 0, "the overwritten task is still in the active set");
}

/// Exit status 2 is a permanent failure (the SDK's status for input it cannot decode): dead after
/// one attempt whatever `--max-attempts` allows, with kind `permanent`; other statuses are retried.
#[test]
fn exit_status_2_is_never_retried() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::example(wasmq_testkit::examples::WasmTarget::P1, "wordcount"), "wordcount");
    w.push(&crate::common::fixture("exit3.wat"), "exit3");
    let bad_input = w.enqueue("wordcount", r#"{"not": "a wordcount input"}"#, &["--max-attempts", "3"]);
    let failing = w.enqueue("exit3", "", &["--max-attempts", "2"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--backoff-base", "10ms", "--backoff-cap", "10ms"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0), "{}", worker.log());
    let h = task_hash(&s, &bad_input);
    assert_eq!((h["state"].as_str(), h["attempts"].as_str(), h["error_kind"].as_str()), ("dead", "1", "permanent"), "{h:?}");
    assert!(h["error"].contains("status 2") && h["error"].contains("not retried"), "{h:?}");
    let h = task_hash(&s, &failing);
    assert_eq!((h["state"].as_str(), h["attempts"].as_str(), h["error_kind"].as_str()), ("dead", "2", "exit_code"), "{h:?}");
}
