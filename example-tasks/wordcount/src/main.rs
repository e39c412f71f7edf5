//! wordcount: word frequencies of a text, for log and text analysis.
//!
//! Input `{"text": "...", "top": 10, "counts": false}`, output
//! `{"total_words": N, "distinct_words": N, "top": [{"word": "the", "count": 12}, ...]}`, plus
//! `"counts": {"the": 12, ...}` with every word when `counts` is true. The word rules and the
//! output type live in the library (src/lib.rs), which merge-counts shares. See README.md for the
//! exact word rules.

use serde::Deserialize;
use wordcount::{DEFAULT_TOP, Output, count_words};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    text: String,
    /// How many of the most frequent words to list; 0 lists none.
    #[serde(default = "default_top")]
    top: usize,
    /// Also output every word with its count: what a reducer (merge-counts) needs to combine the
    /// counts of many chunks exactly, which `top` alone cannot give.
    #[serde(default)]
    counts: bool,
}

fn default_top() -> usize {
    DEFAULT_TOP
}

#[wasmq_sdk::task]
fn wordcount(input: Input) -> Output {
    Output::summarize(count_words(&input.text), input.top, input.counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, top: usize) -> Output {
        wordcount(Input { text: text.to_owned(), top, counts: false })
    }

    fn run_with_counts(text: &str, top: usize) -> Output {
        wordcount(Input { text: text.to_owned(), top, counts: true })
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
        assert_eq!(run(" \n\t-- ", 5), Output { total_words: 0, distinct_words: 0, top: vec![], counts: None });
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
        assert!(!input.counts);
        let err = serde_json::from_str::<Input>(r#"{"txt": "a b"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `txt`"), "{err}");
    }

    #[test]
    fn counts_lists_every_word_and_keeps_the_summary() {
        let text = "b a c b a c d Don’t don't";
        let with = run_with_counts(text, 2);
        let without = run(text, 2);
        let counts = with.counts.as_ref().expect("counts asked for");
        let listed: Vec<(&str, u64)> = counts.iter().map(|(w, n)| (w.as_str(), *n)).collect();
        assert_eq!(listed, [("a", 2), ("b", 2), ("c", 2), ("d", 1), ("don't", 2)]);
        // Everything else is what it is without counts.
        assert_eq!((with.total_words, with.distinct_words, &with.top), (without.total_words, without.distinct_words, &without.top));
        assert_eq!(counts.values().sum::<u64>(), with.total_words);
        assert_eq!(counts.len() as u64, with.distinct_words);
    }

    #[test]
    fn counts_are_not_limited_by_top() {
        let out = run_with_counts("one two two three three three", 0);
        assert!(out.top.is_empty());
        assert_eq!(out.counts.map(|c| c.len()), Some(3));
        assert_eq!(run_with_counts("", 10).counts, Some(Default::default()));
    }

    #[test]
    fn counts_field_is_in_the_json_only_when_asked_for() {
        let input: Input = serde_json::from_str(r#"{"text": "to be or not to be", "top": 1, "counts": true}"#).unwrap();
        let json = serde_json::to_string(&wordcount(input)).unwrap();
        assert_eq!(json, r#"{"total_words":6,"distinct_words":4,"top":[{"word":"be","count":2}],"counts":{"be":2,"not":1,"or":1,"to":2}}"#);
        for input in [r#"{"text": "to be"}"#, r#"{"text": "to be", "counts": false}"#] {
            let json = serde_json::to_string(&wordcount(serde_json::from_str(input).unwrap())).unwrap();
            assert!(!json.contains("counts"), "{input}: {json}");
        }
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
