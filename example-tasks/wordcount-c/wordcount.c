/*
 * wordcount in C: word frequencies of a text, with the same input, output and word rules as the
 * Rust example (example-tasks/wordcount), built into a WASI preview-1 core module by `zig cc`
 * (see README.md).
 *
 * Input on stdin: {"text": "...", "top": 10, "counts": false}. Output on stdout:
 * {"total_words":N,"distinct_words":N,"top":[{"word":"the","count":12},...]} plus
 * "counts":{"the":12,...} (every word, ordered by word) when "counts" is true.
 * Progress, through the host API (sdk/include/wasmq.h): every PROGRESS_STEP bytes of text while
 * counting, and a last report "N words, M distinct". Invalid input: one line on stderr and exit
 * status 2 (WASMQ_EXIT_PERMANENT: a permanent failure, never retried); out of memory: exit
 * status 1.
 *
 * Which code points are alphanumeric and how they lowercase come from unicode_tables.h, generated
 * from Rust's char::is_alphanumeric and char::to_lowercase: the word rules are exactly Rust's.
 */

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"
#include "wasmq.h"

#define DEFAULT_TOP 10u
#define EXIT_INVALID_INPUT WASMQ_EXIT_PERMANENT
/* How many bytes of text to count between two progress reports. A report is cheap (the worker
 * keeps the latest and writes it once a second), but not free. */
#define PROGRESS_STEP ((size_t)1 << 16)
/* The share of the work that counting is (then sorting and writing the output). */
#define COUNTING_SHARE 0.9f

/* ---- failures ---------------------------------------------------------------------------- */

__attribute__((format(printf, 1, 2))) _Noreturn static void invalid_input(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fputs("invalid input: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    exit(EXIT_INVALID_INPUT);
}

static void *checked(void *p) {
    if (!p) {
        fputs("out of memory\n", stderr);
        exit(1);
    }
    return p;
}

/* ---- a growable byte buffer -------------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
} buf;

static void buf_reserve(buf *b, size_t more) {
    if (b->len + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + more) cap *= 2;
    b->data = checked(realloc(b->data, cap));
    b->cap = cap;
}

static void buf_push(buf *b, const char *s, size_t n) {
    buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void buf_putc(buf *b, char c) { buf_push(b, &c, 1); }

static void buf_puts(buf *b, const char *s) { buf_push(b, s, strlen(s)); }

static void buf_putu64(buf *b, uint64_t n) {
    char tmp[24];
    int len = snprintf(tmp, sizeof tmp, "%" PRIu64, n);
    buf_push(b, tmp, (size_t)len);
}

/* Appends code point cp as UTF-8. */
static void buf_put_utf8(buf *b, uint32_t cp) {
    char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (char)(0xc0 | cp >> 6);
        s[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (char)(0xe0 | cp >> 12);
        s[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        s[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        s[0] = (char)(0xf0 | cp >> 18);
        s[1] = (char)(0x80 | (cp >> 12 & 0x3f));
        s[2] = (char)(0x80 | (cp >> 6 & 0x3f));
        s[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_push(b, s, n);
}

/* Decodes the UTF-8 code point at s[*i] (s[0..len) must be valid UTF-8) and moves *i past it. */
static uint32_t next_code_point(const unsigned char *s, size_t len, size_t *i) {
    uint32_t c = s[(*i)++];
    if (c < 0x80) return c;
    int more = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : 1;
    c &= 0x3f >> more;
    while (more-- > 0 && *i < len) c = c << 6 | (s[(*i)++] & 0x3f);
    return c;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_sequence(const unsigned char *s, size_t n) {
    if (s[0] < 0x80) return 1;
    size_t len;
    uint32_t cp, min;
    if ((s[0] & 0xe0) == 0xc0) len = 2, cp = s[0] & 0x1f, min = 0x80;
    else if ((s[0] & 0xf0) == 0xe0) len = 3, cp = s[0] & 0x0f, min = 0x800;
    else if ((s[0] & 0xf8) == 0xf0) len = 4, cp = s[0] & 0x07, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

/* ---- the word rules ---------------------------------------------------------------------- */

static bool is_alphanumeric(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z');
    size_t lo = 0, hi = sizeof ALNUM_RANGES / sizeof ALNUM_RANGES[0];
    while (lo < hi) { /* the first range that starts after cp */
        size_t mid = (lo + hi) / 2;
        if (ALNUM_RANGES[mid][0] <= cp) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && cp < ALNUM_RANGES[lo - 1][1];
}

/* Appends the lowercase of cp, as Rust's char::to_lowercase. */
static void put_lowercase(buf *word, uint32_t cp) {
    if (cp < 0x80) {
        buf_putc(word, (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
        return;
    }
    if (cp == 0x130) { /* İ: i and a combining dot above */
        buf_putc(word, 'i');
        buf_put_utf8(word, 0x307);
        return;
    }
    size_t lo = 0, hi = sizeof LOWERCASE_RUNS / sizeof LOWERCASE_RUNS[0];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (LOWERCASE_RUNS[mid].first <= cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo > 0) {
        const struct lowercase_run *run = &LOWERCASE_RUNS[lo - 1];
        uint32_t offset = cp - run->first;
        if (offset % run->stride == 0 && offset / run->stride < run->count) cp = (uint32_t)((int32_t)cp + run->delta);
    }
    buf_put_utf8(word, cp);
}

/* ---- word counts: an open-addressing hash table ------------------------------------------ */

typedef struct {
    char *word; /* NULL: an empty slot */
    size_t len;
    uint64_t count;
} entry;

typedef struct {
    entry *slots;
    size_t cap, size;
    uint64_t total;
} table;

static uint64_t hash(const char *s, size_t n) { /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3u;
    return h;
}

static void table_grow(table *t) {
    size_t cap = t->cap ? t->cap * 2 : 1024;
    entry *slots = checked(calloc(cap, sizeof *slots));
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->slots[i].word) continue;
        size_t j = hash(t->slots[i].word, t->slots[i].len) & (cap - 1);
        while (slots[j].word) j = (j + 1) & (cap - 1);
        slots[j] = t->slots[i];
    }
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
}

static void table_add(table *t, const char *word, size_t len) {
    if ((t->size + 1) * 10 > t->cap * 7) table_grow(t);
    size_t i = hash(word, len) & (t->cap - 1);
    while (t->slots[i].word) {
        if (t->slots[i].len == len && memcmp(t->slots[i].word, word, len) == 0) {
            t->slots[i].count++;
            t->total++;
            return;
        }
        i = (i + 1) & (t->cap - 1);
    }
    t->slots[i].word = checked(malloc(len ? len : 1));
    memcpy(t->slots[i].word, word, len);
    t->slots[i].len = len;
    t->slots[i].count = 1;
    t->size++;
    t->total++;
}

/* Reports progress: a fraction and a message (printf-style) through the host API. */
__attribute__((format(printf, 2, 3))) static void report(float fraction, const char *format, ...) {
    char message[128];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(message, sizeof message, format, args);
    va_end(args);
    if (n < 0) return;
    wasmq_progress(fraction, message, (size_t)n < sizeof message ? (size_t)n : sizeof message - 1);
}

/* Counts the lowercased words of text (valid UTF-8): runs of alphanumerics; an apostrophe (' or
 * U+2019) between two alphanumerics stays in the word, stored as '. Reports progress every
 * PROGRESS_STEP bytes (asked once per word, not per character). */
static void count_words(table *t, const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    buf word = {0};
    size_t i = 0, next_report = PROGRESS_STEP;
    while (i < len) {
        uint32_t c = next_code_point(s, len, &i);
        if (is_alphanumeric(c)) {
            put_lowercase(&word, c);
            continue;
        }
        size_t after = i;
        if ((c == '\'' || c == 0x2019) && word.len > 0 && i < len && is_alphanumeric(next_code_point(s, len, &after))) {
            buf_putc(&word, '\'');
        } else if (word.len > 0) {
            table_add(t, word.data, word.len);
            word.len = 0;
            if (i >= next_report) {
                report(COUNTING_SHARE * (float)i / (float)len, "%" PRIu64 " words so far", t->total);
                next_report = i + PROGRESS_STEP;
            }
        }
    }
    if (word.len > 0) table_add(t, word.data, word.len);
    free(word.data);
}

/* ---- output ------------------------------------------------------------------------------ */

/* Words compared by bytes: UTF-8 orders as code points do. */
static int by_word(const void *a, const void *b) {
    const entry *x = a, *y = b;
    int c = memcmp(x->word, y->word, x->len < y->len ? x->len : y->len);
    if (c != 0) return c;
    return (x->len > y->len) - (x->len < y->len);
}

/* Count descending, then word ascending. */
static int by_frequency(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return by_word(a, b);
}

/* A JSON string as serde_json writes it. */
static void put_json_string(buf *out, const char *s, size_t n) {
    buf_putc(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf_putc(out, '\\');
            buf_putc(out, (char)c);
        } else if (c < 0x20) {
            char tmp[8];
            const char *short_escape = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
            if (!short_escape) snprintf(tmp, sizeof tmp, "\\u%04x", c);
            buf_puts(out, short_escape ? short_escape : tmp);
        } else {
            buf_putc(out, (char)c);
        }
    }
    buf_putc(out, '"');
}

/* ---- input: the JSON object the Rust task accepts ------------------------------------------ */

typedef struct {
    const unsigned char *s;
    size_t len, pos;
} parser;

static void skip_whitespace(parser *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' || p->s[p->pos] == '\r')) p->pos++;
}

static void expect(parser *p, char c, const char *what) {
    skip_whitespace(p);
    if (p->pos >= p->len || p->s[p->pos] != (unsigned char)c) invalid_input("expected JSON: %s at byte %zu", what, p->pos);
    p->pos++;
}

static uint32_t hex4(parser *p) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++, p->pos++) {
        if (p->pos >= p->len) invalid_input("expected JSON: unterminated string");
        unsigned char c = p->s[p->pos];
        uint32_t d = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : 16;
        if (d == 16) invalid_input("expected JSON: invalid \\u escape at byte %zu", p->pos);
        v = v << 4 | d;
    }
    return v;
}

/* A JSON string, decoded into out (UTF-8). */
static void parse_string(parser *p, buf *out) {
    expect(p, '"', "a string");
    for (;;) {
        if (p->pos >= p->len) invalid_input("expected JSON: unterminated string");
        unsigned char c = p->s[p->pos];
        if (c == '"') {
            p->pos++;
            return;
        }
        if (c < 0x20) invalid_input("expected JSON: control character in a string at byte %zu", p->pos);
        if (c < 0x80 && c != '\\') { /* a run of plain ASCII, copied at once */
            size_t end = p->pos + 1;
            while (end < p->len && p->s[end] >= 0x20 && p->s[end] < 0x80 && p->s[end] != '"' && p->s[end] != '\\') end++;
            buf_push(out, (const char *)p->s + p->pos, end - p->pos);
            p->pos = end;
            continue;
        }
        if (c != '\\') {
            size_t n = utf8_sequence(p->s + p->pos, p->len - p->pos);
            if (n == 0) invalid_input("the input is not UTF-8 (at byte %zu)", p->pos);
            buf_push(out, (const char *)p->s + p->pos, n);
            p->pos += n;
            continue;
        }
        if (++p->pos >= p->len) invalid_input("expected JSON: unterminated string");
        c = p->s[p->pos++];
        switch (c) {
        case '"': case '\\': case '/': buf_putc(out, (char)c); break;
        case 'b': buf_putc(out, '\b'); break;
        case 'f': buf_putc(out, '\f'); break;
        case 'n': buf_putc(out, '\n'); break;
        case 'r': buf_putc(out, '\r'); break;
        case 't': buf_putc(out, '\t'); break;
        case 'u': {
            uint32_t cp = hex4(p);
            if (cp >= 0xdc00 && cp <= 0xdfff) invalid_input("a lone surrogate escape in a string");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p->pos + 2 > p->len || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') invalid_input("a lone surrogate escape in a string");
                p->pos += 2;
                uint32_t low = hex4(p);
                if (low < 0xdc00 || low > 0xdfff) invalid_input("a lone surrogate escape in a string");
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            buf_put_utf8(out, cp);
            break;
        }
        default: invalid_input("expected JSON: invalid escape at byte %zu", p->pos - 1);
        }
    }
}

/* `top`: an integer from 0 to 2^32-1 (the Rust task's usize on wasm32). */
static uint32_t parse_top(parser *p) {
    skip_whitespace(p);
    size_t start = p->pos;
    uint64_t v = 0;
    bool digits = false, too_big = false;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
        v = v * 10 + (p->s[p->pos++] - '0');
        if (v > 0xffffffffu) too_big = true, v = 0xffffffffu + 1ull;
        digits = true;
    }
    bool integer = digits && !(p->s[start] == '0' && p->pos - start > 1);
    bool number_follows = p->pos < p->len && (p->s[p->pos] == '.' || p->s[p->pos] == 'e' || p->s[p->pos] == 'E');
    if (!integer || number_follows || too_big) invalid_input("`top` must be an integer from 0 to 4294967295");
    return (uint32_t)v;
}

static bool parse_bool(parser *p) {
    skip_whitespace(p);
    if (p->len - p->pos >= 4 && memcmp(p->s + p->pos, "true", 4) == 0) return p->pos += 4, true;
    if (p->len - p->pos >= 5 && memcmp(p->s + p->pos, "false", 5) == 0) return p->pos += 5, false;
    invalid_input("`counts` must be true or false");
    return false;
}

static bool is_key(const buf *key, const char *name) { return key->len == strlen(name) && memcmp(key->data, name, key->len) == 0; }

static void parse_input(const unsigned char *s, size_t len, buf *text, uint32_t *top, bool *counts) {
    parser p = {s, len, 0};
    bool has_text = false, has_top = false, has_counts = false;
    *top = DEFAULT_TOP;
    *counts = false;
    skip_whitespace(&p);
    if (p.pos >= p.len || p.s[p.pos] != '{') invalid_input("expected a JSON object with a \"text\" field");
    p.pos++;
    skip_whitespace(&p);
    if (p.pos < p.len && p.s[p.pos] == '}') {
        p.pos++;
    } else {
        for (;;) {
            buf key = {0};
            parse_string(&p, &key);
            expect(&p, ':', "':' after a key");
            bool *seen;
            if (is_key(&key, "text")) {
                seen = &has_text;
                skip_whitespace(&p);
                if (p.pos >= p.len || p.s[p.pos] != '"') invalid_input("`text` must be a string");
                if (has_text) invalid_input("duplicate field `text`");
                parse_string(&p, text);
            } else if (is_key(&key, "top")) {
                seen = &has_top;
                if (has_top) invalid_input("duplicate field `top`");
                *top = parse_top(&p);
            } else if (is_key(&key, "counts")) {
                seen = &has_counts;
                if (has_counts) invalid_input("duplicate field `counts`");
                *counts = parse_bool(&p);
            } else {
                invalid_input("unknown field `%.*s`, expected one of `text`, `top`, `counts`", (int)(key.len > 100 ? 100 : key.len), key.data ? key.data : "");
                return;
            }
            *seen = true;
            free(key.data);
            skip_whitespace(&p);
            if (p.pos < p.len && p.s[p.pos] == ',') {
                p.pos++;
                continue;
            }
            expect(&p, '}', "',' or '}' after a field");
            break;
        }
    }
    skip_whitespace(&p);
    if (p.pos != p.len) invalid_input("expected JSON: trailing characters at byte %zu", p.pos);
    if (!has_text) invalid_input("missing field `text`");
}

/* ---- the task ---------------------------------------------------------------------------- */

int main(void) {
    buf input = {0};
    for (;;) {
        buf_reserve(&input, 4096);
        size_t n = fread(input.data + input.len, 1, input.cap - input.len, stdin);
        input.len += n;
        if (n == 0) break;
    }
    if (ferror(stdin)) {
        fputs("cannot read stdin\n", stderr);
        return 1;
    }

    buf text = {0};
    uint32_t top;
    bool keep_counts;
    parse_input((const unsigned char *)input.data, input.len, &text, &top, &keep_counts);

    table t = {0};
    count_words(&t, text.data ? text.data : "", text.len);

    entry *all = checked(malloc((t.size ? t.size : 1) * sizeof *all));
    size_t n = 0;
    for (size_t i = 0; i < t.cap; i++)
        if (t.slots[i].word) all[n++] = t.slots[i];

    buf out = {0};
    buf_puts(&out, "{\"total_words\":");
    buf_putu64(&out, t.total);
    buf_puts(&out, ",\"distinct_words\":");
    buf_putu64(&out, t.size);
    buf_puts(&out, ",\"top\":[");
    qsort(all, n, sizeof *all, by_frequency);
    for (size_t i = 0; i < n && i < top; i++) {
        if (i) buf_putc(&out, ',');
        buf_puts(&out, "{\"word\":");
        put_json_string(&out, all[i].word, all[i].len);
        buf_puts(&out, ",\"count\":");
        buf_putu64(&out, all[i].count);
        buf_putc(&out, '}');
    }
    buf_putc(&out, ']');
    if (keep_counts) {
        qsort(all, n, sizeof *all, by_word);
        buf_puts(&out, ",\"counts\":{");
        for (size_t i = 0; i < n; i++) {
            if (i) buf_putc(&out, ',');
            put_json_string(&out, all[i].word, all[i].len);
            buf_putc(&out, ':');
            buf_putu64(&out, all[i].count);
        }
        buf_putc(&out, '}');
    }
    buf_puts(&out, "}\n");
    if (fwrite(out.data, 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
        fputs("cannot write stdout\n", stderr);
        return 1;
    }
    report(1.0f, "%" PRIu64 " words, %zu distinct", t.total, t.size);
    return 0;
}
