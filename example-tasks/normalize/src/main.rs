//! normalize: feature scaling of numeric columns, a typical ML preprocessing step.
//!
//! Input `{"method": "zscore" | "minmax", "columns": {"age": [...], ...}}`, output the
//! scaled columns plus per-column statistics. See README.md for the schema.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    method: Method,
    /// Each column is scaled on its own, so columns may differ in length.
    columns: BTreeMap<String, Vec<f64>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Method {
    /// `(x - mean) / std`, with the population standard deviation.
    #[default]
    Zscore,
    /// `(x - min) / (max - min)`, into [0, 1].
    Minmax,
}

#[derive(Debug, PartialEq, Serialize)]
struct Output {
    method: Method,
    columns: BTreeMap<String, Vec<f64>>,
    stats: BTreeMap<String, Stats>,
}

/// Statistics of the input column, reported whatever the method, so a caller can apply
/// the same scaling to new data later.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Stats {
    mean: f64,
    /// Population standard deviation.
    std: f64,
    min: f64,
    max: f64,
}

/// A column that cannot be normalized.
#[derive(Debug, PartialEq)]
struct ColumnError {
    column: String,
    problem: Problem,
}

#[derive(Debug, PartialEq)]
enum Problem {
    Empty,
    NonFinite { index: usize },
    Overflow,
}

impl fmt::Display for ColumnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = &self.column;
        match self.problem {
            Problem::Empty => write!(f, "column `{column}` is empty"),
            Problem::NonFinite { index } => {
                write!(f, "column `{column}` has a non-finite value (NaN or infinity) at index {index}")
            }
            Problem::Overflow => {
                write!(f, "column `{column}` has values too large to normalize: its statistics overflow")
            }
        }
    }
}

#[wasmq_sdk::task]
fn normalize(input: Input) -> Result<Output, ColumnError> {
    let mut columns = BTreeMap::new();
    let mut stats = BTreeMap::new();
    for (name, values) in input.columns {
        let fail = |problem| ColumnError { column: name.clone(), problem };
        let column_stats = describe(&values).map_err(fail)?;
        let scaled = scale(values, &column_stats, input.method);
        if scaled.iter().any(|v| !v.is_finite()) {
            return Err(fail(Problem::Overflow));
        }
        stats.insert(name.clone(), column_stats);
        columns.insert(name, scaled);
    }
    Ok(Output { method: input.method, columns, stats })
}

/// Mean and population standard deviation by Welford's method, which neither overflows
/// on a large running sum nor loses precision subtracting two large sums.
fn describe(values: &[f64]) -> Result<Stats, Problem> {
    if values.is_empty() {
        return Err(Problem::Empty);
    }
    let (mut mean, mut m2) = (0.0f64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (index, &x) in values.iter().enumerate() {
        if !x.is_finite() {
            return Err(Problem::NonFinite { index });
        }
        let delta = x - mean;
        mean += delta / (index + 1) as f64;
        m2 += delta * (x - mean);
        min = min.min(x);
        max = max.max(x);
    }
    let std = (m2 / values.len() as f64).sqrt();
    if !mean.is_finite() || !std.is_finite() {
        return Err(Problem::Overflow);
    }
    Ok(Stats { mean, std, min, max })
}

/// Scales in place. A constant column has no spread to divide by, so it becomes all 0.0
/// (every value sits exactly at the mean and at the minimum) instead of NaN.
fn scale(mut values: Vec<f64>, stats: &Stats, method: Method) -> Vec<f64> {
    let constant = stats.max == stats.min || stats.std == 0.0;
    for v in &mut values {
        *v = match method {
            _ if constant => 0.0,
            Method::Zscore => (*v - stats.mean) / stats.std,
            Method::Minmax => (*v - stats.min) / (stats.max - stats.min),
        };
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(method: Method, columns: &[(&str, &[f64])]) -> Input {
        Input { method, columns: columns.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect() }
    }

    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn zscore_uses_population_std() {
        let out = normalize(input(Method::Zscore, &[("x", &[1.0, 2.0, 3.0, 4.0, 5.0])])).unwrap();
        let r = std::f64::consts::SQRT_2;
        assert_close(&out.columns["x"], &[-2.0 / r, -1.0 / r, 0.0, 1.0 / r, 2.0 / r]);
        assert_eq!(out.stats["x"].mean, 3.0);
        assert!((out.stats["x"].std - r).abs() < 1e-12);
        assert_eq!((out.stats["x"].min, out.stats["x"].max), (1.0, 5.0));
    }

    #[test]
    fn minmax_maps_into_unit_interval() {
        let out = normalize(input(Method::Minmax, &[("income", &[20_000.0, 50_000.0, 120_000.0])])).unwrap();
        assert_close(&out.columns["income"], &[0.0, 0.3, 1.0]);
        assert_eq!(out.method, Method::Minmax);
    }

    #[test]
    fn constant_column_becomes_zeros() {
        for method in [Method::Zscore, Method::Minmax] {
            let out = normalize(input(method, &[("c", &[0.1, 0.1, 0.1]), ("one", &[7.0])])).unwrap();
            assert_eq!(out.columns["c"], [0.0, 0.0, 0.0]);
            assert_eq!(out.columns["one"], [0.0]);
            assert_eq!(out.stats["c"].std, 0.0);
        }
    }

    #[test]
    fn columns_are_sorted_and_independent() {
        let out = normalize(input(Method::Minmax, &[("b", &[0.0, 2.0]), ("a", &[5.0, 10.0, 15.0])])).unwrap();
        assert_eq!(out.columns.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_close(&out.columns["a"], &[0.0, 0.5, 1.0]);
        assert_close(&out.columns["b"], &[0.0, 1.0]);
    }

    #[test]
    fn rejects_empty_column_by_name() {
        let err = normalize(input(Method::Zscore, &[("age", &[1.0]), ("score", &[])])).unwrap_err();
        assert_eq!(err.to_string(), "column `score` is empty");
    }

    #[test]
    fn rejects_non_finite_values_by_name_and_index() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = normalize(input(Method::Minmax, &[("temp", &[1.0, 2.0, bad])])).unwrap_err();
            assert_eq!(err, ColumnError { column: "temp".into(), problem: Problem::NonFinite { index: 2 } });
            assert!(err.to_string().starts_with("column `temp` has a non-finite value"), "{err}");
        }
    }

    #[test]
    fn huge_values_do_not_overflow_the_mean() {
        let out = normalize(input(Method::Zscore, &[("big", &[1e308, 1e308, 1e308])])).unwrap();
        assert_eq!(out.stats["big"].mean, 1e308);
        assert_eq!(out.columns["big"], [0.0, 0.0, 0.0]);
    }

    #[test]
    fn unrepresentable_spread_is_an_error() {
        let err = normalize(input(Method::Minmax, &[("wide", &[-1.5e308, 1.5e308])])).unwrap_err();
        assert_eq!(err.problem, Problem::Overflow);
        assert!(err.to_string().contains("`wide`"));
    }

    #[test]
    fn no_columns_is_an_empty_result() {
        let out = normalize(input(Method::Zscore, &[])).unwrap();
        assert!(out.columns.is_empty() && out.stats.is_empty());
    }

    #[test]
    fn wire_format() {
        let input: Input = serde_json::from_str(r#"{"columns": {"x": [2, 4]}}"#).unwrap();
        assert_eq!(input.method, Method::Zscore);
        let json = serde_json::to_string(&normalize(input).unwrap()).unwrap();
        assert_eq!(json, r#"{"method":"zscore","columns":{"x":[-1.0,1.0]},"stats":{"x":{"mean":3.0,"std":1.0,"min":2.0,"max":4.0}}}"#);
        let err = serde_json::from_str::<Input>(r#"{"method": "l2", "columns": {}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `l2`, expected `zscore` or `minmax`"), "{err}");
    }

    #[test]
    fn sample_input_runs() {
        let input: Input = serde_json::from_str(include_str!("../sample-input.json")).unwrap();
        let out = normalize(input).unwrap();
        assert!(!out.columns.is_empty());
        for (name, values) in &out.columns {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            assert!(mean.abs() < 1e-9, "column {name} mean {mean}");
        }
    }
}
