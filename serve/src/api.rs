//! The versioned JSON API, `/v1`, documented in `docs/openapi.yaml`.
//!
//! Every error is `{"error": {"code": STABLE_CODE, "message": TEXT}}`: scripts branch on the code,
//! people read the message. Input that cannot be used (malformed JSON, an unknown field, a bad
//! duration, an unknown module) is a 4xx; a 5xx means Redis or the server failed.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use wasmq::client::{ClientError, EnqueueOptions, FlowOutput};
use wasmq::queue::{CancelOutcome, FlowRecord, FlowState, ParentFailure, QueueError, QueueName, TaskId, TaskRecord, TaskState};
use wasmq::store::StoreError;

use crate::State;
use crate::auth::{Access, check};

/// Longest `?wait=` a request may ask for: a long poll is bounded like everything else.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most tasks one `POST /v1/queues/{queue}/tasks` enqueues (`inputs`).
pub const MAX_BATCH: usize = 10_000;

/// The API's routes, written once: the router and [`ROUTES`] both come from this list, so that
/// a test can hold `docs/openapi.yaml` to exactly what is served.
macro_rules! api_routes {
    ($($method:ident $path:literal => $handler:ident),* $(,)?) => {
        /// Every `(method, path)` the API serves, as the router matches them.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        pub fn routes() -> Router<State> {
            Router::new()$(.route($path, $method($handler)))*.fallback(not_found)
        }
    };
}

api_routes! {
    get "/v1/queues" => queues,
    get "/v1/queues/{queue}" => queue,
    post "/v1/queues/{queue}/tasks" => enqueue,
    post "/v1/queues/{queue}/flows" => map,
    post "/v1/queues/{queue}/pause" => pause,
    post "/v1/queues/{queue}/resume" => resume,
    post "/v1/queues/{queue}/dead/retry" => retry_dead,
    post "/v1/queues/{queue}/purge" => purge,
    get "/v1/tasks/{id}" => task,
    post "/v1/tasks/{id}/cancel" => cancel,
    get "/v1/workers" => workers,
    get "/v1/modules" => modules,
    post "/v1/modules" => push_module,
}

/// An API error: an HTTP status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn unknown_task(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown_task", format!("unknown task {id} (never enqueued, or its result expired)"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let msg = e.to_string();
        let (status, code) = match &e {
            ClientError::Store(StoreError::Unknown(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_module"),
            ClientError::Store(StoreError::Removing(_)) => (StatusCode::CONFLICT, "module_removing"),
            ClientError::Store(StoreError::TooLarge { .. }) => (StatusCode::PAYLOAD_TOO_LARGE, "module_too_large"),
            ClientError::Store(StoreError::Name(_)) | ClientError::Parse(_) | ClientError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            ClientError::InputTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "input_too_large"),
            ClientError::UnknownParent(_) | ClientError::Queue(QueueError::UnknownParent(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_parent"),
            ClientError::Queue(QueueError::TooManyParents(_)) => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_parents"),
            ClientError::Queue(QueueError::NotFinished(_)) => (StatusCode::BAD_REQUEST, "invalid"),
            ClientError::OutOfMemory => (StatusCode::INSUFFICIENT_STORAGE, "redis_out_of_memory"),
            ClientError::NotDurable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_durable"),
            ClientError::Partial { .. } => (StatusCode::SERVICE_UNAVAILABLE, "partial"),
            ClientError::Connect(_) | ClientError::Redis(_) | ClientError::Store(StoreError::Redis(_)) | ClientError::Queue(QueueError::Redis(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, msg)
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        ClientError::from(e).into()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route (see docs/openapi.yaml)")
}

pub(crate) fn parse_queue(q: &str) -> Result<QueueName, ApiError> {
    QueueName::new(q).map_err(|e| ApiError::bad("invalid_queue", e.to_string()))
}

pub(crate) fn parse_id(id: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(id).map_err(|e| ApiError::bad("invalid_id", e.to_string()))
}

/// A JSON body, with serde's complaint turned into a 400 with our error shape.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad("invalid_json", e.to_string()))
}

fn duration(name: &str, s: &Option<String>) -> Result<Option<Duration>, ApiError> {
    s.as_deref().map(|s| wasmq::parse::duration(s).map_err(|e| ApiError::bad("invalid", format!("{name}: {e}")))).transpose()
}

/// A size given as a number of bytes or as text (`256MiB`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn get(&self, name: &str) -> Result<u64, ApiError> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(s) => wasmq::parse::size(s).map_err(|e| ApiError::bad("invalid", format!("{name}: {e}"))),
        }
    }
}

/// A task's input: exactly one of the three forms (none: empty input).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    input: Option<String>,
    input_json: Option<Value>,
    input_base64: Option<String>,
}

impl Input {
    fn bytes(&self) -> Result<Vec<u8>, ApiError> {
        match (&self.input, &self.input_json, &self.input_base64) {
            (None, None, None) => Ok(Vec::new()),
            (Some(t), None, None) => Ok(t.clone().into_bytes()),
            (None, Some(v), None) => Ok(serde_json::to_vec(v).expect("a Value serialises")),
            (None, None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).map_err(|e| ApiError::bad("invalid", format!("input_base64: {e}"))),
            _ => Err(ApiError::bad("invalid", "give at most one of input, input_json and input_base64")),
        }
    }
}

/// `POST /v1/queues/{queue}/tasks`: the options are `wasmq enqueue`'s flags in snake_case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    module: String,
    #[serde(flatten)]
    input: InputFields,
    /// Many tasks at once, one input each (the options apply to all).
    inputs: Option<Vec<Input>>,
    #[serde(default)]
    priority: i64,
    max_attempts: Option<u32>,
    timeout: Option<String>,
    memory: Option<Size>,
    fuel: Option<u64>,
    delay: Option<String>,
    at: Option<String>,
    /// `enqueue --expires`: a duration or an RFC 3339 time.
    expires: Option<String>,
    /// `enqueue --group`.
    group: Option<String>,
    unique_key: Option<String>,
    unique_for: Option<String>,
    estimate: Option<String>,
    #[serde(default)]
    deterministic: bool,
    #[serde(default)]
    durable: bool,
    #[serde(default)]
    after: Vec<String>,
    on_parent_failure: Option<String>,
    #[serde(default)]
    input_from_after: bool,
    #[serde(default)]
    allow_host: Vec<String>,
    max_http_requests: Option<u32>,
    max_http_response_bytes: Option<Size>,
    /// `POST /v1/queues/{queue}/flows` only: `wasmq map`'s flags.
    reduce: Option<String>,
    reduce_fan_in: Option<usize>,
    on_child_failure: Option<String>,
}

/// `Input`'s fields inside the enqueue body (flatten and deny_unknown_fields do not mix).
#[derive(Debug, Default, Deserialize)]
struct InputFields {
    input: Option<String>,
    input_json: Option<Value>,
    input_base64: Option<String>,
}

impl EnqueueBody {
    fn options(&self, queue: QueueName) -> Result<EnqueueOptions, ApiError> {
        let mut o = EnqueueOptions {
            queue: queue.clone(),
            priority: self.priority,
            max_attempts: self.max_attempts,
            timeout: duration("timeout", &self.timeout)?,
            memory: self.memory.as_ref().map(|m| m.get("memory")).transpose()?,
            fuel: self.fuel,
            delay: duration("delay", &self.delay)?,
            at: self.at.as_deref().map(|t| wasmq::parse::time(t).map_err(|e| ApiError::bad("invalid", format!("at: {e}")))).transpose()?,
            expires: self.expires.as_deref().map(|t| wasmq::parse::expires(t).map_err(|e| ApiError::bad("invalid", format!("expires: {e}")))).transpose()?,
            group: self.group.as_deref().map(|g| wasmq::queue::GroupKey::new(g).map_err(|e| ApiError::bad("invalid", format!("group: {e}")))).transpose()?,
            unique_key: self.unique_key.clone(),
            unique_for: duration("unique_for", &self.unique_for)?,
            estimate: duration("estimate", &self.estimate)?,
            deterministic: self.deterministic,
            durable: self.durable,
            after: self.after.iter().map(|a| parse_id(a)).collect::<Result<_, _>>()?,
            input_from_after: self.input_from_after,
            max_http_requests: self.max_http_requests,
            max_http_response_bytes: self.max_http_response_bytes.as_ref().map(|m| m.get("max_http_response_bytes")).transpose()?,
            ..Default::default()
        };
        if self.delay.is_some() && self.at.is_some() {
            return Err(ApiError::bad("invalid", "give delay or at, not both"));
        }
        if let Some(p) = &self.on_parent_failure {
            o.on_parent_failure = p.parse().map_err(|e: String| ApiError::bad("invalid", e))?;
        }
        let hosts = self.allow_host.iter().map(|h| h.parse::<wasmq::http::HostPattern>().map_err(|e| ApiError::bad("invalid", format!("allow_host: {e}"))));
        o.allow_hosts = wasmq::http::AllowList::new(hosts.collect::<Result<_, _>>()?);
        Ok(o)
    }
}

async fn enqueue(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let queue = parse_queue(&queue)?;
    let b: EnqueueBody = json_body(&body)?;
    let o = b.options(queue)?;
    let single = Input { input: b.input.input.clone(), input_json: b.input.input_json.clone(), input_base64: b.input.input_base64.clone() };
    if let Some(inputs) = &b.inputs {
        if single.input.is_some() || single.input_json.is_some() || single.input_base64.is_some() {
            return Err(ApiError::bad("invalid", "give inputs or a single input, not both"));
        }
        if inputs.is_empty() || inputs.len() > MAX_BATCH {
            return Err(ApiError::bad("invalid", format!("inputs must hold 1 to {MAX_BATCH} inputs")));
        }
        let bytes = inputs.iter().map(Input::bytes).collect::<Result<Vec<_>, _>>()?;
        let ids = s.client.enqueue_bulk(&b.module, &bytes, &o).await?;
        let ids: Vec<String> = ids.into_iter().map(|e| e.id.to_string()).collect();
        return Ok((StatusCode::CREATED, Json(json!({"ids": ids}))).into_response());
    }
    if b.reduce.is_some() || b.reduce_fan_in.is_some() || b.on_child_failure.is_some() {
        return Err(ApiError::bad("invalid", "reduce, reduce_fan_in and on_child_failure belong to a map: POST /v1/queues/{queue}/flows"));
    }
    let e = s.client.enqueue(&b.module, &single.bytes()?, &o).await?;
    let status = if e.new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"id": e.id.to_string(), "new": e.new}))).into_response())
}

/// `POST /v1/queues/{queue}/flows`: `wasmq map`. One child task of `module` per entry of
/// `inputs`, and with `reduce` a tree of reducers over their outputs; the options are the
/// enqueue body's. Answers `{"id": FLOW}`.
async fn map(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let queue = parse_queue(&queue)?;
    let b: EnqueueBody = json_body(&body)?;
    let o = b.options(queue)?;
    if b.input.input.is_some() || b.input.input_json.is_some() || b.input.input_base64.is_some() {
        return Err(ApiError::bad("invalid", "a map takes inputs (one per child), not input"));
    }
    let inputs = b.inputs.as_deref().unwrap_or_default();
    if inputs.is_empty() || inputs.len() > MAX_BATCH {
        return Err(ApiError::bad("invalid", format!("inputs must hold 1 to {MAX_BATCH} inputs")));
    }
    let bytes = inputs.iter().map(Input::bytes).collect::<Result<Vec<_>, _>>()?;
    let policy = match &b.on_child_failure {
        Some(p) => p.parse().map_err(|e: String| ApiError::bad("invalid", e))?,
        None => ParentFailure::default(),
    };
    let fan_in = b.reduce_fan_in.unwrap_or(wasmq::client::DEFAULT_FAN_IN);
    let id = s.client.map(&b.module, &bytes, b.reduce.as_deref(), fan_in, policy, &o).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id.to_string()}))).into_response())
}

/// Most children's outputs a flow's JSON embeds for a flow without a reducer.
const MAX_FLOW_OUTPUTS: u64 = MAX_BATCH as u64;

/// A flow as `GET /v1/tasks/{id}` answers for a flow id: `{"flow": ...}` as `status FLOW --json`
/// shows it, and once it succeeded its `output`: the last reducer's (embedded as task outputs
/// are), or without a reducer the children's outputs as an array (up to 10,000 children; past
/// that, read the children). To wait for a flow with a reducer, wait on its `root` task.
async fn flow_json(s: &State, f: &FlowRecord) -> Result<Value, ApiError> {
    let mut v = json!({"flow": f});
    if f.state == FlowState::Succeeded && (f.root.is_some() || f.children <= MAX_FLOW_OUTPUTS) {
        v["output"] = match s.client.flow_output(f).await? {
            FlowOutput::Reduced(bytes) => wasmq::queue::task::embed_output(&bytes),
            FlowOutput::Children(array) => serde_json::from_slice(&array).unwrap_or(Value::Null),
        };
    }
    Ok(v)
}

/// A task as `status --json` shows it, plus `output_base64` when the output is not UTF-8.
pub(crate) fn task_json(r: &TaskRecord) -> Value {
    let mut v = serde_json::to_value(r).expect("a record serialises");
    if let (Some(raw), None) = (&r.output_raw, &r.output_text) {
        v["output_base64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(raw));
    }
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskQuery {
    wait: Option<String>,
}

async fn task(AxState(s): AxState<State>, Path(id): Path<String>, Query(q): Query<TaskQuery>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Read)?;
    let id = parse_id(&id)?;
    let wait = duration("wait", &q.wait)?.unwrap_or_default();
    if wait > MAX_WAIT {
        return Err(ApiError::bad("invalid", format!("wait is at most {}s", MAX_WAIT.as_secs())));
    }
    let record = if wait.is_zero() { s.client.status(&id).await? } else { wait_for(&s, &id, wait).await? };
    match record {
        Some(r) => Ok(Json(task_json(&r)).into_response()),
        None => match s.client.flow(&id).await? {
            Some(f) => Ok(Json(flow_json(&s, &f).await?).into_response()),
            None => Err(ApiError::unknown_task(&id.to_string())),
        },
    }
}

/// Waits for a task to finish through the shared listener; the task as it stands at the end.
async fn wait_for(s: &State, id: &TaskId, wait: Duration) -> Result<Option<TaskRecord>, ClientError> {
    let reg = s.waiter.register(id);
    let deadline = tokio::time::Instant::now() + wait;
    let mut woken = reg.listen();
    match s.client.db().register_waiter(&mut s.client.conn(), id).await? {
        wasmq::queue::WaitRegistration::Unknown => return Ok(None),
        wasmq::queue::WaitRegistration::Finished => return s.client.status(id).await,
        wasmq::queue::WaitRegistration::Registered => {}
    }
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        let nap = (deadline - now).min(crate::wait::FALLBACK_CHECK);
        let _ = tokio::time::timeout(nap, woken.as_mut()).await;
        woken = reg.listen();
        match s.client.db().task_state(&mut s.client.conn(), id).await?.as_deref().map(TaskState::parse) {
            None => return Ok(None),
            Some(Some(st)) if st.is_finished() => break,
            _ => {}
        }
    }
    drop(woken);
    drop(reg);
    s.client.status(id).await
}

async fn cancel(AxState(s): AxState<State>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let id = parse_id(&id)?;
    let outcome = match s.client.cancel(&id).await? {
        CancelOutcome::Cancelled => "cancelled",
        CancelOutcome::Requested => "requested",
        CancelOutcome::AlreadyFinished(st) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "already_finished", format!("task {id} already finished ({st})")));
        }
        CancelOutcome::Unknown => {
            if s.client.flow(&id).await?.is_none() {
                return Err(ApiError::unknown_task(&id.to_string()));
            }
            s.client.cancel_flow(&id).await?;
            "cancelled"
        }
    };
    Ok(Json(json!({"id": id.to_string(), "outcome": outcome})).into_response())
}

async fn queues(AxState(s): AxState<State>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Read)?;
    let mut out = Vec::new();
    for q in s.client.queues().await? {
        out.push(s.client.stats(&q).await?);
    }
    Ok(Json(json!({"queues": out})).into_response())
}

async fn queue(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Read)?;
    let q = parse_queue(&queue)?;
    Ok(Json(s.client.stats(&q).await?).into_response())
}

async fn pause(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let q = parse_queue(&queue)?;
    s.client.set_paused(&q, true).await?;
    Ok(Json(json!({"queue": q.to_string(), "paused": true})).into_response())
}

async fn resume(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let q = parse_queue(&queue)?;
    s.client.set_paused(&q, false).await?;
    Ok(Json(json!({"queue": q.to_string(), "paused": false})).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    /// Task ids of the queue; none: every dead task.
    ids: Option<Vec<String>>,
}

async fn retry_dead(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let q = parse_queue(&queue)?;
    let b: RetryBody = if body.is_empty() { RetryBody::default() } else { json_body(&body)? };
    let seqs = b
        .ids
        .map(|ids| {
            ids.iter()
                .map(|i| {
                    let id = parse_id(i)?;
                    if id.queue != q {
                        return Err(ApiError::bad("invalid_id", format!("task {id} is not in queue {q}")));
                    }
                    Ok(id.seq)
                })
                .collect::<Result<Vec<u64>, ApiError>>()
        })
        .transpose()?;
    let r = s.client.retry_dead(&q, seqs.as_deref()).await?;
    let ids = |v: &[TaskId]| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    Ok(Json(json!({"retried": ids(&r.retried), "blocked": ids(&r.blocked), "not_dead": ids(&r.not_dead)})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    state: String,
    older_than: Option<String>,
}

async fn purge(AxState(s): AxState<State>, Path(queue): Path<String>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let q = parse_queue(&queue)?;
    let b: PurgeBody = json_body(&body)?;
    let state = TaskState::parse(&b.state)
        .filter(|s| s.is_finished())
        .ok_or_else(|| ApiError::bad("invalid", format!("state {:?}: use succeeded, dead, cancelled or expired", b.state)))?;
    let older = duration("older_than", &b.older_than)?.unwrap_or_default();
    let n = s.client.purge(&q, state, older).await?;
    Ok(Json(json!({"purged": n})).into_response())
}

async fn workers(AxState(s): AxState<State>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Read)?;
    Ok(Json(json!({"workers": s.client.workers().await?})).into_response())
}

async fn modules(AxState(s): AxState<State>, headers: HeaderMap) -> ApiResult {
    check(&s, &headers, Access::Read)?;
    let m = s.client.store().list().await.map_err(ClientError::from)?;
    Ok(Json(json!({"modules": m})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PushQuery {
    name: Option<String>,
}

/// `POST /v1/modules?name=NAME`: a raw `application/wasm` body, compiled before it is stored (as
/// `wasmq module push` does: what is in the store is known to be runnable).
async fn push_module(AxState(s): AxState<State>, Query(q): Query<PushQuery>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check(&s, &headers, Access::Act)?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ct.split(';').next().map(str::trim) != Some("application/wasm") {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the module as Content-Type: application/wasm"));
    }
    s.client.store().check_size(body.len() as u64).map_err(ClientError::from)?;
    if let Some(n) = &q.name {
        wasmq::parse::module_name(n).map_err(|e| ApiError::bad("invalid", e.to_string()))?;
    }
    let checked = tokio::task::spawn_blocking(move || {
        let (binary, _) = wasmq::sandbox::prepare(&body)?;
        let binary = binary.into_owned();
        let sandbox = wasmq::sandbox::Sandbox::new(wasmq::sandbox::SandboxConfig { max_concurrency: 1, cache_dir: None, ..Default::default() })?;
        let kind = sandbox.validate(&binary)?;
        Ok::<_, wasmq::sandbox::SandboxError>((kind, binary))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let (kind, binary) = checked.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_module", e.to_string()))?;
    let pushed = s.client.store().push(&binary, kind, q.name.as_deref()).await.map_err(ClientError::from)?;
    let status = if pushed.stored { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"sha256": pushed.sha256, "name": pushed.name, "kind": kind, "size": binary.len(), "stored": pushed.stored}))).into_response())
}
