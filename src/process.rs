//! Process-wide plumbing shared by the modes: the open-files limit and the
//! SIGINT/SIGTERM that ask a long-running mode to stop.
//!
//! The proxy holds three descriptors per connection, and `show --merge` and `pcap`
//! hold every log of a run open at once; the usual soft limit of 1024 is far below
//! what the hard limit allows.

use std::fmt;
use std::io::{self, Write};
use std::thread;

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

/// Runs `stop` on a thread of its own when the first SIGINT or SIGTERM arrives.
/// The signal then no longer kills the process: `stop` must make the mode wind
/// down (stop accepting, report, return from `run`).
pub fn on_stop_signal(stop: impl FnOnce() + Send + 'static) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).context("could not install signal handlers")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop();
            }
        })
        .context("could not start the signal thread")?;
    Ok(())
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

/// Prints `netrecord: `, `line` and a newline to stderr with a single write.
/// `eprintln!` writes every piece of its format separately (stderr is
/// unbuffered): a per-connection line cost about twenty system calls, each waking
/// whatever reads the other end, and lines from different threads could interleave.
pub fn message(line: fmt::Arguments<'_>) {
    let mut text = String::from("netrecord: ");
    fmt::write(&mut text, line).expect("formatting a message cannot fail");
    text.push('\n');
    let _ = io::stderr().lock().write_all(text.as_bytes());
}
