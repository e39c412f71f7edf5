//! The sandbox under attack (an adversarial mix of tasks run by one worker), least-privilege ACL
//! users, and TLS with client certificates, against real `redis-server` processes.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::common::{RedisServer, Wasmq};
use redis::Commands;
use wasmq_testkit::examples::{self, WasmTarget};
use wasmq_testkit::redis_server::ServerOptions;

pub(crate) fn adversary(target: WasmTarget) -> std::path::PathBuf {
    static BUILT: std::sync::Mutex<Option<HashMap<&'static str, std::path::PathBuf>>> = std::sync::Mutex::new(None);
    let mut g = BUILT.lock().unwrap();
    let map = g.get_or_insert_with(HashMap::new);
    let key = target.triple();
    map.entry(key).or_insert_with(|| examples::build_packages(&["adversary"], target).unwrap_or_else(|e| panic!("{e}")).remove(0).1).clone()
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    // Absent once the process has exited (a zombie has no memory).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap());
    kb.unwrap_or(0) * 1024
}

#[test]
fn a_hundred_bad_tasks_among_a_thousand_good_ones() {
    let s = RedisServer::start().unwrap();
    let w = Wasmq::new(&s);
    w.push(&adversary(WasmTarget::P1), "adv1");
    w.push(&adversary(WasmTarget::P2), "adv2");
    w.push(&crate::common::fixture("loop.wat"), "loop");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = listener.local_addr().unwrap().to_string();
    // (input, expected error kind), ten of each, five as a preview-1 module and five as a
    // preview-2 component.
    let bad: Vec<(String, &str)> = vec![
        ("spin".into(), "timeout"),
        ("sleep".into(), "timeout"),
        ("alloc".into(), "memory_limit"),
        ("recurse".into(), "stack_overflow"),
        ("flood".into(), "output_limit"),
        ("exit 7".into(), "exit_code"),
        ("panic".into(), "trap"),
        ("file /etc/passwd".into(), "exit_code"),
        ("env".into(), "exit_code"),
        (format!("connect {open_port}"), "exit_code"),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (good_ids, bad_ids) = rt.block_on(async {
        let client = wasmq::client::Client::connect(wasmq::conn::RedisOptions::new(s.url()), "wasmq").await.unwrap();
        let opts = wasmq::client::EnqueueOptions::default();
        let mut good = Vec::new();
        let mut bad_ids = Vec::new();
        for i in 0..1100usize {
            if i % 11 == 5 {
                let (input, kind) = &bad[bad_ids.len() % bad.len()];
                // Each behaviour alternates between the two kinds from one round to the next.
                let module = if (bad_ids.len() / bad.len()).is_multiple_of(2) { "adv1" } else { "adv2" };
                let id = client.enqueue(module, input.as_bytes(), &opts).await.unwrap().id;
                bad_ids.push((id.to_string(), *kind, input.clone(), module));
            } else {
                let module = if i % 2 == 0 { "adv1" } else { "adv2" };
                let id = client.enqueue(module, format!("ok good-{i}").as_bytes(), &opts).await.unwrap().id;
                good.push((id.to_string(), format!("good-{i}")));
            }
        }
        (good, bad_ids)
    });
    assert_eq!((good_ids.len(), bad_ids.len()), (1000, 100));
    let mut worker =
        w.spawn_worker(&["--exit-when-idle", "--concurrency", "2", "--max-attempts", "1", "--timeout", "1s", "--memory", "64MiB", "--stdout-limit", "1MiB"]);
    let pid = worker.pid();
    let mut peak = 0;
    let started = std::time::Instant::now();
    while worker.is_running() && started.elapsed() < Duration::from_secs(300) {
        peak = peak.max(peak_rss(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(worker.wait(Duration::from_secs(5)), Some(0), "the worker did not finish cleanly:\n{}", worker.log());
    let mut c = crate::common::redis_conn(&s);
    let field = |c: &mut redis::Connection, id: &str, f: &str| -> Option<String> {
        let seq = id.rsplit(':').next().unwrap();
        c.hget(crate::common::task_key("default", seq), f).unwrap()
    };
    for (id, expect) in &good_ids {
        assert_eq!(field(&mut c, id, "state").as_deref(), Some("succeeded"), "good task {id}");
        assert_eq!(field(&mut c, id, "output").as_deref(), Some(expect.as_str()), "good task {id}");
    }
    let mut kinds_seen = std::collections::HashSet::new();
    for (id, kind, input, module) in &bad_ids {
        kinds_seen.insert((input.split(' ').next().unwrap().to_string(), *module));
        assert_eq!(field(&mut c, id, "state").as_deref(), Some("dead"), "bad task {id} ({input}, {module})");
        assert_eq!(field(&mut c, id, "error_kind").as_deref(), Some(*kind), "bad task {id} ({input}, {module}): {:?}", field(&mut c, id, "error"));
        // A forbidden access must be refused by the sandbox (the task says "denied" and exits 13;
        // Rust's preview-2 libc turns every non-zero exit status into 1), not merely fail.
        if ["file", "env", "connect"].iter().any(|c| input.starts_with(c)) {
            let log = field(&mut c, id, "log").unwrap_or_default();
            assert!(log.contains("denied"), "{id} ({input}, {module}) was not denied: {log}");
            let expected = if *module == "adv1" { "13" } else { "1" };
            assert_eq!(field(&mut c, id, "exit_code").as_deref(), Some(expected), "{id} ({input}, {module})");
        }
        if input == "exit 7" {
            let expected = if *module == "adv1" { "7" } else { "1" };
            assert_eq!(field(&mut c, id, "exit_code").as_deref(), Some(expected), "{id} ({input}, {module})");
        }
    }
    assert_eq!(kinds_seen.len(), 20, "every bad behaviour ran as a module and as a component");
    eprintln!(
        "adversarial suite: 1000 good + 100 bad tasks in {:.1}s; worker (one process, pid {pid}) peak RSS {:.1} MiB",
        started.elapsed().as_secs_f64(),
        peak as f64 / (1 << 20) as f64
    );
    assert!(peak < 600 << 20, "worker peak RSS {} MiB", peak >> 20);
    drop(listener);
}

fn acl_from_docs(role: &str) -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md")).unwrap();
    let marker = format!("<!-- acl:{role} -->");
    let after = doc.split_once(&marker).unwrap_or_else(|| panic!("{marker} missing from docs/security.md")).1;
    after.split("```").nth(1).unwrap().trim().to_string()
}

#[test]
fn the_documented_least_privilege_acl_users_can_do_their_jobs_and_no_more() {
    let s = RedisServer::start().unwrap();
    let mut admin = crate::common::redis_conn(&s);
    for role in ["publisher", "producer", "worker"] {
        let acl = acl_from_docs(role);
        let args: Vec<&str> = acl.split_whitespace().skip(1).collect();
        let _: () = redis::cmd("ACL").arg(&args).query(&mut admin).unwrap_or_else(|e| panic!("{role}: {e}"));
    }
    // Nobody may use the default user from here on.
    let _: () = redis::cmd("ACL").arg("SETUSER").arg("default").arg("off").query(&mut admin).unwrap();
    let as_user = |user: &str, password: &str| Wasmq { url: format!("redis://{user}:{password}@127.0.0.1:{}", s.port()), prefix: "wasmq".into() };
    let publisher = as_user("wasmq-publisher", "publisher-secret");
    let producer = as_user("wasmq-producer", "producer-secret");
    let worker_user = as_user("wasmq-worker", "worker-secret");

    publisher.push(&crate::common::fixture("echo.wat"), "echo");
    let id = producer.enqueue("echo", "least privilege", &[]);
    // Flow control and groups use commands of their own in the scripts (the rate window, the
    // round of groups).
    producer.ok(&["queue", "limit", "default", "--rate", "1000/s", "--group-rate", "100/s"]);
    let grouped = producer.enqueue("echo", "grouped", &["--group", "tenant-1"]);
    let mut worker = worker_user.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    let out = producer.run(&["result", &id, "--wait", "--timeout", "10s"]);
    if !out.status.success() {
        let log: redis::Value = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
        panic!("{}\nACL LOG: {log:?}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(out.stdout, b"least privilege");
    assert_eq!(producer.run(&["result", &grouped]).stdout, b"grouped");
    // Nothing the worker does was refused, but the optional `CONFIG GET` (documented): a refused
    // command the worker can live without (its module list at start) would otherwise go unseen.
    let log: Vec<Vec<redis::Value>> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    let refused: Vec<String> = log
        .iter()
        .filter_map(|entry| {
            let text: Vec<String> = entry.iter().map(|v| redis::from_redis_value::<String>(v.clone()).unwrap_or_default()).collect();
            let get = |k: &str| text.iter().position(|t| t == k).and_then(|i| text.get(i + 1)).cloned().unwrap_or_default();
            (get("username") == "wasmq-worker" && get("object") != "config|get").then(|| get("object"))
        })
        .collect();
    assert!(refused.is_empty(), "the worker was refused {refused:?}");
    assert!(producer.ok(&["queue", "stats"]).contains("default"));
    producer.enqueue("echo", "drained", &["--group", "tenant-2"]);
    assert!(producer.ok(&["queue", "drain", "default"]).contains("drained 1"));

    // A producer cannot push modules; a worker cannot change them.
    let out = producer.run(&["module", "push", crate::common::fixture("counter.wat").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).to_uppercase().contains("NOPERM"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut as_worker = redis::Client::open(worker_user.url.as_str()).unwrap().get_connection().unwrap();
    let r: redis::RedisResult<()> = as_worker.set("wasmq:module:deadbeef", "x");
    assert!(r.is_err(), "a worker wrote a module key");
    // Wrong password: a clear error, non-zero exit.
    let out = as_user("wasmq-producer", "wrong").run(&["queue", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WRONGPASS") || err.to_lowercase().contains("auth"), "{err}");
    assert!(!err.contains("wrong@"), "the password was printed: {err}");
}

struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by
    /// the CA; plus a second, unrelated CA.
    fn generate() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let issuer = ca("wasmq test CA");
        write("ca.crt", issuer.pem());
        write("other-ca.crt", ca("unrelated CA").pem());
        for (name, sans) in [("server", vec!["localhost".to_string(), "127.0.0.1".to_string()]), ("client", vec!["wasmq-client".to_string()])] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(sans).unwrap().signed_by(&key, &issuer).unwrap();
            write(&format!("{name}.crt"), cert.pem());
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Self { dir }
    }
}

#[test]
fn tls_with_client_certificates() {
    let certs = Certs::generate();
    let port = wasmq_testkit::redis_server::free_port().unwrap();
    let server = RedisServer::start_with(ServerOptions {
        tls_only: true,
        ..ServerOptions::default()
            .arg("tls-port", port.to_string())
            .arg("tls-cert-file", certs.path("server.crt"))
            .arg("tls-key-file", certs.path("server.key"))
            .arg("tls-ca-cert-file", certs.path("ca.crt"))
            .arg("tls-auth-clients", "yes")
    })
    .unwrap_or_else(|e| panic!("TLS redis-server: {e}"));
    let url = format!("rediss://:{}@127.0.0.1:{port}", server.password());
    let tls = |extra: &[&str], args: &[&str]| {
        let w = Wasmq { url: url.clone(), prefix: "wasmq".into() };
        let mut cmd = w.cmd();
        cmd.args(extra).args(args);
        cmd.output().unwrap()
    };
    let ca = certs.path("ca.crt");
    let cert = certs.path("client.crt");
    let key = certs.path("client.key");
    let good: Vec<&str> = vec!["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let echo = crate::common::fixture("echo.wat");
    let out = tls(&good, &["module", "push", echo.to_str().unwrap(), "--name", "echo"]);
    assert!(out.status.success(), "push over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let out = tls(&good, &["enqueue", "echo", "--input", "over tls"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = tls(&good, &["worker", "--exit-when-idle"]);
    assert!(out.status.success(), "worker over TLS: {}", String::from_utf8_lossy(&out.stderr));
    let out = tls(&good, &["result", &id]);
    assert_eq!(out.stdout, b"over tls", "{}", String::from_utf8_lossy(&out.stderr));

    // No client certificate: refused by the server.
    let out = tls(&["--tls-ca", &ca], &["queue", "stats"]);
    assert_eq!(out.status.code(), Some(1), "connected without a client certificate");
    // A CA that did not sign the server's certificate: refused by the client.
    let other = certs.path("other-ca.crt");
    let out = tls(&["--tls-ca", &other, "--tls-cert", &cert, "--tls-key", &key], &["queue", "stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"), "{}", String::from_utf8_lossy(&out.stderr));
    // TLS options on a plain URL are a usage mistake, said clearly.
    let plain = Wasmq { url: format!("redis://127.0.0.1:{port}"), prefix: "wasmq".into() };
    let out = plain.cmd().args(["--tls-ca", &ca, "queue", "stats"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("rediss://"));
}

#[test]
fn bad_data_written_into_redis_by_hand_is_refused_and_touches_nothing_else() {
    let s = RedisServer::start().unwrap();
    let w = Wasmq::new(&s);
    let sha = w.push(&crate::common::fixture("echo.wat"), "echo");
    let mut c = crate::common::redis_conn(&s);
    // Junk next to real data: a non-UTF-8 module name, a non-UTF-8 queue name, a queue name with
    // glob characters.
    let _: () = c.hset("wasmq:modules", b"\xff\xfe".as_slice(), sha.as_str()).unwrap();
    let _: () = c.sadd("wasmq:queues", b"\xc3\x28".as_slice()).unwrap();
    let _: () = c.sadd("wasmq:queues", "q*[x]").unwrap();
    let _: () = c.zadd("wasmq:module-index", b"\xff not a hash".as_slice(), 1).unwrap();
    // Schedules: one good, one with a non-UTF-8 name, one whose definition is junk.
    // (The good one is yearly and made due now, so that it fires once and the worker goes idle.)
    w.ok(&["schedule", "add", "tick", "echo", "--cron", "0 0 1 1 *", "--input", "tock"]);
    let _: () = c.zadd(crate::common::qk("default").schedule_due(), "tick", 1).unwrap();
    let _: () = c.zadd(crate::common::qk("default").schedule_due(), b"\xc3\x28".as_slice(), 1).unwrap();
    let _: () = c.hset(crate::common::qk("default").schedules(), b"\xc3\x28".as_slice(), b"\xff{".as_slice()).unwrap();
    let _: () = c.zadd(crate::common::qk("default").schedule_due(), "junk", 1).unwrap();
    let _: () = c.hset(crate::common::qk("default").schedules(), "junk", "{not json").unwrap();
    // Task hashes with missing, wrongly typed, oversized and negative fields.
    let good = w.enqueue("echo", "fine", &[]);
    let mut bad = Vec::new();
    for (field, value) in [
        ("module", b"not-a-hash".to_vec()),
        ("module", vec![0xff; 64]),
        ("timeout_ms", b"-5".to_vec()),
        ("memory", b"1e12".to_vec()),
        ("max_attempts", b"many".to_vec()),
        ("deterministic", vec![0xc3, 0x28]),
    ] {
        let id = w.enqueue("echo", "x", &[]);
        let key = crate::common::task_key("default", id.rsplit(':').next().unwrap());
        let _: () = c.hset(&key, field, value.as_slice()).unwrap();
        bad.push((id, field));
    }
    // A junk priority only matters to the queue, which reads it as 0: the task runs.
    let junk_priority = w.enqueue("echo", "prio", &[]);
    let _: () = c.hset(crate::common::task_key("default", junk_priority.rsplit(':').next().unwrap()), "priority", "99999999999999999999").unwrap();
    // A counter overwritten with junk counts as zero (scripts never fail half-way on bad data).
    let junk_counter = w.enqueue("echo", "counted", &[]);
    let _: () = c.hset(crate::common::task_key("default", junk_counter.rsplit(':').next().unwrap()), "attempts", b"\x00\x01".as_slice()).unwrap();
    // A task key overwritten with another type is treated as gone.
    let wrong_type = w.enqueue("echo", "x", &[]);
    let _: () = c.set(crate::common::task_key("default", wrong_type.rsplit(':').next().unwrap()), "not a hash").unwrap();
    let missing = w.enqueue("echo", "x", &[]);
    let _: () = c.hdel(crate::common::task_key("default", missing.rsplit(':').next().unwrap()), "module").unwrap();
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    assert_eq!(w.status(&good).unwrap()["state"], "succeeded");
    // The junk schedules are dropped from the due set by the periodic loop (a worker that went
    // idle before its loop came round leaves the rest to the next one); the good one stays.
    let due = |c: &mut redis::Connection| -> Vec<Vec<u8>> { c.zrange(crate::common::qk("default").schedule_due(), 0, -1).unwrap() };
    if due(&mut c) != vec![b"tick".to_vec()] {
        let mut again = w.spawn_worker(&[]);
        // Cleared means: the junk is gone, the good schedule has fired (its next time is a year
        // away) and the task it fired has run, so stopping this worker strands nothing.
        let settled = |c: &mut redis::Connection| {
            let next: Option<f64> = c.zscore(crate::common::qk("default").schedule_due(), "tick").unwrap();
            let active: u64 = c.zcard(crate::common::qk("default").active()).unwrap();
            due(c) == vec![b"tick".to_vec()] && next.is_some_and(|t| t > 1.0) && crate::common::pending_count(c, "default") == 0 && active == 0
        };
        let cleared = crate::common::eventually(Duration::from_secs(20), || settled(&mut c).then_some(()));
        assert_eq!(again.stop(), Some(0));
        assert!(cleared.is_some(), "junk schedules left behind: {:?}", due(&mut c));
    }
    let last: u64 = c.get(crate::common::qk("default").seq()).unwrap();
    let ticks = (1..=last)
        .filter(|n| c.hget::<_, _, Option<String>>(crate::common::task_key("default", n), "schedule").ok().flatten().as_deref() == Some("tick"))
        .count();
    assert_eq!(ticks, 1, "the good schedule did not fire once\n{}", worker.log());
    let list = w.ok(&["schedule", "list"]);
    assert!(list.contains("tick"), "{list}");
    w.ok(&["schedule", "rm", "tick"]);
    for (id, field) in &bad {
        let st = w.status(id).unwrap_or_else(|| panic!("{id} vanished"));
        assert_eq!(st["state"], "dead", "{id} with a bad {field}: {st}");
        assert_eq!(st["error_kind"], "invalid_task", "{id}: {st}");
        assert!(st["error"].as_str().unwrap().contains(field), "{id}: the error does not name {field}: {st}");
        assert_eq!(st["attempts"], 1);
    }
    let st = w.status(&missing).unwrap();
    assert!(st["error"].as_str().unwrap().contains("module"), "{st}");
    assert_eq!(w.status(&junk_priority).unwrap()["state"], "succeeded");
    let st = w.status(&junk_counter).unwrap();
    assert_eq!((st["state"].as_str(), st["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{st}");
    let junk: String = c.get(crate::common::task_key("default", wrong_type.rsplit(':').next().unwrap())).unwrap();
    assert_eq!(junk, "not a hash", "a key of another type was touched");
    let (pending, active): (u64, u64) = (crate::common::pending_count(&mut c, "default"), c.zcard(crate::common::qk("default").active()).unwrap());
    assert_eq!((pending, active), (0, 0));
    // Listings still work, skipping or showing what they cannot read.
    let list = w.ok(&["module", "list"]);
    assert!(list.contains("echo") && list.contains('\u{fffd}'), "{list}");
    let stats = w.ok(&["queue", "stats"]);
    assert!(stats.contains("default"), "{stats}");
    // Ids with glob characters or junk are usage errors, never key patterns.
    for bad_id in ["default:*", "*:1", "def[a]ult:1", "q:1 2"] {
        assert_eq!(w.run(&["status", bad_id]).status.code(), Some(2), "{bad_id}");
    }
}

#[test]
fn a_task_gets_its_name_as_only_argument_and_odd_exit_statuses_fail_cleanly() {
    for target in [WasmTarget::P1, WasmTarget::P2] {
        let file = adversary(target);
        let run = |input: &str| {
            std::process::Command::new(crate::common::bin())
                .arg("run")
                .arg(&file)
                .args(["--input", input])
                .env("WASMQ_CACHE_DIR", crate::common::cache_dir())
                .output()
                .unwrap()
        };
        let out = run("args");
        assert!(out.status.success(), "{target:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), r#"["adversary"]"#, "{target:?}");
        // 255 is out of WASI's range for preview 1 and becomes 1 in a component's libc: either
        // way a failure with kind exit_code and a one-line reason, never a crash.
        let out = run("exit 255");
        assert_eq!(out.status.code(), Some(5), "{target:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("task failed: exit_code"), "{target:?}: {err}");
    }
}

/// Control bytes a terminal acts on, as they would reach it: ESC, BEL, CR, backspace, DEL, and
/// the UTF-8 of a C1 CSI (U+009B) and of a right-to-left override (U+202E).
fn raw_controls(out: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(out);
    let mut found: Vec<String> = out.iter().filter(|b| matches!(b, 0x1b | 0x07 | 0x0d | 0x08 | 0x7f)).map(|b| format!("0x{b:02x}")).collect();
    found.extend(text.chars().filter(|c| matches!(c, '\u{9b}' | '\u{202e}')).map(|c| format!("U+{:04X}", c as u32)));
    found
}

#[test]
fn task_text_reaches_the_human_views_escaped() {
    let s = RedisServer::start().unwrap();
    let w = Wasmq::new(&s);
    w.push(&crate::common::fixture("escapes.wat"), "escapes");
    let id = w.enqueue("escapes", "", &["--max-attempts", "1"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(60)), Some(0), "{}", worker.log());
    assert!(raw_controls(worker.log().as_bytes()).is_empty(), "worker log: {:?}", worker.log());

    let out = w.run(&["status", &id]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(raw_controls(&out.stdout), Vec::<String>::new(), "status printed raw controls:\n{}", String::from_utf8_lossy(&out.stdout));
    let status = String::from_utf8(out.stdout).unwrap();
    for shown in [r"\x1b[2J", r"\x1b]0;pwned\x07", r"working\rdone", r"\u{202e}txt.exe\x08\x7f\u{9b}2J\rstate"] {
        assert!(status.contains(shown), "status does not show {shown}:\n{status}");
    }
    // The forged line stays inside the indented log; the only `state` line is the real one.
    let states: Vec<&str> = status.lines().filter(|l| l.starts_with("state")).collect();
    assert_eq!(states, ["state       dead"], "{status}");

    let out = w.run(&["dead", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(raw_controls(&out.stdout), Vec::<String>::new(), "dead list printed raw controls:\n{}", String::from_utf8_lossy(&out.stdout));
    let dead = String::from_utf8(out.stdout).unwrap();
    assert_eq!(dead.lines().count(), 2, "a header and one task:\n{dead}");
    assert!(dead.contains(r"\x1b[31mboom\x1b[0m \u{202e}txt.exe"), "{dead}");

    // `result`'s error line is escaped too; its stdout stays the task's bytes (none: it failed).
    let out = w.run(&["result", &id]);
    assert_eq!(out.status.code(), Some(5));
    assert!(out.stdout.is_empty());
    assert_eq!(raw_controls(&out.stderr), Vec::<String>::new(), "result printed raw controls: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(r"\x1b[31mboom"), "{}", String::from_utf8_lossy(&out.stderr));
    // JSON keeps the text as it is (JSON-escaped).
    let json = w.status(&id).unwrap();
    assert!(json["log"].as_str().unwrap().starts_with("\u{1b}[2J\u{1b}[Hscreen cleared\n"), "{json}");
}

#[test]
fn throwaway_servers_listen_on_loopback_only_and_require_a_password() {
    use std::io::{Read, Write};
    let s = RedisServer::start().unwrap();
    let ask = |auth: Option<&str>, command: &str| {
        let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sent = String::new();
        if let Some(p) = auth {
            sent.push_str(&format!("AUTH {p}\r\n"));
        }
        sent.push_str(command);
        sent.push_str("\r\n");
        c.write_all(sent.as_bytes()).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        let _ = c.read_to_string(&mut reply);
        reply
    };
    let reply = ask(None, "PING");
    assert!(reply.starts_with("-NOAUTH"), "an unauthenticated client was served: {reply:?}");
    let url = s.url();
    let password = url.strip_prefix("redis://:").and_then(|r| r.split_once('@')).map(|(p, _)| p).unwrap_or_else(|| panic!("no password in {url}"));
    assert!(password.len() == 32 && password.chars().all(|c| c.is_ascii_hexdigit()), "{password:?}");
    assert_eq!(ask(Some(password), "CONFIG GET bind"), "+OK\r\n*2\r\n$4\r\nbind\r\n$9\r\n127.0.0.1\r\n");
    // Each server has a password of its own, and its URL works for clients.
    let other = RedisServer::start().unwrap();
    assert_ne!(other.url().split('@').next(), url.split('@').next());
    let pong: String = redis::cmd("PING").query(&mut crate::common::redis_conn(&s)).unwrap();
    assert_eq!(pong, "PONG");
}

/// Abuse of the host API: a flood of progress reports costs Redis nothing more than the
/// heartbeats it would make anyway; a secret the queue was not granted reads as absent though the
/// worker holds it; an import of a host function that does not exist is refused at load, named.
#[test]
fn host_api_abuse_progress_floods_ungranted_secrets_unknown_imports() {
    let s = RedisServer::start().unwrap();
    let w = Wasmq::new(&s);
    w.push(&adversary(WasmTarget::P1), "adv1");
    w.push(&adversary(WasmTarget::P2), "adv2");
    // Refused when pushed: the store keeps only modules that load.
    let out = w.run(&["module", "push", crate::common::fixture("unknown_import.wat").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("imports `wasmq.teleport`, which is not in the host API"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "hunter2-secret").unwrap();
    w.ok(&["config", "grant", "granted", "token"]);
    let floods = [w.enqueue("adv1", "progress 2000000", &[]), w.enqueue("adv2", "progress 2000000", &[])];
    let ungranted = [w.enqueue("adv1", "secret token", &["--max-attempts", "1"]), w.enqueue("adv2", "secret token", &["--max-attempts", "1"])];
    let granted = w.enqueue("adv1", "secret token", &["--queue", "granted"]);
    let mut c = crate::common::redis_conn(&s);
    let calls = |c: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(c).unwrap();
        info.lines().filter_map(|l| l.split_once("calls=")).map(|(_, r)| r.split(',').next().unwrap().parse::<u64>().unwrap()).sum()
    };
    let before = calls(&mut c);
    let secret_arg = format!("token=@{}", secret.display());
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--queue", "default", "--queue", "granted", "--secret", &secret_arg, "--timeout", "60s"]);
    assert_eq!(worker.wait(Duration::from_secs(120)), Some(0), "{}", worker.log());
    let spent = calls(&mut c) - before;
    for f in &floods {
        assert_eq!(w.ok(&["result", f]), "reported 2000000 times");
    }
    // Four million reports; Redis saw the worker's usual commands (a few per task and per second).
    assert!(spent < 2000, "the progress flood cost Redis {spent} commands");
    for id in &ungranted {
        let st = w.status(id).unwrap();
        assert_eq!(st["state"], "dead", "{st}");
        assert!(st["log"].as_str().unwrap().contains("secret denied: token is not granted"), "{st}");
    }
    assert_eq!(w.ok(&["result", &granted]), "read the secret: hunter2-secret");
    // Locally, the same refusal at load.
    let out = w.run(&["run", crate::common::fixture("unknown_import.wat").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`wasmq.teleport`"), "{}", String::from_utf8_lossy(&out.stderr));
}
