//! Modules as a worker needs them: fetched from Redis once per process, verified against their
//! hash, compiled (or loaded from the local artifact) on a blocking thread, then kept in memory.

use std::sync::Arc;

use crate::sandbox::{Failure, FailureKind, LoadedModule, Sandbox};
use crate::store::{ModuleStore, StoreError};

pub struct ModuleLoader {
    store: ModuleStore,
    sandbox: Sandbox,
    /// A name of each loaded module (the task's argv[0]); tasks store only the hash.
    names: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Serializes slow-path loads: a burst of tasks for a new module compiles it once (Cranelift
    /// compiles one module on all cores already).
    loading: tokio::sync::Mutex<()>,
}

impl ModuleLoader {
    pub fn new(store: ModuleStore, sandbox: Sandbox) -> Self {
        Self { store, sandbox, names: Default::default(), loading: tokio::sync::Mutex::new(()) }
    }

    /// The name a loaded module runs under (`task` when it has none).
    pub fn name(&self, sha: &str) -> String {
        self.names.lock().expect("names lock").get(sha).cloned().unwrap_or_else(|| "task".into())
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
        let _one_at_a_time = self.loading.lock().await;
        if let Some(m) = self.sandbox.cached(sha) {
            return Ok(m);
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
        let module = loaded.map_err(|e| e.failure())?;
        let name = self.store.names_of(sha).await.ok().and_then(|n| n.into_iter().next()).unwrap_or_else(|| "task".into());
        self.names.lock().expect("names lock").insert(sha.to_string(), name);
        tracing::info!(sha, source = ?module.source, ms = %format!("{:.2}", module.load_time.as_secs_f64() * 1e3), "module loaded");
        Ok(module)
    }
}
