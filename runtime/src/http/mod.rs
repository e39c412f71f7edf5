//! Outbound HTTP for component tasks (`wasi:http/outgoing-handler@0.2.x`), denied unless
//! granted.
//!
//! Two lists decide: the task's grant (`enqueue --allow-host`, the task field `allow_hosts`)
//! and the worker's ceiling (`worker --allow-hosts`), which no task can widen. A request goes
//! out only if both allow it; with no grant every request fails with the standard
//! `HTTP-request-denied` error code. wasmq sends requests itself ([`send`]), because
//! wasmtime-wasi-http's own sender resolves and connects in one step (so it cannot check the
//! address it connects to) and trusts only its built-in roots:
//!
//! 1. the request's host and port must be allowed by the grant and the ceiling ([`allow`]);
//! 2. the name is resolved once ([`resolve`]); every address is classified ([`addr`]): loopback,
//!    private, link-local, shared, multicast, metadata and other non-public addresses are
//!    refused unless the worker's ceiling names the address or its range as an IP or CIDR (a
//!    metadata address only by itself);
//! 3. the connection goes to a checked address (no second lookup), TLS is verified against the
//!    host's name (Mozilla's roots and the worker's `--http-ca`);
//! 4. each request counts against the task's cap of requests, its response bodies against its
//!    cap of bytes, and all of it runs inside the task's wall-clock timeout: when the task ends,
//!    its connections are dropped.
//!
//! Redirects are not followed here: the task sees the 3xx, and a request to the new location is
//! a new request under the same checks. Refusals are written to the task's log as
//! `[wasmq: http: ...]` lines, since the guest only sees an error code.

pub mod addr;
pub mod allow;
pub mod resolve;
mod send;

use std::path::Path;
use std::sync::Arc;

pub use addr::{AddrClass, classify};
pub use allow::{AllowList, HostPattern, RequestHost};
pub use resolve::{Resolve, StaticResolver, SystemResolver};
pub(crate) use send::TaskHttp;

/// Default most requests one attempt of a task may make (`worker --max-http-requests`).
pub const DEFAULT_MAX_REQUESTS: u32 = 100;
/// Default most response body bytes one attempt of a task may read, all responses together
/// (`worker --max-http-response-bytes`).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// What went wrong setting up outbound HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid host pattern {pattern:?}: {reason} (expected HOST[:PORT]: a name, *.domain, an IP, a CIDR range or *, and a port or *)")]
    Pattern { pattern: String, reason: String },
    #[error("cannot read the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot set up TLS for HTTP requests: {0}")]
    Tls(String),
}

/// A worker's settings for the requests of every task it runs.
#[derive(Clone)]
pub struct HttpConfig {
    /// `--allow-hosts`: the most any task may be granted.
    pub ceiling: Arc<AllowList>,
    /// Most requests per attempt; a task may ask for fewer.
    pub max_requests: u32,
    /// Most response body bytes per attempt; a task may ask for fewer.
    pub max_response_bytes: u64,
    tls: Arc<rustls::ClientConfig>,
    resolver: Arc<dyn Resolve>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("ceiling", &self.ceiling.to_string())
            .field("max_requests", &self.max_requests)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for HttpConfig {
    /// No request allowed (an empty ceiling), the default caps, Mozilla's roots, the system's
    /// resolver.
    fn default() -> Self {
        Self {
            ceiling: Arc::new(AllowList::default()),
            max_requests: DEFAULT_MAX_REQUESTS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            tls: default_tls(),
            resolver: Arc::new(SystemResolver),
        }
    }
}

/// The TLS client settings with Mozilla's roots only: built once per process.
fn default_tls() -> Arc<rustls::ClientConfig> {
    static TLS: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        Arc::new(tls_config(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }).expect("ring supports the default protocol versions"))
    })
    .clone()
}

fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, HttpError> {
    // The process may hold no default crypto provider (or redis' one): name ring explicitly.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Tasks speak HTTP/1.1 only (the sender's connection is HTTP/1).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl HttpConfig {
    /// The settings with `ceiling` as the worker's `--allow-hosts`.
    pub fn new(ceiling: AllowList) -> Self {
        Self { ceiling: Arc::new(ceiling), ..Self::default() }
    }

    /// Trusts the CA certificates of a PEM file too (`--http-ca`), besides Mozilla's roots: for
    /// services behind a private CA.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, HttpError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let ca_error = |reason: String| HttpError::CaFile { path: path.display().to_string(), reason };
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| ca_error(e.to_string()))? {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_error(format!("a certificate is not usable as a root: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_error("it holds no PEM certificate".into()));
        }
        self.tls = Arc::new(tls_config(roots)?);
        Ok(self)
    }

    /// Resolves names with `resolver` instead of the system's (tests map names to chosen
    /// addresses with a [`StaticResolver`]).
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.resolver = resolver;
        self
    }
}

/// What one task is granted: hosts, and caps lower than the worker's if it asked for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrant {
    pub allow: AllowList,
    pub max_requests: Option<u32>,
    pub max_response_bytes: Option<u64>,
}
