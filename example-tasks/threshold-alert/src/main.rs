//! threshold-alert: evaluates alert rules over a batch of sensor readings.
//!
//! Input `{"readings": [...], "rules": [...]}`, output
//! `{"alerts": [...], "readings": N, "sensors": N}`. See README.md for the schema and
//! the firing rules.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    readings: Vec<Reading>,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reading {
    sensor: String,
    /// Timestamp, typically Unix seconds; only its order matters.
    ts: i64,
    value: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// A sensor name, or `*` for every sensor.
    sensor: String,
    /// Breached when the value is strictly greater.
    above: Option<f64>,
    /// Breached when the value is strictly less.
    below: Option<f64>,
    #[serde(default = "default_severity")]
    severity: String,
    /// Consecutive breaching readings needed before the rule fires.
    #[serde(rename = "for", default = "default_for")]
    consecutive: u32,
}

fn default_severity() -> String {
    "warning".to_owned()
}

fn default_for() -> u32 {
    1
}

#[derive(Debug, PartialEq, Serialize)]
struct Output {
    alerts: Vec<Alert>,
    readings: usize,
    sensors: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Alert {
    sensor: String,
    ts: i64,
    value: f64,
    /// Index of the rule in the input's `rules`.
    rule: usize,
    severity: String,
    message: String,
}

/// A rule that can never be evaluated meaningfully.
#[derive(Debug, PartialEq)]
enum RuleError {
    NoThreshold { rule: usize },
    ZeroFor { rule: usize },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::NoThreshold { rule } => {
                write!(f, "rule {rule} has neither `above` nor `below`: it could never fire")
            }
            RuleError::ZeroFor { rule } => {
                write!(f, "rule {rule} has `for` 0: it must be at least 1")
            }
        }
    }
}

#[wasmq_sdk::task]
fn threshold_alert(input: Input) -> Result<Output, RuleError> {
    validate(&input.rules)?;
    let by_sensor = group_by_sensor(&input.readings);
    let mut alerts = Vec::new();
    for (sensor, readings) in &by_sensor {
        for (index, rule) in input.rules.iter().enumerate() {
            if rule.sensor == "*" || rule.sensor == *sensor {
                evaluate(index, rule, readings, &mut alerts);
            }
        }
    }
    // Stable sort: alerts at the same ts for the same sensor stay in rule order.
    alerts.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.sensor.cmp(&b.sensor)));
    Ok(Output { alerts, readings: input.readings.len(), sensors: by_sensor.len() })
}

fn validate(rules: &[Rule]) -> Result<(), RuleError> {
    for (rule, r) in rules.iter().enumerate() {
        if r.above.is_none() && r.below.is_none() {
            return Err(RuleError::NoThreshold { rule });
        }
        if r.consecutive == 0 {
            return Err(RuleError::ZeroFor { rule });
        }
    }
    Ok(())
}

/// Each sensor's readings in ts order; readings with equal ts keep their input order.
fn group_by_sensor(readings: &[Reading]) -> BTreeMap<&str, Vec<&Reading>> {
    let mut by_sensor: BTreeMap<&str, Vec<&Reading>> = BTreeMap::new();
    for r in readings {
        by_sensor.entry(&r.sensor).or_default().push(r);
    }
    for list in by_sensor.values_mut() {
        list.sort_by_key(|r| r.ts);
    }
    by_sensor
}

/// Walks one sensor's readings for one rule. The rule fires once, on the reading where
/// the run of consecutive breaches reaches `for`; the first non-breaching reading ends
/// the run, so a later run can fire again.
fn evaluate(index: usize, rule: &Rule, readings: &[&Reading], alerts: &mut Vec<Alert>) {
    let mut run = 0u32;
    for reading in readings {
        let Some(breach) = breach(rule, reading.value) else {
            run = 0;
            continue;
        };
        run = run.saturating_add(1);
        if run == rule.consecutive {
            alerts.push(Alert {
                sensor: reading.sensor.clone(),
                ts: reading.ts,
                value: reading.value,
                rule: index,
                severity: rule.severity.clone(),
                message: message(rule, reading, breach),
            });
        }
    }
}

/// Which threshold a value crosses, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Breach {
    Above(f64),
    Below(f64),
}

fn breach(rule: &Rule, value: f64) -> Option<Breach> {
    match (rule.above, rule.below) {
        (Some(limit), _) if value > limit => Some(Breach::Above(limit)),
        (_, Some(limit)) if value < limit => Some(Breach::Below(limit)),
        _ => None,
    }
}

fn message(rule: &Rule, reading: &Reading, breach: Breach) -> String {
    let (direction, limit) = match breach {
        Breach::Above(limit) => ("above", limit),
        Breach::Below(limit) => ("below", limit),
    };
    let value = reading.value;
    match rule.consecutive {
        1 => format!("{} = {value} is {direction} {limit}", reading.sensor),
        n => format!("{} = {value} is {direction} {limit} for {n} consecutive readings", reading.sensor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(sensor: &str, ts: i64, value: f64) -> Reading {
        Reading { sensor: sensor.to_owned(), ts, value }
    }

    fn rule(sensor: &str, above: Option<f64>, below: Option<f64>, consecutive: u32) -> Rule {
        Rule { sensor: sensor.to_owned(), above, below, severity: default_severity(), consecutive }
    }

    fn fired(out: &Output) -> Vec<(&str, i64, usize)> {
        out.alerts.iter().map(|a| (a.sensor.as_str(), a.ts, a.rule)).collect()
    }

    #[test]
    fn single_breach_fires_with_message() {
        let out =
            threshold_alert(Input { readings: vec![reading("t1", 10, 79.0), reading("t1", 20, 81.5)], rules: vec![rule("t1", Some(80.0), None, 1)] }).unwrap();
        assert_eq!(
            out.alerts,
            [Alert { sensor: "t1".into(), ts: 20, value: 81.5, rule: 0, severity: "warning".into(), message: "t1 = 81.5 is above 80".into() }]
        );
        assert_eq!((out.readings, out.sensors), (2, 1));
    }

    #[test]
    fn fires_once_per_run_and_again_after_recovery() {
        let values = [81.0, 82.0, 83.0, 84.0, 70.0, 85.0, 86.0, 87.0];
        let readings = values.iter().enumerate().map(|(i, v)| reading("t1", i as i64, *v)).collect();
        let out = threshold_alert(Input { readings, rules: vec![rule("t1", Some(80.0), None, 2)] }).unwrap();
        assert_eq!(fired(&out), [("t1", 1, 0), ("t1", 6, 0)]);
        assert_eq!(out.alerts[0].message, "t1 = 82 is above 80 for 2 consecutive readings");
    }

    #[test]
    fn readings_are_ordered_by_ts_per_sensor() {
        // In input order t1 alternates breach/ok, but in ts order it breaches 3 times in a row.
        let readings = vec![reading("t1", 3, 90.0), reading("t1", 5, 10.0), reading("t2", 1, 95.0), reading("t1", 1, 90.0), reading("t1", 2, 90.0)];
        let out = threshold_alert(Input { readings, rules: vec![rule("t1", Some(80.0), None, 3)] }).unwrap();
        assert_eq!(fired(&out), [("t1", 3, 0)]);
        assert_eq!(out.sensors, 2);
    }

    #[test]
    fn other_sensors_do_not_interrupt_a_run() {
        let readings = vec![reading("a", 1, 5.0), reading("b", 2, 50.0), reading("a", 3, 4.0)];
        let out = threshold_alert(Input { readings, rules: vec![rule("a", None, Some(10.0), 2)] }).unwrap();
        assert_eq!(fired(&out), [("a", 3, 0)]);
        assert!(out.alerts[0].message.contains("is below 10"), "{}", out.alerts[0].message);
    }

    #[test]
    fn wildcard_rule_applies_to_each_sensor_independently() {
        let readings = vec![reading("b", 1, 100.0), reading("a", 1, 100.0), reading("a", 2, 50.0), reading("a", 3, 0.0), reading("c", 0, 100.0)];
        let mut critical = rule("*", Some(90.0), Some(1.0), 1);
        critical.severity = "critical".into();
        let out = threshold_alert(Input { readings, rules: vec![rule("a", Some(50.0), None, 1), critical] }).unwrap();
        // Sorted by ts, then sensor; same sensor and ts keep rule order.
        assert_eq!(fired(&out), [("c", 0, 1), ("a", 1, 0), ("a", 1, 1), ("b", 1, 1), ("a", 3, 1)]);
        assert_eq!(out.alerts[1].severity, "warning");
        assert_eq!(out.alerts[2].severity, "critical");
    }

    #[test]
    fn thresholds_are_strict() {
        let readings = vec![reading("s", 1, 80.0), reading("s", 2, 10.0)];
        let out = threshold_alert(Input { readings, rules: vec![rule("s", Some(80.0), Some(10.0), 1)] }).unwrap();
        assert!(out.alerts.is_empty());
    }

    #[test]
    fn rejects_rule_without_threshold_or_with_zero_for() {
        let rules = vec![rule("s", Some(1.0), None, 1), rule("s", None, None, 1)];
        let err = threshold_alert(Input { readings: vec![], rules }).unwrap_err();
        assert_eq!(err, RuleError::NoThreshold { rule: 1 });
        assert_eq!(err.to_string(), "rule 1 has neither `above` nor `below`: it could never fire");

        let err = threshold_alert(Input { readings: vec![], rules: vec![rule("s", Some(1.0), None, 0)] });
        assert_eq!(err.unwrap_err().to_string(), "rule 0 has `for` 0: it must be at least 1");
    }

    #[test]
    fn wire_format_defaults() {
        let input: Input = serde_json::from_str(
            r#"{"readings": [{"sensor": "t1", "ts": 1700000000, "value": 81.5}],
                "rules": [{"sensor": "t1", "above": 80.0}]}"#,
        )
        .unwrap();
        assert_eq!((input.rules[0].severity.as_str(), input.rules[0].consecutive), ("warning", 1));
        let json = serde_json::to_string(&threshold_alert(input).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"alerts":[{"sensor":"t1","ts":1700000000,"value":81.5,"rule":0,"severity":"warning","message":"t1 = 81.5 is above 80"}],"readings":1,"sensors":1}"#
        );
    }

    #[test]
    fn sample_input_runs() {
        let input: Input = serde_json::from_str(include_str!("../sample-input.json")).unwrap();
        let out = threshold_alert(input).unwrap();
        assert!(!out.alerts.is_empty());
        assert!(out.alerts.windows(2).all(|w| (w[0].ts, &w[0].sensor) <= (w[1].ts, &w[1].sensor)));
    }
}
