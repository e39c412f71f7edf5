//! Outbound HTTP from a task: `get`, `post`, `post_json`, or a [`Request`] with headers, each
//! returning the status and the body.
//!
//! Components only (`wasm32-wasip2`), through `wasi:http/outgoing-handler@0.2.x`: a core module
//! (`wasm32-wasip1`) has no HTTP, and there these functions return [`Error::Unsupported`]
//! (as they do built for the host, in a task's native unit tests).
//!
//! Every request is denied by the worker unless the task was granted its host (`wasmq enqueue
//! --allow-host HOST[:PORT]`) within the worker's `--allow-hosts`; a refusal is an
//! [`Error::Code`] such as `HTTP-request-denied`, and the worker writes why in the task's log.
//!
//! Redirects (301, 302, 303, 307, 308) are followed, up to [`MAX_REDIRECTS`]: each is a new
//! request, which the worker checks like the first (a redirect to a host the task is not
//! granted is refused). 303, and 301/302 after a POST, continue as a GET without a body.
//!
//! ```no_run
//! let r = wasmq_sdk::http::post_json("https://hooks.example.com/alert", &serde_json::json!({"text": "disk full"}))?;
//! if !r.is_success() {
//!     return Err(format!("the webhook answered {}", r.status).into());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

/// Most redirects one call follows.
pub const MAX_REDIRECTS: u32 = 5;

/// A response: its status, headers and whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header (names compared case-insensitively), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Built for a target without `wasi:http` (core modules, native builds).
    Unsupported,
    /// The URL is not `http://HOST[:PORT][/PATH]` or `https://...`.
    InvalidUrl(String),
    /// A header the host refuses (a hop-by-hop header, say) or that is malformed.
    Header(String),
    /// The host's error code, by its WIT name: `HTTP-request-denied`, `destination-IP-prohibited`,
    /// `connection-refused`, `HTTP-response-body-size`, ...
    Code(String),
    /// More than [`MAX_REDIRECTS`] redirects.
    TooManyRedirects,
    /// The body could not be written or read.
    Stream(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsupported => f.write_str("outbound HTTP needs a component (build the task for wasm32-wasip2)"),
            Self::InvalidUrl(u) => write!(f, "invalid URL {u:?}: expected http:// or https://HOST[:PORT][/PATH]"),
            Self::Header(h) => write!(f, "header {h:?} refused"),
            Self::Code(c) => write!(f, "HTTP request failed: {c}"),
            Self::TooManyRedirects => write!(f, "more than {MAX_REDIRECTS} redirects"),
            Self::Stream(e) => write!(f, "HTTP body: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// A request to send: method, URL, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Self { method: method.to_ascii_uppercase(), url: url.to_string(), headers: Vec::new(), body: None }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sends the request, following redirects.
    pub fn send(self) -> Result<Response, Error> {
        let mut req = self;
        for _ in 0..=MAX_REDIRECTS {
            let url = Url::parse(&req.url)?;
            let r = imp::send(&req.method, &url, &req.headers, req.body.as_deref())?;
            let Some(location) = redirect(&r) else { return Ok(r) };
            let next = url.join(location)?;
            let as_get = r.status == 303 || (matches!(r.status, 301 | 302) && req.method == "POST");
            if as_get {
                req.method = "GET".into();
                req.body = None;
                req.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
            }
            req.url = next;
        }
        Err(Error::TooManyRedirects)
    }
}

fn redirect(r: &Response) -> Option<&str> {
    matches!(r.status, 301 | 302 | 303 | 307 | 308).then(|| r.header("location")).flatten()
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    Request::new("GET", url).send()
}

/// `POST url` with a body of type `content_type`.
pub fn post(url: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Result<Response, Error> {
    Request::new("POST", url).header("content-type", content_type).body(body).send()
}

/// `POST url` with `value` as JSON.
pub fn post_json<T: serde::Serialize + ?Sized>(url: &str, value: &T) -> Result<Response, Error> {
    let body = serde_json::to_vec(value).map_err(|e| Error::Stream(e.to_string()))?;
    post(url, "application/json", body)
}

/// The parts of an absolute `http(s)://` URL that a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidUrl(url.chars().take(200).collect());
        let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(invalid()),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
            return Err(invalid());
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        Ok(Self { https, authority: authority.to_string(), path })
    }

    /// A redirect's `Location`, absolute or relative to this URL.
    fn join(&self, location: &str) -> Result<String, Error> {
        let scheme = if self.https { "https" } else { "http" };
        if location.contains("://") {
            Url::parse(location)?;
            return Ok(location.to_string());
        }
        if let Some(rest) = location.strip_prefix("//") {
            return Ok(format!("{scheme}://{rest}"));
        }
        if location.starts_with('/') {
            return Ok(format!("{scheme}://{}{location}", self.authority));
        }
        let dir = self.path.split('?').next().unwrap_or("/");
        let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
        Ok(format!("{scheme}://{}{dir}{location}", self.authority))
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "wasi", target_env = "p2"))]
mod imp {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmq:task/http-client",
        features: ["clocks-timezone", "network-error-code"],
        // The WASI interfaces that wasi:http uses (io, clocks) are generated here too.
        generate_all,
    });

    use super::{Error, Response, Url};
    use wasi::http::outgoing_handler;
    use wasi::http::types::{self as t, ErrorCode};
    use wasi::io::streams::StreamError;

    /// The WIT name of an error code, as the WASI HTTP specification spells it.
    fn code_name(code: &ErrorCode) -> String {
        let name = match code {
            ErrorCode::DnsTimeout => "DNS-timeout",
            ErrorCode::DnsError(_) => "DNS-error",
            ErrorCode::DestinationNotFound => "destination-not-found",
            ErrorCode::DestinationUnavailable => "destination-unavailable",
            ErrorCode::DestinationIpProhibited => "destination-IP-prohibited",
            ErrorCode::DestinationIpUnroutable => "destination-IP-unroutable",
            ErrorCode::ConnectionRefused => "connection-refused",
            ErrorCode::ConnectionTerminated => "connection-terminated",
            ErrorCode::ConnectionTimeout => "connection-timeout",
            ErrorCode::ConnectionReadTimeout => "connection-read-timeout",
            ErrorCode::ConnectionWriteTimeout => "connection-write-timeout",
            ErrorCode::ConnectionLimitReached => "connection-limit-reached",
            ErrorCode::TlsProtocolError => "TLS-protocol-error",
            ErrorCode::TlsCertificateError => "TLS-certificate-error",
            ErrorCode::TlsAlertReceived(_) => "TLS-alert-received",
            ErrorCode::HttpRequestDenied => "HTTP-request-denied",
            ErrorCode::HttpRequestLengthRequired => "HTTP-request-length-required",
            ErrorCode::HttpRequestBodySize(_) => "HTTP-request-body-size",
            ErrorCode::HttpRequestMethodInvalid => "HTTP-request-method-invalid",
            ErrorCode::HttpRequestUriInvalid => "HTTP-request-URI-invalid",
            ErrorCode::HttpRequestUriTooLong => "HTTP-request-URI-too-long",
            ErrorCode::HttpResponseIncomplete => "HTTP-response-incomplete",
            ErrorCode::HttpResponseBodySize(_) => "HTTP-response-body-size",
            ErrorCode::HttpResponseTimeout => "HTTP-response-timeout",
            ErrorCode::HttpProtocolError => "HTTP-protocol-error",
            ErrorCode::InternalError(Some(m)) => return format!("internal-error: {m}"),
            other => return format!("{other:?}"),
        };
        name.to_string()
    }

    fn method(m: &str) -> t::Method {
        match m {
            "GET" => t::Method::Get,
            "HEAD" => t::Method::Head,
            "POST" => t::Method::Post,
            "PUT" => t::Method::Put,
            "DELETE" => t::Method::Delete,
            "OPTIONS" => t::Method::Options,
            "PATCH" => t::Method::Patch,
            other => t::Method::Other(other.to_string()),
        }
    }

    pub fn send(m: &str, url: &Url, headers: &[(String, Vec<u8>)], body: Option<&[u8]>) -> Result<Response, Error> {
        let fields = t::Fields::new();
        for (name, value) in headers {
            fields.append(name, value).map_err(|_| Error::Header(name.clone()))?;
        }
        if let Some(b) = body {
            fields.set("content-length", &[b.len().to_string().into_bytes()]).map_err(|_| Error::Header("content-length".into()))?;
        }
        let request = t::OutgoingRequest::new(fields);
        let invalid = || Error::InvalidUrl(format!("{}{}", url.authority, url.path));
        request.set_method(&method(m)).map_err(|_| Error::Code(format!("invalid method {m:?}")))?;
        request.set_scheme(Some(&if url.https { t::Scheme::Https } else { t::Scheme::Http })).map_err(|_| invalid())?;
        request.set_authority(Some(&url.authority)).map_err(|_| invalid())?;
        request.set_path_with_query(Some(&url.path)).map_err(|_| invalid())?;
        let outgoing = request.body().map_err(|_| Error::Stream("the request body was taken twice".into()))?;
        // Sent first, then the body is streamed: the host buffers little of a body before the
        // request goes out.
        let pending = outgoing_handler::handle(request, None).map_err(|c| Error::Code(code_name(&c)))?;
        let written = write_body(&outgoing, body.unwrap_or_default());
        let finished = t::OutgoingBody::finish(outgoing, None).map_err(|c| Error::Code(code_name(&c)));
        pending.subscribe().block();
        // A refused request also closes its body: its error code says more than the write's.
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(code))) => return Err(Error::Code(code_name(&code))),
            Some(Err(())) | None => return Err(Error::Stream("the response was taken twice".into())),
        };
        written?;
        finished?;
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response.consume().map_err(|_| Error::Stream("the response body was taken twice".into()))?;
        let body = read_body(&incoming)?;
        drop(t::IncomingBody::finish(incoming));
        Ok(Response { status, headers, body })
    }

    fn write_body(outgoing: &t::OutgoingBody, body: &[u8]) -> Result<(), Error> {
        if body.is_empty() {
            return Ok(());
        }
        let stream = outgoing.write().map_err(|_| Error::Stream("the request body stream was taken twice".into()))?;
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| Error::Stream(format!("cannot send the body: {}", stream_error(e))))?;
        }
        Ok(())
    }

    fn read_body(incoming: &t::IncomingBody) -> Result<Vec<u8>, Error> {
        let stream = incoming.stream().map_err(|_| Error::Stream("the response body stream was taken twice".into()))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => return Ok(body),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match t::http_error_code(&e) {
                        Some(code) => Error::Code(code_name(&code)),
                        None => Error::Stream(e.to_debug_string()),
                    });
                }
            }
        }
    }

    fn stream_error(e: StreamError) -> String {
        match e {
            StreamError::Closed => "the connection closed".into(),
            StreamError::LastOperationFailed(e) => e.to_debug_string(),
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_os = "wasi", target_env = "p2")))]
mod imp {
    use super::{Error, Response, Url};

    pub fn send(_method: &str, _url: &Url, _headers: &[(String, Vec<u8>)], _body: Option<&[u8]>) -> Result<Response, Error> {
        Err(Error::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_join() {
        let u = Url::parse("https://api.example.com:8443/a/b?x=1#frag").unwrap();
        assert_eq!(u, Url { https: true, authority: "api.example.com:8443".into(), path: "/a/b?x=1".into() });
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        assert_eq!(Url::parse("http://h?q").unwrap().path, "/?q");
        for bad in ["ftp://h/", "h/x", "http:///x", "http://user@h/", "http://a b/"] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(u.join("/c").unwrap(), "https://api.example.com:8443/c");
        assert_eq!(u.join("c?y").unwrap(), "https://api.example.com:8443/a/c?y");
        assert_eq!(u.join("//other.example/x").unwrap(), "https://other.example/x");
        assert_eq!(u.join("http://127.0.0.1:9/").unwrap(), "http://127.0.0.1:9/");
        assert!(u.join("gopher://x/").is_err());
    }

    #[test]
    fn natively_there_is_no_http() {
        assert_eq!(get("http://example.com/").unwrap_err(), Error::Unsupported);
        assert!(Error::Unsupported.to_string().contains("wasm32-wasip2"));
        assert_eq!(Request::new("post", "http://x/").method, "POST");
    }
}
