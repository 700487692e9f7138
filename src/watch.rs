//! Waiting for files to change, without using the CPU while nothing does: what
//! `show --follow` sleeps in between records.
//!
//! A [`Watcher`] asks the kernel (inotify) to report changes to the files and
//! directories it watches, and sleeps in `poll` until there is one, or until its
//! [`Stopper`] (which the SIGINT/SIGTERM handler holds) wakes it through a pipe.
//! Where inotify is not available (an old kernel, a file system that does not
//! report, the limit of instances reached), it looks again every
//! [`FALLBACK_POLL`] instead, which is still far from a busy loop.
//!
//! A watch is added before the file is read, so a change between the read and the
//! wait is never missed: its event is already queued when the wait begins.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often to look again when inotify is not available.
pub const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// Watches files and directories for changes.
#[derive(Debug)]
pub struct Watcher {
    /// The inotify instance; `None` when there is none, and waits are timed.
    inotify: Option<OwnedFd>,
    /// The read end of the pipe a [`Stopper`] writes to.
    wake: OwnedFd,
    stopper: Stopper,
    /// Files created since [`Watcher::take_created`] was last called: kept
    /// across waits, so that a wait for something else loses none.
    created: Created,
}

/// Wakes a [`Watcher`] from another thread (a signal handler's): every wait
/// after it returns [`Woke::Stopped`] at once.
#[derive(Clone, Debug)]
pub struct Stopper {
    stopped: Arc<AtomicBool>,
    /// The write end of the wake pipe.
    wake: Arc<OwnedFd>,
}

impl Stopper {
    /// Stops the watcher's waits, now and from now on.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // SAFETY: writes one byte from a valid buffer to a descriptor we own. A
        // full pipe (EAGAIN) already holds a wake-up, so the result is not needed.
        unsafe { libc::write(self.wake.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Whether [`Stopper::stop`] has been called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Why a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Woke {
    /// Something may have changed: look again (and see [`Watcher::take_created`]).
    Changed,
    /// The [`Stopper`] was used.
    Stopped,
}

/// The files created in watched directories since they were last taken.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Created {
    /// Their names.
    pub names: Vec<OsString>,
    /// Whether some may have been missed (no inotify, or its queue overflowed),
    /// so that the directories must be listed again.
    pub maybe_more: bool,
}

/// What to be told about a watched file: it was written to.
const FILE_EVENTS: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;

/// What to be told about a watched directory: a file in it was created, moved in,
/// or written to.
const DIRECTORY_EVENTS: u32 = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_MODIFY | libc::IN_CLOSE_WRITE;

impl Watcher {
    /// A watcher with nothing watched yet.
    pub fn new() -> io::Result<Watcher> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array with two new descriptors on success.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: inotify_init1 takes only flags; a negative result is an error.
        let inotify = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        Ok(Watcher {
            // SAFETY: a new descriptor, owned by nothing else.
            inotify: (inotify >= 0).then(|| unsafe { OwnedFd::from_raw_fd(inotify) }),
            wake: read,
            stopper: Stopper {
                stopped: Arc::new(AtomicBool::new(false)),
                wake: Arc::new(write),
            },
            created: Created::default(),
        })
    }

    /// A handle that stops this watcher's waits.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Watches the file at `path` for writes.
    pub fn watch_file(&mut self, path: &Path) {
        self.add(path, FILE_EVENTS);
    }

    /// Watches the directory at `path` for files created in it, and writes to them.
    pub fn watch_directory(&mut self, path: &Path) {
        self.add(path, DIRECTORY_EVENTS | libc::IN_ONLYDIR);
    }

    /// Adds a watch; without one (the limit of watches reached, say) the waits
    /// fall back to looking again every [`FALLBACK_POLL`].
    fn add(&mut self, path: &Path, mask: u32) {
        let Some(fd) = &self.inotify else { return };
        let added = CString::new(path.as_os_str().as_bytes()).is_ok_and(|name| {
            // SAFETY: a valid descriptor and a NUL-terminated path.
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), name.as_ptr(), mask) >= 0 }
        });
        if !added {
            self.inotify = None;
        }
    }

    /// The files created in watched directories since the last call.
    pub fn take_created(&mut self) -> Created {
        std::mem::take(&mut self.created)
    }

    /// Waits until something watched may have changed, or the stopper is used.
    pub fn wait(&mut self) -> io::Result<Woke> {
        if self.stopper.is_stopped() {
            return Ok(Woke::Stopped);
        }
        let mut fds = vec![libc::pollfd {
            fd: self.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(inotify) = &self.inotify {
            fds.push(libc::pollfd {
                fd: inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = if self.inotify.is_some() {
            -1
        } else {
            FALLBACK_POLL.as_millis() as libc::c_int
        };
        loop {
            // SAFETY: `fds` is a valid array of pollfd of the length given.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n >= 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if self.stopper.is_stopped() {
            return Ok(Woke::Stopped);
        }
        match &self.inotify {
            None => self.created.maybe_more = true,
            Some(fd) => read_events(fd, &mut self.created)?,
        }
        Ok(Woke::Changed)
    }
}

/// Reads every queued inotify event, adding the names of files created, and
/// whether the queue overflowed, to `created`.
fn read_events(fd: &OwnedFd, created: &mut Created) -> io::Result<()> {
    // Aligned for the event headers; room for many events with their names.
    let mut buf = vec![0u64; 8192];
    let header = std::mem::size_of::<libc::inotify_event>();
    loop {
        // SAFETY: reads into a buffer we own, of the length given.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len() * 8) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => break,
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        // SAFETY: the buffer is plain memory of at least `n` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n as usize) };
        let mut at = 0;
        while at + header <= bytes.len() {
            // SAFETY: the kernel wrote a whole event header at `at`; it may not be
            // aligned for the struct, so it is read unaligned.
            let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(bytes[at..].as_ptr().cast()) };
            let name = &bytes[at + header..(at + header + event.len as usize).min(bytes.len())];
            if event.mask & libc::IN_Q_OVERFLOW != 0 {
                created.maybe_more = true;
            }
            if event.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                // The name is padded with NULs.
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                created.names.push(OsString::from_vec(name[..end].to_vec()));
            }
            at += header + event.len as usize;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_and_a_new_file_wake_the_watcher_and_so_does_the_stopper() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("log");
        std::fs::write(&file, b"").unwrap();
        let mut watcher = Watcher::new().unwrap();
        watcher.watch_file(&file);
        watcher.watch_directory(dir.path());
        std::fs::write(&file, b"more").unwrap();
        std::fs::write(dir.path().join("rec_1"), b"").unwrap();
        // Both changes were queued before the wait: it returns at once.
        assert_eq!(watcher.wait().unwrap(), Woke::Changed);
        let created = watcher.take_created();
        assert!(
            created.names.iter().any(|n| n == "rec_1") || (watcher.inotify.is_none() && created.maybe_more),
            "{created:?}"
        );
        assert_eq!(watcher.take_created(), Created::default());
        let stopper = watcher.stopper();
        std::thread::spawn(move || stopper.stop());
        // Unless something else changes, the wait ends by the stopper.
        for _ in 0..1000 {
            if watcher.wait().unwrap() == Woke::Stopped {
                return;
            }
        }
        panic!("the stopper did not stop the waits");
    }
}
