//! split-count: a word count that decides its own fan-out. It cuts its text between words into
//! chunks of about `chunk_bytes`, counts the first chunk itself, and spawns a `wordcount` child
//! (host API `spawn`) for each other chunk. A `merge-counts` task enqueued `--after` it with
//! `--input-from-after` waits for the children too and gets `[own counts, child 1, child 2, ...]`:
//! the counts of the whole text.
//!
//! Input: `{"text": "...", "chunk_bytes": 65536, "module": "wordcount"}`. Output: wordcount's
//! output for the first chunk, with `"counts"` (what merge-counts needs).
//!
//! ```text
//! wasmq push split-count.wasm --name split-count
//! id=$(wasmq enqueue split-count --input-file big.json)
//! wasmq enqueue merge-counts --after "$id" --input-from-after
//! ```

use serde::Deserialize;
use wordcount::{DEFAULT_TOP, Output, count_words};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    text: String,
    #[serde(default = "default_chunk")]
    chunk_bytes: usize,
    /// The module each other chunk runs as (its input: `{"text": ..., "counts": true}`).
    #[serde(default = "default_module")]
    module: String,
}

fn default_chunk() -> usize {
    64 << 10
}

fn default_module() -> String {
    "wordcount".into()
}

/// Cuts `text` into chunks of at most about `size` bytes, each ending after whitespace, so that no
/// word is cut in two (a word longer than `size` makes a longer chunk).
fn chunks(text: &str, size: usize) -> Vec<&str> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > size {
        let mut cut = size;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        // Back to the last whitespace before the cut, or on to the next one after it.
        let cut = match rest[..cut].rfind(char::is_whitespace) {
            Some(i) if i > 0 => i + rest[i..].chars().next().map_or(1, char::len_utf8),
            _ => rest[cut..].find(char::is_whitespace).map_or(rest.len(), |i| cut + i + 1),
        };
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest);
    }
    out
}

#[wasmq_sdk::task]
fn split_count(input: Input) -> Output {
    let parts = chunks(&input.text, input.chunk_bytes);
    let others = parts.len() - 1;
    for (i, part) in parts.iter().enumerate().skip(1) {
        let child = serde_json::json!({"text": part, "counts": true}).to_string();
        if let Err(why) = wasmq_sdk::spawn(&input.module, child.as_bytes(), &wasmq_sdk::SpawnOptions::default()) {
            // Without every chunk the total would be wrong: fail, and spawn nothing.
            wasmq_sdk::fail(&format!("could not spawn chunk {i} of {}: {why}", parts.len()));
        }
        wasmq_sdk::progress(i as f32 / parts.len() as f32, &format!("spawned {i} of {others} children"));
    }
    let out = Output::summarize(count_words(parts[0]), DEFAULT_TOP, true);
    wasmq_sdk::progress(1.0, &format!("counted chunk 1, spawned {others}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_between_words_and_keep_every_byte() {
        let text = "alpha beta  gamma\ndelta épsilon zeta";
        for size in 1..40 {
            let parts = chunks(text, size);
            assert_eq!(parts.concat(), text, "size {size}");
            for p in &parts[..parts.len() - 1] {
                assert!(p.ends_with(char::is_whitespace), "{p:?} at size {size}");
            }
            let whole: u64 = count_words(text).values().sum();
            let split: u64 = parts.iter().map(|p| count_words(p).values().sum::<u64>()).sum();
            assert_eq!(whole, split, "size {size}");
        }
        assert_eq!(chunks("", 10), vec![""]);
    }
}
