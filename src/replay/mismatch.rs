//! How a replayed connection departed from its recording, and how that reads in
//! a report: which stream, the byte offset in it, and a short excerpt of what was
//! expected and what came instead.

use std::fmt;
use std::time::Duration;

use crate::log::Side;

/// The most bytes an excerpt shows; a mismatch report is one line, not a dump.
pub const EXCERPT: usize = 16;

/// A point where a replayed connection left its recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The side whose stream departed: the live peer's, or ours when sending failed.
    pub side: Side,
    /// The byte offset in that side's recorded stream (counted from 0, as
    /// `show --hex` does).
    pub offset: u64,
    /// The byte offset in the live stream: the same as `offset` unless masked
    /// spans of other lengths, or an earlier differing segment, came before.
    pub live: u64,
    pub kind: Kind,
}

/// What happened at [`Mismatch::offset`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A byte differs: the recorded bytes from the offset on, and the live ones.
    Differs { expected: Vec<u8>, got: Vec<u8> },
    /// The peer kept sending where the recording has it hang up.
    Extra { got: Vec<u8> },
    /// The peer hung up before sending all `recorded` bytes.
    HungUpEarly { recorded: u64 },
    /// The peer sent nothing for `waited` where the recording has more bytes
    /// (`hup == false`) or its hang-up (`hup == true`).
    Silent { waited: Duration, hup: bool },
    /// The connection failed, while receiving (`sending == false`) or sending.
    Failed { sending: bool, error: String },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (side, offset) = (self.side.name(), self.offset);
        let live = if self.live == offset {
            String::new()
        } else {
            format!(" (live offset {})", self.live)
        };
        match &self.kind {
            Kind::Differs { expected, got } => write!(
                f,
                "{side} stream differs at offset {offset}{live}: expected {}, got {}",
                Excerpt(expected),
                Excerpt(got)
            ),
            Kind::Extra { got } => write!(
                f,
                "{side} sent more than recorded: it hung up at offset {offset} in the recording, but sent {}{live}",
                Excerpt(got)
            ),
            Kind::HungUpEarly { recorded } => write!(
                f,
                "{side} hung up at offset {offset}, but the recording has {recorded} bytes from it"
            ),
            Kind::Silent { waited, hup: false } => write!(
                f,
                "{side} sent nothing for {}s at offset {offset} (timed out waiting for recorded bytes)",
                waited.as_secs_f64()
            ),
            Kind::Silent { waited, hup: true } => write!(
                f,
                "{side} did not hang up at offset {offset} as recorded (timed out after {}s)",
                waited.as_secs_f64()
            ),
            Kind::Failed { sending: true, error } => {
                write!(f, "connection failed while sending {side} byte {offset}: {error}")
            }
            Kind::Failed { sending: false, error } => {
                write!(f, "connection failed while receiving {side} byte {offset}: {error}")
            }
        }
    }
}

impl Mismatch {
    /// Adds bytes the peer sent after a difference to its excerpt, up to
    /// [`EXCERPT`]: a peer that sends in small pieces would otherwise show only
    /// the piece the difference fell in. `more` starts at live offset `from`;
    /// what the excerpt already has of it is skipped.
    pub fn follow(&mut self, from: u64, more: &[u8]) {
        if let Kind::Differs { got, .. } | Kind::Extra { got } = &mut self.kind {
            let have = self.live + got.len() as u64;
            let Some(skip) = have.checked_sub(from) else { return };
            let more = more.get(skip as usize..).unwrap_or_default();
            let room = EXCERPT.saturating_sub(got.len()).min(more.len());
            got.extend_from_slice(&more[..room]);
        }
    }
}

/// Up to [`EXCERPT`] bytes shown both ways: as escaped text, which reads well for
/// text protocols, and as hex, which is exact for binary ones. For example
/// `"PING\r\n" (50 49 4e 47 0d 0a)`, with `...` when there were more bytes.
pub struct Excerpt<'a>(pub &'a [u8]);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(EXCERPT)];
        let more = if self.0.len() > EXCERPT { "..." } else { "" };
        write!(f, "\"{}\"{more} (", shown.escape_ascii())?;
        for (i, b) in shown.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{b:02x}")?;
        }
        write!(f, "{more})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_shows_text_and_hex() {
        assert_eq!(Excerpt(b"PING\r\n").to_string(), r#""PING\r\n" (50 49 4e 47 0d 0a)"#);
        assert_eq!(Excerpt(b"").to_string(), r#""" ()"#);
        let long = Excerpt(b"0123456789abcdefXYZ").to_string();
        assert!(long.starts_with(r#""0123456789abcdef"... (30 31"#), "{long}");
        assert!(long.ends_with("66...)"), "{long}");
    }

    #[test]
    fn an_excerpt_follows_the_bytes_after_a_difference() {
        let mut m = Mismatch {
            side: Side::Server,
            offset: 0,
            live: 0,
            kind: Kind::Differs {
                expected: b"hello".to_vec(),
                got: b"x".to_vec(),
            },
        };
        // The bytes the excerpt has are not taken twice.
        m.follow(0, b"xy");
        m.follow(2, &[b'z'; 40]);
        let Kind::Differs { got, .. } = &m.kind else {
            unreachable!()
        };
        assert_eq!(got.len(), EXCERPT);
        assert!(got.starts_with(b"xyzz"));
        let mut silent = Mismatch {
            side: Side::Server,
            offset: 0,
            live: 0,
            kind: Kind::HungUpEarly { recorded: 3 },
        };
        silent.follow(0, b"abc");
        assert_eq!(silent.kind, Kind::HungUpEarly { recorded: 3 });
    }

    #[test]
    fn differs_names_side_and_offset() {
        let mut m = Mismatch {
            side: Side::Client,
            offset: 2,
            live: 2,
            kind: Kind::Differs {
                expected: b"NG".to_vec(),
                got: b"XX".to_vec(),
            },
        };
        assert_eq!(
            m.to_string(),
            r#"client stream differs at offset 2: expected "NG" (4e 47), got "XX" (58 58)"#
        );
        m.live = 5;
        assert!(
            m.to_string()
                .starts_with("client stream differs at offset 2 (live offset 5): ")
        );
    }
}
