//! Flows: tasks that wait for other tasks (`enqueue --after`), with real workers and modules.

use std::time::Duration;

use crate::common::{RedisServer, Wasmq, eventually, fixture, server};

fn finished(w: &Wasmq, id: &str) -> serde_json::Value {
    eventually(Duration::from_secs(30), || w.status(id).filter(|s| !matches!(s["state"].as_str(), Some("pending" | "delayed" | "active" | "blocked"))))
        .unwrap_or_else(|| panic!("{id} never finished: {:?}", w.status(id)))
}

/// A chain and a fan-in: a dependent is blocked (exit code 4, counted as BLOCKED) until every
/// parent succeeded, then runs with its parents' outputs as a JSON array in the order given.
#[test]
fn a_dependent_runs_after_its_parents_with_their_outputs() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let a = w.enqueue("echo", r#"{"n": 1}"#, &["--delay", "1s"]);
    let b = w.enqueue("echo", "plain text", &[]);
    let c = w.ok(&["enqueue", "echo", "--after", &format!("{a},{b}"), "--input-from-after"]).trim().to_string();
    let d = w.enqueue("echo", "tail", &["--after", &c]);
    let st = w.status(&c).unwrap();
    assert_eq!(st["state"], "blocked", "{st}");
    assert_eq!(st["after"], serde_json::json!([a, b]));
    assert_eq!(st["blocked_on"].as_array().unwrap().len(), 2, "{st}");
    assert_eq!(w.run(&["result", &c]).status.code(), Some(4));
    let stats: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    assert_eq!(stats[0]["blocked"], 2, "{stats}");
    assert!(w.ok(&["queue", "stats"]).contains("BLOCKED"));
    let _worker = w.spawn_worker(&[]);
    for id in [&a, &b, &c, &d] {
        assert_eq!(finished(&w, id)["state"], "succeeded", "{id}");
    }
    // The fan-in's input: the parents' outputs, JSON embedded as written, text as a string.
    assert_eq!(w.ok(&["result", &c]), r#"[{"n": 1},"plain text"]"#);
    assert_eq!(w.ok(&["result", &d]), "tail");
    // Parents that already succeeded count at enqueue: no wait at all.
    let e = w.ok(&["enqueue", "echo", "--after", &a, "--input-from-after"]).trim().to_string();
    assert_eq!(finished(&w, &e)["state"], "succeeded");
    assert_eq!(w.ok(&["result", &e]), r#"[{"n": 1}]"#);
}

/// A dead parent leaves a `block` dependent blocked (naming the dead parent) until `dead retry`
/// of the parent lets it continue; under `cancel` the dependent is cancelled at once
/// (`parent_dead`), and its own dependents with it (`parent_cancelled`).
#[test]
fn a_dead_parent_blocks_or_cancels_its_dependents() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("exit3.wat"), "exit3");
    w.push(&fixture("echo.wat"), "echo");
    let parent = w.enqueue("exit3", "", &["--max-attempts", "1"]);
    let blocked = w.enqueue("echo", "b", &["--after", &parent]);
    let cancelled = w.enqueue("echo", "c", &["--after", &parent, "--on-parent-failure", "cancel"]);
    let grandchild = w.enqueue("echo", "g", &["--after", &cancelled]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(w.status(&parent).unwrap()["state"], "dead");
    let st = w.status(&blocked).unwrap();
    assert_eq!(st["state"], "blocked", "{st}");
    assert_eq!(st["blocked_on"], serde_json::json!([{"id": parent, "state": "dead"}]));
    let shown = w.run(&["status", &blocked]);
    assert_eq!(shown.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&format!("{parent} (dead)")));
    let st = w.status(&cancelled).unwrap();
    assert_eq!((st["state"].as_str(), st["cancel_reason"].as_str()), (Some("cancelled"), Some("parent_dead")), "{st}");
    let st = w.status(&grandchild).unwrap();
    assert_eq!((st["state"].as_str(), st["cancel_reason"].as_str()), (Some("cancelled"), Some("parent_cancelled")), "{st}");
    // Enqueued after the parent died: the same policies apply at once.
    let late = w.enqueue("echo", "l", &["--after", &parent, "--on-parent-failure", "cancel"]);
    assert_eq!(w.status(&late).unwrap()["cancel_reason"], "parent_dead");
    // `dead retry` of a dead parent lets its blocked dependent go on: a parent that timed out,
    // given more time by hand, then succeeds.
    let dir = tempfile::tempdir().unwrap();
    let nap = dir.path().join("nap.wat");
    std::fs::write(&nap, std::fs::read_to_string(fixture("sleep.wat")).unwrap().replace("10000000000", "1500000000")).unwrap();
    w.push(&nap, "nap");
    let slow_parent = w.enqueue("nap", "", &["--max-attempts", "1", "--timeout", "500ms"]);
    let waiting = w.enqueue("echo", "w", &["--after", &slow_parent]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(w.status(&slow_parent).unwrap()["error_kind"], "timeout");
    assert_eq!(w.status(&waiting).unwrap()["state"], "blocked");
    let _: () = redis::Commands::hset(&mut crate::common::redis_conn(&s), crate::common::task_key("default", &slow_parent), "timeout_ms", 10_000).unwrap();
    w.ok(&["dead", "retry", &slow_parent]);
    let _worker = w.spawn_worker(&[]);
    assert_eq!(finished(&w, &slow_parent)["state"], "succeeded");
    assert_eq!(finished(&w, &waiting)["state"], "succeeded");
    assert_eq!(w.ok(&["result", &waiting]), "w");
}

/// A cancelled parent cancels its dependents; an unknown parent is refused (exit 3, nothing
/// enqueued); a parent in another queue is a usage error (exit 2).
#[test]
fn cancelled_unknown_and_foreign_parents() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let parent = w.enqueue("echo", "p", &["--delay", "1h"]);
    let child = w.enqueue("echo", "c", &["--after", &parent]);
    assert!(w.ok(&["cancel", &parent]).contains("cancelled"));
    let st = w.status(&child).unwrap();
    assert_eq!((st["state"].as_str(), st["cancel_reason"].as_str()), (Some("cancelled"), Some("parent_cancelled")), "{st}");
    assert_eq!(w.run(&["result", &child]).status.code(), Some(6));
    // Cancelling a blocked task itself.
    let p2 = w.enqueue("echo", "p", &["--delay", "1h"]);
    let c2 = w.enqueue("echo", "c", &["--after", &p2]);
    assert!(w.ok(&["cancel", &c2]).contains("cancelled"));
    assert_eq!(w.status(&c2).unwrap()["cancel_reason"], "requested");
    let before: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    let out = w.run(&["enqueue", "echo", "--after", "default:999"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default:999"));
    let out = w.run(&["enqueue", "echo", "--after", "other:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let after: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    assert_eq!(before[0]["enqueued_total"], after[0]["enqueued_total"], "a refused enqueue wrote a task");
    assert_eq!(after[0]["blocked"], 0);
}

/// A parent's output stays for its dependents whatever the retention: a succeeded parent that the
/// count limit would delete is kept until its dependent ran, then deleted as usual.
#[test]
fn retention_keeps_a_parent_until_its_dependents_finished() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    w.ok(&["queue", "retention", "default", "--succeeded-count", "1"]);
    let parent = w.enqueue("echo", "keep me", &[]);
    let child = w.ok(&["enqueue", "echo", "--after", &parent, "--input-from-after", "--delay", "2s"]).trim().to_string();
    for i in 0..5 {
        w.enqueue("echo", &i.to_string(), &[]);
    }
    let _worker = w.spawn_worker(&[]);
    let total = |w: &Wasmq| serde_json::from_str::<serde_json::Value>(&w.ok(&["queue", "stats", "--json"])).unwrap()[0]["succeeded_total"].as_u64();
    eventually(Duration::from_secs(30), || (total(&w) >= Some(6)).then_some(())).expect("the tasks did not run");
    assert_eq!(w.status(&parent).expect("the parent was deleted while its dependent waited")["state"], "succeeded");
    assert_eq!(finished(&w, &child)["state"], "succeeded");
    assert_eq!(w.ok(&["result", &child]), r#"["keep me"]"#);
    // Released by its dependent, the parent is deleted by the count limit with the next results.
    w.enqueue("echo", "x", &[]);
    eventually(Duration::from_secs(30), || w.status(&parent).is_none().then_some(())).expect("the parent outlived its retention");
}

fn map_inputs(lines: &[&str]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    for l in lines {
        use std::io::Write;
        writeln!(f, "{l}").unwrap();
    }
    f
}

/// `wasmq map`: a flow of children, with no reducer (the result is the JSON array of their
/// outputs in input order), a flat reducer, and a reduction tree (reducers over reducers).
#[test]
fn map_with_and_without_reduce() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let file = map_inputs(&["1", "\"two\"", "{\"n\": 3}", "[4]", "5", "6", "7"]);
    let path = file.path().to_str().unwrap();
    let _worker = w.spawn_worker(&[]);
    let out = w.run(&["map", "echo", "--inputs-file", path, "--wait"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), r#"[1,"two",{"n": 3},[4],5,6,7]"#);
    assert!(out.stderr.is_empty(), "without a terminal --wait prints nothing but the result: {}", String::from_utf8_lossy(&out.stderr));
    let flat = w.ok(&["map", "echo", "--inputs-file", path, "--reduce", "echo", "--wait"]);
    assert_eq!(flat, r#"[1,"two",{"n": 3},[4],5,6,7]"#);
    // Fan-in 2: 4 reducers over the children, 2 over those, 1 root.
    let flow = w.ok(&["map", "echo", "--inputs-file", path, "--reduce", "echo", "--reduce-fan-in", "2"]).trim().to_string();
    assert_eq!(w.run(&["result", &flow, "--wait", "--timeout", "30s"]).status.code(), Some(0));
    assert_eq!(w.ok(&["result", &flow]), r#"[[[1,"two"],[{"n": 3},[4]]],[[5,6],[7]]]"#);
    let st: serde_json::Value = serde_json::from_str(&w.ok(&["status", &flow, "--json"])).unwrap();
    assert_eq!((st["state"].as_str(), st["children"].as_u64(), st["reducers"].as_u64()), (Some("succeeded"), Some(7), Some(7)), "{st}");
    assert_eq!(st["succeeded"], 14);
    assert!(w.ok(&["status", &flow]).contains("14 succeeded"));
}

/// A dead child under each policy: `block` fails the flow (exit 5, the dead child listed),
/// `cancel` fails it and cancels the reducer, `ignore` gives the reducer null in its place.
#[test]
fn a_dead_child_under_each_policy() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::example(wasmq_testkit::examples::WasmTarget::P1, "wordcount"), "wordcount");
    w.push(&fixture("echo.wat"), "echo");
    let file = map_inputs(&[r#"{"text": "a b", "top": 1}"#, r#"{"not": "wordcount input"}"#]);
    let path = file.path().to_str().unwrap();
    let _worker = w.spawn_worker(&["--max-attempts", "1"]);
    let flows: Vec<(String, String)> = ["block", "cancel", "ignore"]
        .iter()
        .map(|p| (p.to_string(), w.ok(&["map", "wordcount", "--inputs-file", path, "--reduce", "echo", "--on-child-failure", p]).trim().to_string()))
        .collect();
    for (policy, flow) in &flows {
        let out = w.run(&["result", flow, "--wait", "--timeout", "30s"]);
        let st: serde_json::Value = serde_json::from_str(&w.ok_any(&["status", flow, "--json"])).unwrap();
        match policy.as_str() {
            "ignore" => {
                assert_eq!(out.status.code(), Some(0), "{st}");
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(v[0]["total_words"], 2);
                assert!(v[1].is_null(), "{v}");
            }
            _ => {
                assert_eq!(out.status.code(), Some(5), "{policy}: {st}");
                assert_eq!(st["state"], "failed");
                assert_eq!(st["dead_tasks"].as_array().unwrap().len(), 1, "{st}");
                let root = st["root"].as_str().unwrap();
                let r = w.status(root).unwrap();
                let expected = if policy == "block" { ("blocked", None) } else { ("cancelled", Some("parent_dead")) };
                assert_eq!((r["state"].as_str().unwrap(), r["cancel_reason"].as_str()), expected, "{policy}: {r}");
            }
        }
    }
}

/// `cancel FLOW` cancels everything not finished (`flow_cancelled`); the flow ends cancelled.
#[test]
fn cancelling_a_flow() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    w.ok(&["queue", "pause", "default"]);
    let file = map_inputs(&["1", "2", "3"]);
    let flow = w.ok(&["map", "echo", "--inputs-file", file.path().to_str().unwrap(), "--reduce", "echo"]).trim().to_string();
    assert_eq!(w.run(&["result", &flow]).status.code(), Some(4));
    assert!(w.ok(&["cancel", &flow]).contains("4 task(s) cancelled"));
    assert_eq!(w.run(&["result", &flow]).status.code(), Some(6));
    let st: serde_json::Value = serde_json::from_str(&w.ok_any(&["status", &flow, "--json"])).unwrap();
    assert_eq!(st["state"], "cancelled");
    let child = format!("default:{}", flow.rsplit(':').next().unwrap().parse::<u64>().unwrap() + 1);
    assert_eq!(w.status(&child).unwrap()["cancel_reason"], "flow_cancelled");
    assert_eq!(w.run(&["cancel", &flow]).status.code(), Some(1), "a finished flow cancelled twice");
}

/// A worker SIGKILLed while a flow is half done: its leases expire, another worker runs what it
/// held, and the flow finishes with the result an undisturbed run gives, each child once.
#[test]
fn a_worker_killed_in_the_middle_of_a_flow() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("slow_echo.wat"), "slow");
    w.push(&fixture("echo.wat"), "echo");
    let inputs: Vec<String> = (1..=12).map(|i| i.to_string()).collect();
    let file = map_inputs(&inputs.iter().map(String::as_str).collect::<Vec<_>>());
    let flow = w.ok(&["map", "slow", "--inputs-file", file.path().to_str().unwrap(), "--reduce", "echo", "--reduce-fan-in", "4"]).trim().to_string();
    let flow_status = || -> serde_json::Value { serde_json::from_str(&w.ok_any(&["status", &flow, "--json"])).unwrap() };
    let mut first = w.spawn_worker(&["--concurrency", "2", "--lease", "2s"]);
    let half = eventually(Duration::from_secs(30), || {
        let st = flow_status();
        (st["succeeded"].as_u64() >= Some(2) && st["active"].as_u64() >= Some(1)).then_some(st)
    })
    .expect("the flow never got going");
    first.signal(crate::common::Signal::KILL);
    assert_eq!(first.wait(Duration::from_secs(10)), None, "killed by a signal: no exit code");
    let st = flow_status();
    assert_eq!(st["state"], "running", "killed too late to be in the middle: {half} then {st}");
    let _second = w.spawn_worker(&["--concurrency", "2"]);
    assert_eq!(w.run(&["result", &flow, "--wait", "--timeout", "60s"]).status.code(), Some(0), "{}", flow_status());
    assert_eq!(w.ok(&["result", &flow]), "[[1,2,3,4],[5,6,7,8],[9,10,11,12]]");
    let st = flow_status();
    assert_eq!((st["state"].as_str(), st["succeeded"].as_u64(), st["dead"].as_u64()), (Some("succeeded"), Some(16), Some(0)), "{st}");
}

/// `dead retry` of a dead child resumes a failed flow: the child runs again, the reducer after it.
#[test]
fn dead_retry_of_a_child_resumes_a_failed_flow() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    let nap = dir.path().join("nap.wat");
    std::fs::write(&nap, std::fs::read_to_string(fixture("sleep.wat")).unwrap().replace("10000000000", "1500000000")).unwrap();
    w.push(&nap, "nap");
    w.push(&fixture("echo.wat"), "echo");
    let file = map_inputs(&["1"]);
    let flow = w
        .ok(&["map", "nap", "--inputs-file", file.path().to_str().unwrap(), "--reduce", "echo", "--timeout", "500ms", "--max-attempts", "1"])
        .trim()
        .to_string();
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(w.run(&["result", &flow]).status.code(), Some(5));
    let st: serde_json::Value = serde_json::from_str(&w.ok_any(&["status", &flow, "--json"])).unwrap();
    let child = st["dead_tasks"][0]["id"].as_str().unwrap_or_else(|| panic!("no dead child listed: {st}")).to_string();
    let _: () =
        redis::Commands::hset(&mut crate::common::redis_conn(&s), crate::common::task_key("default", child.rsplit(':').next().unwrap()), "timeout_ms", 10_000)
            .unwrap();
    w.ok(&["dead", "retry", &child]);
    assert_eq!(w.run(&["result", &flow]).status.code(), Some(4), "a retried flow is running again");
    let _worker = w.spawn_worker(&[]);
    assert_eq!(w.run(&["result", &flow, "--wait", "--timeout", "30s"]).status.code(), Some(0));
    assert_eq!(w.ok(&["result", &flow]), "[\"\"]");
}

/// The README's corpus analysis in two commands: `split` into chunks, `map` wordcount with a
/// merge-counts reduction tree; the result equals one count of the whole corpus.
#[test]
fn a_corpus_split_then_mapped_and_merged() {
    use wasmq_testkit::examples::WasmTarget;
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&crate::common::example(WasmTarget::P1, "wordcount"), "wordcount");
    w.push(&crate::common::example(WasmTarget::P1, "merge-counts"), "merge-counts");
    let dir = tempfile::tempdir().unwrap();
    let mut corpus = String::new();
    for i in 0..200 {
        corpus.push_str(&format!("line {i}: the quick brown fox jumps over the lazy dog, Don't PANIC {}\n", i % 7));
    }
    std::fs::write(dir.path().join("a.txt"), &corpus[..corpus.len() / 2]).unwrap();
    std::fs::write(dir.path().join("b.txt"), &corpus[corpus.len() / 2..]).unwrap();
    let split = w.cmd().current_dir(dir.path()).args(["split", "a.txt", "b.txt", "--chunk-size", "1KiB", "--with", r#"{"counts": true}"#]).output().unwrap();
    assert!(split.status.success(), "{}", String::from_utf8_lossy(&split.stderr));
    let chunks = dir.path().join("chunks.jsonl");
    std::fs::write(&chunks, &split.stdout).unwrap();
    assert!(split.stdout.iter().filter(|b| **b == b'\n').count() > 10, "too few chunks to make a tree");
    let _worker = w.spawn_worker(&[]);
    let out = w.ok(&["map", "wordcount", "--inputs-file", chunks.to_str().unwrap(), "--reduce", "merge-counts", "--reduce-fan-in", "3", "--wait"]);
    let merged: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The two files are counted separately: a word cut at the file boundary is two words.
    let whole = |text: &str| -> serde_json::Value {
        let input = serde_json::json!({"text": text, "counts": true}).to_string();
        serde_json::from_str(&w.ok(&["run", crate::common::example(WasmTarget::P1, "wordcount").to_str().unwrap(), "--input", &input])).unwrap()
    };
    let joined = format!("{}\n{}", &corpus[..corpus.len() / 2], &corpus[corpus.len() / 2..]);
    assert_eq!(merged, whole(&joined));
    assert_eq!(merged["counts"]["fox"], 200, "{merged}");
}

/// A flow's members are kept while it runs, whatever the queue's count limit, and removed with it
/// as one unit once it ended and its end is past the queue's retention.
#[test]
fn retention_removes_a_flow_as_one_unit() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    w.push(&fixture("exit3.wat"), "exit3");
    w.ok(&["queue", "retention", "default", "--succeeded-count", "2", "--cancelled-age", "1s"]);
    let inputs = map_inputs(&["1", "2", "3", "4", "5"]);
    let path = inputs.path().to_str().unwrap();
    // The reducer fails once and waits an hour for its retry: the flow runs on, its children done.
    let running = w.ok(&["map", "echo", "--inputs-file", path, "--reduce", "exit3", "--max-attempts", "2"]).trim().to_string();
    let _worker = w.spawn_worker(&["--backoff-base", "1h", "--backoff-cap", "1h", "--reap-interval", "100ms"]);
    let flow_status = |id: &str| -> Option<serde_json::Value> {
        let out = w.run(&["status", id, "--json"]);
        (out.status.code() != Some(3)).then(|| serde_json::from_slice(&out.stdout).unwrap())
    };
    eventually(Duration::from_secs(30), || (flow_status(&running)?["succeeded"] == 5).then_some(())).expect("the children never ran");
    // Plain tasks past the count limit are deleted as usual; the flow's children are not.
    let plain: Vec<String> = (0..4).map(|i| w.enqueue("echo", &i.to_string(), &[])).collect();
    eventually(Duration::from_secs(30), || w.status(&plain[0]).is_none().then_some(())).expect("the count limit never applied");
    let first_child = format!("default:{}", running.rsplit(':').next().unwrap().parse::<u64>().unwrap() + 1);
    assert_eq!(w.status(&first_child).expect("a member of a running flow was deleted")["state"], "succeeded");
    assert_eq!(w.run(&["result", &running]).status.code(), Some(4));
    // Cancelled, the flow ends; a second past its end it goes, all members with it.
    w.ok(&["cancel", &running]);
    eventually(Duration::from_secs(30), || flow_status(&running).is_none().then_some(())).expect("the cancelled flow was never removed");
    assert!(w.status(&first_child).is_none(), "a member outlived its flow");
    // A succeeded flow larger than the succeeded count limit goes as a unit too, and leaves
    // no member behind.
    let done = w.ok(&["map", "echo", "--inputs-file", path]).trim().to_string();
    eventually(Duration::from_secs(30), || flow_status(&done).is_none().then_some(())).expect("the succeeded flow was never removed");
    let mut c = crate::common::redis_conn(&s);
    let members: Vec<String> = redis::cmd("KEYS").arg("*:flow:*").query(&mut c).unwrap();
    assert!(members.is_empty(), "{members:?}");
    let done_child = format!("default:{}", done.rsplit(':').next().unwrap().parse::<u64>().unwrap() + 1);
    assert!(w.status(&done_child).is_none(), "a member of the succeeded flow outlived it");
    let counted: std::collections::HashMap<String, i64> = redis::Commands::hgetall(&mut c, crate::common::qk("default").flows_members()).unwrap();
    assert!(counted.values().all(|n| *n == 0), "{counted:?}");
}

/// A reducer whose parents' outputs exceed the worker's --max-input-size fails as `input_limit`,
/// and its error names the fan-in to lower.
#[test]
fn a_reducer_over_the_input_limit_names_the_fan_in() {
    let s = server();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let line = format!("\"{}\"", "x".repeat(200));
    let file = map_inputs(&[&line, &line, &line, &line]);
    let flow = w
        .ok(&["map", "echo", "--inputs-file", file.path().to_str().unwrap(), "--reduce", "echo", "--reduce-fan-in", "4", "--max-attempts", "1"])
        .trim()
        .to_string();
    let _worker = w.spawn_worker(&["--max-input-size", "500"]);
    assert_eq!(w.run(&["result", &flow, "--wait", "--timeout", "30s"]).status.code(), Some(5));
    let st: serde_json::Value = serde_json::from_str(&w.ok_any(&["status", &flow, "--json"])).unwrap();
    let dead = &st["dead_tasks"][0];
    assert_eq!(dead["error_kind"], "input_limit", "{st}");
    assert!(dead["error"].as_str().unwrap().contains("--reduce-fan-in below 4"), "{st}");
}

/// A map that fails part-way (Redis at maxmemory) prints no id, exits 1 with one line naming the
/// flow it had started; once memory is freed, cancelling that flow leaves nothing to run.
#[test]
fn a_map_that_fails_part_way_prints_no_id() {
    let s =
        RedisServer::start_with(wasmq_testkit::redis_server::ServerOptions::default().arg("maxmemory", "4mb").arg("maxmemory-policy", "noeviction")).unwrap();
    let w = Wasmq::new(&s);
    w.push(&fixture("echo.wat"), "echo");
    let line = format!("{{\"pad\": \"{}\"}}", "x".repeat(1000));
    let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), 12_000).collect();
    let file = map_inputs(&lines);
    let out = w.run(&["map", "echo", "--inputs-file", file.path().to_str().unwrap(), "--reduce", "echo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "an id was printed: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains("out of memory") && stderr.contains("the flow default:1"), "{stderr}");
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").query(&mut crate::common::redis_conn(&s)).unwrap();
    if !stderr.contains("is cancelled") {
        w.ok(&["cancel", "default:1"]);
    }
    assert_eq!(w.run(&["result", "default:1"]).status.code(), Some(6));
    assert_eq!(w.status("default:2").expect("the first child")["cancel_reason"], "flow_cancelled");
    let stats: serde_json::Value = serde_json::from_str(&w.ok(&["queue", "stats", "--json"])).unwrap();
    assert_eq!((stats[0]["pending"].as_u64(), stats[0]["blocked"].as_u64()), (Some(0), Some(0)), "{stats}");
}

/// `cancel FLOW` while members run: the running ones are stopped by their workers, the rest
/// cancelled at once, all with reason flow_cancelled; the flow ends cancelled (exit 6).
#[test]
fn cancelling_a_running_flow_stops_its_running_members() {
    let s = server();
    let w = Wasmq::new(&s);
    let dir = tempfile::tempdir().unwrap();
    let nap = dir.path().join("nap.wat");
    std::fs::write(&nap, std::fs::read_to_string(fixture("sleep.wat")).unwrap().replace("10000000000", "20000000000")).unwrap();
    w.push(&nap, "nap");
    w.push(&fixture("echo.wat"), "echo");
    let file = map_inputs(&["1", "2", "3", "4", "5", "6"]);
    let flow = w.ok(&["map", "nap", "--inputs-file", file.path().to_str().unwrap(), "--reduce", "echo"]).trim().to_string();
    let _worker = w.spawn_worker(&["--concurrency", "2"]);
    let flow_status = || -> serde_json::Value { serde_json::from_str(&w.ok_any(&["status", &flow, "--json"])).unwrap() };
    // Claimed: two running, the rest prefetched by the worker.
    eventually(Duration::from_secs(30), || (flow_status()["active"].as_u64() >= Some(2)).then_some(())).expect("the children never started");
    let said = w.ok(&["cancel", &flow]);
    let stopping: u64 = said.split(", ").nth(1).and_then(|p| p.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{said}"));
    assert!(stopping >= 2, "{said}");
    assert_eq!(w.run(&["result", &flow, "--wait", "--timeout", "10s"]).status.code(), Some(6));
    let st = eventually(Duration::from_secs(10), || Some(flow_status()).filter(|st| st["cancelled"] == 7)).unwrap_or_else(|| panic!("{}", flow_status()));
    assert_eq!((st["state"].as_str(), st["active"].as_u64()), (Some("cancelled"), Some(0)), "{st}");
    let first = flow.rsplit(':').next().unwrap().parse::<u64>().unwrap() + 1;
    for seq in first..first + 7 {
        let t = w.status(&format!("default:{seq}")).unwrap();
        assert_eq!((t["state"].as_str(), t["cancel_reason"].as_str()), (Some("cancelled"), Some("flow_cancelled")), "{t}");
    }
}
