//! Reading a log back as a stream of records, checking every invariant of the
//! format on the way.
//!
//! The reader streams: it holds at most one record's payload at a time, and can
//! hand a payload over in pieces, so a log larger than memory, or a record
//! larger than memory, reads fine. It tells apart a log that was cut short (the last record
//! is incomplete: [`ReadError::Truncated`]) from one whose bytes break the format
//! ([`ReadError::Corrupt`]), and both carry the byte offset of the record at fault.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use super::writer::MAX_HEADER;
use super::{End, Event, Micros, Side};
use crate::escape;

/// One record's header, as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Byte offset of the record's header line in the file.
    pub offset: u64,
    pub side: Side,
    pub time: Micros,
    pub event: Event,
}

/// Why reading stopped before a clean end of the log.
#[derive(Debug)]
pub enum ReadError {
    /// The file ends inside a record: the recorder was killed or the disk filled.
    /// Every record before `offset` is whole and valid.
    Truncated { offset: u64, what: String },
    /// The bytes at `offset` are not a valid record, or break an invariant.
    Corrupt { offset: u64, what: String },
    /// Reading the underlying file failed.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Truncated { offset, what } => {
                write!(f, "truncated record at byte {offset}: {what}")
            }
            ReadError::Corrupt { offset, what } => {
                write!(f, "corrupt record at byte {offset}: {what}")
            }
            ReadError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// What the records read so far add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Records read, `con` included.
    pub records: u64,
    /// Payload bytes per side that are in the log, indexed by [`Side::index`]: a
    /// last record cut short counts with the bytes it has.
    pub bytes: [u64; 2],
    /// Whether each side has hung up, indexed by [`Side::index`].
    pub hup: [bool; 2],
    /// The side whose `err` ended the log, if one did.
    pub err: Option<Side>,
    /// Time of the first record (`con`).
    pub first: Option<Micros>,
    /// Time of the last record.
    pub last: Option<Micros>,
}

impl Summary {
    /// Whether the connection ended in the log: both sides hung up, or an `err`.
    pub fn is_complete(&self) -> bool {
        self.err.is_some() || (self.hup[0] && self.hup[1])
    }

    /// Time from the first record to the last.
    pub fn duration(&self) -> Micros {
        match (self.first, self.last) {
            (Some(a), Some(b)) => Micros(b.0 - a.0),
            _ => Micros(0),
        }
    }

    /// How `side` ended, as far as the log says.
    pub fn end(&self, side: Side) -> End {
        if self.err == Some(side) {
            End::Err
        } else if self.hup[side.index()] {
            End::Hup
        } else {
            End::Open
        }
    }

    /// Checks that `rec` may follow the records summarised so far, and adds it.
    fn admit(&mut self, rec: &Record) -> Result<(), String> {
        if self.records == 0 && !(rec.side == Side::Client && rec.event == Event::Con) {
            return Err("the first record is not `c <time> con`".into());
        }
        if self.records > 0 && rec.event == Event::Con {
            return Err("`con` after the first record".into());
        }
        if let Some(side) = self.err {
            return Err(format!("record after `{} err`", side.letter()));
        }
        if let Some(last) = self.last
            && rec.time < last
        {
            return Err(format!("time goes backwards ({} after {})", rec.time, last));
        }
        let i = rec.side.index();
        match rec.event {
            Event::Con => {}
            Event::Data(_) => {
                if self.hup[i] {
                    return Err(format!("{} data after `{} hup`", rec.side.name(), rec.side.letter()));
                }
            }
            Event::Hup => {
                if self.hup[i] {
                    return Err(format!("second `{} hup`", rec.side.letter()));
                }
                self.hup[i] = true;
            }
            Event::Err => self.err = Some(rec.side),
        }
        self.records += 1;
        self.first.get_or_insert(rec.time);
        self.last = Some(rec.time);
        Ok(())
    }
}

/// A streaming log reader over any byte source.
///
/// By default [`Reader::next_record`] reads a data record's whole payload, which
/// [`Reader::payload`] then gives. With [`Reader::keep_payload`]`(false)` it
/// returns as soon as the header is read and leaves the payload in the source:
/// the caller reads it in pieces of bounded size with [`Reader::payload_piece`],
/// or not at all, and whatever it leaves is skipped by the next `next_record`.
/// That is how every reader that shows or exports payloads keeps its memory
/// bounded whatever the size of a record.
///
/// [`Reader::follow`] reads a log that is still being written: the end of the
/// bytes written so far is no end of the log, only of what there is yet.
pub struct Reader<R> {
    inner: BufReader<R>,
    /// Offset of the record being read: just past the last whole record.
    offset: u64,
    /// The header line read so far (a partial one stays here while following).
    line: Vec<u8>,
    /// The whole payload of the last data record, or the last piece read.
    payload: Vec<u8>,
    keep_payload: bool,
    follow: bool,
    /// The data record whose payload is not (wholly) read yet.
    unread: Option<Unread>,
    summary: Summary,
    /// Set after the end or an error: nothing more is read.
    done: bool,
}

/// Where the payload of the record being read stands.
#[derive(Clone, Copy, Debug)]
struct Unread {
    /// Length of the record's header line.
    header: u64,
    /// The payload's length, from the header.
    len: u64,
    /// Bytes of it read (or skipped) so far.
    got: u64,
    side: Side,
}

/// The largest size a file can have: file offsets are signed 64-bit numbers.
const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// Read buffer size: large enough that a log streams at disk speed.
const BUFFER: usize = 256 * 1024;

impl Reader<File> {
    /// Opens a log file for reading.
    pub fn open(path: &Path) -> io::Result<Reader<File>> {
        Ok(Reader::new(File::open(path)?))
    }
}

impl<R: Read> Reader<R> {
    /// Reads a log from `inner`.
    pub fn new(inner: R) -> Reader<R> {
        Reader::with_buffer(inner, BUFFER)
    }

    /// Reads a log from `inner` through a read buffer of `capacity` bytes: a
    /// small one for readers that hold many logs open side by side. Payload
    /// pieces at least that large are read past the buffer, as fast.
    pub fn with_buffer(inner: R, capacity: usize) -> Reader<R> {
        Reader {
            inner: BufReader::with_capacity(capacity, inner),
            offset: 0,
            line: Vec::with_capacity(MAX_HEADER),
            payload: Vec::new(),
            keep_payload: true,
            follow: false,
            unread: None,
            summary: Summary::default(),
            done: false,
        }
    }

    /// With `false`, payloads are left in the source instead of copied, and
    /// [`Reader::payload`] stays empty: read them with [`Reader::payload_piece`],
    /// or let the next [`Reader::next_record`] skip them.
    pub fn keep_payload(mut self, keep: bool) -> Self {
        self.keep_payload = keep;
        self
    }

    /// With `true`, reads a log that is still being written (payloads in pieces,
    /// as with `keep_payload(false)`). Where the bytes written so far end, inside
    /// a record or between records, [`Reader::next_record`] returns `Ok(None)` and
    /// [`Reader::payload_piece`] an empty piece with [`Reader::payload_left`] above
    /// zero: there is nothing more yet, and a later call goes on where this one
    /// stopped. A log is never reported cut short; bytes that break the format
    /// are still [`ReadError::Corrupt`]. Whether the connection has ended is
    /// [`Summary::is_complete`].
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        if follow {
            self.keep_payload = false;
        }
        self
    }

    /// The payload of the last data record returned by [`Reader::next_record`]
    /// when payloads are kept; else the last piece [`Reader::payload_piece`] read.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// What the records read so far add up to.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Byte offset just past the last whole record read.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How many bytes of the current record's payload are still to be read.
    pub fn payload_left(&self) -> u64 {
        self.unread.map_or(0, |u| u.len - u.got)
    }

    /// Reads the next record: `Ok(None)` at a clean end of the log (after a whole
    /// record, or an empty file). After an error, every later call returns `Ok(None)`.
    /// When following, `Ok(None)` means only that no whole header is there yet.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_record();
        match result {
            Ok(Some(_)) => {}
            Ok(None) if self.follow => {}
            _ => self.done = true,
        }
        result
    }

    /// Reads up to `max` bytes of the current record's payload (when payloads are
    /// not kept): fewer only where the file ends, and none once the payload has
    /// been read. The file ending inside the payload is [`ReadError::Truncated`]
    /// at the call that finds nothing more (unless following), so every byte that
    /// is there is read first.
    pub fn payload_piece(&mut self, max: usize) -> Result<&[u8], ReadError> {
        let Some(mut unread) = self.unread.filter(|_| !self.keep_payload) else {
            return Ok(&[]);
        };
        let want = (unread.len - unread.got).min(max as u64) as usize;
        self.payload.resize(want, 0);
        let mut filled = 0;
        while filled < want {
            match self.inner.read(&mut self.payload[filled..want]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.done = true;
                    return Err(ReadError::Io(e));
                }
            }
        }
        self.payload.truncate(filled);
        self.took(&mut unread, filled as u64);
        if filled == 0 && want > 0 && !self.follow {
            self.done = true;
            return Err(unread.truncated(self.offset));
        }
        Ok(&self.payload)
    }

    fn read_record(&mut self) -> Result<Option<Record>, ReadError> {
        if self.unread.is_some() {
            self.skip_payload()?;
            if self.unread.is_some() {
                // Following, and the rest of the payload is not written yet.
                return Ok(None);
            }
        }
        self.payload.clear();
        let offset = self.offset;
        let room = MAX_HEADER - self.line.len();
        (&mut self.inner)
            .take(room as u64)
            .read_until(b'\n', &mut self.line)
            .map_err(ReadError::Io)?;
        if self.line.is_empty() {
            return Ok(None);
        }
        let complete = self.line.last() == Some(&b'\n');
        let text = if complete {
            &self.line[..self.line.len() - 1]
        } else {
            &self.line[..]
        };
        let (side, time, event) = match parse_header(text, complete) {
            Ok(parsed) => parsed,
            Err(Problem::Invalid(what)) => return Err(ReadError::Corrupt { offset, what }),
            Err(Problem::Incomplete) if self.line.len() >= MAX_HEADER => {
                return Err(ReadError::Corrupt {
                    offset,
                    what: format!("header line longer than {} bytes", MAX_HEADER - 1),
                });
            }
            // The rest of the header is still to be written: keep what there is.
            Err(Problem::Incomplete) if self.follow => return Ok(None),
            Err(Problem::Incomplete) => {
                return Err(ReadError::Truncated {
                    offset,
                    what: "the file ends inside the header line".into(),
                });
            }
        };
        let header = self.line.len() as u64;
        self.line.clear();
        let record = Record {
            offset,
            side,
            time,
            event,
        };
        if let Event::Data(n) = event
            && offset.saturating_add(header).saturating_add(n as u64) > MAX_FILE_SIZE
        {
            // No file can hold such a record, so it cannot be one cut short.
            return Err(ReadError::Corrupt {
                offset,
                what: format!("byte count {n} is larger than any file can hold"),
            });
        }
        self.summary
            .admit(&record)
            .map_err(|what| ReadError::Corrupt { offset, what })?;
        match event {
            Event::Data(n) => {
                self.unread = Some(Unread {
                    header,
                    len: n as u64,
                    got: 0,
                    side,
                });
                if self.keep_payload {
                    self.read_whole_payload()?;
                }
            }
            _ => self.offset += header,
        }
        Ok(Some(record))
    }

    /// Reads the current record's whole payload into `payload`.
    fn read_whole_payload(&mut self) -> Result<(), ReadError> {
        let Some(mut unread) = self.unread else { return Ok(()) };
        self.payload.clear();
        // Reserve no more than a buffer's worth up front: a corrupt count must not
        // allocate more than the file really holds.
        self.payload.reserve((unread.len as usize).min(BUFFER));
        let got = (&mut self.inner)
            .take(unread.len)
            .read_to_end(&mut self.payload)
            .map_err(ReadError::Io)?;
        self.took(&mut unread, got as u64);
        if self.unread.is_some() {
            return Err(unread.truncated(self.offset));
        }
        Ok(())
    }

    /// Skips what is left of the current record's payload: all of it, or, when
    /// following, as much as is there.
    fn skip_payload(&mut self) -> Result<(), ReadError> {
        while let Some(mut unread) = self.unread {
            let buf = match self.inner.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            };
            if buf.is_empty() {
                if self.follow {
                    return Ok(());
                }
                return Err(unread.truncated(self.offset));
            }
            let n = buf.len().min((unread.len - unread.got) as usize);
            self.inner.consume(n);
            self.took(&mut unread, n as u64);
        }
        Ok(())
    }

    /// Counts `n` more payload bytes of the current record as read; at its end,
    /// the record is whole and the next one starts.
    fn took(&mut self, unread: &mut Unread, n: u64) {
        unread.got += n;
        self.summary.bytes[unread.side.index()] += n;
        if unread.got == unread.len {
            self.offset += unread.header + unread.len;
            self.unread = None;
        } else {
            self.unread = Some(*unread);
        }
    }
}

impl Unread {
    /// The error for a file that ends inside this payload, of the record at `offset`.
    fn truncated(&self, offset: u64) -> ReadError {
        ReadError::Truncated {
            offset,
            what: format!("the payload ends after {} of {} bytes", self.got, self.len),
        }
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Why a header did not parse.
#[derive(Debug, PartialEq)]
enum Problem {
    /// The bytes so far are a valid start of a header, but it ends early.
    Incomplete,
    /// The bytes cannot be a header.
    Invalid(String),
}

/// Parses a header line without its newline. With `complete == false` the line
/// was cut short by the end of the input, and a valid prefix is `Incomplete`.
fn parse_header(h: &[u8], complete: bool) -> Result<(Side, Micros, Event), Problem> {
    let mut p = Parser { h, pos: 0, complete };
    let side = match p.byte("a side (`c` or `s`)")? {
        b'c' => Side::Client,
        b's' => Side::Server,
        other => return Err(p.invalid(format!("side is {}, not `c` or `s`", escape::byte(other)))),
    };
    p.expect(b' ')?;
    let secs = p.number("the time's seconds", 20)?;
    p.expect(b'.')?;
    let mut micros: u64 = 0;
    for _ in 0..6 {
        let d = p.byte("six digits of microseconds")?;
        if !d.is_ascii_digit() {
            return Err(p.invalid("the time needs exactly six digits after the dot".into()));
        }
        micros = micros * 10 + u64::from(d - b'0');
    }
    let time = secs
        .checked_mul(1_000_000)
        .and_then(|t| t.checked_add(micros))
        .ok_or_else(|| Problem::Invalid("time out of range".into()))?;
    p.expect(b' ')?;
    let event = match p.peek("`con`, `hup`, `err` or a byte count")? {
        b'0'..=b'9' => {
            let n = p.number("the byte count", 20)?;
            if n == 0 {
                return Err(Problem::Invalid("byte count 0".into()));
            }
            Event::Data(usize::try_from(n).map_err(|_| Problem::Invalid("byte count out of range".into()))?)
        }
        _ => p.word()?,
    };
    if p.pos < h.len() {
        return Err(Problem::Invalid(format!(
            "unexpected {} after the header",
            escape::bytes(&h[p.pos..])
        )));
    }
    if !complete {
        // Everything so far is valid, but the newline is missing.
        return Err(Problem::Incomplete);
    }
    if side == Side::Server && event == Event::Con {
        return Err(Problem::Invalid("`con` is only recorded for the client".into()));
    }
    Ok((side, Micros(time), event))
}

struct Parser<'a> {
    h: &'a [u8],
    pos: usize,
    complete: bool,
}

impl Parser<'_> {
    fn missing(&self, what: &str) -> Problem {
        if self.complete {
            Problem::Invalid(format!("header ends where {what} should be"))
        } else {
            Problem::Incomplete
        }
    }

    fn invalid(&self, what: String) -> Problem {
        Problem::Invalid(what)
    }

    fn peek(&self, what: &str) -> Result<u8, Problem> {
        self.h.get(self.pos).copied().ok_or_else(|| self.missing(what))
    }

    fn byte(&mut self, what: &str) -> Result<u8, Problem> {
        let b = self.peek(what)?;
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), Problem> {
        let what = escape::byte(want);
        let got = self.byte(&what)?;
        if got != want {
            return Err(self.invalid(format!("expected {what}, found {}", escape::byte(got))));
        }
        Ok(())
    }

    /// A decimal number without leading zeros (a lone `0` is fine), at most
    /// `max_digits` long.
    fn number(&mut self, what: &str, max_digits: usize) -> Result<u64, Problem> {
        let start = self.pos;
        while self.h.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        let digits = &self.h[start..self.pos];
        if digits.is_empty() {
            return match self.h.get(self.pos) {
                None => Err(self.missing(what)),
                Some(&b) => Err(self.invalid(format!("expected {what}, found {}", escape::byte(b)))),
            };
        }
        if digits.len() > 1 && digits[0] == b'0' {
            return Err(self.invalid(format!("{what} has a leading zero")));
        }
        if digits.len() > max_digits {
            return Err(self.invalid(format!("{what} is too long")));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| self.invalid(format!("{what} out of range")))
    }

    fn word(&mut self) -> Result<Event, Problem> {
        let rest = &self.h[self.pos..];
        for (word, event) in [(&b"con"[..], Event::Con), (b"hup", Event::Hup), (b"err", Event::Err)] {
            if rest.len() >= 3 && &rest[..3] == word {
                self.pos += 3;
                return Ok(event);
            }
            if rest.len() < 3 && word.starts_with(rest) && !self.complete {
                return Err(Problem::Incomplete);
            }
        }
        Err(self.invalid(format!(
            "unknown record kind {}",
            escape::bytes(&rest[..rest.len().min(8)])
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::writer::LogWriter;
    use proptest::prelude::*;

    type Records = Vec<(Record, Vec<u8>)>;

    fn read_all(bytes: &[u8]) -> (Records, Result<(), ReadError>) {
        let mut reader = Reader::new(bytes);
        let mut out = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some(rec)) => out.push((rec, reader.payload().to_vec())),
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    const EXAMPLE: &[u8] =
        b"c 0.000104 con\nc 0.000231 6\nPING\r\ns 0.000390 7\n+PONG\r\nc 1.204551 hup\ns 1.204602 hup\n";

    #[test]
    fn reads_the_format_example() {
        let (records, end) = read_all(EXAMPLE);
        end.unwrap();
        let events: Vec<_> = records
            .iter()
            .map(|(r, p)| (r.side, r.time, r.event, p.clone()))
            .collect();
        assert_eq!(
            events,
            vec![
                (Side::Client, Micros(104), Event::Con, vec![]),
                (Side::Client, Micros(231), Event::Data(6), b"PING\r\n".to_vec()),
                (Side::Server, Micros(390), Event::Data(7), b"+PONG\r\n".to_vec()),
                (Side::Client, Micros(1_204_551), Event::Hup, vec![]),
                (Side::Server, Micros(1_204_602), Event::Hup, vec![]),
            ]
        );
        assert_eq!(records[2].0.offset, 34);
        let mut reader = Reader::new(EXAMPLE);
        while reader.next_record().unwrap().is_some() {}
        let s = reader.summary();
        assert!(s.is_complete());
        assert_eq!(s.bytes, [6, 7]);
        assert_eq!(s.duration(), Micros(1_204_602 - 104));
    }

    fn error_of(bytes: &[u8]) -> ReadError {
        read_all(bytes).1.expect_err("should not read cleanly")
    }

    #[test]
    fn every_cut_of_a_valid_log_is_truncated_not_corrupt() {
        let boundaries = [0, 15, 34, 54, 69, EXAMPLE.len()];
        for cut in 0..=EXAMPLE.len() {
            let (_, end) = read_all(&EXAMPLE[..cut]);
            if boundaries.contains(&cut) {
                assert!(end.is_ok(), "cut at {cut}: {end:?}");
            } else {
                assert!(matches!(end, Err(ReadError::Truncated { .. })), "cut at {cut}: {end:?}");
            }
        }
    }

    #[test]
    fn invariant_violations_are_corrupt_with_offsets() {
        let cases: &[(&[u8], u64, &str)] = &[
            (b"c 0.000001 5\nhello", 0, "first record"),
            (b"c 0.000001 con\nc 0.000002 con\n", 15, "`con` after"),
            (b"c 0.000001 con\ns 0.000002 con\n", 15, "only recorded for the client"),
            (b"c 0.000005 con\nc 0.000004 hup\n", 15, "backwards"),
            (b"c 0.000001 con\nc 0.000002 hup\nc 0.000003 1\nx", 30, "after `c hup`"),
            (
                b"c 0.000001 con\ns 0.000002 hup\ns 0.000003 hup\n",
                30,
                "second `s hup`",
            ),
            (b"c 0.000001 con\ns 0.000002 err\nc 0.000003 hup\n", 30, "after `s err`"),
            (b"c 0.000001 con\nc 0.000002 0\n", 15, "byte count 0"),
            (b"c 0.000001 con\nc 0.000002 07\n", 15, "leading zero"),
            (b"c 0.000001 con\nc 00.000002 hup\n", 15, "leading zero"),
            (b"c 0.000001 con\nc 0.00002 hup\n", 15, "six digits"),
            (b"c 0.000001 con\nx 0.000002 hup\n", 15, "side"),
            (b"c 0.000001 con\nc 0.000002 bye\n", 15, "unknown record kind"),
            (b"c 0.000001 con\nc 0.000002 hup \n", 15, "after the header"),
            (b"c 0.000001 con\nc  0.000002 hup\n", 15, "expected"),
        ];
        for (bytes, offset, needle) in cases {
            match error_of(bytes) {
                ReadError::Corrupt { offset: o, what } => {
                    assert_eq!(o, *offset, "{what}");
                    assert!(what.contains(needle), "{what:?} lacks {needle:?}");
                }
                other => panic!("{:?}: expected corrupt, got {other:?}", String::from_utf8_lossy(bytes)),
            }
        }
    }

    #[test]
    fn only_the_payload_bytes_that_are_there_count() {
        for keep in [true, false] {
            let mut reader = Reader::new(&b"c 0.000001 con\ns 0.000002 5\nab"[..]).keep_payload(keep);
            while let Ok(Some(_)) = reader.next_record() {}
            assert_eq!(reader.summary().bytes, [0, 2], "keep_payload({keep})");
            assert_eq!(reader.summary().records, 2);
        }
    }

    #[test]
    fn a_count_no_file_can_hold_is_corrupt_not_truncated() {
        let err = error_of(b"c 0.000001 con\nc 0.000002 18446744073709551615\nabc");
        assert!(
            matches!(&err, ReadError::Corrupt { offset: 15, what } if what == "byte count 18446744073709551615 is larger than any file can hold"),
            "{err:?}"
        );
        // A record that ends at the largest file size could be one cut short.
        let largest = format!("c 0.000001 con\nc 0.000002 {}\nabc", i64::MAX as u64 - 46);
        assert!(matches!(
            error_of(largest.as_bytes()),
            ReadError::Truncated { offset: 15, .. }
        ));
        let past = format!("c 0.000001 con\nc 0.000002 {}\nabc", i64::MAX as u64 - 45);
        assert!(matches!(
            error_of(past.as_bytes()),
            ReadError::Corrupt { offset: 15, .. }
        ));
    }

    #[test]
    fn an_overlong_header_is_corrupt_not_truncated() {
        let mut bytes = b"c 0.000001 con\nc ".to_vec();
        bytes.extend(std::iter::repeat_n(b'1', 100));
        assert!(matches!(error_of(&bytes), ReadError::Corrupt { offset: 15, .. }));
    }

    #[test]
    fn skipping_payloads_reads_the_same_records() {
        let (records, _) = read_all(EXAMPLE);
        let skipped: Vec<_> = Reader::new(EXAMPLE).keep_payload(false).map(|r| r.unwrap()).collect();
        assert_eq!(records.into_iter().map(|(r, _)| r).collect::<Vec<_>>(), skipped);
    }

    type Pieces = Vec<Vec<u8>>;

    /// Reads `bytes` with payloads in pieces of at most `max` bytes, as a list of
    /// records with their pieces, and how reading ended.
    fn read_in_pieces(bytes: &[u8], max: usize) -> (Vec<(Record, Pieces)>, Result<(), ReadError>) {
        let mut reader = Reader::new(bytes).keep_payload(false);
        let mut out = Vec::new();
        loop {
            match reader.next_record() {
                Ok(Some(rec)) => {
                    let mut pieces = Vec::new();
                    loop {
                        match reader.payload_piece(max) {
                            Ok([]) => break,
                            Ok(piece) => pieces.push(piece.to_vec()),
                            Err(e) => {
                                out.push((rec, pieces));
                                return (out, Err(e));
                            }
                        }
                    }
                    out.push((rec, pieces));
                }
                Ok(None) => return (out, Ok(())),
                Err(e) => return (out, Err(e)),
            }
        }
    }

    #[test]
    fn payloads_read_in_pieces_give_every_byte_and_the_same_ends() {
        let (records, end) = read_in_pieces(EXAMPLE, 4);
        end.unwrap();
        let pieces: Vec<_> = records.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(pieces[1], [b"PING".to_vec(), b"\r\n".to_vec()]);
        assert_eq!(pieces[2], [b"+PON".to_vec(), b"G\r\n".to_vec()]);
        assert_eq!(records[2].0.offset, 34);
        // Cut inside the server's payload: the bytes that are there come first,
        // then the record is reported cut short at its offset.
        let (records, end) = read_in_pieces(&EXAMPLE[..50], 4);
        assert_eq!(records[2].1, [b"+PO".to_vec()]);
        assert!(
            matches!(&end, Err(ReadError::Truncated { offset: 34, what }) if what == "the payload ends after 3 of 7 bytes"),
            "{end:?}"
        );
    }

    #[test]
    fn payloads_left_unread_are_skipped_and_counted() {
        let mut reader = Reader::new(EXAMPLE).keep_payload(false);
        assert_eq!(reader.next_record().unwrap().unwrap().event, Event::Con);
        assert_eq!(reader.next_record().unwrap().unwrap().event, Event::Data(6));
        assert_eq!(reader.payload_piece(2).unwrap(), b"PI");
        assert_eq!(reader.payload_left(), 4);
        assert_eq!(reader.offset(), 15);
        let server = reader.next_record().unwrap().unwrap();
        assert_eq!((server.offset, reader.offset()), (34, 34));
        while reader.next_record().unwrap().is_some() {}
        assert_eq!(reader.summary().bytes, [6, 7]);
        assert_eq!(reader.offset(), EXAMPLE.len() as u64);
        // Skipping into the end of a cut file is the same truncation.
        let mut reader = Reader::new(&EXAMPLE[..50]).keep_payload(false);
        let end = loop {
            match reader.next_record() {
                Ok(Some(_)) => {}
                other => break other,
            }
        };
        assert!(matches!(end, Err(ReadError::Truncated { offset: 34, .. })), "{end:?}");
        assert_eq!(reader.summary().bytes, [6, 3]);
    }

    /// A source whose bytes arrive in steps, like a log being written: reading
    /// at the end of what has arrived gives 0, and a later read the next step.
    struct Growing {
        bytes: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
        pos: usize,
    }

    impl Read for Growing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let bytes = self.bytes.borrow();
            let n = buf.len().min(bytes.len() - self.pos);
            buf[..n].copy_from_slice(&bytes[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn following_waits_at_every_cut_and_goes_on_where_it_stopped() {
        // Every cut point of the example: whatever arrived, nothing is lost,
        // nothing is reported cut short, and the records come out whole.
        for cut in 0..=EXAMPLE.len() {
            let bytes = std::rc::Rc::new(std::cell::RefCell::new(EXAMPLE[..cut].to_vec()));
            let source = Growing {
                bytes: bytes.clone(),
                pos: 0,
            };
            let mut reader = Reader::new(source).follow(true);
            let mut seen: Vec<(Event, Vec<u8>)> = Vec::new();
            let arrive = || *bytes.borrow_mut() = EXAMPLE.to_vec();
            for _ in 0..100 {
                match reader.next_record() {
                    Ok(Some(rec)) => seen.push((rec.event, Vec::new())),
                    Ok(None) if reader.summary().is_complete() => break,
                    Ok(None) => arrive(),
                    Err(e) => panic!("cut at {cut}: {e}"),
                }
                while reader.payload_left() > 0 {
                    let piece = reader.payload_piece(3).unwrap().to_vec();
                    if piece.is_empty() {
                        arrive();
                    }
                    seen.last_mut().unwrap().1.extend(piece);
                }
            }
            assert!(reader.summary().is_complete(), "cut at {cut}");
            let shown: Vec<_> = seen.iter().map(|(e, p)| (*e, p.as_slice())).collect();
            assert_eq!(
                shown,
                [
                    (Event::Con, &b""[..]),
                    (Event::Data(6), b"PING\r\n"),
                    (Event::Data(7), b"+PONG\r\n"),
                    (Event::Hup, b""),
                    (Event::Hup, b""),
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn following_still_stops_at_a_violation_with_its_offset() {
        let mut reader = Reader::new(&b"c 0.000001 con\nc 0.000002 hup\nx"[..]).follow(true);
        reader.next_record().unwrap().unwrap();
        reader.next_record().unwrap().unwrap();
        let err = reader.next_record().unwrap_err();
        assert!(matches!(err, ReadError::Corrupt { offset: 30, .. }), "{err:?}");
    }

    /// A valid sequence of records: con, then data from either side, each side
    /// optionally hanging up, optionally ending in an err.
    /// The bytes of a log holding `records`, as the writer formats them.
    fn encode(records: &[(Side, u64, Event, Vec<u8>)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (side, t, event, payload) in records {
            let mut h = [0u8; MAX_HEADER];
            let n = crate::log::writer::format_header(&mut h, *side, Micros(*t), *event);
            bytes.extend_from_slice(&h[..n]);
            bytes.extend_from_slice(payload);
        }
        bytes
    }

    fn arb_log() -> impl Strategy<Value = Vec<(Side, u64, Event, Vec<u8>)>> {
        let step = (
            any::<bool>(),
            0u64..3_000_000,
            prop::collection::vec(any::<u8>(), 1..64),
            0u8..10,
        );
        (prop::collection::vec(step, 0..40), any::<bool>()).prop_map(|(steps, end_err)| {
            let mut time = 0;
            let mut hup = [false; 2];
            let mut out = vec![(Side::Client, 0, Event::Con, vec![])];
            for (client, dt, payload, roll) in steps {
                time += dt;
                let side = if client { Side::Client } else { Side::Server };
                if hup[side.index()] {
                    continue;
                }
                if roll == 0 {
                    hup[side.index()] = true;
                    out.push((side, time, Event::Hup, vec![]));
                } else {
                    out.push((side, time, Event::Data(payload.len()), payload));
                }
            }
            if end_err {
                out.push((Side::Server, time + 1, Event::Err, vec![]));
            }
            out
        })
    }

    proptest! {
        #[test]
        fn what_the_writer_writes_reads_back(records in arb_log()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("log");
            let file = std::fs::File::create(&path).unwrap();
            let mut writer = LogWriter::from_file(file, path.clone());
            for (side, t, event, payload) in &records {
                writer.append(*side, Micros(*t), *event, payload).unwrap();
            }
            let bytes = std::fs::read(&path).unwrap();
            prop_assert_eq!(bytes.len() as u64, writer.len());
            let (read, end) = read_all(&bytes);
            prop_assert!(end.is_ok());
            let read: Vec<_> = read.into_iter().map(|(r, p)| (r.side, r.time.0, r.event, p)).collect();
            prop_assert_eq!(read, records);
        }

        #[test]
        fn pieces_read_what_whole_payloads_read(records in arb_log(), cut in any::<prop::sample::Index>(), max in 1usize..20) {
            let bytes = encode(&records);
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            let (whole, whole_end) = read_all(bytes);
            let (pieces, pieces_end) = read_in_pieces(bytes, max);
            // A record cut inside its payload is returned, with the bytes it has,
            // before the error; whole payloads return only whole records.
            let pieces: Vec<_> = pieces.into_iter().map(|(r, p)| (r, p.concat())).collect();
            prop_assert_eq!(&pieces[..whole.len()], &whole[..]);
            prop_assert!(pieces.len() <= whole.len() + 1);
            match (whole_end, pieces_end) {
                (Ok(()), Ok(())) => prop_assert_eq!(pieces.len(), whole.len()),
                (Err(ReadError::Truncated { offset: a, what: x }), Err(ReadError::Truncated { offset: b, what: y })) => {
                    prop_assert_eq!((a, x), (b, y));
                }
                (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&bytes);
        }

        #[test]
        fn mutated_logs_never_panic(records in arb_log(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = encode(&records);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = read_all(&bytes);
        }
    }
}
