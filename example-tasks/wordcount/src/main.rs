//! wordcount: word frequencies of a text, for log and text analysis.
//!
//! Input `{"text": "...", "top": 10}`, output
//! `{"total_words": N, "distinct_words": N, "top": [{"word": "the", "count": 12}, ...]}`.
//! See README.md for the exact word rules.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// How many words `top` lists when the input does not say.
const DEFAULT_TOP: usize = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    text: String,
    /// How many of the most frequent words to list; 0 lists none.
    #[serde(default = "default_top")]
    top: usize,
}

fn default_top() -> usize {
    DEFAULT_TOP
}

#[derive(Debug, PartialEq, Serialize)]
struct Output {
    total_words: u64,
    distinct_words: u64,
    top: Vec<WordCount>,
}

#[derive(Debug, PartialEq, Serialize)]
struct WordCount {
    word: String,
    count: u64,
}

#[wasmq_sdk::task]
fn wordcount(input: Input) -> Output {
    let counts = count_words(&input.text);
    let total_words = counts.values().sum();
    let distinct_words = counts.len() as u64;
    Output { total_words, distinct_words, top: most_frequent(counts, input.top) }
}

/// Counts lowercased words.
///
/// A word is a run of alphanumeric characters (Unicode-aware); an apostrophe (`'` or
/// `’`) between two alphanumerics stays part of the word, so "don't" is one word, while
/// quotes around a word ('this') are not. `’` is stored as `'` so both spellings count
/// as the same word.
fn count_words(text: &str) -> HashMap<String, u64> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    // One reused buffer: the map allocates a key only for a word's first occurrence.
    let mut word = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            continue;
        }
        let inner_apostrophe = matches!(c, '\'' | '\u{2019}') && !word.is_empty() && chars.peek().is_some_and(|next| next.is_alphanumeric());
        if inner_apostrophe {
            word.push('\'');
        } else if !word.is_empty() {
            add(&mut counts, &word);
            word.clear();
        }
    }
    if !word.is_empty() {
        add(&mut counts, &word);
    }
    counts
}

fn add(counts: &mut HashMap<String, u64>, word: &str) {
    match counts.get_mut(word) {
        Some(n) => *n += 1,
        None => {
            counts.insert(word.to_owned(), 1);
        }
    }
}

/// The `n` most frequent words, by count descending, then word ascending.
fn most_frequent(counts: HashMap<String, u64>, n: usize) -> Vec<WordCount> {
    let mut all: Vec<WordCount> = counts.into_iter().map(|(word, count)| WordCount { word, count }).collect();
    let order = |a: &WordCount, b: &WordCount| -> Ordering { b.count.cmp(&a.count).then_with(|| a.word.cmp(&b.word)) };
    // With many distinct words and a small `n`, selecting first avoids sorting them all.
    if n < all.len() {
        if n == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by(n - 1, order);
        all.truncate(n);
    }
    all.sort_unstable_by(order);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, top: usize) -> Output {
        wordcount(Input { text: text.to_owned(), top })
    }

    fn pairs(out: &Output) -> Vec<(&str, u64)> {
        out.top.iter().map(|w| (w.word.as_str(), w.count)).collect()
    }

    #[test]
    fn counts_lowercased_words() {
        let out = run("The cat saw the dog. THE END", 10);
        assert_eq!(out.total_words, 7);
        assert_eq!(out.distinct_words, 5);
        assert_eq!(pairs(&out), [("the", 3), ("cat", 1), ("dog", 1), ("end", 1), ("saw", 1)]);
    }

    #[test]
    fn splits_on_punctuation_and_keeps_inner_apostrophes() {
        let counts = count_words("don't stop—can’t 'quoted' it's-fine rock'n'roll o' x'");
        let mut words: Vec<_> = counts.keys().map(String::as_str).collect();
        words.sort();
        assert_eq!(words, ["can't", "don't", "fine", "it's", "o", "quoted", "rock'n'roll", "stop", "x"]);
    }

    #[test]
    fn is_unicode_aware() {
        let out = run("Straße STRASSE straße Ünïcode ünïcode 東京 東京 42 x86_64", 10);
        assert_eq!(pairs(&out), [("straße", 2), ("ünïcode", 2), ("東京", 2), ("42", 1), ("64", 1), ("strasse", 1), ("x86", 1)]);
    }

    #[test]
    fn ties_break_alphabetically_and_top_limits() {
        let out = run("b a c b a c d", 2);
        assert_eq!(pairs(&out), [("a", 2), ("b", 2)]);
        assert_eq!(out.distinct_words, 4);
    }

    #[test]
    fn top_zero_is_empty_but_counts_remain() {
        let out = run("one two two", 0);
        assert!(out.top.is_empty());
        assert_eq!((out.total_words, out.distinct_words), (3, 2));
    }

    #[test]
    fn empty_text_has_no_words() {
        assert_eq!(run(" \n\t-- ", 5), Output { total_words: 0, distinct_words: 0, top: vec![] });
    }

    #[test]
    fn large_input_selects_correct_top() {
        // 5000 distinct words where word i occurs (i % 7) + 1 times.
        let mut text = String::new();
        for i in 0..5000u64 {
            for _ in 0..(i % 7) + 1 {
                text.push_str(&format!("w{i} "));
            }
        }
        let out = run(&text, 3);
        assert_eq!(out.distinct_words, 5000);
        assert_eq!(pairs(&out), [("w1000", 7), ("w1007", 7), ("w1014", 7)]);
    }

    #[test]
    fn input_defaults_top_and_rejects_unknown_fields() {
        let input: Input = serde_json::from_str(r#"{"text": "a b"}"#).unwrap();
        assert_eq!(input.top, DEFAULT_TOP);
        let err = serde_json::from_str::<Input>(r#"{"txt": "a b"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `txt`"), "{err}");
    }

    #[test]
    fn sample_input_runs() {
        let input: Input = serde_json::from_str(include_str!("../sample-input.json")).unwrap();
        let out = wordcount(input);
        assert!(out.total_words > 100, "{out:?}");
        assert_eq!(out.top.len(), 10);
        assert!(out.top.windows(2).all(|w| w[0].count >= w[1].count));
    }
}
