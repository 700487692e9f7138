//! How `netrecord show` prints one record's payload: as escaped text, or as a hex
//! dump whose offsets count the bytes of that side's stream.
//!
//! Text keeps every byte visible and nothing else: printable characters (ASCII
//! and, in valid UTF-8, other visible characters) are shown as themselves; `\r`,
//! `\n`, `\t` and `\\` as those escapes, and every other byte as `\xNN`. The line
//! is broken after each `\n`, so text protocols read naturally, and since the
//! escapes are unambiguous the exact bytes can always be read back from the output.
//! Nothing a recorded peer sent can reach the terminal as a control sequence.

use std::io::{self, Write};

use anstyle::Style;

/// The styles a payload is painted with; all plain when colour is off, and then
/// no escape codes at all are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Paint {
    /// Bytes shown as themselves, and the hex digits of a dump.
    pub text: Style,
    /// Escapes (`\r`, `\x00`, ...) and the offsets of a dump.
    pub escape: Style,
}

/// Writes `payload` as escaped text lines, each starting with `prefix`. The last
/// line is ended even if the payload does not end with `\n` (the missing `\n`
/// escape shows that it did not).
pub fn write_text(out: &mut impl Write, payload: &[u8], prefix: &str, paint: Paint) -> io::Result<()> {
    let mut line = Line {
        out,
        prefix,
        open: false,
        style: None,
    };
    for chunk in payload.utf8_chunks() {
        let valid = chunk.valid();
        let mut run_start = 0;
        for (i, c) in valid.char_indices() {
            if shown(c) {
                continue;
            }
            line.put(paint.text, &valid.as_bytes()[run_start..i])?;
            let mut bytes = [0u8; 4];
            line.put_escaped(paint.escape, c.encode_utf8(&mut bytes).as_bytes())?;
            if c == '\n' {
                line.end()?;
            }
            run_start = i + c.len_utf8();
        }
        line.put(paint.text, &valid.as_bytes()[run_start..])?;
        line.put_escaped(paint.escape, chunk.invalid())?;
    }
    if line.open {
        line.end()?;
    }
    Ok(())
}

/// One output line being written: its prefix goes first, and a style is switched
/// only when it changes and reset before the newline (so a pager that shows lines
/// on their own, like `less -R`, shows them right).
struct Line<'a, W> {
    out: &'a mut W,
    prefix: &'a str,
    open: bool,
    style: Option<Style>,
}

impl<W: Write> Line<'_, W> {
    /// Writes `bytes` as they are, in `style`.
    fn put(&mut self, style: Style, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.switch(style)?;
        self.out.write_all(bytes)
    }

    /// Writes each byte as its escape (`\r`, `\n`, `\t`, `\\`, or `\xNN`), in `style`.
    fn put_escaped(&mut self, style: Style, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.switch(style)?;
        for &b in bytes {
            match b {
                b'\r' => self.out.write_all(b"\\r")?,
                b'\n' => self.out.write_all(b"\\n")?,
                b'\t' => self.out.write_all(b"\\t")?,
                b'\\' => self.out.write_all(b"\\\\")?,
                _ => write!(self.out, "\\x{b:02x}")?,
            }
        }
        Ok(())
    }

    fn switch(&mut self, style: Style) -> io::Result<()> {
        if !self.open {
            self.out.write_all(self.prefix.as_bytes())?;
            self.open = true;
        }
        if self.style != Some(style) {
            if let Some(old) = self.style {
                write!(self.out, "{old:#}")?;
            }
            write!(self.out, "{style}")?;
            self.style = Some(style);
        }
        Ok(())
    }

    /// Ends the line: resets the style and writes the newline.
    fn end(&mut self) -> io::Result<()> {
        if let Some(old) = self.style.take() {
            write!(self.out, "{old:#}")?;
        }
        self.open = false;
        self.out.write_all(b"\n")
    }
}

/// Whether a character is shown as itself: visible characters only. Controls
/// (C0, DEL, C1) could drive the terminal, and the invisible formatting characters
/// (zero-width, bidirectional overrides, line separators) could hide or reorder
/// what is shown, so those are escaped.
fn shown(c: char) -> bool {
    c != '\\'
        && !c.is_control()
        && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Bytes per hex dump row.
const ROW: u64 = 16;

/// Writes `payload` as offset / hex / ASCII rows, each starting with `prefix`.
///
/// `start` is the position of the payload's first byte in its side's stream (the
/// bytes that side sent before this record). Rows are aligned to multiples of 16
/// in that stream, so "server byte 0x1000" is always the first byte of the row
/// labelled `00001000`; the bytes of a row that belong to other records are left
/// blank.
pub fn write_hex(out: &mut impl Write, payload: &[u8], start: u64, prefix: &str, paint: Paint) -> io::Result<()> {
    let end = start + payload.len() as u64;
    let mut row = start - start % ROW;
    while row < end {
        write!(
            out,
            "{prefix}{}{row:08x}{:#}  {}",
            paint.escape, paint.escape, paint.text
        )?;
        for pos in row..row + ROW {
            if pos == row + ROW / 2 {
                out.write_all(b" ")?;
            }
            if (start..end).contains(&pos) {
                write!(out, "{:02x} ", payload[(pos - start) as usize])?;
            } else {
                out.write_all(b"   ")?;
            }
        }
        out.write_all(b" |")?;
        for pos in row..(row + ROW).min(end) {
            let c = if pos < start {
                b' '
            } else {
                match payload[(pos - start) as usize] {
                    b @ 0x20..=0x7e => b,
                    _ => b'.',
                }
            };
            out.write_all(&[c])?;
        }
        writeln!(out, "|{:#}", paint.text)?;
        row += ROW;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(payload: &[u8]) -> String {
        let mut out = Vec::new();
        write_text(&mut out, payload, "> ", Paint::default()).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn hex(payload: &[u8], start: u64) -> String {
        let mut out = Vec::new();
        write_hex(&mut out, payload, start, "", Paint::default()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_breaks_lines_after_newline_and_shows_it() {
        assert_eq!(text(b"PING\r\n"), "> PING\\r\\n\n");
        assert_eq!(
            text(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            "> GET / HTTP/1.1\\r\\n\n> Host: x\\r\\n\n> \\r\\n\n"
        );
        assert_eq!(text(b"no newline"), "> no newline\n");
        assert_eq!(text(b"\n\nx"), "> \\n\n> \\n\n> x\n");
    }

    #[test]
    fn text_escapes_everything_not_printable() {
        assert_eq!(text(b"a\tb\\c\0\x1b[2J\x7f"), "> a\\tb\\\\c\\x00\\x1b[2J\\x7f\n");
        // Invalid UTF-8 is escaped byte by byte; valid text around it is kept.
        assert_eq!(text(b"\xff\xfeok\xc3"), "> \\xff\\xfeok\\xc3\n");
    }

    #[test]
    fn text_keeps_visible_unicode_and_escapes_invisible_or_control_characters() {
        assert_eq!(text("grüß 日本\n".as_bytes()), "> grüß 日本\\n\n");
        // C1 control CSI (U+009B) and a right-to-left override (U+202E).
        assert_eq!(text("a\u{9b}b\u{202e}c".as_bytes()), "> a\\xc2\\x9bb\\xe2\\x80\\xaec\n");
    }

    #[test]
    fn text_of_nothing_is_no_line() {
        assert_eq!(text(b""), "");
    }

    #[test]
    fn text_paints_runs_and_escapes_and_resets_before_each_newline() {
        let paint = Paint {
            text: Style::new().fg_color(Some(anstyle::AnsiColor::Green.into())),
            escape: Style::new().dimmed(),
        };
        let mut out = Vec::new();
        write_text(&mut out, b"hi\r\n", "", paint).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, "\x1b[32mhi\x1b[0m\x1b[2m\\r\\n\x1b[0m\n");
    }

    #[test]
    fn hex_rows_are_aligned_to_the_side_stream() {
        assert_eq!(
            hex(b"PING\r\n", 0),
            "00000000  50 49 4e 47 0d 0a                                 |PING..|\n"
        );
        // Seven bytes starting at stream byte 14: the first row holds two of them.
        assert_eq!(
            hex(b"+PONG\r\n", 14),
            "00000000                                             2b 50  |              +P|\n\
             00000010  4f 4e 47 0d 0a                                    |ONG..|\n"
        );
        let dump = hex(&[0xab; 40], 4096);
        let offsets: Vec<_> = dump.lines().map(|l| &l[..8]).collect();
        assert_eq!(offsets, ["00001000", "00001010", "00001020"]);
        assert!(
            dump.lines()
                .last()
                .unwrap()
                .starts_with("00001020  ab ab ab ab ab ab ab ab    ")
        );
    }

    #[test]
    fn hex_offsets_grow_past_eight_digits() {
        assert!(hex(b"x", 0x1_0000_0000).starts_with("100000000  78"));
    }
}
