"""wordcount in Python: word frequencies of a text, with the same input, output and word rules
as the Rust example (example-tasks/wordcount), built into a WASI preview-2 component by
componentize-py against wasmq's world `wasmq:task/task` (the repository's wit/ folder; see
README.md).

Input on stdin: {"text": "...", "top": 10, "counts": false}. Output on stdout:
{"total_words":N,"distinct_words":N,"top":[{"word":"the","count":12},...]} plus
"counts":{"the":12,...} (every word, ordered by word) when "counts" is true.
Progress, through the host API: every PROGRESS_STEP characters of text while counting, and a
last report "N words, M distinct". Invalid input: the host API's `fail`, a permanent failure
(never retried: the same input would fail the same way).
"""

import heapq
import json
import re
import sys

from wit_world import exports
from wit_world.imports.host import fail, progress

DEFAULT_TOP = 10
# The Rust task's `top` is a usize of wasm32.
MAX_TOP = 2**32 - 1
# How many characters of text to count between two progress reports. A report is cheap (the
# worker keeps the latest and writes it once a second), but not free.
PROGRESS_STEP = 1 << 16
# The share of the work that counting is (then sorting and writing the output).
COUNTING_SHARE = 0.9
APOSTROPHES = ("'", "\u2019")
# serde_json's limit. The json module recurses for each level, and deep nesting would overflow
# the task's stack (512 KiB by default) before Python's own recursion limit stops it.
MAX_DEPTH = 128
JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
BRACKET = re.compile(r"[\[\]{}]")
# Where the text may be cut into pieces counted one at a time: no word, and no apostrophe that
# joins two parts of one, spans a whitespace character.
WHITESPACE = re.compile(r"\s")


class InvalidInput(Exception):
    pass


def count_words(text):
    """Word counts of a text, reporting progress every PROGRESS_STEP characters or so: the text
    is counted in pieces cut at whitespace, so that the loop over characters stays as it is."""
    counts = {}
    words = 0
    n = len(text)
    start = 0
    while start < n:
        end = start + PROGRESS_STEP
        cut = WHITESPACE.search(text, end) if end < n else None
        end = cut.start() if cut else n
        words += count_piece(text[start:end], counts)
        start = end
        if start < n:
            progress(COUNTING_SHARE * start / n, "%d words so far" % words)
    return counts


def count_piece(text, counts):
    """Adds the word counts of a text to counts: lowercased runs of alphanumerics (str.isalnum);
    an apostrophe (' or ’) between two alphanumerics stays in the word, stored as '. Returns how
    many words it added."""
    words = 0
    word = []
    n = len(text)
    for i, c in enumerate(text):
        if c.isalnum():
            # One character at a time, as Rust's char::to_lowercase: no context rule (a final Σ
            # is σ).
            word.append(c.lower())
        elif c in APOSTROPHES and word and i + 1 < n and text[i + 1].isalnum():
            word.append("'")
        elif word:
            w = "".join(word)
            counts[w] = counts.get(w, 0) + 1
            words += 1
            word.clear()
    if word:
        w = "".join(word)
        counts[w] = counts.get(w, 0) + 1
        words += 1
    return words


def by_frequency(entry):
    """Count descending, then word ascending (Python compares strings by code point)."""
    return (-entry[1], entry[0])


def wordcount(text, top, keep_counts):
    """The output, and the last progress message."""
    counts = count_words(text)
    best = heapq.nsmallest(top, counts.items(), key=by_frequency) if top else []
    # Written by hand to match serde_json's compact output, field for field.
    total = sum(counts.values())
    out = ['{"total_words":%d,"distinct_words":%d,"top":[' % (total, len(counts))]
    out.append(",".join('{"word":%s,"count":%d}' % (dumps(w), c) for w, c in best))
    out.append("]")
    if keep_counts:
        out.append(',"counts":{')
        out.append(",".join("%s:%d" % (dumps(w), counts[w]) for w in sorted(counts)))
        out.append("}")
    out.append("}\n")
    return "".join(out), "%d words, %d distinct" % (total, len(counts))


def dumps(s):
    return json.dumps(s, ensure_ascii=False)


def no_duplicates(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidInput("duplicate field `%s`" % key)
        seen[key] = value
    return seen


def no_constant(name):
    raise InvalidInput("expected JSON: %s is not JSON" % name)


def too_deep(source):
    """Whether the JSON text nests arrays and objects more than MAX_DEPTH deep."""
    depth = 0
    for bracket in BRACKET.findall(JSON_STRING.sub("", source)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            return True
    return False


def parse_input(data):
    """The input as the Rust task accepts it: a JSON object with a string `text`, optionally an
    integer `top` (0 to 2^32-1) and a boolean `counts`, and no other field."""
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the input is not UTF-8") from None
    if too_deep(source):
        raise InvalidInput("expected JSON: nested more than %d levels deep" % MAX_DEPTH)
    try:
        value = json.loads(source, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except ValueError as e:
        raise InvalidInput("expected JSON: %s" % e) from None
    if not isinstance(value, dict):
        raise InvalidInput('expected a JSON object with a "text" field')
    for key in value:
        if key not in ("text", "top", "counts"):
            raise InvalidInput("unknown field `%s`, expected one of `text`, `top`, `counts`" % key)
    if "text" not in value:
        raise InvalidInput("missing field `text`")
    text = value["text"]
    top = value.get("top", DEFAULT_TOP)
    keep_counts = value.get("counts", False)
    if not isinstance(text, str):
        raise InvalidInput("`text` must be a string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("`text` has a lone surrogate escape") from None
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP:
        raise InvalidInput("`top` must be an integer from 0 to %d" % MAX_TOP)
    if not isinstance(keep_counts, bool):
        raise InvalidInput("`counts` must be true or false")
    return text, top, keep_counts


def write_all(stream, data):
    """Writes all of data: the standard streams of the component are unbuffered (raw) files, whose
    write may take only part of it (one WASI write: at most 64 KiB under wasmq)."""
    view = memoryview(data)
    while view:
        view = view[stream.write(view) or 0 :]


class Run(exports.Run):
    def run(self) -> None:
        try:
            text, top, keep_counts = parse_input(sys.stdin.buffer.read())
        except InvalidInput as e:
            # Does not return: the task ends here, as a permanent failure with this message.
            # (A string crossing into the host must be valid Unicode: a lone surrogate from a
            # \ud800 escape in a field name becomes U+FFFD.)
            message = " ".join(str(e).split()).encode("utf-8", "replace").decode("utf-8")
            fail("invalid input: %s" % message)
            raise
        output, summary = wordcount(text, top, keep_counts)
        write_all(sys.stdout.buffer, output.encode("utf-8"))
        progress(1.0, summary)
