//! The names a queue and its tasks go by. Both become parts of Redis keys, so they are checked
//! here, once, before anything reaches a key or a script.

use std::fmt;

use crate::parse::ParseError;

/// A queue name: 1 to 64 characters from `A-Z a-z 0-9 _ - .`.
///
/// Queue names become part of Redis keys and of the `{hash tag}` that keeps a queue on one
/// Cluster slot, so braces, colons, glob characters and whitespace are all refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(String);

impl QueueName {
    pub fn new(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > 64 {
            return Err(ParseError::new("queue name", s, "must be 1 to 64 characters"));
        }
        if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
            return Err(ParseError::new("queue name", s, format!("character {c:?} not allowed; use A-Z a-z 0-9 _ - .")));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for QueueName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::new(s)
    }
}

/// A task id: `QUEUE:SEQ`, for example `default:42`.
///
/// The queue is part of the id so that the id alone finds the task (and its Cluster slot); the
/// sequence number is the queue's counter at enqueue time, which also orders tasks FIFO within a
/// priority.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskId {
    pub queue: QueueName,
    pub seq: u64,
}

impl TaskId {
    pub fn new(queue: QueueName, seq: u64) -> Self {
        Self { queue, seq }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let (q, n) = s.rsplit_once(':').ok_or_else(|| ParseError::new("task id", s, "expected QUEUE:NUMBER, e.g. default:42"))?;
        let queue = QueueName::new(q).map_err(|e| ParseError::new("task id", s, e.reason()))?;
        if n.is_empty() || n.len() > 19 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new("task id", s, "the part after ':' must be a number"));
        }
        let seq = n.parse().map_err(|_| ParseError::new("task id", s, "number too large"))?;
        Ok(Self { queue, seq })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.queue, self.seq)
    }
}

impl std::str::FromStr for TaskId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

/// A task's group (`enqueue --group`): a tenant, a customer, a device. 1 to 128 bytes of
/// printable text, no whitespace (a group becomes part of Redis keys, P:{Q}:g:<group>:..., and
/// shows in logs and pages), or ':' so that no group's keys can be another's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct GroupKey(String);

impl GroupKey {
    pub fn new(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() || s.len() > 128 {
            return Err(ParseError::new("group", s, "must be 1 to 128 bytes"));
        }
        if let Some(c) = s.chars().find(|c| c.is_control() || c.is_whitespace() || *c == ':') {
            return Err(ParseError::new("group", s, format!("character {c:?} not allowed (no whitespace, control characters or ':')")));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for GroupKey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::new(s)
    }
}

/// Lowest and highest task priority. Together with a 32-bit sequence number the pending score
/// stays below 2^53, where a Redis score (a double) is still exact.
pub const MIN_PRIORITY: i64 = -1_000_000;
pub const MAX_PRIORITY: i64 = 1_000_000;

/// Most attempts a task may be given (`--max-attempts`).
pub const MAX_ATTEMPTS: u32 = 1000;

/// The queue of tasks and workers that name none.
pub const DEFAULT_QUEUE: &str = "default";
