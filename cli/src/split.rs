//! `wasmq split FILE... --chunk-size SIZE`: text files as task inputs, one JSON line per chunk of
//! text, for `enqueue --inputs-file`: the map side of analysing a corpus.
//!
//! Chunks are cut only after whitespace (and at the end of a file), so no word is ever split
//! between two tasks: counts of the chunks add up to the count of the whole file. Nothing here
//! talks to Redis.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::{Outcome, exit, value};

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// Text files, each split on its own (a chunk never spans two files). Bytes that are not
    /// UTF-8 become U+FFFD.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Largest chunk, in bytes of text (e.g. 1MiB). A chunk ends just after a whitespace
    /// character, so a single word longer than this is a chunk of its own.
    #[arg(long, value_name = "SIZE", value_parser = chunk_size)]
    pub chunk_size: usize,
    /// The field of each JSON line that holds the chunk.
    #[arg(long, value_name = "NAME", default_value = "text")]
    pub field: String,
    /// A JSON object whose fields are added to every line, e.g. '{"counts": true}'.
    #[arg(long, value_name = "JSON")]
    pub with: Option<String>,
}

fn chunk_size(s: &str) -> Result<usize, String> {
    match value::size(s)? {
        0 => Err("--chunk-size must be at least 1 byte".into()),
        n => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

pub fn run(a: SplitArgs) -> Outcome {
    let with = match extra_fields(&a.field, a.with.as_deref()) {
        Ok(with) => with,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::USAGE);
        }
    };
    // A missing or unreadable file (a glob that matched a folder, a typo) stops the command
    // before anything is written, rather than after half of the corpus went to stdout.
    for f in &a.files {
        check_readable(f)?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for f in &a.files {
        // A whole file is read before any of its chunks is written: a file that fails to read
        // leaves no partial output behind.
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        for chunk in chunks(&text, a.chunk_size) {
            serde_json::to_writer(&mut out, &Line { field: &a.field, text: chunk, with: &with }).context("cannot write to stdout")?;
            out.write_all(b"\n").context("cannot write to stdout")?;
        }
    }
    out.flush().context("cannot write to stdout")?;
    Ok(exit::OK)
}

/// The fields `--with` adds to every line: a JSON object that does not set the chunk's field.
fn extra_fields(field: &str, with: Option<&str>) -> Result<Map<String, Value>, String> {
    if field.is_empty() {
        return Err("--field must not be empty".into());
    }
    let Some(with) = with else { return Ok(Map::new()) };
    let map = match serde_json::from_str::<Value>(with) {
        Ok(Value::Object(map)) => map,
        Ok(other) => return Err(format!("--with must be a JSON object, like '{{\"counts\": true}}', not {}", kind(&other))),
        Err(e) => return Err(format!("--with is not valid JSON: {e}")),
    };
    if map.contains_key(field) {
        return Err(format!("--with sets {field:?}, the field that holds each chunk (--field)"));
    }
    Ok(map)
}

/// What a JSON value is, for a message (the value itself may be long or span lines).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The file can be opened and is not a folder.
fn check_readable(path: &Path) -> anyhow::Result<()> {
    let cannot = || format!("cannot read {}", path.display());
    let file = std::fs::File::open(path).with_context(cannot)?;
    if file.metadata().with_context(cannot)?.is_dir() {
        anyhow::bail!("cannot read {}: it is a folder", path.display());
    }
    Ok(())
}

/// One output line: the chunk under its field first, then the `--with` fields (written directly,
/// so that a chunk of megabytes is not copied into a JSON value first).
struct Line<'a> {
    field: &'a str,
    text: &'a str,
    with: &'a Map<String, Value>,
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1 + self.with.len()))?;
        map.serialize_entry(self.field, self.text)?;
        for (k, v) in self.with {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The chunks of `text`, in order; together they are exactly `text`.
///
/// Each chunk ends just after a whitespace character or at the end of the text, and is the
/// longest such piece of at most `size` bytes. When no whitespace comes early enough, the chunk is
/// the one word (with the whitespace character after it) that is longer than `size`: cutting a
/// word would make two words of it for whatever task counts them.
pub(crate) fn chunks(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, tail) = rest.split_at(first_cut(rest, size));
        rest = tail;
        Some(chunk)
    })
}

/// Where the first chunk of a non-empty `text` ends.
fn first_cut(text: &str, size: usize) -> usize {
    if text.len() <= size {
        return text.len();
    }
    // Every character before `window` ends within the size.
    let window = text.floor_char_boundary(size);
    let after_whitespace = |(i, c): (usize, char)| c.is_whitespace().then(|| i + c.len_utf8());
    if let Some(cut) = text[..window].char_indices().rev().find_map(after_whitespace) {
        return cut;
    }
    text[window..].char_indices().find_map(after_whitespace).map_or(text.len(), |cut| window + cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(text: &str, size: usize) -> Vec<&str> {
        chunks(text, size).collect()
    }

    #[test]
    fn cuts_after_whitespace_as_late_as_the_size_allows() {
        assert_eq!(split("hello world foo", 6), ["hello ", "world ", "foo"]);
        assert_eq!(split("hello world foo", 12), ["hello world ", "foo"]);
        assert_eq!(split("a b c d e", 4), ["a b ", "c d ", "e"]);
        assert_eq!(split("a\n\nb\tc", 3), ["a\n\n", "b\tc"]);
        assert_eq!(split("ends with space ", 100), ["ends with space "]);
    }

    #[test]
    fn a_word_longer_than_the_size_is_a_chunk_of_its_own() {
        assert_eq!(split("a verylongword b", 4), ["a ", "verylongword ", "b"]);
        assert_eq!(split("verylongword", 4), ["verylongword"]);
        assert_eq!(split("abcd efg", 4), ["abcd ", "efg"]);
    }

    #[test]
    fn never_splits_a_character() {
        // "é" is 2 bytes, "東" 3, U+3000 (ideographic space) 3.
        assert_eq!(split("éé é", 3), ["éé ", "é"]);
        assert_eq!(split("東\u{3000}東", 5), ["東\u{3000}", "東"]);
        assert_eq!(split("東\u{3000}東", 1), ["東\u{3000}", "東"]);
    }

    #[test]
    fn empty_text_has_no_chunks() {
        assert!(split("", 10).is_empty());
    }

    #[test]
    fn extra_fields_must_be_an_object_without_the_chunk_field() {
        assert_eq!(extra_fields("text", None).unwrap(), Map::new());
        assert_eq!(extra_fields("text", Some(r#"{"counts": true}"#)).unwrap().get("counts"), Some(&Value::Bool(true)));
        assert!(extra_fields("text", Some("[1,\n2]")).unwrap_err().ends_with("must be a JSON object, like '{\"counts\": true}', not an array"));
        assert!(extra_fields("text", Some("\"x\"")).unwrap_err().ends_with("not a string"));
        assert!(extra_fields("text", Some("{")).unwrap_err().contains("not valid JSON"));
        assert!(extra_fields("text", Some(r#"{"text": 1}"#)).unwrap_err().contains("the field that holds each chunk"));
        assert!(extra_fields("body", Some(r#"{"text": 1}"#)).is_ok());
        assert!(extra_fields("", None).is_err());
    }

    #[test]
    fn a_line_has_the_chunk_first_then_the_extra_fields() {
        let with = extra_fields("body", Some(r#"{"counts": true, "top": 3}"#)).unwrap();
        let line = serde_json::to_string(&Line { field: "body", text: "a \"b\"\n", with: &with }).unwrap();
        assert_eq!(line, r#"{"body":"a \"b\"\n","counts":true,"top":3}"#);
    }

    #[test]
    fn chunk_sizes_parse_like_other_sizes() {
        assert_eq!(chunk_size("1MiB"), Ok(1 << 20));
        assert_eq!(chunk_size("100"), Ok(100));
        assert!(chunk_size("0").is_err());
        assert!(chunk_size("lots").is_err());
    }

    /// Text as bytes made of pieces that stress the cuts: words, several kinds of whitespace
    /// (one byte, two, three), multi-byte letters and bytes that are not UTF-8.
    fn corpus() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"a"[..]),
            Just(&b"word"[..]),
            Just(&b"longerword"[..]),
            Just("\u{e9}".as_bytes()),
            Just("\u{6771}".as_bytes()),
            Just(&b" "[..]),
            Just(&b"\n"[..]),
            Just(&b"\t"[..]),
            Just("\u{a0}".as_bytes()),
            Just("\u{3000}".as_bytes()),
            Just(&b"\xff"[..]),
            Just(&b"\xe6\x9d"[..]),
        ];
        prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn chunks_give_back_the_text_cut_only_at_whitespace(bytes in corpus(), size in 1usize..24) {
            let text = String::from_utf8_lossy(&bytes);
            let parts = split(&text, size);
            prop_assert_eq!(parts.concat(), text.as_ref());
            for (i, chunk) in parts.iter().enumerate() {
                prop_assert!(!chunk.is_empty());
                let last = i + 1 == parts.len();
                // Cut only after whitespace, or at the end of the text.
                prop_assert!(last || chunk.ends_with(char::is_whitespace), "chunk {} {:?} does not end with whitespace", i, chunk);
                // Over the size only as one word: no whitespace but (at most) its last character.
                let body = chunk.strip_suffix(|c: char| c.is_whitespace()).unwrap_or(chunk);
                prop_assert!(chunk.len() <= size || !body.contains(char::is_whitespace), "chunk {} {:?} is over {} bytes", i, chunk, size);
                // As long as allowed: the next cut point would have been over the size.
                if !last && chunk.len() <= size {
                    let next = parts[i + 1];
                    let next_cut = next.char_indices().find(|(_, c)| c.is_whitespace()).map_or(next.len(), |(j, c)| j + c.len_utf8());
                    prop_assert!(chunk.len() + next_cut > size, "chunk {} {:?} could have taken {:?}", i, chunk, &next[..next_cut]);
                }
            }
        }
    }
}
