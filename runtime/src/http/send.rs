//! Sending one task request: the checks in order (cap, grant, ceiling, resolution, address
//! classes), the connection to a checked address, TLS, HTTP/1, and a response body that counts
//! against the task's byte cap. Plugged into wasmtime-wasi-http as its `send_request` hook.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error as WasiError, RequestOptions, WasiBody, WasiHttpHooks};

use super::addr::{self, AddrClass};
use super::allow::{AllowList, RequestHost};
use super::{HttpConfig, HttpGrant};

/// Where refusals and failures are told: a line appended to the task's log.
pub(crate) type Log = Arc<dyn Fn(&str) + Send + Sync>;

fn note(log: &Log, line: std::fmt::Arguments<'_>) {
    log(&format!("[wasmq: http: {line}]\n"));
}

/// The HTTP side of one task run: its grant, its caps and what it used of them.
pub(crate) struct TaskHttp {
    config: HttpConfig,
    grant: Arc<AllowList>,
    max_requests: u32,
    requests: u32,
    max_response_bytes: u64,
    /// Response body bytes the task may still read (shared by the bodies being read).
    body_left: Arc<AtomicU64>,
    log: Log,
}

impl TaskHttp {
    /// A task's HTTP under the worker's `config`: its caps are the lower of its own and the
    /// worker's.
    pub(crate) fn new(config: &HttpConfig, grant: &HttpGrant, log: Log) -> Self {
        let max_requests = grant.max_requests.map_or(config.max_requests, |m| m.min(config.max_requests));
        let max_response_bytes = grant.max_response_bytes.map_or(config.max_response_bytes, |m| m.min(config.max_response_bytes));
        Self {
            config: config.clone(),
            grant: Arc::new(grant.allow.clone()),
            max_requests,
            requests: 0,
            max_response_bytes,
            body_left: Arc::new(AtomicU64::new(max_response_bytes)),
            log,
        }
    }

    /// The checks that need no lookup: the request cap, a host the URI names, a grant and a
    /// ceiling that could allow it. Counts the request, allowed or not.
    fn admit(&mut self, request: &http::Request<WasiBody>) -> Result<Target, WasiError> {
        self.requests = self.requests.saturating_add(1);
        let uri = request.uri();
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let scheme = if https { "https" } else { "http" };
        let Some(host) = uri.host().and_then(RequestHost::parse) else {
            note(&self.log, format_args!("a request to {scheme}://{} refused: no valid host", uri.authority().map_or("", |a| a.as_str())));
            return Err(WasiError::HttpRequestUriInvalid);
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let shown = format!("{scheme}://{host}:{port}");
        if self.requests > self.max_requests {
            note(
                &self.log,
                format_args!("request {} to {shown} refused: over the task's limit of {} requests (--max-http-requests)", self.requests, self.max_requests),
            );
            return Err(WasiError::ConnectionLimitReached);
        }
        if self.grant.is_empty() {
            note(&self.log, format_args!("request to {shown} denied: the task is granted no host (--allow-host HOST[:PORT])"));
            return Err(WasiError::HttpRequestDenied);
        }
        if !self.grant.may_allow(&host, port) {
            note(&self.log, format_args!("request to {shown} denied: not in the task's grant ({})", self.grant));
            return Err(WasiError::HttpRequestDenied);
        }
        if !self.config.ceiling.may_allow(&host, port) {
            note(&self.log, format_args!("request to {shown} denied: outside this worker's --allow-hosts, which no task grant can widen"));
            return Err(WasiError::HttpRequestDenied);
        }
        Ok(Target { https, host, port, shown })
    }
}

/// A request that passed the checks before resolution.
struct Target {
    https: bool,
    host: RequestHost,
    port: u16,
    /// `scheme://host:port`, for the log (never the path: it may carry tokens).
    shown: String,
}

/// What the asynchronous part of a send needs, owned.
struct Sender {
    config: HttpConfig,
    grant: Arc<AllowList>,
    body_left: Arc<AtomicU64>,
    max_response_bytes: u64,
    log: Log,
}

/// Why an address of the request's host was not used.
enum Refusal {
    NotGranted,
    Ceiling,
    Class(AddrClass),
}

type Response = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), WasiError>> + Send>);

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Sender {
    /// The addresses of the target that may be connected to, in the resolver's order.
    async fn addresses(&self, t: &Target) -> Result<Vec<IpAddr>, WasiError> {
        let found = match &t.host {
            RequestHost::Ip(ip) => vec![*ip],
            RequestHost::Name(name) => match self.config.resolver.resolve(name, t.port).await {
                Ok(a) if !a.is_empty() => a,
                Ok(_) | Err(_) => {
                    note(&self.log, format_args!("request to {} failed: the name does not resolve", t.shown));
                    return Err(WasiError::DnsError { rcode: Some("NXDOMAIN".into()), info_code: None });
                }
            },
        };
        let mut usable: Vec<IpAddr> = Vec::new();
        let mut first_refusal = None;
        for ip in found.into_iter().map(addr::canonical) {
            let class = addr::classify(ip);
            let refusal = if !self.grant.allows(&t.host, ip, t.port) {
                Some(Refusal::NotGranted)
            } else if !self.config.ceiling.allows(&t.host, ip, t.port) {
                Some(Refusal::Ceiling)
            } else if !class.is_public() && !self.config.ceiling.grants_special(ip, t.port) {
                Some(Refusal::Class(class))
            } else {
                None
            };
            match refusal {
                None if !usable.contains(&ip) => usable.push(ip),
                None => {}
                Some(r) => {
                    first_refusal.get_or_insert((ip, r));
                }
            }
        }
        if !usable.is_empty() {
            return Ok(usable);
        }
        let (ip, refusal) = first_refusal.expect("some address was found");
        let at = match &t.host {
            RequestHost::Name(n) => format!("{n} resolves to {ip}"),
            RequestHost::Ip(_) => format!("{ip} is the address"),
        };
        Err(match refusal {
            Refusal::NotGranted => {
                note(&self.log, format_args!("request to {} denied: {at}, which the task's grant does not allow", t.shown));
                WasiError::HttpRequestDenied
            }
            Refusal::Ceiling => {
                note(&self.log, format_args!("request to {} denied: {at}, outside this worker's --allow-hosts", t.shown));
                WasiError::HttpRequestDenied
            }
            Refusal::Class(class) => {
                let how = if class == AddrClass::Metadata {
                    "which only that exact IP in the worker's --allow-hosts can grant"
                } else {
                    "which only an IP or CIDR range in the worker's --allow-hosts can grant (never a host name)"
                };
                note(&self.log, format_args!("request to {} refused: {at}, {}, {how}; no connection was made", t.shown, class.describe()));
                WasiError::DestinationIpProhibited
            }
        })
    }

    async fn connect(&self, t: &Target, addresses: &[IpAddr], timeout: Option<Duration>) -> Result<TcpStream, WasiError> {
        let mut last = None;
        for ip in addresses {
            let connecting = TcpStream::connect(SocketAddr::new(*ip, t.port));
            let result = match timeout {
                Some(d) => tokio::time::timeout(d, connecting).await.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
                None => connecting.await,
            };
            match result {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        let e = last.expect("at least one address");
        note(&self.log, format_args!("request to {} failed: cannot connect: {e}", t.shown));
        Err(match e.kind() {
            std::io::ErrorKind::TimedOut => WasiError::ConnectionTimeout,
            _ => WasiError::ConnectionRefused,
        })
    }

    async fn tls(&self, t: &Target, tcp: TcpStream) -> Result<Box<dyn Io>, WasiError> {
        use rustls::pki_types::ServerName;
        let name = match &t.host {
            RequestHost::Ip(ip) => ServerName::IpAddress((*ip).into()),
            RequestHost::Name(n) => ServerName::try_from(n.clone()).map_err(|_| WasiError::HttpRequestUriInvalid)?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.config.tls.clone());
        match connector.connect(name, tcp).await {
            Ok(s) => Ok(Box::new(s)),
            Err(e) => {
                note(&self.log, format_args!("request to {} failed: TLS: {e}", t.shown));
                let certificate =
                    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
                Err(if certificate { WasiError::TlsCertificateError } else { WasiError::TlsProtocolError })
            }
        }
    }

    async fn send(self, t: Target, mut request: http::Request<WasiBody>, options: Option<RequestOptions>) -> Result<Response, WasiError> {
        let addresses = self.addresses(&t).await?;
        let tcp = self.connect(&t, &addresses, options.and_then(|o| o.connect_timeout)).await?;
        let io: Box<dyn Io> = if t.https { self.tls(&t, tcp).await? } else { Box::new(tcp) };
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, WasiBody>(TokioIo::new(io)).await.map_err(WasiError::Hyper)?;
        // The request line carries the path only; the host is in the Host header.
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
        *request.uri_mut() = http::Uri::builder().path_and_query(path).build().map_err(|_| WasiError::HttpRequestUriInvalid)?;
        let first_byte = options.and_then(|o| o.first_byte_timeout);
        let send = async move {
            let sending = sender.send_request(request);
            match first_byte {
                Some(d) => tokio::time::timeout(d, sending).await.map_err(|_| WasiError::ConnectionReadTimeout)?.map_err(WasiError::Hyper),
                None => sending.await.map_err(WasiError::Hyper),
            }
        };
        // Wait for the response while driving the connection.
        let mut send = std::pin::pin!(send);
        let mut conn = Some(conn);
        let response = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => {
                let Some(c) = conn.as_mut() else { return Poll::Pending };
                let ended = ready!(Pin::new(c).poll(cx));
                conn = None;
                match ended {
                    Ok(()) => send.as_mut().poll(cx),
                    Err(e) => Poll::Ready(Err(WasiError::Hyper(e))),
                }
            }
        })
        .await?;
        let left = self.body_left.load(Ordering::SeqCst);
        let declared = response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > left) {
            note(
                &self.log,
                format_args!(
                    "response of {} refused: {} body bytes, over what is left of the task's {} (--max-http-response-bytes)",
                    t.shown,
                    declared.unwrap_or_default(),
                    self.max_response_bytes
                ),
            );
            return Err(WasiError::HttpResponseBodySize(declared));
        }
        let capped = CappedBody { inner: None, left: self.body_left.clone(), max: self.max_response_bytes, log: self.log.clone(), shown: t.shown };
        let response = response.map(|incoming| CappedBody { inner: Some(incoming), ..capped }.boxed_unsync());
        let driver = async move {
            match conn {
                Some(c) => c.await.map_err(WasiError::Hyper),
                None => Ok(()),
            }
        };
        Ok((response, Box::new(driver)))
    }
}

/// A response body that stops with `HTTP-response-body-size` once the task's bytes are used up.
struct CappedBody {
    inner: Option<hyper::body::Incoming>,
    left: Arc<AtomicU64>,
    max: u64,
    log: Log,
    shown: String,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = WasiError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, WasiError>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        let frame = match ready!(Pin::new(inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(WasiError::Hyper(e)))),
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len() as u64;
            if self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(n)).is_err() {
                self.left.store(0, Ordering::SeqCst);
                self.inner = None;
                note(&self.log, format_args!("response of {} cut off: over the task's {} response bytes (--max-http-response-bytes)", self.shown, self.max));
                return Poll::Ready(Some(Err(WasiError::HttpResponseBodySize(Some(self.max)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }
}

impl WasiHttpHooks for TaskHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), WasiError>> + Send>,
    ) -> Box<dyn Future<Output = Result<Response, WasiError>> + Send> {
        let admitted = self.admit(&request);
        let sender = Sender {
            config: self.config.clone(),
            grant: self.grant.clone(),
            body_left: self.body_left.clone(),
            max_response_bytes: self.max_response_bytes,
            log: self.log.clone(),
        };
        Box::new(async move { sender.send(admitted?, request, options).await })
    }

    // The default hooks log every failed request at warn level in the worker's log; a task's
    // failures are the task's, told in its own log by the sender.
    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        if err.is_timeout() {
            ErrorCode::HttpResponseTimeout
        } else if err.is_incomplete_message() {
            ErrorCode::HttpResponseIncomplete
        } else {
            ErrorCode::HttpProtocolError
        }
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        match err.kind() {
            std::io::ErrorKind::TimedOut => ErrorCode::ConnectionTimeout,
            _ => ErrorCode::ConnectionRefused,
        }
    }

    fn p2_error_from_tls(&mut self, _err: &std::io::Error) -> ErrorCode {
        ErrorCode::TlsProtocolError
    }
}
