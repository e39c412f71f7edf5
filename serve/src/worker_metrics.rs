//! A worker's own `/metrics` (`wasmq worker --metrics-listen ADDR`): what this process did and
//! holds, and its memory and CPU, in the Prometheus text format.
//!
//! `wasmq serve`'s `/metrics` tells what the queues hold, from Redis; this one tells what one
//! worker process does, from its memory, at no Redis cost: a scrape reads the worker's counters
//! ([`WorkerHandle::stats`], atomics) and `/proc/self`. The counters start at zero with the
//! process, as Prometheus expects of a process's counters (`rate()` handles the restarts).
//!
//! The names differ from `wasmq serve`'s (`wasmq_worker_run_slots`, not `wasmq_worker_slots`),
//! so that a query over both jobs never adds a worker's slots to the registry's total.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use wasmq::worker::{WorkerHandle, WorkerStats};

use crate::metrics::{CONTENT_TYPE, Labels, counter, family, gauge, histogram};

/// The worker's metrics server: `GET /metrics` only, no token (see docs/operations.md: it shows
/// counts, never task data, and takes no action).
pub fn router(handle: WorkerHandle) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(handle)
}

async fn metrics(State(handle): State<WorkerHandle>) -> Response {
    let snap = Snapshot { worker: handle.stats(), process: Process::read() };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snap));
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// What one scrape reports.
#[derive(Debug)]
struct Snapshot {
    /// None before the worker connected to Redis (or after it stopped).
    worker: Option<WorkerStats>,
    process: Process,
}

/// This process's resources, from `/proc/self` (Linux; elsewhere every value is None and the
/// families are left out).
#[derive(Debug, Default)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
}

/// The kernel reports CPU times in `/proc` in USER_HZ ticks, 100 a second on every Linux
/// architecture Rust targets (it is part of the ABI, whatever the kernel's own HZ).
const USER_HZ: f64 = 100.0;

impl Process {
    pub fn read() -> Self {
        let mut p = Process::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kb = |key: &str| {
                status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map(|k| k * 1024)
            };
            p.resident_bytes = kb("VmRSS:");
            p.virtual_bytes = kb("VmSize:");
        }
        // Fields after the command name (which may hold spaces and parentheses): the 3rd field
        // of stat(5), the state, is the first here.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
            if let (Some(utime), Some(stime)) = (field(14), field(15)) {
                p.cpu_seconds = Some((utime + stime) as f64 / USER_HZ);
            }
            let boot = std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok()));
            if let (Some(boot), Some(start)) = (boot, field(22)) {
                p.start_time_seconds = Some(boot as f64 + start as f64 / USER_HZ);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            p.open_fds = Some(dir.count() as u64);
        }
        p
    }
}

fn one(v: f64) -> [(Labels, f64); 1] {
    [(Vec::new(), v)]
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        if let Some(w) = &self.worker {
            family(
                &mut e,
                "wasmq_worker_info",
                "This worker: its id and wasmq version (always 1)",
                MetricType::Gauge,
                [(vec![("id", w.id.clone()), ("version", w.version.clone())], 1.0)],
                gauge,
            )?;
            let r = &w.report;
            family(
                &mut e,
                "wasmq_worker_results",
                "Results this worker wrote since it started, by outcome (retried: a failed attempt that runs again; dead: failed for good; released: handed back unstarted; stale: refused, the lease had passed to another claim)",
                MetricType::Counter,
                [
                    ("succeeded", r.succeeded),
                    ("retried", r.retried),
                    ("dead", r.dead),
                    ("cancelled", r.cancelled),
                    ("released", r.released),
                    ("stale", r.stale),
                ]
                .map(|(o, n)| (vec![("outcome", o.to_string())], n)),
                counter,
            )?;
            family(
                &mut e,
                "wasmq_worker_run_slots",
                "Tasks this worker runs at once at most (--concurrency)",
                MetricType::Gauge,
                one(w.concurrency as f64),
                gauge,
            )?;
            family(&mut e, "wasmq_worker_running_tasks", "Run slots in use", MetricType::Gauge, one(w.busy as f64), gauge)?;
            family(&mut e, "wasmq_worker_held_tasks", "Tasks held: running and prefetched", MetricType::Gauge, one(w.held as f64), gauge)?;
            family(&mut e, "wasmq_worker_held_input_bytes", "Input bytes of the held tasks", MetricType::Gauge, one(w.held_bytes as f64), gauge)?;
            family(
                &mut e,
                "wasmq_worker_start_time_seconds",
                "When the worker started (Unix time)",
                MetricType::Gauge,
                one(w.started_ms as f64 / 1000.0),
                gauge,
            )?;
            family(
                &mut e,
                "wasmq_worker_run_seconds",
                "Wall time of this worker's runs, from taking a run slot to the end of the run (the result is written after)",
                MetricType::Histogram,
                [(Vec::new(), w.run_time.clone())],
                histogram,
            )?;
        }
        let p = &self.process;
        let opt = |v: Option<f64>| v.map(one).into_iter().flatten();
        family(&mut e, "process_cpu_seconds", "User and system CPU time of this process", MetricType::Counter, opt(p.cpu_seconds), |m, v: &f64| {
            m.encode_counter::<prometheus_client::encoding::NoLabelSet, f64, u64>(v, None)
        })?;
        family(&mut e, "process_resident_memory_bytes", "Resident memory of this process", MetricType::Gauge, opt(p.resident_bytes.map(|v| v as f64)), gauge)?;
        family(&mut e, "process_virtual_memory_bytes", "Virtual memory of this process", MetricType::Gauge, opt(p.virtual_bytes.map(|v| v as f64)), gauge)?;
        family(&mut e, "process_open_fds", "Open file descriptors of this process", MetricType::Gauge, opt(p.open_fds.map(|v| v as f64)), gauge)?;
        family(&mut e, "process_start_time_seconds", "When this process started (Unix time)", MetricType::Gauge, opt(p.start_time_seconds), gauge)?;
        Ok(())
    }
}
