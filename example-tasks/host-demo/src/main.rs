//! host-demo: a task that uses the wasmq host API through the SDK. It reports its progress step
//! by step, reads its queue's `greeting` setting, and fails permanently when asked to.
//!
//! Input: `{"steps": N, "fail": false}`. Output: `{"greeting": "..." or null, "steps": N}`.

use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    steps: u32,
    #[serde(default)]
    fail: bool,
}

#[derive(Serialize)]
struct Output {
    greeting: Option<String>,
    steps: u32,
}

#[wasmq_sdk::task]
fn host_demo(input: Input) -> Output {
    if input.fail {
        wasmq_sdk::fail("asked to fail: a permanent failure, not retried");
    }
    for i in 1..=input.steps {
        wasmq_sdk::progress(i as f32 / input.steps as f32, &format!("step {i} of {}", input.steps));
    }
    Output { greeting: wasmq_sdk::config("greeting"), steps: input.steps }
}
