//! The module store, the priority queue, worker processes and result hashes, against real
//! `redis-server` processes started by each test.

use std::time::{Duration, Instant};

use crate::common::{RedisServer, Wasmq, eventually, server};
use redis::Commands;
use serde_json::{Value, json};
use wasmq_testkit::examples::WasmTarget;

#[test]
fn every_example_task_runs_through_the_queue() {
    let s = server();
    let w = Wasmq::new(&s);
    let inputs = [
        ("wordcount", json!({"text": "a b a", "top": 1}), json!({"total_words": 3})),
        ("normalize", json!({"method": "minmax", "columns": {"x": [1, 3]}}), json!({"method": "minmax"})),
        ("threshold-alert", json!({"readings": [{"sensor": "s", "ts": 1, "value": 9.0}], "rules": [{"sensor": "s", "above": 5.0}]}), json!({"readings": 1})),
    ];
    let mut ids = Vec::new();
    for (target, suffix) in [(WasmTarget::P1, "p1"), (WasmTarget::P2, "p2")] {
        for (task, input, _) in &inputs {
            let name = format!("{task}-{suffix}");
            w.push(&crate::common::example(target, task), &name);
            ids.push((w.enqueue(&name, &input.to_string(), &[]), task.to_string()));
        }
    }
    w.push(&crate::common::wat_example(), "upper");
    let upper = w.enqueue("upper", "shout", &[]);
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--concurrency", "2"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "worker log:\n{}", worker.log());
    for (id, task) in &ids {
        let out = w.run(&["result", id]);
        assert!(out.status.success(), "{id} ({task}): {}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let expect = &inputs.iter().find(|(t, ..)| t == task).unwrap().2;
        for (k, val) in expect.as_object().unwrap() {
            assert_eq!(&v[k], val, "{id} ({task}): {v}");
        }
        let st = w.status(id).unwrap();
        assert_eq!(st["state"], "succeeded");
        assert!(st["duration_us"].as_u64().is_some());
        assert!(st["worker"].as_str().is_some());
        assert!(st["started_ms"].as_u64().unwrap() >= st["created_ms"].as_u64().unwrap());
        assert!(st["finished_ms"].as_u64().unwrap() >= st["started_ms"].as_u64().unwrap());
    }
    assert_eq!(w.run(&["result", &upper]).stdout, b"SHOUT");
}

#[test]
fn higher_priority_runs_first_and_fifo_within_a_priority() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("busy.wat"), "busy");
    let ids: Vec<String> = [0, 5, 9, 5].iter().map(|p| w.enqueue("busy", "", &["--priority", &p.to_string()])).collect();
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--concurrency", "1", "--prefetch", "0"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    let started: Vec<u64> = ids.iter().map(|id| w.status(id).unwrap()["started_ms"].as_u64().unwrap()).collect();
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by_key(|&i| started[i]);
    // Enqueued as priorities 0, 5, 9, 5: run as 9, the first 5, the second 5, 0.
    assert_eq!(order, vec![2, 1, 3, 0], "start times {started:?}");
}

#[test]
fn two_workers_share_a_queue_without_running_a_task_twice() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let n = 1200;
    let lines: String = (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines).unwrap();
    let out = w.ok(&["enqueue", "echo", "--inputs-file", file.path().to_str().unwrap()]);
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), n);
    let mut a = w.spawn_worker(&["--exit-when-idle", "--concurrency", "2"]);
    let mut b = w.spawn_worker(&["--exit-when-idle", "--concurrency", "2"]);
    assert_eq!(a.wait(Duration::from_secs(120)), Some(0), "{}", a.log());
    assert_eq!(b.wait(Duration::from_secs(120)), Some(0), "{}", b.log());
    let mut c = crate::common::redis_conn(&s);
    let mut workers = std::collections::HashSet::new();
    for (i, id) in ids.iter().enumerate() {
        let seq = id.rsplit(':').next().unwrap();
        let h: std::collections::HashMap<String, Vec<u8>> = c.hgetall(crate::common::task_key("default", seq)).unwrap();
        let text = |k: &str| String::from_utf8_lossy(h.get(k).map(|v| v.as_slice()).unwrap_or_default()).into_owned();
        assert_eq!(text("state"), "succeeded", "{id}");
        assert_eq!(text("output"), format!("{{\"n\":{i}}}"), "{id}: wrong output");
        // Claimed exactly once: one lease token, one attempt.
        assert_eq!(text("lease"), "1", "{id} was claimed more than once");
        assert_eq!(text("attempts"), "1", "{id}");
        workers.insert(text("worker"));
    }
    assert_eq!(workers.len(), 2, "both workers should have taken tasks: {workers:?}");
    let succeeded: u64 = c.zcard(crate::common::qk("default").succeeded()).unwrap();
    assert_eq!(succeeded, n as u64);
    let active: u64 = c.zcard(crate::common::qk("default").active()).unwrap();
    assert_eq!(active, 0);
}

#[test]
fn unknown_module_and_invalid_wasm_are_refused_and_store_nothing() {
    let s = server();
    let w = Wasmq::new(&s);
    let out = w.run(&["enqueue", "nosuch", "--input", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown module"), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = tempfile::Builder::new().suffix(".wasm").tempfile().unwrap();
    std::fs::write(bad.path(), b"\0asm\x01\0\0\0\x01\xff garbage").unwrap();
    let out = w.run(&["module", "push", bad.path().to_str().unwrap(), "--name", "bad"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid module") && err.contains("not pushed"), "{err}");

    let mut c = crate::common::redis_conn(&s);
    let keys: Vec<String> = c.keys("*").unwrap();
    assert!(keys.is_empty(), "something was stored: {keys:?}");
}

#[test]
fn pushing_the_same_bytes_twice_stores_nothing_new() {
    let s = server();
    let w = Wasmq::new(&s);
    let first = w.ok(&["module", "push", crate::common::fixture("echo.wat").to_str().unwrap(), "--name", "a"]);
    let second = w.ok(&["module", "push", crate::common::fixture("echo.wat").to_str().unwrap(), "--name", "b"]);
    assert!(first.contains("stored") && !first.contains("already"));
    assert!(second.contains("already stored"));
    let list = w.ok(&["module", "list", "--json"]);
    let v: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["names"], json!(["a", "b"]));
    assert_eq!(v[0]["kind"], "module");
}

#[test]
fn module_rm_refuses_while_tasks_reference_it() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let id = w.enqueue("echo", "x", &[]);
    let out = w.run(&["module", "rm", "echo"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("still referenced"));
    // Forced: the task then fails as unknown_module, and the worker carries on.
    w.ok(&["module", "rm", "echo", "--force"]);
    w.push(&crate::common::fixture("counter.wat"), "counter");
    let good = w.enqueue("counter", "", &[]);
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--max-attempts", "1"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    let st = w.status(&id).unwrap();
    assert_eq!(st["state"], "dead");
    assert_eq!(st["error_kind"], "unknown_module");
    assert_eq!(w.status(&good).unwrap()["state"], "succeeded");
    // Once no task references it, rm works without --force.
    w.ok(&["module", "rm", "counter"]);
}

#[test]
fn tampered_module_bytes_fail_with_an_integrity_error_and_never_run() {
    let s = server();
    let w = Wasmq::new(&s);
    let sha = w.push(&crate::common::fixture("echo.wat"), "echo");
    w.push(&crate::common::fixture("counter.wat"), "counter");
    let tampered = w.enqueue("echo", "secret", &[]);
    let mut c = crate::common::redis_conn(&s);
    // Another valid module under the echo module's hash: it would run, and print "1".
    let other = wat::parse_file(crate::common::fixture("counter.wat")).unwrap();
    let _: () = c.set(format!("wasmq:module:{sha}"), other).unwrap();
    let mut worker = w.spawn_worker(&[]);
    // It fails the tampered task, then runs a good one: the same process, still running.
    let st = eventually(Duration::from_secs(30), || w.status(&tampered).filter(|s| s["state"] == "dead")).expect("task not dead");
    assert_eq!(st["error_kind"], "integrity", "{st}");
    assert!(st["output_bytes"].is_null() || st["output_bytes"] == 0, "the tampered module ran: {st}");
    assert_eq!(st["attempts"], 1, "an integrity error is not retried");
    let good = w.enqueue("counter", "", &[]);
    let st = eventually(Duration::from_secs(30), || w.status(&good).filter(|s| s["state"] == "succeeded"));
    assert!(st.is_some(), "the good task did not run: {}", worker.log());
    assert!(worker.is_running(), "the worker died: {}", worker.log());
    assert_eq!(worker.stop(), Some(0));
}

/// A queue's retention bounds its finished tasks by count as results are written, and by age
/// through every worker's reaper; a task hash and its index entry go together; unfinished tasks
/// are never touched. The worker's deprecated `--retention` gives way to the queue's settings.
#[test]
fn finished_tasks_are_kept_by_the_queues_retention() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let out = w.ok(&["queue", "retention", "default", "--succeeded-count", "5"]);
    assert!(out.contains("queue settings") && out.contains("succeeded"), "{out}");
    let waiting = w.enqueue("echo", "later", &["--delay", "1h"]);
    let ids: Vec<String> = (0..12).map(|i| w.enqueue("echo", &i.to_string(), &[])).collect();
    let mut worker = w.spawn_worker(&["--retention", "30days", "--reap-interval", "1s"]);
    let db = wasmq::queue::Db::new("wasmq");
    let mut c = crate::common::redis_conn(&s);
    let task_keys = |c: &mut redis::Connection| -> usize {
        ids.iter().filter(|id| c.exists::<_, bool>(db.keys().task(&wasmq::queue::TaskId::parse(id).unwrap())).unwrap()).count()
    };
    let total = |w: &Wasmq| serde_json::from_str::<serde_json::Value>(&w.ok(&["queue", "stats", "--json"])).unwrap()[0]["succeeded_total"].as_u64();
    eventually(Duration::from_secs(30), || (total(&w) >= Some(12)).then_some(())).expect("the tasks never ran");
    // Count: 5 are kept, the newest (by finish time in ms; ties in any order); every index entry
    // has its hash and no more.
    let kept: Vec<u64> = c.zrange(db.keys().queue(&wasmq::queue::QueueName::new("default").unwrap()).succeeded(), 0, -1).unwrap();
    assert_eq!(kept.len(), 5, "{kept:?}");
    assert_eq!(task_keys(&mut c), 5);
    // Age (set only now, so that it cannot take any of the five before they are counted): the
    // reaper deletes the rest, though nothing finishes any more.
    w.ok(&["queue", "retention", "default", "--succeeded-age", "1s"]);
    eventually(Duration::from_secs(20), || (task_keys(&mut c) == 0).then_some(())).expect("results outlived their age");
    assert_eq!(w.status(&waiting).expect("an unfinished task was deleted")["state"], "delayed");
    assert_eq!(worker.stop(), Some(0));
    let json: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "retention", "default", "--json"])).unwrap();
    assert_eq!((json["succeeded_count"].as_u64(), json["succeeded_age"].as_u64()), (Some(5), Some(1000)), "{json}");
}

#[test]
fn result_exit_codes_and_wait() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    w.push(&crate::common::fixture("exit3.wat"), "exit3");
    assert_eq!(w.run(&["result", "default:999"]).status.code(), Some(3), "unknown");
    assert_eq!(w.run(&["result", "not-an-id"]).status.code(), Some(2), "malformed id");
    let id = w.enqueue("echo", "waited for", &[]);
    assert_eq!(w.run(&["result", &id]).status.code(), Some(4), "not finished");
    let out = w.run(&["result", &id, "--wait", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(4), "timed out waiting");
    let failing = w.enqueue("exit3", "", &["--max-attempts", "1"]);
    // Waiters block on Redis; a worker started later wakes them.
    let waiter = std::thread::spawn({
        let url = w.url.clone();
        let id = id.clone();
        move || {
            let started = Instant::now();
            let out = Wasmq { url, prefix: "wasmq".into() }.run(&["result", &id, "--wait", "--timeout", "30s"]);
            (out, started.elapsed())
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    let (out, waited) = waiter.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"waited for");
    assert!(waited < Duration::from_secs(20));
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0));
    let out = w.run(&["result", &failing]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit_code"));
}

/// Commands that clients sent to the server during `window`, seen through MONITOR (commands run
/// inside Lua scripts are not round trips and are not counted).
fn client_commands(server: &RedisServer, window: Duration) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(server.addr()).unwrap();
    s.write_all(format!("AUTH {}\r\nMONITOR\r\n", server.password()).as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut reader = BufReader::new(s);
    let mut lines = Vec::new();
    let start = Instant::now();
    while start.elapsed() < window {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.starts_with('+') && line != "+OK\r\n" && !line.contains("lua]") => lines.push(line),
            _ => {}
        }
    }
    lines
}

#[test]
fn an_idle_worker_does_not_poll_and_stops_on_sigterm() {
    let s = server();
    let w = Wasmq::new(&s);
    let mut worker = w.spawn_worker(&["--queue", "a", "--queue", "b"]);
    std::thread::sleep(Duration::from_secs(2));
    let window = Duration::from_secs(4);
    let seen = client_commands(&s, window);
    let per_second = seen.len() as f64 / window.as_secs_f64();
    assert!(per_second <= 8.0, "an idle worker with two queues sent {per_second} commands/s: {seen:#?}");
    assert!(!seen.is_empty(), "MONITOR saw nothing: the measurement is broken");
    worker.signal(crate::common::Signal::TERM);
    assert_eq!(worker.wait(Duration::from_secs(10)), Some(0), "{}", worker.log());
}

#[test]
fn sigterm_lets_the_running_task_finish() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("busy.wat"), "busy");
    let ids: Vec<String> = (0..3).map(|_| w.enqueue("busy", "", &[])).collect();
    let mut worker = w.spawn_worker(&["--concurrency", "1", "--prefetch", "0"]);
    eventually(Duration::from_secs(30), || w.status(&ids[0]).filter(|s| s["state"] != "pending")).expect("never claimed");
    worker.signal(crate::common::Signal::TERM);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0), "{}", worker.log());
    let states: Vec<String> = ids.iter().map(|id| w.status(id).unwrap()["state"].as_str().unwrap().to_string()).collect();
    assert_eq!(states[0], "succeeded", "the running task was not finished: {states:?}");
    assert!(states.iter().all(|s| s == "succeeded" || s == "pending"), "{states:?}");
    let mut c = crate::common::redis_conn(&s);
    let active: u64 = c.zcard(crate::common::qk("default").active()).unwrap();
    assert_eq!(active, 0, "a lease was left behind");
}

#[test]
fn a_bad_inputs_file_enqueues_nothing() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "{\"ok\":1}\n{broken\n").unwrap();
    let out = w.run(&["enqueue", "echo", "--inputs-file", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let mut c = crate::common::redis_conn(&s);
    let pending: u64 = crate::common::pending_count(&mut c, "default");
    assert_eq!(pending, 0);
}

#[test]
fn limits_given_at_enqueue_reach_the_worker_and_size_caps_refuse_early() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("loop.wat"), "loop");
    w.push(&crate::common::fixture("grow.wat"), "grow");
    w.push(&crate::common::fixture("clock_random.wat"), "clock");
    let once = ["--max-attempts", "1"];
    let fuel = w.enqueue("loop", "", &[&once[..], &["--fuel", "100000"]].concat());
    let timeout = w.enqueue("loop", "", &[&once[..], &["--timeout", "300ms"]].concat());
    let memory = w.enqueue("grow", "", &[&once[..], &["--memory", "4MiB"]].concat());
    let det: Vec<String> = (0..2).map(|_| w.enqueue("clock", "", &["--deterministic"])).collect();
    let real = w.enqueue("clock", "", &[]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    for (id, kind) in [(&fuel, "fuel_exhausted"), (&timeout, "timeout"), (&memory, "memory_limit")] {
        let st = w.status(id).unwrap();
        assert_eq!((st["state"].as_str(), st["error_kind"].as_str()), (Some("dead"), Some(kind)), "{id}: {st}");
    }
    let st = w.status(&fuel).unwrap();
    assert!(st["fuel_used"].as_u64().is_some_and(|f| f >= 100_000), "fuel used is reported: {st}");
    // Deterministic tasks see the same clock and randomness; a normal one does not.
    let out = |id: &str| w.run(&["result", id]).stdout;
    assert_eq!(out(&det[0]), out(&det[1]), "two deterministic runs differ");
    assert_eq!(out(&det[0]).len(), 16);
    assert_ne!(out(&det[0]), out(&real), "a normal task saw the fixed clock");

    // Size caps refuse before anything is stored or queued.
    let before: u64 = crate::common::redis_conn(&s).get(crate::common::qk("default").seq()).unwrap();
    let out = w.run(&["enqueue", "loop", "--input", "0123456789", "--max-input-size", "4B"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit"), "{}", String::from_utf8_lossy(&out.stderr));
    let after: u64 = crate::common::redis_conn(&s).get(crate::common::qk("default").seq()).unwrap();
    assert_eq!(before, after, "an oversized input was queued");
    let out = w.run(&["module", "push", crate::common::fixture("echo.wat").to_str().unwrap(), "--max-module-size", "16B"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!w.ok(&["module", "list"]).contains("echo"), "an oversized module was stored");
}

#[test]
fn dead_list_limit_is_at_least_one() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("exit3.wat"), "exit3");
    for _ in 0..2 {
        w.enqueue("exit3", "", &["--max-attempts", "1"]);
    }
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    assert_eq!(w.ok(&["dead", "list"]).lines().count(), 3, "a header and two tasks");
    assert_eq!(w.ok(&["dead", "list", "--limit", "1"]).lines().count(), 2, "a header and one task");
    let out = w.run(&["dead", "list", "--limit", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "--limit 0 was not refused: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("--limit must be at least 1"), "{err}");
    assert!(out.stdout.is_empty());
}

/// The registry of live workers: both workers listed with their queues and slots while idle;
/// one stopped with SIGTERM leaves at once, one killed with SIGKILL within the entry's expiry.
#[test]
fn workers_list_live_workers_and_forget_stopped_and_killed_ones() {
    let s = server();
    let w = Wasmq::new(&s);
    let mut a = w.spawn_worker(&["--id", "worker-a", "--queue", "a", "--queue", "b", "--concurrency", "3"]);
    let mut b = w.spawn_worker(&["--id", "worker-b"]);
    let listed = |w: &Wasmq| -> Vec<serde_json::Value> { serde_json::from_str::<Vec<serde_json::Value>>(&w.ok(&["workers", "--json"])).unwrap() };
    let both = eventually(Duration::from_secs(10), || Some(listed(&w)).filter(|l| l.len() == 2)).expect("both workers listed");
    assert_eq!(
        (both[0]["id"].as_str(), both[0]["queues"].clone(), both[0]["concurrency"].as_u64()),
        (Some("worker-a"), serde_json::json!(["a", "b"]), Some(3))
    );
    assert_eq!((both[1]["id"].as_str(), both[1]["queues"].clone(), both[1]["busy"].as_u64()), (Some("worker-b"), serde_json::json!(["default"]), Some(0)));
    assert_eq!(both[0]["pid"].as_u64(), Some(a.pid() as u64));
    let seen = both[1]["seen_ms"].as_u64().unwrap();
    // Idle, it still beats: the entry is refreshed.
    eventually(Duration::from_secs(5), || listed(&w).iter().find(|x| x["id"] == "worker-b").filter(|x| x["seen_ms"].as_u64().unwrap() > seen).map(drop))
        .expect("an idle worker's entry was not refreshed");
    let table = w.ok(&["workers"]);
    assert!(table.lines().any(|l| l.starts_with("worker-a ") && l.contains(" 0/3 ")), "{table}");
    a.signal(crate::common::Signal::TERM);
    assert_eq!(a.wait(Duration::from_secs(10)), Some(0));
    let after_term = listed(&w);
    assert_eq!(after_term.iter().map(|x| x["id"].as_str().unwrap()).collect::<Vec<_>>(), ["worker-b"], "a stopped worker is removed at once");
    b.signal(crate::common::Signal::KILL);
    let _ = b.wait(Duration::from_secs(5));
    // Its entry expires 5 s after its last beat.
    eventually(Duration::from_secs(10), || listed(&w).is_empty().then_some(())).expect("a killed worker stayed listed");
    assert_eq!(w.run(&["workers"]).status.code(), Some(0));
}

/// `queue drain`: waiting tasks of the chosen states are finished as cancelled (`drained`), in
/// script calls of a thousand, with their blocked dependents; other states and running tasks stay.
#[test]
fn drain_removes_waiting_tasks_in_bounded_calls() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for i in 0..2500 {
        use std::io::Write;
        writeln!(file, "{i}").unwrap();
    }
    w.ok(&["enqueue", "echo", "--inputs-file", file.path().to_str().unwrap(), "--priority", "3"]);
    let delayed: Vec<String> = (0..3).map(|_| w.enqueue("echo", "later", &["--delay", "1h"])).collect();
    let blocked = w.ok(&["enqueue", "echo", "--after", &delayed[0]]).trim().to_string();
    w.ok(&["cancel", &w.enqueue("echo", "gone", &[])]);
    // Only the delayed ones: their dependent is cancelled with its parent.
    assert_eq!(w.ok(&["queue", "drain", "default", "--state", "delayed"]).trim(), "default: drained 3 task(s)");
    let st = w.status(&blocked).unwrap();
    assert_eq!((st["state"].as_str(), st["cancel_reason"].as_str()), (Some("cancelled"), Some("parent_cancelled")), "{st}");
    assert_eq!(w.status(&delayed[1]).unwrap()["cancel_reason"], "drained");
    let stats = |w: &Wasmq| -> Value { serde_json::from_str::<Value>(&w.ok(&["queue", "stats", "--queue", "default", "--json"])).unwrap()[0].clone() };
    assert_eq!((stats(&w)["pending"].as_u64(), stats(&w)["cancelled"].as_u64()), (Some(2500), Some(5)));
    // The rest, in three calls of at most a thousand.
    assert_eq!(w.ok(&["queue", "drain", "default"]).trim(), "default: drained 2500 task(s)");
    let st = stats(&w);
    assert_eq!(
        (st["pending"].as_u64(), st["delayed"].as_u64(), st["blocked"].as_u64(), st["cancelled"].as_u64()),
        (Some(0), Some(0), Some(0), Some(2505)),
        "{st}"
    );
    assert_eq!(w.ok(&["queue", "drain", "default"]).trim(), "default: drained 0 task(s)");
    assert_eq!(w.run(&["queue", "drain", "default", "--state", "active"]).status.code(), Some(2));
    // Nothing drained ever runs.
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(stats(&w)["succeeded"].as_u64(), Some(0));
}
