//! `wasmq run` end to end: every example task, built for wasm32-wasip1 (core modules) and
//! wasm32-wasip2 (components), plus the hand-written WAT task, through the real binary.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use wasmq_testkit::examples::WasmTarget;

fn run(file: &std::path::Path, input: &str, extra: &[&str]) -> std::process::Output {
    let mut child = Command::new(crate::common::bin())
        .arg("run")
        .arg(file)
        .args(extra)
        .env("WASMQ_CACHE_DIR", crate::common::cache_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `wasmq run` with this test process's private artifact cache.
fn wasmq_run() -> Command {
    let mut c = Command::new(crate::common::bin());
    c.arg("run").env("WASMQ_CACHE_DIR", crate::common::cache_dir());
    c
}

fn run_json(target: WasmTarget, task: &str, input: Value) -> Value {
    let out = run(&crate::common::example(target, task), &input.to_string(), &[]);
    assert!(out.status.success(), "{task} ({target:?}) failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{task}: output is not JSON: {e}"))
}

const TARGETS: [WasmTarget; 2] = [WasmTarget::P1, WasmTarget::P2];

#[test]
fn wordcount_counts_words() {
    for t in TARGETS {
        let out = run_json(t, "wordcount", json!({"text": "The cat and the hat. THE END!", "top": 2}));
        assert_eq!(out["total_words"], 7, "{t:?}: {out}");
        assert_eq!(out["distinct_words"], 5, "{t:?}: {out}");
        assert_eq!(out["top"], json!([{"word": "the", "count": 3}, {"word": "and", "count": 1}]), "{t:?}");
    }
}

#[test]
fn normalize_scales_columns() {
    for t in TARGETS {
        let out = run_json(t, "normalize", json!({"method": "minmax", "columns": {"x": [0, 5, 10], "y": [2, 2, 2]}}));
        assert_eq!(out["columns"]["x"], json!([0.0, 0.5, 1.0]), "{t:?}: {out}");
        assert_eq!(out["columns"]["y"], json!([0.0, 0.0, 0.0]), "{t:?}: constant column");
        let z = run_json(t, "normalize", json!({"columns": {"a": [1, 3]}}));
        assert_eq!(z["columns"]["a"], json!([-1.0, 1.0]), "{t:?}: z-score by default: {z}");
    }
}

#[test]
fn threshold_alert_fires_after_consecutive_breaches() {
    for t in TARGETS {
        let input = json!({
            "readings": [
                {"sensor": "t1", "ts": 1, "value": 81.0}, {"sensor": "t1", "ts": 2, "value": 82.0},
                {"sensor": "t1", "ts": 3, "value": 79.0}, {"sensor": "t1", "ts": 4, "value": 85.0},
                {"sensor": "t2", "ts": 1, "value": 50.0}
            ],
            "rules": [{"sensor": "t1", "above": 80.0, "for": 2, "severity": "critical"}]
        });
        let out = run_json(t, "threshold-alert", input);
        let alerts = out["alerts"].as_array().unwrap_or_else(|| panic!("{t:?}: {out}"));
        assert_eq!(alerts.len(), 1, "{t:?}: {out}");
        assert_eq!(alerts[0]["ts"], 2);
        assert_eq!(alerts[0]["severity"], "critical");
        assert_eq!(out["sensors"], 2);
    }
}

#[test]
fn a_task_error_exits_non_zero_with_its_message() {
    for t in TARGETS {
        // A rule without a threshold is the task's own error (exit status 1, message on stderr).
        let out = run(&crate::common::example(t, "threshold-alert"), &json!({"readings": [], "rules": [{"sensor": "x"}]}).to_string(), &[]);
        assert_eq!(out.status.code(), Some(5), "{t:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("exit_code: the task exited with status 1"), "{t:?}: {err}");
        assert!(err.contains("rule 0 has neither"), "{t:?}: the task's own message is missing: {err}");
        // Input that does not decode names the expected type and is a permanent failure: exit
        // status 2 from a core module, the host API's `fail` from a component (whose exit
        // carries no number).
        let out = run(&crate::common::example(t, "wordcount"), "not json", &[]);
        assert_eq!(out.status.code(), Some(5));
        let err = String::from_utf8_lossy(&out.stderr);
        let how = if t == WasmTarget::P1 { "permanent: the task exited with status 2" } else { "permanent: the task failed permanently" };
        assert!(err.contains(how), "{t:?}: {err}");
        assert!(err.contains("expected JSON for wordcount::Input"), "{t:?}: the decode error does not name the type: {err}");
    }
}

#[test]
fn the_hand_written_wat_task_runs() {
    let out = run(&crate::common::wat_example(), "hello, World!", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"HELLO, WORLD!");
}

#[test]
fn input_can_come_from_a_flag_or_a_file() {
    let wat = crate::common::wat_example();
    let out =
        Command::new(crate::common::bin()).arg("run").arg(&wat).args(["--input", "abc"]).env("WASMQ_CACHE_DIR", crate::common::cache_dir()).output().unwrap();
    assert_eq!(out.stdout, b"ABC");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "from file").unwrap();
    let out = Command::new(crate::common::bin())
        .arg("run")
        .arg(&wat)
        .arg("--input-file")
        .arg(file.path())
        .env("WASMQ_CACHE_DIR", crate::common::cache_dir())
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"FROM FILE");
}

#[test]
fn bad_files_give_one_line_errors() {
    let garbage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(garbage.path(), b"\x00\x01\x02 not wasm").unwrap();
    for (file, expect) in [(garbage.path().to_path_buf(), "not a wasm binary"), (std::path::PathBuf::from("/nonexistent/task.wasm"), "cannot read")] {
        let out = wasmq_run().arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    }
}

#[test]
fn limits_are_flags() {
    let fails_with = |fixture: &str, args: &[&str], input: &str, kind: &str| {
        let out = run(&crate::common::fixture(fixture), input, args);
        assert_eq!(out.status.code(), Some(5), "{fixture} {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("task failed: {kind}")), "{fixture} {args:?}: expected {kind}: {err}");
        out
    };
    fails_with("loop.wat", &["--timeout", "200ms"], "", "timeout");
    fails_with("grow.wat", &["--memory", "4MiB"], "", "memory_limit");
    fails_with("loop.wat", &["--fuel", "100000"], "", "fuel_exhausted");
    fails_with("recurse.wat", &["--stack-size", "64KiB"], "", "stack_overflow");
    // Output past --stdout-limit fails the task; a log past --stderr-limit is cut and marked.
    let out = fails_with("echo.wat", &["--stdout-limit", "10B"], "more than ten bytes", "output_limit");
    assert!(out.stdout.is_empty(), "a failed task's partial output is not printed");
    let out = run(&crate::common::fixture("echo.wat"), "0123456789", &["--stdout-limit", "10B"]);
    assert!(out.status.success(), "exactly at the limit: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"0123456789");
    let out = wasmq_run().arg(crate::common::fixture("noop.wat")).args(["--timeout", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad flag value is a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--timeout"), "{err}");
}

#[test]
fn repeat_prints_timing_statistics() {
    let out = Command::new(crate::common::bin())
        .arg("run")
        .arg(crate::common::fixture("noop.wat"))
        .args(["--repeat", "50"])
        .env("WASMQ_CACHE_DIR", crate::common::cache_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("50 runs: median"), "{err}");
}

#[test]
fn the_demo_runs_end_to_end() {
    let out = Command::new(crate::common::bin())
        .args(["demo", "--fresh-redis"])
        .env("WASMQ_CACHE_DIR", crate::common::cache_dir())
        .env_remove("WASMQ_REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    // Eight tasks: seven succeed, the one with a broken rule is retried once and ends dead; and
    // a flow of 14 log lines counted and merged by a tree of 14 reducers.
    assert!(stdout.contains("35 succeeded, 1 dead, 1 retried"), "{stdout}");
    assert!(stdout.contains("flow demo:9: succeeded, 14 children and 14 reducers; 87 words"), "{stdout}");
    assert!(stdout.contains("HELLO FROM HAND-WRITTEN WASM"), "{stdout}");
    assert!(stdout.contains("has neither"), "the task's own reason is missing: {stdout}");
}

/// A worker compiles the modules its queues' tasks reference ahead of them: a task due in a few
/// seconds finds its module loaded (the log says so before the task runs).
#[test]
fn a_worker_compiles_referenced_modules_ahead() {
    let s = crate::common::RedisServer::start().expect("redis-server");
    let w = crate::common::Wasmq::new(&s);
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let id = w.enqueue("echo", "later", &["--delay", "4s"]);
    let cache = tempfile::tempdir().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut worker = w.cmd().env("WASMQ_CACHE_DIR", cache.path()).args(["worker"]).stderr(log.reopen().unwrap()).spawn().unwrap();
    let read_log = || std::fs::read_to_string(log.path()).unwrap_or_default();
    let warmed = crate::common::eventually(std::time::Duration::from_secs(3), || read_log().contains("module loaded").then_some(()));
    let state = w.status(&id).unwrap()["state"].clone();
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(warmed.is_some(), "the module was not compiled ahead: {}", read_log());
    assert_eq!(state, "delayed", "the task ran already: the check proves nothing");
}

/// `wasmq replay`: a dead task runs again locally under the limits its attempt recorded and fails
/// the same way; an `--input-from-after` task gets its parents' outputs; spawns are only listed.
#[test]
fn replay_runs_a_task_where_you_sit() {
    use crate::security::adversary;
    use wasmq_testkit::examples::WasmTarget;
    let s = crate::common::RedisServer::start().expect("redis-server");
    let w = crate::common::Wasmq::new(&s);
    w.push(&adversary(WasmTarget::P1), "adv");
    w.push(&crate::common::fixture("echo.wat"), "echo");
    let hog = w.enqueue("adv", "alloc", &["--memory", "40MiB", "--max-attempts", "1"]);
    let spawner = w.enqueue("adv", "spawn 2 adv", &[]);
    let (a, b) = (w.enqueue("echo", "\"one\"", &[]), w.enqueue("echo", "[2]", &[]));
    let joined = w.ok(&["enqueue", "echo", "--after", &format!("{a},{b}"), "--input-from-after"]).trim().to_string();
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(std::time::Duration::from_secs(60)), Some(0), "{}", worker.log());
    let st = w.status(&hog).unwrap();
    assert_eq!(st["error_kind"], "memory_limit", "{st}");
    let recorded: serde_json::Value = serde_json::from_str(
        &redis::Commands::hget::<_, _, String>(
            &mut crate::common::redis_conn(&s),
            crate::common::task_key("default", hog.rsplit(':').next().unwrap()),
            "limits",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(recorded["memory"], 40 << 20, "{recorded}");
    let out = w.run(&["replay", &hog]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("under the limits its last failed attempt ran with") && err.contains("memory"), "{err}");
    // Its parents' outputs, as the worker built them.
    let out = w.run(&["replay", &joined]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), w.ok(&["result", &joined]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"["one",[2]]"#);
    // Spawns are listed, not enqueued.
    let before = w.ok(&["queue", "stats", "--json"]);
    let out = w.run(&["replay", &spawner]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a worker would enqueue them") && err.contains("local:1 adv"), "{err}");
    assert_eq!(w.ok(&["queue", "stats", "--json"]), before);
    assert_eq!(w.run(&["replay", "default:999"]).status.code(), Some(3));
}

/// A core module without exported memory whose `spawn` is refused: the host cannot write the
/// reason back and traps the task with that message (it used to panic the host).
#[test]
fn a_host_call_answer_to_a_module_without_memory_is_a_trap_not_a_panic() {
    let s = crate::common::RedisServer::start().expect("redis-server");
    let w = crate::common::Wasmq::new(&s);
    let out = w.run(&["run", crate::common::fixture("spawn_no_memory.wat").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("wasmq.spawn: the module exports no memory named `memory`") && !err.contains("panicked"), "{err}");
}
