//! The word rules and the output of `wordcount`, as a library so that `merge-counts` reports
//! merged counts with the same type and the same ordering: a count split into chunks and merged
//! must give exactly what one count over the whole text gives.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// How many words `top` lists when the input does not say.
pub const DEFAULT_TOP: usize = 10;

/// What wordcount (and merge-counts) output.
#[derive(Debug, PartialEq, Serialize)]
pub struct Output {
    pub total_words: u64,
    pub distinct_words: u64,
    pub top: Vec<WordCount>,
    /// Every word with its count, when asked for: what merge-counts adds up. Ordered by word, so
    /// that the same counts always give the same bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<String, u64>>,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct WordCount {
    pub word: String,
    pub count: u64,
}

impl Output {
    /// The summary of word counts: how many words, how many distinct ones, the `top` most
    /// frequent and, with `keep_counts`, all of them.
    ///
    /// The counts must add up to at most `u64::MAX`: true of the words of any text, and
    /// merge-counts checks its sums before calling this.
    pub fn summarize(counts: HashMap<String, u64>, top: usize, keep_counts: bool) -> Output {
        let total_words = counts.values().sum();
        let distinct_words = counts.len() as u64;
        let top = most_frequent(&counts, top);
        let counts = keep_counts.then(|| counts.into_iter().collect());
        Output { total_words, distinct_words, top, counts }
    }
}

/// Counts lowercased words.
///
/// A word is a run of alphanumeric characters (Unicode-aware); an apostrophe (`'` or
/// `’`) between two alphanumerics stays part of the word, so "don't" is one word, while
/// quotes around a word ('this') are not. `’` is stored as `'` so both spellings count
/// as the same word.
pub fn count_words(text: &str) -> HashMap<String, u64> {
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

/// The order of `top`: count descending, then word ascending (by code point), so that ties
/// are listed the same way whatever order the words were counted in.
pub fn by_frequency(a: (&str, u64), b: (&str, u64)) -> Ordering {
    b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0))
}

/// The `n` most frequent words, in [`by_frequency`] order.
pub fn most_frequent(counts: &HashMap<String, u64>, n: usize) -> Vec<WordCount> {
    if n == 0 {
        return Vec::new();
    }
    // Borrowed entries: only the `n` words listed are copied.
    let mut all: Vec<(&str, u64)> = counts.iter().map(|(word, count)| (word.as_str(), *count)).collect();
    let order = |a: &(&str, u64), b: &(&str, u64)| by_frequency(*a, *b);
    // With many distinct words and a small `n`, selecting first avoids sorting them all.
    if n < all.len() {
        all.select_nth_unstable_by(n - 1, order);
        all.truncate(n);
    }
    all.sort_unstable_by(order);
    all.into_iter().map(|(word, count)| WordCount { word: word.to_owned(), count }).collect()
}
