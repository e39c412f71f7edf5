//! wasmq: a distributed task runner for WebAssembly tasks on Redis.
//!
//! Task authors compile a task to wasm (a WASI command), push the module into Redis and enqueue
//! task references with a priority; worker hosts pull them from the Redis priority queue, run each
//! in a fresh wasmtime sandbox and write the output into the task's result hash.
//!
//! The parts:
//! - [`sandbox`]: runs one task under limits (wasmtime, WASI preview 1 and 2).
//! - [`store`]: the content-addressed module store.
//! - [`client`]: enqueue, results, queue management (the library API).
//! - [`worker`]: the claim → run → report loop of an executor host.
//! - [`keys`] and `src/lua/`: the Redis data model and the scripts that change it.
//! - [`conn`]: single-node, Sentinel and Cluster connections.
//! - [`text`]: task text made safe for a terminal.

pub mod client;
pub mod conn;
pub mod keys;
pub mod parse;
pub mod sandbox;
pub mod schedule;
pub mod scripts;
pub mod store;
pub mod task;
pub mod text;
pub mod worker;
