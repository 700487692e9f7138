//! Writing one connection's log: creating the file without touching an existing
//! one, and appending whole records.
//!
//! The proxy holds a [`LogWriter`] behind the connection's mutex; the relay threads
//! call [`LogWriter::append`] with the lock held, so records from the two directions
//! never interleave and the time written is the order in the file.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Event, Micros, Side, log_path};

/// The longest header line: side, two spaces, a 20-digit integer part, a dot, six
/// digits, a 20-digit count and the newline fit in 64 bytes.
pub const MAX_HEADER: usize = 64;

/// Formats a record header into `buf` and returns its length.
pub fn format_header(buf: &mut [u8; MAX_HEADER], side: Side, time: Micros, what: Event) -> usize {
    let mut cursor = io::Cursor::new(&mut buf[..]);
    // Writing into a 64-byte buffer cannot fail: the longest header fits.
    let _ = match what {
        Event::Con => writeln!(cursor, "{} {} con", side.letter(), time),
        Event::Data(n) => writeln!(cursor, "{} {} {}", side.letter(), time, n),
        Event::Hup => writeln!(cursor, "{} {} hup", side.letter(), time),
        Event::Err => writeln!(cursor, "{} {} err", side.letter(), time),
    };
    cursor.position() as usize
}

/// A log that has grown to this size gets the file system space for its next
/// [`AHEAD`] bytes allocated in one call, ahead of the records that will fill it.
/// Small logs (most connections) never pay for the extra system call.
const AHEAD_FROM: u64 = 1 << 20;
const AHEAD: u64 = 8 << 20;

/// `statfs` type of tmpfs, where allocating ahead does not pay (see
/// [`LogWriter::allocate_ahead`]).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// An open log file that records are appended to.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    /// Bytes of whole records written so far: where the file is cut back to if a
    /// write fails halfway.
    len: u64,
    /// The end of the space allocated ahead (past `len`, the file's size stays
    /// `len`); 0 while none is, `u64::MAX` once the file system refused.
    allocated: u64,
}

impl LogWriter {
    /// Creates the log of the first connection number `>= *next` whose file does
    /// not exist yet, and leaves `*next` just past it (or, on an error, at the
    /// number that failed: the caller decides whether that number is used up).
    ///
    /// The file is created exclusively (`O_EXCL`, which also refuses to follow a
    /// symlink at that name) with mode 0600, so an earlier recording is never
    /// opened for writing and recorded secrets are not readable by others.
    pub fn create_next(root: &Path, next: &mut u64) -> io::Result<(u64, LogWriter)> {
        // Bounded so a directory full of old recordings cannot spin forever.
        for _ in 0..1_000_000 {
            let n = *next;
            let path = log_path(root, n);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match opened {
                Ok(file) => {
                    *next = n + 1;
                    return Ok((n, LogWriter::from_file(file, path)));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => *next = n + 1,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("no free log file name"))
    }

    /// Wraps an already open, empty file (for tests and tools).
    pub fn from_file(file: File, path: PathBuf) -> LogWriter {
        LogWriter {
            file,
            path,
            len: 0,
            allocated: 0,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of whole records written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no record has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one record: the header and, for data, the payload, in one `writev`.
    ///
    /// A record is never left torn: if the write fails partway (disk full, I/O
    /// error), the file is cut back to the end of the previous record before the
    /// error is returned, and the caller must stop recording to this log.
    pub fn append(&mut self, side: Side, time: Micros, what: Event, payload: &[u8]) -> io::Result<()> {
        debug_assert_eq!(
            matches!(what, Event::Data(_)),
            !payload.is_empty(),
            "data records carry a payload and only they do"
        );
        let mut header = [0u8; MAX_HEADER];
        let header_len = format_header(&mut header, side, time, what);
        let total = header_len + payload.len();
        self.allocate_ahead(total as u64);
        match write_all_vectored(&mut self.file, &header[..header_len], payload) {
            Ok(()) => {
                self.len += total as u64;
                Ok(())
            }
            Err(e) => {
                // Cut back a partial record so the log stays a sequence of whole
                // records. If even that fails, the reader will see a truncated tail,
                // which it reports as cut short rather than corrupt.
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }
}

impl LogWriter {
    /// Allocates the next [`AHEAD`] bytes of a big log before a record of `len`
    /// bytes would run past what is allocated. On a disk file system (ext4,
    /// measured with `make bench`'s bulk-disk: 1.2x the throughput, 0.9x the CPU)
    /// the writes then land in blocks that are already the file's instead of
    /// reserving and allocating space record by record. Not on tmpfs: there it
    /// means zeroing memory pages that the records overwrite right after, more
    /// work than allocating them inside the write (bulk: 0.95x). Best effort: a
    /// file system that cannot (or a full disk) gets plain writes, and the file's
    /// size is never changed, so a reader sees only whole records.
    fn allocate_ahead(&mut self, len: u64) {
        let end = self.len + len;
        if end < AHEAD_FROM || end <= self.allocated || self.allocated == u64::MAX {
            return;
        }
        if self.allocated == 0 && is_tmpfs(&self.file) {
            self.allocated = u64::MAX;
            return;
        }
        let from = self.len.max(self.allocated);
        let want = end.max(from + AHEAD) - from;
        // SAFETY: fallocate on a file descriptor we own; KEEP_SIZE leaves its size alone.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                want as libc::off_t,
            )
        };
        self.allocated = if r == 0 { from + want } else { u64::MAX };
    }
}

fn is_tmpfs(file: &File) -> bool {
    // SAFETY: an all-zero statfs is a valid value for fstatfs to overwrite.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes only into `fs`, for a descriptor we own.
    unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) == 0 && fs.f_type as i64 == TMPFS_MAGIC }
}

impl Drop for LogWriter {
    /// Gives back the space allocated past the last record: a finished log takes
    /// no more room than its records. ext4 frees blocks past the end on a
    /// truncate to the same size but ignores a hole punched there; the hole is
    /// for file systems that do it the other way round.
    fn drop(&mut self) {
        if self.allocated > self.len && self.allocated != u64::MAX {
            let _ = self.file.set_len(self.len);
            // SAFETY: fallocate on a file descriptor we own; the hole is past the
            // file's size, so no record is touched.
            unsafe {
                libc::fallocate(
                    self.file.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    self.len as libc::off_t,
                    (self.allocated - self.len) as libc::off_t,
                )
            };
        }
    }
}

/// Writes `a` then `b` with as few `writev` calls as the kernel allows (one, for a
/// regular file that has room).
fn write_all_vectored(file: &mut File, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = match file.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn headers_match_the_format() {
        let mut buf = [0u8; MAX_HEADER];
        let n = format_header(&mut buf, Side::Client, Micros(104), Event::Con);
        assert_eq!(&buf[..n], b"c 0.000104 con\n");
        let n = format_header(&mut buf, Side::Server, Micros(1_204_602), Event::Data(7));
        assert_eq!(&buf[..n], b"s 1.204602 7\n");
        let n = format_header(&mut buf, Side::Server, Micros(u64::MAX), Event::Data(usize::MAX));
        assert_eq!(&buf[..n], format!("s {} {}\n", Micros(u64::MAX), usize::MAX).as_bytes());
    }

    #[test]
    fn create_next_skips_existing_files_and_uses_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        std::fs::write(log_path(&root, 1), b"keep").unwrap();
        let mut next = 1;
        let (n, mut log) = LogWriter::create_next(&root, &mut next).unwrap();
        assert_eq!((n, next), (2, 3));
        log.append(Side::Client, Micros(1), Event::Con, b"").unwrap();
        log.append(Side::Client, Micros(2), Event::Data(2), b"hi").unwrap();
        assert_eq!(std::fs::read(log_path(&root, 1)).unwrap(), b"keep");
        assert_eq!(std::fs::read(log.path()).unwrap(), b"c 0.000001 con\nc 0.000002 2\nhi");
        assert_eq!(log.len(), 30);
        let mode = std::fs::metadata(log.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_big_log_allocates_ahead_without_growing_and_gives_the_rest_back() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let mut next = 1;
        let (_, mut log) = LogWriter::create_next(&root, &mut next).unwrap();
        let path = log.path().to_path_buf();
        let payload = vec![7u8; 64 * 1024];
        log.append(Side::Client, Micros(0), Event::Con, b"").unwrap();
        for i in 0..40 {
            log.append(Side::Server, Micros(i), Event::Data(payload.len()), &payload)
                .unwrap();
            // The size is always that of the whole records, allocated or not.
            assert_eq!(std::fs::metadata(&path).unwrap().len(), log.len());
        }
        let len = log.len();
        drop(log);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), len);
        // Whatever was allocated past the records is given back.
        assert!(
            meta.blocks() * 512 < len + AHEAD / 2,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        let records: Vec<_> = crate::log::Reader::open(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records.len(), 41);
    }

    #[test]
    fn create_next_does_not_follow_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, log_path(&root, 1)).unwrap();
        let mut next = 1;
        let (n, _log) = LogWriter::create_next(&root, &mut next).unwrap();
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    }
}
