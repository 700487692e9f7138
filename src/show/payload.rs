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

/// Writes one payload as escaped text lines, each starting with a prefix. The
/// last line is ended even if the payload does not end with `\n` (the missing
/// `\n` escape shows that it did not). The payload is fed in pieces of any
/// size, and the lines come out as if it had been written at once, a character
/// split between two pieces included.
pub struct TextWriter {
    line: Text,
    /// The start of a multi-byte character that the last piece ended inside.
    carry: Vec<u8>,
}

impl TextWriter {
    /// A payload's text, each line starting with `prefix`.
    pub fn new(prefix: &str, paint: Paint) -> TextWriter {
        TextWriter {
            line: Text {
                buf: Vec::new(),
                prefix: prefix.to_string(),
                codes: [
                    (paint.text.render().to_string(), paint.text.render_reset().to_string()),
                    (
                        paint.escape.render().to_string(),
                        paint.escape.render_reset().to_string(),
                    ),
                ],
                open: false,
                current: None,
            },
            carry: Vec::new(),
        }
    }

    /// Writes the next piece of the payload.
    pub fn write(&mut self, out: &mut impl Write, piece: &[u8]) -> io::Result<()> {
        let joined;
        let bytes = if self.carry.is_empty() {
            piece
        } else {
            joined = [std::mem::take(&mut self.carry).as_slice(), piece].concat();
            &joined
        };
        let whole = bytes.len() - incomplete_tail(bytes);
        self.carry.extend_from_slice(&bytes[whole..]);
        self.put(&bytes[..whole]);
        self.flush(out)
    }

    /// Ends the payload: a character it ends inside is escaped, and the last line
    /// is ended.
    pub fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            self.line.put_escaped(&carry);
        }
        if self.line.open {
            self.line.end();
        }
        self.flush(out)
    }

    fn put(&mut self, mut rest: &[u8]) {
        // The text is built in memory and written in one call per piece: writing
        // the escapes of a binary payload byte by byte would make showing a large
        // log crawl.
        self.line.buf.reserve(rest.len() + rest.len() / 2 + 64);
        while let Some(&first) = rest.first() {
            let shown = shown_len(rest);
            if shown > 0 {
                self.line.put(&rest[..shown]);
                rest = &rest[shown..];
                continue;
            }
            // Escaping byte by byte gives the same text as escaping a whole
            // invisible character, so one byte at a time is enough.
            self.line.put_escaped(&rest[..1]);
            if first == b'\n' {
                self.line.end();
            }
            rest = &rest[1..];
        }
    }

    fn flush(&mut self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.line.buf)?;
        self.line.buf.clear();
        Ok(())
    }
}

/// How many bytes at the end of `bytes` are the valid start of a multi-byte
/// character that the rest of the payload may complete.
fn incomplete_tail(bytes: &[u8]) -> usize {
    for back in 1..=3.min(bytes.len()) {
        let b = bytes[bytes.len() - back];
        if b & 0xc0 == 0x80 {
            continue; // A continuation byte: the start is further back.
        }
        let width = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return 0,
        };
        let start = &bytes[bytes.len() - back..];
        // Only a start that can still become valid UTF-8 waits for the rest.
        let valid_so_far = match std::str::from_utf8(start) {
            Ok(_) => false,
            Err(e) => e.valid_up_to() == 0 && e.error_len().is_none(),
        };
        return if back < width && valid_so_far { back } else { 0 };
    }
    0
}

/// Text lines being built: each line's prefix goes first, and a style is
/// switched only when it changes and reset before the newline (so a pager that
/// shows lines on their own, like `less -R`, shows them right).
struct Text {
    buf: Vec<u8>,
    prefix: String,
    /// The escape codes that start and reset the text style (0) and the escape
    /// style (1), rendered once: empty without colour.
    codes: [(String, String); 2],
    /// Whether a line has been started and not yet ended.
    open: bool,
    /// Which style is in effect, by its index in `codes`.
    current: Option<usize>,
}

impl Text {
    /// Adds `bytes` as they are.
    fn put(&mut self, bytes: &[u8]) {
        self.switch(0);
        self.buf.extend_from_slice(bytes);
    }

    /// Adds each byte as its escape: `\r`, `\n`, `\t`, `\\`, or `\xNN`.
    fn put_escaped(&mut self, bytes: &[u8]) {
        self.switch(1);
        for &b in bytes {
            match b {
                b'\r' => self.buf.extend_from_slice(b"\\r"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                b'\t' => self.buf.extend_from_slice(b"\\t"),
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                _ => self
                    .buf
                    .extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
            }
        }
    }

    /// Starts the line if needed, and the style `codes[style]`.
    fn switch(&mut self, style: usize) {
        if !self.open {
            self.buf.extend_from_slice(self.prefix.as_bytes());
            self.open = true;
        }
        if self.current != Some(style) {
            self.reset();
            self.buf.extend_from_slice(self.codes[style].0.as_bytes());
            self.current = Some(style);
        }
    }

    fn reset(&mut self) {
        if let Some(style) = self.current.take() {
            self.buf.extend_from_slice(self.codes[style].1.as_bytes());
        }
    }

    /// Ends the line: resets the style and adds the newline.
    fn end(&mut self) {
        self.reset();
        self.open = false;
        self.buf.push(b'\n');
    }
}

/// How many bytes at the start of `bytes` are shown as themselves.
fn shown_len(bytes: &[u8]) -> usize {
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii() {
            if !(0x20..0x7f).contains(&b) || b == b'\\' {
                break;
            }
            i += 1;
            continue;
        }
        // A multi-byte character is shown if it is valid UTF-8 and visible.
        let width = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => break,
        };
        let Some(c) = bytes
            .get(i..i + width)
            .and_then(|seq| std::str::from_utf8(seq).ok())
            .and_then(|s| s.chars().next())
        else {
            break;
        };
        if !crate::escape::is_shown(c) {
            break;
        }
        i += width;
    }
    i
}

/// Lower-case hex digits, indexed by value.
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Bytes per hex dump row.
const ROW: u64 = 16;

/// Writes one payload as offset / hex / ASCII rows, each starting with a prefix.
///
/// The payload's first byte is at some position of its side's stream (the bytes
/// that side sent before this record). Rows are aligned to multiples of 16 in
/// that stream, so "server byte 0x1000" is always the first byte of the row
/// labelled `00001000`; the bytes of a row that belong to other records are left
/// blank. The payload is fed in pieces of any size: a row is written once its
/// bytes, or the payload's end, are there.
pub struct HexWriter {
    prefix: String,
    paint: Paint,
    /// Stream position of the first byte of the row being filled.
    row: u64,
    /// Stream position of the first byte of this payload in that row.
    first: u64,
    /// The row's bytes so far, from `first` on.
    bytes: Vec<u8>,
    /// The hex and ASCII columns of one row: built in place and written at once,
    /// because formatting byte by byte makes dumping a large log crawl.
    cols: Vec<u8>,
}

impl HexWriter {
    /// A payload that starts at position `start` of its side's stream.
    pub fn new(start: u64, prefix: &str, paint: Paint) -> HexWriter {
        HexWriter {
            prefix: prefix.to_string(),
            paint,
            row: start - start % ROW,
            first: start,
            bytes: Vec::with_capacity(ROW as usize),
            cols: Vec::with_capacity(4 * ROW as usize + 4),
        }
    }

    /// Writes the next piece of the payload.
    pub fn write(&mut self, out: &mut impl Write, mut piece: &[u8]) -> io::Result<()> {
        while !piece.is_empty() {
            let room = (self.row + ROW - self.first) as usize - self.bytes.len();
            let n = room.min(piece.len());
            self.bytes.extend_from_slice(&piece[..n]);
            piece = &piece[n..];
            if n == room {
                self.write_row(out)?;
                self.row += ROW;
                self.first = self.row;
                self.bytes.clear();
            }
        }
        Ok(())
    }

    /// Ends the payload: writes the last row, if it is not full.
    pub fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if !self.bytes.is_empty() {
            self.write_row(out)?;
            self.bytes.clear();
        }
        Ok(())
    }

    fn write_row(&mut self, out: &mut impl Write) -> io::Result<()> {
        let (row, first, end) = (self.row, self.first, self.first + self.bytes.len() as u64);
        let cols = &mut self.cols;
        cols.clear();
        for pos in row..row + ROW {
            if pos == row + ROW / 2 {
                cols.push(b' ');
            }
            if (first..end).contains(&pos) {
                let b = self.bytes[(pos - first) as usize];
                cols.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)], b' ']);
            } else {
                cols.extend_from_slice(b"   ");
            }
        }
        cols.extend_from_slice(b" |");
        for pos in row..end {
            cols.push(if pos < first {
                b' '
            } else {
                match self.bytes[(pos - first) as usize] {
                    b @ 0x20..=0x7e => b,
                    _ => b'.',
                }
            });
        }
        cols.push(b'|');
        let (prefix, paint) = (&self.prefix, self.paint);
        write!(
            out,
            "{prefix}{}{row:08x}{:#}  {}",
            paint.escape, paint.escape, paint.text
        )?;
        out.write_all(cols)?;
        writeln!(out, "{:#}", paint.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole payload as text.
    fn write_text(out: &mut impl Write, payload: &[u8], prefix: &str, paint: Paint) -> io::Result<()> {
        let mut text = TextWriter::new(prefix, paint);
        text.write(out, payload)?;
        text.finish(out)
    }

    /// A whole payload as a hex dump starting at stream position `start`.
    fn write_hex(out: &mut impl Write, payload: &[u8], start: u64, prefix: &str, paint: Paint) -> io::Result<()> {
        let mut hex = HexWriter::new(start, prefix, paint);
        hex.write(out, payload)?;
        hex.finish(out)
    }

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

    /// The output of writing `payload` in two pieces split at `at`.
    fn split_text(payload: &[u8], at: usize) -> String {
        let mut out = Vec::new();
        let mut text = TextWriter::new("> ", Paint::default());
        text.write(&mut out, &payload[..at]).unwrap();
        text.write(&mut out, &payload[at..]).unwrap();
        text.finish(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_in_pieces_is_the_text_of_the_whole_wherever_it_is_split() {
        let payload = "a\tgrüß\n日本\u{1f600}\\x\x00"
            .bytes()
            .chain([0xff, 0xe6, 0x97, b'!', 0xf0, 0x9f])
            .collect::<Vec<u8>>();
        let whole = text(&payload);
        for at in 0..=payload.len() {
            assert_eq!(split_text(&payload, at), whole, "split at {at}");
        }
        // Three pieces around one four-byte character.
        let smile = "\u{1f600}".as_bytes();
        let mut out = Vec::new();
        let mut text = TextWriter::new("", Paint::default());
        for piece in [&smile[..1], &smile[1..3], &smile[3..]] {
            text.write(&mut out, piece).unwrap();
        }
        text.finish(&mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "\u{1f600}\n");
    }

    #[test]
    fn hex_in_pieces_is_the_dump_of_the_whole_wherever_it_is_split() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(70).collect();
        for start in [0, 5, 16, 4091] {
            let whole = hex(&payload, start);
            for at in 0..=payload.len() {
                let mut out = Vec::new();
                let mut dump = HexWriter::new(start, "", Paint::default());
                dump.write(&mut out, &payload[..at]).unwrap();
                dump.write(&mut out, &payload[at..]).unwrap();
                dump.finish(&mut out).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), whole, "start {start}, split at {at}");
            }
        }
    }
}
