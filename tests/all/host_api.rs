//! The task host API end to end: queue config and secret grants read by tasks through real
//! workers, progress carried by the heartbeat into `status`, `fail` as a permanent failure.

use std::time::Duration;

use crate::common::{RedisServer, Wasmq, eventually, fixture};

#[test]
fn config_secrets_progress_and_fail_through_a_worker() {
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    w.push(&fixture("host_api.wat"), "host");
    assert!(w.ok(&["config", "set", "default", "greeting", "hello"]).contains("greeting set"));
    assert!(w.ok(&["config", "grant", "default", "token"]).contains("granted"));
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("token");
    std::fs::write(&secret_file, "s3cr3t-value\n").unwrap();
    let listed = w.ok(&["config", "list", "default"]);
    assert!(listed.contains("greeting") && listed.contains("hello") && listed.contains("token"), "{listed}");
    let slow = w.enqueue("host", "s", &[]);
    let failing = w.enqueue("host", "f", &["--max-attempts", "3"]);
    let secret_arg = format!("token=@{}", secret_file.display());
    let mut worker = w.spawn_worker(&["--secret", &secret_arg]);
    // While it sleeps, its report reaches `status` through the heartbeat.
    let st = eventually(Duration::from_secs(20), || w.status(&slow).filter(|st| st["progress"].is_object()))
        .unwrap_or_else(|| panic!("no progress shown: {:?}\n{}", w.status(&slow), worker.log()));
    assert_eq!((st["progress"]["fraction"].as_f64(), st["progress"]["message"].as_str()), (Some(0.5), Some("halfway")), "{st}");
    assert!(w.ok_any(&["status", &slow]).contains("progress    50% halfway"));
    let done = eventually(Duration::from_secs(20), || w.status(&slow).filter(|st| st["state"] == "succeeded")).expect("never finished");
    assert!(done.get("progress").is_none(), "the report outlived its attempt: {done}");
    assert_eq!(w.ok(&["result", &slow]), "hello|s3cr3t-value");
    let st = eventually(Duration::from_secs(20), || w.status(&failing).filter(|st| st["state"] == "dead")).expect("the failing task never died");
    assert_eq!((st["attempts"].as_u64(), st["error_kind"].as_str()), (Some(1), Some("permanent")), "{st}");
    assert!(st["error"].as_str().unwrap().contains("bad input"), "{st}");
    assert_eq!(worker.stop(), Some(0));
    // The secret's value is nowhere in Redis and not in the worker's log.
    let mut c = crate::common::redis_conn(&s);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    for k in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&k).query(&mut c).unwrap();
        let dump = dump.unwrap_or_default();
        // The only place the value may be is the task's own output, which the task chose to write.
        if k.ends_with(&format!("task:{}", slow.rsplit(':').next().unwrap())) {
            continue;
        }
        assert!(!dump.windows(12).any(|w| w == b"s3cr3t-value"), "the secret is in {k}");
    }
    assert!(!worker.log().contains("s3cr3t-value"), "the secret is in the worker's log");
    // A revoked grant is gone for the next task (workers reread settings every 5 s).
    assert!(w.ok(&["config", "revoke", "default", "token"]).contains("revoked"));
    assert_eq!(w.run(&["config", "revoke", "default", "token"]).status.code(), Some(1));
    assert_eq!(w.run(&["worker", "--secret", "bad name=@/nonexistent"]).status.code(), Some(2));
}

/// The SDK's host API from a Rust task, as a core module and as a component, through a worker:
/// `config` reads the queue's setting, progress reaches the task hash while it runs (checked at
/// the end through `wasmq run`), `fail` and undecodable input are permanent failures on both.
#[test]
fn the_sdk_host_api_in_a_module_and_a_component() {
    use wasmq_testkit::examples::WasmTarget;
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    w.ok(&["config", "set", "default", "greeting", "from the queue"]);
    let mut ids = Vec::new();
    for (t, name) in [(WasmTarget::P1, "demo-p1"), (WasmTarget::P2, "demo-p2")] {
        w.push(&crate::common::example(t, "host-demo"), name);
        ids.push((name, w.enqueue(name, r#"{"steps": 4}"#, &[]), w.enqueue(name, r#"{"steps": 1, "fail": true}"#, &[]), w.enqueue(name, "{}", &[])));
    }
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    for (name, ok, fail, bad) in ids {
        assert_eq!(w.ok(&["result", &ok]).trim_end(), r#"{"greeting":"from the queue","steps":4}"#, "{name}");
        for id in [&fail, &bad] {
            let st = w.status(id).unwrap();
            assert_eq!((st["state"].as_str(), st["attempts"].as_u64(), st["error_kind"].as_str()), (Some("dead"), Some(1), Some("permanent")), "{name}: {st}");
        }
    }
    // `wasmq run` gives the same API locally: `--config`, and the last progress on stderr.
    let out =
        w.run(&["run", crate::common::example(WasmTarget::P2, "host-demo").to_str().unwrap(), "--config", "greeting=local", "--input", r#"{"steps": 2}"#]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), r#"{"greeting":"local","steps":2}"#);
    assert!(String::from_utf8_lossy(&out.stderr).contains("[wasmq: last progress 100% step 2 of 2]"), "{}", String::from_utf8_lossy(&out.stderr));
}
