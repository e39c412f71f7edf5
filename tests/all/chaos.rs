//! Chaos: workers killed with SIGKILL mid-run, Redis crashed and restarted, Redis stopped for a
//! while. Every run is bounded, on loopback, with real processes. The figures are printed to
//! stderr (`cargo test --test chaos -- --nocapture` shows them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{RedisServer, Wasmq, eventually};
use redis::Commands;
use wasmq_testkit::redis_server::ServerOptions;

fn counts(s: &RedisServer) -> (u64, u64, u64, u64) {
    let mut c = crate::common::redis_conn(s);
    let z = |c: &mut redis::Connection, k: &str| -> u64 { c.zcard(format!("wasmq:{{default}}:{k}")).unwrap_or(0) };
    (crate::common::pending_count(&mut c, "default"), z(&mut c, "active"), z(&mut c, "succeeded"), z(&mut c, "delayed"))
}

fn enqueue_file(w: &Wasmq, module: &str, n: usize) -> Vec<String> {
    let lines: String = (0..n).map(|i| format!("{{\"n\":{i}}}\n")).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), lines).unwrap();
    w.ok(&["enqueue", module, "--inputs-file", file.path().to_str().unwrap()]).lines().map(str::to_string).collect()
}

/// Every task of `ids` succeeded exactly once, and no other task exists; returns (claims,
/// attempts) summed over them.
fn check_exactly_one_result(s: &RedisServer, ids: &[String]) -> (u64, u64) {
    check_results(s, ids, 0)
}

/// Like [`check_exactly_one_result`], allowing up to `unacknowledged` more tasks: an enqueue whose
/// reply was lost in a crash may or may not have been applied.
fn check_results(s: &RedisServer, ids: &[String], unacknowledged: u64) -> (u64, u64) {
    let mut c = crate::common::redis_conn(s);
    let (mut claims, mut attempts) = (0, 0);
    for id in ids {
        let seq = id.rsplit(':').next().unwrap();
        let h: HashMap<String, String> = c.hgetall(format!("wasmq:{{default}}:task:{seq}")).unwrap();
        assert_eq!(h.get("state").map(String::as_str), Some("succeeded"), "{id}: {h:?}");
        claims += h["lease"].parse::<u64>().unwrap();
        attempts += h["attempts"].parse::<u64>().unwrap();
    }
    // The succeeded counter is incremented by the one script call that writes a result: equal to
    // the number of tasks means no result was written twice.
    let succeeded: u64 = c.hget("wasmq:{default}:stats", "succeeded").unwrap();
    let enqueued: u64 = c.hget("wasmq:{default}:stats", "enqueued").unwrap();
    let n = ids.len() as u64;
    assert!((n..=n + unacknowledged).contains(&enqueued), "{enqueued} tasks for {n} acknowledged enqueues");
    assert_eq!(succeeded, enqueued, "results written: one per task");
    let (pending, active, done, delayed) = counts(s);
    assert_eq!((pending, active, delayed), (0, 0, 0), "tasks left behind");
    assert_eq!(done, enqueued);
    (claims, attempts)
}

#[test]
fn workers_killed_with_sigkill_lose_no_task() {
    let s = RedisServer::start().unwrap();
    let w = Wasmq::new(&s);
    // busy.wat made about 7x longer (~10 ms a task): 2000 tasks keep 3 workers busy for longer
    // than the five kills take, so every kill hits a worker with work in hand.
    let wat = std::fs::read_to_string(crate::common::fixture("busy.wat")).unwrap().replace("3000000", "20000000");
    let file = tempfile::Builder::new().suffix(".wat").tempfile().unwrap();
    std::fs::write(file.path(), wat).unwrap();
    w.push(file.path(), "busy");
    let n = 2000;
    let ids = enqueue_file(&w, "busy", n);
    let args = ["--lease", "2s", "--reap-interval", "1s", "--concurrency", "1", "--prefetch", "1", "--max-attempts", "10"];
    let mut workers: Vec<_> = (0..3).map(|_| w.spawn_worker(&args)).collect();
    let started = Instant::now();
    let mut kills = 0;
    while kills < 5 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(700 + fastrand::u64(0..600)));
        let (pending, active, ..) = counts(&s);
        assert!(pending + active > 0, "kill {} came after the work was done: the test proves nothing", kills + 1);
        let victim = fastrand::usize(0..workers.len());
        workers[victim].signal(crate::common::Signal::KILL);
        workers[victim].wait(Duration::from_secs(5));
        workers[victim] = w.spawn_worker(&args);
        kills += 1;
    }
    let done = eventually(Duration::from_secs(180), || (counts(&s).2 == n as u64).then_some(()));
    assert!(done.is_some(), "not all tasks finished: {:?}\n{}", counts(&s), workers[0].log());
    let elapsed = started.elapsed();
    for wk in &mut workers {
        assert!(wk.is_running(), "a worker died by itself: {}", wk.log());
        wk.signal(crate::common::Signal::TERM);
        assert_eq!(wk.wait(Duration::from_secs(20)), Some(0));
    }
    let (claims, attempts) = check_exactly_one_result(&s, &ids);
    eprintln!(
        "chaos (a): {n} tasks, 3 workers, {kills} SIGKILLs: all succeeded with one result each in {:.1}s; \
         {claims} claims, {attempts} attempts ({} claims of tasks a killed worker held)",
        elapsed.as_secs_f64(),
        claims - n as u64
    );
    assert!(kills == 5);
    assert!(claims > n as u64, "no task was claimed again after a kill");
}

/// Enqueues through the library until `stop`, retrying through errors; returns acknowledged ids.
fn producer(url: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>, errors: Arc<Mutex<u64>>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let options = wasmq::conn::RedisOptions { response_timeout: Duration::from_secs(2), ..wasmq::conn::RedisOptions::new(url) };
        let client = wasmq::client::Client::connect(options, "wasmq").await.unwrap();
        let opts = wasmq::client::EnqueueOptions::default();
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            match client.enqueue("echo", format!("{{\"i\":{i}}}").as_bytes(), &opts).await {
                Ok(e) => {
                    acked.lock().unwrap().push(e.id.to_string());
                    i += 1;
                }
                Err(_) => {
                    *errors.lock().unwrap() += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if i.is_multiple_of(50) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
}

#[test]
fn an_aof_always_redis_crash_loses_no_acknowledged_enqueue() {
    let mut s = RedisServer::start_with(ServerOptions::default().arg("appendonly", "yes").arg("appendfsync", "always")).unwrap();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let mut workers: Vec<_> = (0..2).map(|_| w.spawn_worker(&["--lease", "3s", "--reap-interval", "1s"])).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0));
    let p = std::thread::spawn({
        let (url, stop, acked, errors) = (s.url(), stop.clone(), acked.clone(), errors.clone());
        move || producer(url, stop, acked, errors)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let before = acked.lock().unwrap().len();
    let crash = Instant::now();
    s.crash_and_restart().expect("restart");
    let restarted_in = crash.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    p.join().unwrap();
    let ids = acked.lock().unwrap().clone();
    assert!(ids.len() > before, "nothing was enqueued after the restart");
    let n = ids.len() as u64;
    let unacknowledged = *errors.lock().unwrap();
    // Done when every acknowledged task has succeeded (an unacknowledged enqueue may exist too).
    let mut c = crate::common::redis_conn(&s);
    let finished = |c: &mut redis::Connection| {
        ids.iter().all(|id| {
            let state: Option<String> = c.hget(format!("wasmq:{{default}}:task:{}", id.rsplit(':').next().unwrap()), "state").unwrap();
            state.as_deref() == Some("succeeded")
        })
    };
    let idle = |s: &RedisServer| matches!(counts(s), (0, 0, _, 0));
    let done = eventually(Duration::from_secs(120), || (idle(&s) && finished(&mut c)).then_some(()));
    assert!(done.is_some(), "acknowledged tasks missing: {:?} of {n}\n{}", counts(&s), workers[0].log());
    for wk in &mut workers {
        assert!(wk.is_running(), "{}", wk.log());
        wk.signal(crate::common::Signal::TERM);
        assert_eq!(wk.wait(Duration::from_secs(20)), Some(0));
    }
    let (claims, _) = check_results(&s, &ids, unacknowledged);
    eprintln!(
        "chaos (b): redis-server (appendfsync always) killed with SIGKILL and restarted in {:.2}s after {before} enqueues; \
         {n} acknowledged enqueues in all, every one finished once ({claims} claims); {} enqueue errors during the outage",
        restarted_in.as_secs_f64(),
        errors.lock().unwrap()
    );
}

#[test]
fn workers_recover_by_themselves_after_redis_is_down_for_five_seconds() {
    let mut s = RedisServer::start_with(ServerOptions::default().arg("appendonly", "yes").arg("appendfsync", "everysec")).unwrap();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("busy.wat"), "busy");
    let n = 600;
    let ids = enqueue_file(&w, "busy", n);
    let mut workers: Vec<_> = (0..2).map(|_| w.spawn_worker(&["--concurrency", "1", "--lease", "10s"])).collect();
    eventually(Duration::from_secs(30), || (counts(&s).2 >= 50).then_some(())).expect("no progress before the outage");
    // A polite stop: the AOF is flushed, so the outage itself loses nothing.
    s.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    s.start_again().expect("start again");
    let back = Instant::now();
    let outage = back - down;
    let at_restart = counts(&s).2;
    let first_progress = eventually(Duration::from_secs(60), || (counts(&s).2 > at_restart).then(|| back.elapsed()))
        .unwrap_or_else(|| panic!("no progress after the restart\n{}", workers[0].log()));
    let done = eventually(Duration::from_secs(120), || (counts(&s).2 == n as u64).then_some(()));
    assert!(done.is_some(), "not all tasks finished: {:?}\n{}", counts(&s), workers[0].log());
    for wk in &mut workers {
        assert!(wk.is_running(), "a worker exited: {}", wk.log());
        wk.signal(crate::common::Signal::TERM);
        assert_eq!(wk.wait(Duration::from_secs(20)), Some(0));
    }
    let (claims, _) = check_exactly_one_result(&s, &ids);
    eprintln!(
        "chaos (c): Redis down {:.1}s mid-run; workers resumed {:.2}s after it came back; {n} tasks, one result each, {claims} claims",
        outage.as_secs_f64(),
        first_progress.as_secs_f64()
    );
}
