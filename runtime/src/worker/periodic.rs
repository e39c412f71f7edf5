//! The worker's share of running periodic tasks: it watches the schedules of the queues it
//! consumes and fires due ticks. Every worker does this; `schedule_fire.lua` makes sure each tick
//! is enqueued once.

use std::sync::Arc;
use std::time::Duration;

use crate::schedule::{self, Fired};

use super::Shared;

/// Sleeps until the earliest due tick of any consumed queue (at most 1 s while schedules exist,
/// 2 s while none do), then fires what is due. A tick that meets an error stays due and is fired
/// on a later round.
pub async fn run(shared: Arc<Shared>) {
    let mut conn = shared.conn.clone();
    loop {
        let mut wait = Duration::from_secs(2);
        for queue in shared.queues() {
            let times = async {
                let now = shared.db.now_ms(&mut conn.clone(), &queue).await?;
                let due = shared.db.earliest_schedule(&mut conn.clone(), &queue).await?;
                Ok::<_, redis::RedisError>((now, due))
            };
            let (now, due) = match times.await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%queue, error = %e, "could not read schedules");
                    wait = wait.min(Duration::from_secs(1));
                    continue;
                }
            };
            let Some(due) = due else { continue };
            if due > now {
                wait = wait.min(Duration::from_millis(due - now)).min(Duration::from_secs(1));
                continue;
            }
            match schedule::fire_due(&mut conn, &shared.db, shared.modules.store(), &queue, now).await {
                Ok(fired) => {
                    for (name, f) in fired {
                        if let Fired::Enqueued { seq, tick_ms } = f {
                            tracing::info!(task = %format!("{queue}:{seq}"), schedule = %crate::text::escape_control(&name, false), tick = %crate::parse::format_ms(tick_ms), "periodic task enqueued");
                        }
                    }
                }
                Err(e) => {
                    // Not the 10 ms of a busy tick: a lasting error would turn into a hot loop.
                    tracing::warn!(%queue, error = %e, "could not fire schedules; the due ticks stay due");
                    wait = wait.min(Duration::from_secs(1));
                    continue;
                }
            }
            wait = Duration::from_millis(10);
        }
        tokio::time::sleep(wait.max(Duration::from_millis(5))).await;
    }
}
