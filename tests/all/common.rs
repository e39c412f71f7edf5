//! Shared test harness: real `redis-server` processes on free loopback ports (started by the
//! tests, stopped on drop), the real `wasmq` binary, and real wasm modules built from
//! `example-tasks/` or WAT fixtures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmq_testkit::examples::{self, WasmTarget};
pub use wasmq_testkit::redis_server::{RedisServer, Signal};

/// The `wasmq` binary under test.
/// `WASMQ_TEST_BIN` runs the tests against another build (an older one, to see a regression test
/// fail before its fix).
pub fn bin() -> String {
    std::env::var("WASMQ_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wasmq").to_string())
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
}

/// A private artifact cache for this test process (never the user's).
pub fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::Builder::new().prefix("wasmq-test-cache-").tempdir().expect("temp dir")).path()
}

/// The example tasks built for a target, built once per test process.
pub fn example_tasks(target: WasmTarget) -> &'static HashMap<String, PathBuf> {
    static P1: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    static P2: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let cell = match target {
        WasmTarget::P1 => &P1,
        WasmTarget::P2 => &P2,
    };
    cell.get_or_init(|| examples::build(target).unwrap_or_else(|e| panic!("{e}")).into_iter().collect())
}

pub fn example(target: WasmTarget, name: &str) -> PathBuf {
    example_tasks(target).get(name).unwrap_or_else(|| panic!("no example task {name}")).clone()
}

pub fn wat_example() -> PathBuf {
    examples::wat_task().expect("source tree")
}

/// A `wasmq` invocation against a Redis URL.
pub struct Wasmq {
    pub url: String,
    pub prefix: String,
}

impl Wasmq {
    pub fn new(server: &RedisServer) -> Self {
        Self { url: server.url(), prefix: "wasmq".into() }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("WASMQ_REDIS_URL", &self.url)
            .env_remove("WASMQ_TEST_CLOCK_OFFSET_MS")
            .env("WASMQ_PREFIX", &self.prefix)
            .env("WASMQ_CACHE_DIR", cache_dir())
            .env_remove("WASMQ_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs `wasmq ARGS` and returns its output (whatever the exit code).
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run wasmq")
    }

    /// Runs `wasmq ARGS`, asserting success; returns stdout as text.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "wasmq {args:?} failed ({:?}):\n{}", out.status.code(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs `wasmq ARGS`, whatever its exit code; returns stdout as text (for commands whose
    /// code tells a state, like `status`).
    pub fn ok_any(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args).stdout).expect("utf-8 stdout")
    }

    /// Pushes a module file under a name; returns its hash.
    pub fn push(&self, file: &Path, name: &str) -> String {
        let out = self.ok(&["module", "push", file.to_str().unwrap(), "--name", name]);
        out.split_whitespace().nth(1).expect("hash printed").to_string()
    }

    /// Enqueues one task; returns its id.
    pub fn enqueue(&self, module: &str, input: &str, extra: &[&str]) -> String {
        let mut args = vec!["enqueue", module, "--input", input];
        args.extend_from_slice(extra);
        self.ok(&args).trim().to_string()
    }

    /// Starts `wasmq worker ARGS` in the background.
    pub fn spawn_worker(&self, args: &[&str]) -> WorkerProcess {
        self.spawn_worker_at(0, args)
    }

    /// Starts `wasmq worker ARGS` whose scripts see the server's clock moved by `offset_ms`: a
    /// test moves time instead of sleeping.
    pub fn spawn_worker_at(&self, offset_ms: i64, args: &[&str]) -> WorkerProcess {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut cmd = self.cmd();
        if offset_ms != 0 {
            cmd.env("WASMQ_TEST_CLOCK_OFFSET_MS", offset_ms.to_string());
        }
        let child = cmd.arg("worker").args(args).stdout(Stdio::null()).stderr(log.reopen().expect("log")).spawn().expect("spawn worker");
        WorkerProcess { child: Some(child), log }
    }

    /// `wasmq status ID --json` as JSON (None for an unknown task).
    pub fn status(&self, id: &str) -> Option<serde_json::Value> {
        let out = self.run(&["status", id, "--json"]);
        if out.status.code() == Some(3) {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status {id}: {e}: {}", String::from_utf8_lossy(&out.stderr))))
    }
}

/// A worker process, killed on drop.
pub struct WorkerProcess {
    pub child: Option<Child>,
    pub log: tempfile::NamedTempFile,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn signal(&self, sig: Signal) {
        wasmq_testkit::redis_server::signal(self.pid(), sig);
    }

    /// Waits for exit up to `timeout`; returns the exit code (None if it had to be killed).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Stops the worker as an operator would (SIGTERM) and returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(Signal::TERM);
        self.wait(Duration::from_secs(10))
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A redis-server of the test's own, on a free loopback port (stopped when dropped).
pub fn server() -> RedisServer {
    RedisServer::start().expect("start redis-server")
}

/// The queue layer under the default prefix, for tests that call its scripts directly.
pub fn db() -> wasmq::queue::Db {
    wasmq::queue::Db::new("wasmq")
}

/// A task id the test wrote itself.
pub fn id(s: &str) -> wasmq::queue::TaskId {
    wasmq::queue::TaskId::parse(s).unwrap()
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes (bounded: never loops forever).
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A synchronous Redis connection for assertions that look at keys directly.
pub fn redis_conn(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url()).expect("client").get_connection().expect("connect")
}

/// Tasks pending in a queue of the default prefix: the wsjf zset plus the per-priority lists.
pub fn pending_count(c: &mut redis::Connection, queue: &str) -> u64 {
    use redis::Commands;
    let base = qk(queue).base().to_string();
    let mut n: u64 = c.zcard(format!("{base}pending")).unwrap();
    let levels: Vec<String> = c.zrange(format!("{base}levels"), 0, -1).unwrap();
    for l in levels {
        let len: u64 = c.llen(format!("{base}p:{l}")).unwrap();
        n += len;
    }
    n
}

/// The keys of queue `q` under the default prefix, from the library's key schema.
pub fn qk(q: &str) -> wasmq::queue::keys::QueueKeys {
    wasmq::queue::Keys::default().queue(&wasmq::queue::QueueName::new(q).expect("queue name"))
}

/// The key of a task given its queue and its seq (or an id whose last part is the seq).
pub fn task_key(q: &str, seq: impl std::fmt::Display) -> String {
    let seq = seq.to_string();
    qk(q).task(seq.rsplit(':').next().unwrap().parse().expect("a task seq"))
}

/// A task's hash (`QUEUE:N`) under the default prefix, its values as text (lossy).
pub fn task_hash(server: &RedisServer, id: &str) -> std::collections::HashMap<String, String> {
    use redis::Commands;
    let id = wasmq::queue::TaskId::parse(id).expect("a task id");
    let raw: std::collections::HashMap<String, Vec<u8>> = redis_conn(server).hgetall(wasmq::queue::Keys::default().task(&id)).unwrap();
    raw.into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect()
}

/// A current-thread tokio runtime, for tests that call the library's async API directly.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}
