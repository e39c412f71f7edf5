//! Name resolution for tasks' requests, apart from connecting: the sender checks every address a
//! name resolves to and connects to a checked one, so that the address checked is the address
//! used (no second lookup that DNS could answer differently).
//!
//! The resolver is a trait so that tests can map a name to any address without a DNS server
//! ([`StaticResolver`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// A resolution in progress.
pub type Resolving<'a> = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, name: &'a str, port: u16) -> Resolving<'a>;
}

/// The system's resolver (`getaddrinfo`, on tokio's blocking threads).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str, port: u16) -> Resolving<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((name, port)).await?.map(|a| a.ip()).collect()) })
    }
}

/// Fixed answers, for tests: a name not in the map does not resolve.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver(HashMap<String, Vec<IpAddr>>);

impl StaticResolver {
    pub fn new(entries: impl IntoIterator<Item = (String, Vec<IpAddr>)>) -> Self {
        Self(entries.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a str, _port: u16) -> Resolving<'a> {
        let answer =
            self.0.get(name).cloned().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{name} is not in the static resolver")));
        Box::pin(async move { answer })
    }
}
