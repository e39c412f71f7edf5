//! The sandbox on WAT fixtures: every way a task can misbehave ends in the right failure kind,
//! and what a task must not see, it does not see.

use std::time::{Duration, Instant};

use wasmq::sandbox::{CancelToken, FailureKind, Limits, Outcome, Sandbox, SandboxConfig, prepare};
use wasmq::store::{ModuleKind, sha256_hex};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxConfig { max_concurrency: 4, cache_dir: Some(crate::common::cache_dir().to_path_buf()), ..Default::default() }).unwrap()
}

async fn run_fixture(sb: &Sandbox, name: &str, input: &[u8], limits: Limits) -> Outcome {
    let bytes = std::fs::read(crate::common::fixture(name)).unwrap();
    let (binary, _) = prepare(&bytes).unwrap();
    let module = sb.load(&sha256_hex(&binary), &binary).unwrap();
    sb.run(&module, name, input.to_vec(), &limits, &CancelToken::new()).await
}

fn kind(o: &Outcome) -> Option<FailureKind> {
    o.failure().map(|f| f.kind)
}

#[tokio::test]
async fn echo_succeeds_with_its_output() {
    let o = run_fixture(&sandbox(), "echo.wat", b"hello sandbox", Limits::default()).await;
    assert!(o.is_success(), "{:?}", o.result);
    assert_eq!(o.output, b"hello sandbox");
    assert_eq!(o.exit_code, Some(0));
    assert!(o.fuel_used.unwrap() > 0);
}

#[tokio::test]
async fn a_trap_is_a_trap() {
    let o = run_fixture(&sandbox(), "trap.wat", b"", Limits::default()).await;
    assert_eq!(kind(&o), Some(FailureKind::Trap));
    assert!(o.failure().unwrap().message.contains("unreachable"), "{:?}", o.result);
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_timeout() {
    let limits = Limits { timeout: Duration::from_millis(200), ..Limits::default() };
    let o = run_fixture(&sandbox(), "loop.wat", b"", limits).await;
    assert_eq!(kind(&o), Some(FailureKind::Timeout), "{:?}", o.result);
    assert!(o.duration >= Duration::from_millis(200), "stopped before its timeout: {:?}", o.duration);
}

#[tokio::test]
async fn sleeping_past_the_timeout_is_a_timeout() {
    // sleep.wat sleeps 10 s in poll_oneoff (a host call, where no epoch check runs).
    let limits = Limits { timeout: Duration::from_millis(300), ..Limits::default() };
    let started = Instant::now();
    let o = run_fixture(&sandbox(), "sleep.wat", b"", limits).await;
    assert_eq!(kind(&o), Some(FailureKind::Timeout), "{:?}", o.result);
    assert!(started.elapsed() < Duration::from_secs(5), "the sleep was not interrupted");
}

#[tokio::test]
async fn memory_growth_is_stopped_by_the_cap() {
    let limits = Limits { memory: 16 << 20, ..Limits::default() };
    let o = run_fixture(&sandbox(), "grow.wat", b"", limits).await;
    assert_eq!(kind(&o), Some(FailureKind::MemoryLimit), "{:?}", o.result);
    assert!(o.failure().unwrap().message.contains("the growth was refused"), "{:?}", o.result);
}

/// A refused growth is `memory.grow` returning -1, not a trap: a guest that handles it (C's
/// malloc returning NULL) carries on and can succeed.
#[tokio::test]
async fn a_refused_memory_growth_returns_minus_one_to_the_guest() {
    let limits = Limits { memory: 16 << 20, ..Limits::default() };
    let o = run_fixture(&sandbox(), "grow_handled.wat", b"", limits).await;
    assert!(o.is_success(), "{:?}", o.result);
    // 64 KiB to start with, then 1 MiB steps up to the 16 MiB cap: 15 of them.
    assert_eq!(o.output, [15]);
}

#[tokio::test]
async fn a_stdout_flood_is_stopped_by_the_cap() {
    let limits = Limits { stdout: 1 << 20, ..Limits::default() };
    let o = run_fixture(&sandbox(), "flood.wat", b"", limits).await;
    assert_eq!(kind(&o), Some(FailureKind::OutputLimit), "{:?}", o.result);
    assert_eq!(o.output.len(), 1 << 20, "output is kept up to the cap");
}

#[tokio::test]
async fn a_non_zero_exit_is_reported_with_its_code_and_log() {
    let o = run_fixture(&sandbox(), "exit3.wat", b"", Limits::default()).await;
    assert_eq!(kind(&o), Some(FailureKind::ExitCode));
    assert_eq!(o.exit_code, Some(3));
    assert_eq!(o.log, b"something went wrong\n");
}

#[tokio::test]
async fn stderr_is_truncated_not_fatal() {
    let limits = Limits { stderr: 5, ..Limits::default() };
    let o = run_fixture(&sandbox(), "exit3.wat", b"", limits).await;
    assert_eq!(o.log, b"somet");
    assert!(o.log_truncated);
}

#[tokio::test]
async fn opening_a_file_is_denied() {
    let o = run_fixture(&sandbox(), "open_file.wat", b"", Limits::default()).await;
    assert!(o.is_success(), "{:?}", o.result);
    // errno 8 = EBADF: there is no preopened directory to open anything through.
    assert_eq!(o.output, b"08");
}

#[tokio::test]
async fn no_environment_variables_are_visible() {
    // The test process has PATH, HOME and more: none of it may reach the task.
    assert!(std::env::vars().count() > 0);
    let o = run_fixture(&sandbox(), "env.wat", b"", Limits::default()).await;
    assert!(o.is_success(), "{:?}", o.result);
    assert_eq!(o.output, b"00", "the task saw environment variables");
}

#[tokio::test]
async fn fuel_runs_out() {
    let limits = Limits { fuel: Some(100_000), ..Limits::default() };
    let o = run_fixture(&sandbox(), "loop.wat", b"", limits).await;
    assert_eq!(kind(&o), Some(FailureKind::FuelExhausted), "{:?}", o.result);
}

#[tokio::test]
async fn a_running_task_can_be_cancelled() {
    let sb = sandbox();
    let bytes = std::fs::read(crate::common::fixture("loop.wat")).unwrap();
    let (binary, _) = prepare(&bytes).unwrap();
    let module = sb.load(&sha256_hex(&binary), &binary).unwrap();
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c2.cancel(wasmq::sandbox::CancelReason::Requested);
    });
    let started = Instant::now();
    let o = sb.run(&module, "loop", Vec::new(), &Limits::default(), &cancel).await;
    assert_eq!(kind(&o), Some(FailureKind::Cancelled), "{:?}", o.result);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn invalid_modules_are_refused_at_load() {
    let sb = sandbox();
    assert!(prepare(b"not wasm at all").is_err());
    assert!(prepare(b"\0asm\x02\0\0\0").is_err());
    // Valid wasm, but not a command: no _start.
    let (lib, kind) = prepare(b"(module (func (export \"f\")))").unwrap();
    assert_eq!(kind, ModuleKind::Module);
    let err = sb.load(&sha256_hex(&lib), &lib).unwrap_err().to_string();
    assert!(err.contains("_start"), "{err}");
    // Imports something no host provides.
    let (imp, _) = prepare(b"(module (import \"env\" \"secret\" (func)) (func (export \"_start\")))").unwrap();
    assert!(sb.load(&sha256_hex(&imp), &imp).is_err());
}

#[tokio::test]
async fn a_fresh_store_per_run_shares_nothing() {
    // counter.wat increments a global and prints it: every run must print 1.
    let sb = sandbox();
    for _ in 0..3 {
        let o = run_fixture(&sb, "counter.wat", b"", Limits::default()).await;
        assert_eq!(o.output, b"1", "state leaked between runs");
    }
}

#[tokio::test]
async fn the_second_load_comes_from_the_artifact() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = || SandboxConfig { max_concurrency: 1, cache_dir: Some(cache.path().to_path_buf()), ..Default::default() };
    let text = std::fs::read(crate::common::fixture("echo.wat")).unwrap();
    let (binary, _) = prepare(&text).unwrap();
    let sha = sha256_hex(&binary);
    let first = Sandbox::new(cfg()).unwrap().load(&sha, &binary).unwrap();
    assert_eq!(first.source, wasmq::sandbox::LoadSource::Compiled);
    let second = Sandbox::new(cfg()).unwrap().load(&sha, &binary).unwrap();
    assert_eq!(second.source, wasmq::sandbox::LoadSource::Artifact);
}

#[tokio::test]
async fn deterministic_mode_fixes_clock_and_randomness() {
    let limits = Limits { deterministic: true, ..Limits::default() };
    let sb = sandbox();
    let a = run_fixture(&sb, "clock_random.wat", b"", limits).await;
    let b = run_fixture(&sb, "clock_random.wat", b"", limits).await;
    assert!(a.is_success(), "{:?}", a.result);
    assert_eq!(a.output, b.output, "two deterministic runs differ");
    let c = run_fixture(&sb, "clock_random.wat", b"", Limits::default()).await;
    assert_ne!(a.output, c.output, "a normal run saw the fixed clock and seed");
}

/// The host API of core modules: progress lands in the run's slot, `config` reads what the run
/// was given (`-` for a missing key), `fail` ends the task as a permanent failure.
#[tokio::test]
async fn a_core_module_uses_the_host_api() {
    use wasmq::sandbox::TaskHost;
    let sb = sandbox();
    let bytes = std::fs::read(crate::common::fixture("host_api.wat")).unwrap();
    let (binary, _) = prepare(&bytes).unwrap();
    let module = sb.load(&sha256_hex(&binary), &binary).unwrap();
    let config: std::collections::HashMap<String, String> = [("greeting".to_string(), "hello".to_string())].into();
    let host = TaskHost { config: std::sync::Arc::new(config), ..Default::default() };
    let o = sb.run_with(&module, "host_api", b"x".to_vec(), &Limits::default(), &CancelToken::new(), host.clone()).await;
    assert!(o.is_success(), "{:?}", o.result);
    assert_eq!(String::from_utf8_lossy(&o.output), "hello|-");
    let p = host.progress.latest().expect("a progress report");
    assert_eq!((p.fraction, p.message.as_str()), (0.5, "halfway"));
    let o = sb.run_with(&module, "host_api", b"f".to_vec(), &Limits::default(), &CancelToken::new(), TaskHost::default()).await;
    assert_eq!(kind(&o), Some(FailureKind::Permanent), "{:?}", o.result);
    assert!(o.failure().unwrap().message.contains("bad input"), "{:?}", o.result);
    // Without the host API's imports a module runs as before: nothing else changed for it.
    assert!(run_fixture(&sb, "echo.wat", b"x", Limits::default()).await.is_success());
}

/// A component importing an interface no worker provides is refused before it is compiled, with
/// the interface's name and what to do about it (not a linker error after a long compile).
#[test]
fn a_component_import_no_worker_provides_is_named() {
    let sb = sandbox();
    let load = |wat: &str| {
        let (binary, _) = prepare(wat.as_bytes()).unwrap();
        sb.load(&sha256_hex(&binary), &binary).err().map(|e| e.to_string()).unwrap_or_default()
    };
    // wasi:http's client side is provided (requests denied unless granted), its server side not.
    let err = load(r#"(component (import "wasi:http/incoming-handler@0.2.0" (instance)))"#);
    assert!(err.contains("`wasi:http/incoming-handler@0.2.0`") && err.contains("outgoing-handler"), "{err}");
    let err = load(r#"(component (import "wasmq:task/host@0.2.0" (instance)))"#);
    assert!(err.contains("`wasmq:task/host@0.2.0`") && err.contains("0.1"), "{err}");
    // A provided interface passes the check (this one then fails for exporting no wasi:cli/run).
    for provided in ["wasi:cli/environment@0.2.3", "wasi:http/outgoing-handler@0.2.0"] {
        let err = load(&format!(r#"(component (import "{provided}" (instance)))"#));
        assert!(!err.contains("do not provide") && err.contains("wasi:cli/run"), "{provided}: {err}");
    }
}
