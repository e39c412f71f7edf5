//! `wordcount` in JavaScript, Python and C (example-tasks/wordcount-{js,py,c}): built by the
//! testkit (which installs their toolchains under target/lang-tools on first use) against the
//! shipped `wit/` world and `wasmq.h`, run by the real `wasmq` binary, and compared byte for byte
//! with the Rust wordcount on the same inputs, their progress reports and permanent failures
//! checked; then all three through a real Redis and a worker. And the failure summary of an
//! interpreter's uncaught exception.
//!
//! The components are large (12–18 MB) and compile slowly on first use: the tests of this module
//! take turns (one lock), so that each module is compiled once per test process, into the
//! artifact cache that the later runs load.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use wasmq_testkit::examples::WasmTarget;
use wasmq_testkit::languages::{self, Language};

use crate::common::{RedisServer, Wasmq, bin, cache_dir, example};

fn take_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// The task of a language, built once per test process (and reused across processes while its
/// sources do not change).
fn module(lang: Language) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<Language, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(&lang) {
        return p.clone();
    }
    let path = languages::build(lang).unwrap_or_else(|e| panic!("building the {} wordcount: {e}", lang.name()));
    built.insert(lang, path.clone());
    path
}

fn rust_wordcount() -> PathBuf {
    example(WasmTarget::P1, "wordcount")
}

/// `wasmq run TASK` with `input` on stdin (whatever its exit code).
fn run(task: &Path, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(bin())
        .arg("run")
        .arg(task)
        .args(["--input-file", "-"])
        .env("WASMQ_CACHE_DIR", cache_dir())
        .env_remove("WASMQ_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wasmq");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("wait for wasmq");
    writer.join().expect("writer").expect("write the input");
    out
}

/// Where two byte strings first differ, for a readable failure.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let show = |s: &[u8]| String::from_utf8_lossy(&s[at.saturating_sub(60)..(at + 60).min(s.len())]).into_owned();
    format!("first difference at byte {at} (lengths {} and {}):\n  rust: …{}…\n  this: …{}…", a.len(), b.len(), show(a), show(b))
}

/// The line `wasmq run` prints for the last progress report of a wordcount task: the task's own
/// summary of its output, which every language words the same way.
fn last_progress_line(output: &[u8]) -> String {
    let v: Value = serde_json::from_slice(output).expect("wordcount output is JSON");
    let (total, distinct) = (v["total_words"].as_u64().expect("total_words"), v["distinct_words"].as_u64().expect("distinct_words"));
    format!("[wasmq: last progress 100% {total} words, {distinct} distinct]\n")
}

/// Runs the Rust wordcount and `task` on each input, asserting both succeed with the same bytes,
/// and that `task` logs nothing but reports its progress through the host API, ending with the
/// number of words it counted (`wasmq run` prints the last report).
fn assert_same_output(lang: Language, task: &Path, inputs: &[Vec<u8>]) {
    let rust = rust_wordcount();
    for input in inputs {
        let shown = String::from_utf8_lossy(&input[..input.len().min(200)]).into_owned();
        let expected = run(&rust, input);
        assert!(expected.status.success(), "the Rust wordcount failed on {shown}: {}", String::from_utf8_lossy(&expected.stderr));
        let got = run(task, input);
        assert!(got.status.success(), "{} wordcount failed on {shown}: {}", lang.name(), String::from_utf8_lossy(&got.stderr));
        assert_eq!(
            String::from_utf8_lossy(&got.stderr),
            last_progress_line(&expected.stdout),
            "{} wordcount on {shown}: not its last progress alone on stderr",
            lang.name()
        );
        assert!(
            got.stdout == expected.stdout,
            "{} wordcount differs from the Rust one on {shown}\n{}",
            lang.name(),
            first_difference(&expected.stdout, &got.stdout)
        );
    }
}

/// Inputs on which every language's word rules agree: ASCII text with apostrophes, mixed case,
/// punctuation and numbers; every option; ties; an empty text; a large text.
fn ascii_inputs() -> Vec<Vec<u8>> {
    let mut large = String::new();
    for i in 0..3000 {
        large.push_str(&format!("Word{} w{} THE the The, it's IT'S rock'n'roll {}; ", i % 97, i % 13, i % 7));
    }
    let inputs = [
        json!({"text": "to be or not to be"}),
        json!({"text": "to be or not to be", "top": 2, "counts": true}),
        json!({"text": "The cat saw the dog. THE END", "counts": false}),
        json!({"text": "don't stop—can’t 'quoted' it's-fine rock'n'roll o' x' ''a'' b'''c Don’t DON'T", "counts": true}),
        json!({"text": "2024-11-03T08:15:02Z GET /index.html?a=1&b=2 200 0.042s user_id=42 x86_64 v1.2.3", "top": 100}),
        json!({"text": "b a c b a c d", "top": 2}),
        json!({"text": "b a c b a c d", "top": 0, "counts": true}),
        json!({"text": "one two two three three three", "top": 4294967295_u64}),
        json!({"text": "", "counts": true}),
        json!({"text": " \n\t-- ", "top": 5}),
        json!({"text": "tab\tseparated\nlines\r\nand \"quotes\" and \\backslashes\\ \u{0}nul"}),
        json!({"text": large, "top": 25, "counts": true}),
    ];
    let mut inputs: Vec<Vec<u8>> = inputs.iter().map(|v| v.to_string().into_bytes()).collect();
    // JSON as people write it: spaces, newlines, fields in another order, escapes.
    inputs.push(b" {\n  \"counts\" : true ,\n  \"text\" : \"A\\u0042c abc ABC \\t\\/ x\" , \"top\":3 }\n".to_vec());
    inputs.push(include_bytes!("../../example-tasks/wordcount/sample-input.json").to_vec());
    inputs
}

/// Non-ASCII text on which the Rust rules and Python's agree (letters with accents, other
/// scripts without combining marks, both apostrophes), and the order of words by code point
/// (not by UTF-16 code unit).
fn unicode_inputs() -> Vec<Vec<u8>> {
    [
        json!({"text": "Ünïcode ünïcode ÜNÏCODE Straße STRASSE straße Ωμέγα ΩΜΈΓΑ Привет ПРИВЕТ 東京 東京 42 ٤٢ ½", "counts": true}),
        json!({"text": "Crème brûlée, CRÈME BRÛLÉE! L’été l'été d’accord; ÇA çà Ǆemal ǅemal ǆemal", "top": 20, "counts": true}),
        json!({"text": "ΣΑΣ σας İstanbul ıi Ⅻ ⅻ ①②", "counts": true}),
        // U+FF41, U+1D41A, U+10400 (lowercases to U+10428), U+FF5A: code point order puts the
        // fullwidth letters before the astral ones; UTF-16 order would not.
        json!({"text": "ａ 𝐚 𐐀 ｚ 𝐳 ａ 𐐨", "top": 10, "counts": true}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

/// Every code point from U+0080 to U+3FFFF and the tags block, separated by spaces, in chunks:
/// where Rust's word rules are defined by its Unicode tables, C's and JavaScript's follow the
/// same tables, so they agree everywhere.
fn every_code_point_inputs() -> Vec<Vec<u8>> {
    let chars: Vec<char> = (0x80..0x4_0000).chain(0xE_0000..0xE_0200).filter_map(char::from_u32).collect();
    chars
        .chunks(0x8000)
        .map(|chunk| {
            let text: String = chunk.iter().flat_map(|&c| [c, ' ']).collect();
            json!({"text": text, "top": 50, "counts": true}).to_string().into_bytes()
        })
        .collect()
}

/// Inputs the Rust wordcount rejects, and so must every other: not JSON, not an object, no text,
/// fields of the wrong type, an unknown field; nesting deep enough to overflow a recursive parser.
fn invalid_inputs() -> Vec<String> {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut inputs: Vec<String> = INVALID_INPUTS.iter().map(|s| s.to_string()).collect();
    inputs.push(format!("{{\"text\": \"a\", \"x\": {deep}}}"));
    inputs.push(deep);
    inputs
}

const INVALID_INPUTS: &[&str] = &[
    "to be or not to be",
    "",
    "[1, 2]",
    "\"text\"",
    "{\"text\": \"unterminated}",
    "{\"top\": 3}",
    "{\"text\": 5}",
    "{\"text\": \"a\", \"top\": -1}",
    "{\"text\": \"a\", \"top\": \"3\"}",
    "{\"text\": \"a\", \"top\": 4294967296}",
    "{\"text\": \"a\", \"counts\": \"yes\"}",
    "{\"txt\": \"a\"}",
    "{\"text\": \"a\", \"extra\": 1}",
    "{\"text\": \"a\"} trailing",
    "{\"text\": \"lone \\ud800 surrogate\"}",
];

/// Each invalid input is a permanent failure, as in the Rust wordcount: the core modules (Rust's
/// and C's) log one line and exit with status 2; the components call the host API's `fail` with
/// that line, which becomes the error, and log nothing.
fn assert_rejects_invalid_input(lang: Language, task: &Path) {
    let rust = rust_wordcount();
    for input in invalid_inputs() {
        let input = input.as_str();
        for (name, module, component) in [("Rust", rust.as_path(), false), (lang.name(), task, lang.is_component())] {
            let out = run(module, input.as_bytes());
            let stderr = String::from_utf8_lossy(&out.stderr);
            let input = &input[..input.len().min(100)];
            assert_eq!(out.status.code(), Some(5), "{name} wordcount on {input:?}: {stderr}");
            assert!(out.stdout.is_empty(), "{name} wordcount on {input:?} printed {}", String::from_utf8_lossy(&out.stdout));
            let lines: Vec<&str> = stderr.lines().collect();
            if component {
                // wasmq's own line alone, quoting the message given to `fail`.
                assert_eq!(lines.len(), 1, "{name} wordcount on {input:?}: {stderr}");
                assert!(
                    lines[0].starts_with("error: task failed: permanent: the task failed permanently (not retried): invalid input: "),
                    "{name} wordcount on {input:?}: {stderr}"
                );
            } else {
                // The task's log (one line), then wasmq's own line.
                assert_eq!(lines.len(), 2, "{name} wordcount on {input:?}: not one line of log:\n{stderr}");
                assert!(lines[0].starts_with("invalid input: "), "{name} wordcount on {input:?}: {stderr}");
                assert!(lines[1].contains("exited with status 2, a permanent failure"), "{name} wordcount on {input:?}: {stderr}");
            }
        }
    }
}

fn check_language(lang: Language, inputs: &[Vec<u8>]) {
    let _turn = take_turn();
    let task = module(lang);
    assert_same_output(lang, &task, inputs);
    assert_rejects_invalid_input(lang, &task);
}

#[test]
fn javascript_wordcount_equals_rust_wordcount() {
    let inputs = [ascii_inputs(), unicode_inputs(), every_code_point_inputs()].concat();
    check_language(Language::JavaScript, &inputs);
}

#[test]
fn python_wordcount_equals_rust_wordcount() {
    check_language(Language::Python, &[ascii_inputs(), unicode_inputs()].concat());
}

#[test]
fn c_wordcount_equals_rust_wordcount() {
    let inputs = [ascii_inputs(), unicode_inputs(), every_code_point_inputs()].concat();
    check_language(Language::C, &inputs);
}

/// Where Python's `str.isalnum` differs from Rust's `char::is_alphanumeric` (README of
/// wordcount-py): combining vowel signs that Unicode calls alphabetic, and circled letters.
/// If this starts failing, the difference is gone and the README must say so.
#[test]
fn python_word_rules_differ_from_rust_only_as_documented() {
    let _turn = take_turn();
    let task = module(Language::Python);
    let input = json!({"text": "हिन्दी ⓐⓑ", "counts": true}).to_string();
    let words = |out: Output| -> Vec<String> {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
        v["counts"].as_object().expect("counts").keys().cloned().collect()
    };
    // हिन्दी: ह ि न ् द ी. The vowel signs ि and ी are marks with the Alphabetic property; the
    // virama ् is not alphabetic.
    assert_eq!(words(run(&rust_wordcount(), input.as_bytes())), ["दी", "हिन", "ⓐⓑ"]);
    assert_eq!(words(run(&task, input.as_bytes())), ["द", "न", "ह"]);
}

/// The top-level imports of a module (`module/name` for a core module, the interface for a
/// component), without their versions.
fn imports(bytes: &[u8]) -> Vec<String> {
    use wasmparser::{Parser, Payload};
    let mut names = Vec::new();
    // Nested modules and components have imports of their own, which the outer one satisfies.
    let mut depth = 0;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.expect("valid wasm") {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth -= 1,
            Payload::ImportSection(reader) if depth == 0 => {
                names.extend(reader.into_imports().map(|i| i.expect("an import")).map(|i| format!("{}/{}", i.module, i.name)));
            }
            Payload::ComponentImportSection(reader) if depth == 0 => {
                names.extend(reader.into_iter().map(|i| i.expect("an import").name.name.split('@').next().unwrap_or_default().to_string()));
            }
            _ => {}
        }
    }
    names.sort();
    names.dedup();
    names
}

/// What each module imports, all of which the worker provides. The components are built against
/// the shipped world `wasmq:task/task` and import what it has: WASI's command world (cli, io,
/// clocks, filesystem, random, sockets: linked by the worker, no folder or network granted) and
/// the host API; not `wasi:http`, which componentize-js would import by default (its engine's
/// HTTP feature is disabled). The C module imports WASI preview 1 and the host API's `progress`.
#[test]
fn the_modules_import_only_what_the_worker_provides() {
    let _turn = take_turn();
    for lang in Language::ALL {
        let imports = imports(&std::fs::read(module(lang)).expect("read the module"));
        let (allowed, needed): (&[&str], &[&str]) = match lang {
            Language::JavaScript | Language::Python => (
                &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:filesystem/", "wasi:random/", "wasi:sockets/", "wasmq:task/host"],
                &["wasi:cli/stdin", "wasi:cli/stdout", "wasmq:task/host"],
            ),
            Language::C => (&["wasi_snapshot_preview1/", "wasmq/progress"], &["wasi_snapshot_preview1/fd_read", "wasmq/progress"]),
        };
        let stray: Vec<&String> = imports.iter().filter(|i| !allowed.iter().any(|a| i.starts_with(a))).collect();
        assert!(stray.is_empty(), "{} imports {stray:?}; all: {imports:?}", lang.name());
        for needed in needed {
            assert!(imports.iter().any(|i| i == needed), "{} does not import {needed}: {imports:?}", lang.name());
        }
    }
}

/// The two generated tables (C's and JavaScript's) are what this Rust's `char` methods say.
#[test]
fn generated_unicode_tables_are_rusts() {
    let root = wasmq_testkit::examples::workspace_root().expect("source tree");
    let stale = languages::generated_tables(&root, false).expect("read the tables");
    assert!(
        stale.is_empty(),
        "stale generated tables: {:?}; regenerate with `cargo run -p wasmq-testkit --bin lang-tools -- tables`",
        stale.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>()
    );
}

/// A second build reuses the module: nothing is rebuilt while the sources do not change.
#[test]
fn a_second_build_reuses_the_modules() {
    let _turn = take_turn();
    for lang in Language::ALL {
        let first = module(lang);
        let modified = std::fs::metadata(&first).and_then(|m| m.modified()).expect("module");
        let again = languages::build(lang).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, first);
        assert_eq!(std::fs::metadata(&again).and_then(|m| m.modified()).expect("module"), modified, "{} was rebuilt", lang.name());
    }
}

/// The three modules through a real Redis: pushed, enqueued (one valid and one invalid input
/// each), run by a worker with its default limits, results equal to the Rust wordcount's.
#[test]
fn the_three_languages_run_through_the_queue() {
    let _turn = take_turn();
    let server = RedisServer::start().expect("start redis-server");
    let w = Wasmq::new(&server);
    let input = json!({"text": "Ünïcode text: it's the TEXT, the text’s words and 42 numbers.", "top": 3, "counts": true}).to_string();
    let expected = run(&rust_wordcount(), input.as_bytes());
    assert!(expected.status.success(), "{}", String::from_utf8_lossy(&expected.stderr));
    let mut tasks = Vec::new();
    for lang in Language::ALL {
        w.push(&module(lang), lang.task());
        let good = w.enqueue(lang.task(), &input, &[]);
        let bad = w.enqueue(lang.task(), r#"{"txt": "misspelt"}"#, &["--max-attempts", "3"]);
        tasks.push((lang, good, bad));
    }
    let mut worker = w.spawn_worker(&["--exit-when-idle", "--concurrency", "2"]);
    assert_eq!(worker.wait(Duration::from_secs(300)), Some(0), "worker log:\n{}", worker.log());
    for (lang, good, bad) in tasks {
        let out = w.run(&["result", &good]);
        assert!(out.status.success(), "{}: {}", lang.name(), String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout == expected.stdout, "{} through the queue:\n{}", lang.name(), first_difference(&expected.stdout, &out.stdout));
        let st = w.status(&bad).expect("status");
        assert_eq!(
            (st["state"].as_str(), st["error_kind"].as_str(), st["attempts"].as_u64()),
            (Some("dead"), Some("permanent"), Some(1)),
            "{}: {st}",
            lang.name()
        );
        assert!(st["error"].as_str().is_some_and(|e| e.contains("invalid input: ") && e.contains("`txt`")), "{}: {st}", lang.name());
    }
}

/// A Python task failing on an uncaught exception (tests/fixtures/lang/keyerror.py): its error's
/// one-line summary names the exception, `KeyError: 'threshold'` (the traceback's last line), and
/// not the panic that componentize-py's runtime logs after it ("panicked at
/// runtime/src/lib.rs:…"), through `wasmq run` and through a worker; the whole traceback stays in
/// the task's log.
#[test]
fn a_python_exception_is_the_failures_summary() {
    let _turn = take_turn();
    let program = languages::Program::single_file(Language::Python, "keyerror-py", "tests/fixtures/lang", "keyerror.py");
    let task = languages::build_program(&program).unwrap_or_else(|e| panic!("building {}: {e}", program.name));
    let out = run(&task, b"{\"limit\": 3}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: task failed: trap: ") && last.ends_with("; from the log: KeyError: 'threshold'"), "{stderr}");
    assert!(stderr.contains("Traceback (most recent call last):"), "the log is shown whole: {stderr}");

    let server = RedisServer::start().expect("start redis-server");
    let w = Wasmq::new(&server);
    w.push(&task, "keyerror");
    let id = w.enqueue("keyerror", "{}", &["--max-attempts", "1"]);
    let mut worker = w.spawn_worker(&["--exit-when-idle"]);
    assert_eq!(worker.wait(Duration::from_secs(120)), Some(0), "worker log:\n{}", worker.log());
    let st = w.status(&id).expect("status");
    assert_eq!((st["state"].as_str(), st["error_kind"].as_str()), (Some("dead"), Some("trap")), "{st}");
    let error = st["error"].as_str().unwrap_or_default();
    assert!(error.ends_with("KeyError: 'threshold'") && !error.contains("runtime/src/lib.rs"), "{st}");
    let log = st["log"].as_str().unwrap_or_default();
    assert!(log.contains("KeyError: 'threshold'") && log.contains("panicked at runtime/src/lib.rs"), "{st}");
}
