//! The task host API, `wasmq:task/host@0.1.0` (`wit/wasmq.wit`): what a task can ask of the
//! worker that runs it besides WASI. Components import the WIT interface; core modules import the
//! same functions from module `wasmq` with a pointer/length ABI (docs/host-api.md).
//!
//! A run gets a [`TaskHost`]: where its progress reports go (the worker's heartbeat picks them
//! up), the settings and secrets its queue may read, and where its spawned children go. Nothing
//! here touches Redis: the worker fetches what a task may read before it runs, and writes what it
//! reported afterwards; `spawn` asks the run's [`SpawnBroker`] (the worker's reserves an id in the
//! queue, `wasmq run`'s only prints) and keeps the child in memory until the attempt ends.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::{Caller, Linker};

/// Longest progress message kept, bytes (cut at a character boundary).
pub const MAX_PROGRESS_MESSAGE: usize = 256;
/// Longest config key a task may ask for, bytes.
pub const MAX_CONFIG_KEY: usize = 256;
/// Longest `fail` message kept, bytes.
pub const MAX_FAIL_MESSAGE: usize = 4096;

/// A task's latest progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// From 0.0 to 1.0.
    pub fraction: f32,
    pub message: String,
}

/// Where a running task's progress goes: the latest report, and whether it is new since the
/// worker last took it.
#[derive(Debug, Clone, Default)]
pub struct ProgressSlot(Arc<Mutex<(Option<Progress>, bool)>>);

impl ProgressSlot {
    fn set(&self, p: Progress) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = (Some(p), true);
    }

    /// The latest report if it changed since the last call (the heartbeat writes only news).
    pub fn take_new(&self) -> Option<Progress> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !g.1 {
            return None;
        }
        g.1 = false;
        g.0.clone()
    }

    /// The latest report, new or not.
    pub fn latest(&self) -> Option<Progress> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }
}

/// Options of a spawned task (host API `spawn-options`); unset ones take the defaults of the
/// queue and of the worker that runs the child. Core modules pass them as a JSON object with the
/// same names (docs/host-api.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnOptions {
    pub priority: Option<i64>,
    /// Not ready before this long after the spawner's attempt is committed.
    pub delay_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_attempts: Option<u32>,
}

/// A child a running task spawned: its id is reserved, it becomes a task only if the attempt
/// succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnedTask {
    /// Its number in the spawner's queue, reserved when it was spawned.
    pub seq: u64,
    /// Its id as the task was told it (`QUEUE:N`).
    pub id: String,
    /// The module's SHA-256 (hex).
    pub module: String,
    pub input: Vec<u8>,
    pub options: SpawnOptions,
}

/// A spawn the broker accepted: the child's reserved number and id, and its module's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub seq: u64,
    pub id: String,
    pub module: String,
}

/// What `spawn` asks of the world outside the sandbox: resolve the module (name or hash), check
/// the options, and reserve the child's id. The error is the message the task gets.
pub trait SpawnBroker: Send + Sync + std::fmt::Debug {
    fn reserve<'a>(&'a self, module: &'a str, options: &'a SpawnOptions) -> Pin<Box<dyn Future<Output = Result<Reservation, String>> + Send + 'a>>;
}

/// A broker for runs outside a queue (`wasmq run`): it accepts any module and numbers the children
/// `local:1`, `local:2`, ...; nothing is enqueued, the caller shows what would have been.
#[derive(Debug, Default)]
pub struct DryRunBroker(std::sync::atomic::AtomicU64);

impl SpawnBroker for DryRunBroker {
    fn reserve<'a>(&'a self, module: &'a str, _options: &'a SpawnOptions) -> Pin<Box<dyn Future<Output = Result<Reservation, String>> + Send + 'a>> {
        let seq = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        Box::pin(std::future::ready(Ok(Reservation { seq, id: format!("local:{seq}"), module: module.to_string() })))
    }
}

/// Most children one task may spawn by default (`wasmq worker --max-children`).
pub const DEFAULT_MAX_CHILDREN: usize = 1000;

/// The children one attempt spawned, under its caps: how many, and their input bytes in total.
#[derive(Debug, Clone)]
pub struct Spawns {
    broker: Arc<dyn SpawnBroker>,
    max_children: usize,
    max_input_bytes: u64,
    spawned: Arc<Mutex<(Vec<SpawnedTask>, u64)>>,
}

impl Spawns {
    pub fn new(broker: Arc<dyn SpawnBroker>, max_children: usize, max_input_bytes: u64) -> Self {
        Self { broker, max_children, max_input_bytes, spawned: Arc::default() }
    }

    /// The children spawned so far, in order (the worker takes them when the attempt ends).
    pub fn take(&self) -> Vec<SpawnedTask> {
        std::mem::take(&mut self.spawned.lock().unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Checks the caps, then has the broker reserve the child. A refusal is the task's to handle
    /// (it may go on without the child); nothing is spawned by a refused call.
    async fn spawn(&self, module: String, input: Vec<u8>, options: SpawnOptions) -> Result<String, String> {
        {
            let g = self.spawned.lock().unwrap_or_else(|e| e.into_inner());
            if g.0.len() >= self.max_children {
                return Err(format!("this task has spawned {} children, its limit (--max-children)", self.max_children));
            }
            let total = g.1 + input.len() as u64;
            if total > self.max_input_bytes {
                return Err(format!(
                    "the inputs of this task's children would come to {total} bytes, more than the limit of {} bytes (--max-input-size)",
                    self.max_input_bytes
                ));
            }
        }
        let r = self.broker.reserve(&module, &options).await?;
        let mut g = self.spawned.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again: calls of one task do not overlap today, but the caps must hold if they do.
        if g.0.len() >= self.max_children || g.1 + input.len() as u64 > self.max_input_bytes {
            return Err("this task reached its limit of children".into());
        }
        g.1 += input.len() as u64;
        g.0.push(SpawnedTask { seq: r.seq, id: r.id.clone(), module: r.module, input, options });
        Ok(r.id)
    }
}

/// What one run may use of the host API.
#[derive(Debug, Clone, Default)]
pub struct TaskHost {
    pub progress: ProgressSlot,
    /// The queue's settings, with the values of the secrets it is granted over them.
    pub config: Arc<HashMap<String, String>>,
    /// Where spawned children go; None: `spawn` is refused (a run with nowhere to put them).
    pub spawns: Option<Spawns>,
    /// The hosts the task may send HTTP requests to, and its own caps (components only; the
    /// worker's ceiling is in [`crate::http::HttpConfig`]).
    pub http: crate::http::HttpGrant,
}

/// Longest module name or hash `spawn` takes, bytes.
pub const MAX_SPAWN_MODULE: usize = 256;
/// Longest options text (core modules) `spawn` takes, bytes.
pub const MAX_SPAWN_OPTIONS: usize = 4096;

/// The delay a spawned task's options ask for.
impl SpawnOptions {
    pub fn delay(&self) -> Option<Duration> {
        self.delay_ms.map(Duration::from_millis)
    }
}

impl TaskHost {
    fn report_progress(&self, fraction: f32, message: &str) {
        let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        self.progress.set(Progress { fraction, message: clip(message, MAX_PROGRESS_MESSAGE).to_string() });
    }

    fn lookup(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
    }

    /// `spawn`, whatever the kind of module: a future that does not borrow the store.
    fn spawn_child(&self, module: String, input: Vec<u8>, options: SpawnOptions) -> impl Future<Output = Result<String, String>> + Send + 'static {
        let spawns = self.spawns.clone();
        async move {
            match spawns {
                Some(s) => s.spawn(module, input, options).await,
                None => Err("spawning children is not available in this run".into()),
            }
        }
    }
}

/// Raised by `fail`: ends the task as a permanent failure with the task's message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TaskFailed(pub String);

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Access to the run's host API from a store's data.
pub(crate) trait HasHost {
    fn host(&mut self) -> &mut TaskHost;
}

// ---------------------------------------------------------------------------------------------
// Core modules: imports of module `wasmq`.

/// The guest's bytes at `ptr..ptr+len` of its exported memory, or a trap naming the call.
fn guest_bytes<T>(caller: &mut Caller<'_, T>, call: &str, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg(format!("wasmq.{call}: the module exports no memory named `memory`")))?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| wasmtime::Error::msg(format!("wasmq.{call}: {len} bytes at {start} are outside the module's memory")))
}

/// Writes `min(bytes.len(), cap)` bytes of an answer into the guest's buffer at `ptr`, or traps
/// naming the call (no exported memory, or a buffer outside it).
fn write_out<T>(caller: &mut Caller<'_, T>, call: &str, ptr: i32, cap: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let n = bytes.len().min(cap.max(0) as usize);
    if n == 0 {
        return Ok(());
    }
    let memory = caller
        .get_export("memory")
        .and_then(|e| e.into_memory())
        .ok_or_else(|| wasmtime::Error::msg(format!("wasmq.{call}: the module exports no memory named `memory`")))?;
    memory
        .write(caller, ptr as u32 as usize, &bytes[..n])
        .map_err(|_| wasmtime::Error::msg(format!("wasmq.{call}: {n} bytes at {ptr} are outside the module's memory")))
}

fn guest_str<T>(caller: &mut Caller<'_, T>, call: &str, ptr: i32, len: i32, max: usize) -> wasmtime::Result<String> {
    let len = len.clamp(0, max as i32);
    Ok(String::from_utf8_lossy(&guest_bytes(caller, call, ptr, len)?).into_owned())
}

/// What a core module's `spawn` call asks for, read from its memory: `Err` is a refusal the task
/// is told, a trap (out-of-bounds pointers) the outer error.
#[allow(clippy::type_complexity)]
fn spawn_request<T>(
    caller: &mut Caller<'_, T>,
    (mod_ptr, mod_len): (i32, i32),
    (in_ptr, in_len): (i32, i32),
    (opt_ptr, opt_len): (i32, i32),
) -> wasmtime::Result<Result<(String, Vec<u8>, SpawnOptions), String>> {
    if mod_len < 0 || mod_len as usize > MAX_SPAWN_MODULE || opt_len < 0 || opt_len as usize > MAX_SPAWN_OPTIONS {
        return Ok(Err(format!("a module name is at most {MAX_SPAWN_MODULE} bytes, options at most {MAX_SPAWN_OPTIONS}")));
    }
    let module = String::from_utf8_lossy(&guest_bytes(caller, "spawn", mod_ptr, mod_len)?).into_owned();
    let input = guest_bytes(caller, "spawn", in_ptr, in_len)?;
    let text = guest_bytes(caller, "spawn", opt_ptr, opt_len)?;
    if text.iter().all(u8::is_ascii_whitespace) {
        return Ok(Ok((module, input, SpawnOptions::default())));
    }
    Ok(serde_json::from_slice::<SpawnOptions>(&text).map(|o| (module, input, o)).map_err(|e| format!("bad spawn options: {e}")))
}

/// The functions of module `wasmq` a core module may import.
pub(crate) const CORE_IMPORTS: [&str; 4] = ["progress", "config", "spawn", "fail"];

/// Adds the `wasmq` imports to a core linker.
pub(crate) fn add_to_core_linker<T: HasHost + Send + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap("wasmq", "progress", |mut caller: Caller<'_, T>, fraction: f32, ptr: i32, len: i32| -> wasmtime::Result<()> {
        let message = guest_str(&mut caller, "progress", ptr, len, MAX_PROGRESS_MESSAGE)?;
        caller.data_mut().host().report_progress(fraction, &message);
        Ok(())
    })?;
    linker.func_wrap("wasmq", "config", |mut caller: Caller<'_, T>, key_ptr: i32, key_len: i32, out_ptr: i32, out_cap: i32| -> wasmtime::Result<i64> {
        if key_len < 0 || key_len as usize > MAX_CONFIG_KEY {
            return Err(wasmtime::Error::msg(format!("wasmq.config: a key is at most {MAX_CONFIG_KEY} bytes")));
        }
        let key =
            String::from_utf8(guest_bytes(&mut caller, "config", key_ptr, key_len)?).map_err(|_| wasmtime::Error::msg("wasmq.config: the key is not UTF-8"))?;
        let Some(value) = caller.data_mut().host().lookup(&key).map(str::to_owned) else { return Ok(-1) };
        write_out(&mut caller, "config", out_ptr, out_cap, value.as_bytes())?;
        Ok(value.len() as i64)
    })?;
    // spawn(module, input, options JSON, out) -> i64: the child's id written to `out`, its length
    // returned; a refusal writes its reason and returns minus its length (docs/host-api.md).
    linker.func_wrap_async(
        "wasmq",
        "spawn",
        |mut caller: Caller<'_, T>, (mod_ptr, mod_len, in_ptr, in_len, opt_ptr, opt_len, out_ptr, out_cap): (i32, i32, i32, i32, i32, i32, i32, i32)| {
            Box::new(async move {
                let request = spawn_request(&mut caller, (mod_ptr, mod_len), (in_ptr, in_len), (opt_ptr, opt_len))?;
                let answer = match request {
                    Ok((module, input, options)) => caller.data_mut().host().spawn_child(module, input, options).await,
                    Err(e) => Err(e),
                };
                let (text, sign) = match &answer {
                    Ok(id) => (id.as_str(), 1),
                    Err(why) => (why.as_str(), -1),
                };
                write_out(&mut caller, "spawn", out_ptr, out_cap, text.as_bytes())?;
                Ok(sign * text.len() as i64)
            })
        },
    )?;
    linker.func_wrap("wasmq", "fail", |mut caller: Caller<'_, T>, ptr: i32, len: i32| -> wasmtime::Result<()> {
        let message = guest_str(&mut caller, "fail", ptr, len, MAX_FAIL_MESSAGE)?;
        Err(wasmtime::Error::new(TaskFailed(message)))
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Components: the `wasmq:task/host` interface.

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasmq:task/host-api",
        imports: { "wasmq:task/host.fail": trappable, "wasmq:task/host.spawn": async },
    });
}

use bindings::wasmq::task::host::Host as ComponentHost;

/// The store data's host API, for the component bindings.
struct HostData;

impl wasmtime::component::HasData for HostData {
    type Data<'a> = &'a mut TaskHost;
}

/// Adds the `wasmq:task/host` interface to a component linker.
pub(crate) fn add_to_component_linker<T: HasHost + Send + 'static>(linker: &mut wasmtime::component::Linker<T>) -> wasmtime::Result<()> {
    bindings::wasmq::task::host::add_to_linker::<T, HostData>(linker, |s: &mut T| s.host())
}

impl ComponentHost for TaskHost {
    fn progress(&mut self, fraction: f32, message: String) {
        self.report_progress(fraction, &message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.lookup(&key).map(str::to_owned)
    }

    async fn spawn(&mut self, module: String, input: Vec<u8>, options: bindings::wasmq::task::host::SpawnOptions) -> Result<String, String> {
        let options = SpawnOptions {
            priority: options.priority.map(i64::from),
            delay_ms: options.delay_ms,
            timeout_ms: options.timeout_ms,
            max_attempts: options.max_attempts,
        };
        if module.len() > MAX_SPAWN_MODULE {
            return Err(format!("a module name is at most {MAX_SPAWN_MODULE} bytes"));
        }
        self.spawn_child(module, input, options).await
    }

    fn fail(&mut self, message: String) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(TaskFailed(clip(&message, MAX_FAIL_MESSAGE).to_string())))
    }
}

// ---------------------------------------------------------------------------------------------
// What a component may import.

/// The interfaces workers provide to components: WASI 0.2 (`wasi:cli`, `wasi:io`, `wasi:clocks`,
/// `wasi:random`, `wasi:filesystem`, `wasi:sockets`, `wasi:http`) and the host API. `wasi:http`
/// is always linked (componentize-js imports it by default); its requests are denied unless the
/// task is granted the host (`crate::http`).
const PROVIDED: [&str; 8] =
    ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/", "wasi:http/types@", "wasi:http/outgoing-handler@"];

/// Checks a component's imports before it is compiled (a large one takes seconds): one that no
/// worker provides is refused with its name and what would provide it, instead of a linker error
/// after the compile.
pub(crate) fn check_component_imports(binary: &[u8]) -> Result<(), String> {
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(binary) {
        // Malformed bytes are left to the compiler, whose error is the precise one.
        let Ok(payload) = payload else { return Ok(()) };
        match payload {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            // Imports of nested components and modules are satisfied inside the component.
            wasmparser::Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader.into_iter().flatten() {
                    let name = import.name.name;
                    let provided = PROVIDED.iter().any(|p| name.starts_with(p) && name.contains("@0.2."))
                        || name.strip_prefix("wasmq:task/host@").is_some_and(|v| v.starts_with("0.1."));
                    if !provided {
                        return Err(format!("the component imports `{name}`, which wasmq workers do not provide{}", hint(name)));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// What provides an import, or how to do without it.
fn hint(name: &str) -> &'static str {
    if name.starts_with("wasi:http/") {
        "; workers provide wasi:http at 0.2.x (outgoing-handler and types; a task is a command, not an HTTP handler)"
    } else if name.starts_with("wasmq:task/") {
        "; this worker provides wasmq:task/host@0.1.x (wit/wasmq.wit)"
    } else if name.starts_with("wasi:") {
        "; workers provide wasi:cli, io, clocks, random, filesystem, sockets and http at 0.2.x"
    } else {
        "; a task may import WASI 0.2 and wasmq:task/host only"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wasi:http`'s client interfaces at 0.2.x are provided; its server side, and other
    /// versions, are refused by name before any compile.
    #[test]
    fn wasi_http_client_imports_are_accepted() {
        let component = |import: &str| wat::parse_str(format!("(component (import \"{import}\" (instance)))")).expect("a component");
        for ok in ["wasi:http/types@0.2.12", "wasi:http/outgoing-handler@0.2.0", "wasi:cli/stdin@0.2.3", "wasmq:task/host@0.1.0"] {
            assert_eq!(check_component_imports(&component(ok)), Ok(()), "{ok}");
        }
        for refused in ["wasi:http/incoming-handler@0.2.12", "wasi:http/types@0.3.0", "wasi:keyvalue/store@0.2.0", "acme:thing/x@1.0.0"] {
            let e = check_component_imports(&component(refused)).unwrap_err();
            assert!(e.contains(refused) && e.contains("do not provide"), "{e}");
        }
    }

    #[test]
    fn progress_is_clamped_and_clipped_and_taken_once() {
        let h = TaskHost::default();
        h.report_progress(1.5, &"é".repeat(200));
        let p = h.progress.take_new().expect("a report");
        assert_eq!(p.fraction, 1.0);
        assert!(p.message.len() <= MAX_PROGRESS_MESSAGE && p.message.chars().all(|c| c == 'é'));
        assert_eq!(h.progress.take_new(), None, "taken already");
        assert_eq!(h.progress.latest(), Some(p));
        h.report_progress(f32::NAN, "x");
        assert_eq!(h.progress.take_new().unwrap().fraction, 0.0);
    }
}
