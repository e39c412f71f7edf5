//! The task host API, `wasmq:task/host@0.1.0` (`wit/wasmq.wit`): what a task can ask of the
//! worker that runs it besides WASI. Components import the WIT interface; core modules import the
//! same functions from module `wasmq` with a pointer/length ABI (docs/host-api.md).
//!
//! A run gets a [`TaskHost`]: where its progress reports go (the worker's heartbeat picks them
//! up) and the settings and secrets its queue may read. Nothing here touches Redis: the worker
//! fetches what a task may read before it runs and writes what it reported afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// What one run may use of the host API.
#[derive(Debug, Clone, Default)]
pub struct TaskHost {
    pub progress: ProgressSlot,
    /// The queue's settings, with the values of the secrets it is granted over them.
    pub config: Arc<HashMap<String, String>>,
    /// The hosts the task may send HTTP requests to, and its own caps (components only; the
    /// worker's ceiling is in [`crate::http::HttpConfig`]).
    pub http: crate::http::HttpGrant,
}

impl TaskHost {
    fn report_progress(&self, fraction: f32, message: &str) {
        let fraction = if fraction.is_nan() { 0.0 } else { fraction.clamp(0.0, 1.0) };
        self.progress.set(Progress { fraction, message: clip(message, MAX_PROGRESS_MESSAGE).to_string() });
    }

    fn lookup(&self, key: &str) -> Option<&str> {
        self.config.get(key).map(String::as_str)
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

fn guest_str<T>(caller: &mut Caller<'_, T>, call: &str, ptr: i32, len: i32, max: usize) -> wasmtime::Result<String> {
    let len = len.clamp(0, max as i32);
    Ok(String::from_utf8_lossy(&guest_bytes(caller, call, ptr, len)?).into_owned())
}

/// Adds the `wasmq` imports to a core linker.
pub(crate) fn add_to_core_linker<T: HasHost + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
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
        let n = value.len().min(out_cap.max(0) as usize);
        if n > 0 {
            let memory = caller.get_export("memory").and_then(|e| e.into_memory()).expect("checked by guest_bytes");
            memory
                .write(&mut caller, out_ptr as u32 as usize, &value.as_bytes()[..n])
                .map_err(|_| wasmtime::Error::msg(format!("wasmq.config: {n} bytes at {out_ptr} are outside the module's memory")))?;
        }
        Ok(value.len() as i64)
    })?;
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
        imports: { "wasmq:task/host.fail": trappable },
    });
}

use bindings::wasmq::task::host::Host as ComponentHost;

/// The store data's host API, for the component bindings.
struct HostData;

impl wasmtime::component::HasData for HostData {
    type Data<'a> = &'a mut TaskHost;
}

/// Adds the `wasmq:task/host` interface to a component linker.
pub(crate) fn add_to_component_linker<T: HasHost + 'static>(linker: &mut wasmtime::component::Linker<T>) -> wasmtime::Result<()> {
    bindings::wasmq::task::host::add_to_linker::<T, HostData>(linker, |s: &mut T| s.host())
}

impl ComponentHost for TaskHost {
    fn progress(&mut self, fraction: f32, message: String) {
        self.report_progress(fraction, &message);
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.lookup(&key).map(str::to_owned)
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
