//! Operating a deployment: a worker's own `/metrics` (`wasmq worker --metrics-listen`), and the
//! alert rules of docs/deployment.md checked against a real scrape of `wasmq serve`'s `/metrics`.

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

/// `GET path` over a plain loopback socket: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), body.to_string())
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition")
}

/// The one value of `metric` whose labels include `labels`.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<_> = scrape.samples.iter().filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).collect();
    assert!(found.len() <= 1, "{metric} {labels:?}: {found:?}");
    found.first().map(|s| match s.value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric}: {other:?}"),
    })
}

#[test]
fn ops_worker_metrics_count_the_tasks_it_ran() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    w.push(&fixture("echo.wat"), "echo");
    w.push(&fixture("trap.wat"), "trap");
    let mut ids: Vec<String> = (0..3).map(|i| w.enqueue("echo", &format!("m{i}"), &["--queue", "wm"])).collect();
    // Fails twice: one retry, then dead.
    ids.push(w.enqueue("trap", "", &["--queue", "wm", "--max-attempts", "2"]));

    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = w
        .cmd()
        .args(["worker", "--queue", "wm", "--concurrency", "2", "--id", "metrics-w1", "--backoff-base", "0s", "--backoff-cap", "0s"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .spawn()
        .expect("spawn worker");
    let stdout = child.stdout.take().unwrap();
    let worker = WorkerProcess { child: Some(child), log };
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("metrics on http://").unwrap_or_else(|| panic!("worker printed {line:?}: {}", worker.log()));
    let addr = url.strip_suffix("/metrics").expect("the /metrics path").to_string();

    // Every task finished, and the worker counted every result.
    let scrape = eventually(Duration::from_secs(60), || {
        let (status, text) = get(&addr, "/metrics");
        assert_eq!(status, 200, "{text}");
        let s = parse(&text);
        let done = |o| value(&s, "wasmq_worker_results_total", &[("outcome", o)]).unwrap_or(0.0);
        (done("succeeded") == 3.0 && done("dead") == 1.0).then_some((s, text))
    });
    let (scrape, text) = scrape.unwrap_or_else(|| panic!("the worker's counters never reached 3 succeeded, 1 dead: {}", worker.log()));
    for id in &ids {
        assert!(matches!(w.status(id).unwrap()["state"].as_str(), Some("succeeded" | "dead")), "{id}");
    }
    let results = |o| value(&scrape, "wasmq_worker_results_total", &[("outcome", o)]);
    assert_eq!(results("retried"), Some(1.0), "{text}");
    assert_eq!(results("cancelled"), Some(0.0));
    assert_eq!(results("stale"), Some(0.0));
    assert_eq!(value(&scrape, "wasmq_worker_info", &[("id", "metrics-w1"), ("version", env!("CARGO_PKG_VERSION"))]), Some(1.0), "{text}");
    assert_eq!(value(&scrape, "wasmq_worker_run_slots", &[]), Some(2.0));
    assert_eq!(value(&scrape, "wasmq_worker_running_tasks", &[]), Some(0.0));
    assert_eq!(value(&scrape, "wasmq_worker_held_tasks", &[]), Some(0.0));
    // Five runs: three echoes, two attempts of the trap.
    assert_eq!(value(&scrape, "wasmq_worker_run_seconds_count", &[]), Some(5.0), "{text}");
    let hist = scrape.samples.iter().find_map(|s| match (&s.metric[..], &s.value) {
        ("wasmq_worker_run_seconds", prometheus_parse::Value::Histogram(b)) => Some(b.clone()),
        _ => None,
    });
    let hist = hist.unwrap_or_else(|| panic!("a run time histogram: {text}"));
    assert_eq!(hist.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count), Some(5.0));
    // The process: resident memory, CPU time, start time.
    assert!(value(&scrape, "process_resident_memory_bytes", &[]).unwrap() > 1e6, "{text}");
    // In ticks of 10 ms: a worker that ran five tiny tasks may not have used one yet.
    assert!(value(&scrape, "process_cpu_seconds_total", &[]).unwrap() >= 0.0, "{text}");
    let started = value(&scrape, "process_start_time_seconds", &[]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - started).abs() < 300.0, "started {started}, now {now}");
    // The same counts as the registry entry the worker writes (every second).
    let entry = eventually(Duration::from_secs(10), || {
        let workers: serde_json::Value = serde_json::from_str(&w.ok(&["workers", "--json"])).unwrap();
        workers.as_array().unwrap().iter().find(|e| e["id"] == "metrics-w1" && e["succeeded"] == 3).cloned()
    });
    assert_eq!(entry.expect("the registry entry shows 3 succeeded")["failed"], 1);
    // Only /metrics.
    assert_eq!(get(&addr, "/").0, 404);
}

/// The ```yaml blocks of a Markdown file.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    markdown.split("```yaml\n").skip(1).map(|b| b.split("\n```").next().unwrap_or_default().to_string()).collect()
}

/// A metric name and its label matchers `(label, op, value)`.
type Selector = (String, Vec<(String, String, String)>);

/// Every metric selector in `text`: a name starting with `wasmq_` or `process_`, and its label
/// matchers `(label, op, value)` when braces follow.
fn selectors(text: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let at_word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if at_word_start && (rest.starts_with("wasmq_") || rest.starts_with("process_")) {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = rest[..len].to_string();
            let mut matchers = Vec::new();
            if let Some(body) = rest[len..].strip_prefix('{') {
                let body = body.split('}').next().unwrap_or_default();
                for m in body.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                    let op = ["=~", "!~", "!=", "="].into_iter().find(|op| m.contains(op)).expect("a label matcher");
                    let (label, value) = m.split_once(op).unwrap();
                    matchers.push((label.trim().to_string(), op.to_string(), value.trim().trim_matches('"').to_string()));
                }
            }
            out.push((name, matchers));
            i += len;
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// The metric names and label values the alert rules and the KEDA example of
/// docs/deployment.md use all exist in a real scrape of `wasmq serve`'s `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_deployment_alert_rules_use_real_metrics() {
    use tower::ServiceExt;
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/deployment.md")).unwrap();
    let blocks = yaml_blocks(&doc);
    let rules = blocks.iter().find(|b| b.contains("alert:")).expect("a block of alert rules");
    let keda = blocks.iter().find(|b| b.contains("kind: ScaledObject")).expect("a KEDA ScaledObject");
    for alert in ["WasmqQueueWithoutWorkers", "WasmqQueueNotConsumed", "WasmqDeadTasksRising"] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    assert!(keda.contains("type: prometheus"));

    // A deployment that has every family: a queue (the doc's `default`) with finished, dead and
    // pending tasks, and a claim.
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    w.push(&fixture("echo.wat"), "echo");
    w.push(&fixture("trap.wat"), "trap");
    w.enqueue("echo", "a", &[]);
    w.enqueue("trap", "", &["--max-attempts", "1"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert!(worker.wait(Duration::from_secs(60)).is_some(), "{}", worker.log());
    w.enqueue("echo", "b", &[]);
    let client = wasmq::client::Client::connect(wasmq::conn::RedisOptions::new(server.url()), "wasmq").await.expect("connect");
    let app = wasmq_serve::router(client, wasmq_serve::ServeConfig::default()).expect("router");
    let req = axum::http::Request::builder().uri("/metrics").body(axum::body::Body::empty()).unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let scrape = parse(&text);

    let used: Vec<_> = blocks.iter().flat_map(|b| selectors(b)).collect();
    assert!(used.len() >= 8, "{used:?}");
    for (name, matchers) in &used {
        let of_name: Vec<_> = scrape.samples.iter().filter(|s| &s.metric == name).collect();
        assert!(!of_name.is_empty(), "docs/deployment.md uses {name}, which /metrics does not export:\n{text}");
        for (label, op, value) in matchers {
            let values: Vec<&str> = match op.as_str() {
                "=" => vec![value.as_str()],
                "=~" => value.split('|').collect(),
                _ => vec![],
            };
            for v in values {
                assert!(
                    of_name.iter().any(|s| s.labels.get(label) == Some(v)),
                    "docs/deployment.md selects {name}{{{label}{op}\"{value}\"}}: no sample has {label}=\"{v}\":\n{text}"
                );
            }
        }
    }
}

/// `wasmq bench -s api` runs end to end at a tiny size and reports every figure (which are
/// never asserted: this machine's are in docs/performance.md).
#[test]
fn ops_bench_api_scenario_smoke() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = w.run(&["bench", "-s", "api", "--tasks", "200", "--api-clients", "4", "--page-tasks", "300", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let metrics = report["metrics"].as_array().unwrap();
    assert!(!metrics.iter().any(|m| m["name"] == "failed"), "{metrics:?}\n{}", String::from_utf8_lossy(&out.stderr));
    let value = |name: &str| metrics.iter().find(|m| m["name"] == name).and_then(|m| m["value"].as_f64());
    assert!(value("enqueue rate, POST /v1/queues/{q}/tasks, 4 clients").is_some_and(|v| v > 0.0), "{metrics:?}");
    assert!(value("GET /v1/tasks/{id} p99 under enqueue load").is_some(), "{metrics:?}");
    for page in ["/", "/queues/{q}?state=succeeded", "/queues/{q}?state=dead", "/tasks/{id} (dead)", "/workers", "/modules"] {
        let n = value(&format!("Redis commands, GET {page}")).unwrap_or_else(|| panic!("{page}: {metrics:?}"));
        assert!(n >= 1.0, "{page} costs {n} commands");
    }
}
