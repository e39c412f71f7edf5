//! wasmq: a distributed task runner for WebAssembly tasks on Redis.
//!
//! Task authors compile a task to wasm (a WASI command), push the module into Redis and enqueue
//! task references with a priority; worker hosts pull them from the Redis priority queue, run each
//! in a fresh wasmtime sandbox and write the output into the task's result hash.
//!
//! This crate is the library; the `wasmq` command line is the `wasmq-cli` crate, and the demo,
//! benchmark and test helpers are in `wasmq-testkit`. The layout, from the data out:
//!
//! - [`queue`]: the queue layer, the one place that knows how queues live in Redis: the key
//!   schema ([`queue::keys`]), ids ([`queue::ids`]), the task hash ([`queue::task`]), queue
//!   settings ([`queue::policy`]), and the Lua scripts with one typed function each on
//!   [`queue::Db`]. Everything below goes through it.
//! - [`conn`]: connections to a single node, a Sentinel-managed master or a Cluster.
//! - [`store`]: the content-addressed module store (push, resolve, fetch with hash check).
//! - [`sandbox`]: runs one task under limits (wasmtime, WASI preview 1 and 2).
//! - [`http`]: outbound HTTP of component tasks: grants, address checks, the sender.
//! - [`client`]: the library API for producers and operators (enqueue, results, queue settings).
//! - [`worker`]: the executor host: claim loop, runs, result writers, leases, shutdown.
//! - [`schedule`]: periodic tasks (cron), fired by workers, each tick once.
//! - [`parse`]: durations, sizes, times and module names as users write them.
//! - [`text`]: task text made safe for a terminal (control characters escaped).

pub mod client;
pub mod conn;
pub mod http;
pub mod parse;
pub mod queue;
pub mod sandbox;
pub mod schedule;
pub mod store;
pub mod text;
pub mod worker;
