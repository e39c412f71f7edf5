//! Building the example tasks written in other languages: `wordcount` in JavaScript (a component
//! made by componentize-js), Python (a component made by componentize-py) and C (a preview-1
//! core module compiled by `zig cc`), for the tests, the benchmarks and by hand; and other small
//! programs in those languages that the tests need ([`Program`]).
//!
//! They are built as a task author would build them: the components against the world
//! `wasmq:task/task` of the repository's `wit/` folder (WASI's command world plus the host API),
//! the C module with `sdk/include/wasmq.h` on its include path.
//!
//! The toolchains are installed on first use into folders under the workspace's
//! `target/lang-tools/`, never globally: npm packages with `npm ci` from the lock file committed
//! beside the JavaScript task, and a Python virtual environment with the pinned requirements of
//! the Python and C tasks (componentize-py, and ziglang, which carries the Zig compiler). Their
//! download caches live there too. An install is reused while its pins are unchanged.
//!
//! The built modules go to `target/lang-tasks/`; a module is rebuilt only when one of its sources
//! (or the toolchain) is newer than it. Builds are serialized, in this process and across
//! processes (a lock file), so parallel tests share one build.
//!
//! The JavaScript engine has no Unicode property tables and C has none at all: which code points
//! are alphanumeric, and their lowercase forms, come from tables generated from Rust's own `char`
//! methods ([`generated_tables`]), committed with the sources and checked by the tests.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::examples::workspace_root;

/// A language the `wordcount` example is written in, besides Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    JavaScript,
    Python,
    C,
}

impl Language {
    pub const ALL: [Language; 3] = [Language::JavaScript, Language::Python, Language::C];

    pub fn name(self) -> &'static str {
        match self {
            Self::JavaScript => "JavaScript",
            Self::Python => "Python",
            Self::C => "C",
        }
    }

    /// The task's name (and the name of its folder under `example-tasks/`).
    pub fn task(self) -> &'static str {
        match self {
            Self::JavaScript => "wordcount-js",
            Self::Python => "wordcount-py",
            Self::C => "wordcount-c",
        }
    }

    /// The task's folder, relative to the workspace root.
    pub fn folder(self) -> PathBuf {
        Path::new("example-tasks").join(self.task())
    }

    /// The files (or folders) the module is built from, relative to its folder.
    fn sources(self) -> &'static [&'static str] {
        match self {
            Self::JavaScript => &["wordcount.js", "package-lock.json"],
            Self::Python => &["app.py", "requirements.txt"],
            Self::C => &["wordcount.c", "unicode_tables.h", "requirements.txt"],
        }
    }

    /// What every program of the language is built with from the workspace root: the shipped
    /// WIT of a component's world, the C header of the host API.
    fn shared_sources(self) -> &'static [&'static str] {
        match self {
            Self::JavaScript | Self::Python => &["wit"],
            Self::C => &["sdk/include"],
        }
    }

    /// Whether the module is a component (WASI preview 2) rather than a core module.
    pub fn is_component(self) -> bool {
        !matches!(self, Self::C)
    }
}

/// The world components are built against: a WASI command that may import the host API
/// (`wit/wasmq.wit`).
const WORLD: &str = "wasmq:task/task";

/// A program to build in one of the languages: the `wordcount` example of a language, or another
/// small task (a test fixture, say) written the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub lang: Language,
    /// The module is `target/lang-tasks/NAME.wasm`.
    pub name: String,
    /// The program's folder, relative to the workspace root.
    pub folder: PathBuf,
    /// The file the build starts from, in that folder: the script (JavaScript), the module
    /// `NAME.py` that defines the `Run` export (Python), the one translation unit (C).
    pub entry: String,
    /// The files the module is built from, relative to the folder (a change rebuilds it).
    sources: Vec<String>,
}

impl Program {
    /// The `wordcount` example of a language.
    pub fn wordcount(lang: Language) -> Self {
        let entry = match lang {
            Language::JavaScript => "wordcount.js",
            Language::Python => "app.py",
            Language::C => "wordcount.c",
        };
        Self {
            lang,
            name: lang.task().to_string(),
            folder: lang.folder(),
            entry: entry.to_string(),
            sources: lang.sources().iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A program of one file, `entry` in `folder` (relative to the workspace root), built into
    /// `target/lang-tasks/NAME.wasm`.
    pub fn single_file(lang: Language, name: &str, folder: impl Into<PathBuf>, entry: &str) -> Self {
        Self { lang, name: name.to_string(), folder: folder.into(), entry: entry.to_string(), sources: vec![entry.to_string()] }
    }
}

/// Why a toolchain could not be installed or a task could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LanguageError {
    #[error("cannot find the wasmq source tree (a folder with Cargo.toml and example-tasks/); run from a checkout")]
    NoWorkspace,
    #[error("{program} not found: {hint}")]
    NotFound { program: String, hint: &'static str },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{step} failed ({status}):\n{output}")]
    Failed { step: String, status: ExitStatus, output: String },
    #[error("Node.js {found} is too old: componentize-js needs Node.js {NODE_MAJOR} or later")]
    OldNode { found: String },
    #[error("{step} reported success but {path} is missing")]
    NoOutput { step: String, path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LanguageError + '_ {
    move |source| LanguageError::Io { path: path.to_path_buf(), source }
}

/// Where the toolchains and the built modules live, under a workspace root.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    /// `target/lang-tools`: npm packages, the Python virtual environment, caches.
    pub tools: PathBuf,
    /// `target/lang-tasks`: the built modules.
    pub out: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        let target = root.join("target");
        Self { root: root.to_path_buf(), tools: target.join("lang-tools"), out: target.join("lang-tasks") }
    }

    /// The layout of the source tree this program runs in (or was built from).
    pub fn find() -> Result<Self, LanguageError> {
        Ok(Self::new(&workspace_root().ok_or(LanguageError::NoWorkspace)?))
    }

    fn npm_prefix(&self) -> PathBuf {
        self.tools.join("npm")
    }

    fn venv(&self) -> PathBuf {
        self.tools.join("venv")
    }

    /// The Python of the tools' virtual environment (with `requests` for the API client
    /// example, docs/clients).
    pub fn venv_python(&self) -> PathBuf {
        self.venv().join("bin").join("python")
    }

    /// The built module of a language's task.
    pub fn module(&self, lang: Language) -> PathBuf {
        self.out.join(format!("{}.wasm", lang.task()))
    }

    /// The built module of a program.
    pub fn program_module(&self, program: &Program) -> PathBuf {
        self.out.join(format!("{}.wasm", program.name))
    }
}

/// The oldest Node.js componentize-js 0.23 runs on (its parser, oxc-parser, needs 20).
const NODE_MAJOR: u32 = 20;
const NODE_HINT: &str = "install Node.js 20 or later with npm (Debian: apt-get install nodejs npm)";
const PYTHON_HINT: &str = "install CPython 3.10 or later with venv and pip (Debian: apt-get install python3 python3-venv)";

/// Serializes installs and builds within this process (the lock file does across processes).
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// An exclusive lock on `target/lang-tools/.lock`, held while installing or building.
struct FileLock(#[allow(dead_code)] File);

impl FileLock {
    fn acquire(tools: &Path) -> Result<Self, LanguageError> {
        std::fs::create_dir_all(tools).map_err(io_err(tools))?;
        let path = tools.join(".lock");
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| LanguageError::Io { path, source: e.into() })?;
        Ok(Self(file))
    }
}

/// Builds the `wordcount` task of `lang` (installing its toolchain first if needed) and returns
/// the path of its .wasm. A module newer than its sources and its toolchain is reused.
pub fn build(lang: Language) -> Result<PathBuf, LanguageError> {
    build_in(&Layout::find()?, lang)
}

/// [`build`] in a given layout.
pub fn build_in(layout: &Layout, lang: Language) -> Result<PathBuf, LanguageError> {
    build_program_in(layout, &Program::wordcount(lang))
}

/// Builds a program (installing its language's toolchain first if needed) and returns the path
/// of its .wasm. A module newer than its sources and its toolchain is reused.
pub fn build_program(program: &Program) -> Result<PathBuf, LanguageError> {
    build_program_in(&Layout::find()?, program)
}

/// [`build_program`] in a given layout.
pub fn build_program_in(layout: &Layout, program: &Program) -> Result<PathBuf, LanguageError> {
    let lang = program.lang;
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _lock = FileLock::acquire(&layout.tools)?;
    let stamp = install_locked(layout, lang)?;
    let src = layout.root.join(&program.folder);
    let out = layout.program_module(program);
    // Built under a temporary name and renamed: a failed or interrupted build never leaves a
    // module that looks current.
    let tmp = layout.out.join(format!(".{}.wasm.tmp", program.name));
    let mut cmd = build_command(layout, program, &src, &tmp);
    // The command line, kept beside the module: a module built another way is rebuilt.
    let recipe_path = layout.out.join(format!("{}.wasm.recipe", program.name));
    let recipe = format!("{cmd:?}");
    let sources = program.sources.iter().map(|s| src.join(s)).chain(lang.shared_sources().iter().map(|s| layout.root.join(s)));
    let newest_input = sources.map(|s| newest_mtime(&s)).chain([modified(&stamp)]).max().flatten();
    if let (Some(built), Some(input)) = (modified(&out), newest_input)
        && built >= input
        && std::fs::read_to_string(&recipe_path).is_ok_and(|r| r == recipe)
    {
        return Ok(out);
    }
    std::fs::create_dir_all(&layout.out).map_err(io_err(&layout.out))?;
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&recipe_path);
    let work = tempfile::Builder::new().prefix("build-").tempdir_in(&layout.tools).map_err(io_err(&layout.tools))?;
    cmd.current_dir(work.path());
    let step = format!("building {} ({})", program.name, lang.name());
    let hint = if lang == Language::JavaScript { NODE_HINT } else { PYTHON_HINT };
    run_step(&mut cmd, &step, hint)?;
    if !tmp.is_file() {
        return Err(LanguageError::NoOutput { step, path: tmp });
    }
    std::fs::rename(&tmp, &out).map_err(io_err(&out))?;
    std::fs::write(&recipe_path, recipe).map_err(io_err(&recipe_path))?;
    Ok(out)
}

/// The command that builds `program` from its folder `src` into `out`.
fn build_command(layout: &Layout, program: &Program, src: &Path, out: &Path) -> Command {
    let wit = layout.root.join("wit");
    let mut cmd = match program.lang {
        Language::JavaScript => {
            let mut c = Command::new("node");
            c.arg(layout.npm_prefix().join("node_modules/@bytecodealliance/componentize-js/src/cli.js"))
                .arg(src.join(&program.entry))
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", WORLD])
                // The engine's own features that would import what a task has no use for:
                // clocks, randomness (deterministic without it), HTTP. `stdio` stays: it
                // reports uncaught errors on stderr.
                .args(["--disable", "clocks", "random", "http", "fetch-event"])
                .arg("--out")
                .arg(out);
            c
        }
        Language::Python => {
            let mut c = Command::new(layout.venv().join("bin").join("componentize-py"));
            c.arg("--wit-path")
                .arg(&wit)
                .args(["--world", WORLD, "componentize", "--python-path"])
                .arg(src)
                .arg(program.entry.trim_end_matches(".py"))
                .arg("--output")
                .arg(out);
            c
        }
        Language::C => {
            let mut c = Command::new(layout.venv_python());
            c.args(["-m", "ziglang", "cc", "--target=wasm32-wasi", "-O2", "-s", "-Wall", "-Wextra", "-Werror", "-I"])
                .arg(layout.root.join("sdk/include"))
                .arg("-o")
                .arg(out)
                .arg(src.join(&program.entry));
            c
        }
    };
    cmd.env("ZIG_GLOBAL_CACHE_DIR", layout.tools.join("zig-cache"))
        .env("ZIG_LOCAL_CACHE_DIR", layout.tools.join("zig-cache"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // Nothing of the user's environment leaks into the build.
        .env_remove("VIRTUAL_ENV")
        .env_remove("PYTHONPATH");
    cmd
}

/// Builds all three tasks; returns `(language, module)` for each.
pub fn build_all() -> Result<Vec<(Language, PathBuf)>, LanguageError> {
    let layout = Layout::find()?;
    Language::ALL.iter().map(|&l| build_in(&layout, l).map(|p| (l, p))).collect()
}

/// Installs the toolchain `lang` needs, unless it is installed at the pinned versions already.
pub fn install(layout: &Layout, lang: Language) -> Result<(), LanguageError> {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _lock = FileLock::acquire(&layout.tools)?;
    install_locked(layout, lang).map(drop)
}

/// Installs the toolchain of `lang` if needed; returns its stamp file, whose modification time is
/// that of the install.
fn install_locked(layout: &Layout, lang: Language) -> Result<PathBuf, LanguageError> {
    match lang {
        Language::JavaScript => install_npm(layout),
        Language::Python | Language::C => install_venv(layout),
    }
}

/// `npm ci` of the JavaScript task's package.json and lock file into `target/lang-tools/npm`.
fn install_npm(layout: &Layout) -> Result<PathBuf, LanguageError> {
    let src = layout.root.join(Language::JavaScript.folder());
    let prefix = layout.npm_prefix();
    let stamp = prefix.join(".wasmq-installed");
    let mut pins = Vec::new();
    for file in ["package.json", "package-lock.json"] {
        let path = src.join(file);
        pins.push(std::fs::read(&path).map_err(io_err(&path))?);
    }
    let wanted = pins.concat();
    if std::fs::read(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(stamp);
    }
    check_node()?;
    std::fs::create_dir_all(&prefix).map_err(io_err(&prefix))?;
    let _ = std::fs::remove_file(&stamp);
    for (file, bytes) in ["package.json", "package-lock.json"].iter().zip(&pins) {
        let path = prefix.join(file);
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }
    let mut npm = Command::new("npm");
    npm.arg("ci").arg("--prefix").arg(&prefix).arg("--cache").arg(layout.tools.join("npm-cache")).args(["--no-audit", "--no-fund", "--loglevel=error"]);
    npm.current_dir(&prefix).env("npm_config_update_notifier", "false");
    run_step(&mut npm, "installing componentize-js (npm ci)", NODE_HINT)?;
    std::fs::write(&stamp, wanted).map_err(io_err(&stamp))?;
    Ok(stamp)
}

/// Fails unless `node` runs and is recent enough.
fn check_node() -> Result<(), LanguageError> {
    let out = Command::new("node").arg("--version").stdin(Stdio::null()).output().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => LanguageError::NotFound { program: "node".into(), hint: NODE_HINT },
        _ => LanguageError::Spawn { program: "node".into(), source },
    })?;
    let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = found.trim_start_matches('v').split('.').next().and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= NODE_MAJOR => Ok(()),
        _ => Err(LanguageError::OldNode { found }),
    }
}

/// A virtual environment in `target/lang-tools/venv` with the Python and C tasks' pinned
/// requirements (componentize-py, ziglang) and the API client example's (requests).
fn install_venv(layout: &Layout) -> Result<PathBuf, LanguageError> {
    let venv = layout.venv();
    let stamp = venv.join(".wasmq-installed");
    let mut files = Vec::new();
    let mut wanted = Vec::new();
    let clients = layout.root.join("docs").join("clients").join("requirements.txt");
    for path in [Language::Python, Language::C].map(|lang| layout.root.join(lang.folder()).join("requirements.txt")).into_iter().chain([clients]) {
        wanted.extend(std::fs::read(&path).map_err(io_err(&path))?);
        files.push(path);
    }
    if std::fs::read(&stamp).is_ok_and(|s| s == wanted) && layout.venv_python().exists() {
        return Ok(stamp);
    }
    let _ = std::fs::remove_file(&stamp);
    if !layout.venv_python().exists() {
        let mut python = Command::new("python3");
        python.args(["-m", "venv", "--clear"]).arg(&venv);
        run_step(&mut python, "creating a Python virtual environment (python3 -m venv)", PYTHON_HINT)?;
    }
    let mut pip = Command::new(layout.venv_python());
    pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]);
    for f in &files {
        pip.arg("--requirement").arg(f);
    }
    pip.env("PIP_CACHE_DIR", layout.tools.join("pip-cache")).env_remove("PIP_USER").env_remove("PYTHONPATH");
    run_step(&mut pip, "installing componentize-py, ziglang and requests (pip install)", PYTHON_HINT)?;
    std::fs::write(&stamp, wanted).map_err(io_err(&stamp))?;
    Ok(stamp)
}

/// Runs a command to completion; its combined output is in the error when it fails.
fn run_step(cmd: &mut Command, step: &str, hint: &'static str) -> Result<(), LanguageError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.stdin(Stdio::null()).output().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => LanguageError::NotFound { program: program.clone(), hint },
        _ => LanguageError::Spawn { program: program.clone(), source },
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(LanguageError::Failed { step: step.to_string(), status: out.status, output })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of a file, or of the files in a folder (recursively).
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path).ok()?.filter_map(Result::ok).filter_map(|e| newest_mtime(&e.path())).max()
}

// ---------------------------------------------------------------------------------------------
// Generated Unicode tables
// ---------------------------------------------------------------------------------------------

/// The `[start, end)` ranges of the code points for which Rust's `char::is_alphanumeric` holds.
pub fn alphanumeric_ranges() -> Vec<(u32, u32)> {
    let mut ranges = Vec::new();
    let mut start = None;
    for cp in 0..=0x11_0000u32 {
        let alnum = char::from_u32(cp).is_some_and(char::is_alphanumeric);
        match (alnum, start) {
            (true, None) => start = Some(cp),
            (false, Some(s)) => {
                ranges.push((s, cp));
                start = None;
            }
            _ => {}
        }
    }
    ranges
}

/// A run of code points whose lowercase is one code point at a fixed distance: `first`,
/// `first + stride`, ... (`count` of them) lowercase to themselves plus `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowercaseRun {
    pub first: u32,
    pub count: u32,
    pub stride: u32,
    pub delta: i32,
}

/// Rust's `char::to_lowercase` for every code point it changes to one code point, as runs. (The
/// one code point that lowercases to two, U+0130 İ to `i̇`, is left to the code that uses them.)
pub fn lowercase_runs() -> Vec<LowercaseRun> {
    let pairs: Vec<(u32, u32)> = (0..=0x10_FFFFu32)
        .filter_map(char::from_u32)
        .filter_map(|c| {
            let mut lower = c.to_lowercase();
            match (lower.next(), lower.next()) {
                (Some(l), None) if l != c => Some((c as u32, l as u32)),
                _ => None,
            }
        })
        .collect();
    let delta = |(from, to): (u32, u32)| to as i32 - from as i32;
    let mut runs: Vec<LowercaseRun> = Vec::new();
    for &pair in &pairs {
        if let Some(run) = runs.last_mut() {
            let step = pair.0 - (run.first + (run.count - 1) * run.stride);
            if delta(pair) == run.delta && (run.count == 1 || step == run.stride) {
                run.stride = step;
                run.count += 1;
                continue;
            }
        }
        runs.push(LowercaseRun { first: pair.0, count: 1, stride: 1, delta: delta(pair) });
    }
    runs
}

const JS_BEGIN: &str = "// BEGIN GENERATED: alphanumeric code points\n";
const JS_END: &str = "// END GENERATED";

/// The generated part of `wordcount-js/wordcount.js`: the alphanumeric ranges as a string of
/// base-36 numbers, alternately the gap since the end of the previous range and the length.
pub fn js_tables() -> String {
    let mut numbers = Vec::new();
    let mut end = 0;
    for (s, e) in alphanumeric_ranges() {
        numbers.push(radix36(s - end));
        numbers.push(radix36(e - s));
        end = e;
    }
    let (major, minor, update) = char::UNICODE_VERSION;
    let mut out = format!("// From Rust's char::is_alphanumeric, Unicode {major}.{minor}.{update}. Regenerate with\n");
    out.push_str("// `cargo run -p wasmq-testkit --bin lang-tools -- tables`.\nconst ALNUM_TABLE =\n");
    let mut line = String::new();
    let mut lines = Vec::new();
    for n in numbers {
        if line.len() + n.len() + 1 > 90 {
            lines.push(std::mem::take(&mut line));
        }
        line.push_str(&n);
        line.push(' ');
    }
    lines.push(line.trim_end().to_string());
    let quoted: Vec<String> = lines.iter().map(|l| format!("  '{l}'")).collect();
    out.push_str(&quoted.join(" +\n"));
    out.push_str(";\n");
    out
}

fn radix36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

/// `wordcount-c/unicode_tables.h`, whole.
pub fn c_tables() -> String {
    let (major, minor, update) = char::UNICODE_VERSION;
    let mut out = String::new();
    let _ = writeln!(out, "/* Generated from Rust's char::is_alphanumeric and char::to_lowercase, Unicode {major}.{minor}.{update}.");
    out.push_str(" * Do not edit: regenerate with `cargo run -p wasmq-testkit --bin lang-tools -- tables`. */\n\n");
    out.push_str("#include <stdint.h>\n\n");
    out.push_str("/* [start, end) ranges of alphanumeric code points, ascending. */\n");
    out.push_str("static const uint32_t ALNUM_RANGES[][2] = {\n");
    for chunk in alphanumeric_ranges().chunks(6) {
        let items: Vec<String> = chunk.iter().map(|(s, e)| format!("{{0x{s:x}, 0x{e:x}}}")).collect();
        let _ = writeln!(out, "    {},", items.join(", "));
    }
    out.push_str("};\n\n");
    out.push_str("/* Code points first, first + stride, ... (count of them) lowercase to themselves plus delta;\n");
    out.push_str(" * ascending by first. U+0130 lowercases to two code points, U+0069 U+0307: not listed. */\n");
    out.push_str(
        "static const struct lowercase_run {\n    uint32_t first;\n    uint32_t count;\n    uint32_t stride;\n    int32_t delta;\n} LOWERCASE_RUNS[] = {\n",
    );
    for chunk in lowercase_runs().chunks(4) {
        let items: Vec<String> = chunk.iter().map(|r| format!("{{0x{:x}, {}, {}, {}}}", r.first, r.count, r.stride, r.delta)).collect();
        let _ = writeln!(out, "    {},", items.join(", "));
    }
    out.push_str("};\n");
    out
}

/// A generated file (or part of one) whose committed text is not what the generator gives.
#[derive(Debug)]
pub struct StaleTable {
    pub path: PathBuf,
}

/// Compares the committed generated tables with what this Rust gives; with `write`, rewrites
/// the stale ones. Returns the stale ones (before rewriting).
pub fn generated_tables(root: &Path, write: bool) -> Result<Vec<StaleTable>, LanguageError> {
    let mut stale = Vec::new();
    let js = root.join(Language::JavaScript.folder()).join("wordcount.js");
    let source = std::fs::read_to_string(&js).map_err(io_err(&js))?;
    let (Some(begin), Some(end)) = (source.find(JS_BEGIN), source.find(JS_END)) else {
        return Err(LanguageError::Io { path: js, source: io::Error::other("no BEGIN GENERATED / END GENERATED markers") });
    };
    let begin = begin + JS_BEGIN.len();
    if begin > end {
        return Err(LanguageError::Io { path: js, source: io::Error::other("END GENERATED before BEGIN GENERATED") });
    }
    let table = js_tables();
    if source[begin..end] != table {
        if write {
            let updated = format!("{}{table}{}", &source[..begin], &source[end..]);
            std::fs::write(&js, updated).map_err(io_err(&js))?;
        }
        stale.push(StaleTable { path: js });
    }
    let c = root.join(Language::C.folder()).join("unicode_tables.h");
    let table = c_tables();
    let mut current = String::new();
    let _ = File::open(&c).and_then(|mut f| f.read_to_string(&mut current));
    if current != table {
        if write {
            std::fs::write(&c, table).map_err(io_err(&c))?;
        }
        stale.push(StaleTable { path: c });
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lowercase_by_runs(runs: &[LowercaseRun], cp: u32) -> u32 {
        let i = runs.partition_point(|r| r.first <= cp);
        if i > 0 {
            let r = runs[i - 1];
            let offset = cp - r.first;
            if offset.is_multiple_of(r.stride) && offset / r.stride < r.count {
                return (cp as i64 + r.delta as i64) as u32;
            }
        }
        cp
    }

    #[test]
    fn lowercase_runs_give_rusts_lowercase() {
        let runs = lowercase_runs();
        assert!(runs.len() < 300, "{} runs", runs.len());
        assert!(runs.windows(2).all(|w| w[0].first + (w[0].count - 1) * w[0].stride < w[1].first), "runs overlap");
        for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
            let lower: Vec<char> = c.to_lowercase().collect();
            let expected = if lower.len() == 1 { lower[0] as u32 } else { c as u32 };
            assert_eq!(lowercase_by_runs(&runs, c as u32), expected, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn a_missing_tool_is_named_with_what_to_install() {
        let err = run_step(&mut Command::new("wasmq-no-such-npm"), "installing", NODE_HINT).unwrap_err();
        assert!(matches!(err, LanguageError::NotFound { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("wasmq-no-such-npm not found: {NODE_HINT}"));
        let err = run_step(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]), "a step", NODE_HINT).unwrap_err();
        assert_eq!(err.to_string(), "a step failed (exit status: 3):\nout\nerr\n");
    }

    #[test]
    fn alphanumeric_ranges_are_rusts() {
        let ranges = alphanumeric_ranges();
        let inside = |cp: u32| ranges.iter().any(|&(s, e)| s <= cp && cp < e);
        for cp in (0..0x3_0000).step_by(7) {
            assert_eq!(inside(cp), char::from_u32(cp).is_some_and(char::is_alphanumeric), "U+{cp:04X}");
        }
        assert_eq!(radix36(0), "0");
        assert_eq!(radix36(36 * 36 + 35), "10z");
    }
}
