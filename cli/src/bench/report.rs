//! Benchmark results: a table for people, JSON for scripts (and for `bench/peers/`).

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub scenario: String,
    pub name: String,
    pub value: Option<f64>,
    pub unit: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Metric {
    pub fn new(scenario: &str, name: &str, value: f64, unit: &str) -> Self {
        Self { scenario: scenario.into(), name: name.into(), value: value.is_finite().then_some(value), unit: unit.into(), note: String::new() }
    }

    pub fn failed(scenario: &str, why: &str) -> Self {
        Self { scenario: scenario.into(), name: "failed".into(), value: None, unit: String::new(), note: why.into() }
    }

    pub fn note(mut self, note: &str) -> Self {
        self.note = note.into();
        self
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub redis: String,
    pub wasmq: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub machine: Option<Machine>,
    pub metrics: Vec<Metric>,
}

fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 1000.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

impl Report {
    pub fn push(&mut self, m: Metric) {
        eprintln!("    {}: {} {}", m.name, fmt_value(m.value), m.unit);
        self.metrics.push(m);
    }

    pub fn table(&self) -> String {
        let mut t = crate::Table::new(&["SCENARIO", "METRIC", "VALUE", "UNIT", "NOTE"]);
        for m in &self.metrics {
            t.row(vec![m.scenario.clone(), m.name.clone(), fmt_value(m.value), m.unit.clone(), m.note.clone()]);
        }
        let mut out = String::new();
        if let Some(mc) = &self.machine {
            out.push_str(&format!("machine: {} cores, Linux {}, redis {}, wasmq {}\n", mc.cores, mc.kernel, mc.redis, mc.wasmq));
        }
        out.push_str(&t.render());
        out
    }
}
