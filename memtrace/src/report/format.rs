//! Numbers, names and lines as people read them: sizes in binary units,
//! function names without their generic clutter, and lines fitted to a
//! terminal's width at word boundaries.

use std::{borrow::Cow, fmt};

/// Bytes in binary units: `512 B`, `4.0 KiB`, `1.5 GiB`.
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// A signed change in bytes: `+32.0 MiB`, `-4.0 KiB`, `±0 B`.
pub struct Delta(pub i64);

impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.signum() {
            0 => f.write_str("±0 B"),
            1 => write!(f, "+{}", Bytes(self.0.unsigned_abs())),
            _ => write!(f, "-{}", Bytes(self.0.unsigned_abs())),
        }
    }
}

/// A stretch of time, as people say it ahead: `under a minute`,
/// `12 min`, `3 h 20 min`, `2 days`.
pub struct Span(pub std::time::Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let minutes = self.0.as_secs() / 60;
        match minutes {
            0 => f.write_str("under a minute"),
            1..60 => write!(f, "{minutes} min"),
            60..2880 => match minutes % 60 {
                0 => write!(f, "{} h", minutes / 60),
                rest => write!(f, "{} h {rest} min", minutes / 60),
            },
            _ => write!(f, "{} days", minutes / 1440),
        }
    }
}

/// A count with thousands separators: `1,048,576`.
pub struct Count(pub u64);

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        f.write_str(&out)
    }
}

/// `part` as a percentage of `whole`.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// "1 call", "2 calls".
pub fn plural(count: u64, one: &str, many: &str) -> String {
    format!("{} {}", Count(count), if count == 1 { one } else { many })
}

/// What joins a stack's frames, innermost first.
pub const FRAME_SEPARATOR: &str = " ← ";
/// Marks text left out.
pub const ELLIPSIS: char = '…';

/// A function name as people scan it, shortened the way pprof and perf do:
/// Rust's `::h0123…` hash, generic arguments (`<…>`, Go's `[…]`) and C++
/// parameter lists dropped. Only the text report and the screen use it; the
/// JSON and the profiles keep the full names.
pub fn short_name(name: &str) -> Cow<'_, str> {
    // Labels such as `[resident before attach: /usr/lib/libc.so.6]` and
    // `module+0x1234` are not function names.
    if name.starts_with('[') || name.contains("+0x") {
        return Cow::Borrowed(name);
    }
    let mut short = strip_rust_hash(name);
    if let Some(stripped) = strip_cpp_parameters(short) {
        short = stripped;
    }
    match strip_generics(short) {
        Some(stripped) if !stripped.is_empty() => Cow::Owned(stripped),
        _ if short.len() != name.len() => Cow::Owned(short.to_owned()),
        _ => Cow::Borrowed(name),
    }
}

/// `foo::bar::h0123456789abcdef` → `foo::bar`.
fn strip_rust_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((path, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            path
        }
        _ => name,
    }
}

/// `ns::f(int, char const*) const` → `ns::f`; Go's `main.(*T).m` is left
/// alone (its parentheses are not at the end).
fn strip_cpp_parameters(name: &str) -> Option<&str> {
    let mut end = name.trim_end();
    for qualifier in [" const", " volatile", " noexcept", " &&", " &"] {
        end = end.strip_suffix(qualifier).unwrap_or(end);
    }
    if !end.ends_with(')') {
        return None;
    }
    let mut depth = 0usize;
    for (at, c) in end.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    let before = &end[..at];
                    let named = before
                        .chars()
                        .last()
                        .is_some_and(|c| !c.is_whitespace() && c != '.' && c != '(');
                    return named.then_some(before);
                }
            }
            _ => {}
        }
    }
    None
}

/// Drops generic arguments: `Vec<u8>::push` → `Vec::push`, turbofish
/// `f::<T>` → `f`, Go's `Map[go.shape.int].Get` → `Map[...].Get`; the
/// brackets of a qualified path (`<T as Trait>::f`) stay, with the generics
/// inside them dropped. `None` when the brackets do not balance (a C++
/// `operator<`, say), and the name is kept as it is.
fn strip_generics(name: &str) -> Option<String> {
    if !name.contains(['<', '[']) || name.contains("operator") {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    // Per open bracket: whether it is kept (a qualified path's).
    let mut open: Vec<bool> = Vec::new();
    let mut skipping = 0usize;
    for c in name.chars() {
        match c {
            '<' => {
                if skipping > 0 {
                    skipping += 1;
                    open.push(false);
                } else if out.is_empty() || out.ends_with('<') {
                    out.push(c);
                    open.push(true);
                } else {
                    if out.ends_with("::") {
                        out.truncate(out.len() - 2);
                    }
                    skipping = 1;
                    open.push(false);
                }
            }
            '>' => match open.pop()? {
                true => out.push(c),
                false => skipping -= 1,
            },
            '[' if skipping == 0 => {
                out.push_str("[...");
                skipping = 1;
                open.push(false);
            }
            ']' => {
                if open.pop()? {
                    return None;
                }
                skipping -= 1;
                if skipping == 0 {
                    out.push(']');
                }
            }
            '[' => {
                skipping += 1;
                open.push(false);
            }
            _ if skipping == 0 => out.push(c),
            _ => {}
        }
    }
    open.is_empty().then_some(out)
}

/// Characters a terminal gives `text` (memtrace writes no wide characters).
pub fn width_of(text: &str) -> usize {
    text.chars().count()
}

/// `text` cut to `width` characters, ending in `…` when cut.
pub fn cut(text: &str, width: usize) -> Cow<'_, str> {
    if width_of(text) <= width {
        return Cow::Borrowed(text);
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push(ELLIPSIS);
    }
    Cow::Owned(out)
}

/// A stack as `f ← g ← h ← …`, innermost first, names shortened: at most
/// `frames_shown` frames, and with a `width` only as many as fit in it
/// whole: the innermost frames are what tells most, so the outer ones go
/// first.
pub fn stack_text(frames: &[String], frames_shown: usize, width: Option<usize>) -> String {
    let names: Vec<Cow<'_, str>> = frames
        .iter()
        .take(frames_shown)
        .map(|frame| short_name(frame))
        .collect();
    let mut line = String::new();
    for (index, name) in names.iter().enumerate() {
        let separator = if index == 0 { "" } else { FRAME_SEPARATOR };
        let rest_left_out = index + 1 < frames.len();
        // Room for this frame, and for the mark that more follow.
        let needed = width_of(&line)
            + width_of(separator)
            + width_of(name)
            + if rest_left_out {
                width_of(FRAME_SEPARATOR) + 1
            } else {
                0
            };
        if index > 0 && width.is_some_and(|width| needed > width) {
            line.push_str(FRAME_SEPARATOR);
            line.push(ELLIPSIS);
            return fit(line, width);
        }
        line.push_str(separator);
        line.push_str(name);
    }
    if frames.len() > names.len() {
        line.push_str(FRAME_SEPARATOR);
        line.push(ELLIPSIS);
    }
    fit(line, width)
}

fn fit(line: String, width: Option<usize>) -> String {
    match width {
        Some(width) => cut(&line, width).into_owned(),
        None => line,
    }
}

/// The words of `line`, a size kept with its unit (`8.1 MiB`), so a line
/// never ends in a number whose unit starts the next.
fn tokens(line: &str) -> Vec<String> {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut tokens: Vec<String> = Vec::new();
    for word in line.split(' ') {
        let unit = word.trim_end_matches(|c: char| c.is_ascii_punctuation());
        let after_number = tokens.last().is_some_and(|last| {
            last.trim_start_matches(['+', '-', '('])
                .starts_with(|c: char| c.is_ascii_digit())
        });
        match tokens.last_mut() {
            Some(last) if UNITS.contains(&unit) && after_number => {
                last.push(' ');
                last.push_str(word);
            }
            _ => tokens.push(word.to_owned()),
        }
    }
    tokens
}

/// `text` broken into lines of at most `width` characters at spaces, never
/// inside a word or between a size and its unit; lines after the first
/// start with `indent`. A word longer
/// than a whole line is cut with `…`. Without a width, `text` as it is.
pub fn wrap(text: &str, width: Option<usize>, indent: &str) -> String {
    let Some(width) = width else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len() + 16);
    for (number, source_line) in text.lines().enumerate() {
        if number > 0 {
            out.push('\n');
        }
        // A line's own indent stays, and is not a word.
        let words = source_line.trim_start_matches(' ');
        let own_indent = &source_line[..source_line.len() - words.len()];
        let mut line = own_indent.to_owned();
        let mut line_width = width_of(own_indent);
        let mut first = true;
        for word in tokens(words) {
            let word = word.as_str();
            let word_width = width_of(word);
            if !first && line_width + 1 + word_width > width {
                out.push_str(line.trim_end());
                out.push('\n');
                line = indent.to_owned();
                line_width = width_of(indent);
            } else if !first {
                line.push(' ');
                line_width += 1;
            }
            first = false;
            let room = width.saturating_sub(line_width).max(1);
            line.push_str(&cut(word, room));
            line_width += word_width.min(room);
        }
        out.push_str(line.trim_end());
    }
    if text.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_read_as_said() {
        use std::time::Duration;
        let said = |secs: u64| super::Span(Duration::from_secs(secs)).to_string();
        assert_eq!(said(59), "under a minute");
        assert_eq!(said(60 * 12 + 30), "12 min");
        assert_eq!(said(3600 * 3 + 60 * 20), "3 h 20 min");
        assert_eq!(said(7200), "2 h");
        assert_eq!(said(86400 * 2 + 5), "2 days");
    }

    use super::*;

    #[test]
    fn names_are_shortened_the_way_pprof_does() {
        let cases = [
            (
                "core::ptr::drop_in_place<alloc::vec::Vec<u8>>::h0123456789abcdef",
                "core::ptr::drop_in_place",
            ),
            (
                "<alloc::vec::Vec<T,A> as core::ops::drop::Drop>::drop",
                "<alloc::vec::Vec as core::ops::drop::Drop>::drop",
            ),
            ("iter::collect::<Vec<u8>>", "iter::collect"),
            (
                "std::vector<int, std::allocator<int> >::push_back(int const&)",
                "std::vector::push_back",
            ),
            ("ns::f(int) const", "ns::f"),
            ("main.Map[go.shape.int].Get", "main.Map[...].Get"),
            ("runtime.(*mheap).alloc", "runtime.(*mheap).alloc"),
            ("memtrace::demo::touch", "memtrace::demo::touch"),
            (
                "[resident before attach: /usr/lib/libc.so.6]",
                "[resident before attach: /usr/lib/libc.so.6]",
            ),
            ("libfoo.so+0x1234", "libfoo.so+0x1234"),
            ("operator<<(std::ostream&)", "operator<<"),
            ("broken<name", "broken<name"),
        ];
        for (name, short) in cases {
            assert_eq!(short_name(name), short, "{name}");
        }
    }

    #[test]
    fn stacks_keep_their_innermost_frames_when_cut() {
        let frames: Vec<String> = ["touch", "workload", "main", "start"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            stack_text(&frames, 6, None),
            "touch ← workload ← main ← start"
        );
        assert_eq!(stack_text(&frames, 2, None), "touch ← workload ← …");
        assert_eq!(stack_text(&frames, 6, Some(20)), "touch ← workload ← …");
        assert_eq!(stack_text(&frames, 6, Some(12)), "touch ← …");
        assert_eq!(stack_text(&frames, 6, Some(4)), "tou…");
        for width in 1..40 {
            assert!(width_of(&stack_text(&frames, 6, Some(width))) <= width);
        }
    }

    #[test]
    fn lines_wrap_between_words() {
        let text = "RSS 43.7 MiB anon 40.3 MiB status says 7.0 MiB";
        let wrapped = wrap(text, Some(20), "    ");
        assert_eq!(
            wrapped,
            "RSS 43.7 MiB anon\n    40.3 MiB status\n    says 7.0 MiB"
        );
        for line in wrapped.lines() {
            assert!(width_of(line) <= 20, "{line}");
        }
        // Every word is kept whole and in order.
        assert_eq!(
            wrapped.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
        assert_eq!(wrap(text, None, "  "), text);
        assert_eq!(wrap("a verylongword", Some(6), ""), "a\nveryl…");
        assert_eq!(
            wrap("Verdict: one two\n  three four", Some(12), "  "),
            "Verdict: one\n  two\n  three four"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(32 << 20).to_string(), "32.0 MiB");
        assert_eq!(Bytes(1536 << 20).to_string(), "1.5 GiB");
        assert_eq!(Delta(-4096).to_string(), "-4.0 KiB");
        assert_eq!(Delta(0).to_string(), "±0 B");
        assert_eq!(Count(1_048_576).to_string(), "1,048,576");
        assert_eq!(Count(999).to_string(), "999");
        assert_eq!(plural(1, "call", "calls"), "1 call");
    }
}
