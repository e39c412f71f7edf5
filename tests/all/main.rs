//! The end-to-end tests, in one binary: real `redis-server` processes on free loopback ports
//! (started by the tests, stopped on drop), the real `wasmq` binary, and real wasm modules built
//! from `example-tasks/` or the WAT fixtures in `tests/fixtures/`.
//!
//! Each module is one concern; `common` is the harness they share.

mod common;

mod chaos;
mod defects;
mod flows;
mod ha;
mod host_api;
mod http;
mod languages;
mod limits;
mod ops;
mod queue;
mod reliability;
mod run_cli;
mod sandbox;
mod scheduling;
mod security;
mod serve;
mod spawn;
mod split;
