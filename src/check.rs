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
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::CheckArgs;
use crate::escape;
use crate::log::{End, ReadError, Reader, Side, Summary};
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

/// The JSON form of a verdict, for `check --json`: one object per log.
///
/// ```text
/// {"log":"rec_1","valid":true,"complete":true,"records":5,"client_bytes":6,"server_bytes":7,
///  "first_us":104,"last_us":1204602,"duration_us":1204498,"client_end":"hup","server_end":"hup",
///  "truncated":null,"error":null}
/// ```
///
/// `valid` is the exit status's verdict; `complete`, whether the log holds its
/// connection's end (both `hup`s or an `err`); `first_us`, `last_us`: the times
/// of the first and last records (`null` in an empty log); `truncated`, where a
/// log cut short ends (`{"offset":..,"what":..}`); `error`, why a log is not
/// valid: `{"kind":"corrupt","offset":..,"what":..}` or `{"kind":"unreadable",
/// "offset":null,"what":..}`. The counts are of the valid records before either.
#[derive(Debug, serde::Serialize)]
pub struct JsonVerdict {
    pub log: String,
    pub valid: bool,
    pub complete: bool,
    pub records: u64,
    pub client_bytes: u64,
    pub server_bytes: u64,
    pub first_us: Option<u64>,
    pub last_us: Option<u64>,
    pub duration_us: u64,
    pub client_end: End,
    pub server_end: End,
    pub truncated: Option<Problem>,
    pub error: Option<Problem>,
}

/// Where and why reading a log stopped early, in [`JsonVerdict`].
#[derive(Debug, serde::Serialize)]
pub struct Problem {
    /// `"corrupt"` or `"unreadable"` for an error; absent for a cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub offset: Option<u64>,
    pub what: String,
}

impl JsonVerdict {
    /// The verdict on the log at `path`.
    pub fn new(path: &Path, verdict: &Verdict) -> JsonVerdict {
        let s = &verdict.summary;
        let (truncated, error) = match &verdict.end {
            Ok(()) => (None, None),
            Err(ReadError::Truncated { offset, what }) => (
                Some(Problem {
                    kind: None,
                    offset: Some(*offset),
                    what: what.clone(),
                }),
                None,
            ),
            Err(ReadError::Corrupt { offset, what }) => (
                None,
                Some(Problem {
                    kind: Some("corrupt"),
                    offset: Some(*offset),
                    what: what.clone(),
                }),
            ),
            Err(e @ ReadError::Io(_)) => (None, Some(unreadable(e.to_string()))),
        };
        JsonVerdict {
            log: path.to_string_lossy().into_owned(),
            valid: verdict.is_valid(),
            complete: s.is_complete(),
            records: s.records,
            client_bytes: s.bytes[Side::Client.index()],
            server_bytes: s.bytes[Side::Server.index()],
            first_us: s.first.map(|t| t.0),
            last_us: s.last.map(|t| t.0),
            duration_us: s.duration().0,
            client_end: s.end(Side::Client),
            server_end: s.end(Side::Server),
            truncated,
            error,
        }
    }

    /// The verdict on a log that could not be opened.
    fn unopened(path: &Path, error: &io::Error) -> JsonVerdict {
        let mut verdict = JsonVerdict::new(
            path,
            &Verdict {
                summary: Summary::default(),
                end: Ok(()),
            },
        );
        verdict.valid = false;
        verdict.error = Some(unreadable(format!("failed to open: {error}")));
        verdict
    }
}

fn unreadable(what: String) -> Problem {
    Problem {
        kind: Some("unreadable"),
        offset: None,
        what,
    }
}

/// Runs `netrecord check`.
pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    let mut bad = 0;
    let logs = crate::log::logs_in_order(&args.logs);
    for path in &logs {
        let (valid, line) = match File::open(path) {
            Ok(file) => {
                let verdict = check(file);
                let line = if args.json {
                    json_line(&JsonVerdict::new(path, &verdict))
                } else {
                    format!("{}: {verdict}", escape::path(path))
                };
                (verdict.is_valid(), line)
            }
            Err(e) if args.json => (false, json_line(&JsonVerdict::unopened(path, &e))),
            Err(e) => (
                false,
                format!("{}: unreadable, failed to open: {e}", escape::path(path)),
            ),
        };
        if !valid {
            bad += 1;
        }
        writeln!(out, "{line}").context("failed to write to stdout")?;
    }
    out.flush().context("failed to write to stdout")?;
    if bad == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    say!("{bad} of {} logs not valid", logs.len());
    Ok(ExitCode::FAILURE)
}

fn json_line(verdict: &JsonVerdict) -> String {
    serde_json::to_string(verdict).expect("a verdict is always JSON")
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

    #[test]
    fn json_has_every_count_and_the_violation_with_its_offset() {
        let json = |log: &[u8]| serde_json::to_value(JsonVerdict::new(Path::new("rec_1"), &check(log))).unwrap();
        assert_eq!(
            json(EXAMPLE),
            serde_json::json!({
                "log": "rec_1", "valid": true, "complete": true, "records": 5,
                "client_bytes": 6, "server_bytes": 7, "first_us": 104, "last_us": 1_204_602,
                "duration_us": 1_204_498, "client_end": "hup", "server_end": "hup",
                "truncated": null, "error": null,
            })
        );
        let cut = json(&EXAMPLE[..50]);
        assert_eq!(
            cut["truncated"],
            serde_json::json!({"offset": 34, "what": "the payload ends after 3 of 7 bytes"})
        );
        assert_eq!(
            (&cut["valid"], &cut["server_bytes"], &cut["server_end"]),
            (&true.into(), &3.into(), &"open".into())
        );
        let mut bad = EXAMPLE.to_vec();
        bad[65] = b'x';
        let bad = json(&bad);
        assert_eq!(bad["valid"], false);
        assert_eq!(
            bad["error"],
            serde_json::json!({"kind": "corrupt", "offset": 54, "what": "unknown record kind \"xup\""})
        );
        assert_eq!(json(b"")["first_us"], serde_json::Value::Null);
    }
}
