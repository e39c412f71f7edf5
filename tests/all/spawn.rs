//! The host API's `spawn`: children committed by the attempt that succeeds, dependents that wait
//! for them, the caps on a spawning task, through real workers and through the scripts by hand.

use std::time::Duration;

use redis::Commands;

use crate::common::{RedisServer, Wasmq, redis_conn, task_key};
use crate::reliability::Scripts;
use crate::security::adversary;
use wasmq_testkit::examples::WasmTarget;

fn seq(id: &str) -> u64 {
    id.rsplit(':').next().unwrap().parse().unwrap()
}

/// A text of `lines` log lines with a few hundred distinct words.
fn text(lines: usize) -> String {
    (0..lines).map(|i| format!("line {i} user{} did action{} on item{}\n", i % 37, i % 11, i % 101)).collect()
}

/// split-count fans out by its data: the merge after it waits for the children it spawned and
/// gets their outputs after the spawner's own, as a module and as a component; a merge enqueued
/// after the whole tree finished is given the same parents; `status` lists the children.
#[test]
fn a_spawner_s_dependents_wait_for_its_children_and_get_their_outputs() {
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    let t = text(700);
    let whole = w.run(&[
        "run",
        crate::common::example(WasmTarget::P1, "wordcount").to_str().unwrap(),
        "--input",
        &serde_json::json!({"text": t, "counts": true}).to_string(),
    ]);
    assert!(whole.status.success());
    let expected: serde_json::Value = serde_json::from_slice(&whole.stdout).unwrap();
    w.push(&crate::common::example(WasmTarget::P2, "merge-counts"), "merge-counts");
    let mut cases = Vec::new();
    for (target, suffix) in [(WasmTarget::P1, "p1"), (WasmTarget::P2, "p2")] {
        w.push(&crate::common::example(target, "wordcount"), &format!("wordcount-{suffix}"));
        w.push(&crate::common::example(target, "split-count"), &format!("split-count-{suffix}"));
        let input = serde_json::json!({"text": t, "chunk_bytes": 4096, "module": format!("wordcount-{suffix}")}).to_string();
        let spawner = w.enqueue(&format!("split-count-{suffix}"), &input, &[]);
        let merge = w.ok(&["enqueue", "merge-counts", "--after", &spawner, "--input-from-after"]).trim().to_string();
        cases.push((suffix, spawner, merge));
    }
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(120)), Some(0), "{}", worker.log());
    let chunks = t.len().div_ceil(4096);
    for (suffix, spawner, merge) in &cases {
        let st = w.status(spawner).unwrap();
        let spawned = st["spawned"].as_array().unwrap_or_else(|| panic!("{suffix}: no children listed: {st}"));
        assert!(spawned.len() >= chunks - 1 && spawned.len() <= chunks + 1, "{suffix}: {} children for {chunks} chunks", spawned.len());
        for c in spawned {
            assert_eq!(w.status(c.as_str().unwrap()).unwrap()["state"], "succeeded", "{suffix}: child {c}");
        }
        let m = w.status(merge).unwrap();
        assert_eq!(m["after"].as_array().unwrap().len(), spawned.len() + 1, "{suffix}: the merge's parents: {m}");
        let got: serde_json::Value = serde_json::from_str(&w.ok(&["result", merge])).unwrap();
        assert_eq!(got, expected, "{suffix}: the merged counts differ from one count of the whole text");
        let listed: Vec<&str> = spawned.iter().map(|c| c.as_str().unwrap()).collect();
        let human = w.ok_any(&["status", spawner]);
        let expect =
            if listed.len() > 5 { format!("spawned     {} tasks: {}, ", listed.len(), listed[0]) } else { format!("spawned     {}\n", listed.join(", ")) };
        assert!(human.contains(&expect), "{suffix}: {human}");
        // Enqueued after the tree finished: the children are its parents as well.
        let late = w.ok(&["enqueue", "merge-counts", "--after", spawner, "--input-from-after"]).trim().to_string();
        let late_st = w.status(&late).unwrap();
        assert_eq!(late_st["after"], m["after"], "{suffix}");
        let mut worker = w.spawn_worker(&["--exit-when-idle"]);
        assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
        assert_eq!(serde_json::from_str::<serde_json::Value>(&w.ok(&["result", &late])).unwrap(), expected, "{suffix}");
    }
}

/// The scripts by hand: children go in only with a success (a retried or dead attempt commits
/// none), a dependent blocked on the spawner waits for them, and one enqueued after the spawner
/// succeeded waits for its unfinished children.
#[test]
fn only_a_succeeded_attempt_commits_its_children() {
    use wasmq::queue::Action;
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    let sha = w.push(&crate::common::fixture("echo.wat"), "echo");
    let spawner = w.enqueue("echo", "spawner", &["--max-attempts", "2"]);
    let before = w.enqueue("echo", "", &["--after", &spawner]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut c = redis_conn(&s);
    rt.block_on(async {
        let sc = Scripts::new(&s).await;
        let db = wasmq::queue::Db::new("wasmq");
        let q = wasmq::queue::QueueName::new("default").unwrap();
        let conn = wasmq::conn::Redis::open(wasmq::conn::RedisOptions::new(s.url())).unwrap().connect().await.unwrap();
        let child = |seq: u64, input: &str| wasmq::queue::ChildTask {
            seq,
            module: sha.clone(),
            priority: 0,
            delay: Duration::ZERO,
            fields: vec![("input", input.as_bytes().to_vec())],
        };
        // Attempt 1 spawns one child and fails: retried, the child is never written.
        let token = sc.claim(0).await.expect("claimed");
        let lost = db.reserve_seq(&mut conn.clone(), &q).await.unwrap();
        assert!(sc.complete_spawning(seq(&spawner), token, Action::Retry, &[], vec![child(lost, "lost")]).await);
        assert!(!c.exists::<_, bool>(task_key("default", lost)).unwrap(), "a retried attempt committed its child");
        // Attempt 2 spawns two and succeeds: both are tasks, and the dependent waits for them.
        let mut token = None;
        for _ in 0..100 {
            token = sc.claim(0).await;
            if token.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let token = token.expect("claimed again after the retry delay");
        let (a, b) = (db.reserve_seq(&mut conn.clone(), &q).await.unwrap(), db.reserve_seq(&mut conn.clone(), &q).await.unwrap());
        assert!(sc.complete_spawning(seq(&spawner), token, Action::Succeeded, &[("output", "spawner")], vec![child(a, "a"), child(b, "b")]).await);
        for k in [a, b] {
            let st: Option<String> = c.hget(task_key("default", k), "state").unwrap();
            assert_eq!(st.as_deref(), Some("pending"), "child {k}");
        }
        let h: std::collections::HashMap<String, String> = c.hgetall(task_key("default", seq(&before))).unwrap();
        assert_eq!((h["state"].as_str(), h["waiting"].as_str()), ("blocked", "2"), "{h:?}");
        assert_eq!(h["after"], format!("{},{a},{b}", seq(&spawner)));
        // Enqueued now, after the spawner succeeded: it waits for the two unfinished children.
        let after = w.enqueue("echo", "", &["--after", &spawner]);
        let h: std::collections::HashMap<String, String> = c.hgetall(task_key("default", seq(&after))).unwrap();
        assert_eq!((h["state"].as_str(), h["waiting"].as_str()), ("blocked", "2"), "{h:?}");
        // The children finish: both dependents are ready.
        for _ in 0..2 {
            let token = sc.claim(0).await.expect("a child");
            let claimed: Vec<u64> =
                [a, b].into_iter().filter(|k| c.hget::<_, _, Option<String>>(task_key("default", *k), "state").unwrap().as_deref() == Some("active")).collect();
            assert!(sc.complete(claimed[0], token, Action::Succeeded, &[("output", "child")]).await);
        }
        for d in [&before, &after] {
            let st: String = c.hget(task_key("default", seq(d)), "state").unwrap();
            assert_eq!(st, "pending", "{d}");
        }
    });
    // Enqueued: the spawner, two dependents and two children; the lost child never was.
    let stats_key = wasmq::queue::Keys::new("wasmq").queue(&wasmq::queue::QueueName::new("default").unwrap()).stats();
    let enqueued: Option<String> = c.hget(stats_key, "enqueued").unwrap();
    assert_eq!(enqueued.as_deref(), Some("5"));
}

/// A spawn bomb: a task spawning far past `--max-children` gets exactly that many children, the
/// other calls refused with the reason; its children run. A task that fails after spawning (here
/// split-count, failing when a spawn is refused) commits none of the children it did spawn.
#[test]
fn spawn_bombs_stop_at_the_cap_and_a_failed_attempt_spawns_nothing() {
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    for (target, name) in [(WasmTarget::P1, "adv"), (WasmTarget::P2, "adv2")] {
        w.push(&adversary(target), name);
    }
    w.push(&crate::common::example(WasmTarget::P1, "wordcount"), "wordcount");
    w.push(&crate::common::example(WasmTarget::P1, "split-count"), "split-count");
    let bombs = [w.enqueue("adv", "spawn 50 adv", &["--allow-host", "127.0.0.1:9", "--max-http-requests", "3"]), w.enqueue("adv2", "spawn 50 adv", &[])];
    let unknown = w.enqueue("adv", "spawn 2 no-such-module", &[]);
    let split = w.enqueue("split-count", &serde_json::json!({"text": text(200), "chunk_bytes": 512}).to_string(), &[]);
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--max-children", "7"]);
    assert_eq!(worker.wait(Duration::from_secs(120)), Some(0), "{}", worker.log());
    for bomb in &bombs {
        let out = w.ok(&["result", bomb]);
        assert!(out.starts_with("spawned 7, refused 43: this task has spawned 7 children, its limit (--max-children)"), "{bomb}: {out}");
        let st = w.status(bomb).unwrap();
        let kids = st["spawned"].as_array().unwrap();
        assert_eq!(kids.len(), 7, "{st}");
        for (i, k) in kids.iter().enumerate() {
            assert_eq!(w.ok(&["result", k.as_str().unwrap()]), format!("child-{i}"), "{bomb}: child {k}");
        }
        // A child gets its spawner's grants, no more.
        let child: std::collections::HashMap<String, String> = redis_conn(&s).hgetall(task_key("default", seq(kids[0].as_str().unwrap()))).unwrap();
        let grant = (child.get("allow_hosts").map(String::as_str), child.get("max_http_requests").map(String::as_str));
        assert_eq!(grant, if bomb == &bombs[0] { (Some("127.0.0.1:9"), Some("3")) } else { (None, None) }, "{bomb}");
        // `status` shows a task's grant.
        let shown = w.ok_any(&["status", kids[0].as_str().unwrap()]);
        assert_eq!(shown.contains("http hosts  127.0.0.1:9\n"), bomb == &bombs[0], "{shown}");
    }
    let out = w.ok(&["result", &unknown]);
    assert!(out.starts_with("spawned 0, refused 2: cannot spawn \"no-such-module\": "), "{out}");
    let st = w.status(&split).unwrap();
    assert_eq!((st["state"].as_str(), st["error_kind"].as_str()), (Some("dead"), Some("permanent")), "{st}");
    assert!(st["error"].as_str().unwrap().contains("could not spawn chunk 8"), "{st}");
    assert!(st.get("spawned").is_none(), "{st}");
    // 2 bombs × 7 children, and nothing of the split's 7 spawned children.
    let listed = w.ok(&["queue", "stats", "--queue", "default", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(stats[0]["enqueued_total"], 4 + 14, "{stats}");
    // `wasmq run` shows what would be spawned, and enqueues nothing.
    let out = w.run(&["run", adversary(WasmTarget::P1).to_str().unwrap(), "--input", "spawn 2 wordcount"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("[wasmq: the task spawned 2 children; a worker would enqueue them:]") && err.contains("local:2 wordcount, 10 input bytes"), "{err}");
}

/// In a flow: each child of a `map` spawns more, the reducers wait for those too, the flow counts
/// them as its members and ends only when they have, with the count of the whole text.
#[test]
fn a_map_whose_children_spawn_reduces_over_the_grandchildren_too() {
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    for t in ["wordcount", "split-count", "merge-counts"] {
        w.push(&crate::common::example(WasmTarget::P1, t), t);
    }
    let parts: Vec<String> = (0..3).map(|i| text(100 + 50 * i)).collect();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    for p in &parts {
        use std::io::Write;
        writeln!(file, "{}", serde_json::json!({"text": p, "chunk_bytes": 1024})).unwrap();
    }
    let whole = w.run(&[
        "run",
        crate::common::example(WasmTarget::P1, "wordcount").to_str().unwrap(),
        "--input",
        &serde_json::json!({"text": parts.concat(), "counts": true}).to_string(),
    ]);
    let expected: serde_json::Value = serde_json::from_slice(&whole.stdout).unwrap();
    let _worker = w.spawn_worker(&[]);
    let flow = w.ok(&["map", "split-count", "--inputs-file", file.path().to_str().unwrap(), "--reduce", "merge-counts", "--reduce-fan-in", "2"]);
    let flow = flow.trim();
    let out = w.run(&["result", flow, "--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(), expected);
    let st: serde_json::Value = serde_json::from_str(&w.ok(&["status", flow, "--json"])).unwrap();
    let spawned: usize = parts.iter().map(|p| p.len().div_ceil(1024) - 1).sum();
    assert_eq!(st["state"], "succeeded", "{st}");
    let children = st["children"].as_u64().unwrap() as usize;
    assert!(children > 3 && children.abs_diff(3 + spawned) <= 3, "{children} members for 3 children and about {spawned} spawned: {st}");
    assert_eq!(st["succeeded"].as_u64().unwrap(), children as u64 + st["reducers"].as_u64().unwrap(), "{st}");
}
