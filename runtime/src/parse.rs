//! Parsers for everything a user or a task hash hands us as text: durations, byte sizes, points in
//! time, queue names, module names and task ids.
//!
//! Every value that ends up in a Redis key or a Lua argument passes through here first, so that a
//! malformed value is refused with a message that names it instead of reaching a script.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A value that could not be parsed; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct ParseError {
    what: &'static str,
    value: String,
    reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        // Bounded, whatever the input was; the message shows the value with `{:?}`, which escapes
        // newlines and control characters, so it stays one line.
        let value: String = value.chars().take(80).collect();
        Self { what, value, reason: reason.into() }
    }

    /// Why the value was refused, without the value.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Largest duration accepted anywhere (about 10 years): keeps millisecond arithmetic far from
/// overflow and the scores in Redis exact.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses a duration: `250ms`, `30s`, `1m30s`, `2h`, `7days`, or a bare number of seconds (`30`).
pub fn duration(s: &str) -> Result<Duration, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ParseError::new("duration", s, "empty; use e.g. 30s, 250ms, 5m or 2h"));
    }
    let d = if t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| ParseError::new("duration", s, "number too large"))?;
        Duration::from_secs(secs)
    } else {
        humantime::parse_duration(t).map_err(|e| ParseError::new("duration", s, format!("{e}; use e.g. 30s, 250ms, 5m or 2h")))?
    };
    if d > MAX_DURATION {
        return Err(ParseError::new("duration", s, "longer than 10 years"));
    }
    Ok(d)
}

/// Parses a byte size: `1048576`, `512K`, `256MiB`, `16MB`, `1G`.
///
/// `K`, `M`, `G` and `KiB`, `MiB`, `GiB` are powers of 1024 (what people mean for memory);
/// `KB`, `MB`, `GB` are powers of 1000. Units are case-insensitive; a bare number is bytes.
pub fn size(s: &str) -> Result<u64, ParseError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(ParseError::new("size", s, "expected a number with an optional unit, e.g. 256MiB"));
    }
    let n: u64 = digits.parse().map_err(|_| ParseError::new("size", s, "number too large"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(ParseError::new("size", s, "unknown unit; use B, KiB, MiB, GiB (or K, M, G), KB, MB, GB")),
    };
    n.checked_mul(mult).ok_or_else(|| ParseError::new("size", s, "too large"))
}

/// Formats a byte count for people: `512 B`, `1.5 KiB`, `256.0 MiB`.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

/// Parses a point in time: RFC 3339 (`2026-11-24T18:00:00Z`, `2026-11-24T19:00:00+01:00`) or Unix
/// seconds (`1795000000`).
pub fn time(s: &str) -> Result<SystemTime, ParseError> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = t.parse().map_err(|_| ParseError::new("time", s, "number too large"))?;
        if secs > 253_402_300_799 {
            return Err(ParseError::new("time", s, "after the year 9999"));
        }
        return Ok(UNIX_EPOCH + Duration::from_secs(secs));
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(t)
        .map_err(|e| ParseError::new("time", s, format!("{e}; expected RFC 3339 (2026-11-24T18:00:00Z or ...+01:00) or Unix seconds")))?;
    let ms = parsed.timestamp_millis();
    if ms < 0 {
        return Err(ParseError::new("time", s, "before 1970"));
    }
    Ok(UNIX_EPOCH + Duration::from_millis(ms as u64))
}

/// When a task expires, as given to `enqueue --expires`: a duration from the enqueue, or a
/// point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    After(Duration),
    At(SystemTime),
}

/// Parses `--expires DUR|TIME`: a duration (`30s`, `5m`, a bare number of seconds, as `--delay`
/// takes it) or an RFC 3339 time (`2026-11-24T18:00:00Z`).
pub fn expires(s: &str) -> Result<Expires, ParseError> {
    if let Ok(d) = duration(s) {
        if d.is_zero() {
            return Err(ParseError::new("expiry", s, "must be after the enqueue"));
        }
        return Ok(Expires::After(d));
    }
    time(s).map(Expires::At).map_err(|_| ParseError::new("expiry", s, "expected a duration (30s, 5m, 2h) or an RFC 3339 time (2026-11-24T18:00:00Z)"))
}

/// Milliseconds since the Unix epoch of a point in time (0 for times before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The current time in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Formats a Unix millisecond timestamp as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A module name (an alias that points at a module hash): 1 to 128 characters from
/// `A-Z a-z 0-9 _ - . / @ +`, and not something that reads as a SHA-256 hash.
pub fn module_name(s: &str) -> Result<&str, ParseError> {
    if s.is_empty() || s.len() > 128 {
        return Err(ParseError::new("module name", s, "must be 1 to 128 characters"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '@' | '+'))) {
        return Err(ParseError::new("module name", s, format!("character {c:?} not allowed")));
    }
    if is_sha256_hex(s) {
        return Err(ParseError::new("module name", s, "looks like a module hash; pick a name that does not"));
    }
    Ok(s)
}

/// True for exactly 64 lowercase hex digits: the form module hashes take.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a priority: an integer from -1000000 to 1000000; higher runs first.
pub fn priority(s: &str) -> Result<i64, ParseError> {
    use crate::queue::{MAX_PRIORITY, MIN_PRIORITY};
    let p: i64 = s.trim().parse().map_err(|_| ParseError::new("priority", s, "expected an integer"))?;
    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&p) {
        return Err(ParseError::new("priority", s, "must be between -1000000 and 1000000"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueName, TaskId};

    #[test]
    fn errors_are_one_bounded_line_whatever_the_value() {
        let long = format!("1x\n2y\r{}", "z".repeat(10_000));
        let msg = duration(&long).unwrap_err().to_string();
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(msg.len() < 300, "{} bytes", msg.len());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration(" 7days ").unwrap(), Duration::from_secs(7 * 86400));
        for bad in ["", "abc", "-5s", "5 parsecs", "99999999999999999999", "20000days"] {
            assert!(duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size("1024").unwrap(), 1024);
        assert_eq!(size("256MiB").unwrap(), 256 << 20);
        assert_eq!(size("256m").unwrap(), 256 << 20);
        assert_eq!(size("16MB").unwrap(), 16_000_000);
        assert_eq!(size("1G").unwrap(), 1 << 30);
        for bad in ["", "MiB", "12 parsecs", "-1", "1.5M", "99999999999999999999G", "18446744073709551615K"] {
            assert!(size(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
    }

    #[test]
    fn times() {
        let z = time("2026-11-24T18:00:00Z").unwrap();
        assert_eq!(time("2026-11-24T19:00:00+01:00").unwrap(), z);
        assert_eq!(time("2026-11-24T13:30:00-04:30").unwrap(), z);
        assert_eq!(time(&unix_ms(z).div_euclid(1000).to_string()).unwrap(), z);
        for bad in ["", "tomorrow", "2026-13-01T00:00:00Z", "2026-11-24T19:00:00+25:00", "99999999999999"] {
            assert!(time(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ids_and_names() {
        let id = TaskId::parse("default:42").unwrap();
        assert_eq!((id.queue.as_str(), id.seq), ("default", 42));
        assert_eq!(id.to_string(), "default:42");
        for bad in ["42", "default:", ":42", "def*ault:1", "default:1a", "a{b}:1", "default:-1", "q:99999999999999999999"] {
            assert!(TaskId::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(QueueName::new("critical.eu-1").is_ok());
        for bad in ["", "a b", "a:b", "{a}", "a*", "é", &"x".repeat(65)] {
            assert!(QueueName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(module_name("team/wordcount@v2").is_ok());
        assert!(module_name(&"a".repeat(64)).is_err());
        assert!(module_name("has space").is_err());
        assert_eq!(priority("-5").unwrap(), -5);
        assert!(priority("1000001").is_err());
        assert!(priority("1.5").is_err());
    }
}

/// Property tests: the parsers never panic, whatever they are given; what they accept is what
/// they promise; and formatting round-trips through parsing.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::queue::{MAX_PRIORITY, MIN_PRIORITY, QueueName, TaskId};
    use proptest::prelude::*;

    const GLOB_AND_KEY_CHARS: &[char] = &['*', '?', '[', ']', '{', '}', ':', ' ', '\n', '\\'];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn no_parser_panics(s in any::<String>()) {
            let _ = duration(&s);
            let _ = size(&s);
            let _ = time(&s);
            let _ = QueueName::new(&s);
            let _ = TaskId::parse(&s);
            let _ = module_name(&s);
            let _ = priority(&s);
        }

        #[test]
        fn no_parser_panics_on_near_misses(s in "[0-9a-zA-Z:+\\-.TZ ]{0,40}") {
            let _ = duration(&s);
            let _ = size(&s);
            let _ = time(&s);
            let _ = TaskId::parse(&s);
        }

        #[test]
        fn accepted_names_and_ids_are_safe_in_keys(s in "\\PC{0,80}") {
            if let Ok(q) = QueueName::new(&s) {
                prop_assert!(!q.as_str().contains(GLOB_AND_KEY_CHARS));
                prop_assert!((1..=64).contains(&q.as_str().len()));
            }
            if let Ok(id) = TaskId::parse(&s) {
                prop_assert!(!id.queue.as_str().contains(GLOB_AND_KEY_CHARS));
                prop_assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
            }
            if let Ok(n) = module_name(&s) {
                let forbidden = [':', ' ', '*', '?', '[', ']', '{', '}'];
                prop_assert!(!n.contains(forbidden), "accepted {:?}", n);
                prop_assert!(!is_sha256_hex(n));
            }
        }

        #[test]
        fn task_ids_round_trip(q in "[A-Za-z0-9_.\\-]{1,64}", seq in 0..=i64::MAX as u64) {
            let id = TaskId::new(QueueName::new(&q).unwrap(), seq);
            prop_assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
        }

        #[test]
        fn durations_round_trip(ms in 0u64..MAX_DURATION.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(duration(&humantime::format_duration(d).to_string()).unwrap(), d);
            prop_assert_eq!(duration(&(ms / 1000).to_string()).unwrap(), Duration::from_secs(ms / 1000));
        }

        #[test]
        fn sizes_scale_by_their_unit(n in 0u64..(1 << 40)) {
            prop_assert_eq!(size(&n.to_string()).unwrap(), n);
            prop_assert_eq!(size(&format!("{n}KiB")).unwrap(), n * 1024);
            prop_assert_eq!(size(&format!("{n}mb")).unwrap(), n * 1_000_000);
        }

        #[test]
        fn times_round_trip(secs in 0u64..253_402_300_799) {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            prop_assert_eq!(time(&secs.to_string()).unwrap(), t);
            prop_assert_eq!(time(&humantime::format_rfc3339_seconds(t).to_string()).unwrap(), t);
        }

        #[test]
        fn priorities_stay_in_range(p in any::<i64>()) {
            match priority(&p.to_string()) {
                Ok(v) => prop_assert!((MIN_PRIORITY..=MAX_PRIORITY).contains(&v) && v == p),
                Err(_) => prop_assert!(!(MIN_PRIORITY..=MAX_PRIORITY).contains(&p)),
            }
        }
    }
}
