//! What the demo, the benchmarks and the tests share, and the wasmq library does not need:
//! throwaway `redis-server` processes on free loopback ports ([`redis_server`]) and builds of the
//! example tasks of this repository ([`examples`]), including the ones written in other languages,
//! whose toolchains it installs under `target/` ([`languages`]).

pub mod examples;
pub mod languages;
pub mod redis_server;
