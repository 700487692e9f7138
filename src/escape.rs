//! Bytes that did not come from netrecord, made safe to print: what a recorded
//! peer sent, and the names of files.
//!
//! A byte from a log in a message (`side is '\xff'`), or a file name in a note,
//! could otherwise drive the terminal (an escape sequence) or hide or reorder
//! what is shown (bidirectional overrides, zero-width characters). Visible
//! characters are shown as themselves; `\t`, `\r`, `\n` and `\\` as those
//! escapes; every other byte, and every byte of invalid UTF-8, as `\xNN`, so the
//! exact bytes can be read back from what is shown.

use std::fmt::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether a character is shown as itself: visible characters only. Controls
/// (C0, DEL, C1) could drive the terminal, and the invisible formatting
/// characters (zero-width, bidirectional overrides, line separators) could hide
/// or reorder what is shown, so those are escaped; so is `\`, the escapes' own
/// start.
pub fn is_shown(c: char) -> bool {
    c != '\\'
        && !c.is_control()
        && !matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// Writes `bytes` escaped; `quote`, when given, is escaped too.
fn write_escaped(f: &mut impl Write, bytes: &[u8], quote: Option<char>) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => f.write_str("\\t")?,
                '\r' => f.write_str("\\r")?,
                '\n' => f.write_str("\\n")?,
                '\\' => f.write_str("\\\\")?,
                c if Some(c) == quote => write!(f, "\\{c}")?,
                c if is_shown(c) => f.write_char(c)?,
                c => {
                    let mut utf8 = [0; 4];
                    for b in c.encode_utf8(&mut utf8).bytes() {
                        write!(f, "\\x{b:02x}")?;
                    }
                }
            }
        }
        for b in chunk.invalid() {
            write!(f, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

/// One byte of a log, quoted for a message: `'x'`, `'\xff'`, `'\n'`.
pub fn byte(b: u8) -> String {
    let mut out = String::from("'");
    write_escaped(&mut out, &[b], Some('\'')).expect("writing to a String cannot fail");
    out.push('\'');
    out
}

/// Bytes of a log, quoted for a message: `"xup"`, `"\x1b[2J"`.
pub fn bytes(b: &[u8]) -> String {
    let mut out = String::from("\"");
    write_escaped(&mut out, b, Some('"')).expect("writing to a String cannot fail");
    out.push('"');
    out
}

/// A file name as readers print it: like `Path::display`, with control
/// characters, invisible characters and bytes that are not UTF-8 escaped.
pub fn path(path: &Path) -> Shown<'_> {
    Shown(path)
}

/// A path that formats escaped: see [`path`].
#[derive(Clone, Copy, Debug)]
pub struct Shown<'a>(&'a Path);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0.as_os_str().as_bytes(), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn bytes_from_a_log_are_quoted_with_escapes() {
        assert_eq!(byte(b'x'), "'x'");
        assert_eq!(byte(0xff), "'\\xff'");
        assert_eq!(byte(0x83), "'\\x83'");
        assert_eq!(byte(b'\''), "'\\''");
        assert_eq!(byte(b'\n'), "'\\n'");
        assert_eq!(bytes(b"xup"), "\"xup\"");
        assert_eq!(bytes(b"\x1b[2J\"\xc3\xa9\xc2\x9b"), "\"\\x1b[2J\\\"é\\xc2\\x9b\"");
    }

    #[test]
    fn file_names_keep_visible_characters_and_escape_the_rest() {
        let shown = |name: &[u8]| path(Path::new(OsStr::from_bytes(name))).to_string();
        assert_eq!(shown(b"/tmp/rec_1"), "/tmp/rec_1");
        assert_eq!(shown("/tmp/été 日本_1".as_bytes()), "/tmp/été 日本_1");
        assert_eq!(shown(b"/tmp/\x1b[31mred\n_1"), "/tmp/\\x1b[31mred\\n_1");
        assert_eq!(shown(b"/tmp/\xff\\_1"), "/tmp/\\xff\\\\_1");
        assert_eq!(shown("/tmp/a\u{202e}b".as_bytes()), "/tmp/a\\xe2\\x80\\xaeb");
    }
}
