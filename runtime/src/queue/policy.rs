//! Queue settings that live in the queue's meta hash: how pending tasks are ordered (policy) and
//! how long finished tasks are kept (retention).

use std::time::Duration;

/// How a queue orders its pending tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Higher priority first, FIFO within a priority (the default).
    Priority,
    /// Weighted shortest job first (expected run time / priority), with aging.
    Wsjf,
    /// Enqueue order; priorities ignored.
    Fifo,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "priority" => Ok(Self::Priority),
            "wsjf" => Ok(Self::Wsjf),
            "fifo" => Ok(Self::Fifo),
            _ => Err(format!("unknown policy {s:?}: use priority, wsjf or fifo")),
        }
    }
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Priority => "priority",
            Self::Wsjf => "wsjf",
            Self::Fifo => "fifo",
        }
    }
}

/// Settings of the wsjf policy (see docs/scheduling.md).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WsjfSettings {
    /// Virtual waiting time per unit of expected run time / weight: how strongly shorter and
    /// weightier tasks are preferred over earlier ones.
    pub stretch: f64,
    /// Aging: no task is overtaken by tasks enqueued more than this long after it.
    pub max_wait: Duration,
    /// Expected run time of a module not seen yet (and without --estimate).
    pub default_estimate: Duration,
}

impl Default for WsjfSettings {
    fn default() -> Self {
        Self { stretch: 1000.0, max_wait: Duration::from_secs(600), default_estimate: Duration::from_millis(100) }
    }
}

/// How long finished tasks of a queue are kept, by state: by age and by count (the newest
/// `count` are kept). Zero means no limit. Enforced as tasks finish, and by every worker's reaper
/// for queues where nothing finishes any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    #[serde(with = "ms")]
    pub succeeded_age: Duration,
    pub succeeded_count: u64,
    #[serde(with = "ms")]
    pub dead_age: Duration,
    pub dead_count: u64,
    #[serde(with = "ms")]
    pub cancelled_age: Duration,
    pub cancelled_count: u64,
}

mod ms {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// Default age of finished tasks (the worker's deprecated `--retention` replaces it for queues
/// without settings).
pub const DEFAULT_RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default number of finished tasks of one state a queue keeps: at 40,000 tasks/s, 7 days of
/// results would be billions of hashes.
pub const DEFAULT_RETENTION_COUNT: u64 = 100_000;

impl Default for Retention {
    fn default() -> Self {
        Self::with_age(DEFAULT_RETENTION_AGE)
    }
}

/// The meta hash fields of a queue's retention, in the order of [`Retention::to_values`].
pub(crate) const RETENTION_FIELDS: [&str; 6] =
    ["ret_succeeded_age_ms", "ret_succeeded_count", "ret_dead_age_ms", "ret_dead_count", "ret_cancelled_age_ms", "ret_cancelled_count"];

impl Retention {
    /// The default counts, and `age` for every state.
    pub fn with_age(age: Duration) -> Self {
        Self {
            succeeded_age: age,
            succeeded_count: DEFAULT_RETENTION_COUNT,
            dead_age: age,
            dead_count: DEFAULT_RETENTION_COUNT,
            cancelled_age: age,
            cancelled_count: DEFAULT_RETENTION_COUNT,
        }
    }

    pub(crate) fn to_values(self) -> [u64; 6] {
        let ms = |d: Duration| d.as_millis() as u64;
        [ms(self.succeeded_age), self.succeeded_count, ms(self.dead_age), self.dead_count, ms(self.cancelled_age), self.cancelled_count]
    }

    pub(crate) fn from_values(v: [u64; 6]) -> Self {
        let d = Duration::from_millis;
        Self { succeeded_age: d(v[0]), succeeded_count: v[1], dead_age: d(v[2]), dead_count: v[3], cancelled_age: d(v[4]), cancelled_count: v[5] }
    }

    /// The form scripts take it in (see `retention` in lib.lua).
    pub(crate) fn arg(self) -> String {
        self.to_values().iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}
