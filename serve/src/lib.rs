//! `wasmq serve`: one HTTP server with the versioned JSON API (`/v1`), the Prometheus metrics
//! (`/metrics`) and the server-rendered dashboard, over the library's [`wasmq::client::Client`].
//!
//! It is a library of its own (the `wasmq` command line only parses flags and binds the socket)
//! so that the tests drive the very router the binary serves, route by route, with axum's
//! `oneshot`. Like every other tool it reads and writes Redis only through the client and the
//! queue layer: no key is named here.
//!
//! - [`api`]: the `/v1` routes and their JSON error shape.
//! - [`auth`]: the bearer token, the dashboard's login cookie and CSRF tokens, `--read-only`.
//! - [`wait`]: the one shared wake-up listener that `GET /v1/tasks/{id}?wait=` long-polls on.
//! - [`metrics`]: `/metrics`, from running totals (a bounded number of commands per queue).
//! - [`dashboard`]: the HTML pages (askama templates compiled into the binary, no JavaScript
//!   framework).
//! - [`worker_metrics`]: not part of `serve`: the `/metrics` of one worker process (`wasmq
//!   worker --metrics-listen`), here because it shares the encoding.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod metrics;
pub mod wait;
pub mod worker_metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use wasmq::client::Client;

/// What went wrong setting up the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without a token: a non-loopback address needs --auth-token or --auth-token-file")]
    OpenWithoutToken(SocketAddr),
    #[error("the auth token must be at least 16 characters of visible ASCII")]
    WeakToken,
    #[error("cannot read the random source: {0}")]
    Random(String),
}

/// How the server is exposed.
#[derive(Debug, Clone, Default)]
pub struct ServeConfig {
    /// The token that the API's actions take as `Authorization: Bearer TOKEN` and the dashboard's
    /// login takes. None: actions are open to whoever reaches the (loopback) address.
    pub token: Option<String>,
    /// Reads (pages, `GET /v1/...`, `/metrics`) need the token too. Always true off loopback.
    pub auth_read: bool,
    /// Every action is refused and the dashboard shows no buttons.
    pub read_only: bool,
    /// Largest module `POST /v1/modules` takes (the module store's cap).
    pub max_module_size: u64,
    /// Largest task input the API takes.
    pub max_input_size: u64,
}

impl ServeConfig {
    /// Checks the configuration against the address it will listen on: a non-loopback address
    /// needs a token, and then reads need it too (a dashboard on a network shows task data).
    pub fn for_address(mut self, addr: SocketAddr) -> Result<Self, ServeError> {
        if let Some(t) = &self.token
            && (t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ServeError::WeakToken);
        }
        if !addr.ip().is_loopback() {
            if self.token.is_none() {
                return Err(ServeError::OpenWithoutToken(addr));
            }
            self.auth_read = true;
        }
        Ok(self)
    }
}

/// What every handler shares.
pub struct AppState {
    pub client: Client,
    pub config: ServeConfig,
    pub waiter: wait::Waiter,
    pub sessions: auth::Sessions,
}

/// The shared state, as handlers take it.
pub type State = Arc<AppState>;

/// The whole server: API, metrics and dashboard. `client` should be connected to the deployment;
/// the wake-up listener is started here (on the current tokio runtime).
pub fn router(mut client: Client, config: ServeConfig) -> Result<Router, ServeError> {
    client.set_max_input_size(config.max_input_size.max(1));
    client.set_max_module_size(config.max_module_size.max(1));
    let waiter = wait::Waiter::start(client.redis().clone(), client.db().clone());
    let state = Arc::new(AppState { client, config, waiter, sessions: auth::Sessions::new()? });
    Ok(Router::new().merge(api::routes()).merge(metrics::routes()).merge(dashboard::routes()).with_state(state))
}

/// Random bytes from the OS, hex-encoded (session ids, CSRF tokens).
pub(crate) fn random_hex(n: usize) -> Result<String, ServeError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| ServeError::Random(e.to_string()))?;
    Ok(hex::encode(b))
}
