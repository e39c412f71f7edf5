//! Building the example tasks of this repository (for `wasmq demo`, `wasmq bench` and the tests).
//!
//! The tasks are built with `cargo build --profile wasm` into `target/wasm-tasks`, a target folder
//! of their own, so that a build started from inside `cargo test` never waits on the lock of the
//! folder the tests run from.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK-built example tasks (crate names).
pub const SDK_TASKS: [&str; 7] = ["wordcount", "merge-counts", "normalize", "threshold-alert", "host-demo", "split-count", "webhook"];
/// The example task written by hand in WebAssembly text, without the SDK.
pub const WAT_TASK: &str = "example-tasks/uppercase-wat/uppercase.wat";

/// Why the example tasks could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot find the wasmq source tree (a folder with Cargo.toml and example-tasks/); run from a checkout")]
    NoWorkspace,
    #[error("cannot run cargo: {0}")]
    Cargo(std::io::Error),
    #[error("building the example tasks for {target} failed (are the targets installed? `rustup target add {target}`):\n{stderr}")]
    Failed { target: String, stderr: String },
}

/// A wasm target the example tasks are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmTarget {
    /// Core modules (WASI preview 1).
    P1,
    /// Components (WASI preview 2).
    P2,
}

impl WasmTarget {
    pub fn triple(self) -> &'static str {
        match self {
            Self::P1 => "wasm32-wasip1",
            Self::P2 => "wasm32-wasip2",
        }
    }
}

/// The root of the source tree: the current folder or one above it, else where this program
/// was built from.
pub fn workspace_root() -> Option<PathBuf> {
    let is_root = |p: &Path| p.join("Cargo.toml").is_file() && p.join("example-tasks").is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if is_root(dir) {
                return Some(dir.to_path_buf());
            }
        }
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.to_path_buf();
    is_root(&built_from).then_some(built_from)
}

/// Builds the SDK example tasks for `target` and returns `(name, path of the .wasm)` for each.
pub fn build(target: WasmTarget) -> Result<Built, BuildError> {
    build_packages(&SDK_TASKS, target)
}

/// Built tasks: `(name, path of the .wasm)` of each.
pub type Built = Vec<(String, PathBuf)>;

/// Builds the SDK example tasks for both targets in one cargo run, so that the two targets'
/// crates compile in parallel: `(modules, components)`.
pub fn build_both() -> Result<(Built, Built), BuildError> {
    let mut built = build_packages_for(&SDK_TASKS, &[WasmTarget::P1, WasmTarget::P2])?.into_iter();
    match (built.next(), built.next()) {
        (Some(p1), Some(p2)) => Ok((p1, p2)),
        _ => unreachable!("one list per target"),
    }
}

/// Builds task crates of this workspace for `target`; returns `(name, path of the .wasm)`.
pub fn build_packages(packages: &[&str], target: WasmTarget) -> Result<Built, BuildError> {
    Ok(build_packages_for(packages, &[target])?.remove(0))
}

/// Builds task crates for each of `targets` with one cargo command; returns, per target in
/// order, `(name, path of the .wasm)` of each package.
fn build_packages_for(packages: &[&str], targets: &[WasmTarget]) -> Result<Vec<Built>, BuildError> {
    let root = workspace_root().ok_or(BuildError::NoWorkspace)?;
    let target_dir = root.join("target").join("wasm-tasks");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root).args(["build", "--quiet", "--profile", "wasm"]).arg("--target-dir").arg(&target_dir);
    for t in targets {
        cmd.args(["--target", t.triple()]);
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    // Flags meant for the host build (e.g. coverage) must not leak into the wasm build.
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS").env_remove("CARGO_BUILD_TARGET");
    let out = cmd.output().map_err(BuildError::Cargo)?;
    if !out.status.success() {
        let triples: Vec<&str> = targets.iter().map(|t| t.triple()).collect();
        return Err(BuildError::Failed { target: triples.join(" "), stderr: String::from_utf8_lossy(&out.stderr).into_owned() });
    }
    Ok(targets
        .iter()
        .map(|target| packages.iter().map(|t| (t.to_string(), target_dir.join(target.triple()).join("wasm").join(format!("{t}.wasm")))).collect())
        .collect())
}

/// The path of the hand-written WAT example task.
pub fn wat_task() -> Result<PathBuf, BuildError> {
    Ok(workspace_root().ok_or(BuildError::NoWorkspace)?.join(WAT_TASK))
}
