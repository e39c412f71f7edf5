//! Connections to Redis: a single server, a Sentinel-managed master (following failovers), or a
//! Cluster, behind one `Conn` type that every other module uses.
//!
//! URLs:
//! - `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS)
//! - `redis+sentinel://[user:pass@]host:port[,host:port...]/MASTER[/db][?sentinel_password=...&sentinel_username=...]`
//!   (`rediss+sentinel://` for TLS to the sentinels and the data nodes). The user and password
//!   are the data nodes'; the sentinels' own credentials go in the query.
//! - `redis+cluster://[user:pass@]host:port[,host:port...]` (`rediss+cluster://` for TLS).
//!
//! Two kinds of connection are handed out: shared ones (multiplexed, reconnecting, with a response
//! timeout, cloned freely) and dedicated blocking ones for `BLPOP` (a blocking command on a shared
//! socket would hold up everything behind it).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, TlsCertificates, Value};

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("invalid Redis URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile { path: PathBuf, source: std::io::Error },
    #[error("TLS options need a rediss:// URL (or rediss+sentinel://, rediss+cluster://)")]
    TlsNeedsRediss,
    #[error("cannot connect to Redis at {target}: {source}")]
    Connect { target: String, source: RedisError },
}

/// Where Redis is and how to talk to it. Its `Debug` form shows the URL redacted.
#[derive(Clone)]
pub struct RedisOptions {
    pub url: String,
    /// PEM file with the CA certificate(s) that signed the server's certificate (replaces the
    /// system roots).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers with `tls-auth-clients yes`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How long a normal (non-blocking) command may take before it fails.
    pub response_timeout: Duration,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &redact(&self.url))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl RedisOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A parsed URL: which kind of deployment and its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Single,
    Sentinel { nodes: Vec<(String, u16)>, master: String, db: i64, sentinel_user: Option<String>, sentinel_password: Option<String> },
    Cluster { nodes: Vec<(String, u16)> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedUrl {
    target: Target,
    tls: bool,
    user: Option<String>,
    password: Option<String>,
}

fn invalid(url: &str, reason: impl Into<String>) -> ConnError {
    ConnError::InvalidUrl { url: redact(url), reason: reason.into() }
}

/// `fragment` (a piece of `url`) quoted for an error message, unless it overlaps a secret of the
/// URL: a malformed URL is often malformed because its password has an unencoded `/`, `?` or
/// `@`, and then the piece that fails to parse as a port or a database number is the password.
fn quote(url: &str, fragment: &str) -> String {
    const HIDDEN: &str = "(not shown: it may hold a password)";
    // The fragment is a slice of the URL: its offset is the distance between their starts.
    let start = (fragment.as_ptr() as usize).wrapping_sub(url.as_ptr() as usize);
    let Some(end) = start.checked_add(fragment.len()).filter(|e| *e <= url.len()) else { return HIDDEN.to_string() };
    let end = end.max(start + 1);
    if secret_spans(url).iter().any(|s| s.start < end && start < s.end) { HIDDEN.to_string() } else { format!("{fragment:?}") }
}

/// Query parameters whose values are secrets (`password`, `sentinel_password`, and anything else
/// that names a password, token or secret).
fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("pass") || n.contains("secret") || n.contains("token") || n == "auth" || n == "pwd"
}

/// The byte ranges of `url` that hold secrets: the password of the user info and the value of
/// every secret query parameter. Passwords are often pasted unencoded, so nothing may be assumed
/// about the characters in them: the user info ends at the last `@` that is not inside a secret
/// query value (the host list cannot contain one), and a query value runs to the next `&`. Where
/// a URL is ambiguous, more is hidden rather than less.
fn secret_spans(url: &str) -> Vec<std::ops::Range<usize>> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let b = url.as_bytes();
    let mut spans = Vec::new();
    for i in start..b.len() {
        if b[i] != b'?' && b[i] != b'&' {
            continue;
        }
        let rest = &url[i + 1..];
        let Some(eq) = rest.find(['=', '&']).filter(|e| rest.as_bytes()[*e] == b'=') else { continue };
        if is_secret_param(&rest[..eq]) {
            let value = i + 1 + eq + 1;
            let end = url[value..].find('&').map_or(url.len(), |e| value + e);
            spans.push(value..end);
        }
    }
    let ats: Vec<usize> = (start..b.len()).filter(|i| b[*i] == b'@').collect();
    let at = ats.iter().rev().find(|i| !spans.iter().any(|s| s.contains(*i))).or(ats.last());
    if let Some(&at) = at
        && let Some(colon) = url[start..at].find(':')
    {
        spans.push(start + colon + 1..at);
    }
    spans.sort_by_key(|s| s.start);
    let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(spans.len());
    for s in spans {
        match merged.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => merged.push(s),
        }
    }
    merged
}

/// The URL with every secret replaced by `***`, for messages and logs: the password of the user
/// info (`redis://user:***@host`) and the values of secret query parameters
/// (`?sentinel_password=***`), in every URL form wasmq accepts and in malformed ones.
pub fn redact(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut shown = 0;
    for span in secret_spans(url) {
        out.push_str(&url[shown..span.start]);
        out.push_str("***");
        shown = span.end;
    }
    out.push_str(&url[shown..]);
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_host_port(url: &str, s: &str, default_port: u16) -> Result<(String, u16), ConnError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| invalid(url, format!("bad IPv6 host {}", quote(url, s))))?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(url, "empty host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| invalid(url, format!("bad port {}", quote(url, p))))?,
        None => default_port,
    };
    Ok((host.to_string(), port))
}

fn parse_url(url: &str) -> Result<ParsedUrl, ConnError> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid(url, "expected SCHEME://..."))?;
    let (tls, kind) = match scheme {
        "redis" | "valkey" => (false, "single"),
        "rediss" | "valkeys" => (true, "single"),
        "redis+sentinel" => (false, "sentinel"),
        "rediss+sentinel" => (true, "sentinel"),
        "redis+cluster" => (false, "cluster"),
        "rediss+cluster" => (true, "cluster"),
        "redis+unix" | "unix" => (false, "single"),
        _ => return Err(invalid(url, format!("unknown scheme {}; use redis://, rediss://, redis+sentinel:// or redis+cluster://", quote(url, scheme)))),
    };
    if kind == "single" {
        return Ok(ParsedUrl { target: Target::Single, tls, user: None, password: None });
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let decode = |s: &str| percent_decode(s).ok_or_else(|| invalid(url, "bad percent-encoding"));
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => match ui.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| decode(u)).transpose()?, Some(decode(p)?)),
            None => ((!ui.is_empty()).then(|| decode(ui)).transpose()?, None),
        },
    };
    let default_port = if kind == "sentinel" { 26379 } else { 6379 };
    let nodes = hosts.split(',').filter(|h| !h.is_empty()).map(|h| parse_host_port(url, h, default_port)).collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err(invalid(url, "no host given"));
    }
    let mut params = std::collections::HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k, decode(v)?);
    }
    let target = if kind == "sentinel" {
        let mut parts = path.trim_start_matches('/').split('/');
        let master = parts.next().filter(|m| !m.is_empty()).ok_or_else(|| invalid(url, "the master name is missing: redis+sentinel://host:26379/MASTER"))?;
        let db = match parts.next() {
            Some(d) if !d.is_empty() => d.parse().map_err(|_| invalid(url, format!("bad database number {}", quote(url, d))))?,
            _ => 0,
        };
        Target::Sentinel {
            nodes,
            master: decode(master)?,
            db,
            sentinel_user: params.remove("sentinel_username"),
            sentinel_password: params.remove("sentinel_password"),
        }
    } else {
        if !path.trim_start_matches('/').is_empty() {
            return Err(invalid(url, "a cluster has no databases; drop the path"));
        }
        Target::Cluster { nodes }
    };
    if let Some(k) = params.keys().next() {
        return Err(invalid(url, format!("unknown query parameter {}", quote(url, k))));
    }
    Ok(ParsedUrl { target, tls, user, password })
}

/// A factory of connections to one Redis deployment. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    backend: Arc<Backend>,
    options: Arc<RedisOptions>,
}

// One per `Redis` handle, behind an Arc: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Single(redis::Client),
    Cluster(ClusterClient),
    Sentinel(Arc<SentinelShared>),
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis({})", redact(&self.options.url))
    }
}

fn read_tls(options: &RedisOptions) -> Result<Option<TlsCertificates>, ConnError> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|source| ConnError::TlsFile { path: p.clone(), source });
    let root_cert = options.tls_ca.as_ref().map(read).transpose()?;
    let client_tls = match (&options.tls_cert, &options.tls_key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig { client_cert: read(c)?, client_key: read(k)? }),
        (None, None) => None,
        _ => return Err(ConnError::InvalidUrl { url: redact(&options.url), reason: "a client certificate needs both --tls-cert and --tls-key".into() }),
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsCertificates { client_tls, root_cert }))
}

/// Installs the process-wide rustls crypto provider once (redis' TLS support needs one).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Redis {
    /// Parses the URL and reads the TLS files; does not connect yet.
    pub fn open(options: RedisOptions) -> Result<Self, ConnError> {
        install_crypto_provider();
        let parsed = parse_url(&options.url)?;
        let certs = read_tls(&options)?;
        if certs.is_some() && !parsed.tls {
            return Err(ConnError::TlsNeedsRediss);
        }
        let url = &options.url;
        let redis_err = |source| ConnError::Connect { target: redact(url), source };
        let backend = match parsed.target {
            Target::Single => {
                let info = url.as_str().into_connection_info().map_err(|e| invalid(url, e.to_string()))?;
                let client = match certs {
                    Some(c) => redis::Client::build_with_tls(info, c),
                    None => redis::Client::open(info),
                }
                .map_err(|e| invalid(url, e.to_string()))?;
                Backend::Single(client)
            }
            Target::Cluster { nodes } => {
                let scheme = if parsed.tls { "rediss" } else { "redis" };
                let node_urls: Vec<String> = nodes.iter().map(|(h, p)| format!("{scheme}://{}:{p}", bracket(h))).collect();
                let mut b = ClusterClient::builder(node_urls)
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.response_timeout)
                    // A timed-out script must not be sent again by the client: it could run twice.
                    .overall_response_timeout(Some(options.response_timeout))
                    .retries(6);
                if let Some(u) = &parsed.user {
                    b = b.username(u);
                }
                if let Some(p) = &parsed.password {
                    b = b.password(p);
                }
                if let Some(c) = certs {
                    b = b.certs(c);
                }
                Backend::Cluster(b.build().map_err(redis_err)?)
            }
            Target::Sentinel { nodes, master, db, sentinel_user, sentinel_password } => {
                let addrs = nodes.iter().map(|(h, p)| {
                    if parsed.tls {
                        ConnectionAddr::TcpTls { host: h.clone(), port: *p, insecure: false, tls_params: None }
                    } else {
                        ConnectionAddr::Tcp(h.clone(), *p)
                    }
                });
                let mut b = SentinelClientBuilder::new(addrs, &master, SentinelServerType::Master).map_err(redis_err)?.set_client_to_redis_db(db);
                if let Some(u) = &parsed.user {
                    b = b.set_client_to_redis_username(u);
                }
                if let Some(p) = &parsed.password {
                    b = b.set_client_to_redis_password(p);
                }
                if let Some(u) = &sentinel_user {
                    b = b.set_client_to_sentinel_username(u);
                }
                if let Some(p) = &sentinel_password {
                    b = b.set_client_to_sentinel_password(p);
                }
                if parsed.tls {
                    b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure).set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
                    if let Some(c) = certs {
                        b = b.set_client_to_redis_certificates(c.clone()).set_client_to_sentinel_certificates(c);
                    }
                }
                let client = b.build().map_err(redis_err)?;
                Backend::Sentinel(Arc::new(SentinelShared { client: tokio::sync::Mutex::new(client), master, generation: Default::default() }))
            }
        };
        Ok(Self { backend: Arc::new(backend), options: Arc::new(options) })
    }

    /// The URL with its password redacted.
    pub fn describe(&self) -> String {
        redact(&self.options.url)
    }

    pub fn is_cluster(&self) -> bool {
        matches!(*self.backend, Backend::Cluster(_))
    }

    /// A shared connection: multiplexed, reconnects by itself, commands time out after the
    /// configured response timeout. Clone it freely.
    pub async fn connect(&self) -> Result<Conn, ConnError> {
        self.connect_with(Some(self.options.response_timeout)).await
    }

    /// A dedicated connection for blocking commands: no response timeout (the caller bounds its
    /// waits itself), never shared with other traffic.
    pub async fn connect_blocking(&self) -> Result<Conn, ConnError> {
        self.connect_with(None).await
    }

    async fn connect_with(&self, response_timeout: Option<Duration>) -> Result<Conn, ConnError> {
        let target = self.describe();
        let err = |source| ConnError::Connect { target: target.clone(), source };
        match &*self.backend {
            Backend::Single(client) => {
                let cfg = manager_config(&self.options, response_timeout);
                let m = client.get_connection_manager_with_config(cfg).await.map_err(err)?;
                Ok(Conn::Single(m))
            }
            Backend::Cluster(client) => {
                let mut cfg = redis::cluster::ClusterConfig::new().set_connection_timeout(self.options.connect_timeout);
                if let Some(t) = response_timeout {
                    cfg = cfg.set_response_timeout(t);
                }
                Ok(Conn::Cluster(client.get_async_connection_with_config(cfg).await.map_err(err)?))
            }
            Backend::Sentinel(shared) => {
                let conn = SentinelConn { shared: shared.clone(), options: self.options.clone(), response_timeout, current: Arc::new(RwLock::new(None)) };
                conn.current().await.map_err(err)?;
                Ok(Conn::Sentinel(conn))
            }
        }
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

fn manager_config(options: &RedisOptions, response_timeout: Option<Duration>) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
}

/// A connection of any deployment kind; every command, pipeline and script goes through it.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl Conn {
    /// Runs a command without keys (WAIT, INFO, CONFIG GET ...) on the node that holds `key`: in a
    /// Cluster, the shard of that key's slot; otherwise the only node.
    pub async fn query_at<T: redis::FromRedisValue>(&mut self, key: &str, cmd: &Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)));
                let v = c.route_command(cmd.clone(), route).await?;
                Ok(redis::from_redis_value(v)?)
            }
            other => cmd.query_async(other).await,
        }
    }

    /// Sends a pipeline as one batch on one connection to the node that holds `key` (in a
    /// Cluster, the shard of its slot), so that keyless commands in it (WAIT, WAITAOF) apply to
    /// the writes before them. Replies come raw, one per command, errors included.
    pub async fn pipeline_at(&mut self, key: &str, pipe: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Cluster(c) => {
                use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
                let n = pipe.len();
                c.route_pipeline(pipe.clone(), 0, n, SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master))).await
            }
            other => other.req_packed_commands(pipe, 0, pipe.len()).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
        }
    }
}

struct SentinelShared {
    client: tokio::sync::Mutex<SentinelClient>,
    master: String,
    generation: std::sync::atomic::AtomicU64,
}

/// A connection to whatever node the sentinels currently name as master. When a command fails in a
/// way that suggests the master moved (connection lost, refused, READONLY, MASTERDOWN), the next
/// command asks the sentinels again.
#[derive(Clone)]
pub struct SentinelConn {
    shared: Arc<SentinelShared>,
    options: Arc<RedisOptions>,
    response_timeout: Option<Duration>,
    /// The current master connection, with a generation number so that one failure does not
    /// discard a connection that another caller already replaced.
    current: Arc<RwLock<Option<(u64, ConnectionManager)>>>,
}

impl SentinelConn {
    async fn current(&self) -> Result<(u64, ConnectionManager), RedisError> {
        if let Some(c) = self.current.read().expect("lock").clone() {
            return Ok(c);
        }
        let mut sentinel = self.shared.client.lock().await;
        if let Some(c) = self.current.read().expect("lock").clone() {
            return Ok(c);
        }
        let client = sentinel.async_get_client().await?;
        let cfg = manager_config(&self.options, self.response_timeout);
        let manager = client.get_connection_manager_with_config(cfg).await?;
        let generation = self.shared.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.current.write().expect("lock") = Some((generation, manager.clone()));
        tracing::info!(master = %self.shared.master, "connected to the master named by the sentinels");
        Ok((generation, manager))
    }

    fn note_error(&self, generation: u64, e: &RedisError) {
        let moved = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
            || matches!(e.kind(), redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown));
        if moved {
            let mut slot = self.current.write().expect("lock");
            if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
                *slot = None;
            }
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut c) = self.current().await?;
            let r = c.req_packed_command(cmd).await;
            if let Err(e) = &r {
                self.note_error(generation, e);
            }
            r
        })
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut c) = self.current().await?;
            let r = c.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &r {
                self.note_error(generation, e);
            }
            r
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sentinel_and_cluster_urls() {
        let p = parse_url("redis+sentinel://:s3cret@127.0.0.1:26379,127.0.0.1:26380/mymaster/2?sentinel_password=x").unwrap();
        assert_eq!(p.password.as_deref(), Some("s3cret"));
        assert_eq!(
            p.target,
            Target::Sentinel {
                nodes: vec![("127.0.0.1".into(), 26379), ("127.0.0.1".into(), 26380)],
                master: "mymaster".into(),
                db: 2,
                sentinel_user: None,
                sentinel_password: Some("x".into()),
            }
        );
        let c = parse_url("rediss+cluster://u:p%40ss@[::1]:7000,127.0.0.1").unwrap();
        assert!(c.tls);
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.target, Target::Cluster { nodes: vec![("::1".into(), 7000), ("127.0.0.1".into(), 6379)] });
        for bad in ["localhost:6379", "redis+sentinel://127.0.0.1:26379", "redis+cluster://", "redis+cluster://h:x", "http://x", "redis+sentinel://h/m?bogus=1"]
        {
            assert!(parse_url(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn redacts_passwords() {
        for (url, shown) in [
            ("redis://user:pw@host:1/0", "redis://user:***@host:1/0"),
            ("redis://host:1", "redis://host:1"),
            ("redis://:pw@host", "redis://:***@host"),
            ("redis://user@host", "redis://user@host"),
            ("rediss://user:pw@host:6380/2", "rediss://user:***@host:6380/2"),
            // Unencoded `/`, `@`, `:`, `?` and `#` in the password.
            ("redis://user:pa/ss@host:1/0", "redis://user:***@host:1/0"),
            ("redis://:p@ss@host", "redis://:***@host"),
            ("redis://:a:b:c@host:1", "redis://:***@host:1"),
            ("redis://:p?ss@host/0", "redis://:***@host/0"),
            ("redis://:p#ss@host", "redis://:***@host"),
            ("redis://u:/?#@:x@host", "redis://u:***@host"),
            ("redis+sentinel://:pw@h1:26379,h2:26380,[::1]:26381/mymaster/2", "redis+sentinel://:***@h1:26379,h2:26380,[::1]:26381/mymaster/2"),
            ("redis+sentinel://h1:26379,h2:26380/mymaster?sentinel_password=s3cret", "redis+sentinel://h1:26379,h2:26380/mymaster?sentinel_password=***"),
            (
                "rediss+sentinel://u:pw@h1,h2/m?sentinel_username=admin&sentinel_password=s/e@c:r?t#x",
                "rediss+sentinel://u:***@h1,h2/m?sentinel_username=admin&sentinel_password=***",
            ),
            ("redis+sentinel://h/m?sentinel_password=a&password=b", "redis+sentinel://h/m?sentinel_password=***&password=***"),
            ("redis://host/0?password=pw&protocol=resp3", "redis://host/0?password=***&protocol=resp3"),
            ("redis+cluster://user:p/w@h1:7000,h2:7001", "redis+cluster://user:***@h1:7000,h2:7001"),
            ("rediss+cluster://:p@w@h1:7000?password=x", "rediss+cluster://:***@h1:7000?password=***"),
            // Not URLs at all: the part before an `@` still counts as a password.
            ("user:pw@host:6379", "user:***@host:6379"),
            ("localhost:6379", "localhost:6379"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn invalid_url_errors_never_quote_a_password() {
        for (url, secret) in [
            ("redis+sentinel://:x:qz/ss@h:1/m", "qz"),
            ("redis+sentinel://u:zq?secret@h:1/m", "zq"),
            ("redis+sentinel://h:1/m?x=1&u:secret@h", "secret"),
            ("redis+cluster://:x:99x/z@h", "99x"),
            ("redis+sentinel://:x@[sec/ret@h/m", "sec"),
            ("redis+sentinel://u:1/m/12x@h/m", "12x"),
            ("redis+sentinel://h/m?sentinel_password=%zzsecret", "secret"),
            ("unknown://user:pw/x@h", "pw"),
        ] {
            let e = parse_url(url).expect_err(url).to_string();
            assert!(!e.contains(secret), "{url}: {e}");
        }
        // Fragments that are not secret are still quoted.
        let e = parse_url("redis+cluster://:pw@h:70x0").unwrap_err().to_string();
        assert!(e.contains("\"70x0\""), "{e}");
        // Nor do a handle's description and the options' debug form.
        let url = "redis+sentinel://u:p%2Fss@h:1/m?sentinel_password=s3cret";
        let options = RedisOptions::new(url);
        let debug = format!("{options:?}");
        assert!(debug.contains("u:***@h:1/m?sentinel_password=***"), "{debug}");
        let redis = Redis::open(options).unwrap();
        assert_eq!(redis.describe(), "redis+sentinel://u:***@h:1/m?sentinel_password=***");
        assert!(!format!("{redis:?}").contains("s3cret"));
    }

    proptest::proptest! {
        #[test]
        fn url_parsing_never_panics(s in "\\PC{0,60}") {
            let _ = parse_url(&s);
            let _ = redact(&s);
        }

        /// Passwords of uppercase letters and URL delimiters, in every URL form: no uppercase
        /// letter (so no piece of a password) survives redaction. `&` separates query
        /// parameters, so a query value must have it percent-encoded.
        #[test]
        fn no_piece_of_a_password_survives_redaction(
            pw in "([A-Z][!#$%&'()*+,/:;=?@\\[\\]^_`{|}~-]?){1,12}",
            qpw in "([A-Z][!#$%'()*+,/:;=?@\\[\\]^_`{|}~-]?){1,12}",
        ) {
            for url in [
                format!("redis://user:{pw}@host:6379/0"),
                format!("rediss://:{pw}@host:6380"),
                format!("redis+sentinel://:{pw}@h1:26379,h2:26380/mymaster/1?sentinel_username=admin&sentinel_password={qpw}"),
                format!("redis+sentinel://h1:26379/mymaster?sentinel_password={qpw}&password={qpw}"),
                format!("redis+cluster://user:{pw}@h1:7000,h2:7001"),
                format!("redis://host:6379/0?password={qpw}"),
            ] {
                let shown = redact(&url);
                proptest::prop_assert!(!shown.chars().any(|c| c.is_ascii_uppercase()), "{} became {}", url, shown);
                if let Err(e) = parse_url(&url) {
                    // The uppercase words of the messages themselves go first.
                    let e = ["Redis URL", "MASTER", "SCHEME", "IPv6"].iter().fold(e.to_string(), |e, w| e.replace(w, ""));
                    proptest::prop_assert!(!e.chars().any(|c| c.is_ascii_uppercase()), "{}: {}", url, e);
                }
            }
        }

        #[test]
        fn redis_like_urls_never_panic(s in "(redis|rediss)(\\+sentinel|\\+cluster)?://[a-z:@%0-9,.\\[\\]/?=&]{0,40}") {
            let _ = parse_url(&s);
            let _ = redact(&s);
        }
    }
}
