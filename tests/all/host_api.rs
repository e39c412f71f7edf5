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
    // A revoked grant is gone for the next task (workers reread settings every 2 s).
    assert!(w.ok(&["config", "revoke", "default", "token"]).contains("revoked"));
    assert_eq!(w.run(&["config", "revoke", "default", "token"]).status.code(), Some(1));
    assert_eq!(w.run(&["worker", "--secret", "bad name=@/nonexistent"]).status.code(), Some(2));
}
