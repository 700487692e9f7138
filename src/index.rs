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
//!  "server_end":"hup","server_error":null,"log_error":null,"listen":"127.0.0.1:7000",
//!  "upstream_name":"localhost:6379"}
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
    /// The log file's path as netrecord created it: a JSON string, or, for a
    /// path that is not UTF-8, its bytes as `{"Unix":[...]}` (see [`path_text`]).
    #[serde(with = "path_text")]
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
    /// The proxy address the client connected to: which forward of the run it
    /// came through (absent in indexes of older versions).
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The server as the user named it (`db.local:5432`), for knowing which
    /// service a log belongs to (absent in indexes of older versions).
    #[serde(default)]
    pub upstream_name: Option<String>,
    /// `null` for a plain connection; else one entry per leg that used TLS.
    #[serde(default)]
    pub tls: Option<TlsInfo>,
}

/// The TLS of one connection: one entry per leg that used TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// Between the client and netrecord (`--tls-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<TlsLeg>,
    /// Between netrecord and the server (`--tls-upstream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<TlsLeg>,
}

/// One leg's TLS session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsLeg {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The server name the client asked for (SNI); `null` when none.
    pub sni: Option<String>,
    /// The application protocol agreed (ALPN), e.g. `h2`; `null` when none.
    pub alpn: Option<String>,
    /// The server leg only: the subject of the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_subject: Option<String>,
    /// The server leg only: SHA-256 of the server's certificate (DER), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// How that peer hung up: `close_notify`, or `fin_without_close_notify` when
    /// it closed TCP without a TLS close_notify; `null` if it did not hang up.
    pub hangup: Option<String>,
}

/// How a path goes into the index: as a JSON string when it is UTF-8 (as it
/// almost always is), else in serde's lossless form for an OS string,
/// `{"Unix":[<byte>,...]}`, the path's bytes, so a reader can still find the
/// file (in Python: `os.fsdecode(bytes(entry["log"]["Unix"]))`).
pub mod path_text {
    use std::ffi::OsString;
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => serializer.serialize_str(text),
            None => path.as_os_str().serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Bytes(OsString),
        }
        Ok(match Written::deserialize(deserializer)? {
            Written::Text(text) => PathBuf::from(text),
            Written::Bytes(bytes) => PathBuf::from(bytes),
        })
    }
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
    file: Mutex<Appending>,
    path: PathBuf,
}

/// The open index, and how far past its end space is reserved.
#[derive(Debug)]
pub struct Appending {
    file: File,
    /// The file's end as this writer last read it, plus what it has written
    /// since (another netrecord sharing the root may have added more).
    end: u64,
    /// Where the space reserved at the last [`reserve`] ends.
    reserved: u64,
}

impl IndexWriter {
    /// Opens (creating if needed, mode 0600) the index for `root`.
    ///
    /// An existing index must be one this user made: a regular file (not a
    /// symlink, a FIFO or a hard link to some other file) owned by the effective
    /// user and writable by nobody else. Otherwise another user could have
    /// prepared it to read the lines, or to make netrecord append to a file of
    /// its choosing; it is refused before anything is written.
    pub fn open(root: &Path) -> anyhow::Result<IndexWriter> {
        let path = index_path(root);
        let refuse = |why: String| anyhow::anyhow!("refusing the index {}: {why}", path.display());
        // Checked before opening, so that a FIFO planted there cannot block the
        // open; and again on the open file, so that a swap in between is caught.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => check_own(&meta).map_err(refuse)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("failed to open index {}", path.display())),
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .with_context(|| format!("failed to open index {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("failed to read index {}", path.display()))?;
        check_own(&meta).map_err(refuse)?;
        reserve(&file, meta.len());
        Ok(IndexWriter {
            file: Mutex::new(Appending {
                file,
                end: meta.len(),
                reserved: meta.len() + RESERVE,
            }),
            path,
        })
    }

    /// The index file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's lock, for the proxy's exit at once: holding it means no line
    /// is half-written.
    pub fn lock(&self) -> &Mutex<Appending> {
        &self.file
    }

    /// Appends one entry as one line, in one write. A line is never left torn:
    /// if the write fails partway (the disk is full past the reserve), the file
    /// is cut back by what of the line got in, as the log writer does with
    /// records.
    pub fn append(&self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut index = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut written = 0;
        while written < line.len() {
            match index.file.write(&line[written..]) {
                Ok(0) => return Err(index.take_back(written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(index.take_back(written, e)),
            }
        }
        index.end += written as u64;
        // The reserve is renewed once half of it is used, not for every line:
        // it costs two system calls (measured: a tenth of a short connection's).
        if index.end + RESERVE / 2 > index.reserved {
            if let Ok(meta) = index.file.metadata() {
                index.end = meta.len();
            }
            reserve(&index.file, index.end);
            index.reserved = index.end + RESERVE;
        }
        Ok(())
    }
}

impl Appending {
    /// Cuts off the `written` bytes of a line whose write failed partway, and
    /// returns the write's error. Appends go to the end, whatever it is (another
    /// netrecord may share the root), so the cut is from the end as it is now.
    fn take_back(&mut self, written: usize, error: io::Error) -> io::Error {
        if written > 0
            && let Ok(meta) = self.file.metadata()
        {
            let _ = self.file.set_len(meta.len().saturating_sub(written as u64));
            self.end = meta.len().saturating_sub(written as u64);
        }
        error
    }
}

/// Whether an existing index is this user's own: a regular file with one name,
/// owned by the effective user, writable by no one else.
fn check_own(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err("it is a symbolic link".into());
    }
    if !kind.is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.uid() != me {
        return Err(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {:04o}); chmod 600 it if it is yours",
            meta.mode() & 0o7777
        ));
    }
    if meta.nlink() != 1 {
        return Err(format!("it has {} hard links; an index has one name", meta.nlink()));
    }
    Ok(())
}

/// Space kept allocated past the index's end: renewed whenever less than half of
/// it is left.
const RESERVE: u64 = 64 * 1024;

/// Allocates `RESERVE` bytes past the end of the index (`len` bytes long)
/// without changing its size, so that when the disk fills up (and the logs stop
/// recording) the index lines that say why can still be written. Best effort: a
/// file system without `fallocate` simply gets no reserve.
fn reserve(file: &File, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on a file descriptor we own; KEEP_SIZE leaves its length alone.
    unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, len as i64, RESERVE as i64) };
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

/// An index entry for tests: connection `conn`, logged in `log`, accepted at
/// `start_unix_us` (wall clock) and `start_us` (its run's clock).
#[cfg(test)]
pub(crate) fn test_entry(conn: u64, log: &Path, start_unix_us: u64, start_us: u64) -> Entry {
    Entry {
        conn,
        log: log.to_path_buf(),
        client: "127.0.0.1:50312".parse().unwrap(),
        upstream: Some("127.0.0.1:6379".parse().unwrap()),
        start_unix_us,
        start_us,
        end_us: start_us + 10,
        client_bytes: 0,
        server_bytes: 0,
        client_end: End::Hup,
        client_error: None,
        server_end: End::Hup,
        server_error: None,
        log_error: None,
        listen: None,
        upstream_name: None,
        tls: None,
    }
}

/// A run index for `root` holding connections 1 and 2 of one run (`<root>_1`,
/// `<root>_2`, started 3 µs apart) and connection 3 of a later run, logged
/// elsewhere (`/elsewhere/rec_3`).
#[cfg(test)]
pub(crate) fn write_test_index(root: &Path) {
    let index = IndexWriter::open(root).unwrap();
    let log = |n| crate::log::log_path(root, n);
    index.append(&test_entry(1, &log(1), 5_000_100, 100)).unwrap();
    index.append(&test_entry(2, &log(2), 5_002_003, 2_000)).unwrap();
    index
        .append(&test_entry(3, Path::new("/elsewhere/rec_3"), 9_000_050, 50))
        .unwrap();
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
            tls: None,
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            upstream_name: Some("localhost:6379".into()),
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
        assert!(
            text.contains(r#""log_error":null,"listen":"127.0.0.1:7000","upstream_name":"localhost:6379","tls":null}"#)
        );
        assert_eq!(read_index(index.path()).unwrap(), vec![entry(1), entry(2)]);
    }

    #[test]
    fn space_stays_reserved_past_the_end_as_the_index_grows() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let index = IndexWriter::open(&root).unwrap();
        // Far more than one reserve's worth of lines.
        for n in 1..=2_000 {
            index.append(&entry(n)).unwrap();
        }
        let meta = std::fs::metadata(index_path(&root)).unwrap();
        assert!(meta.len() > 3 * RESERVE, "{} bytes", meta.len());
        assert!(
            meta.blocks() * 512 >= meta.len() + RESERVE / 2,
            "{} bytes allocated for {} bytes",
            meta.blocks() * 512,
            meta.len()
        );
        assert_eq!(read_index(&index_path(&root)).unwrap().len(), 2_000);
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

    #[test]
    fn lines_of_older_versions_still_read() {
        let mut old = serde_json::to_value(entry(1)).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("listen");
        fields.remove("upstream_name");
        let e: Entry = serde_json::from_value(old).unwrap();
        assert_eq!((e.listen, e.upstream_name), (None, None));
    }

    #[test]
    fn a_path_that_is_not_utf8_is_written_as_its_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let mut e = entry(1);
        e.log = PathBuf::from(std::ffi::OsStr::from_bytes(b"/t/r\xff_1"));
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.contains(r#""log":{"Unix":[47,116,47,114,255,95,49]}"#), "{line}");
        assert_eq!(serde_json::from_str::<Entry>(&line).unwrap(), e);
    }
}
