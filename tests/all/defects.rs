//! Regression tests for defects found in review: each reproduces what went wrong against a real
//! redis-server, the real binary and real modules.

use std::io::Write;
use std::time::Duration;

use redis::Commands;
use wasmq::queue::QueueName;
use wasmq_testkit::redis_server::ServerOptions;

use crate::common::{RedisServer, Wasmq, db, eventually, fixture, id, rt, server, task_hash};

fn queue(q: &str) -> QueueName {
    QueueName::new(q).unwrap()
}

/// Tasks claimed into a worker's prefetch and cancelled while they wait for a run slot never
/// start: they end cancelled (reason `requested`), with no output and no start time.
#[test]
fn a_task_cancelled_while_it_waits_in_a_worker_never_runs() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("sleep.wat"), "sleep");
    w.push(&fixture("echo.wat"), "echo");
    let blocker = w.enqueue("sleep", "", &["--timeout", "4s", "--max-attempts", "1", "--priority", "5"]);
    let waiting: Vec<String> = (0..6).map(|i| w.enqueue("echo", &i.to_string(), &[])).collect();
    let _worker = w.spawn_worker(&["--concurrency", "1", "--prefetch", "10"]);
    for id in &waiting {
        eventually(Duration::from_secs(20), || w.status(id).filter(|s| s["state"] == "active")).expect("never prefetched");
    }
    for id in &waiting {
        assert!(w.ok(&["cancel", id]).contains("will stop it"));
    }
    for id in &waiting {
        let st = eventually(Duration::from_secs(30), || w.status(id).filter(|s| s["state"] != "active")).expect("never finished");
        assert_eq!(st["state"], "cancelled", "{id} ran after its cancel: {st}");
        assert_eq!(st["cancel_reason"], "requested", "{st}");
        assert!(st["output_text"].is_null() && st["started_ms"].is_null(), "{id} started: {st}");
    }
    eventually(Duration::from_secs(20), || w.status(&blocker).filter(|s| s["state"] == "dead")).expect("blocker");
}

/// With Redis at maxmemory, a bulk enqueue prints exactly the ids of the tasks that were queued
/// (no more, no fewer: a retry of the lines it names duplicates nothing), names the lines that
/// were not, and exits 1.
#[test]
fn a_bulk_enqueue_that_fails_part_way_reports_exactly_what_was_queued() {
    let s = RedisServer::start_with(ServerOptions::default().arg("maxmemory", "4mb").arg("maxmemory-policy", "noeviction")).unwrap();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let line = format!("{{\"pad\": \"{}\"}}", "x".repeat(1000));
    for _ in 0..12_000 {
        writeln!(file, "{line}").unwrap();
    }
    let out = w.run(&["enqueue", "echo", "--inputs-file", file.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains("out of memory") && stderr.contains("were not enqueued"), "{stderr}");
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert!(!ids.is_empty(), "nothing was enqueued: {stderr}");
    let mut c = crate::common::redis_conn(&s);
    let pending = crate::common::pending_count(&mut c, "default");
    assert_eq!(pending, ids.len() as u64, "{} ids printed, {pending} tasks pending: {stderr}", ids.len());
    // The ids are the pending tasks themselves, in input order.
    let seqs: Vec<u64> = ids.iter().map(|i| id(i).seq).collect();
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "not in input order");
    for i in [&ids[0], ids.last().unwrap()] {
        assert_eq!(w.status(i).expect("printed id is not a task")["state"], "pending");
    }
}

/// Index entries of dead tasks whose hashes are gone (expired or deleted by hand) are skipped and
/// removed by `dead retry --all`, never a wall in front of the real dead tasks.
#[test]
fn dead_retry_all_gets_past_stale_entries() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("exit3.wat"), "exit3");
    let dead = w.enqueue("exit3", "", &["--max-attempts", "1"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(w.status(&dead).unwrap()["state"], "dead");
    let dead_set = db().keys().queue(&queue("default")).dead();
    let mut c = crate::common::redis_conn(&s);
    // 1500 stale entries, all older than the real one.
    let stale: Vec<(u64, u64)> = (0..1500u64).map(|i| (i, 1_000_000 + i)).collect();
    let _: () = c.zadd_multiple(&dead_set, &stale).unwrap();
    let out = w.ok(&["dead", "retry", "--all", "--queue", "default"]);
    assert_eq!(out.trim(), dead, "the real dead task was not retried");
    let left: u64 = c.zcard(&dead_set).unwrap();
    assert_eq!(left, 0, "stale entries left in the dead set");
    assert_eq!(w.status(&dead).unwrap()["state"], "pending");
}

/// A retried dead task takes its unique key back: an enqueue with the key finds it instead of
/// creating a duplicate. A dead task whose key another unfinished task holds stays dead.
#[test]
fn dead_retry_takes_the_unique_key_back() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("exit3.wat"), "exit3");
    let first = w.enqueue("exit3", "", &["--max-attempts", "1", "--unique-key", "report-42"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(w.status(&first).unwrap()["state"], "dead");
    assert_eq!(w.ok(&["dead", "retry", &first]).trim(), first);
    let again = w.run(&["enqueue", "exit3", "--unique-key", "report-42"]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), first, "a duplicate was created");

    // Now the key is held by another unfinished task: the retry leaves the dead task dead.
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(w.status(&first).unwrap()["state"], "dead");
    let other = w.enqueue("exit3", "", &["--unique-key", "report-42", "--delay", "1h"]);
    assert_ne!(other, first);
    let out = w.run(&["dead", "retry", &first]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unique key"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.status(&first).unwrap()["state"], "dead");
}

/// A tick whose module cannot be looked up (a Redis error, here missing rights) is not treated
/// as "no such module": the tick stays due and fires later, exactly once.
#[test]
fn a_periodic_tick_survives_an_error_while_looking_up_its_module() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    w.ok(&["schedule", "add", "every-second", "echo", "--cron", "* * * * * *", "--input", "tick"]);
    let mut c = crate::common::redis_conn(&s);
    // A user that may touch the queue's keys but not the module store.
    let _: () = redis::cmd("ACL").arg("SETUSER").arg("queue-only").arg("on").arg(">pw").arg("~wasmq:{*").arg("+@all").query(&mut c).unwrap();
    let due_key = db().keys().queue(&queue("default")).schedule_due();
    rt().block_on(async {
        let url = format!("redis://queue-only:pw@127.0.0.1:{}", s.port());
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(url)).unwrap();
        let mut conn = redis.connect().await.unwrap();
        let store = wasmq::store::ModuleStore::new(conn.clone(), db().keys().clone(), 1 << 20);
        let due: f64 = c.zscore(&due_key, "every-second").unwrap();
        let at = due as u64 + 10;
        let r = wasmq::schedule::fire_due(&mut conn, &db(), &store, &queue("default"), at).await;
        assert!(r.is_err(), "the lookup error was swallowed: {r:?}");
        let after: f64 = c.zscore(&due_key, "every-second").unwrap();
        assert_eq!(after, due, "the tick moved on with nothing enqueued");
    });
    let stats: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    assert_eq!(stats[0]["enqueued_total"], 0);
}

/// A queue whose results cannot be written (here: rights on it revoked mid-run) holds back only
/// its own results; the worker's other queue goes on.
#[test]
fn one_unwritable_queue_does_not_hold_back_the_results_of_another() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("sleep.wat"), "sleep");
    let mut c = crate::common::redis_conn(&s);
    let _: () = redis::cmd("ACL").arg("SETUSER").arg("w").arg("on").arg(">pw").arg("~*").arg("+@all").query(&mut c).unwrap();
    let a = w.enqueue("sleep", "", &["--queue", "a", "--timeout", "2s", "--max-attempts", "1"]);
    let b = w.enqueue("sleep", "", &["--queue", "b", "--timeout", "2s", "--max-attempts", "1"]);
    let mut wk = Wasmq::new(&s);
    wk.url = format!("redis://w:pw@127.0.0.1:{}", s.port());
    let worker = wk.spawn_worker(&["--queue", "a", "--queue", "b", "--concurrency", "2"]);
    for id in [&a, &b] {
        eventually(Duration::from_secs(20), || w.status(id).filter(|s| s["state"] == "active")).expect("never claimed");
    }
    // Queue a's keys become unwritable for the worker's user ("a" sorts before "b").
    let _: () = redis::cmd("ACL").arg("SETUSER").arg("w").arg("resetkeys").arg("~wasmq:{b}*").arg("~wasmq:module*").arg("~wasmq:queues").query(&mut c).unwrap();
    let st = eventually(Duration::from_secs(20), || w.status(&b).filter(|s| s["state"] == "dead"))
        .unwrap_or_else(|| panic!("queue b's result was held back\n{}", worker.log()));
    assert_eq!(st["error_kind"], "timeout");
    assert_eq!(w.status(&a).unwrap()["state"], "active");
}

/// An output larger than the Redis server takes as one value fails as `output_limit` (the real
/// kind), instead of being given up and the task looping until its lease expirations kill it.
#[test]
fn an_output_larger_than_redis_accepts_fails_as_output_limit() {
    let s = RedisServer::start_with(ServerOptions::default().arg("proto-max-bulk-len", "2mb")).unwrap();
    let w = Wasmq::new(&s);
    w.push(&fixture("big_output.wat"), "big");
    let task = w.enqueue("big", "", &["--max-attempts", "1"]);
    let _worker = w.spawn_worker(&["--lease", "3s"]);
    let st = eventually(Duration::from_secs(30), || w.status(&task).filter(|s| s["state"] != "active" && s["state"] != "pending")).expect("never finished");
    assert_eq!(st["state"], "dead", "{st}");
    assert_eq!(st["error_kind"], "output_limit", "{st}");
    // And the flag's own bound.
    let out = w.run(&["run", fixture("echo.wat").to_str().unwrap(), "--stdout-limit", "1GiB", "--input", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `module rm` marks the module while it checks for references; an enqueue that meets the mark
/// is refused (or, when it wrote its task first, cancels it), and a refused rm lifts the mark.
#[test]
fn module_rm_and_enqueue_do_not_race() {
    let s = server();
    let w = Wasmq::new(&s);
    let sha = w.push(&fixture("echo.wat"), "echo");
    let mut c = crate::common::redis_conn(&s);
    let info = db().keys().module_info(&sha);
    // As if a `module rm` were between its mark and its delete.
    let _: () = c.hset(&info, "removing", "1").unwrap();
    let out = w.run(&["enqueue", "echo", "--input", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("being removed"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(crate::common::pending_count(&mut c, "default"), 0);
    // A push brings it back; an rm that finds a reference is refused and lifts its mark.
    w.push(&fixture("echo.wat"), "echo");
    let t = w.enqueue("echo", "x", &[]);
    let rm = w.run(&["module", "rm", "echo"]);
    assert_eq!(rm.status.code(), Some(1), "{}", String::from_utf8_lossy(&rm.stderr));
    assert!(!c.hexists::<_, _, bool>(&info, "removing").unwrap());
    assert_eq!(w.status(&t).unwrap()["state"], "pending");
    w.enqueue("echo", "y", &[]);
}

/// A worker holds at most `--prefetch-bytes` of task inputs, whatever `--prefetch` says (always
/// at least one task).
#[test]
fn prefetch_is_bounded_in_bytes() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("sleep.wat"), "sleep");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let line = format!("\"{}\"", "x".repeat(1 << 20));
    for _ in 0..20 {
        writeln!(file, "{line}").unwrap();
    }
    w.ok(&["enqueue", "sleep", "--inputs-file", file.path().to_str().unwrap(), "--timeout", "200ms", "--max-attempts", "1"]);
    let _worker = w.spawn_worker(&["--concurrency", "1", "--prefetch", "1000", "--prefetch-bytes", "3MiB"]);
    let active_key = db().keys().queue(&queue("default")).active();
    let mut c = crate::common::redis_conn(&s);
    let mut most = 0;
    let done = eventually(Duration::from_secs(60), || {
        let n: u64 = c.zcard(&active_key).unwrap();
        most = most.max(n);
        let dead: u64 = c.zcard(db().keys().queue(&queue("default")).dead()).unwrap();
        (dead == 20).then_some(())
    });
    assert!(done.is_some(), "the tasks did not finish");
    assert!((1..=3).contains(&most), "{most} tasks of 1 MiB held under a 3 MiB bound");
}

/// Cancelling a pending task does not scan its priority list: no LREM, the pending count stays
/// exact, and the task is skipped when its turn comes.
#[test]
fn cancelling_a_pending_task_does_not_scan_the_queue() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let ids: Vec<String> = (0..5).map(|i| w.enqueue("echo", &i.to_string(), &[])).collect();
    let mut c = crate::common::redis_conn(&s);
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    assert!(w.ok(&["cancel", &ids[2]]).contains("cancelled"));
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut c).unwrap();
    assert!(!stats.contains("cmdstat_lrem"), "cancel scanned the list: {stats}");
    let st: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    assert_eq!((st[0]["pending"].as_u64(), st[0]["cancelled"].as_u64()), (Some(4), Some(1)), "{st}");
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(w.status(&ids[2]).unwrap()["state"], "cancelled");
    assert!(w.status(&ids[2]).unwrap()["output_text"].is_null());
    for i in [0, 1, 3, 4] {
        assert_eq!(w.status(&ids[i]).unwrap()["state"], "succeeded");
    }
    let st: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    assert_eq!(st[0]["pending"], 0, "{st}");
}

/// With Redis out of memory, an enqueue fails with one short line that says so and what to do,
/// and enqueues nothing; `queue stats` shows memory against maxmemory and warns.
#[test]
fn an_enqueue_into_a_full_redis_says_so_in_one_line() {
    let s = RedisServer::start_with(ServerOptions::default().arg("maxmemory", "2mb").arg("maxmemory-policy", "noeviction")).unwrap();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let big = "x".repeat(100_000);
    let mut last = None;
    for _ in 0..100 {
        let out = w.run(&["enqueue", "echo", "--input", &big]);
        if !out.status.success() {
            last = Some(out);
            break;
        }
    }
    let out = last.expect("Redis never filled up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("out of memory") && stderr.contains("maxmemory"), "{stderr}");
    let before: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    let stats = w.run(&["queue", "stats"]);
    assert!(String::from_utf8_lossy(&stats.stdout).contains("of maxmemory"), "{}", String::from_utf8_lossy(&stats.stdout));
    assert!(String::from_utf8_lossy(&stats.stderr).contains("near its maxmemory"), "{}", String::from_utf8_lossy(&stats.stderr));
    // The refused enqueue left nothing behind.
    assert_eq!(before[0]["pending"].as_u64(), before[0]["enqueued_total"].as_u64());
}

/// `result --wait` marks the task with a flag, not a count: waiters that give up leave nothing
/// that grows.
#[test]
fn waiting_for_a_result_leaves_nothing_growing() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let t = w.enqueue("echo", "x", &[]);
    for _ in 0..3 {
        assert_eq!(w.run(&["result", &t, "--wait", "--timeout", "100ms"]).status.code(), Some(4));
    }
    assert_eq!(task_hash(&s, &t)["waiters"], "1");
    let waiter = std::thread::spawn({
        let (url, t) = (w.url.clone(), t.clone());
        move || {
            let w = Wasmq { url, prefix: "wasmq".into() };
            w.run(&["result", &t, "--wait", "--timeout", "30s"])
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    let out = waiter.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"x");
    assert!(!task_hash(&s, &t).contains_key("waiters"));
}

/// A stall (a lease that expired before the task was seen running) is recorded against the
/// attempt it would have been, never "attempt 0".
#[test]
fn a_stall_names_a_real_attempt() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let t = w.enqueue("echo", "x", &[]);
    rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        let q = queue("default");
        let claim = wasmq::queue::ClaimRequest { n: 1, max_bytes: 0, lease: Duration::from_secs(1), worker: "w", max_input: 0, run_slots: 0 };
        let reap = wasmq::queue::ReapRequest { limit: 10, max_attempts: 3, max_stalls: 1, retention: Default::default() };
        db().claim(&mut conn, &q, claim).await.unwrap();
        let r = db().with_clock_offset(60_000).reap(&mut conn, &q, reap).await.unwrap();
        assert_eq!(r.dead, [id(&t).seq]);
    });
    let st = w.status(&t).unwrap();
    assert_eq!(st["errors"][0]["attempt"], 1, "{st}");
    assert_eq!(st["errors"][0]["kind"], "lease_expired", "{st}");
}

/// Scripts read the Redis server's clock: a lease's deadline is the server's time plus the lease
/// (moved by the test offset here), whatever the caller's clock says.
#[test]
fn leases_run_on_the_servers_clock() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let t = w.enqueue("echo", "x", &[]);
    let mut c = crate::common::redis_conn(&s);
    rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        let claim = wasmq::queue::ClaimRequest { n: 1, max_bytes: 0, lease: Duration::from_secs(30), worker: "w", max_input: 0, run_slots: 0 };
        db().with_clock_offset(3_600_000).claim(&mut conn, &queue("default"), claim).await.unwrap();
    });
    let (secs, _): (u64, u64) = redis::cmd("TIME").query(&mut c).unwrap();
    let deadline: f64 = c.zscore(db().keys().queue(&queue("default")).active(), id(&t).seq).unwrap();
    let expected = (secs * 1000 + 3_600_000 + 30_000) as f64;
    assert!((deadline - expected).abs() < 5_000.0, "deadline {deadline}, expected about {expected}");
}

/// When a task's lease expires while its worker still runs it and the same worker claims it again
/// (a Redis stall, a failover, a clock jump), the two claims are kept apart: the stale run is
/// stopped, and the new claim runs to its result, neither cancelled nor forgotten.
#[test]
fn a_worker_that_claims_a_task_again_keeps_the_claims_apart() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    let nap = dir.path().join("nap.wat");
    // sleep.wat, cut to 3 s: long enough to be running when its lease is taken away.
    std::fs::write(&nap, std::fs::read_to_string(fixture("sleep.wat")).unwrap().replace("10000000000", "3000000000")).unwrap();
    w.push(&nap, "nap");
    let tasks: Vec<String> = (0..2).map(|_| w.enqueue("nap", "", &["--max-attempts", "5"])).collect();
    // A free run slot: the worker claims requeued tasks at once, while its first runs go on.
    let worker = w.spawn_worker(&["--concurrency", "3", "--prefetch", "0", "--lease", "2s", "--reap-interval", "1s"]);
    eventually(Duration::from_secs(20), || tasks.iter().all(|t| task_hash(&s, t).contains_key("running")).then_some(())).expect("never seen running");
    rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        // A reaper whose (server) clock is a minute ahead: both leases have expired.
        let reap = wasmq::queue::ReapRequest { limit: 10, max_attempts: 5, max_stalls: 5, retention: Default::default() };
        let r = db().with_clock_offset(60_000).reap(&mut conn, &queue("default"), reap).await.unwrap();
        assert_eq!(r.requeued.len(), 2, "{r:?}");
    });
    for t in &tasks {
        let st = eventually(Duration::from_secs(30), || w.status(t).filter(|s| s["state"] != "active" && s["state"] != "pending"))
            .unwrap_or_else(|| panic!("{t} never finished\n{}", worker.log()));
        assert_eq!(st["state"], "succeeded", "{t}: {st}\n{}", worker.log());
        // One attempt lost to the expired lease, none to the new claim being forgotten by the
        // stale run (which shows as a stall: its lease was no longer extended).
        assert_eq!((st["attempts"].as_u64(), st["stalls"].as_u64()), (Some(2), Some(0)), "{t}: {st}\n{}", worker.log());
    }
}

/// With Redis at maxmemory while tasks run, a worker keeps the results it cannot write (and stops
/// claiming: claims are refused too), stays up, and writes them and carries on by itself once
/// memory is freed: every task succeeds once, none is lost or run twice.
#[test]
fn a_worker_keeps_its_results_through_a_full_redis_and_resumes() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let mut c = crate::common::redis_conn(&s);
    let input = "y".repeat(100_000);
    let ids: Vec<String> = (0..20).map(|_| w.enqueue("echo", &input, &[])).collect();
    // A cap a little above what Redis holds now: a few 100 KB outputs fill it.
    let info: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let used: u64 = info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(used + 300_000).query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("noeviction").query(&mut c).unwrap();
    let mut worker = w.spawn_worker(&["--concurrency", "2"]);
    let full = eventually(Duration::from_secs(30), || worker.log().contains("out of memory").then_some(()));
    assert!(full.is_some(), "Redis never filled up: {}", worker.log());
    std::thread::sleep(Duration::from_secs(2));
    assert!(worker.is_running(), "the worker stopped: {}", worker.log());
    let done = |c: &mut redis::Connection| {
        ids.iter()
            .filter(|i| {
                matches!(
                    redis::Commands::hget::<_, _, Option<String>>(c, crate::common::task_key("default", id(i).seq), "state").unwrap().as_deref(),
                    Some("succeeded")
                )
            })
            .count()
    };
    let stuck = done(&mut c);
    assert!(stuck < ids.len(), "every task finished although Redis was full");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query(&mut c).unwrap();
    eventually(Duration::from_secs(60), || (done(&mut c) == ids.len()).then_some(()))
        .unwrap_or_else(|| panic!("{} of {} finished after memory was freed: {}", done(&mut c), ids.len(), worker.log()));
    for i in &ids {
        let h = task_hash(&s, i);
        assert_eq!(h["output"].len(), input.len(), "{i}");
        assert_eq!(h["attempts"], "1", "{i} ran more than once");
    }
    assert_eq!(worker.stop(), Some(0));
}

/// A flow whose members all finish before `map` seals it (fast workers, a slow producer) ends
/// when it is sealed: the root's end decides it, instead of the flow staying `running`.
#[test]
fn a_flow_finished_before_it_was_sealed_ends_at_the_seal() {
    let s = server();
    let w = Wasmq::new(&s);
    let sha = w.push(&fixture("echo.wat"), "echo");
    let q = queue("default");
    let (n, root) = rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        let n = db().create_flow(&mut conn, &q, 1, wasmq::queue::ParentFailure::Ignore).await.unwrap();
        let member = |after: Vec<u64>| wasmq::queue::NewTask {
            module: &sha,
            priority: 0,
            due: wasmq::queue::Due { at_ms: 0, delay: Duration::ZERO },
            expires: Default::default(),
            unique_key: None,
            unique_for: None,
            fields: vec![("flow", n.to_string().into_bytes()), ("input", b"\"x\"".to_vec())],
            after,
            on_parent_failure: wasmq::queue::ParentFailure::Ignore,
        };
        let child = db().enqueue(&mut conn, &q, &member(vec![])).await.unwrap().seq;
        let root = db().enqueue(&mut conn, &q, &member(vec![child])).await.unwrap().seq;
        (n, root)
    });
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    let flow = format!("default:{n}");
    assert_eq!(w.status(&format!("default:{root}")).unwrap()["state"], "succeeded");
    let sealed = rt().block_on(async {
        let redis = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap();
        let mut conn = redis.connect().await.unwrap();
        db().seal_flow(&mut conn, &q, n, root).await.unwrap()
    });
    assert_eq!(sealed, "succeeded");
    assert_eq!(w.run(&["result", &flow]).status.code(), Some(0));
}

/// The docs promise that a stack overflow is not retried (it recurs with the same input on the
/// same stack); it used to be retried like a trap until its attempts ran out.
#[test]
fn a_stack_overflow_is_not_retried() {
    let s = crate::common::RedisServer::start().expect("redis-server");
    let w = crate::common::Wasmq::new(&s);
    w.push(&crate::security::adversary(wasmq_testkit::examples::WasmTarget::P1), "adv");
    let id = w.enqueue("adv", "recurse", &["--max-attempts", "3"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--backoff-base", "10ms"]);
    assert_eq!(worker.wait(std::time::Duration::from_secs(60)), Some(0), "{}", worker.log());
    let st = w.status(&id).unwrap();
    assert_eq!((st["state"].as_str(), st["error_kind"].as_str(), st["attempts"].as_u64()), (Some("dead"), Some("stack_overflow"), Some(1)), "{st}");
}
