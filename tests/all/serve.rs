//! `wasmq serve`: the API's routes driven through the real router with axum's `oneshot`, against
//! a real redis-server and a real worker; `/metrics` parsed by a Prometheus parser; the binary
//! listening on a loopback port; the dashboard in headless Chromium (`serve_browser`).

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::*;

const TOKEN: &str = "test-token-0123456789abcdef";

/// A router over the server's Redis with `config`.
async fn app(server: &RedisServer, config: wasmq_serve::ServeConfig) -> axum::Router {
    let client = wasmq::client::Client::connect(wasmq::conn::RedisOptions::new(server.url()), "wasmq").await.expect("connect");
    let config = wasmq_serve::ServeConfig { max_module_size: 1 << 20, max_input_size: 1 << 20, ..config };
    wasmq_serve::router(client, config).expect("router")
}

fn with_token() -> wasmq_serve::ServeConfig {
    wasmq_serve::ServeConfig { token: Some(TOKEN.into()), ..Default::default() }
}

/// One request through the router: status, headers and body (JSON when it parses, else a string).
async fn call(app: &axum::Router, method: Method, uri: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> (StatusCode, Value) {
    let (status, _, body) = call_raw(app, method, uri, token, body, &[]).await;
    (status, serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())))
}

async fn call_raw(
    app: &axum::Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let req = match body {
        Some((ct, b)) => r.header(header::CONTENT_TYPE, ct).body(Body::from(b)).unwrap(),
        None => r.body(Body::empty()).unwrap(),
    };
    let resp = tokio::time::timeout(Duration::from_secs(30), app.clone().oneshot(req)).await.expect("answered in time").expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.expect("body");
    (status, headers, bytes.to_vec())
}

fn json_body(v: Value) -> Option<(&'static str, Vec<u8>)> {
    Some(("application/json", serde_json::to_vec(&v).unwrap()))
}

fn wasm(name: &str) -> Vec<u8> {
    wat::parse_file(fixture(name)).expect("fixture compiles")
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_api_routes_auth_and_bad_input() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    let app = app(&server, with_token()).await;

    // Push a module: token, content type and the bytes are checked.
    let push = || Some(("application/wasm", wasm("echo.wat")));
    let (s, v) = call(&app, Method::POST, "/v1/modules?name=echo", None, push()).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, v) = call(&app, Method::POST, "/v1/modules?name=echo", Some("wrong-token-0123456789"), push()).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, v) = call(&app, Method::POST, "/v1/modules?name=echo", Some(TOKEN), Some(("text/plain", b"x".to_vec()))).await;
    assert_eq!((s, code(&v)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    let (s, v) = call(&app, Method::POST, "/v1/modules?name=echo", Some(TOKEN), Some(("application/wasm", b"\0asm garbage".to_vec()))).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_module"), "{v}");
    let (s, v) = call(&app, Method::POST, "/v1/modules?name=echo", Some(TOKEN), Some(("application/wasm", vec![0u8; (1 << 20) + 1]))).await;
    assert_eq!((s, code(&v)), (StatusCode::PAYLOAD_TOO_LARGE, "module_too_large"), "{v}");
    let (s, v) = call(&app, Method::POST, "/v1/modules?name=echo", Some(TOKEN), push()).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    let (s, v) = call(&app, Method::POST, "/v1/modules?name=trap", Some(TOKEN), Some(("application/wasm", wasm("trap.wat")))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(&app, Method::GET, "/v1/modules", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["modules"].as_array().unwrap().len(), 2);

    // Enqueue: bad input is a 4xx with a stable code, never a 500.
    let enq = "/v1/queues/api/tasks";
    let (s, v) = call(&app, Method::POST, enq, None, json_body(json!({"module": "echo", "input": "x"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    for (body, want) in [
        (Some(("application/json", b"{not json".to_vec())), "invalid_json"),
        (json_body(json!({"module": "echo", "inptu": "typo"})), "invalid_json"),
        (json_body(json!({"module": "echo", "input": "a", "input_json": 1})), "invalid"),
        (json_body(json!({"module": "echo", "timeout": "soon"})), "invalid"),
        (json_body(json!({"module": "echo", "priority": 99999999})), "invalid"),
        (json_body(json!({"module": "echo", "input_base64": "!!"})), "invalid"),
        (json_body(json!({"module": "echo", "after": ["nope"]})), "invalid_id"),
        (json_body(json!({"module": "echo", "inputs": []})), "invalid"),
        (json_body(json!({"module": "echo", "expires": "whenever"})), "invalid"),
    ] {
        let (s, v) = call(&app, Method::POST, enq, Some(TOKEN), body).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, want), "{v}");
    }
    let (s, v) = call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "nosuch"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_module"));
    let (s, v) = call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "echo", "after": ["api:999"]}))).await;
    assert_eq!((s, code(&v)), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_parent"), "{v}");
    let (s, v) = call(&app, Method::POST, "/v1/queues/bad%20name/tasks", Some(TOKEN), json_body(json!({"module": "echo"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_queue"), "{v}");

    let (s, v) =
        call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "echo", "input": "hello", "priority": 5, "max_attempts": 2, "timeout": "10s"})))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let text_id = v["id"].as_str().unwrap().to_string();
    let (_, v) = call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "echo", "input_json": {"a": [1, 2]}}))).await;
    let json_id = v["id"].as_str().unwrap().to_string();
    let (_, v) = call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "echo", "input_base64": "/wA="}))).await;
    let bin_id = v["id"].as_str().unwrap().to_string();
    let (s, v) = call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "echo", "inputs": [{"input": "b1"}, {"input_json": 2}, {}]}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let batch: Vec<String> = v["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
    assert_eq!(batch.len(), 3);
    let (_, v) = call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "trap", "max_attempts": 1}))).await;
    let dead_id = v["id"].as_str().unwrap().to_string();

    // Read: pending as `status --json` shows it; unknown 404; malformed 400; wait bounded.
    let (s, v) = call(&app, Method::GET, &format!("/v1/tasks/{text_id}"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((v["state"].as_str(), v["priority"].as_i64(), v["max_attempts"].as_u64()), (Some("pending"), Some(5), Some(2)));
    assert_eq!(v, w.status(&text_id).unwrap(), "the API shows the task as status --json does");
    let (s, v) = call(&app, Method::GET, "/v1/tasks/api:424242", None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_task"));
    let (s, v) = call(&app, Method::GET, "/v1/tasks/api:424242?wait=1s", None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_task"));
    let (s, v) = call(&app, Method::GET, "/v1/tasks/nonsense", None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_id"));
    let (s, v) = call(&app, Method::GET, &format!("/v1/tasks/{text_id}?wait=2h"), None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid"));
    let (s, v) = call(&app, Method::GET, &format!("/v1/tasks/{text_id}?wiat=1s"), None, None).await;
    assert!(s.is_client_error(), "{s} {v}");
    let (s, v) = call(&app, Method::GET, "/v1/nothing", None, None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));

    // A long poll that the worker's completion ends (through the shared listener), well before
    // its deadline.
    let started = std::time::Instant::now();
    let poll = {
        let app = app.clone();
        let id = text_id.clone();
        tokio::spawn(async move { call(&app, Method::GET, &format!("/v1/tasks/{id}?wait=30s"), None, None).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut worker = w.spawn_worker(&["--queue", "api", "--concurrency", "2"]);
    let (s, v) = poll.await.unwrap();
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("succeeded")), "{v}");
    assert_eq!(v["output_text"], "hello");
    assert!(started.elapsed() < Duration::from_secs(25), "the wait ended with the task, not at its deadline");
    let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{json_id}?wait=20s"), None, None).await;
    assert_eq!((v["state"].as_str(), &v["output"]), (Some("succeeded"), &json!({"a": [1, 2]})), "{v}");
    let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{bin_id}?wait=20s"), None, None).await;
    assert_eq!((v["output_text"].clone(), v["output_base64"].as_str()), (Value::Null, Some("/wA=")), "{v}");
    for id in &batch {
        let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{id}?wait=20s"), None, None).await;
        assert_eq!(v["state"], "succeeded", "{v}");
    }
    let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{dead_id}?wait=20s"), None, None).await;
    assert_eq!(v["state"], "dead", "{v}");
    // Many long polls at once share the listener: no connection per request.
    let polls: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let (_, v) = call(&app, Method::POST, "/v1/queues/api/tasks", Some(TOKEN), json_body(json!({"module": "echo", "input": "p"}))).await;
                let id = v["id"].as_str().unwrap().to_string();
                call(&app, Method::GET, &format!("/v1/tasks/{id}?wait=20s"), None, None).await
            })
        })
        .collect();
    for p in polls {
        let (s, v) = p.await.unwrap();
        assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("succeeded")), "{v}");
    }

    // Cancel: a delayed task, then again (409), an unknown one (404).
    let (_, v) = call(&app, Method::POST, enq, Some(TOKEN), json_body(json!({"module": "echo", "delay": "1h"}))).await;
    let later = v["id"].as_str().unwrap().to_string();
    let (s, _) = call(&app, Method::POST, &format!("/v1/tasks/{later}/cancel"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = call(&app, Method::POST, &format!("/v1/tasks/{later}/cancel"), Some(TOKEN), None).await;
    assert_eq!((s, v["outcome"].as_str()), (StatusCode::OK, Some("cancelled")), "{v}");
    let (s, v) = call(&app, Method::POST, &format!("/v1/tasks/{later}/cancel"), Some(TOKEN), None).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "already_finished"));
    let (s, v) = call(&app, Method::POST, "/v1/tasks/api:999999/cancel", Some(TOKEN), None).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "unknown_task"));
    // `expires` as `enqueue --expires` takes it: a time already past expires the task at once.
    let (_, v) =
        call(&app, Method::POST, "/v1/queues/api-exp/tasks", Some(TOKEN), json_body(json!({"module": "echo", "expires": "2000-01-01T00:00:00Z"}))).await;
    let gone = v["id"].as_str().expect("an id").to_string();
    let (s, v) = call(&app, Method::GET, &format!("/v1/tasks/{gone}"), None, None).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("expired")), "{v}");

    // Queues and workers.
    let (s, v) = call(&app, Method::GET, "/v1/queues", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let q = v["queues"].as_array().unwrap().iter().find(|q| q["queue"] == "api").expect("queue api listed").clone();
    assert_eq!((q["succeeded"].as_u64(), q["dead"].as_u64(), q["cancelled"].as_u64()), (Some(26), Some(1), Some(1)), "{q}");
    let (s, v) = call(&app, Method::GET, "/v1/queues/api", None, None).await;
    assert_eq!((s, v["pending"].as_u64()), (StatusCode::OK, Some(0)));
    let (s, v) = call(&app, Method::GET, "/v1/workers", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["workers"].as_array().unwrap().iter().any(|x| x["queues"] == json!(["api"])), "{v}");

    // Queue actions: pause/resume, retry the dead task, purge.
    let (s, v) = call(&app, Method::POST, "/v1/queues/api/pause", Some(TOKEN), None).await;
    assert_eq!((s, v["paused"].as_bool()), (StatusCode::OK, Some(true)));
    let (s, v) = call(&app, Method::POST, "/v1/queues/api/dead/retry", Some(TOKEN), json_body(json!({"ids": [dead_id.clone()]}))).await;
    assert_eq!((s, v["retried"].clone()), (StatusCode::OK, json!([dead_id.clone()])), "{v}");
    let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{dead_id}"), None, None).await;
    assert_eq!(v["state"], "pending");
    let (s, v) = call(&app, Method::POST, "/v1/queues/api/dead/retry", Some(TOKEN), json_body(json!({"ids": ["other:1"]}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_id"));
    let (s, _) = call(&app, Method::POST, "/v1/queues/api/resume", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = call(&app, Method::POST, "/v1/queues/api/purge", Some(TOKEN), json_body(json!({"state": "pending"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid"));
    let (s, v) = call(&app, Method::POST, "/v1/queues/api/purge", Some(TOKEN), json_body(json!({"state": "cancelled"}))).await;
    assert_eq!((s, v["purged"].as_u64()), (StatusCode::OK, Some(1)), "{v}");
    worker.stop();

    // --read-only refuses every action, even with the token; reads still work.
    let ro = app_with(&server, wasmq_serve::ServeConfig { read_only: true, ..with_token() }).await;
    for (m, uri) in [
        (Method::POST, "/v1/queues/api/tasks"),
        (Method::POST, "/v1/queues/api/pause"),
        (Method::POST, "/v1/tasks/api:1/cancel"),
        (Method::POST, "/v1/modules"),
        (Method::POST, "/v1/queues/api/dead/retry"),
        (Method::POST, "/v1/queues/api/purge"),
    ] {
        let (s, v) = call(&ro, m, uri, Some(TOKEN), json_body(json!({"module": "echo"}))).await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "read_only"), "{uri}");
    }
    assert_eq!(call(&ro, Method::GET, "/v1/queues", None, None).await.0, StatusCode::OK);

    // --auth-read: reads need the token too.
    let ar = app_with(&server, wasmq_serve::ServeConfig { auth_read: true, ..with_token() }).await;
    for uri in ["/v1/queues", "/v1/workers", "/v1/modules", "/v1/queues/api", "/metrics"] {
        let (s, _) = call(&ar, Method::GET, uri, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        let (s, _) = call(&ar, Method::GET, uri, Some(TOKEN), None).await;
        assert_eq!(s, StatusCode::OK, "{uri}");
    }
    let (s, _) = call(&ar, Method::GET, &format!("/v1/tasks/{text_id}"), None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Without a token (loopback only), actions are open.
    let open = app_with(&server, wasmq_serve::ServeConfig::default()).await;
    let (s, v) = call(&open, Method::POST, "/v1/queues/open/tasks", None, json_body(json!({"module": "echo"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn app_with(server: &RedisServer, config: wasmq_serve::ServeConfig) -> axum::Router {
    app(server, config).await
}

#[test]
fn serve_refuses_an_open_address_without_a_token() {
    let any: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let lo6: std::net::SocketAddr = "[::1]:8080".parse().unwrap();
    assert!(wasmq_serve::ServeConfig::default().for_address(any).is_err());
    assert!(wasmq_serve::ServeConfig::default().for_address(lo).is_ok());
    assert!(wasmq_serve::ServeConfig::default().for_address(lo6).is_ok());
    let c = with_token().for_address(any).unwrap();
    assert!(c.auth_read, "off loopback, reads need the token too");
    let weak = wasmq_serve::ServeConfig { token: Some("short".into()), ..Default::default() };
    assert!(weak.for_address(lo).is_err());

    // The binary says so and exits with the usage code.
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    let out = w.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));
}

/// The samples of one metric whose labels include `labels`, as (value, sample).
fn samples<'a>(scrape: &'a prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a prometheus_parse::Sample> {
    scrape.samples.iter().filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).collect()
}

fn scalar(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(scrape, metric, labels);
    assert_eq!(found.len(), 1, "one sample of {metric} {labels:?}, got {found:?}");
    match found[0].value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_metrics_parse_and_match_queue_stats() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    w.push(&fixture("echo.wat"), "echo");
    w.push(&fixture("trap.wat"), "trap");
    for i in 0..3 {
        w.enqueue("echo", &format!("m{i}"), &["--queue", "m"]);
    }
    w.enqueue("trap", "", &["--queue", "m", "--max-attempts", "1"]);
    let later = w.enqueue("echo", "", &["--queue", "m", "--delay", "1h"]);
    w.ok(&["cancel", &later]);
    let app = app(&server, wasmq_serve::ServeConfig::default()).await;

    // Before any claim: the next task's age grows, no claim time yet.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, headers, body) = call_raw(&app, Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().contains("openmetrics-text"));
    let text = String::from_utf8(body).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition");
    assert!(scalar(&scrape, "wasmq_queue_next_task_age_seconds", &[("queue", "m")]) >= 1.0, "{text}");
    assert!(samples(&scrape, "wasmq_queue_last_claim_timestamp_seconds", &[("queue", "m")]).is_empty(), "{text}");
    assert_eq!(scalar(&scrape, "wasmq_tasks", &[("queue", "m"), ("state", "pending")]), 4.0);

    let mut worker = w.spawn_worker(&["--queue", "m", "--exit-when-idle"]);
    assert!(worker.wait(Duration::from_secs(60)).is_some(), "worker finished: {}", worker.log());

    let (_, _, body) = call_raw(&app, Method::GET, "/metrics", None, None, &[]).await;
    let text = String::from_utf8(body).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition");
    let stats: Value = serde_json::from_str(&w.ok(&["queue", "stats", "--queue", "m", "--json"])).unwrap();
    let st = &stats[0];
    for (outcome, field) in [("succeeded", "succeeded_total"), ("dead", "dead_total"), ("cancelled", "cancelled_total"), ("expired", "expired_total")] {
        let v = scalar(&scrape, "wasmq_tasks_finished_total", &[("queue", "m"), ("outcome", outcome)]);
        assert_eq!(v, st[field].as_u64().unwrap() as f64, "{outcome}: {text}");
    }
    assert_eq!((st["succeeded_total"].as_u64(), st["dead_total"].as_u64(), st["cancelled_total"].as_u64()), (Some(3), Some(1), Some(1)));
    assert_eq!(scalar(&scrape, "wasmq_tasks_enqueued_total", &[("queue", "m")]), st["enqueued_total"].as_u64().unwrap() as f64);
    for state in ["pending", "delayed", "blocked", "active", "succeeded", "dead", "cancelled", "expired"] {
        assert_eq!(scalar(&scrape, "wasmq_tasks", &[("queue", "m"), ("state", state)]), st[state].as_u64().unwrap() as f64, "{state}");
    }
    assert_eq!(scalar(&scrape, "wasmq_queue_next_task_age_seconds", &[("queue", "m")]), 0.0);
    let claimed = scalar(&scrape, "wasmq_queue_last_claim_timestamp_seconds", &[("queue", "m")]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((now - claimed).abs() < 120.0, "last claim {claimed}, now {now}");
    assert_eq!(st["last_claim_ms"].as_f64().unwrap() / 1000.0, claimed);
    // Histograms: every attempt's run time (4 attempts), every first claim's wait (4 tasks).
    for (metric, n) in [("wasmq_task_run_seconds", 4.0), ("wasmq_task_wait_seconds", 4.0)] {
        let h = samples(&scrape, metric, &[("queue", "m")]);
        let buckets = h.iter().find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => Some(b.clone()),
            _ => None,
        });
        let buckets = buckets.unwrap_or_else(|| panic!("{metric} histogram in {text}"));
        let inf = buckets.iter().find(|b| b.less_than.is_infinite()).expect("+Inf bucket");
        assert_eq!(inf.count, n, "{metric}: {text}");
        assert!(buckets.windows(2).all(|w| w[0].count <= w[1].count), "cumulative buckets");
        assert_eq!(scalar(&scrape, &format!("{metric}_count"), &[("queue", "m")]), n);
    }
    let waits = samples(&scrape, "wasmq_task_wait_seconds", &[("queue", "m")]);
    assert!(!waits.is_empty());
    assert!(scalar(&scrape, "wasmq_task_wait_seconds_sum", &[("queue", "m")]) >= 1.0 * 4.0, "each task waited over a second: {text}");
    assert!(scalar(&scrape, "wasmq_redis_memory_used_bytes", &[]) > 0.0);
    assert_eq!(scalar(&scrape, "wasmq_workers", &[]), 0.0, "the worker exited and left the registry");
}

/// One HTTP/1.1 request to the server over a plain loopback socket: status line, headers, body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to wasmq serve");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The Chromium binary (Debian's package); the tests that need it do not skip without it.
fn chromium_bin() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("chromium is not installed: `apt-get install chromium` (.ci/run installs it); this test does not skip")
}

/// The flags every headless run takes: no sandbox (containers), no GPU, nothing that reaches
/// out to the internet (the machine has none), a fresh profile.
fn chromium_command(profile: &std::path::Path) -> Command {
    let mut c = Command::new(chromium_bin());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Headless Chromium, one shot: a screenshot of a page.
fn chromium_screenshot(url: &str, to: &std::path::Path) {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium_command(profile.path())
        .args(["--virtual-time-budget=3000", "--timeout=20000", "--window-size=1280,800"])
        .arg(format!("--screenshot={}", to.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium --screenshot: {}", String::from_utf8_lossy(&out.stderr));
}

/// Headless Chromium driven over the DevTools protocol on a loopback WebSocket: it loads pages,
/// types into fields and clicks buttons as a user does, and the test reads the DOM it shows.
/// Every wait is bounded by the socket's read timeout.
struct Browser {
    child: std::process::Child,
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = chromium_command(profile.path())
            .args(["--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromium");
        // Chromium writes the port it took into the profile (first line).
        let port_file = profile.path().join("DevToolsActivePort");
        let mut port = None;
        for _ in 0..300 {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u16>().ok())) {
                port = Some(p);
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let port = port.expect("chromium wrote DevToolsActivePort within 30 s");
        let addr = format!("127.0.0.1:{port}");
        let targets = devtools_targets(&addr);
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let stream = std::net::TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (ws, _) = tungstenite::client::client(url.as_str(), stream).expect("DevTools WebSocket");
        let mut b = Browser { child, ws, next_id: 0, _profile: profile };
        b.call("Page.enable", json!({}));
        b
    }

    /// Sends one command and returns its result; events that arrive meanwhile are dropped.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(tungstenite::Message::Text(json!({"id": id, "method": method, "params": params}).to_string().into())).expect("send to chromium");
        loop {
            let m = self.read();
            if m["id"] == id {
                assert!(m.get("error").is_none(), "{method}: {m}");
                return m["result"].clone();
            }
        }
    }

    fn read(&mut self) -> Value {
        match self.ws.read().expect("a DevTools message within 20 s") {
            tungstenite::Message::Text(t) => serde_json::from_str(t.as_str()).expect("DevTools JSON"),
            _ => Value::Null,
        }
    }

    /// Waits for the page's next load event.
    fn wait_load(&mut self) {
        while self.read()["method"] != "Page.loadEventFired" {}
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_load();
    }

    /// Evaluates JavaScript in the page (DevTools' own evaluation, which the page's CSP does not
    /// govern: the pages themselves carry no script) and returns its value.
    fn eval(&mut self, js: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true}))["result"]["value"].clone()
    }

    /// Clicks the element and waits for the page it leads to.
    fn click(&mut self, selector: &str) {
        let found = self.eval(&format!("(() => {{ const e = document.querySelector({selector:?}); if (!e) return false; e.click(); return true; }})()"));
        assert_eq!(found, Value::Bool(true), "no element {selector} on {}", self.eval("location.href"));
        self.wait_load();
    }

    fn text(&mut self, selector: &str) -> String {
        self.eval(&format!("document.querySelector({selector:?})?.textContent ?? ''")).as_str().unwrap_or_default().to_string()
    }

    fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML").as_str().unwrap_or_default().to_string()
    }
}

/// DevTools' target list (`GET /json/list`). Its server keeps the connection open, so the body
/// is read by its length.
fn devtools_targets(addr: &str) -> Value {
    use std::io::{BufRead, Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to DevTools");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET /json/list HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("DevTools answers");
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).expect("the DevTools target list is JSON")
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use std::process::{Command, Stdio};

#[test]
fn serve_browser_dashboard_retries_a_dead_task() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    w.push(&fixture("echo.wat"), "echo");
    w.push(&fixture("trap.wat"), "trap");
    for i in 0..2 {
        w.enqueue("echo", &format!("ok{i}"), &["--queue", "web"]);
    }
    let dead = w.enqueue("trap", "<script>alert(1)</script>", &["--queue", "web", "--max-attempts", "1"]);
    let mut worker = w.spawn_worker(&["--queue", "web", "--exit-when-idle"]);
    assert!(worker.wait(Duration::from_secs(60)).is_some());
    w.enqueue("echo", "waiting", &["--queue", "web"]);
    // Task text meant to run in the page, a flow, and a schedule, on a queue of their own.
    let hostile = w.enqueue("echo", "<img src=x onerror=alert(1)><script>alert(2)</script>", &["--queue", "webx"]);
    // A group named with markup, on a queue no worker serves (its task stays pending).
    const GROUP: &str = "<img/src=x/onerror=alert(3)>";
    let grouped = w.enqueue("echo", "g", &["--queue", "webg", "--group", GROUP]);
    let mut inputs = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut inputs, b"1\n2\n").unwrap();
    let flow = w.ok(&["map", "echo", "--inputs-file", inputs.path().to_str().unwrap(), "--reduce", "echo", "--queue", "webx"]).trim().to_string();
    w.ok(&["schedule", "add", "nightly", "echo", "--cron", "0 0 3 * * *", "--queue", "webx"]);
    let mut worker = w.spawn_worker(&["--queue", "webx", "--exit-when-idle"]);
    assert!(worker.wait(Duration::from_secs(60)).is_some());
    let fseq: u64 = flow.rsplit(':').next().unwrap().parse().unwrap();
    let children: Vec<u64> = redis::cmd("LRANGE").arg(format!("{}:children", qk("webx").flow(fseq))).arg(0).arg(-1).query(&mut redis_conn(&server)).unwrap();
    let member = format!("webx:{}", children[0]);

    // `wasmq serve` with a token on a free loopback port (it prints the address it bound).
    let mut child =
        w.cmd().args(["serve", "--listen", "127.0.0.1:0", "--auth-token", TOKEN]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn serve");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _serve = Kill(child);
    let addr = line.trim().strip_prefix("listening on http://").unwrap_or_else(|| panic!("serve printed {line:?}")).to_string();
    let mut b = Browser::start();

    // The queues page shows the counts and the last hour's chart; no buttons before logging in.
    b.open(&format!("http://{addr}/"));
    let row = b.html().split(r#"<tr data-queue="web">"#).nth(1).expect("a row for the queue").split("</tr>").next().unwrap().to_string();
    assert!(
        row.contains(r#"<td class="pending">1</td>"#) && row.contains(r#"<td class="succeeded">2</td>"#) && row.contains(r#"<td class="dead">1</td>"#),
        "{row}"
    );
    assert!(row.contains(r#"data-succeeded="2" data-failed="1""#) && row.contains("<rect"), "{row}");
    assert!(!row.contains("retry all dead"), "actions need a login: {row}");

    // The task page escapes the task's text and shows how to replay it.
    b.open(&format!("http://{addr}/tasks/{dead}"));
    assert_eq!(b.text("#state"), "dead");
    assert!(!b.html().contains("<script>alert(1)"), "task text is escaped");
    assert_eq!(b.eval("document.scripts.length"), json!(0), "no script element on the page");
    assert_eq!(b.text("#replay"), format!("wasmq replay {dead}"));
    assert_eq!(b.eval("document.querySelector('#retry') === null"), json!(true), "no retry button before logging in");

    // A wrong token is refused; the right one logs in (the form carries the CSRF token).
    b.open(&format!("http://{addr}/login"));
    b.eval("document.querySelector('input[name=token]').value = 'wrong-token-0123456789'");
    b.click("form[action='/login'] button");
    assert!(b.html().contains("wrong token"), "{}", b.html());
    b.open(&format!("http://{addr}/login"));
    b.eval(&format!("document.querySelector('input[name=token]').value = {TOKEN:?}"));
    b.click("form[action='/login'] button");
    assert_eq!(b.eval("location.pathname"), json!("/"));
    assert!(b.html().contains("log out"));

    // Retry the dead task with its button: it is pending again.
    b.open(&format!("http://{addr}/tasks/{dead}"));
    b.click("#retry");
    assert_eq!(b.text("#state"), "pending", "{}", b.html());
    assert!(b.html().contains("retried"));
    b.open(&format!("http://{addr}/queues/web?state=pending"));
    let listed = b.eval("[...document.querySelectorAll('#tasks td:first-child')].map(e => e.textContent)");
    assert_eq!(listed, json!([format!("web:4"), dead.clone()]), "pending tasks in the order workers claim them");
    b.open(&format!("http://{addr}/queues/web?state=succeeded"));
    let html = b.html();
    assert!(html.contains("web:1") && html.contains("web:2"), "{html}");

    // A task's own text shows as text: no element it wrote exists in the page.
    b.open(&format!("http://{addr}/tasks/{hostile}"));
    assert_eq!(b.text("#output"), "<img src=x onerror=alert(1)><script>alert(2)</script>");
    assert_eq!(b.eval("document.images.length + document.scripts.length"), json!(0));
    // A flow member's page draws its flow, the member itself marked.
    b.open(&format!("http://{addr}/tasks/{member}"));
    assert_eq!(b.eval("document.querySelectorAll('#flow .state').length"), json!(3), "{}", b.html());
    assert_eq!(b.text("#flow li.this a"), member);
    // A grouped queue's pending page names the group as text; its link lists the group's task.
    b.open(&format!("http://{addr}/queues/webg?state=pending"));
    assert_eq!(b.text("#groups td:first-child a"), GROUP, "{}", b.html());
    assert_eq!(b.eval("document.images.length + document.scripts.length"), json!(0));
    b.click("#groups td:first-child a");
    assert_eq!(b.eval("[...document.querySelectorAll('#tasks td:first-child')].map(e => e.textContent)"), json!([grouped.clone()]), "{}", b.html());
    assert!(b.text("h2").contains(GROUP), "{}", b.html());
    assert_eq!(b.eval("document.images.length + document.scripts.length"), json!(0));
    b.open(&format!("http://{addr}/tasks/{grouped}"));
    assert_eq!(b.text("#group"), GROUP);
    assert_eq!(b.eval("document.images.length + document.scripts.length"), json!(0));
    // The schedules page.
    b.open(&format!("http://{addr}/schedules"));
    assert_eq!(b.eval("[...document.querySelectorAll('#schedules td')].slice(0, 3).map(e => e.textContent)"), json!(["webx", "nightly", "0 0 3 * * *"]));

    // The cookie the login set is HttpOnly and SameSite=Strict; a form without its CSRF token
    // is refused.
    let (s, head, _) = http(&addr, "GET", "/login", &[], "");
    assert_eq!(s, 200);
    assert!(head.to_lowercase().contains("httponly") && head.contains("SameSite=Strict"), "{head}");
    let ct = ("Content-Type", "application/x-www-form-urlencoded");
    assert_eq!(http(&addr, "POST", &format!("/tasks/{dead}/retry"), &[ct], "csrf=wrong").0, 403);
    drop(b);

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium_screenshot(&format!("http://{addr}/"), &shot);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 1000).unwrap_or(false), "screenshot at {}", shot.display());
}

/// The dashboard's pages beyond the queues: a flow member's page draws its flow (members and
/// their states, itself marked) and the replay command with its HTTP grant; the queue page lists
/// pending tasks in claim order and filters the page shown by module; the schedules page lists
/// every queue's periodic tasks; the queues page charts the last hour from per-minute counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dashboard_pages_flows_schedules_filters_and_chart() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    w.push(&fixture("echo.wat"), "echo");
    w.push(&fixture("trap.wat"), "trap");
    let mut inputs = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut inputs, b"1\n2\n3\n").unwrap();
    let flow = w.ok(&["map", "echo", "--inputs-file", inputs.path().to_str().unwrap(), "--reduce", "echo", "--queue", "maps"]).trim().to_string();
    w.enqueue("trap", "x", &["--queue", "maps", "--max-attempts", "2"]);
    let mut worker = w.spawn_worker(&["--queue", "maps", "--exit-when-idle"]);
    assert!(worker.wait(Duration::from_secs(60)).is_some());
    assert_eq!(w.run(&["result", &flow]).status.code(), Some(0));
    let fseq: u64 = flow.rsplit(':').next().unwrap().parse().unwrap();
    let children: Vec<u64> = redis::cmd("LRANGE").arg(format!("{}:children", qk("maps").flow(fseq))).arg(0).arg(-1).query(&mut redis_conn(&server)).unwrap();
    assert_eq!(children.len(), 3);
    let app = app(&server, Default::default()).await;
    let page = |uri: String| {
        let app = app.clone();
        async move {
            let (s, _, body) = call_raw(&app, Method::GET, &uri, None, None, &[]).await;
            assert_eq!(s, StatusCode::OK, "{uri}");
            String::from_utf8(body).unwrap()
        }
    };

    let second = format!("maps:{}", children[1]);
    let html = page(format!("/tasks/{second}")).await;
    let tree = html.split(r#"<ul id="flow""#).nth(1).expect("a flow tree").split("</ul></li></ul>").next().unwrap().to_string();
    assert!(html.contains(&format!("Flow {flow}: succeeded")), "{html}");
    assert_eq!(tree.matches(r#"<span class="state">succeeded</span>"#).count(), 4, "3 children and the reducer: {tree}");
    assert!(tree.contains(&format!(r#"<li class="this"><a href="/tasks/{second}">"#)), "{tree}");
    assert!(tree.contains("children (3)") && tree.contains("reducers (1)"), "{tree}");

    // The replay command carries the task's grant; a task outside any flow draws no tree.
    let granted = w.enqueue("echo", "hi", &["--queue", "maps", "--allow-host", "api.example.com", "--priority", "3"]);
    let html = page(format!("/tasks/{granted}")).await;
    assert!(html.contains(&format!(r#"<pre id="replay">wasmq replay {granted} --allow-host api.example.com</pre>"#)), "{html}");
    assert!(!html.contains(r#"<ul id="flow""#));

    // Pending tasks, in claim order (priority 3 before 0), and the module filter over the page.
    let low = w.enqueue("trap", "later", &["--queue", "maps"]);
    let html = page("/queues/maps?state=pending".into()).await;
    let first = html.find(&format!(">{granted}<")).expect("the granted task listed");
    assert!(html.find(&format!(">{low}<")).is_some_and(|i| i > first), "{html}");
    let html = page("/queues/maps?state=pending&module=trap".into()).await;
    assert!(html.contains(&format!(">{low}<")) && !html.contains(&format!(">{granted}<")) && html.contains("1 others hidden"), "{html}");
    let html = page("/queues/maps?state=dead&module=echo".into()).await;
    assert!(html.contains("1 others hidden") && !html.contains("<td class=\"state\">dead</td>"), "{html}");

    // A queue with groups: the pending page names the groups (escaped) with their counts, and a
    // group's page lists its own tasks; the API enqueues into a group too.
    let g1 = w.enqueue("echo", "a", &["--queue", "tenants", "--group", "acme<i>"]);
    w.enqueue("echo", "b", &["--queue", "tenants", "--group", "acme<i>"]);
    let plain = w.enqueue("echo", "c", &["--queue", "tenants"]);
    let (st, v) = call(&app, Method::POST, "/v1/queues/tenants/tasks", None, json_body(json!({"module": "echo", "input": "d", "group": "globex"}))).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(w.status(v["id"].as_str().unwrap()).unwrap()["group"], "globex");
    let (st, v) = call(&app, Method::POST, "/v1/queues/tenants/tasks", None, json_body(json!({"module": "echo", "input": "d", "group": "two words"}))).await;
    assert_eq!((st, code(&v)), (StatusCode::BAD_REQUEST, "invalid"), "{v}");
    let html = page("/queues/tenants?state=pending".into()).await;
    assert!(html.contains(&format!(">{plain}<")) && !html.contains(&format!(">{g1}<")), "{html}");
    assert!(html.contains("3 more wait in groups"), "{html}");
    assert!(html.contains(r#"<a href="/queues/tenants?state=pending&group=acme%3Ci%3E">acme&#60;i&#62;</a></td><td>ready</td><td>2</td>"#), "{html}");
    let html = page("/queues/tenants?state=pending&group=acme%3Ci%3E".into()).await;
    assert!(html.contains(&format!(">{g1}<")) && !html.contains(&format!(">{plain}<")) && html.contains("of group acme&#60;i&#62; (2)"), "{html}");
    let html = page(format!("/tasks/{g1}")).await;
    assert!(html.contains(r#"<td id="group">acme&#60;i&#62;</td>"#), "{html}");

    // Schedules of every queue.
    w.ok(&["schedule", "add", "nightly", "echo", "--cron", "0 0 3 * * *", "--input", "<b>x</b>", "--queue", "maps"]);
    let html = page("/schedules".into()).await;
    assert!(html.contains("<td>nightly</td>") && html.contains("<code>0 0 3 * * *</code>") && html.contains("Schedules (1)"), "{html}");

    // The last hour: 4 flow members succeeded; the trap task failed twice (retried, then dead).
    // The queue's limits show with their use.
    w.ok(&["queue", "limit", "maps", "--concurrency", "5", "--rate", "100/s"]);
    let html = page("/".into()).await;
    assert!(html.contains(r#"data-succeeded="4" data-failed="2""#), "{html}");
    assert!(html.contains(r#"<td class="limits">concurrency 0/5, rate 0/100 per 1s</td>"#), "{html}");
}

/// `POST /v1/queues/{queue}/flows` is `wasmq map`: children and a reducer; `GET /v1/tasks/{id}`
/// of the flow answers its state and, once it succeeded, its output. Map options on a plain
/// enqueue, a single input on a map, or a bad fan-in are 400s that create nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_api_maps_a_flow_and_reads_its_output() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    w.push(&fixture("echo.wat"), "echo");
    let app = app(&server, Default::default()).await;
    let map = |body: Value| call(&app, Method::POST, "/v1/queues/apimap/flows", None, json_body(body));

    for bad in [
        json!({"module": "echo", "input": "x", "reduce": "echo"}),
        json!({"module": "echo", "inputs": [{"input": "1"}], "reduce": "echo", "reduce_fan_in": 1}),
        json!({"module": "echo", "inputs": []}),
    ] {
        let (s, v) = map(bad.clone()).await;
        assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid"), "{bad}: {v}");
    }
    let (s, v) = call(&app, Method::POST, "/v1/queues/apimap/tasks", None, json_body(json!({"module": "echo", "input": "x", "reduce": "echo"}))).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid"), "{v}");
    let (_, v) = call(&app, Method::GET, "/v1/queues/apimap", None, None).await;
    assert_eq!((v["pending"].as_u64(), v["enqueued_total"].as_u64()), (Some(0), Some(0)), "nothing was created: {v}");

    let (s, v) = map(json!({"module": "echo", "inputs": [{"input_json": 1}, {"input_json": {"n": 2}}, {"input": "three"}], "reduce": "echo"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let flow = v["id"].as_str().unwrap().to_string();
    let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{flow}"), None, None).await;
    assert_eq!((v["flow"]["state"].as_str(), v["flow"]["children"].as_u64()), (Some("running"), Some(3)), "{v}");
    assert!(v.get("output").is_none());

    let mut worker = w.spawn_worker(&["--queue", "apimap", "--exit-when-idle"]);
    assert!(worker.wait(Duration::from_secs(60)).is_some());
    let (_, v) = call(&app, Method::GET, &format!("/v1/tasks/{flow}"), None, None).await;
    assert_eq!(v["flow"]["state"], "succeeded", "{v}");
    assert_eq!(v["output"], json!([1, {"n": 2}, "three"]), "the reducer's output, embedded as JSON: {v}");
}

/// `docs/openapi.yaml` documents exactly the routes the API serves (the router's own list, plus
/// `/metrics`), with the same methods, and each of them answers through the real router rather
/// than its fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_openapi_file_matches_the_router() {
    let doc = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml")).unwrap();
    // The paths block: a path at two spaces of indentation, its methods at four.
    let mut documented = std::collections::BTreeSet::new();
    let mut path = None;
    for line in doc.lines().skip_while(|l| *l != "paths:").skip(1).take_while(|l| l.is_empty() || l.starts_with(' ')) {
        if let Some(p) = line.strip_prefix("  /") {
            path = Some(format!("/{}", p.trim_end_matches(':')));
        } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ").and_then(|l| l.split(':').next()))
            && ["get", "post", "put", "patch", "delete"].contains(&m)
        {
            documented.insert((m.to_string(), p.clone()));
        }
    }
    let mut served: std::collections::BTreeSet<(String, String)> = wasmq_serve::api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    served.insert(("get".into(), "/metrics".into()));
    assert_eq!(documented, served, "docs/openapi.yaml against the router");

    let server = RedisServer::start().expect("redis-server");
    let app = app(&server, with_token()).await;
    for (method, path) in &served {
        let uri = path.replace("{queue}", "q").replace("{id}", "q:1");
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let (s, _, body) = call_raw(&app, m, &uri, Some(TOKEN), None, &[]).await;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(s != StatusCode::NOT_FOUND || v["error"]["code"] != "not_found", "{method} {uri} fell through to the fallback: {v}");
    }
}

/// The client examples in docs/clients (Python with requests, Node with fetch) enqueue a task
/// through a running `wasmq serve` and print its output.
#[test]
fn serve_client_examples_in_python_and_node() {
    let server = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&server);
    w.push(&fixture("echo.wat"), "echo");
    let _worker = w.spawn_worker(&["--queue", "clients"]);
    let token = TOKEN;
    let mut child =
        w.cmd().args(["serve", "--listen", "127.0.0.1:0", "--auth-token", token]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn serve");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let base = line.trim().strip_prefix("listening on ").unwrap().to_string();
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/clients");
    // Python with `requests` from the tools' virtual environment under target/ (nothing global).
    let layout = wasmq_testkit::languages::Layout::find().expect("source tree");
    wasmq_testkit::languages::install(&layout, wasmq_testkit::languages::Language::Python).unwrap_or_else(|e| panic!("{e}"));
    let python = layout.venv_python();
    for (bin, script, input) in [(python.as_os_str(), "enqueue.py", "from python"), (std::ffi::OsStr::new("node"), "enqueue.mjs", "from node")] {
        let out = Command::new(bin)
            .arg(docs.join(script))
            .args([&base, "echo", input, "clients"])
            .env("WASMQ_TOKEN", token)
            .output()
            .unwrap_or_else(|e| panic!("{} is needed for this test: {e}", bin.to_string_lossy()));
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), input, "{script}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
