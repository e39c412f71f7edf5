//! The wasmq host API from a task: report progress, read the queue's config and granted
//! secrets, spawn child tasks, end as a permanent failure. The same functions on every target:
//!
//! - `wasm32-wasip1` (core modules): imports of module `wasmq` (docs/host-api.md has the ABI);
//! - `wasm32-wasip2` (components): the WIT interface `wasmq:task/host@0.1.0` (`wit/`);
//! - any other target (native unit tests of a task): `progress` does nothing, `config` reads the
//!   environment variable `WASMQ_CONFIG_<KEY>` (key uppercased, `-` and `.` as `_`), `fail`
//!   prints the message and exits with status 2, `spawn` refuses (there is no queue).
//!
//! A task that uses none of them imports nothing of the host API: it runs on any WASI host.

/// Reports how far the task is: `fraction` from 0.0 to 1.0, and a short message (256 bytes are
/// kept). Cheap: the worker keeps the latest report and writes it to Redis with its next
/// heartbeat, at most once a second.
pub fn progress(fraction: f32, message: &str) {
    imp::progress(fraction, message)
}

/// A setting of the task's queue (`wasmq config set QUEUE KEY VALUE`), or a secret the queue is
/// granted (`wasmq config grant QUEUE NAME`); `None` when there is neither.
pub fn config(key: &str) -> Option<String> {
    imp::config(key)
}

/// Options of a spawned task; `None` takes the defaults of the queue and of the worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Higher runs first, like `wasmq enqueue --priority`.
    pub priority: Option<i32>,
    /// Not ready before this long after this task succeeded, in ms.
    pub delay_ms: Option<u64>,
    /// The child's wall-clock limit per attempt, in ms.
    pub timeout_ms: Option<u64>,
    /// Attempts before the child is dead.
    pub max_attempts: Option<u32>,
}

impl SpawnOptions {
    /// The options as the core-module ABI passes them: a JSON object of the set ones.
    pub fn to_json(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.priority {
            parts.push(format!("\"priority\":{v}"));
        }
        if let Some(v) = self.delay_ms {
            parts.push(format!("\"delay_ms\":{v}"));
        }
        if let Some(v) = self.timeout_ms {
            parts.push(format!("\"timeout_ms\":{v}"));
        }
        if let Some(v) = self.max_attempts {
            parts.push(format!("\"max_attempts\":{v}"));
        }
        format!("{{{}}}", parts.join(","))
    }
}

/// Starts a child task: `module` (a name in the module store or a SHA-256) with `input`, in this
/// task's queue. Returns the child's id (`QUEUE:N`) at once; the child is enqueued only if this
/// attempt succeeds, and this task's dependents (tasks `--after` it, its flow's reducer) wait
/// for it too, getting its output after this task's with `--input-from-after`. `Err` says why the
/// worker refused (past `--max-children`, inputs over `--max-input-size` in total, an unknown
/// module): the task may go on without the child.
pub fn spawn(module: &str, input: &[u8], options: &SpawnOptions) -> Result<String, String> {
    imp::spawn(module, input, options)
}

/// Ends the task at once as a permanent failure (error kind `permanent`): it is never retried.
/// For input the task cannot use, say. The message is the task's error.
pub fn fail(message: &str) -> ! {
    imp::fail(message)
}

#[cfg(all(target_arch = "wasm32", target_os = "wasi", not(target_env = "p2")))]
mod imp {
    // The only unsafe code of the SDK: calls of the host's imports, which take pointers into this
    // module's own memory and lengths, valid for the duration of each call.
    #![allow(unsafe_code)]

    #[link(wasm_import_module = "wasmq")]
    unsafe extern "C" {
        #[link_name = "progress"]
        fn host_progress(fraction: f32, ptr: *const u8, len: usize);
        #[link_name = "config"]
        fn host_config(key_ptr: *const u8, key_len: usize, out_ptr: *mut u8, out_cap: usize) -> i64;
        #[link_name = "fail"]
        fn host_fail(ptr: *const u8, len: usize);
        #[link_name = "spawn"]
        fn host_spawn(
            mod_ptr: *const u8,
            mod_len: usize,
            in_ptr: *const u8,
            in_len: usize,
            opt_ptr: *const u8,
            opt_len: usize,
            out_ptr: *mut u8,
            out_cap: usize,
        ) -> i64;
    }

    pub fn spawn(module: &str, input: &[u8], options: &super::SpawnOptions) -> Result<String, String> {
        let options = options.to_json();
        let mut out = vec![0u8; 512];
        let n = unsafe { host_spawn(module.as_ptr(), module.len(), input.as_ptr(), input.len(), options.as_ptr(), options.len(), out.as_mut_ptr(), out.len()) };
        // The id or the reason, cut to the buffer (an id is far shorter; a reason may be cut).
        out.truncate(n.unsigned_abs().min(out.len() as u64) as usize);
        let text = String::from_utf8_lossy(&out).into_owned();
        if n >= 0 { Ok(text) } else { Err(text) }
    }

    pub fn progress(fraction: f32, message: &str) {
        unsafe { host_progress(fraction, message.as_ptr(), message.len()) }
    }

    pub fn config(key: &str) -> Option<String> {
        let mut buf = vec![0u8; 256];
        loop {
            let n = unsafe { host_config(key.as_ptr(), key.len(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 {
                return None;
            }
            let n = n as usize;
            if n <= buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            // Too small: the host said how long the value is.
            buf = vec![0u8; n];
        }
    }

    pub fn fail(message: &str) -> ! {
        unsafe { host_fail(message.as_ptr(), message.len()) };
        // The host never returns from `fail`; exit status 2 means the same.
        std::process::exit(crate::exit_code::INVALID_INPUT)
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p2"))]
mod imp {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmq:task/host-api",
        // Unstable parts of the WASI packages the `task` world includes, parsed along.
        features: ["clocks-timezone", "network-error-code"],
    });

    use wasmq::task::host;

    pub fn progress(fraction: f32, message: &str) {
        host::progress(fraction, message)
    }

    pub fn config(key: &str) -> Option<String> {
        host::config(key)
    }

    pub fn spawn(module: &str, input: &[u8], o: &super::SpawnOptions) -> Result<String, String> {
        let options = host::SpawnOptions { priority: o.priority, delay_ms: o.delay_ms, timeout_ms: o.timeout_ms, max_attempts: o.max_attempts };
        host::spawn(module, input, options)
    }

    pub fn fail(message: &str) -> ! {
        host::fail(message);
        // The host never returns from `fail`.
        std::process::exit(1)
    }
}

#[cfg(not(all(target_arch = "wasm32", target_os = "wasi")))]
mod imp {
    pub fn progress(_fraction: f32, _message: &str) {}

    pub fn config(key: &str) -> Option<String> {
        let name: String = key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        std::env::var(format!("WASMQ_CONFIG_{name}")).ok()
    }

    pub fn spawn(_module: &str, _input: &[u8], _options: &super::SpawnOptions) -> Result<String, String> {
        Err("spawning needs a wasmq worker (or `wasmq run`)".into())
    }

    pub fn fail(message: &str) -> ! {
        eprintln!("{message}");
        std::process::exit(crate::exit_code::INVALID_INPUT)
    }
}
