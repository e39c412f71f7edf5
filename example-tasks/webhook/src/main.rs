//! webhook: posts its input as JSON to an alerting webhook, through `wasi:http` (a component
//! task: build it for wasm32-wasip2).
//!
//! The URL is the queue's setting `webhook_url` (`wasmq config set QUEUE webhook_url URL`), or a
//! top-level `"webhook_url"` of the input, which is taken out of what is posted. The worker sends
//! the request only if the task was granted the host (`wasmq enqueue --allow-host HOST[:PORT]`)
//! within the worker's `--allow-hosts`.
//!
//! Output: `{"status": 200, "response": "..."}` (the response's first 1000 characters). A
//! status other than 2xx is an error (retried: a webhook may be down for a moment); no URL is a
//! permanent failure.

use serde::Serialize;
use serde_json::{Map, Value};

#[derive(Serialize)]
struct Output {
    status: u16,
    response: String,
}

#[wasmq_sdk::task]
fn webhook(input: Value) -> Result<Output, String> {
    let mut payload = input;
    let from_input = match payload.as_object_mut().and_then(|o: &mut Map<String, Value>| o.remove("webhook_url")) {
        Some(Value::String(url)) => Some(url),
        Some(_) => wasmq_sdk::fail("\"webhook_url\" must be a string"),
        None => None,
    };
    let Some(url) = from_input.or_else(|| wasmq_sdk::config("webhook_url")) else {
        wasmq_sdk::fail("no webhook URL: set the queue's webhook_url (wasmq config set QUEUE webhook_url URL) or give \"webhook_url\" in the input");
    };
    let r = wasmq_sdk::http::post_json(&url, &payload).map_err(|e| format!("posting to the webhook failed: {e}"))?;
    let response: String = r.text().chars().take(1000).collect();
    if !r.is_success() {
        return Err(format!("the webhook answered {}: {response}", r.status));
    }
    Ok(Output { status: r.status, response })
}
