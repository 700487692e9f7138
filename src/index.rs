//! The run index: `<root>_index.jsonl`, one JSON line per connection, written when
//! the connection ends.
//!
//! A log holds only what crossed the connection and when; the index holds what the
//! log format has no room for: the peers' addresses, the wall-clock start, and why
//! each side ended. `netrecord pcap` reads it to give packets real addresses and
//! times. The file is opened for append and each line is written with one `write`,
//! so lines from connections ending at the same moment never interleave, and a
//! restart with the same root adds to the index instead of replacing it.
//!
//! A line looks like (wrapped here):
//!
//! ```text
//! {"conn":1,"log":"/tmp/rec_1","client":"127.0.0.1:50312","upstream":"127.0.0.1:6379",
//!  "start_unix_us":1795710633123456,"start_us":104,"end_us":1204602,
//!  "client_bytes":6,"server_bytes":7,"client_end":"hup","client_error":null,
//!  "server_end":"hup","server_error":null,"log_error":null}
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::escape;
use crate::log::End;

/// One connection's line in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The connection number: the `N` of its log `<root>_N`.
    pub conn: u64,
    /// The log file's path as netrecord created it.
    pub log: PathBuf,
    /// The client's address.
    pub client: SocketAddr,
    /// The upstream address the connection used; `null` if none could be reached.
    pub upstream: Option<SocketAddr>,
    /// When the connection was accepted, in microseconds since the Unix epoch.
    pub start_unix_us: u64,
    /// When it was accepted, on the log's clock (the `con` record's time).
    pub start_us: u64,
    /// When it ended (or netrecord stopped), on the log's clock.
    pub end_us: u64,
    /// Bytes the client sent through netrecord.
    pub client_bytes: u64,
    /// Bytes the server sent through netrecord.
    pub server_bytes: u64,
    pub client_end: End,
    /// The OS error text when `client_end` is `err`.
    pub client_error: Option<String>,
    pub server_end: End,
    /// The OS error text when `server_end` is `err` (e.g. why the connect failed).
    pub server_error: Option<String>,
    /// Why recording stopped early for this connection (e.g. the disk filled up).
    pub log_error: Option<String>,
}

/// The index file's path for a log root: `<root>_index.jsonl`.
pub fn index_path(root: &Path) -> PathBuf {
    let mut name = root.as_os_str().to_owned();
    name.push("_index.jsonl");
    PathBuf::from(name)
}

/// Whether `path` names a run index rather than a log: a shell glob of a run
/// (`rec_*`) matches its index too, and readers leave it out.
pub fn is_index_path(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.as_encoded_bytes().ends_with(b"_index.jsonl"))
}

/// The index, open for append, shared by every connection of a run.
#[derive(Debug)]
pub struct IndexWriter {
    file: Mutex<File>,
    path: PathBuf,
}

impl IndexWriter {
    /// Opens (creating if needed, mode 0600) the index for `root`.
    pub fn open(root: &Path) -> io::Result<IndexWriter> {
        let path = index_path(root);
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        reserve(&file);
        Ok(IndexWriter {
            file: Mutex::new(file),
            path,
        })
    }

    /// The index file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry as one line, in one write.
    pub fn append(&self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)?;
        reserve(&file);
        Ok(())
    }
}

/// Space kept allocated past the index's end.
const RESERVE: i64 = 64 * 1024;

/// Keeps `RESERVE` bytes allocated past the end of the index without changing its
/// size, so that when the disk fills up (and the logs stop recording) the index
/// lines that say why can still be written. Best effort: a file system without
/// `fallocate` simply gets no reserve.
fn reserve(file: &File) {
    use std::os::fd::AsRawFd;
    let Ok(len) = file.metadata().map(|m| m.len() as i64) else {
        return;
    };
    // SAFETY: fallocate on a file descriptor we own; KEEP_SIZE leaves its length alone.
    unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, len, RESERVE) };
}

/// Reads every entry of an index file, with a `netrecord:` note on stderr for
/// each line it skips (see [`read_index_noting`]).
pub fn read_index(path: &Path) -> anyhow::Result<Vec<Entry>> {
    read_index_noting(path, &mut |note| crate::process::say!("{note}"))
}

/// Reads every entry of an index file. A line that is not an entry (cut short
/// because netrecord was killed while writing it, or torn by a crash and run
/// together with the next run's first line) costs only itself: it is skipped and
/// `note` says which line of which file and why, and the entries around it are
/// kept. Only a file that cannot be opened or read is an error.
pub fn read_index_noting(path: &Path, note: &mut dyn FnMut(String)) -> anyhow::Result<Vec<Entry>> {
    let file = File::open(path).with_context(|| format!("failed to open index {}", escape::path(path)))?;
    let mut entries = Vec::new();
    let mut lines = BufReader::new(file).split(b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let line = line.with_context(|| format!("failed to read index {}", escape::path(path)))?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(entry) => entries.push(entry),
            Err(e) => {
                let why = if e.is_eof() && lines.peek().is_none() {
                    "it is cut short (netrecord stopped while writing it)".to_string()
                } else {
                    format!("it is not a valid entry ({e})")
                };
                note(format!("skipped line {} of index {}: {why}", i + 1, escape::path(path)));
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(conn: u64) -> Entry {
        Entry {
            conn,
            log: PathBuf::from(format!("/tmp/rec_{conn}")),
            client: "127.0.0.1:50312".parse().unwrap(),
            upstream: Some("[::1]:6379".parse().unwrap()),
            start_unix_us: 1_795_710_633_123_456,
            start_us: 104,
            end_us: 1_204_602,
            client_bytes: 6,
            server_bytes: 7,
            client_end: End::Hup,
            client_error: None,
            server_end: End::Err,
            server_error: Some("Connection reset by peer (os error 104)".into()),
            log_error: None,
        }
    }

    #[test]
    fn entries_round_trip_and_a_cut_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let index = IndexWriter::open(&root).unwrap();
        index.append(&entry(1)).unwrap();
        index.append(&entry(2)).unwrap();
        let text = std::fs::read_to_string(index.path()).unwrap();
        assert!(
            text.starts_with(r#"{"conn":1,"log":"/tmp/rec_1","client":"127.0.0.1:50312","upstream":"[::1]:6379","#)
        );
        assert_eq!(read_index(index.path()).unwrap(), vec![entry(1), entry(2)]);
    }

    fn read_with_notes(path: &Path) -> (Vec<Entry>, Vec<String>) {
        let mut notes = Vec::new();
        let entries = read_index_noting(path, &mut |n| notes.push(n)).unwrap();
        (entries, notes)
    }

    #[test]
    fn a_bad_or_torn_line_is_skipped_with_a_note_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec_index.jsonl");
        let line = |n| serde_json::to_string(&entry(n)).unwrap();
        // A line cut short at the end of the file.
        let whole = format!("{}\n{}\n", line(1), line(2));
        std::fs::write(&path, &whole[..whole.len() - 10]).unwrap();
        let (entries, notes) = read_with_notes(&path);
        assert_eq!(entries, vec![entry(1)]);
        assert_eq!(
            notes,
            [format!(
                "skipped line 2 of index {}: it is cut short (netrecord stopped while writing it)",
                path.display()
            )]
        );
        // A line torn by a crash and run into the next run's first line, a line
        // that is JSON but no entry, and garbage: each costs only itself.
        let torn = &line(2)[..40];
        std::fs::write(
            &path,
            format!("{}\n{torn}{}\n{{\"conn\":4}}\nx\n{}\n", line(1), line(3), line(5)),
        )
        .unwrap();
        let (entries, notes) = read_with_notes(&path);
        assert_eq!(entries, vec![entry(1), entry(5)]);
        assert_eq!(notes.len(), 3, "{notes:?}");
        for (note, line) in notes.iter().zip([2, 3, 4]) {
            let prefix = format!(
                "skipped line {line} of index {}: it is not a valid entry (",
                path.display()
            );
            assert!(note.starts_with(&prefix), "{notes:?}");
        }
        assert!(notes[1].contains("missing field `log`"), "{notes:?}");
    }
}
