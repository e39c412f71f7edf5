//! `/metrics`, in the Prometheus (OpenMetrics) text format, written with `prometheus-client`.
//!
//! Every value comes from running totals and index sizes the queue layer keeps, so a scrape costs
//! a bounded number of Redis commands per queue (the stats hash and the index sizes, the head of
//! the pending structure, one `TIME`), plus the worker registry and one `INFO memory`; nothing
//! counts by scanning tasks. The values are read at scrape time into a snapshot that a
//! [`Collector`] encodes: the counters are Redis's, not this process's, so they survive restarts
//! of the server and agree between several servers.

use axum::Router;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use wasmq::client::ClientError;
use wasmq::queue::{HISTOGRAM_BOUNDS_US, Histogram, QueueStats};

use crate::State;
use crate::api::ApiError;
use crate::auth::{Access, check};

pub fn routes() -> Router<State> {
    Router::new().route("/metrics", get(metrics))
}

/// The OpenMetrics text format's content type (Prometheus negotiates it).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One queue's values.
#[derive(Debug)]
struct QueueSnapshot {
    stats: QueueStats,
    /// Seconds since the next task to claim was enqueued (0: nothing pending).
    next_age_s: f64,
    live_workers: u64,
}

/// Everything one scrape reports.
#[derive(Debug, Default)]
struct Snapshot {
    queues: Vec<QueueSnapshot>,
    workers: u64,
    slots: u64,
    busy: u64,
    memory: Option<(u64, u64)>,
}

async fn metrics(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    check(&s, &headers, Access::Read)?;
    let snap = snapshot(&s).await?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snap));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response())
}

async fn snapshot(s: &State) -> Result<Snapshot, ClientError> {
    let c = &s.client;
    let mut conn = c.conn();
    let workers = c.workers().await?;
    let mut snap = Snapshot {
        workers: workers.len() as u64,
        slots: workers.iter().map(|w| w.concurrency).sum(),
        busy: workers.iter().map(|w| w.busy).sum(),
        ..Default::default()
    };
    let queues = c.queues().await?;
    let now = match queues.first() {
        Some(q) => Some(c.db().now_ms(&mut conn, q).await?),
        None => None,
    };
    for q in &queues {
        let stats = c.stats(q).await?;
        let created = c.db().next_task_created_ms(&mut conn, q).await?;
        let next_age_s = match (created, now) {
            (Some(t), Some(now)) => now.saturating_sub(t) as f64 / 1000.0,
            _ => 0.0,
        };
        let live_workers = workers.iter().filter(|w| w.queues.iter().any(|x| x == q.as_str())).count() as u64;
        snap.queues.push(QueueSnapshot { stats, next_age_s, live_workers });
    }
    if let Some(q) = queues.first() {
        snap.memory = Some(c.memory(q).await?);
    }
    Ok(snap)
}

pub(crate) type Labels = Vec<(&'static str, String)>;

/// One metric family: a descriptor, then each label set's value.
pub(crate) fn family<T>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, T)>,
    mut write: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, &T) -> std::fmt::Result,
) -> std::fmt::Result {
    let rows: Vec<(Labels, T)> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in &rows {
        if labels.is_empty() {
            // Without labels: `name value`, not `name{} value`.
            write(&mut m, v)?;
        } else {
            let mut f = m.encode_family(labels)?;
            write(&mut f, v)?;
        }
    }
    Ok(())
}

pub(crate) fn counter(m: &mut prometheus_client::encoding::MetricEncoder, v: &u64) -> std::fmt::Result {
    m.encode_counter::<NoLabelSet, u64, u64>(v, None)
}

pub(crate) fn gauge(m: &mut prometheus_client::encoding::MetricEncoder, v: &f64) -> std::fmt::Result {
    m.encode_gauge(v)
}

pub(crate) fn histogram(m: &mut prometheus_client::encoding::MetricEncoder, h: &Histogram) -> std::fmt::Result {
    // Non-cumulative counts: the encoder sums them into `le` buckets.
    let mut buckets: Vec<(f64, u64)> = HISTOGRAM_BOUNDS_US.iter().zip(&h.buckets).map(|(b, n)| (*b as f64 / 1e6, *n)).collect();
    buckets.push((f64::INFINITY, h.buckets.get(HISTOGRAM_BOUNDS_US.len()).copied().unwrap_or(0)));
    m.encode_histogram::<NoLabelSet>(h.sum_us as f64 / 1e6, h.count, &buckets, None)
}

fn q(name: &str) -> Labels {
    vec![("queue", name.to_string())]
}

fn qs(name: &str, k: &'static str, v: &str) -> Labels {
    vec![("queue", name.to_string()), (k, v.to_string())]
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let qv = &self.queues;
        family(
            &mut e,
            "wasmq_tasks_finished",
            "Tasks that finished, by queue and outcome (since the queue was created)",
            MetricType::Counter,
            qv.iter().flat_map(|x| {
                let s = &x.stats;
                [("succeeded", s.succeeded_total), ("dead", s.dead_total), ("cancelled", s.cancelled_total), ("expired", s.expired_total)]
                    .map(|(o, n)| (qs(&s.queue, "outcome", o), n))
            }),
            counter,
        )?;
        family(
            &mut e,
            "wasmq_tasks_enqueued",
            "Tasks enqueued, by queue",
            MetricType::Counter,
            qv.iter().map(|x| (q(&x.stats.queue), x.stats.enqueued_total)),
            counter,
        )?;
        family(
            &mut e,
            "wasmq_task_attempts_retried",
            "Failed attempts that were retried, by queue",
            MetricType::Counter,
            qv.iter().map(|x| (q(&x.stats.queue), x.stats.retried_total)),
            counter,
        )?;
        family(
            &mut e,
            "wasmq_tasks",
            "Tasks by queue and state now (finished states: those retention keeps)",
            MetricType::Gauge,
            qv.iter().flat_map(|x| {
                let s = &x.stats;
                [
                    ("pending", s.pending),
                    ("delayed", s.delayed),
                    ("blocked", s.blocked),
                    ("active", s.active),
                    ("succeeded", s.succeeded),
                    ("dead", s.dead),
                    ("cancelled", s.cancelled),
                    ("expired", s.expired),
                ]
                .map(|(st, n)| (qs(&s.queue, "state", st), n as f64))
            }),
            gauge,
        )?;
        family(
            &mut e,
            "wasmq_queue_paused",
            "1 when the queue is paused",
            MetricType::Gauge,
            qv.iter().map(|x| (q(&x.stats.queue), if x.stats.paused { 1.0 } else { 0.0 })),
            gauge,
        )?;
        family(
            &mut e,
            "wasmq_queue_next_task_age_seconds",
            "How long the task a worker would claim next has been waiting since it was enqueued (0: none pending)",
            MetricType::Gauge,
            qv.iter().map(|x| (q(&x.stats.queue), x.next_age_s)),
            gauge,
        )?;
        family(
            &mut e,
            "wasmq_queue_last_claim_timestamp_seconds",
            "When a worker last claimed a task of the queue (Unix time; absent: never)",
            MetricType::Gauge,
            qv.iter().filter_map(|x| x.stats.last_claim_ms.map(|t| (q(&x.stats.queue), t as f64 / 1000.0))),
            gauge,
        )?;
        family(
            &mut e,
            "wasmq_queue_workers",
            "Live workers that serve the queue",
            MetricType::Gauge,
            qv.iter().map(|x| (q(&x.stats.queue), x.live_workers as f64)),
            gauge,
        )?;
        family(
            &mut e,
            "wasmq_task_run_seconds",
            "Run time of attempts, by queue",
            MetricType::Histogram,
            qv.iter().map(|x| (q(&x.stats.queue), x.stats.run_time.clone())),
            histogram,
        )?;
        family(
            &mut e,
            "wasmq_task_wait_seconds",
            "Wait from enqueue to the first claim, by queue",
            MetricType::Histogram,
            qv.iter().map(|x| (q(&x.stats.queue), x.stats.wait_time.clone())),
            histogram,
        )?;
        let none: Labels = Vec::new();
        family(&mut e, "wasmq_workers", "Live workers (the registry)", MetricType::Gauge, [(none.clone(), self.workers as f64)], gauge)?;
        family(&mut e, "wasmq_worker_slots", "Run slots of all live workers", MetricType::Gauge, [(none.clone(), self.slots as f64)], gauge)?;
        family(&mut e, "wasmq_worker_busy_slots", "Run slots in use on all live workers", MetricType::Gauge, [(none.clone(), self.busy as f64)], gauge)?;
        if let Some((used, max)) = self.memory {
            family(&mut e, "wasmq_redis_memory_used_bytes", "Redis used_memory", MetricType::Gauge, [(none.clone(), used as f64)], gauge)?;
            family(&mut e, "wasmq_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)", MetricType::Gauge, [(none, max as f64)], gauge)?;
        }
        Ok(())
    }
}
