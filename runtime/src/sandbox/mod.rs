//! The sandbox: runs one task (a WASI command module or component) in wasmtime with its input on
//! stdin, capturing stdout as its output and stderr as its log, under a wall-clock timeout, memory
//! and table caps, an output cap and an optional fuel budget.
//!
//! One [`Sandbox`] per process owns the engine (pooling allocator, epoch interruption), the
//! linkers, and a cache of loaded modules keyed by SHA-256 (in memory, and as precompiled
//! artifacts on disk). Each task runs in a fresh `Store` instantiated from a pre-linked
//! `InstancePre`/`CommandPre`, so nothing a task does is visible to the next one.
//!
//! A task sees: its input on stdin, one argument (its name), no environment variables, no
//! preopened directories, no sockets (preview 2 sockets are linked but every address is
//! refused), and WASI clocks and randomness (real ones, or fixed and seeded in deterministic mode),
//! and the wasmq host API (`host`): progress reports, its queue's settings and granted secrets,
//! and a permanent failure. A component also gets `wasi:http`, whose requests go out only to the
//! hosts it is granted within the worker's ceiling (`crate::http`).

mod artifacts;
mod cancel;
mod deterministic;
mod engine;
mod exec;
pub mod host;
mod limits;
mod outcome;
mod stdio;

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::{Engine, Module};

pub use artifacts::{ArtifactDir, ArtifactDirError};
pub use cancel::{CancelReason, CancelToken};
pub use engine::{DEFAULT_MAX_MEMORY, DEFAULT_MAX_STACK, DEFAULT_MAX_TABLE_ELEMENTS, EPOCH_TICK, SandboxConfig, default_cache_dir};
pub use host::{Progress, ProgressSlot, TaskHost};
pub use limits::{
    DEFAULT_MEMORY, DEFAULT_STDERR, DEFAULT_STDOUT, DEFAULT_TABLE_ELEMENTS, DEFAULT_TIMEOUT, Limits, MAX_STDERR, MAX_STDOUT, ResourceLimitExceeded,
};
pub use outcome::{Failure, FailureKind, Outcome};
pub use stdio::OutputLimitExceeded;

pub use crate::store::ModuleKind;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid module: {0}")]
    InvalidModule(String),
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
}

impl SandboxError {
    pub fn failure(&self) -> Failure {
        match self {
            Self::InvalidModule(m) => Failure::new(FailureKind::InvalidModule, m.clone()),
            Self::Engine(m) => Failure::new(FailureKind::Internal, m.clone()),
        }
    }
}

/// How a module got into memory, for logs and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Compiled with Cranelift (and its artifact written to disk, if there is a cache dir).
    Compiled,
    /// Loaded from a precompiled artifact on disk.
    Artifact,
}

/// A module ready to be instantiated: validated, compiled and pre-linked.
pub struct LoadedModule {
    pub sha256: String,
    pub kind: ModuleKind,
    pub source: LoadSource,
    /// Time spent compiling or deserializing.
    pub load_time: Duration,
    pub(crate) pre: exec::Pre,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule").field("sha256", &self.sha256).field("kind", &self.kind).field("source", &self.source).finish()
    }
}

/// Most modules kept loaded in memory; the least recently loaded is dropped first.
const MEMORY_CACHE_MODULES: usize = 256;

/// Loaded modules by SHA-256, and their load order (the oldest is evicted first).
#[derive(Default)]
struct MemoryCache {
    modules: HashMap<String, Arc<LoadedModule>>,
    order: VecDeque<String>,
}

struct Inner {
    engine: Engine,
    linkers: exec::Linkers,
    artifacts: Option<ArtifactDir>,
    artifact_warning: Option<String>,
    fingerprint: String,
    config: SandboxConfig,
    loaded: Mutex<MemoryCache>,
}

/// The per-process sandbox. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

/// Turns text or binary wasm into binary wasm and tells a core module from a component.
///
/// WebAssembly text (`.wat`) is accepted wherever a module is (handy for hand-written tasks); its
/// hash is the hash of the binary it compiles to.
pub fn prepare(bytes: &[u8]) -> Result<(Cow<'_, [u8]>, ModuleKind), SandboxError> {
    let binary: Cow<'_, [u8]> = if bytes.starts_with(b"\0asm") {
        Cow::Borrowed(bytes)
    } else if looks_like_wat(bytes) {
        let text = std::str::from_utf8(bytes).map_err(|_| SandboxError::InvalidModule("WebAssembly text that is not UTF-8".into()))?;
        Cow::Owned(wat::parse_str(text).map_err(|e| {
            // wat's message quotes the offending source over several lines; the first says it all.
            let msg = e.to_string();
            SandboxError::InvalidModule(format!("WebAssembly text does not parse: {}", msg.lines().next().unwrap_or_default()))
        })?)
    } else {
        return Err(SandboxError::InvalidModule("not a wasm binary (bad magic number) and not WebAssembly text".into()));
    };
    let kind = match binary.get(4..8) {
        Some([1, 0, 0, 0]) => ModuleKind::Module,
        Some([0x0d, 0, 1, 0]) => ModuleKind::Component,
        Some(v) => return Err(SandboxError::InvalidModule(format!("unsupported wasm version/layer {v:02x?}"))),
        None => return Err(SandboxError::InvalidModule("truncated wasm header".into())),
    };
    Ok((binary, kind))
}

/// Text whose first token opens an s-expression (after whitespace and `;;` comments).
fn looks_like_wat(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else { return false };
    let mut rest = text.trim_start();
    while let Some(comment) = rest.strip_prefix(";;") {
        rest = comment.split_once('\n').map_or("", |(_, r)| r).trim_start();
    }
    rest.starts_with('(')
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let engine = engine::build(&config).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        engine::start_ticker(&engine);
        let fingerprint = engine::fingerprint(&engine);
        let (artifacts, artifact_warning) = match &config.cache_dir {
            None => (None, None),
            Some(dir) => match ArtifactDir::open(dir, &fingerprint) {
                Ok(a) => (Some(a), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        let linkers = exec::Linkers::new(&engine).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        Ok(Self { inner: Arc::new(Inner { engine, linkers, artifacts, artifact_warning, fingerprint, config, loaded: Mutex::new(MemoryCache::default()) }) })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// The engine fingerprint that keys artifacts.
    pub fn fingerprint(&self) -> &str {
        &self.inner.fingerprint
    }

    /// The artifact folder in use, if any.
    pub fn artifact_dir(&self) -> Option<&ArtifactDir> {
        self.inner.artifacts.as_ref()
    }

    /// Why the configured artifact folder is not used, if it is not.
    pub fn artifact_warning(&self) -> Option<&str> {
        self.inner.artifact_warning.as_deref()
    }

    /// A module already loaded in this process.
    pub fn cached(&self, sha: &str) -> Option<Arc<LoadedModule>> {
        self.inner.loaded.lock().expect("cache lock").modules.get(sha).cloned()
    }

    /// Drops every loaded module from memory (artifacts on disk stay); for cold-start benchmarks.
    pub fn clear_memory_cache(&self) {
        *self.inner.loaded.lock().expect("cache lock") = MemoryCache::default();
    }

    /// Loads binary wasm whose SHA-256 is `sha` (the caller has verified it): from memory, from
    /// the on-disk artifact, or by compiling it. Blocking: compiling takes milliseconds to seconds,
    /// so async callers run this on a blocking thread.
    pub fn load(&self, sha: &str, binary: &[u8]) -> Result<Arc<LoadedModule>, SandboxError> {
        if let Some(m) = self.cached(sha) {
            return Ok(m);
        }
        let (binary, kind) = prepare(binary)?;
        if kind == ModuleKind::Component {
            host::check_component_imports(&binary).map_err(SandboxError::InvalidModule)?;
        }
        let started = Instant::now();
        let (code, source) = self.compile_or_deserialize(sha, &binary, kind)?;
        let pre = self.inner.linkers.pre(code)?;
        let module = Arc::new(LoadedModule { sha256: sha.to_string(), kind, source, load_time: started.elapsed(), pre });
        let mut g = self.inner.loaded.lock().expect("cache lock");
        if g.modules.insert(sha.to_string(), module.clone()).is_none() {
            g.order.push_back(sha.to_string());
        }
        while g.order.len() > MEMORY_CACHE_MODULES {
            if let Some(old) = g.order.pop_front() {
                g.modules.remove(&old);
            }
        }
        Ok(module)
    }

    fn compile_or_deserialize(&self, sha: &str, binary: &[u8], kind: ModuleKind) -> Result<(exec::Code, LoadSource), SandboxError> {
        let engine = &self.inner.engine;
        if let Some(dir) = &self.inner.artifacts {
            let path = dir.artifact(sha);
            if path.exists() {
                // SAFETY: the artifact was written by this program with this engine fingerprint into a
                // directory only this user can write (checked in ArtifactDir::open); wasmtime also
                // checks the artifact's header against the engine before using it.
                #[allow(unsafe_code)]
                let loaded = unsafe {
                    match kind {
                        ModuleKind::Module => Module::deserialize_file(engine, &path).map(exec::Code::Module),
                        ModuleKind::Component => Component::deserialize_file(engine, &path).map(exec::Code::Component),
                    }
                };
                match loaded {
                    Ok(code) => return Ok((code, LoadSource::Artifact)),
                    Err(e) => {
                        tracing::warn!(sha, error = %e, "discarding an artifact that does not load");
                        dir.discard(sha);
                    }
                }
            }
        }
        let invalid = |e: wasmtime::Error| SandboxError::InvalidModule(format!("{e:#}"));
        let code = match kind {
            ModuleKind::Module => exec::Code::Module(Module::from_binary(engine, binary).map_err(invalid)?),
            ModuleKind::Component => exec::Code::Component(Component::from_binary(engine, binary).map_err(invalid)?),
        };
        if let Some(dir) = &self.inner.artifacts {
            let serialized = match &code {
                exec::Code::Module(m) => m.serialize(),
                exec::Code::Component(c) => c.serialize(),
            };
            match serialized.map_err(|e| e.to_string()).and_then(|b| dir.store(sha, &b).map_err(|e| e.to_string())) {
                Ok(()) => {}
                Err(e) => tracing::warn!(sha, error = %e, "could not write the precompiled artifact"),
            }
        }
        Ok((code, LoadSource::Compiled))
    }

    /// Compiles and links a module without keeping it: checks that it is a runnable WASI command.
    pub fn validate(&self, binary: &[u8]) -> Result<ModuleKind, SandboxError> {
        let (binary, kind) = prepare(binary)?;
        if kind == ModuleKind::Component {
            host::check_component_imports(&binary).map_err(SandboxError::InvalidModule)?;
        }
        let invalid = |e: wasmtime::Error| SandboxError::InvalidModule(format!("{e:#}"));
        let code = match kind {
            ModuleKind::Module => exec::Code::Module(Module::from_binary(&self.inner.engine, &binary).map_err(invalid)?),
            ModuleKind::Component => exec::Code::Component(Component::from_binary(&self.inner.engine, &binary).map_err(invalid)?),
        };
        self.inner.linkers.pre(code)?;
        Ok(kind)
    }

    /// Runs a loaded module once with `input` on stdin. Never fails: every problem is an
    /// [`Outcome`] with a failure kind. `name` is the task's only argument (`argv[0]`).
    pub async fn run(&self, module: &LoadedModule, name: &str, input: Vec<u8>, limits: &Limits, cancel: &CancelToken) -> Outcome {
        self.run_with(module, name, input, limits, cancel, TaskHost::default()).await
    }

    /// [`Sandbox::run`] with what the task may use of the host API: where its progress goes,
    /// the settings and secrets it may read.
    pub async fn run_with(&self, module: &LoadedModule, name: &str, input: Vec<u8>, limits: &Limits, cancel: &CancelToken, host: TaskHost) -> Outcome {
        if limits.fuel.is_some() && !self.inner.config.metering {
            return Outcome::not_run(Failure::new(
                FailureKind::Internal,
                "this worker runs without fuel metering (--no-metering); the task asks for a fuel budget",
            ));
        }
        exec::run(&self.inner.engine, module, name, input, limits, cancel, self.inner.config.metering, host, &self.inner.config.http).await
    }
}
