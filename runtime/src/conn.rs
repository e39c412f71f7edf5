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

/// Where Redis is and how to talk to it.
#[derive(Debug, Clone)]
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

/// The URL with its password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map(|(u, _)| u).unwrap_or(userinfo);
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{scheme}://{masked}{}", &rest[at..])
        }
        None => url.to_string(),
    }
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
        let (h, after) = rest.split_once(']').ok_or_else(|| invalid(url, format!("bad IPv6 host {s:?}")))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(invalid(url, "empty host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| invalid(url, format!("bad port {p:?}")))?,
        None => default_port,
    };
    Ok((host, port))
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
        _ => return Err(invalid(url, format!("unknown scheme {scheme:?}; use redis://, rediss://, redis+sentinel:// or redis+cluster://"))),
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
    let decode = |s: &str| percent_decode(s).ok_or_else(|| invalid(url, "bad percent-encoding in user info"));
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
        params.insert(k.to_string(), decode(v)?);
    }
    let target = if kind == "sentinel" {
        let mut parts = path.trim_start_matches('/').split('/');
        let master = parts.next().filter(|m| !m.is_empty()).ok_or_else(|| invalid(url, "the master name is missing: redis+sentinel://host:26379/MASTER"))?;
        let db = match parts.next() {
            Some(d) if !d.is_empty() => d.parse().map_err(|_| invalid(url, format!("bad database number {d:?}")))?,
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
        return Err(invalid(url, format!("unknown query parameter {k:?}")));
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
        assert_eq!(redact("redis://user:pw@host:1/0"), "redis://user:***@host:1/0");
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }

    proptest::proptest! {
        #[test]
        fn url_parsing_never_panics(s in "\\PC{0,60}") {
            let _ = parse_url(&s);
            let _ = redact(&s);
        }

        #[test]
        fn redis_like_urls_never_panic(s in "(redis|rediss)(\\+sentinel|\\+cluster)?://[a-z:@%0-9,.\\[\\]/?=&]{0,40}") {
            let _ = parse_url(&s);
            let _ = redact(&s);
        }
    }
}
