//! Modules as a worker needs them: fetched from Redis once per process, verified against their
//! hash, compiled (or loaded from the local artifact) on a blocking thread, then kept in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::sandbox::{Failure, FailureKind, LoadedModule, Sandbox};
use crate::store::{ModuleStore, StoreError};

pub struct ModuleLoader {
    store: ModuleStore,
    sandbox: Sandbox,
    /// A name of each loaded module (the task's argv[0]); tasks store only the hash.
    names: Mutex<HashMap<String, String>>,
    /// One lock per module being loaded: a burst of tasks for a new module fetches and compiles
    /// it once, while loads of other modules go on.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Modules that do not compile. Their bytes match their hash, so they never will: tasks that
    /// reference one fail at once instead of each fetching and compiling it again.
    invalid: Mutex<HashMap<String, Failure>>,
}

/// Most invalid modules remembered (a bound on memory, not on correctness: a forgotten one is
/// just compiled again).
const INVALID_REMEMBERED: usize = 1024;

impl ModuleLoader {
    pub fn new(store: ModuleStore, sandbox: Sandbox) -> Self {
        Self { store, sandbox, names: Default::default(), loading: Default::default(), invalid: Default::default() }
    }

    /// The name a loaded module runs under (`task` when it has none).
    pub fn name(&self, sha: &str) -> String {
        self.names.lock().expect("names lock").get(sha).cloned().unwrap_or_else(|| "task".into())
    }

    /// True for a module known not to compile.
    pub fn is_invalid(&self, sha: &str) -> bool {
        self.invalid.lock().expect("invalid lock").contains_key(sha)
    }

    pub fn store(&self) -> &ModuleStore {
        &self.store
    }

    /// The loaded module, or the failure that ends the task: unknown module, integrity error,
    /// invalid module (none of which another attempt would fix), or a Redis error (which it
    /// might).
    pub async fn get(&self, sha: &str) -> Result<Arc<LoadedModule>, Failure> {
        if let Some(m) = self.sandbox.cached(sha) {
            return Ok(m);
        }
        let lock = self.loading.lock().expect("loading lock").entry(sha.to_string()).or_default().clone();
        let loaded = {
            let _one_at_a_time = lock.lock().await;
            match self.sandbox.cached(sha) {
                Some(m) => Ok(m),
                None => self.load(sha).await,
            }
        };
        self.loading.lock().expect("loading lock").remove(sha);
        loaded
    }

    async fn load(&self, sha: &str) -> Result<Arc<LoadedModule>, Failure> {
        if let Some(f) = self.invalid.lock().expect("invalid lock").get(sha) {
            return Err(f.clone());
        }
        let bytes = self.store.fetch(sha).await.map_err(|e| match e {
            StoreError::Unknown(_) => Failure::new(FailureKind::UnknownModule, format!("module {sha} is not in the module store")),
            StoreError::Integrity { .. } => Failure::new(FailureKind::Integrity, format!("{e}; the module was not run")),
            StoreError::TooLarge { .. } => Failure::new(FailureKind::InvalidModule, e.to_string()),
            other => Failure::new(FailureKind::Internal, format!("could not fetch module {sha}: {other}")),
        })?;
        let sandbox = self.sandbox.clone();
        let sha_owned = sha.to_string();
        let loaded = tokio::task::spawn_blocking(move || sandbox.load(&sha_owned, &bytes))
            .await
            .map_err(|e| Failure::new(FailureKind::Internal, format!("module loading panicked: {e}")))?;
        let module = loaded.map_err(|e| {
            let failure = e.failure();
            if failure.kind == FailureKind::InvalidModule {
                let mut invalid = self.invalid.lock().expect("invalid lock");
                if invalid.len() >= INVALID_REMEMBERED {
                    invalid.clear();
                }
                invalid.insert(sha.to_string(), failure.clone());
            }
            failure
        })?;
        let name = self.store.names_of(sha).await.ok().and_then(|n| n.into_iter().next()).unwrap_or_else(|| "task".into());
        self.names.lock().expect("names lock").insert(sha.to_string(), name);
        tracing::info!(sha, source = ?module.source, ms = %format!("{:.2}", module.load_time.as_secs_f64() * 1e3), "module loaded");
        Ok(module)
    }
}

/// Most modules compiled ahead per pass of [`warm`] (well under the sandbox's memory cache).
const WARM_PER_PASS: usize = 16;

/// Compiles ahead the modules that unfinished tasks of this worker's queues reference: at start,
/// and every `interval` while the worker claims tasks (an idle worker sends nothing), so that
/// the first task of a module pushed and enqueued a moment ago mostly does not pay the compile
/// (seconds, for an interpreter's component). Loading is shared with the tasks: a task that
/// arrives meanwhile waits for the same compile, once.
pub async fn warm(shared: std::sync::Arc<super::Shared>, interval: std::time::Duration) {
    let mut conn = shared.conn.clone();
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) && !shared.claimed.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(interval).await;
            continue;
        }
        for q in shared.queues() {
            match shared.db.referenced_modules(&mut conn, &q, WARM_PER_PASS).await {
                Ok(shas) => {
                    for sha in shas {
                        if shared.sandbox.cached(&sha).is_none() && !shared.modules.is_invalid(&sha) {
                            let _ = shared.modules.get(&sha).await;
                        }
                    }
                }
                Err(e) => tracing::debug!(queue = %q, error = %e, "could not list the queue's modules"),
            }
        }
        tokio::time::sleep(interval).await;
    }
}
