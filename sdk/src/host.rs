//! The wasmq host API from a task: report progress, read the queue's config and granted
//! secrets, end as a permanent failure. The same functions on every target:
//!
//! - `wasm32-wasip1` (core modules): imports of module `wasmq` (docs/host-api.md has the ABI);
//! - `wasm32-wasip2` (components): the WIT interface `wasmq:task/host@0.1.0` (`wit/`);
//! - any other target (native unit tests of a task): `progress` does nothing, `config` reads the
//!   environment variable `WASMQ_CONFIG_<KEY>` (key uppercased, `-` and `.` as `_`), `fail`
//!   prints the message and exits with status 2.
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

    pub fn fail(message: &str) -> ! {
        eprintln!("{message}");
        std::process::exit(crate::exit_code::INVALID_INPUT)
    }
}
