//! What tasks may read through the host API's `config`: each queue's settings (`wasmq config
//! set`) and the values of the secrets it is granted (`wasmq config grant`, the values from this
//! worker's `--secret`). Read when a task of the queue runs and the last read is older than
//! [`REFRESH`] (one round trip per queue at most that often, and none while the worker is idle),
//! so a change reaches running workers within [`REFRESH`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::queue::QueueName;

use super::Shared;

/// How old the settings a task reads may be.
pub const REFRESH: Duration = Duration::from_secs(5);

/// A queue's settings with its granted secrets over them, as tasks read them.
type Values = Arc<HashMap<String, String>>;

/// The last settings read per queue, and when they were read.
#[derive(Default)]
pub struct TaskSettings(Mutex<HashMap<QueueName, (Instant, Values)>>);

impl TaskSettings {
    fn last(&self, q: &QueueName) -> Option<(Instant, Values)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(q).cloned()
    }
}

/// What a task of `q` may read: the last read if it is recent enough, else read now. If Redis
/// cannot be read, the last read (or nothing) is used, and the failure logged.
pub async fn of(shared: &Shared, q: &QueueName) -> Values {
    let last = shared.settings.last(q);
    if let Some((at, values)) = &last
        && at.elapsed() < REFRESH
    {
        return values.clone();
    }
    match shared.db.task_settings(&mut shared.conn.clone(), q).await {
        Ok((mut config, grants)) => {
            for name in grants {
                // A granted name this worker holds no value for is simply absent.
                if let Some(v) = shared.config.secrets.0.get(&name) {
                    config.insert(name, v.clone());
                }
            }
            let values = Arc::new(config);
            shared.settings.0.lock().unwrap_or_else(|e| e.into_inner()).insert(q.clone(), (Instant::now(), values.clone()));
            values
        }
        Err(e) => {
            tracing::warn!(queue = %q, error = %e, "could not read the queue's config; the task gets the last one read");
            last.map(|(_, v)| v).unwrap_or_default()
        }
    }
}
