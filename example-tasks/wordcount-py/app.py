"""wordcount in Python: word frequencies of a text, with the same input, output and word rules
as the Rust example (example-tasks/wordcount), built into a WASI preview-2 component by
componentize-py (see README.md).

Input on stdin: {"text": "...", "top": 10, "counts": false}. Output on stdout:
{"total_words":N,"distinct_words":N,"top":[{"word":"the","count":12},...]} plus
"counts":{"the":12,...} (every word, ordered by word) when "counts" is true.
Invalid input: one line on stderr and exit status 2 (a permanent failure for wasmq).
"""

import heapq
import json
import re
import sys

from wit_world import exports
from wit_world.imports.exit import exit_with_code

DEFAULT_TOP = 10
# The Rust task's `top` is a usize of wasm32.
MAX_TOP = 2**32 - 1
EXIT_INVALID_INPUT = 2
APOSTROPHES = ("'", "\u2019")
# serde_json's limit. The json module recurses for each level, and deep nesting would overflow
# the task's stack (512 KiB by default) before Python's own recursion limit stops it.
MAX_DEPTH = 128
JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
BRACKET = re.compile(r"[\[\]{}]")


class InvalidInput(Exception):
    pass


def count_words(text):
    """Word counts of a text: lowercased runs of alphanumerics (str.isalnum); an apostrophe
    (' or ’) between two alphanumerics stays in the word, stored as '."""
    counts = {}
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
            word.clear()
    if word:
        w = "".join(word)
        counts[w] = counts.get(w, 0) + 1
    return counts


def by_frequency(entry):
    """Count descending, then word ascending (Python compares strings by code point)."""
    return (-entry[1], entry[0])


def wordcount(text, top, keep_counts):
    counts = count_words(text)
    best = heapq.nsmallest(top, counts.items(), key=by_frequency) if top else []
    # Written by hand to match serde_json's compact output, field for field.
    out = ['{"total_words":%d,"distinct_words":%d,"top":[' % (sum(counts.values()), len(counts))]
    out.append(",".join('{"word":%s,"count":%d}' % (dumps(w), c) for w, c in best))
    out.append("]")
    if keep_counts:
        out.append(',"counts":{')
        out.append(",".join("%s:%d" % (dumps(w), counts[w]) for w in sorted(counts)))
        out.append("}")
    out.append("}\n")
    return "".join(out)


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
            message = " ".join(str(e).split())
            write_all(sys.stderr.buffer, ("invalid input: %s\n" % message).encode("utf-8", "replace"))
            exit_with_code(EXIT_INVALID_INPUT)
            return
        write_all(sys.stdout.buffer, wordcount(text, top, keep_counts).encode("utf-8"))
