//! Process-wide plumbing shared by the modes: the open-files limit, the signals
//! that ask a long-running mode to stop, and the one channel for `netrecord:`
//! messages (written directly, or through a queue that never blocks the proxy).
//!
//! The proxy holds three descriptors per connection, and `show --merge` and `pcap`
//! hold every log of a run open at once; the usual soft limit of 1024 is far below
//! what the hard limit allows.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Raises the soft open-files limit to the hard limit. Best effort: if the limits
/// cannot be read or changed, the process runs with what it has.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Runs `stop` on a thread of its own when the first SIGINT, SIGTERM or SIGHUP
/// (the terminal was closed) arrives. The signal then no longer kills the
/// process: `stop` must make the mode wind down (stop accepting, report, return
/// from `run`). A second signal while it winds down exits at once ([`exit_now`]).
pub fn on_stop_signal(stop: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    on_stop_signals(stop, |signal| exit_now(signal))
}

/// Like [`on_stop_signal`], but a second signal runs `again` with its number
/// instead: the proxy first makes sure no record is half-written, then exits.
pub fn on_stop_signals(
    stop: impl FnOnce() + Send + 'static,
    again: impl FnOnce(i32) + Send + 'static,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("could not install signal handlers")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signals = signals.forever();
            if signals.next().is_some() {
                stop();
            }
            if let Some(signal) = signals.next() {
                again(signal);
            }
        })
        .context("could not start the signal thread")?;
    Ok(())
}

/// Exits at once because of a second `signal`, with the shell's status for a
/// death by that signal (128 + its number: 130 for SIGINT, 143 for SIGTERM),
/// after one line that says so (given a moment to reach stderr, no more).
pub fn exit_now(signal: i32) -> ! {
    let name = match signal {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    };
    message(format_args!("second {name} while stopping: exiting at once"));
    flush_messages(Duration::from_millis(200));
    // SAFETY: _exit ends the process without running anything else, so no
    // thread can be caught halfway through cleaning up.
    unsafe { libc::_exit(128 + signal) }
}

/// Prints one `netrecord: ` line to stderr: `say!("listening on {addr}")`. Every
/// user-facing message of the program goes through here, so the prefix is added
/// in one place.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::process::message(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Prints `netrecord: `, `line` and a newline to stderr with a single write, or,
/// once [`queue_messages`] has been called, hands the line to the writer thread.
/// `eprintln!` writes every piece of its format separately (stderr is
/// unbuffered): a per-connection line cost about twenty system calls, each waking
/// whatever reads the other end, and lines from different threads could interleave.
pub fn message(line: fmt::Arguments<'_>) {
    let mut text = String::from("netrecord: ");
    fmt::write(&mut text, line).expect("formatting a message cannot fail");
    text.push('\n');
    match QUEUE.get() {
        Some(queue) => queue.push(text),
        None => write_stderr(&text),
    }
}

fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Lines waiting for a stderr that is slow or not read at all, at most.
const MAX_QUEUED: usize = 4096;

/// After each write the writer lets this long pass before its next one, so that
/// a busy proxy's lines (two per connection) go out many to a write, and the
/// writer wakes a few hundred times a second, not once per line. A line that
/// comes while the writer is idle goes out at once.
const GATHER: Duration = Duration::from_millis(2);

/// The queue of lines for stderr, once the proxy has turned it on.
static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Lines on their way to stderr: the proxy's threads push, one writer thread
/// writes. A stderr nobody reads (`2>fifo` with a reader that stopped, `2>&1 |
/// less`, Ctrl-S on a terminal) blocks only the writer; once the queue is full,
/// lines are dropped and counted, and the count is printed when stderr drains.
struct Queue {
    state: Mutex<Queued>,
    /// Signalled when a line is pushed while the writer waits for one.
    pushed: Condvar,
    /// Signalled when the writer has written everything queued.
    drained: Condvar,
}

#[derive(Default)]
struct Queued {
    lines: VecDeque<String>,
    dropped: u64,
    /// The writer is in the middle of a write, or gathering before the next.
    writing: bool,
    /// The writer waits on `pushed`: only then does a push need to wake it (a
    /// wake-up is a system call even with no one waiting).
    idle: bool,
    /// Callers of [`flush_messages`] waiting on `drained`.
    flushing: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, text: String) {
        let mut queued = self.lock();
        if queued.lines.len() >= MAX_QUEUED {
            queued.dropped += 1;
            return;
        }
        queued.lines.push_back(text);
        if queued.idle {
            self.pushed.notify_one();
        }
    }

    /// The writer thread: writes what is queued, in order, in one write; once it
    /// has caught up after dropping lines, says how many.
    fn write_forever(&self) {
        let mut queued = self.lock();
        loop {
            if queued.lines.is_empty() && queued.dropped == 0 {
                queued.writing = false;
                if queued.flushing > 0 {
                    self.drained.notify_all();
                }
                queued.idle = true;
                queued = self.pushed.wait(queued).unwrap_or_else(|e| e.into_inner());
                queued.idle = false;
                continue;
            }
            let mut text = String::new();
            for line in queued.lines.drain(..) {
                text.push_str(&line);
            }
            let n = std::mem::take(&mut queued.dropped);
            if n > 0 {
                text.push_str(&format!(
                    "netrecord: {n} message{} dropped: standard error was not being read\n",
                    if n == 1 { "" } else { "s" }
                ));
            }
            queued.writing = true;
            drop(queued);
            write_stderr(&text);
            thread::sleep(GATHER);
            queued = self.lock();
        }
    }
}

/// From now on, messages go through a bounded queue to one writer thread, so
/// that no thread that relays or accepts ever blocks on stderr. Called by the
/// proxy once its startup checks have passed; the readers write directly.
pub fn queue_messages() -> anyhow::Result<()> {
    if QUEUE.get().is_some() {
        return Ok(());
    }
    let _ = QUEUE.set(Queue {
        state: Mutex::new(Queued::default()),
        pushed: Condvar::new(),
        drained: Condvar::new(),
    });
    thread::Builder::new()
        .name("stderr".into())
        .spawn(|| QUEUE.get().expect("the queue was just set").write_forever())
        .context("could not start the stderr thread")?;
    Ok(())
}

/// How long the end of the program waits for queued messages to reach stderr.
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(1500);

/// Waits until every queued message has been written, or `within` has passed:
/// the summary gets out if stderr drains in time, and a stuck stderr never hangs
/// the exit. Returns whether everything was written.
pub fn flush_messages(within: Duration) -> bool {
    let Some(queue) = QUEUE.get() else { return true };
    let deadline = Instant::now() + within;
    let mut queued = queue.lock();
    queued.flushing += 1;
    let mut done = true;
    while !queued.lines.is_empty() || queued.dropped > 0 || queued.writing {
        let now = Instant::now();
        if now >= deadline {
            done = false;
            break;
        }
        queued = queue
            .drained
            .wait_timeout(queued, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    queued.flushing -= 1;
    done
}
