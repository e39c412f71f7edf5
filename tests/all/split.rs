//! `wasmq split` end to end, and the analysis it is for: a corpus split into chunks, counted chunk
//! by chunk with the wordcount example and merged with merge-counts, gives exactly the count of
//! the whole corpus.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use wasmq_testkit::examples::WasmTarget;

use crate::common::{bin, cache_dir, example};

fn split(args: &[&str], dir: &Path) -> Output {
    Command::new(bin()).arg("split").args(args).current_dir(dir).env_remove("WASMQ_LOG").output().expect("run wasmq split")
}

/// `wasmq run TASK --input INPUT`, asserting success; the output as JSON.
fn run_task(task: &Path, input: &Value) -> Value {
    let out = Command::new(bin()).arg("run").arg(task).arg("--input").arg(input.to_string()).env("WASMQ_CACHE_DIR", cache_dir()).output().unwrap();
    assert!(out.status.success(), "{} failed: {}", task.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{}: output is not JSON: {e}", task.display()))
}

fn one_line(stderr: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    err
}

#[test]
fn a_corpus_counted_in_chunks_and_merged_equals_one_count() {
    let dir = tempfile::tempdir().unwrap();
    // Mixed case, apostrophes (both kinds), several scripts, a word longer than a chunk, bytes
    // that are not UTF-8, and no newline at the end of the first file: its last word and the
    // second file's first word are two words, since a chunk never spans two files.
    let mut one = Vec::new();
    for i in 0..12 {
        one.extend_from_slice(format!("The cat saw the dog {i} times. Don't stop, don’t! Straße STRASSE 東京\n").as_bytes());
    }
    one.extend_from_slice(b"supercalifragilisticexpialidocious-and-then-some-more-words-joined-by-dashes-and-even-more \xff\xfe broken\xe6\x9d bytes end");
    let two = "tail of the corpus: the end, THE END.\n\tIndented line with\u{3000}ideographic space and\u{a0}no-break space\n".repeat(5);
    std::fs::write(dir.path().join("one.txt"), &one).unwrap();
    std::fs::write(dir.path().join("two.txt"), &two).unwrap();
    std::fs::write(dir.path().join("empty.txt"), "").unwrap();

    let out = split(&["one.txt", "empty.txt", "two.txt", "--chunk-size", "64", "--with", r#"{"counts": true}"#], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(lines.len() > 20, "{} chunks", lines.len());
    let texts: Vec<&str> = lines.iter().map(|l| l["text"].as_str().expect("text")).collect();
    for (line, text) in lines.iter().zip(&texts) {
        assert_eq!(line["counts"], true, "{line}");
        assert_eq!(line.as_object().unwrap().len(), 2, "{line}");
        assert!(text.len() <= 64 || text.split_whitespace().count() == 1, "an oversized chunk of many words: {text:?}");
    }
    let corpus = [String::from_utf8_lossy(&one).into_owned(), two.clone()];
    assert_eq!(texts.concat(), corpus.concat(), "the chunks are the decoded files, in order");
    assert!(texts.contains(&"supercalifragilisticexpialidocious-and-then-some-more-words-joined-by-dashes-and-even-more "), "{texts:?}");
    assert!(texts.iter().any(|t| t.ends_with("bytes end")), "the first file's last chunk ends at the file's end: {texts:?}");

    // Map: wordcount on every chunk; reduce: merge-counts over all outputs.
    let wordcount = example(WasmTarget::P1, "wordcount");
    let merge_counts = example(WasmTarget::P1, "merge-counts");
    let counted: Vec<Value> = lines.iter().map(|l| run_task(&wordcount, l)).collect();
    let merged = run_task(&merge_counts, &Value::Array(counted.clone()));
    let whole = run_task(&wordcount, &json!({"text": corpus.join("\n"), "counts": true}));
    assert_eq!(merged, whole, "merged chunk counts differ from one count of the whole corpus");
    assert_eq!(merged["counts"]["end"], 11, "{merged}");
    assert_eq!(merged["counts"]["don't"], 24, "{merged}");
    assert_eq!(merged["counts"]["tail"], 5, "{merged}");

    // A reduction tree (reducers over reducers, with a missing part) gives the same result.
    let (left, right) = counted.split_at(counted.len() / 2);
    let left = run_task(&merge_counts, &Value::Array(left.to_vec()));
    let right = run_task(&merge_counts, &Value::Array(right.to_vec()));
    assert_eq!(run_task(&merge_counts, &json!([left, null, right])), whole);
}

#[test]
fn merge_counts_refuses_input_without_counts() {
    let merge_counts = example(WasmTarget::P1, "merge-counts");
    for (input, message) in
        [(r#"{"counts": {"a": 1}}"#, "expected an array"), (r#"[{"total_words": 2, "distinct_words": 1, "top": []}]"#, "element 0 has no `counts`")]
    {
        let out = Command::new(bin()).arg("run").arg(&merge_counts).args(["--input", input]).env("WASMQ_CACHE_DIR", cache_dir()).output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{input}");
        let err = String::from_utf8_lossy(&out.stderr);
        // The SDK's invalid input: exit status 2, and the function never ran.
        assert!(err.contains("invalid input") && err.contains("status 2") && err.contains(message), "{input}: {err}");
    }
}

#[test]
fn split_options_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "alpha beta\ngamma").unwrap();
    std::fs::write(dir.path().join("empty.txt"), "").unwrap();
    std::fs::create_dir(dir.path().join("folder")).unwrap();

    let out = split(&["a.txt", "--chunk-size", "6", "--field", "body", "--with", r#"{"top": 1}"#], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "{\"body\":\"alpha \",\"top\":1}\n{\"body\":\"beta\\n\",\"top\":1}\n{\"body\":\"gamma\",\"top\":1}\n");

    let out = split(&["empty.txt", "--chunk-size", "1KiB"], dir.path());
    assert!(out.status.success() && out.stdout.is_empty(), "an empty file has no chunks");

    // A file that cannot be read stops the command before anything is written, even for the
    // files before it.
    for (bad, message) in [("missing.txt", "cannot read missing.txt: No such file"), ("folder", "cannot read folder: it is a folder")] {
        let out = split(&["a.txt", bad, "--chunk-size", "1MiB"], dir.path());
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(out.stdout.is_empty(), "{bad}: output was written");
        let err = one_line(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(message), "{bad}: {err}");
    }

    for (with, message) in [("[1]", "--with must be a JSON object"), (r#"{"text": "x"}"#, "the field that holds each chunk"), ("{", "--with is not valid JSON")]
    {
        let out = split(&["a.txt", "--chunk-size", "1MiB", "--with", with], dir.path());
        assert_eq!(out.status.code(), Some(2), "{with}");
        assert!(out.stdout.is_empty());
        let err = one_line(&out.stderr);
        assert!(err.contains(message), "{with}: {err}");
    }

    let out = split(&["a.txt", "--chunk-size", "0"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1 byte"));
}
