//! A cancellation flag that both the epoch callback (polled every tick while wasm runs) and async
//! code (awaiting it while the guest blocks in a host call such as a sleep) can observe. It
//! carries why the run is stopped, so that whoever reports the outcome need not ask.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::Notify;

/// Why a run was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// Somebody cancelled the task (`wasmq cancel`).
    Requested,
    /// The task's lease passed to another claim, or the task finished meanwhile: nothing of this
    /// run may be reported.
    LeaseLost,
    /// The worker is shutting down: the task goes back to its queue.
    Shutdown,
}

impl CancelReason {
    fn code(self) -> u8 {
        match self {
            Self::Requested => 1,
            Self::LeaseLost => 2,
            Self::Shutdown => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(Self::Requested),
            2 => Some(Self::LeaseLost),
            3 => Some(Self::Shutdown),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<(AtomicU8, Notify)>,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run for `reason`; the first reason given stays.
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.inner.0.compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.0.load(Ordering::SeqCst) != 0
    }

    /// Why the run was stopped (None while it was not).
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_code(self.inner.0.load(Ordering::SeqCst))
    }

    /// Resolves once `cancel` has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
