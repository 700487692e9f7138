//! The netrecord log format: what one connection's recording looks like on disk.
//!
//! This module is the format's home in the code. The contract is `FORMAT.md` at
//! the root of the repository (the log format, connection numbers, the run index
//! and permissions); the summary here must agree with it, and where they disagree
//! the code is wrong.
//!
//! One log file per accepted connection, named `<root>_<N>` (N = 1, 2, ... in accept
//! order, skipping names that already exist), created with mode 0600. A log is a
//! sequence of records and nothing else. Each record is one header line
//!
//! ```text
//! <side> <time> <what>\n
//! ```
//!
//! where `<side>` is `c` (the client) or `s` (the server), `<time>` is seconds since
//! netrecord started on a monotonic clock, written `<integer>.<six digits>`, and
//! `<what>` is one of:
//!
//! - `con`: the connection was accepted (only as `c <time> con`, always first);
//! - a byte count `N >= 1` (no sign, no leading zeros): exactly N raw payload bytes
//!   follow the newline, with nothing after them;
//! - `hup`: that side closed its sending half;
//! - `err`: that side's connection failed; always the last record.
//!
//! For example, a client that sends `PING\r\n`, gets `+PONG\r\n` and hangs up:
//!
//! ```text
//! c 0.000104 con
//! c 0.000231 6
//! PING
//! s 0.000390 7
//! +PONG
//! c 1.204551 hup
//! s 1.204602 hup
//! ```
//!
//! Invariants every valid log holds, checked by [`Reader`]: `con` first and only
//! first; times never decrease; no data from a side after its `hup`, at most one
//! `hup` per side; nothing after `err`. A log that ends without both `hup`s or an
//! `err` is a connection still open or cut short, never an error in itself. Cut
//! short by a full disk, a size limit or a stop, it ends after a whole record; by
//! `kill -9`, its last record may be cut inside its payload ([`ReadError::Truncated`]).
//!
//! [`writer`] produces records (one write per record, timestamp taken under the
//! connection's lock) and [`reader`] parses them back as a stream.

mod order;
mod reader;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use order::{connection_number, connection_numbers, logs_in_order};
pub use reader::{ReadError, Reader, Record, Summary};
pub use writer::{LogWriter, MAX_HEADER};

/// One of the two peers of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The peer that connected to netrecord.
    Client,
    /// The upstream server netrecord connected to on the client's behalf.
    Server,
}

impl Side {
    /// The letter that starts this side's record headers.
    pub fn letter(self) -> char {
        match self {
            Side::Client => 'c',
            Side::Server => 's',
        }
    }

    /// The peer on the other end of the proxy.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// `"client"` or `"server"`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// An index for per-side arrays: client 0, server 1.
    pub fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// What a record says after its time: the header's `<what>` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// `con`: the connection was accepted.
    Con,
    /// A payload of this many bytes follows the header.
    Data(usize),
    /// `hup`: the side closed its sending half.
    Hup,
    /// `err`: the side's connection failed.
    Err,
}

/// How one side of a connection ended: the one word set used by the recorder,
/// the run index and every reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    /// Not ended: the connection was still open when the log (or netrecord) stopped.
    Open,
    /// It closed its sending half (`hup`).
    Hup,
    /// Its connection failed (`err`).
    Err,
}

impl End {
    /// `"open"`, `"hup"` or `"err"`, as the index and the summaries write it.
    pub fn word(self) -> &'static str {
        match self {
            End::Open => "open",
            End::Hup => "hup",
            End::Err => "err",
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A time on the log's clock: microseconds since netrecord started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub u64);

impl Micros {
    /// The time as fractional seconds, for durations in messages.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

/// Formats as the log writes it: `<seconds>.<six digits>`.
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// The one monotonic clock that every log of a run is stamped with, so that the
/// times in different files of the same run are comparable.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// Starts the clock at zero now.
    pub fn start() -> Clock {
        Clock { start: Instant::now() }
    }

    /// The time elapsed since the clock started.
    pub fn now(&self) -> Micros {
        Micros(self.start.elapsed().as_micros() as u64)
    }
}

/// The path of connection `n`'s log: `<root>_<n>`.
pub fn log_path(root: &Path, n: u64) -> PathBuf {
    let mut name = root.as_os_str().to_owned();
    name.push(format!("_{n}"));
    PathBuf::from(name)
}

/// The inverse of [`log_path`]: the root and connection number of a log named
/// `<root>_<N>`, or `None` if the name does not end in `_` and decimal digits.
pub fn split_log_path(path: &Path) -> Option<(PathBuf, u64)> {
    let name = path.file_name()?.to_str()?;
    let (stem, number) = name.rsplit_once('_')?;
    if stem.is_empty() || number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((path.with_file_name(stem), number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_display_has_six_digits() {
        assert_eq!(Micros(0).to_string(), "0.000000");
        assert_eq!(Micros(512).to_string(), "0.000512");
        assert_eq!(Micros(73_120_004).to_string(), "73.120004");
    }

    #[test]
    fn log_path_appends_number() {
        assert_eq!(log_path(Path::new("/tmp/rec"), 3), Path::new("/tmp/rec_3"));
    }

    #[test]
    fn split_log_path_inverts_log_path() {
        let split = |p: &str| split_log_path(Path::new(p));
        assert_eq!(split("/tmp/my_rec_12"), Some((PathBuf::from("/tmp/my_rec"), 12)));
        assert_eq!(split("/tmp/rec_index.jsonl"), None);
        assert_eq!(split("/tmp/rec_+3"), None);
        assert_eq!(split("/tmp/rec_"), None);
        assert_eq!(split("/tmp/_3"), None);
        assert_eq!(split("/tmp/rec"), None);
    }
}
