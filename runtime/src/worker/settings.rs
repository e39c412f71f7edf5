//! What tasks may read through the host API's `config`: each queue's settings (`wasmq config
//! set`) and the values of the secrets it is granted (`wasmq config grant`, the values from this
//! worker's `--secret`). Refreshed in the background, so that reading them costs a task nothing;
//! a change reaches running workers within [`REFRESH`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::queue::QueueName;

use super::Shared;

/// How often the settings are read again.
pub const REFRESH: Duration = Duration::from_secs(5);

/// The latest settings per queue, with granted secrets over them.
#[derive(Default)]
pub struct TaskSettings(Mutex<HashMap<QueueName, Arc<HashMap<String, String>>>>);

impl TaskSettings {
    /// What a task of `q` may read (empty until first read).
    pub fn of(&self, q: &QueueName) -> Arc<HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(q).cloned().unwrap_or_default()
    }
}

/// Reads every queue's settings once.
pub async fn refresh(shared: &Shared) {
    let mut conn = shared.conn.clone();
    for q in shared.queues() {
        match shared.db.task_settings(&mut conn, &q).await {
            Ok((mut config, grants)) => {
                for name in grants {
                    // A granted name this worker holds no value for is simply absent.
                    if let Some(v) = shared.config.secrets.0.get(&name) {
                        config.insert(name, v.clone());
                    }
                }
                shared.settings.0.lock().unwrap_or_else(|e| e.into_inner()).insert(q, Arc::new(config));
            }
            Err(e) => tracing::warn!(queue = %q, error = %e, "could not read the queue's config; tasks keep the last one read"),
        }
    }
}

/// Every [`REFRESH`]: [`refresh`].
pub async fn run(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(REFRESH).await;
        refresh(&shared).await;
    }
}
