//! Running one task: a fresh `Store` with its WASI context, limits and epoch deadline, instantiated
//! from the module's pre-linked form, and the classification of how it ended.

use std::time::{Duration, Instant};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, InstancePre, Linker, Module, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::http::{HttpConfig, TaskHttp};

use super::cancel::CancelToken;
use super::host::{HasHost, TaskFailed, TaskHost};
use super::limits::{Limits, ResourceLimitExceeded, TaskLimiter};
use super::outcome::{Failure, FailureKind, Outcome, summarize_log};
use super::stdio::{CappedPipe, OutputLimitExceeded};
use super::{LoadedModule, SandboxError};

/// Compiled code of either kind.
pub(crate) enum Code {
    Module(Module),
    Component(Component),
}

/// Pre-linked code, ready to instantiate.
pub(crate) enum Pre {
    Module(InstancePre<CoreState>),
    Component(CommandPre<ComponentState>),
}

/// Why the host stopped a task (raised from the epoch callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Interrupted {
    #[error("the task ran past its timeout")]
    Timeout,
    #[error("the task was cancelled")]
    Cancelled,
}

/// What every store carries besides its WASI context.
pub(crate) struct Guard {
    limiter: TaskLimiter,
    deadline: Instant,
    cancel: CancelToken,
    host: TaskHost,
}

pub(crate) struct CoreState {
    wasi: WasiP1Ctx,
    guard: Guard,
}

pub(crate) struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    guard: Guard,
    http_ctx: WasiHttpCtx,
    /// The task's grant and caps; sends its requests (`crate::http`).
    http: TaskHttp,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.ctx, table: &mut self.table }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http_ctx, table: &mut self.table, hooks: &mut self.http }
    }
}

trait HasGuard: Send + 'static {
    fn guard(&mut self) -> &mut Guard;
}

impl HasGuard for CoreState {
    fn guard(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

impl HasGuard for ComponentState {
    fn guard(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

impl HasHost for CoreState {
    fn host(&mut self) -> &mut TaskHost {
        &mut self.guard.host
    }
}

impl HasHost for ComponentState {
    fn host(&mut self) -> &mut TaskHost {
        &mut self.guard.host
    }
}

/// The linkers of both kinds, built once per engine: WASI preview 1 for modules, preview 2 and
/// `wasi:http` for components.
pub(crate) struct Linkers {
    core: Linker<CoreState>,
    component: wasmtime::component::Linker<ComponentState>,
}

impl Linkers {
    pub(crate) fn new(engine: &Engine) -> wasmtime::Result<Self> {
        let mut core = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut core, |s: &mut CoreState| &mut s.wasi)?;
        super::host::add_to_core_linker(&mut core)?;
        let mut component = wasmtime::component::Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component)?;
        // Always linked, so that components that import it load (componentize-js's do by
        // default); each request is checked against the task's grant when it is sent.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component)?;
        super::host::add_to_component_linker(&mut component)?;
        Ok(Self { core, component })
    }

    /// Links compiled code, checking that it is a WASI command: a module must export `_start`
    /// and import nothing beyond WASI preview 1; a component must export `wasi:cli/run`.
    pub(crate) fn pre(&self, code: Code) -> Result<Pre, SandboxError> {
        let invalid = |e: wasmtime::Error| SandboxError::InvalidModule(format!("{e:#}"));
        match code {
            Code::Module(m) => {
                match m.get_export("_start") {
                    Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0 => {}
                    Some(_) => return Err(SandboxError::InvalidModule("`_start` is not a function without parameters and results".into())),
                    None => {
                        return Err(SandboxError::InvalidModule(
                            "not a WASI command: the module exports no `_start` function (build a binary, not a library)".into(),
                        ));
                    }
                }
                // An import of module `wasmq` that is not in the host API: say what is.
                if let Some(i) = m.imports().find(|i| i.module() == "wasmq" && !super::host::CORE_IMPORTS.contains(&i.name())) {
                    return Err(SandboxError::InvalidModule(format!(
                        "the module imports `wasmq.{}`, which is not in the host API wasmq:task@0.1.0 of this worker (it has {}; docs/host-api.md)",
                        i.name(),
                        super::host::CORE_IMPORTS.join(", ")
                    )));
                }
                Ok(Pre::Module(self.core.instantiate_pre(&m).map_err(invalid)?))
            }
            Code::Component(c) => {
                let pre = self.component.instantiate_pre(&c).map_err(invalid)?;
                let cmd =
                    CommandPre::new(pre).map_err(|e| SandboxError::InvalidModule(format!("not a WASI command component (no wasi:cli/run export): {e:#}")))?;
                Ok(Pre::Component(cmd))
            }
        }
    }
}

fn wasi_builder(name: &str, input: Vec<u8>, stdout: &CappedPipe, stderr: &CappedPipe, limits: &Limits) -> WasiCtxBuilder {
    let mut b = WasiCtxBuilder::new();
    b.stdin(MemoryInputPipe::new(input))
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .arg(name)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    if limits.deterministic {
        super::deterministic::apply(&mut b);
    }
    b
}

fn new_store<T: HasGuard>(engine: &Engine, data: T, limits: &Limits, metering: bool) -> wasmtime::Result<Store<T>> {
    let mut store = Store::new(engine, data);
    store.limiter(|s| &mut s.guard().limiter);
    if metering {
        store.set_fuel(limits.fuel.unwrap_or(u64::MAX))?;
    }
    // Check the clock and the cancel flag at every epoch tick, and yield to the executor so that a
    // spinning task never starves the thread it runs on.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| {
        let g = cx.data_mut().guard();
        if g.cancel.is_cancelled() {
            return Err(wasmtime::Error::new(Interrupted::Cancelled));
        }
        if Instant::now() >= g.deadline {
            return Err(wasmtime::Error::new(Interrupted::Timeout));
        }
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
}

/// How the guest's own code ended, before the host's view (timeouts, caps) is applied.
enum Ended {
    /// Returned or exited with this status.
    Exit(i32),
    /// Raised an error: a trap, a limit, an interrupt, or a host failure.
    Error(wasmtime::Error),
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    engine: &Engine,
    module: &LoadedModule,
    name: &str,
    input: Vec<u8>,
    limits: &Limits,
    cancel: &CancelToken,
    metering: bool,
    host: TaskHost,
    http: &HttpConfig,
) -> Outcome {
    // A run cancelled before it started never starts.
    if cancel.is_cancelled() {
        return Outcome::not_run(Failure::new(FailureKind::Cancelled, "the task was cancelled before it started"));
    }
    // One byte over the cap is what tells a flood from output of exactly the cap.
    let stdout = CappedPipe::strict(limits.stdout);
    let stderr = CappedPipe::truncating(limits.stderr);
    let started = Instant::now();
    let guard = Guard { limiter: TaskLimiter::new(limits), deadline: started + limits.timeout, cancel: cancel.clone(), host };
    let builder = wasi_builder(name, input, &stdout, &stderr, limits);
    let deadline = tokio::time::Instant::from_std(guard.deadline);

    let (ended, fuel_left, denied) = match &module.pre {
        Pre::Module(pre) => {
            let mut builder = builder;
            let data = CoreState { wasi: builder.build_p1(), guard };
            match new_store(engine, data, limits, metering) {
                Err(e) => (Ended::Error(e), None, None),
                Ok(mut store) => {
                    let fut = async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await
                    };
                    let ended = watch(fut, deadline, cancel).await.map(|r| match r {
                        Ok(()) => Ended::Exit(0),
                        Err(e) => exit_or_error(e),
                    });
                    let fuel = if metering { store.get_fuel().ok() } else { None };
                    (ended.unwrap_or_else(Ended::Error), fuel, store.data().guard.limiter.denied)
                }
            }
        }
        Pre::Component(pre) => {
            let mut builder = builder;
            // Refusals of HTTP requests go to the task's log, where its author looks.
            let log = stderr.clone();
            let task_http = TaskHttp::new(http, &guard.host.http, std::sync::Arc::new(move |line: &str| log.note(line)));
            let data = ComponentState { ctx: builder.build(), table: ResourceTable::new(), guard, http_ctx: WasiHttpCtx::new(), http: task_http };
            match new_store(engine, data, limits, metering) {
                Err(e) => (Ended::Error(e), None, None),
                Ok(mut store) => {
                    let fut = async {
                        let cmd = pre.instantiate_async(&mut store).await?;
                        cmd.wasi_cli_run().call_run(&mut store).await
                    };
                    let ended = watch(fut, deadline, cancel).await.map(|r| match r {
                        Ok(Ok(())) => Ended::Exit(0),
                        // `wasi:cli/run` returned its error variant: the guest's `exit(1)`.
                        Ok(Err(())) => Ended::Exit(1),
                        Err(e) => exit_or_error(e),
                    });
                    let fuel = if metering { store.get_fuel().ok() } else { None };
                    (ended.unwrap_or_else(Ended::Error), fuel, store.data().guard.limiter.denied)
                }
            }
        }
    };
    let duration = started.elapsed();
    let (output, _) = stdout.take();
    let (log, log_truncated) = stderr.take();
    let fuel_used = match (metering, fuel_left) {
        (true, Some(left)) => Some(limits.fuel.unwrap_or(u64::MAX) - left),
        _ => None,
    };
    let (result, exit_code) = match ended {
        Ended::Exit(0) => (Ok(()), Some(0)),
        Ended::Exit(code) => {
            let reason = summarize_log(&log).map(|l| format!(": {l}")).unwrap_or_default();
            let failure = match code {
                PERMANENT_EXIT => Failure::new(FailureKind::Permanent, format!("the task exited with status 2, a permanent failure (not retried){reason}")),
                _ => Failure::new(FailureKind::ExitCode, format!("the task exited with status {code}{reason}")),
            };
            (Err(failure), Some(code))
        }
        Ended::Error(e) => {
            let mut failure = classify(&e, limits);
            if failure.kind == FailureKind::Trap
                && let Some(l) = summarize_log(&log)
            {
                // A panic message or a Python exception, for instance, says more than
                // `unreachable`.
                failure = Failure::new(FailureKind::Trap, format!("{}; from the log: {l}", failure.message));
            }
            (Err(failure), None)
        }
    };
    // A task that fails after a memory growth was refused failed for want of memory, whatever its
    // own way of failing (an abort, a trap, an exit status, spinning until its timeout).
    let result = match (result, denied) {
        (Err(f), Some(d)) if !matches!(f.kind, FailureKind::Cancelled | FailureKind::OutputLimit | FailureKind::MemoryLimit) => {
            Err(Failure::new(FailureKind::MemoryLimit, format!("{d} (the growth was refused; then {f})")))
        }
        (r, _) => r,
    };
    Outcome { result, output, log, log_truncated, exit_code, duration, fuel_used }
}

/// The exit status by which a core module says its failure is permanent (bad input, say): never
/// retried. Components cannot say it by status (their exit carries no number).
pub const PERMANENT_EXIT: i32 = 2;

/// Runs the guest future until it ends, the deadline passes, or the task is cancelled. The epoch
/// callback catches both while wasm code runs; this catches them while the guest waits in a host
/// call (a sleep, a poll), by dropping the future.
async fn watch<F, T>(fut: F, deadline: tokio::time::Instant, cancel: &CancelToken) -> Result<wasmtime::Result<T>, wasmtime::Error>
where
    F: std::future::Future<Output = wasmtime::Result<T>>,
{
    // Biased: a cancel that is already known wins over a guest that happens to be done too.
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(wasmtime::Error::new(Interrupted::Cancelled)),
        _ = tokio::time::sleep_until(deadline) => Err(wasmtime::Error::new(Interrupted::Timeout)),
        r = fut => Ok(r),
    }
}

fn exit_or_error(e: wasmtime::Error) -> Ended {
    match e.downcast_ref::<I32Exit>() {
        Some(exit) => Ended::Exit(exit.0),
        None => Ended::Error(e),
    }
}

/// Finds an error of type `E` anywhere in the chain (wasmtime wraps host errors in context).
fn find<E: std::error::Error + Send + Sync + 'static>(e: &wasmtime::Error) -> Option<&E> {
    e.downcast_ref::<E>().or_else(|| e.chain().find_map(|c| c.downcast_ref::<E>()))
}

fn classify(e: &wasmtime::Error, limits: &Limits) -> Failure {
    if let Some(i) = find::<Interrupted>(e) {
        return match i {
            Interrupted::Timeout => Failure::new(FailureKind::Timeout, format!("the task ran past its timeout of {}", fmt_duration(limits.timeout))),
            Interrupted::Cancelled => Failure::new(FailureKind::Cancelled, "the task was cancelled while running"),
        };
    }
    if let Some(TaskFailed(message)) = find::<TaskFailed>(e) {
        return Failure::new(FailureKind::Permanent, format!("the task failed permanently (not retried): {message}"));
    }
    if let Some(l) = find::<ResourceLimitExceeded>(e) {
        return Failure::new(FailureKind::MemoryLimit, l.to_string());
    }
    if let Some(o) = find::<OutputLimitExceeded>(e) {
        return Failure::new(FailureKind::OutputLimit, o.to_string());
    }
    if let Some(t) = find::<Trap>(e) {
        return match t {
            Trap::OutOfFuel => {
                Failure::new(FailureKind::FuelExhausted, format!("the task used up its fuel budget of {}", limits.fuel.map_or("?".into(), |f| f.to_string())))
            }
            Trap::StackOverflow => Failure::new(
                FailureKind::StackOverflow,
                "the task overflowed its call stack; interpreters (Python, JavaScript) and deep recursion need workers started with a larger --stack-size",
            ),
            Trap::AllocationTooLarge => Failure::new(FailureKind::MemoryLimit, "wasm trap: allocation too large"),
            other => Failure::new(FailureKind::Trap, other.to_string()),
        };
    }
    if let Some(p) = find::<wasmtime::PoolConcurrencyLimitError>(e) {
        // The pooling allocator ran out of slots: the host is overloaded, not the task broken.
        return Failure::new(FailureKind::Internal, p.to_string());
    }
    let text = format!("{e:#}");
    if text.contains("exit with invalid exit status") {
        // WASI preview 1 refuses proc_exit(n) for n >= 126 with a plain error.
        return Failure::new(FailureKind::ExitCode, "the task exited with a status of 126 or more (invalid in WASI)");
    }
    Failure::new(FailureKind::Trap, text)
}

/// `30s`, `1.5s`, `250ms`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
