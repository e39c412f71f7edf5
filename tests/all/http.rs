//! Outbound HTTP of component tasks (`wasi:http`), end to end with the `webhook` example: a grant
//! within the worker's ceiling lets a request out; no grant, a grant the ceiling forbids, a
//! redirect to a host not granted, a name that resolves to a loopback address, and requests past
//! the caps are refused; a server that never answers is cut off by the task's timeout.
//!
//! Every server here is the test's own, on 127.0.0.1: no request leaves the machine. A name the
//! tests use resolves through a test resolver (`StaticResolver`), never DNS.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmq_testkit::examples::WasmTarget;

use crate::common::{RedisServer, Wasmq, eventually};

/// One request a test server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    host: String,
    body: Vec<u8>,
}

/// What a test server answers.
enum Reply {
    Ok(&'static str),
    Redirect(String),
    /// `n` bytes of body.
    Big(usize),
    /// Reads the request and never answers; notes when the client goes away.
    Hang,
}

/// An HTTP/1.1 server on 127.0.0.1 that answers by path. It stops by itself after two minutes
/// and on drop; every loop in it is bounded in time.
struct TestServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    /// When a hanging request's client closed its connection.
    hung_up: Arc<Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Self { port, seen: Default::default(), connections: Default::default(), hung_up: Default::default(), stop: Default::default() };
        let (seen, connections, hung_up, stop) = (server.seen.clone(), server.connections.clone(), server.hung_up.clone(), server.stop.clone());
        let route = Arc::new(route);
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections.fetch_add(1, Ordering::SeqCst);
                        let (seen, hung_up, stop, route) = (seen.clone(), hung_up.clone(), stop.clone(), route.clone());
                        std::thread::spawn(move || serve(stream, &*route, &seen, &hung_up, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn grant(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut stream: TcpStream, route: &(dyn Fn(&str) -> Reply + Send + Sync), seen: &Mutex<Vec<Seen>>, hung_up: &Mutex<Option<Instant>>, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // The head, then as much body as content-length says (bounded by time).
    let (head_end, length) = loop {
        if started.elapsed() > Duration::from_secs(10) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
            break (i + 4, length);
        }
    };
    while buf.len() < head_end + length && started.elapsed() < Duration::from_secs(10) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => continue,
        }
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
    let host = head.lines().find_map(|l| l.strip_prefix("host: ").or_else(|| l.strip_prefix("Host: "))).unwrap_or_default().to_string();
    seen.lock().unwrap().push(Seen { method, path: path.clone(), host, body: buf[head_end..].to_vec() });
    let respond = |stream: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n", body.len());
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    match route(&path) {
        Reply::Ok(body) => respond(&mut stream, "200 OK", "content-type: text/plain\r\n", body.as_bytes()),
        Reply::Redirect(to) => respond(&mut stream, "302 Found", &format!("location: {to}\r\n"), b""),
        Reply::Big(n) => respond(&mut stream, "200 OK", "", &vec![b'x'; n]),
        Reply::Hang => {
            // Wait (at most 60 s) for the client to close the connection.
            while started.elapsed() < Duration::from_secs(60) && !stop.load(Ordering::SeqCst) {
                match stream.read(&mut chunk) {
                    Ok(0) => {
                        *hung_up.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => {
                        *hung_up.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                }
            }
        }
    }
}

fn webhook() -> std::path::PathBuf {
    crate::common::example(WasmTarget::P2, "webhook")
}

/// Waits for a task to finish; returns its status JSON.
fn finished(w: &Wasmq, id: &str, worker: &crate::common::WorkerProcess) -> serde_json::Value {
    eventually(Duration::from_secs(60), || w.status(id).filter(|st| ["succeeded", "dead"].contains(&st["state"].as_str().unwrap_or_default())))
        .unwrap_or_else(|| panic!("{id} never finished: {:?}\n{}", w.status(id), worker.log()))
}

/// The task's log and error together, for assertions on why it failed.
fn why(st: &serde_json::Value) -> String {
    format!("{} | {}", st["error"].as_str().unwrap_or_default(), st["log"].as_str().unwrap_or_default())
}

#[test]
fn a_granted_task_posts_and_others_are_denied() {
    let hook = TestServer::start(|_| Reply::Ok("received"));
    let other = TestServer::start(|_| Reply::Ok("should never be reached"));
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    w.push(&webhook(), "webhook");
    w.ok(&["config", "set", "default", "webhook_url", &hook.url("/hook")]);
    w.ok(&["config", "set", "open", "webhook_url", &hook.url("/hook")]);
    let one = ["--max-attempts", "1"];
    let granted = w.enqueue("webhook", r#"{"text": "disk full"}"#, &["--allow-host", &hook.grant()]);
    let ungranted = w.enqueue("webhook", r#"{"text": "no grant"}"#, &one);
    // Granted by the task, but outside the worker's ceiling.
    let input = format!(r#"{{"webhook_url": "{}", "text": "beyond the ceiling"}}"#, other.url("/"));
    let beyond = w.enqueue("webhook", &input, &["--allow-host", &other.grant(), "--max-attempts", "1"]);
    // A ceiling of any public host does not reach loopback, even for a task granted it by IP.
    let loopback = w.enqueue("webhook", r#"{"text": "public ceiling"}"#, &["--queue", "open", "--allow-host", &hook.grant(), "--max-attempts", "1"]);

    let ceiling = hook.grant();
    let mut worker = w.spawn_worker(&["--allow-hosts", &ceiling]);
    let st = finished(&w, &granted, &worker);
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(w.ok(&["result", &granted]).trim_end(), r#"{"status":200,"response":"received"}"#);
    let seen = hook.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/hook"));
    assert_eq!(seen[0].host, hook.grant());
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&seen[0].body).unwrap(), serde_json::json!({"text": "disk full"}));

    let st = finished(&w, &ungranted, &worker);
    assert_eq!(st["state"], "dead", "{st}");
    let text = why(&st);
    assert!(text.contains("HTTP-request-denied"), "{text}");
    assert!(text.contains(&format!("[wasmq: http: request to http://127.0.0.1:{}", hook.port)) && text.contains("the task is granted no host"), "{text}");

    let st = finished(&w, &beyond, &worker);
    let text = why(&st);
    assert!(text.contains("HTTP-request-denied") && text.contains("outside this worker's --allow-hosts"), "{text}");
    assert_eq!(other.connections(), 0, "a denied request connected");
    assert_eq!(worker.stop(), Some(0));

    let mut open = w.spawn_worker(&["--queue", "open", "--allow-hosts", "*:*"]);
    let st = finished(&w, &loopback, &open);
    let text = why(&st);
    assert!(text.contains("destination-IP-prohibited") && text.contains("127.0.0.1 is the address, a loopback address"), "{text}");
    assert_eq!(open.stop(), Some(0));
    assert_eq!(hook.seen().len(), 1, "only the granted task reached the server");

    // A grant that does not parse is refused at enqueue, with the reason.
    let out = w.run(&["enqueue", "webhook", "--allow-host", "http://example.com/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid host pattern"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn redirects_caps_and_a_slow_server() {
    let denied = TestServer::start(|_| Reply::Ok("should never be reached"));
    let denied_url = denied.url("/");
    let redirect_to = denied_url.clone();
    let hook = Arc::new(Mutex::new(0u16));
    let port = hook.clone();
    let server = TestServer::start(move |path| match path {
        "/moved" => Reply::Redirect("/hook".into()),
        "/away" => Reply::Redirect(redirect_to.clone()),
        "/loop" => Reply::Redirect(format!("http://127.0.0.1:{}/loop", port.lock().unwrap())),
        "/big" => Reply::Big(64 << 10),
        "/slow" => Reply::Hang,
        _ => Reply::Ok("received"),
    });
    *hook.lock().unwrap() = server.port;
    let s = RedisServer::start().expect("redis-server");
    let w = Wasmq::new(&s);
    w.push(&webhook(), "webhook");
    let input = |path: &str| format!(r#"{{"webhook_url": "{}"}}"#, server.url(path));
    let grant = server.grant();
    let task = |path: &str, extra: &[&str]| {
        let mut args = vec!["--allow-host", grant.as_str(), "--max-attempts", "1"];
        args.extend_from_slice(extra);
        w.enqueue("webhook", &input(path), &args)
    };
    let moved = task("/moved", &[]);
    let away = task("/away", &[]);
    let looping = task("/loop", &["--max-http-requests", "3"]);
    let big = task("/big", &["--max-http-response-bytes", "1KiB"]);
    let big_allowed = task("/big", &[]);
    let slow = task("/slow", &["--timeout", "2s"]);
    let mut worker = w.spawn_worker(&["--allow-hosts", &grant, "--concurrency", "2"]);

    // A redirect within the grant is followed: a second request, checked like the first.
    let st = finished(&w, &moved, &worker);
    assert_eq!(st["state"], "succeeded", "{st}");
    // A redirect to a host the task is not granted is refused, and nothing reaches it.
    let text = why(&finished(&w, &away, &worker));
    assert!(text.contains("HTTP-request-denied") && text.contains(&format!("request to {}", denied_url.trim_end_matches('/'))), "{text}");
    assert_eq!(denied.connections(), 0);
    // The task's own cap on requests: the fourth of the loop is refused (refusals count too).
    let text = why(&finished(&w, &looping, &worker));
    assert!(text.contains("connection-limit-reached") && text.contains("over the task's limit of 3 requests"), "{text}");
    assert_eq!(server.seen().iter().filter(|r| r.path == "/loop").count(), 3);
    // The task's own cap on response bytes, below the worker's default (16 MiB).
    let text = why(&finished(&w, &big, &worker));
    assert!(text.contains("HTTP-response-body-size") && text.contains("--max-http-response-bytes"), "{text}");
    assert_eq!(finished(&w, &big_allowed, &worker)["state"], "succeeded");
    // A server that never answers is stopped by the task's timeout, and its connection closed.
    let st = finished(&w, &slow, &worker);
    assert_eq!((st["state"].as_str(), st["error_kind"].as_str()), (Some("dead"), Some("timeout")), "{st}");
    assert!(st["duration_us"].as_u64().unwrap() < 5_000_000, "{st}");
    let closed = eventually(Duration::from_secs(10), || *server.hung_up.lock().unwrap());
    assert!(closed.is_some(), "the worker kept the slow server's connection open");
    assert_eq!(worker.stop(), Some(0));

    // `wasmq run --allow-host`: the list is the grant and the ceiling of a local run.
    let file = webhook();
    let input = format!(r#"{{"webhook_url": "{}", "text": "local"}}"#, server.url("/hook"));
    let run = |extra: &[&str]| {
        let mut args = vec!["run", file.to_str().unwrap(), "--input", input.as_str()];
        args.extend_from_slice(extra);
        w.run(&args)
    };
    let out = run(&["--allow-host", &grant]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP-request-denied"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A name that resolves to a loopback address is refused before any connection, even when the
/// task and the worker grant the name: only an IP or range in the worker's list reaches such an
/// address. The test resolver maps the name; the server counts connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_without_connecting() {
    use wasmq::http::{AllowList, HttpConfig, HttpGrant, StaticResolver};
    use wasmq::sandbox::{CancelToken, Limits, Sandbox, SandboxConfig, TaskHost, prepare};
    let server = TestServer::start(|_| Reply::Ok("received"));
    let name = format!("internal.test:{}", server.port);
    let resolver = Arc::new(StaticResolver::new([("internal.test".to_string(), vec!["127.0.0.1".parse().unwrap()])]));
    let bytes = std::fs::read(webhook()).unwrap();
    let (binary, _) = prepare(&bytes).unwrap();
    let run = |ceiling: String| {
        let (resolver, binary, name) = (resolver.clone(), binary.to_vec(), name.clone());
        let url = format!("http://{name}/hook");
        async move {
            let http = HttpConfig::new(AllowList::parse(&ceiling).unwrap()).with_resolver(resolver);
            let config = SandboxConfig { max_concurrency: 1, cache_dir: Some(crate::common::cache_dir().to_path_buf()), http, ..Default::default() };
            let sandbox = Sandbox::new(config).unwrap();
            let module = sandbox.load(&wasmq::store::sha256_hex(&binary), &binary).unwrap();
            let host = TaskHost { http: HttpGrant { allow: AllowList::parse(&name).unwrap(), ..Default::default() }, ..Default::default() };
            let input = format!(r#"{{"webhook_url": "{url}", "text": "hi"}}"#);
            sandbox.run_with(&module, "webhook", input.into_bytes(), &Limits::default(), &CancelToken::new(), host).await
        }
    };
    let refused = run(name.clone()).await;
    let log = String::from_utf8_lossy(&refused.log).to_string();
    assert!(!refused.is_success());
    assert!(log.contains("destination-IP-prohibited"), "{log}");
    assert!(log.contains("internal.test resolves to 127.0.0.1, a loopback address") && log.contains("no connection was made"), "{log}");
    assert_eq!(server.connections(), 0, "a connection was made to a refused address");
    // With the address in the worker's list, the same name goes through (the test resolver is
    // what resolved it), with the name in the Host header.
    let allowed = run(format!("{name},127.0.0.1:{}", server.port)).await;
    assert!(allowed.is_success(), "{:?} {}", allowed.result, String::from_utf8_lossy(&allowed.log));
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].host, name);
}

/// The webhook component imports wasi:http; a component that does not use the SDK's HTTP
/// (wordcount) does not, so it runs on any WASI host.
#[test]
fn only_tasks_that_use_http_import_it() {
    let imports = |path: std::path::PathBuf| -> Vec<String> {
        let bytes = std::fs::read(path).unwrap();
        let mut names = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
            if let wasmparser::Payload::ComponentImportSection(reader) = payload.unwrap() {
                names.extend(reader.into_iter().map(|i| i.unwrap().name.name.to_string()));
            }
        }
        names
    };
    let webhook = imports(webhook());
    assert!(webhook.iter().any(|i| i.starts_with("wasi:http/outgoing-handler@0.2.")), "{webhook:?}");
    let wordcount = imports(crate::common::example(WasmTarget::P2, "wordcount"));
    assert!(!wordcount.iter().any(|i| i.starts_with("wasi:http/")), "{wordcount:?}");
}

/// HTTPS to a service behind a private CA: verified with the host's name against the CA given
/// with `--http-ca` (`HttpConfig::with_ca_file`); without it, the certificate is not trusted and
/// the task sees `TLS-certificate-error`. The name resolves through the test resolver to the
/// test's own TLS server on 127.0.0.1, which the worker's list names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use wasmq::http::{AllowList, HttpConfig, HttpGrant, StaticResolver};
    use wasmq::sandbox::{CancelToken, Limits, Sandbox, SandboxConfig, TaskHost, prepare};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["api.internal.test".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, issuer.pem()).unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into())
        .unwrap();
    let tls = Arc::new(tls);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
    let got = bodies.clone();
    // Two connections at most (the untrusted attempt and the trusted one), each bounded in time.
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(tls.clone()).unwrap(), stream);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(n) = tls.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    let len = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        got.lock().unwrap().push(buf[i + 4..].to_vec());
                        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                        let _ = tls.flush();
                        break;
                    }
                }
            }
        }
    });

    let name = format!("api.internal.test:{port}");
    let resolver = Arc::new(StaticResolver::new([("api.internal.test".to_string(), vec!["127.0.0.1".parse().unwrap()])]));
    let bytes = std::fs::read(webhook()).unwrap();
    let (binary, _) = prepare(&bytes).unwrap();
    let run = |ca: Option<std::path::PathBuf>| {
        let (resolver, binary, name) = (resolver.clone(), binary.to_vec(), name.clone());
        async move {
            let mut http = HttpConfig::new(AllowList::parse(&format!("{name},127.0.0.1:{port}")).unwrap()).with_resolver(resolver);
            if let Some(ca) = ca {
                http = http.with_ca_file(&ca).unwrap();
            }
            let config = SandboxConfig { max_concurrency: 1, cache_dir: Some(crate::common::cache_dir().to_path_buf()), http, ..Default::default() };
            let sandbox = Sandbox::new(config).unwrap();
            let module = sandbox.load(&wasmq::store::sha256_hex(&binary), &binary).unwrap();
            let host = TaskHost { http: HttpGrant { allow: AllowList::parse(&name).unwrap(), ..Default::default() }, ..Default::default() };
            let input = format!(r#"{{"webhook_url": "https://{name}/hook", "text": "over TLS"}}"#);
            sandbox.run_with(&module, "webhook", input.into_bytes(), &Limits::default(), &CancelToken::new(), host).await
        }
    };
    let untrusted = run(None).await;
    let log = String::from_utf8_lossy(&untrusted.log).to_string();
    assert!(!untrusted.is_success() && log.contains("TLS-certificate-error"), "{log}");
    let trusted = run(Some(ca_file)).await;
    assert!(trusted.is_success(), "{:?} {}", trusted.result, String::from_utf8_lossy(&trusted.log));
    assert_eq!(String::from_utf8_lossy(&trusted.output).trim_end(), r#"{"status":200,"response":"ok"}"#);
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&bodies[0]).unwrap(), serde_json::json!({"text": "over TLS"}));
    // A CA file that holds no certificate is refused with the reason.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let e = HttpConfig::default().with_ca_file(&empty).expect_err("an empty CA file is refused").to_string();
    assert!(e.contains("holds no PEM certificate"), "{e}");
}
