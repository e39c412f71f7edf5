//! Text that others wrote (a task's log, output and errors; names and fields read from Redis) on
//! its way to an operator's terminal.
//!
//! A terminal acts on control characters: a task that writes `ESC [2J` clears the screen,
//! `ESC ]0;…BEL` sets the window title, a carriage return or a newline lets it overwrite or forge
//! lines of a `wasmq status` view, and a right-to-left override makes text read differently from
//! what it is. Every human-readable view passes such text through [`escape_control`], which
//! writes those characters as visible escapes instead. Byte-exact outputs (`wasmq result`) and
//! JSON outputs do not: they are not read by a terminal's eye.

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every character a terminal may act on written as a visible escape: C0 controls and
/// DEL (`\x1b`, `\x07`; `\r`, `\t` and `\n` by name), C1 controls U+0080 to U+009F and the
/// bidirectional embeddings, overrides and isolates U+202A to U+202E and U+2066 to U+2069
/// (`\u{202e}`). Everything else is left as it is, backslashes included.
///
/// `keep_newlines` keeps `\n` as a line break, for multi-line text (a log preview) whose lines the
/// caller lays out itself; in a single-line field a newline is escaped too, so that it cannot
/// start a line of its own.
///
/// Borrows when there is nothing to escape, which is the usual case.
pub fn escape_control(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| needs_escape(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            _ if !needs_escape(c, keep_newlines) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\x1f' | '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char, keep_newlines: bool) -> bool {
    match c {
        '\n' => !keep_newlines,
        '\0'..='\x1f' | '\x7f'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_become_visible_escapes() {
        for (raw, shown) in [
            ("\x1b[2J\x1b[H", r"\x1b[2J\x1b[H"),
            ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
            ("50%\r100%", r"50%\r100%"),
            ("a\tb", r"a\tb"),
            ("x\x08\x7f\0", r"x\x08\x7f\x00"),
            ("\u{9b}2J \u{85}", r"\u{9b}2J \u{85}"),
            ("\u{202e}txt.exe \u{202a}\u{2066}\u{2069}", r"\u{202e}txt.exe \u{202a}\u{2066}\u{2069}"),
            ("line\nstate    succeeded", r"line\nstate    succeeded"),
        ] {
            assert_eq!(escape_control(raw, false), shown, "{raw:?}");
        }
    }

    #[test]
    fn newlines_stay_only_when_asked_to() {
        assert_eq!(escape_control("one\ntwo\r\n\x1b[31mthree", true), "one\ntwo\\r\n\\x1b[31mthree");
        assert_eq!(escape_control("one\ntwo", false), "one\\ntwo");
    }

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["", "plain text", "ünïcödé — 日本語 🦀", r"C:\path\x1b stays as typed", "\u{a0}\u{200b}\u{2028}"] {
            assert!(matches!(escape_control(s, false), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn nothing_a_terminal_acts_on_survives(s in "\\PC*|[\\x00-\\x{a0}\\x{2028}-\\x{206f}]{0,40}") {
            let single = escape_control(&s, false);
            proptest::prop_assert!(!single.chars().any(|c| needs_escape(c, false)), "{:?}", single);
            let multi = escape_control(&s, true);
            proptest::prop_assert!(!multi.chars().any(|c| needs_escape(c, true)), "{:?}", multi);
            proptest::prop_assert_eq!(multi.matches('\n').count(), s.matches('\n').count());
        }
    }
}
