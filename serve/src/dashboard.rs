//! The dashboard: server-rendered pages (askama templates, compiled into the binary with their
//! stylesheet: no build step, no JavaScript), refreshing themselves with a meta refresh.
//!
//! Every value from Redis is escaped by askama (task output, logs and errors are the task's own
//! text; nothing here is marked safe but the embedded stylesheet). Each page costs a number of
//! Redis commands bounded by its page size (a queue page reads one index range and one hash per
//! listed task), never a scan of all tasks. Actions are POST forms that need a logged-in session
//! and its CSRF token (see [`crate::auth`]); `--read-only` hides them and refuses them.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use wasmq::client::ClientError;
use wasmq::parse::format_ms;
use wasmq::queue::{QueueStats, TaskId, TaskRecord, TaskState};

use crate::State;
use crate::api::{ApiError, parse_id, parse_queue};
use crate::auth::{self, Access, Session, check};

/// Tasks per queue page.
pub const PAGE_SIZE: usize = 50;
const CSS: &str = include_str!("../templates/style.css");

pub fn routes() -> Router<State> {
    Router::new()
        .route("/", get(queues_page))
        .route("/queues/{queue}", get(queue_page))
        .route("/tasks", get(find_task))
        .route("/tasks/{id}", get(task_page))
        .route("/workers", get(workers_page))
        .route("/modules", get(modules_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
        .route("/queues/{queue}/retry-dead", post(retry_all))
        .route("/queues/{queue}/purge", post(purge))
        .route("/tasks/{id}/retry", post(retry_one))
        .route("/tasks/{id}/cancel", post(cancel))
}

/// What the navigation bar and the forms need.
pub struct Nav {
    pub csrf: String,
    pub logged_in: bool,
    pub can_act: bool,
    pub read_only: bool,
}

/// A page's session (made when the visitor has none) and the cookie to set for it.
fn page_session(s: &State, headers: &HeaderMap) -> Result<(Nav, Option<String>), ApiError> {
    let (sess, cookie) = match auth::session(s, headers) {
        Some((_, sess)) => (sess, None),
        None => {
            let (id, sess) = s.sessions.create(s.config.token.is_none()).map_err(internal)?;
            (sess, Some(auth::session_cookie(&id)))
        }
    };
    let logged_in = sess.authenticated && s.config.token.is_some();
    Ok((Nav { csrf: sess.csrf, logged_in, can_act: sess.authenticated && !s.config.read_only, read_only: s.config.read_only }, cookie))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// Renders a page, setting the session cookie when one was made.
fn render(t: impl Template, cookie: Option<String>) -> Result<Response, ApiError> {
    let html = t.render().map_err(internal)?;
    let mut r = Html(html).into_response();
    if let Some(c) = cookie {
        r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&c).map_err(internal)?);
    }
    r.headers_mut().insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    Ok(r)
}

/// A page read: allowed, or sent to the login page. (The error is the response itself, as the
/// page handlers return it; it is made once per refused request, so its size does not matter.)
#[allow(clippy::result_large_err)]
fn may_read(s: &State, headers: &HeaderMap) -> Result<(), Response> {
    check(s, headers, Access::Read).map_err(|e| if e.status == StatusCode::UNAUTHORIZED { Redirect::to("/login").into_response() } else { e.into_response() })
}

fn ago(now_ms: u64, t: Option<u64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => format!("{} ago", humantime::format_duration(std::time::Duration::from_secs(now_ms.saturating_sub(t) / 1000))),
    }
}

pub struct QueueRow {
    pub stats: QueueStats,
    pub next_age: String,
    pub last_claim: String,
    pub workers: usize,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    title: String,
    refresh: bool,
    css: &'static str,
    nav: Nav,
    flash: String,
    queues: Vec<QueueRow>,
}

async fn queues_page(AxState(s): AxState<State>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Result<Response, Response> {
    may_read(&s, &headers)?;
    inner_queues(&s, &headers, q.get("msg").cloned().unwrap_or_default()).await.map_err(IntoResponse::into_response)
}

async fn inner_queues(s: &State, headers: &HeaderMap, flash: String) -> Result<Response, ApiError> {
    let (nav, cookie) = page_session(s, headers)?;
    let c = &s.client;
    let mut conn = c.conn();
    let workers = c.workers().await?;
    let mut rows = Vec::new();
    for q in c.queues().await? {
        let now = c.db().now_ms(&mut conn, &q).await.map_err(ClientError::from)?;
        let stats = c.stats(&q).await?;
        let next = c.db().next_task_created_ms(&mut conn, &q).await.map_err(ClientError::from)?;
        rows.push(QueueRow {
            next_age: ago(now, next),
            last_claim: ago(now, stats.last_claim_ms),
            workers: workers.iter().filter(|w| w.queues.iter().any(|x| x == q.as_str())).count(),
            stats,
        });
    }
    render(QueuesPage { title: "queues".into(), refresh: true, css: CSS, nav, flash, queues: rows }, cookie)
}

pub struct TaskRow {
    pub id: String,
    pub state: String,
    pub module: String,
    pub priority: i64,
    pub attempts: u32,
    pub error: String,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    title: String,
    refresh: bool,
    css: &'static str,
    nav: Nav,
    flash: String,
    queue: String,
    states: Vec<&'static str>,
    state: String,
    total: u64,
    tasks: Vec<TaskRow>,
    offset: usize,
    prev: usize,
    next: usize,
    more: bool,
}

async fn queue_page(
    AxState(s): AxState<State>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, Response> {
    may_read(&s, &headers)?;
    async {
        let (nav, cookie) = page_session(&s, &headers)?;
        let q = parse_queue(&queue)?;
        let state = p.get("state").map(String::as_str).unwrap_or("dead");
        let state = TaskState::parse(state).ok_or_else(|| ApiError::bad("invalid", "unknown state"))?;
        let offset: usize = p.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0).min(1_000_000);
        let (seqs, total) = s.client.db().state_page(&mut s.client.conn(), &q, state, offset, PAGE_SIZE).await.map_err(ClientError::from)?;
        let mut tasks = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(r) = s.client.status(&TaskId::new(q.clone(), seq)).await? {
                tasks.push(TaskRow {
                    id: r.id.clone(),
                    state: r.state.to_string(),
                    module: r.module_names.first().cloned().unwrap_or_else(|| r.module.chars().take(12).collect()),
                    priority: r.priority,
                    attempts: r.attempts,
                    error: r.error.clone().map(|e| e.chars().take(200).collect()).unwrap_or_default(),
                });
            }
        }
        let page = QueuePage {
            title: format!("queue {q}"),
            refresh: true,
            css: CSS,
            nav,
            flash: String::new(),
            queue: q.to_string(),
            states: vec!["pending", "delayed", "blocked", "active", "succeeded", "dead", "cancelled", "expired"],
            state: state.to_string(),
            total,
            tasks,
            offset,
            prev: offset.saturating_sub(PAGE_SIZE),
            next: offset + PAGE_SIZE,
            more: (offset + PAGE_SIZE) < total as usize,
        };
        render(page, cookie)
    }
    .await
    .map_err(IntoResponse::into_response)
}

async fn find_task(Query(p): Query<HashMap<String, String>>) -> Response {
    match p.get("id").map(|i| i.trim()).and_then(|i| TaskId::parse(i).ok()) {
        Some(id) => Redirect::to(&format!("/tasks/{id}")).into_response(),
        None => ApiError::bad("invalid_id", "not a task id (QUEUE:N)").into_response(),
    }
}

#[derive(Template)]
#[template(path = "task.html")]
struct TaskPage {
    title: String,
    refresh: bool,
    css: &'static str,
    nav: Nav,
    flash: String,
    t: TaskRecord,
    module_names: String,
    created: String,
    started: String,
    finished: String,
    duration: String,
    worker: String,
    fuel: String,
    progress: String,
    flow: String,
    error: String,
    output: String,
    output_bytes: String,
    log: String,
}

/// At most this much of an output or log is shown.
const PREVIEW: usize = 4096;

fn preview(s: &str) -> String {
    let mut out: String = s.chars().take(PREVIEW).collect();
    if out.len() < s.len() {
        out.push_str(" […]");
    }
    out
}

async fn task_page(
    AxState(s): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, Response> {
    may_read(&s, &headers)?;
    async {
        let (nav, cookie) = page_session(&s, &headers)?;
        let id = parse_id(&id)?;
        let Some(t) = s.client.status(&id).await? else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_task", format!("unknown task {id}")));
        };
        let opt = |v: Option<u64>| v.map(format_ms).unwrap_or_else(|| "-".into());
        let output = match (&t.output_text, &t.output_raw) {
            (Some(text), _) => preview(text),
            (None, Some(raw)) => format!("{} bytes, not UTF-8", raw.len()),
            _ => String::new(),
        };
        let page = TaskPage {
            title: format!("task {id}"),
            refresh: !t.state.is_finished(),
            css: CSS,
            nav,
            flash: p.get("msg").cloned().unwrap_or_default(),
            module_names: t.module_names.join(", "),
            created: format_ms(t.created_ms),
            started: opt(t.started_ms),
            finished: opt(t.finished_ms),
            duration: t.duration_us.map(|d| format!("{:.3} ms", d as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
            worker: t.worker.clone().unwrap_or_else(|| "-".into()),
            fuel: t.fuel_used.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
            progress: t.progress.as_ref().map(|p| format!("{:.0}% {}", p.fraction * 100.0, p.message)).unwrap_or_else(|| "-".into()),
            flow: if t.after.is_empty() { "-".into() } else { format!("after {}", t.after.join(", ")) },
            error: match (&t.error_kind, &t.error) {
                (Some(k), Some(e)) => format!("{k}: {e}"),
                _ => "-".into(),
            },
            output,
            output_bytes: t.output_bytes.map(|n| format!("{n} bytes")).unwrap_or_else(|| "none".into()),
            log: t.log.as_deref().map(preview).unwrap_or_default(),
            t,
        };
        render(page, cookie)
    }
    .await
    .map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    title: String,
    refresh: bool,
    css: &'static str,
    nav: Nav,
    flash: String,
    workers: Vec<wasmq::queue::workers::WorkerInfo>,
}

async fn workers_page(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, Response> {
    may_read(&s, &headers)?;
    async {
        let (nav, cookie) = page_session(&s, &headers)?;
        let workers = s.client.workers().await?;
        render(WorkersPage { title: "workers".into(), refresh: true, css: CSS, nav, flash: String::new(), workers }, cookie)
    }
    .await
    .map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "modules.html")]
struct ModulesPage {
    title: String,
    refresh: bool,
    css: &'static str,
    nav: Nav,
    flash: String,
    modules: Vec<wasmq::store::ModuleInfo>,
}

async fn modules_page(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, Response> {
    may_read(&s, &headers)?;
    async {
        let (nav, cookie) = page_session(&s, &headers)?;
        let modules = s.client.store().list().await.map_err(ClientError::from)?;
        render(ModulesPage { title: "modules".into(), refresh: false, css: CSS, nav, flash: String::new(), modules }, cookie)
    }
    .await
    .map_err(IntoResponse::into_response)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    title: String,
    refresh: bool,
    css: &'static str,
    nav: Nav,
    flash: String,
}

async fn login_page(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (nav, cookie) = page_session(&s, &headers)?;
    render(LoginPage { title: "log in".into(), refresh: false, css: CSS, nav, flash: String::new() }, cookie)
}

/// The form's CSRF token must be the session's.
fn csrf_ok(sess: &Session, form: &HashMap<String, String>) -> bool {
    form.get("csrf").is_some_and(|c| auth::same(c, &sess.csrf))
}

fn forbidden(msg: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", msg)
}

async fn login(AxState(s): AxState<State>, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Result<Response, ApiError> {
    let Some((old, sess)) = auth::session(&s, &headers) else { return Err(forbidden("no session: open /login first")) };
    if !csrf_ok(&sess, &form) {
        return Err(forbidden("bad CSRF token"));
    }
    let Some(token) = &s.config.token else { return Ok(Redirect::to("/").into_response()) };
    if !form.get("token").is_some_and(|t| auth::same(t.trim(), token)) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token"));
    }
    // A new session id on login: one planted before it is worth nothing after.
    s.sessions.remove(&old);
    let (id, _) = s.sessions.create(true).map_err(internal)?;
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&auth::session_cookie(&id)).map_err(internal)?);
    Ok(r)
}

async fn logout(AxState(s): AxState<State>, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Result<Response, ApiError> {
    if let Some((id, sess)) = auth::session(&s, &headers) {
        if !csrf_ok(&sess, &form) {
            return Err(forbidden("bad CSRF token"));
        }
        s.sessions.remove(&id);
    }
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&auth::clear_cookie()).map_err(internal)?);
    Ok(r)
}

/// A dashboard action may go ahead: not read-only, a logged-in session, its CSRF token.
fn may_act(s: &State, headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(), ApiError> {
    if s.config.read_only {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "read_only", "this server is read-only (--read-only)"));
    }
    let Some((_, sess)) = auth::session(s, headers) else { return Err(forbidden("log in first")) };
    if !sess.authenticated {
        return Err(forbidden("log in first"));
    }
    if !csrf_ok(&sess, form) {
        return Err(forbidden("bad CSRF token"));
    }
    Ok(())
}

fn back(to: &str, msg: &str) -> Response {
    // Percent-encodes the message's UTF-8 bytes (a char cut to its low byte would garble it).
    let enc: String = msg.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
    Redirect::to(&format!("{to}?msg={enc}")).into_response()
}

async fn pause(
    AxState(s): AxState<State>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    may_act(&s, &headers, &f)?;
    let q = parse_queue(&queue)?;
    s.client.set_paused(&q, true).await?;
    Ok(back("/", &format!("paused {q}")))
}

async fn resume(
    AxState(s): AxState<State>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    may_act(&s, &headers, &f)?;
    let q = parse_queue(&queue)?;
    s.client.set_paused(&q, false).await?;
    Ok(back("/", &format!("resumed {q}")))
}

async fn retry_all(
    AxState(s): AxState<State>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    may_act(&s, &headers, &f)?;
    let q = parse_queue(&queue)?;
    let r = s.client.retry_dead(&q, None).await?;
    Ok(back("/", &format!("retried {} dead tasks of {q}", r.retried.len())))
}

async fn purge(
    AxState(s): AxState<State>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    may_act(&s, &headers, &f)?;
    let q = parse_queue(&queue)?;
    let mut n = 0;
    for st in TaskState::FINISHED {
        n += s.client.purge(&q, st, std::time::Duration::ZERO).await?;
    }
    Ok(back("/", &format!("purged {n} finished tasks of {q}")))
}

async fn retry_one(
    AxState(s): AxState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    may_act(&s, &headers, &f)?;
    let id = parse_id(&id)?;
    let r = s.client.retry_dead(&id.queue, Some(&[id.seq])).await?;
    let msg = if r.retried.is_empty() { "not retried (not dead, or its unique key is held)" } else { "retried" };
    Ok(back(&format!("/tasks/{id}"), msg))
}

async fn cancel(AxState(s): AxState<State>, Path(id): Path<String>, headers: HeaderMap, Form(f): Form<HashMap<String, String>>) -> Result<Response, ApiError> {
    may_act(&s, &headers, &f)?;
    let id = parse_id(&id)?;
    let outcome = s.client.cancel(&id).await?;
    Ok(back(&format!("/tasks/{id}"), &format!("{outcome:?}")))
}
