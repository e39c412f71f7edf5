//! Host patterns as operators and producers write them (`--allow-host`, `--allow-hosts`), and
//! whether a list of them lets a request through.
//!
//! A pattern is `HOST[:PORT]`:
//!
//! - `HOST` is a host name (`api.example.com`), a wildcard over its subdomains
//!   (`*.example.com`: `a.example.com`, not `example.com`), an IP address (`10.0.0.5`, `[::1]`),
//!   a CIDR range (`10.0.0.0/8`, `[fd00::/8]`), or `*`: any host;
//! - `PORT` is a port number or `*` (any port); without it, ports 80 and 443 only.
//!
//! A request reaches an address when a pattern of the list matches its port and either names
//! its host or holds the address. Names are compared as written in the request (lower case, no
//! trailing dot); a name never makes a non-public address reachable ([`AllowList::grants_special`]).

use std::fmt;
use std::net::IpAddr;

use super::HttpError;
use super::addr;

/// The host part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// `*`.
    Any,
    /// `api.example.com`.
    Name(String),
    /// `*.example.com`, stored as `example.com`.
    Subdomains(String),
    /// One address.
    Ip(IpAddr),
    /// A range: its first address and prefix length.
    Net(IpAddr, u8),
}

/// The port part of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// Not given: 80 and 443.
    Web,
    Any,
    Is(u16),
}

/// One `HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: Host,
    port: Port,
}

/// Where a request goes, as the request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHost {
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for RequestHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl RequestHost {
    /// From the host of a URI: an IP literal (IPv6 in brackets) or a name, lower-cased, without
    /// a trailing dot.
    pub fn parse(host: &str) -> Option<Self> {
        let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if let Some(v6) = inner {
            return v6.parse::<std::net::Ipv6Addr>().ok().map(|a| Self::Ip(addr::canonical(IpAddr::V6(a))));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Some(Self::Ip(addr::canonical(ip)));
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        valid_name(&name).then_some(Self::Name(name))
    }
}

/// A DNS name of letters, digits, `-` and `_` in dot-separated labels of 1 to 63 characters,
/// 253 at most, whose last label is not all digits (that would be a malformed IPv4 address).
fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let ok = labels.iter().all(|l| {
        !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    ok && !labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

fn bad(pattern: &str, why: impl Into<String>) -> HttpError {
    HttpError::Pattern { pattern: pattern.chars().take(80).collect(), reason: why.into() }
}

fn parse_net(text: &str, pattern: &str) -> Result<Host, HttpError> {
    let (ip, prefix) = text.split_once('/').expect("called with a slash");
    let ip: IpAddr = ip.parse().map_err(|_| bad(pattern, format!("{ip:?} is not an IP address")))?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| bad(pattern, format!("the prefix length must be 0 to {max}")))?;
    let bits = |ip: IpAddr| -> u128 {
        match ip {
            IpAddr::V4(v4) => u32::from(v4) as u128,
            IpAddr::V6(v6) => u128::from(v6),
        }
    };
    let host_bits = if prefix == max { 0 } else { bits(ip) & (u128::MAX >> (128 - max as u32 + prefix as u32)) };
    if host_bits != 0 {
        return Err(bad(pattern, "the address has bits set past the prefix length (write the range's first address)"));
    }
    Ok(if prefix == max { Host::Ip(addr::canonical(ip)) } else { Host::Net(ip, prefix) })
}

fn parse_host(text: &str, pattern: &str) -> Result<Host, HttpError> {
    if text == "*" {
        return Ok(Host::Any);
    }
    if text.contains('/') {
        return parse_net(text, pattern);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(addr::canonical(ip)));
    }
    if let Some(rest) = text.strip_prefix("*.") {
        let name = rest.trim_end_matches('.').to_ascii_lowercase();
        return match valid_name(&name) {
            true => Ok(Host::Subdomains(name)),
            false => Err(bad(pattern, format!("{rest:?} is not a host name"))),
        };
    }
    if text.contains('*') {
        return Err(bad(pattern, "a wildcard is `*` alone or a leading `*.` (`*.example.com`)"));
    }
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    match valid_name(&name) {
        true => Ok(Host::Name(name)),
        false => Err(bad(pattern, format!("{text:?} is not a host name, an IP address or a CIDR range"))),
    }
}

fn parse_port(text: &str, pattern: &str) -> Result<Port, HttpError> {
    if text == "*" {
        return Ok(Port::Any);
    }
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Port::Is(p)),
        _ => Err(bad(pattern, format!("the port {text:?} is not 1 to 65535 or `*`"))),
    }
}

impl std::str::FromStr for HostPattern {
    type Err = HttpError;

    fn from_str(s: &str) -> Result<Self, HttpError> {
        let pattern = s.trim();
        if pattern.is_empty() {
            return Err(bad(s, "empty"));
        }
        if pattern.contains("://") || pattern.contains('/') && !pattern.contains(|c: char| c.is_ascii_digit()) {
            return Err(bad(pattern, "write HOST[:PORT], without a scheme or a path"));
        }
        // `[v6]`, `[v6]:port`, `[v6/len]:port`.
        if let Some(rest) = pattern.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad(pattern, "an opening `[` without its `]`"))?;
            if inside.parse::<std::net::Ipv6Addr>().is_err() && !inside.contains('/') {
                return Err(bad(pattern, format!("{inside:?} is not an IPv6 address")));
            }
            let host = parse_host(inside, pattern)?;
            let port = match after {
                "" => Port::Web,
                p => parse_port(p.strip_prefix(':').ok_or_else(|| bad(pattern, "expected `:PORT` after `]`"))?, pattern)?,
            };
            return Ok(Self { host, port });
        }
        // A bare IPv6 address or range has several colons and no port.
        if pattern.matches(':').count() > 1 {
            let host = parse_host(pattern, pattern)?;
            return match host {
                Host::Ip(_) | Host::Net(..) => Ok(Self { host, port: Port::Web }),
                _ => Err(bad(pattern, "write an IPv6 address with a port as [ADDRESS]:PORT")),
            };
        }
        let (host, port) = match pattern.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p, pattern)?),
            None => (pattern, Port::Web),
        };
        Ok(Self { host: parse_host(host, pattern)?, port })
    }
}

impl fmt::Display for HostPattern {
    /// The canonical form, which parses back to the same pattern.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = matches!(self.host, Host::Ip(IpAddr::V6(_)) | Host::Net(IpAddr::V6(_), _));
        let host = match &self.host {
            Host::Any => "*".to_string(),
            Host::Name(n) => n.clone(),
            Host::Subdomains(n) => format!("*.{n}"),
            Host::Ip(ip) => ip.to_string(),
            Host::Net(ip, len) => format!("{ip}/{len}"),
        };
        let host = if v6 { format!("[{host}]") } else { host };
        match self.port {
            Port::Web => f.write_str(&host),
            Port::Any => write!(f, "{host}:*"),
            Port::Is(p) => write!(f, "{host}:{p}"),
        }
    }
}

impl HostPattern {
    fn port_matches(&self, port: u16) -> bool {
        match self.port {
            Port::Web => port == 80 || port == 443,
            Port::Any => true,
            Port::Is(p) => p == port,
        }
    }

    fn names(&self, host: &RequestHost) -> bool {
        match (&self.host, host) {
            (Host::Any, _) => true,
            (Host::Name(n), RequestHost::Name(h)) => n == h,
            (Host::Subdomains(n), RequestHost::Name(h)) => h.strip_suffix(n.as_str()).is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            (Host::Ip(ip), RequestHost::Ip(h)) => ip == h,
            (Host::Net(..), RequestHost::Ip(h)) => self.holds(*h),
            _ => false,
        }
    }

    /// The pattern is an address or range that holds `ip`.
    fn holds(&self, ip: IpAddr) -> bool {
        let ip = addr::canonical(ip);
        match self.host {
            Host::Ip(a) => a == ip,
            Host::Net(IpAddr::V4(net), len) => match ip {
                IpAddr::V4(v4) => {
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len as u32) };
                    u32::from(v4) & mask == u32::from(net) & mask
                }
                IpAddr::V6(_) => false,
            },
            Host::Net(IpAddr::V6(net), len) => match ip {
                IpAddr::V6(v6) => {
                    let mask = if len == 0 { 0 } else { u128::MAX << (128 - len as u32) };
                    u128::from(v6) & mask == u128::from(net) & mask
                }
                IpAddr::V4(_) => false,
            },
            _ => false,
        }
    }

    fn is_address(&self) -> bool {
        matches!(self.host, Host::Ip(_) | Host::Net(..))
    }
}

/// A list of host patterns: a task's grant, or a worker's ceiling. Empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<HostPattern>);

impl AllowList {
    /// Patterns separated by commas (and whitespace), as a task field or a flag holds them.
    pub fn parse(text: &str) -> Result<Self, HttpError> {
        text.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect::<Result<Vec<_>, _>>().map(Self)
    }

    pub fn new(patterns: Vec<HostPattern>) -> Self {
        Self(patterns)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn patterns(&self) -> &[HostPattern] {
        &self.0
    }

    /// Could any address of `host` be allowed? Decided before resolving: a host that no pattern
    /// names, when the list has no address patterns either, is refused without a DNS lookup.
    pub fn may_allow(&self, host: &RequestHost, port: u16) -> bool {
        self.0.iter().any(|p| p.port_matches(port) && (p.names(host) || p.is_address()))
    }

    /// Whether a request for `host` may reach `ip` on `port`: a pattern matches the port and
    /// names the host or holds the address.
    pub fn allows(&self, host: &RequestHost, ip: IpAddr, port: u16) -> bool {
        self.0.iter().any(|p| p.port_matches(port) && (p.names(host) || p.holds(ip)))
    }

    /// Whether the list grants a non-public address: only an address or range pattern can, and
    /// a metadata address only when a pattern is exactly that address.
    pub fn grants_special(&self, ip: IpAddr, port: u16) -> bool {
        let ip = addr::canonical(ip);
        let exact_only = addr::is_metadata(ip);
        self.0.iter().any(|p| p.port_matches(port) && p.holds(ip) && (!exact_only || matches!(p.host, Host::Ip(_))))
    }
}

impl fmt::Display for AllowList {
    /// Comma-separated canonical patterns: what the task field `allow_hosts` holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> AllowList {
        AllowList::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn host(s: &str) -> RequestHost {
        RequestHost::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn patterns_parse_to_canonical_forms() {
        for (text, canonical) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.COM.:8080", "api.example.com:8080"),
            ("*.example.com:*", "*.example.com:*"),
            ("*", "*"),
            ("*:443", "*:443"),
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.0.0.0/8:5432", "10.0.0.0/8:5432"),
            ("192.168.1.7/32", "192.168.1.7"),
            ("[::1]:8080", "[::1]:8080"),
            ("::1", "[::1]"),
            ("fd00::/8", "[fd00::/8]"),
            ("[fd00::/8]:*", "[fd00::/8]:*"),
            ("[::ffff:10.0.0.1]:80", "10.0.0.1:80"),
        ] {
            let p: HostPattern = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.to_string(), canonical, "{text}");
            assert_eq!(p.to_string().parse::<HostPattern>().unwrap(), p, "{text} round trip");
        }
    }

    #[test]
    fn bad_patterns_are_refused_with_a_reason() {
        for text in [
            "",
            "http://example.com",
            "example.com:0",
            "example.com:99999",
            "exa mple.com",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "ex*mple.com",
            "1.2.3",
            "[::1",
            "[zz]:80",
            "a..b",
            "-a.com",
        ] {
            let e = text.parse::<HostPattern>().unwrap_err().to_string();
            assert!(e.contains("host pattern"), "{text}: {e}");
        }
        assert!(AllowList::parse("a.com, ,b.com:81").is_ok());
        assert!(AllowList::parse("a.com,bad host").is_err());
    }

    #[test]
    fn names_ports_and_ranges_match() {
        let l = list("api.example.com,*.svc.example.com:8443,10.0.0.0/8:*,[fd00::/8]:80,192.0.2.9:81");
        let p = ip("93.184.216.34");
        assert!(l.allows(&host("api.example.com"), p, 443));
        assert!(l.allows(&host("API.example.com."), p, 80));
        assert!(!l.allows(&host("api.example.com"), p, 8080), "no port: 80 and 443 only");
        assert!(!l.allows(&host("evil-api.example.com"), p, 443));
        assert!(l.allows(&host("a.svc.example.com"), p, 8443));
        assert!(!l.allows(&host("svc.example.com"), p, 8443), "a wildcard is for subdomains only");
        assert!(!l.allows(&host("xsvc.example.com"), p, 8443));
        // A name that resolves into an allowed range is allowed by that range.
        assert!(l.allows(&host("db.internal"), ip("10.1.2.3"), 5432));
        assert!(l.allows(&host("10.9.9.9"), ip("10.9.9.9"), 1));
        assert!(l.allows(&host("[fd12::1]"), ip("fd12::1"), 80));
        assert!(!l.allows(&host("[fd12::1]"), ip("fd12::1"), 81));
        assert!(l.allows(&host("192.0.2.9"), ip("192.0.2.9"), 81));
        assert!(!l.allows(&host("192.0.2.10"), ip("192.0.2.10"), 81));
        // IPv4-mapped IPv6 is the IPv4 address.
        assert!(l.allows(&host("[::ffff:10.0.0.1]"), ip("::ffff:10.0.0.1"), 9));
        assert!(!AllowList::default().may_allow(&host("api.example.com"), 443));
        assert!(!list("api.example.com").may_allow(&host("other.example.com"), 443));
        assert!(list("10.0.0.0/8").may_allow(&host("other.example.com"), 443), "might resolve into the range");
    }

    #[test]
    fn only_addresses_grant_non_public_destinations() {
        let l = list("*:*,internal.example.com,127.0.0.1:8080,10.0.0.0/8,169.254.0.0/16,169.254.169.254:80");
        assert!(!l.grants_special(ip("192.168.1.1"), 443), "neither `*` nor a name grants a private address");
        assert!(l.grants_special(ip("127.0.0.1"), 8080));
        assert!(!l.grants_special(ip("127.0.0.1"), 8081));
        assert!(!l.grants_special(ip("127.0.0.2"), 8080));
        assert!(l.grants_special(ip("10.2.3.4"), 443));
        assert!(l.grants_special(ip("::ffff:10.2.3.4"), 443));
        assert!(l.grants_special(ip("169.254.1.1"), 80));
        // A metadata address needs its own exact pattern: a range holding it is not enough.
        assert!(l.grants_special(ip("169.254.169.254"), 80));
        assert!(!l.grants_special(ip("169.254.169.254"), 443));
        assert!(!list("169.254.0.0/16:*").grants_special(ip("169.254.169.254"), 80));
        assert!(!list("0.0.0.0/0:*").grants_special(ip("169.254.170.2"), 80));
        assert!(!list("[::/0]:*").grants_special(ip("fd00:ec2::254"), 80));
    }
}
