//! Who may do what.
//!
//! - The API's actions take `Authorization: Bearer TOKEN` (only the header: a cookie would let
//!   another site's page act with a logged-in browser's credentials).
//! - Reads (pages, `GET /v1/...`, `/metrics`) need the token only with `--auth-read`, which is
//!   forced off loopback; then a logged-in dashboard session counts too.
//! - The dashboard logs in with the token into a session: an HttpOnly, SameSite=Strict cookie
//!   holding a random id; the server keeps the session (with its CSRF token) in memory, so a
//!   restart logs everyone out. Every form carries the session's CSRF token. Without a
//!   configured token (loopback only) a visitor gets a session without logging in, so the forms
//!   still carry a CSRF token.
//! - `--read-only` refuses every action, whoever asks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};

use crate::api::ApiError;
use crate::{AppState, ServeError};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "wasmq_session";
/// How long a session lives after it was made.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept (the oldest go first beyond it): visitors cannot grow the map without end.
const MAX_SESSIONS: usize = 10_000;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Act,
}

/// A dashboard session.
#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    /// Logged in with the token (or no token is configured).
    pub authenticated: bool,
    made: Instant,
}

/// The dashboard's sessions, in memory.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new() -> Result<Self, ServeError> {
        // Fail at start, not at the first login, if there is no random source.
        crate::random_hex(1)?;
        Ok(Self { map: Mutex::new(HashMap::new()) })
    }

    /// Makes a session; returns its id.
    pub fn create(&self, authenticated: bool) -> Result<(String, Session), ServeError> {
        let id = crate::random_hex(32)?;
        let s = Session { csrf: crate::random_hex(32)?, authenticated, made: Instant::now() };
        let mut m = self.map.lock().expect("lock");
        m.retain(|_, s| s.made.elapsed() < SESSION_TTL);
        if m.len() >= MAX_SESSIONS
            && let Some(oldest) = m.iter().min_by_key(|(_, s)| s.made).map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let m = self.map.lock().expect("lock");
        m.get(id).filter(|s| s.made.elapsed() < SESSION_TTL).cloned()
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().expect("lock").remove(id);
    }
}

/// Equal in time that does not depend on where the strings differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// A cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The request's session, if its cookie names a live one.
pub fn session(s: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie(headers, SESSION_COOKIE)?;
    s.sessions.get(id).map(|sess| (id.to_string(), sess))
}

fn bearer_ok(s: &AppState, headers: &HeaderMap) -> bool {
    match (&s.config.token, bearer(headers)) {
        (Some(t), Some(b)) => same(t, b),
        _ => false,
    }
}

/// Checks an API request (or a page read): Ok, or the error to answer with.
pub fn check(s: &AppState, headers: &HeaderMap, access: Access) -> Result<(), ApiError> {
    match access {
        Access::Act if s.config.read_only => Err(ApiError::new(StatusCode::FORBIDDEN, "read_only", "this server is read-only (--read-only)")),
        Access::Act => {
            if s.config.token.is_none() || bearer_ok(s, headers) {
                Ok(())
            } else {
                Err(unauthorized())
            }
        }
        Access::Read => {
            if !s.config.auth_read || s.config.token.is_none() || bearer_ok(s, headers) || session(s, headers).is_some_and(|(_, x)| x.authenticated) {
                Ok(())
            } else {
                Err(unauthorized())
            }
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong token: send Authorization: Bearer TOKEN")
}

/// The `Set-Cookie` value of a session.
pub fn session_cookie(id: &str) -> String {
    format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_TTL.as_secs())
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}
