//! Hands the benchmark the versions it measures, so its JSON names them exactly: those of
//! `bullmq-official`, `redis` and `tokio` as resolved in Cargo.lock, and the compiler's.

use std::{env, fs, path::Path, process::Command};

fn main() {
    let lock_path = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("Cargo.lock");
    println!("cargo::rerun-if-changed={}", lock_path.display());
    let lock = fs::read_to_string(&lock_path).unwrap_or_default();
    for (krate, var) in [("bullmq-official", "LOCKED_BULLMQ_OFFICIAL"), ("redis", "LOCKED_REDIS"), ("tokio", "LOCKED_TOKIO")] {
        println!("cargo::rustc-env={var}={}", locked_version(&lock, krate).unwrap_or("?"));
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".to_string());
    println!("cargo::rustc-env=BUILD_RUSTC_VERSION={rustc_version}");
}

/// The version of the first package called `name` in a Cargo.lock (each `[[package]]` starts
/// with its `name` line, followed by its `version` line).
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let needle = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    lock[start..].split('"').next()
}
