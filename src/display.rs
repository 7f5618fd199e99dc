//! Text from peers and the disk made safe for a terminal.
//!
//! Names, error messages and notes that reach a person's terminal may come
//! from another peer or from the file system, so they may hold control
//! characters: an escape sequence could retitle the terminal, clear the
//! screen or draw a fake prompt, and a newline in a name would look like a
//! second table row. [`escape`] shows every such character as visible text,
//! as `ls` and `git` do:
//!
//! - C0 controls: `\t`, `\n`, `\r`, `\e` (ESC) by name, the rest as `\xNN`
//!   (`\x00`, `\x07`);
//! - DEL as `\x7f`;
//! - C1 controls (U+0080..U+009F) as `\u{80}`..`\u{9f}`.
//!
//! A backslash stays as it is, so a regular expression or a Windows-style
//! name reads as written; the price is that a name spelled with a literal
//! `\e` looks like one holding ESC (JSON output, which is exact, tells them
//! apart). Escaping twice changes nothing more than escaping once.
//!
//! Only text output escapes: JSON output carries strings exactly (serde_json
//! escapes control characters itself).

use std::borrow::Cow;
use std::fmt::Write;

/// Whether a character must not reach a terminal as it is.
fn is_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// Whether `s` holds a character that [`escape`] would change.
pub fn has_control(s: &str) -> bool {
    s.chars().any(is_control)
}

/// `s` with every control character shown as visible text (see the module
/// doc); borrowed when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !has_control(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            '\u{0}'..='\u{1f}' | '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{80}'..='\u{9f}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A byte count for people: `512 B`, `1.5 KiB`, `12.0 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_as_is() {
        for s in ["", "a.txt", "my file.md", r"a\b", "naïve 日本", "\u{a0}x"] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }

    #[test]
    fn control_characters_become_visible() {
        assert_eq!(escape("a\nb"), r"a\nb");
        assert_eq!(escape("a\tb\r"), r"a\tb\r");
        assert_eq!(
            escape("x\u{1b}]2;PWNED\u{7}\u{1b}[2J"),
            r"x\e]2;PWNED\x07\e[2J"
        );
        assert_eq!(escape("\u{0}\u{1}\u{1f}\u{7f}"), r"\x00\x01\x1f\x7f");
        assert_eq!(escape("\u{80}\u{9b}31m\u{9f}"), r"\u{80}\u{9b}31m\u{9f}");
        // Neighbours of the ranges are printable and stay.
        assert_eq!(escape(" ~\u{a0}é\n"), " ~\u{a0}é\\n");
    }

    #[test]
    fn the_output_holds_no_control_character_and_escaping_twice_is_once() {
        let hostile: String = (0u32..0x200).filter_map(char::from_u32).collect();
        let once = escape(&hostile).into_owned();
        assert!(!once.chars().any(is_control), "{once:?}");
        assert_eq!(escape(&once), once);
    }
}
