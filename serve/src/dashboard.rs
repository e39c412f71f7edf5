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
use wasmq::queue::{GroupKey, QueueName, QueueStats, TaskId, TaskRecord, TaskState};

use crate::State;
use crate::api::{ApiError, parse_id, parse_queue};
use crate::auth::{self, Access, Session, check};

/// The states a queue page lists, as its tabs.
const STATES: [&str; 8] = ["pending", "delayed", "blocked", "active", "succeeded", "dead", "cancelled", "expired"];

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
        .route("/schedules", get(schedules_page))
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

/// What every page shows around its content (`base.html`): its title, whether it refreshes
/// itself, the stylesheet, the navigation and a message about the last action.
pub struct Frame {
    pub title: String,
    pub refresh: bool,
    pub css: &'static str,
    pub nav: Nav,
    pub flash: String,
}

impl Frame {
    fn new(nav: Nav, title: impl Into<String>, refresh: bool) -> Self {
        Self { title: title.into(), refresh, css: CSS, nav, flash: String::new() }
    }

    /// The action message a redirect carried (`?msg=`).
    fn flash(mut self, p: &HashMap<String, String>) -> Self {
        self.flash = p.get("msg").cloned().unwrap_or_default();
        self
    }
}

/// Serves a page that needs read access: the read check, the visitor's session, the page `build`
/// makes with it, and any error as the response.
async fn page<T, Fut>(s: &State, headers: &HeaderMap, build: impl FnOnce(Nav) -> Fut) -> Result<Response, Response>
where
    T: Template,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    may_read(s, headers)?;
    let (nav, cookie) = page_session(s, headers).map_err(IntoResponse::into_response)?;
    let t = build(nav).await.map_err(IntoResponse::into_response)?;
    render(t, cookie).map_err(IntoResponse::into_response)
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
    pub chart: Chart,
    /// The queue's flow-control limits with their use (`wasmq queue limit`).
    pub limits: String,
}

/// The last hour of a queue as a small inline SVG bar chart (no script, no image request): one
/// bar per minute, tasks succeeded at the bottom and failed attempts stacked on top.
pub struct Chart {
    pub bars: Vec<Bar>,
    pub succeeded: u64,
    pub failed: u64,
    pub peak: u64,
}

pub struct Bar {
    pub x: usize,
    /// Top and height of the succeeded part, then of the failed part, in pixels.
    pub s_y: u64,
    pub s_h: u64,
    pub f_y: u64,
    pub f_h: u64,
    pub title: String,
}

/// Pixel height of a chart's bars.
const CHART_H: u64 = 24;

impl Chart {
    fn new(minutes: &[(u64, u64, u64)]) -> Self {
        let peak = minutes.iter().map(|(_, s, f)| s + f).max().unwrap_or(0);
        // Rounded up, so that a minute with anything in it shows at least a pixel.
        let px = |n: u64| if peak == 0 { 0 } else { (n * CHART_H).div_ceil(peak) };
        let bars = minutes
            .iter()
            .enumerate()
            .map(|(i, &(at, s, f))| {
                let (s_h, f_h) = (px(s), px(f).min(CHART_H - px(s).min(CHART_H)));
                Bar {
                    x: i * 3,
                    s_y: CHART_H - s_h,
                    s_h,
                    f_y: CHART_H - s_h - f_h,
                    f_h,
                    title: format!("{} UTC: {s} succeeded, {f} failed", format_ms(at).get(11..16).unwrap_or("")),
                }
            })
            .collect();
        Self { bars, succeeded: minutes.iter().map(|m| m.1).sum(), failed: minutes.iter().map(|m| m.2).sum(), peak }
    }
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    f: Frame,
    queues: Vec<QueueRow>,
}

async fn queues_page(AxState(s): AxState<State>, headers: HeaderMap, Query(p): Query<HashMap<String, String>>) -> Result<Response, Response> {
    page(&s, &headers, |nav| async {
        let c = &s.client;
        let mut conn = c.conn();
        let workers = c.workers().await?;
        let mut rows = Vec::new();
        for q in c.queues().await? {
            let now = c.db().now_ms(&mut conn, &q).await.map_err(ClientError::from)?;
            let stats = c.stats(&q).await?;
            let next = c.db().next_task_created_ms(&mut conn, &q).await.map_err(ClientError::from)?;
            let minutes = c.db().minutes(&mut conn, &q, now).await.map_err(ClientError::from)?;
            rows.push(QueueRow {
                chart: Chart::new(&minutes),
                limits: stats.limits.describe(stats.active, stats.rate_used),
                next_age: ago(now, next),
                last_claim: ago(now, stats.last_claim_ms),
                workers: workers.iter().filter(|w| w.queues.iter().any(|x| x == q.as_str())).count(),
                stats,
            });
        }
        Ok(QueuesPage { f: Frame::new(nav, "queues", true).flash(&p), queues: rows })
    })
    .await
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
    f: Frame,
    queue: String,
    states: Vec<&'static str>,
    state: String,
    total: u64,
    tasks: Vec<TaskRow>,
    /// The module filter (over the page shown) and how many of the page it hid.
    module: String,
    /// The filter, percent-encoded for the paging links.
    module_q: String,
    hidden: usize,
    offset: usize,
    prev: usize,
    next: usize,
    more: bool,
    /// Pending tasks of one group (`?group=`), and the group percent-encoded for the links.
    group: String,
    group_q: String,
    /// On the pending page without a group: tasks in groups, and some of the groups.
    grouped: u64,
    groups: Vec<GroupRow>,
    /// The list of groups stopped at GROUPS_SHOWN.
    groups_capped: bool,
}

/// A group with work, on a queue's pending page.
pub struct GroupRow {
    pub name: String,
    /// The name percent-encoded, for its link.
    pub name_q: String,
    /// `ready`, `parked` (at its concurrency limit) or `rate` (its rate window is full).
    pub state: String,
    pub pending: u64,
}

/// Groups listed on a queue's pending page.
const GROUPS_SHOWN: usize = 50;

async fn queue_page(
    AxState(s): AxState<State>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Query(p): Query<HashMap<String, String>>,
) -> Result<Response, Response> {
    page(&s, &headers, |nav| async {
        let q = parse_queue(&queue)?;
        let state = p.get("state").map(String::as_str).unwrap_or("dead");
        let state = TaskState::parse(state).ok_or_else(|| ApiError::bad("invalid", "unknown state"))?;
        let offset: usize = p.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0).min(1_000_000);
        let group = match p.get("group").map(|g| g.trim()).filter(|g| !g.is_empty()) {
            Some(g) if state == TaskState::Pending => Some(GroupKey::new(g).map_err(|e| ApiError::bad("invalid", e.to_string()))?),
            _ => None,
        };
        let db = s.client.db();
        let mut conn = s.client.conn();
        // The pending page without a group also says how many tasks wait in groups (from the
        // same counts as its total).
        let (seqs, total, grouped) = match (&group, state) {
            (Some(g), _) => db.group_page(&mut conn, &q, g, offset, PAGE_SIZE).await.map(|(seqs, n)| (seqs, n, 0)),
            (None, TaskState::Pending) => db.pending_page(&mut conn, &q, offset, PAGE_SIZE).await.map(|p| (p.seqs, p.own, p.grouped)),
            (None, _) => db.state_page(&mut conn, &q, state, offset, PAGE_SIZE).await.map(|(seqs, n)| (seqs, n, 0)),
        }
        .map_err(ClientError::from)?;
        let groups: Vec<GroupRow> = if grouped > 0 {
            let groups = db.groups(&mut conn, &q, GROUPS_SHOWN).await.map_err(ClientError::from)?;
            groups.into_iter().map(|(name, state, pending)| GroupRow { name_q: pct(&name), name, state, pending }).collect()
        } else {
            Vec::new()
        };
        let module = p.get("module").map(|m| m.trim().to_string()).unwrap_or_default();
        let mut tasks = Vec::with_capacity(seqs.len());
        let mut hidden = 0;
        for r in s.client.summaries(&q, &seqs).await?.into_iter().flatten() {
            if !module.is_empty() && !r.module_names.contains(&module) && !r.module.starts_with(&module) {
                hidden += 1;
                continue;
            }
            tasks.push(TaskRow {
                id: r.id.clone(),
                state: r.state.to_string(),
                module: r.module_names.first().cloned().unwrap_or_else(|| r.module.chars().take(12).collect()),
                priority: r.priority,
                attempts: r.attempts,
                error: r.error.clone().map(|e| e.chars().take(200).collect()).unwrap_or_default(),
            });
        }
        let page = QueuePage {
            f: Frame::new(nav, format!("queue {q}"), true),
            queue: q.to_string(),
            states: STATES.to_vec(),
            state: state.to_string(),
            total,
            tasks,
            module_q: pct(&module),
            module,
            hidden,
            offset,
            prev: offset.saturating_sub(PAGE_SIZE),
            next: offset + PAGE_SIZE,
            more: (offset + PAGE_SIZE) < total as usize,
            group_q: group.as_ref().map(|g| pct(g.as_str())).unwrap_or_default(),
            group: group.map(|g| g.to_string()).unwrap_or_default(),
            grouped,
            groups_capped: groups.len() >= GROUPS_SHOWN,
            groups,
        };
        Ok(page)
    })
    .await
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
    f: Frame,
    t: TaskRecord,
    module_names: String,
    created: String,
    started: String,
    finished: String,
    duration: String,
    worker: String,
    fuel: String,
    progress: String,
    error: String,
    output: String,
    output_bytes: String,
    log: String,
    replay: String,
    flow_view: Option<FlowView>,
}

/// The flow a task belongs to, as the task page draws it: the flow's state and counts, its
/// children (the map's chunks) and then its reducers, each with its state, at most
/// [`FLOW_MEMBERS`] of each.
pub struct FlowView {
    pub id: String,
    pub state: String,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub children: Vec<Member>,
    pub children_total: u64,
    pub reducers: Vec<Member>,
    pub reducers_total: u64,
}

pub struct Member {
    pub id: String,
    pub state: String,
    /// The task whose page this is.
    pub this: bool,
}

/// Members of each kind a flow view lists.
const FLOW_MEMBERS: usize = 50;

async fn flow_view(s: &State, t: &TaskRecord) -> Result<Option<FlowView>, ApiError> {
    let Some(fid) = t.flow.as_deref().and_then(|f| TaskId::parse(f).ok()) else { return Ok(None) };
    let Some(f) = s.client.flow(&fid).await? else { return Ok(None) };
    let (page, states) = s.client.flow_members(&fid, FLOW_MEMBERS).await?;
    let mut states = states.into_iter();
    let mut members = |seqs: &[u64]| -> Vec<Member> {
        seqs.iter()
            .map(|&n| {
                let id = TaskId::new(fid.queue.clone(), n).to_string();
                let state = states.next().flatten().map(|st| st.to_string()).unwrap_or_else(|| "gone".into());
                Member { this: id == t.id, id, state }
            })
            .collect()
    };
    let children = members(&page.children);
    let reducers = members(&page.reducers);
    Ok(Some(FlowView {
        id: f.id,
        state: f.state.as_str().into(),
        succeeded: f.succeeded,
        dead: f.dead,
        cancelled: f.cancelled,
        children,
        children_total: page.children_total,
        reducers,
        reducers_total: page.reducers_total,
    }))
}

/// The command that runs the task again on the operator's machine (`wasmq replay`), with the
/// task's HTTP grant (which replay denies unless it is given again).
fn replay_command(t: &TaskRecord) -> String {
    let mut cmd = format!("wasmq replay {}", t.id);
    for h in t.allow_hosts.iter().flat_map(|h| h.split(',')).map(str::trim).filter(|h| !h.is_empty()) {
        cmd.push_str(&format!(" --allow-host {h}"));
    }
    cmd
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
    page(&s, &headers, |nav| async {
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
        let flow_view = flow_view(&s, &t).await?;
        let page = TaskPage {
            replay: replay_command(&t),
            flow_view,
            f: Frame::new(nav, format!("task {id}"), !t.state.is_finished()).flash(&p),
            module_names: t.module_names.join(", "),
            created: format_ms(t.created_ms),
            started: opt(t.started_ms),
            finished: opt(t.finished_ms),
            duration: t.duration_us.map(|d| format!("{:.3} ms", d as f64 / 1000.0)).unwrap_or_else(|| "-".into()),
            worker: t.worker.clone().unwrap_or_else(|| "-".into()),
            fuel: t.fuel_used.map(|f| f.to_string()).unwrap_or_else(|| "-".into()),
            progress: t.progress.as_ref().map(|p| format!("{:.0}% {}", p.fraction * 100.0, p.message)).unwrap_or_else(|| "-".into()),
            error: match (&t.error_kind, &t.error) {
                (Some(k), Some(e)) => format!("{k}: {e}"),
                _ => "-".into(),
            },
            output,
            output_bytes: t.output_bytes.map(|n| format!("{n} bytes")).unwrap_or_else(|| "none".into()),
            log: t.log.as_deref().map(preview).unwrap_or_default(),
            t,
        };
        Ok(page)
    })
    .await
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    f: Frame,
    workers: Vec<wasmq::queue::workers::WorkerInfo>,
}

async fn workers_page(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, Response> {
    page(&s, &headers, |nav| async {
        let workers = s.client.workers().await?;
        Ok(WorkersPage { f: Frame::new(nav, "workers", true), workers })
    })
    .await
}

#[derive(Template)]
#[template(path = "modules.html")]
struct ModulesPage {
    f: Frame,
    modules: Vec<wasmq::store::ModuleInfo>,
}

async fn modules_page(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, Response> {
    page(&s, &headers, |nav| async {
        let modules = s.client.store().list().await.map_err(ClientError::from)?;
        Ok(ModulesPage { f: Frame::new(nav, "modules", false), modules })
    })
    .await
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    f: Frame,
    schedules: Vec<ScheduleRow>,
}

pub struct ScheduleRow {
    pub name: String,
    pub queue: String,
    pub cron: String,
    pub module: String,
    pub priority: i64,
    pub next: String,
}

/// Every queue's periodic tasks: one hash and one sorted set per queue, whatever the number of
/// tasks.
async fn schedules_page(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, Response> {
    page(&s, &headers, |nav| async {
        let mut conn = s.client.conn();
        let mut schedules = Vec::new();
        for q in s.client.queues().await? {
            let listed = wasmq::schedule::list(&mut conn, s.client.db(), &q).await.map_err(internal)?;
            schedules.extend(listed.into_iter().map(|l| ScheduleRow {
                next: l.next_ms.map(format_ms).unwrap_or_else(|| "-".into()),
                name: l.schedule.name,
                queue: l.schedule.queue,
                cron: l.schedule.cron,
                module: l.schedule.module,
                priority: l.schedule.priority,
            }));
        }
        Ok(SchedulesPage { f: Frame::new(nav, "schedules", true), schedules })
    })
    .await
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    f: Frame,
}

async fn login_page(AxState(s): AxState<State>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (nav, cookie) = page_session(&s, &headers)?;
    render(LoginPage { f: Frame::new(nav, "log in", false) }, cookie)
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

/// Percent-encodes a query value's UTF-8 bytes (a char cut to its low byte would garble it).
fn pct(v: &str) -> String {
    v.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn back(to: &str, msg: &str) -> Response {
    Redirect::to(&format!("{to}?msg={}", pct(msg))).into_response()
}

/// One dashboard action on a queue: checks the session (see [`may_act`]), parses the queue, runs
/// `act` and sends the browser back to the queues page with what `act` reports.
async fn queue_action<F, Fut>(s: State, queue: &str, headers: &HeaderMap, form: &HashMap<String, String>, act: F) -> Result<Response, ApiError>
where
    F: FnOnce(State, QueueName) -> Fut,
    Fut: std::future::Future<Output = Result<String, ApiError>>,
{
    may_act(&s, headers, form)?;
    let q = parse_queue(queue)?;
    Ok(back("/", &act(s, q).await?))
}

/// One dashboard action on a task, as [`queue_action`], back to the task's page.
async fn task_action<F, Fut>(s: State, id: &str, headers: &HeaderMap, form: &HashMap<String, String>, act: F) -> Result<Response, ApiError>
where
    F: FnOnce(State, TaskId) -> Fut,
    Fut: std::future::Future<Output = Result<String, ApiError>>,
{
    may_act(&s, headers, form)?;
    let id = parse_id(id)?;
    let to = format!("/tasks/{id}");
    Ok(back(&to, &act(s, id).await?))
}

type Act = Form<HashMap<String, String>>;

async fn pause(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, Form(f): Act) -> Result<Response, ApiError> {
    queue_action(s, &queue, &headers, &f, |s, q| async move {
        s.client.set_paused(&q, true).await?;
        Ok(format!("paused {q}"))
    })
    .await
}

async fn resume(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, Form(f): Act) -> Result<Response, ApiError> {
    queue_action(s, &queue, &headers, &f, |s, q| async move {
        s.client.set_paused(&q, false).await?;
        Ok(format!("resumed {q}"))
    })
    .await
}

async fn retry_all(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, Form(f): Act) -> Result<Response, ApiError> {
    queue_action(s, &queue, &headers, &f, |s, q| async move {
        let r = s.client.retry_dead(&q, None).await?;
        Ok(format!("retried {} dead tasks of {q}", r.retried.len()))
    })
    .await
}

async fn purge(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, Form(f): Act) -> Result<Response, ApiError> {
    queue_action(s, &queue, &headers, &f, |s, q| async move {
        let mut n = 0;
        for st in TaskState::FINISHED {
            n += s.client.purge(&q, st, std::time::Duration::ZERO).await?;
        }
        Ok(format!("purged {n} finished tasks of {q}"))
    })
    .await
}

async fn retry_one(AxState(s): AxState<State>, Path(id): Path<String>, headers: HeaderMap, Form(f): Act) -> Result<Response, ApiError> {
    task_action(s, &id, &headers, &f, |s, id| async move {
        let r = s.client.retry_dead(&id.queue, Some(&[id.seq])).await?;
        Ok(if r.retried.is_empty() { "not retried (not dead, or its unique key is held)" } else { "retried" }.to_string())
    })
    .await
}

async fn cancel(AxState(s): AxState<State>, Path(id): Path<String>, headers: HeaderMap, Form(f): Act) -> Result<Response, ApiError> {
    task_action(s, &id, &headers, &f, |s, id| async move { Ok(format!("{:?}", s.client.cancel(&id).await?)) }).await
}
