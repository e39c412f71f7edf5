//! Throwaway `redis-server` processes: for `wasmq demo`, `wasmq bench` and the test suites.
//!
//! A server runs on a free loopback port in a temporary directory of its own and is stopped when
//! the handle is dropped. Nothing here ever touches a Redis that somebody else started.
//!
//! A server listens on 127.0.0.1 only and requires a password (a random one unless given): any
//! local user or process could otherwise read and change its data, and the demo's and the
//! benchmark's servers run on developers' machines, often next to other people's processes.
//! [`RedisServer::url`] carries the password, so a client given that URL just connects.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// Sends `sig` to a child process (ignoring a process that is already gone).
pub fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "redis-server was not found on PATH; install it (Debian/Ubuntu: `sudo apt-get install redis-server`, \
         macOS: `brew install redis`) or point --redis-url at a running Redis"
    )]
    NotInstalled,
    #[error("could not create a directory for redis-server: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("could not start redis-server: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("redis-server did not become ready within {timeout:?}; its log ends with:\n{log_tail}")]
    NotReady { timeout: Duration, log_tail: String },
}

/// How to start a server. `args` are passed to `redis-server` as `--name value` pairs after the
/// defaults (loopback bind, the port, the directory, the password, no RDB snapshots, AOF off), so
/// they can override any of them.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub args: Vec<(String, String)>,
    /// The password (`requirepass`, and `masterauth` so that a replica logs in to its master);
    /// None for a random one. Servers that talk to each other (a master and its replicas, a
    /// master and its sentinels, the nodes of a cluster) are given the same one.
    pub password: Option<String>,
    /// Start as a Sentinel (`redis-server FILE --sentinel`); `args` go into its config file.
    pub sentinel: bool,
    /// Use this port instead of a free one (for restarting a server on the same port).
    pub port: Option<u16>,
    /// Readiness is checked with a plain-TCP PING unless the server only listens on TLS.
    pub tls_only: bool,
}

impl ServerOptions {
    pub fn arg(mut self, name: &str, value: impl Into<String>) -> Self {
        self.args.push((name.to_string(), value.into()));
        self
    }

    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }
}

/// A random password of 32 hex digits (128 bits from `fastrand`).
pub fn random_password() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// A running `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    password: String,
    dir: tempfile::TempDir,
    options: ServerOptions,
}

impl RedisServer {
    /// Starts a server with default options.
    pub fn start() -> Result<Self, ServerError> {
        Self::start_with(ServerOptions::default())
    }

    /// Starts a server; when no port was given, a free one is picked (retrying if another process
    /// takes it between the probe and the bind).
    pub fn start_with(options: ServerOptions) -> Result<Self, ServerError> {
        let dir = tempfile::Builder::new().prefix("wasmq-redis-").tempdir().map_err(ServerError::TempDir)?;
        let password = options.password.clone().unwrap_or_else(random_password);
        let mut server = Self { child: None, port: 0, password, dir, options };
        let mut last = None;
        for _ in 0..5 {
            server.port = match server.options.port {
                Some(p) => p,
                None => free_port().map_err(ServerError::Spawn)?,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e @ (ServerError::NotInstalled | ServerError::Spawn(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
            if server.options.port.is_some() {
                break;
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// True when a `redis-server` binary is on PATH.
    pub fn installed() -> bool {
        Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    fn spawn(&mut self) -> Result<(), ServerError> {
        let log = self.log_path();
        let _ = std::fs::remove_file(&log);
        let mut defaults: Vec<(String, String)> = vec![
            ("bind".into(), "127.0.0.1".into()),
            ("port".into(), self.port.to_string()),
            ("dir".into(), self.dir.path().display().to_string()),
            ("logfile".into(), log.display().to_string()),
            ("save".into(), String::new()),
            ("appendonly".into(), "no".into()),
            ("requirepass".into(), self.password.clone()),
        ];
        if !self.options.sentinel {
            // A sentinel has no `masterauth`: it is told the master's password with
            // `sentinel auth-pass`, and uses its own `requirepass` with the other sentinels.
            defaults.push(("masterauth".into(), self.password.clone()));
        }
        if self.options.tls_only {
            defaults.retain(|(k, _)| k != "port");
            defaults.push(("port".into(), "0".into()));
        }
        let mut cmd = Command::new("redis-server");
        if self.options.sentinel {
            let conf = self.dir.path().join("sentinel.conf");
            let mut text = String::new();
            for (k, v) in defaults.iter().filter(|(k, _)| k != "save" && k != "appendonly").chain(&self.options.args) {
                text.push_str(&format!("{k} {v}\n"));
            }
            std::fs::write(&conf, text).map_err(ServerError::Spawn)?;
            cmd.arg(&conf).arg("--sentinel");
        } else {
            for (k, v) in defaults.iter().chain(&self.options.args) {
                cmd.arg(format!("--{k}"));
                // Multi-word values (`save 3600 1`) become separate arguments; an empty value must
                // still be passed as one (`--save ""`).
                if v.trim().is_empty() {
                    cmd.arg("");
                } else {
                    cmd.args(v.split_whitespace());
                }
            }
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ServerError::NotInstalled,
            _ => ServerError::Spawn(e),
        })?;
        self.child = Some(child);
        match self.wait_ready(Duration::from_secs(10)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), ServerError> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                break;
            }
            let ready = if self.options.tls_only {
                std::fs::read_to_string(self.log_path()).is_ok_and(|l| l.contains("Ready to accept connections"))
            } else {
                ping(self.addr(), Some(&self.password))
            };
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(ServerError::NotReady { timeout, log_tail: self.log_tail(10) })
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// The server's password (32 hex digits unless one was given).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's working directory (AOF and config files live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The last `n` lines of the server's log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The child's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stops the server at once (SIGKILL): what a crash looks like to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server politely (SIGTERM), letting it flush its AOF, then waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory, with the same options (its AOF, if
    /// any, is loaded again).
    pub fn restart(&mut self) -> Result<(), ServerError> {
        self.stop();
        self.spawn()
    }

    /// Kills the server (SIGKILL, no chance to flush anything) and starts it again on the same port
    /// and directory: a crash and recovery.
    pub fn crash_and_restart(&mut self) -> Result<(), ServerError> {
        self.kill();
        self.spawn()
    }

    /// Starts a stopped server again (after [`stop`](Self::stop) or [`kill`](Self::kill)).
    pub fn start_again(&mut self) -> Result<(), ServerError> {
        if self.child.is_some() {
            return Ok(());
        }
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
/// A free loopback port, never 6379 (a shared Redis may be there), and at most 55535, so that a
/// Cluster node's bus port (port + 10000) exists too.
pub fn free_port() -> std::io::Result<u16> {
    let mut last = 0;
    for _ in 0..100 {
        last = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if last != 6379 && last <= 55535 {
            return Ok(last);
        }
    }
    Err(std::io::Error::other(format!("no free loopback port at or below 55535 (the last offered was {last})")))
}

/// True when a Redis server at `addr` answers PING, after `AUTH password` when one is given (sent
/// inline: a password without spaces). A server still loading its AOF (-LOADING), refusing the
/// password or asking for one is not ready.
pub fn ping(addr: SocketAddr, password: Option<&str>) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut request = String::new();
    if let Some(p) = password {
        request.push_str(&format!("AUTH {p}\r\n"));
    }
    request.push_str("PING\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let expected: &[u8] = if password.is_some() { b"+OK\r\n+PONG\r\n" } else { b"+PONG\r\n" };
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    // Bounded by the read timeout and by the reply's length.
    while reply.len() < expected.len() {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => return false,
        }
        if !expected.starts_with(&reply[..reply.len().min(expected.len())]) {
            return false;
        }
    }
    reply.starts_with(expected)
}
