//! merge-counts: the reducer of a word count split into chunks.
//!
//! Input: a JSON array of wordcount outputs made with `"counts": true`, outputs of merge-counts
//! itself, or `null`s. Output: one output of the same shape for all of them, `{"total_words": N,
//! "distinct_words": N, "top": [...], "counts": {...}}`, which is what wordcount gives for the
//! whole text when the chunks were cut between words. Because the output is also a valid input,
//! reducers can run over reducers (a reduction tree). See README.md.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use wordcount::{DEFAULT_TOP, Output};

/// The word counts of every element of the input array, added up while the array is decoded:
/// besides the sum, only one element's counts are held at a time, not the whole array, which
/// matters for a reducer whose input is many large outputs.
#[derive(Debug, Default)]
struct Input {
    counts: HashMap<String, u64>,
    /// The sum of all counts, kept to refuse counts whose sum does not fit in a `u64` (then no
    /// single word's sum overflows either, since each is at most the total).
    total: u64,
}

/// One element of the array. Only `counts` is read: the totals and the top list follow from it,
/// and recomputing them keeps the output consistent whatever the other fields say.
#[derive(Deserialize)]
struct Part {
    // Optional here so that a missing `counts` gets a message that says how to get it.
    #[serde(default)]
    counts: Option<HashMap<String, u64>>,
}

impl Input {
    fn add(&mut self, counts: HashMap<String, u64>) -> Result<(), &'static str> {
        for (word, n) in counts {
            // A word counted zero times did not occur: it must not count as distinct.
            if n == 0 {
                continue;
            }
            self.total = self.total.checked_add(n).ok_or("the counts add up to more than 2^64 - 1")?;
            *self.counts.entry(word).or_insert(0) += n;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(MergeVisitor)
    }
}

struct MergeVisitor;

impl<'de> Visitor<'de> for MergeVisitor {
    type Value = Input;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of wordcount or merge-counts outputs (with `counts`) or nulls")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
        let mut merged = Input::default();
        let mut index = 0usize;
        // `null` is a missing part (e.g. a failed chunk that the flow chose to ignore): skipped.
        while let Some(part) = seq.next_element::<Option<Part>>()? {
            if let Some(part) = part {
                let counts =
                    part.counts.ok_or_else(|| de::Error::custom(format_args!("element {index} has no `counts` (run wordcount with \"counts\": true)")))?;
                merged.add(counts).map_err(de::Error::custom)?;
            }
            index += 1;
        }
        Ok(merged)
    }
}

#[wasmq_sdk::task]
fn merge_counts(input: Input) -> Output {
    // `top` as long as wordcount's default, so that a merge lists what one count would.
    Output::summarize(input.counts, DEFAULT_TOP, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// wordcount's output for `text`, with counts, as JSON (what merge-counts gets as input).
    fn wordcount(text: &str) -> Value {
        serde_json::to_value(Output::summarize(wordcount::count_words(text), DEFAULT_TOP, true)).unwrap()
    }

    fn merge(parts: Value) -> Output {
        merge_counts(serde_json::from_value(parts).expect("valid input"))
    }

    fn merge_json(parts: Value) -> Value {
        serde_json::to_value(merge(parts)).unwrap()
    }

    fn decode_error(input: &str) -> String {
        serde_json::from_str::<Input>(input).map(|_| ()).expect_err(input).to_string()
    }

    const A: &str = "The cat saw the dog. Don't stop, don’t! Straße 東京 42";
    const B: &str = "the DOG saw a cat; a cat saw the dog and ran. STRASSE straße";
    const C: &str = "z y x w v u t s r q p o n m l k j i h g f e d c b a the the";

    #[test]
    fn merging_two_counts_equals_counting_the_concatenated_text() {
        let merged = merge(json!([wordcount(A), wordcount(B)]));
        let whole = Output::summarize(wordcount::count_words(&format!("{A}\n{B}")), DEFAULT_TOP, true);
        assert_eq!(merged, whole);
        assert_eq!(merged.total_words, 25);
        // The ties at count 2 are listed by word, as wordcount lists them.
        let top: Vec<(&str, u64)> = merged.top.iter().map(|w| (w.word.as_str(), w.count)).collect();
        assert_eq!(&top[..4], [("the", 4), ("cat", 3), ("dog", 3), ("saw", 3)]);
    }

    #[test]
    fn top_is_the_ten_most_frequent_with_ties_by_word() {
        let merged = merge(json!([wordcount(C), wordcount(C)]));
        assert_eq!(merged.distinct_words, 27);
        let words: Vec<&str> = merged.top.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(words, ["the", "a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        assert_eq!(merged.top[0].count, 4);
        assert_eq!(merged, Output::summarize(wordcount::count_words(&format!("{C} {C}")), DEFAULT_TOP, true));
    }

    #[test]
    fn merging_is_associative_so_reducers_can_reduce_reducers() {
        let (a, b, c) = (wordcount(A), wordcount(B), wordcount(C));
        let flat = merge_json(json!([a, b, c]));
        let left = merge_json(json!([merge_json(json!([a, b])), c]));
        let right = merge_json(json!([a, merge_json(json!([b, c]))]));
        assert_eq!(left, flat);
        assert_eq!(right, flat);
        // The same bytes, too: `counts` is ordered by word.
        assert_eq!(left.to_string(), flat.to_string());
    }

    #[test]
    fn nulls_are_skipped() {
        let a = wordcount(A);
        assert_eq!(merge_json(json!([null, a, null])), merge_json(json!([a])));
        assert_eq!(merge_json(json!([a])), a, "one part merges to itself");
        let empty = merge(json!([null]));
        assert_eq!(empty, merge(json!([])));
        assert_eq!(serde_json::to_string(&empty).unwrap(), r#"{"total_words":0,"distinct_words":0,"top":[],"counts":{}}"#);
    }

    #[test]
    fn only_counts_are_read_and_zero_counts_are_not_words() {
        let out = merge(json!([{"counts": {"a": 2, "b": 0}, "total_words": 99, "top": []}, {"counts": {"a": 1, "c": 1}}]));
        assert_eq!((out.total_words, out.distinct_words), (4, 2));
        assert_eq!(serde_json::to_value(out.counts).unwrap(), json!({"a": 3, "c": 1}));
    }

    #[test]
    fn bad_inputs_are_invalid_input() {
        assert!(decode_error(r#"{"counts": {"a": 1}}"#).contains("expected an array of wordcount or merge-counts outputs"));
        assert!(decode_error(r#""text""#).contains("expected an array"));
        let no_counts = serde_json::to_string(&json!([wordcount(A), {"total_words": 1, "distinct_words": 1, "top": []}])).unwrap();
        assert!(decode_error(&no_counts).contains("element 1 has no `counts` (run wordcount with \"counts\": true)"), "{}", decode_error(&no_counts));
        assert!(decode_error(r#"[null, {"counts": null}]"#).contains("element 1 has no `counts`"));
        assert!(decode_error(r#"["plain text"]"#).contains("invalid type: string"));
        assert!(decode_error(r#"[{"counts": {"a": -1}}]"#).contains("invalid value"));
        assert!(decode_error(r#"[{"counts": {"a": 1.5}}]"#).contains("invalid type"));
    }

    #[test]
    fn counts_whose_sum_overflows_are_refused() {
        let big = u64::MAX / 2 + 1;
        let input = json!([{"counts": {"a": big}}, {"counts": {"b": big}}]).to_string();
        assert!(decode_error(&input).contains("more than 2^64 - 1"), "{}", decode_error(&input));
        // Up to the limit is fine.
        let out = merge(json!([{"counts": {"a": big - 1}}, {"counts": {"a": big}}]));
        assert_eq!(out.total_words, u64::MAX);
    }

    #[test]
    fn sample_input_runs() {
        let input: Input = serde_json::from_str(include_str!("../sample-input.json")).unwrap();
        let out = merge_counts(input);
        assert_eq!(out.counts.as_ref().map(|c| c.values().sum::<u64>()), Some(out.total_words));
        assert!(out.total_words > 10, "{out:?}");
        assert!(out.top.windows(2).all(|w| w[0].count >= w[1].count));
    }
}
