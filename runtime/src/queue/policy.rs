//! Queue settings that live in the queue's meta hash: how pending tasks are ordered (policy), how
//! long finished tasks are kept (retention), and flow control (limits).

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
    #[serde(with = "ms")]
    pub expired_age: Duration,
    pub expired_count: u64,
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
/// Settings written before the `expired` state existed have no `ret_expired_*` fields: expired
/// tasks then follow the cancelled ones' limits.
pub(crate) const RETENTION_FIELDS: [&str; 8] = [
    "ret_succeeded_age_ms",
    "ret_succeeded_count",
    "ret_dead_age_ms",
    "ret_dead_count",
    "ret_cancelled_age_ms",
    "ret_cancelled_count",
    "ret_expired_age_ms",
    "ret_expired_count",
];

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
            expired_age: age,
            expired_count: DEFAULT_RETENTION_COUNT,
        }
    }

    pub(crate) fn to_values(self) -> [u64; 8] {
        let ms = |d: Duration| d.as_millis() as u64;
        [
            ms(self.succeeded_age),
            self.succeeded_count,
            ms(self.dead_age),
            self.dead_count,
            ms(self.cancelled_age),
            self.cancelled_count,
            ms(self.expired_age),
            self.expired_count,
        ]
    }

    pub(crate) fn from_values(v: [u64; 8]) -> Self {
        let d = Duration::from_millis;
        Self {
            succeeded_age: d(v[0]),
            succeeded_count: v[1],
            dead_age: d(v[2]),
            dead_count: v[3],
            cancelled_age: d(v[4]),
            cancelled_count: v[5],
            expired_age: d(v[6]),
            expired_count: v[7],
        }
    }

    /// The form scripts take it in (see `retention` in lib.lua).
    pub(crate) fn arg(self) -> String {
        self.to_values().iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    }
}

/// A queue's rate limit: at most `n` tasks start (are claimed) in any window of length `per`,
/// across every worker (`wasmq queue limit Q --rate N/DURATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RateLimit {
    pub n: u64,
    #[serde(with = "ms", rename = "per_ms")]
    pub per: Duration,
}

/// Most tasks a rate limit may allow per window, and the longest window (a day): the window's
/// list holds at most `min(n, per in ms)` entries.
pub const MAX_RATE: u64 = 1_000_000;
pub const MAX_RATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl std::str::FromStr for RateLimit {
    type Err = String;
    /// `N/DURATION`: `100/s`, `5000/min`, `10/250ms`, `3600/1h` (a unit alone means one of it).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("invalid rate {s:?}: {why}; use N/DURATION, e.g. 100/s, 5000/min or 10/250ms");
        let (n, per) = s.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let n: u64 = n.trim().parse().map_err(|_| bad("N is not a whole number"))?;
        if n == 0 || n > MAX_RATE {
            return Err(bad(&format!("N must be between 1 and {MAX_RATE}")));
        }
        let per = per.trim();
        let unit_only = !per.is_empty() && per.bytes().all(|b| b.is_ascii_alphabetic());
        let per = if unit_only { crate::parse::duration(&format!("1{per}")) } else { crate::parse::duration(per) }.map_err(|e| bad(e.reason()))?;
        if per < Duration::from_millis(1) || per > MAX_RATE_WINDOW {
            return Err(bad("the window must be between 1ms and 24h"));
        }
        Ok(Self { n, per })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.n, humantime::format_duration(self.per))
    }
}

/// A queue's flow-control limits (`wasmq queue limit`), kept in its meta hash and read by
/// `claim.lua` with the policy. None: no limit of that kind. The group limits apply to each group
/// of the queue on its own (`enqueue --group`); tasks without a group have none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueLimits {
    /// Most tasks of the queue active (claimed) at once, across every worker.
    pub concurrency: Option<u64>,
    pub rate: Option<RateLimit>,
    /// Most tasks of one group active at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_concurrency: Option<u64>,
    /// Most tasks of one group started in any window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_rate: Option<RateLimit>,
}

/// The meta hash fields of the limits (lib.lua `queue_policy` reads the same names).
pub(crate) const LIMIT_FIELDS: [&str; 6] =
    ["limit_concurrency", "limit_rate", "limit_rate_ms", "limit_group_concurrency", "limit_group_rate", "limit_group_rate_ms"];

impl QueueLimits {
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none() && self.group_concurrency.is_none() && self.group_rate.is_none()
    }

    /// The limits with their use, as `queue stats` and the dashboard show them: `concurrency
    /// 3/5, rate 12/50 per 1s, per group: concurrency 2, rate 10 per 1s`, or `-` for none.
    pub fn describe(&self, active: u64, rate_used: Option<u64>) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.concurrency {
            parts.push(format!("concurrency {active}/{c}"));
        }
        if let Some(r) = self.rate {
            parts.push(format!("rate {}/{} per {}", rate_used.unwrap_or(0), r.n, humantime::format_duration(r.per)));
        }
        let mut group = Vec::new();
        if let Some(c) = self.group_concurrency {
            group.push(format!("concurrency {c}"));
        }
        if let Some(r) = self.group_rate {
            group.push(format!("rate {} per {}", r.n, humantime::format_duration(r.per)));
        }
        if !group.is_empty() {
            parts.push(format!("per group: {}", group.join(", ")));
        }
        if parts.is_empty() { "-".into() } else { parts.join(", ") }
    }

    /// From the meta fields in the order of [`LIMIT_FIELDS`] (malformed or 0: no limit).
    pub(crate) fn from_fields(v: &[Option<String>]) -> Self {
        let num = |i: usize| v.get(i).and_then(|x| x.as_deref()).and_then(|x| x.parse::<u64>().ok()).filter(|n| *n > 0);
        let rate = |i: usize| num(i).zip(num(i + 1)).map(|(n, ms)| RateLimit { n, per: Duration::from_millis(ms) });
        Self { concurrency: num(0), rate: rate(1), group_concurrency: num(3), group_rate: rate(4) }
    }

    /// The meta fields these limits set (those given; see [`LIMIT_FIELDS`]).
    pub(crate) fn to_fields(self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut rate = |i: usize, r: RateLimit| {
            pairs.push((LIMIT_FIELDS[i], r.n.to_string()));
            pairs.push((LIMIT_FIELDS[i + 1], (r.per.as_millis() as u64).to_string()));
        };
        if let Some(r) = self.rate {
            rate(1, r);
        }
        if let Some(r) = self.group_rate {
            rate(4, r);
        }
        if let Some(c) = self.concurrency {
            pairs.push((LIMIT_FIELDS[0], c.to_string()));
        }
        if let Some(c) = self.group_concurrency {
            pairs.push((LIMIT_FIELDS[3], c.to_string()));
        }
        pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let r = |s: &str| s.parse::<RateLimit>();
        assert_eq!(r("100/s").unwrap(), RateLimit { n: 100, per: Duration::from_secs(1) });
        assert_eq!(r("5000/min").unwrap(), RateLimit { n: 5000, per: Duration::from_secs(60) });
        assert_eq!(r("10/250ms").unwrap(), RateLimit { n: 10, per: Duration::from_millis(250) });
        assert_eq!(r(" 3 / 2h ").unwrap(), RateLimit { n: 3, per: Duration::from_secs(7200) });
        for bad in ["", "100", "0/s", "x/s", "10/", "10/0s", "10/2days", "-1/s", "10/xyz"] {
            assert!(r(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(r("100/s").unwrap().to_string(), "100/1s");
    }
}
