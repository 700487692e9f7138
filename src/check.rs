//! `netrecord check`: validates logs against the format and summarises each in
//! one line.
//!
//! The reader checks every invariant of the format as it goes; check only reads
//! each log to its end with payloads skipped (so it runs at the speed of reading
//! the file) and says what the records add up to:
//!
//! ```text
//! rec_1: valid, 6 records, client 89 bytes, server 200 bytes, 0.007922 s, client hup, server hup
//! cut_1: valid, 3 records, client 89 bytes, server 67 bytes, 0.006126 s, truncated at byte 118 (the payload ends after 67 of 185 bytes)
//! rec_3: valid, 3 records, client 6 bytes, server 7 bytes, 0.000286 s, open
//! bad_2: invalid, corrupt record at byte 0: side is 'x', not `c` or `s`
//! ```
//!
//! Logs are checked in the order `show` reads them (a run's index, matched by a
//! glob like `rec_*`, is left out: it is not a log).
//!
//! A log that ends before its connection did (still open, or cut short inside a
//! record) is valid: the format promises only whole records before the cut. The
//! exit status is 1 if any log is invalid or cannot be read.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::CheckArgs;
use crate::escape;
use crate::log::{ReadError, Reader, Side, Summary};
use crate::process::say;

/// What checking one log found.
#[derive(Debug)]
pub struct Verdict {
    /// What the valid records add up to.
    pub summary: Summary,
    /// How reading ended: `Ok` at a clean end of whole records, else the error
    /// (a truncated tail is still a valid log).
    pub end: Result<(), ReadError>,
}

impl Verdict {
    /// Whether the log holds to the format (a truncated tail included).
    pub fn is_valid(&self) -> bool {
        matches!(self.end, Ok(()) | Err(ReadError::Truncated { .. }))
    }
}

/// Reads a whole log from `input`, checking every record.
pub fn check(input: impl Read) -> Verdict {
    let mut reader = Reader::new(input).keep_payload(false);
    let end = loop {
        match reader.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    Verdict {
        summary: reader.summary().clone(),
        end,
    }
}

/// The summary line, without the file name.
impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        match &self.end {
            Err(e @ ReadError::Io(_)) => return write!(f, "unreadable, {e}"),
            Err(e @ ReadError::Corrupt { .. }) => return write!(f, "invalid, {e}"),
            _ => {}
        }
        write!(
            f,
            "valid, {} record{}, client {} bytes, server {} bytes, {} s, ",
            s.records,
            if s.records == 1 { "" } else { "s" },
            s.bytes[Side::Client.index()],
            s.bytes[Side::Server.index()],
            s.duration(),
        )?;
        match (&self.end, s.err) {
            (Err(ReadError::Truncated { offset, what }), _) => write!(f, "truncated at byte {offset} ({what})"),
            (_, Some(side)) => write!(f, "{} err", side.name()),
            _ if !s.hup[0] && !s.hup[1] => write!(f, "open"),
            _ => write!(f, "client {}, server {}", s.end(Side::Client), s.end(Side::Server)),
        }
    }
}

/// Runs `netrecord check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    let mut bad = 0;
    let logs = crate::log::logs_in_order(&args.logs);
    for path in &logs {
        let line = match File::open(path) {
            Ok(file) => {
                let verdict = check(file);
                if !verdict.is_valid() {
                    bad += 1;
                }
                verdict.to_string()
            }
            Err(e) => {
                bad += 1;
                format!("unreadable, failed to open: {e}")
            }
        };
        writeln!(out, "{}: {line}", escape::path(path)).context("failed to write to stdout")?;
    }
    out.flush().context("failed to write to stdout")?;
    if bad == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    say!("{bad} of {} logs not valid", logs.len());
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] =
        b"c 0.000104 con\nc 0.000231 6\nPING\r\ns 0.000390 7\n+PONG\r\nc 1.204551 hup\ns 1.204602 hup\n";

    fn line(log: &[u8]) -> (bool, String) {
        let verdict = check(log);
        (verdict.is_valid(), verdict.to_string())
    }

    #[test]
    fn a_complete_log_is_summarised() {
        assert_eq!(
            line(EXAMPLE),
            (
                true,
                "valid, 5 records, client 6 bytes, server 7 bytes, 1.204498 s, client hup, server hup".into()
            )
        );
    }

    #[test]
    fn open_half_closed_and_failed_connections_say_how_they_ended() {
        assert_eq!(
            line(&EXAMPLE[..54]).1,
            "valid, 3 records, client 6 bytes, server 7 bytes, 0.000286 s, open"
        );
        assert_eq!(
            line(&EXAMPLE[..69]).1,
            "valid, 4 records, client 6 bytes, server 7 bytes, 1.204447 s, client hup, server open"
        );
        assert_eq!(
            line(b"c 0.000001 con\ns 0.000002 err\n").1,
            "valid, 2 records, client 0 bytes, server 0 bytes, 0.000001 s, server err"
        );
        assert_eq!(
            line(b"").1,
            "valid, 0 records, client 0 bytes, server 0 bytes, 0.000000 s, open"
        );
    }

    #[test]
    fn a_cut_log_is_valid_and_truncated() {
        assert_eq!(
            line(&EXAMPLE[..40]),
            (
                true,
                "valid, 2 records, client 6 bytes, server 0 bytes, 0.000127 s, \
                 truncated at byte 34 (the file ends inside the header line)"
                    .into()
            )
        );
    }

    #[test]
    fn a_corrupt_log_is_invalid_naming_the_offset() {
        let mut log = EXAMPLE.to_vec();
        log[65] = b'x'; // `c 1.204551 hup` becomes `c 1.204551 xup`.
        let (valid, text) = line(&log);
        assert!(!valid);
        assert_eq!(text, "invalid, corrupt record at byte 54: unknown record kind \"xup\"");
    }
}
