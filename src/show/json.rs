//! `netrecord show --json`: one JSON object per line per record, for scripts.
//!
//! ```text
//! {"conn":1,"side":"client","time_us":104,"event":"con"}
//! {"conn":1,"side":"client","time_us":231,"event":"data","len":6,"text":"PING\r\n"}
//! {"conn":1,"side":"server","time_us":390,"event":"data","len":7,"base64":"AP8rUE9ORw0K"}
//! {"conn":1,"side":"client","time_us":1204551,"event":"hup"}
//! {"conn":1,"side":"server","time_us":1204602,"event":"hup"}
//! ```
//!
//! - `conn`: the connection number, the `N` of the log's name `<root>_N` (or the
//!   log's place on the command line, from 1, when the names have none);
//! - `side`: `"client"` or `"server"`; `time_us`: the record's time on the run's
//!   clock, in microseconds; `event`: `"con"`, `"data"`, `"hup"` or `"err"`;
//! - for data, `len`, the number of payload bytes the object holds, and the
//!   bytes themselves: as `text` when they are valid UTF-8 with no control
//!   character but tab, CR and LF, else as `base64` (RFC 4648, with padding), so
//!   that a script always gets the exact bytes back.
//!
//! Memory stays bounded whatever the size of a record: a data record longer than
//! [`OBJECT_BYTES`] (1 MiB) is written as several objects, in order, with the
//! same `conn`, `side` and `time_us`, each with its own `len` and bytes; every
//! one but the last has `"more":true`. Concatenating the bytes of a side's
//! objects gives its stream either way. (The recorder writes a record per
//! receive, far smaller than that, so its records are one object each.)

use std::io::{self, Write};

use serde::Serialize;

use super::{Finished, Form, Label};
use crate::log::{Event, Record, Side};

/// The most payload bytes one object holds.
pub const OBJECT_BYTES: usize = 1024 * 1024;

/// Records as JSON lines.
pub struct Json {
    side: Option<Side>,
    /// The data record whose payload is being written, its connection number.
    current: Option<(Record, u64)>,
    /// Payload bytes not written yet: less than [`OBJECT_BYTES`], or the start of
    /// a character that the next piece completes.
    pending: Vec<u8>,
    /// The line being built, written at once.
    line: Vec<u8>,
}

/// The fields every object has.
#[derive(Serialize)]
struct Head {
    conn: u64,
    side: &'static str,
    time_us: u64,
    event: &'static str,
}

impl Json {
    /// Writes the records of `side` only, when given.
    pub fn new(side: Option<Side>) -> Json {
        Json {
            side,
            current: None,
            pending: Vec::new(),
            line: Vec::new(),
        }
    }

    /// Writes one object for `bytes` of the current record.
    fn object(&mut self, out: &mut dyn Write, bytes: &[u8], more: bool) -> io::Result<()> {
        let Some((rec, conn)) = self.current else { return Ok(()) };
        let line = &mut self.line;
        line.clear();
        head(line, conn, &rec)?;
        line.pop(); // The closing brace: the data fields follow.
        write!(line, ",\"len\":{}", bytes.len())?;
        match as_text(bytes) {
            Some(text) => {
                line.extend_from_slice(b",\"text\":");
                serde_json::to_writer(&mut *line, text)?;
            }
            None => {
                line.extend_from_slice(b",\"base64\":\"");
                base64(line, bytes);
                line.push(b'"');
            }
        }
        if more {
            line.extend_from_slice(b",\"more\":true");
        }
        line.extend_from_slice(b"}\n");
        out.write_all(line)
    }
}

/// Writes the fields every object has, as a whole object.
fn head(line: &mut Vec<u8>, conn: u64, rec: &Record) -> io::Result<()> {
    let event = match rec.event {
        Event::Con => "con",
        Event::Data(_) => "data",
        Event::Hup => "hup",
        Event::Err => "err",
    };
    let head = Head {
        conn,
        side: rec.side.name(),
        time_us: rec.time.0,
        event,
    };
    serde_json::to_writer(line, &head).map_err(io::Error::other)
}

impl Form for Json {
    fn shows(&self, side: Side) -> bool {
        self.side.is_none_or(|s| s == side)
    }

    fn header(&mut self, out: &mut dyn Write, log: &Label, rec: &Record, _stream: u64) -> io::Result<()> {
        if let Event::Data(_) = rec.event {
            self.current = Some((*rec, log.conn));
            self.pending.clear();
            return Ok(());
        }
        self.line.clear();
        head(&mut self.line, log.conn, rec)?;
        self.line.push(b'\n');
        out.write_all(&self.line)
    }

    fn piece(&mut self, out: &mut dyn Write, mut piece: &[u8]) -> io::Result<()> {
        while !piece.is_empty() {
            let n = (OBJECT_BYTES - self.pending.len()).min(piece.len());
            self.pending.extend_from_slice(&piece[..n]);
            piece = &piece[n..];
            if self.pending.len() == OBJECT_BYTES {
                // A character cut by the object's end goes, whole, into the next.
                let keep = incomplete_tail(&self.pending);
                let rest = self.pending.split_off(OBJECT_BYTES - keep);
                let full = std::mem::replace(&mut self.pending, rest);
                self.object(out, &full, true)?;
            }
        }
        Ok(())
    }

    fn end_payload(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.object(out, &rest, false)?;
        }
        self.current = None;
        Ok(())
    }

    /// JSON lines have no room for notes: they go to stderr, as for raw output.
    fn note(&mut self, _: &mut dyn Write, _: &Label, _: &Finished) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes as text, if they are valid UTF-8 without control characters other
/// than tab, CR and LF.
fn as_text(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\r' | '\n'))
        .then_some(text)
}

/// How many bytes at the end of `bytes` are the valid start of a multi-byte
/// character (at most 3).
fn incomplete_tail(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        _ => 0,
    }
}

/// The base64 alphabet of RFC 4648 (not the URL-safe one).
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `bytes` in base64, padded with `=`.
fn base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let digit = |shift: u32| ALPHABET[(n >> shift & 63) as usize];
        out.extend_from_slice(&[digit(18), digit(12)]);
        out.push(if chunk.len() > 1 { digit(6) } else { b'=' });
        out.push(if chunk.len() > 2 { digit(0) } else { b'=' });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        base64(&mut out, bytes);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_is_rfc_4648_with_padding() {
        // The test vectors of RFC 4648, section 10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encoded(plain.as_bytes()), coded);
        }
        assert_eq!(encoded(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn text_is_utf8_without_controls_but_tab_cr_lf() {
        assert_eq!(as_text(b"GET /\r\n\tok"), Some("GET /\r\n\tok"));
        assert_eq!(as_text("été".as_bytes()), Some("été"));
        assert_eq!(as_text(b"a\0b"), None);
        assert_eq!(as_text(b"\x1b[2J"), None);
        assert_eq!(as_text("\u{85}".as_bytes()), None);
        assert_eq!(as_text(b"\xff"), None);
    }

    fn lines(pieces: &[&[u8]]) -> Vec<serde_json::Value> {
        let mut json = Json::new(None);
        let mut out = Vec::new();
        let label = Label {
            tag: String::new(),
            conn: 3,
        };
        let len = pieces.iter().map(|p| p.len()).sum();
        let rec = Record {
            offset: 0,
            side: Side::Server,
            time: crate::log::Micros(7),
            event: Event::Data(len),
        };
        json.header(&mut out, &label, &rec, 0).unwrap();
        for piece in pieces {
            json.piece(&mut out, piece).unwrap();
        }
        json.end_payload(&mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_record_larger_than_an_object_is_split_without_cutting_a_character() {
        // One byte short of an object, then a two-byte character across the end.
        let mut payload = vec![b'a'; OBJECT_BYTES - 1];
        payload.extend_from_slice("é and more".as_bytes());
        let objects = lines(&[&payload[..10], &payload[10..]]);
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0]["len"], OBJECT_BYTES - 1);
        assert_eq!(objects[0]["more"], true);
        assert_eq!(objects[1]["text"], "é and more");
        assert_eq!(objects[1].get("more"), None);
        for o in &objects {
            assert_eq!(
                (&o["conn"], &o["side"], &o["time_us"]),
                (&3.into(), &"server".into(), &7.into())
            );
        }
        let small = lines(&[b"\x00\xff"]);
        assert_eq!(small[0]["base64"], "AP8=");
        assert_eq!(small[0]["len"], 2);
    }
}
