//! `netrecord show --follow`: records shown as the recorder writes them.
//!
//! `--follow LOG` shows the log's records as they are appended, in the chosen
//! form, and ends when the connection is complete (both `hup`s, or an `err`).
//! `--follow ROOT`, a log file root as given to the recorder, follows the whole
//! run: every log `<ROOT>_N` already there and every new one as it appears,
//! tagged `[N]` as with `--merge` and in time order as far as the records on
//! disk allow, until SIGINT or SIGTERM; a connection that ends says so.
//!
//! The logs are read with [`crate::log::Reader::follow`]: where the bytes written
//! so far end, inside a record or between records, there is simply nothing more
//! yet, and a partly written last record is waited for, never taken for a
//! corrupt or cut one. Bytes that break the format still stop that log with the
//! error and its byte offset. In between, the follower sleeps in a
//! [`Watcher`] (inotify), so that an idle follow costs no CPU, and output is
//! flushed before every sleep, so that a record shows as soon as it is written.
//! SIGINT and SIGTERM end it with status 0 (1 if a log turned out corrupt).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::{AnyForm, Conversation, Finished, Form, Label, Step, run_starts, show_record_waiting, tag_width};
use crate::escape;
use crate::log::{ReadError, connection_number, log_path, split_log_path};
use crate::process::say;
use crate::watch::{Watcher, Woke};

/// Runs `netrecord show --follow` on `paths`, which must be one log or one root.
pub fn run(paths: &[PathBuf], mut form: AnyForm, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let [path] = paths else {
        say!(
            "--follow takes one log or one log file root, not {} (see 'netrecord --help')",
            paths.len()
        );
        return Ok(ExitCode::from(2));
    };
    let mut watcher = Watcher::new().context("cannot watch files for changes")?;
    let stopper = watcher.stopper();
    crate::process::on_stop_signal(move || stopper.stop())?;
    let failed = if path.is_file() {
        follow_log(path, &mut form, out, &mut watcher)?
    } else {
        follow_root(path, &mut form, out, &mut watcher)?
    };
    out.flush().context("failed to write to stdout")?;
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Flushes the output and sleeps until a watched file changes; false once a
/// stop signal has come.
fn wait(out: &mut impl Write, watcher: &mut Watcher) -> io::Result<bool> {
    out.flush()?;
    Ok(watcher.wait()? == Woke::Changed)
}

/// Follows one log until its connection is complete or a signal comes. Returns
/// whether the log turned out corrupt or unreadable.
fn follow_log(path: &Path, form: &mut AnyForm, out: &mut impl Write, watcher: &mut Watcher) -> anyhow::Result<bool> {
    // Watched before the first read, so that no write after it goes unnoticed.
    watcher.watch_file(path);
    let file = File::open(path).with_context(|| format!("failed to open log {}", escape::path(path)))?;
    let label = Label::plain(connection_number(path).unwrap_or(1));
    let mut conv = Conversation::new(file, label).follow();
    let write_failed = || "failed to write to stdout";
    loop {
        match conv.step() {
            Step::Record => {
                let shown = show_record_waiting(form, &mut conv, out, &mut |out| wait(out, watcher));
                if !shown.context(write_failed())? {
                    return Ok(false);
                }
                if conv.is_complete() {
                    return Ok(false);
                }
            }
            Step::NotYet => {
                if !wait(out, watcher).context(write_failed())? {
                    return Ok(false);
                }
            }
            Step::End => {
                let finished = conv.take_end();
                form.note(out, &conv.label, &finished).context(write_failed())?;
                report(path, &finished);
                return Ok(true);
            }
        }
    }
}

/// Says on stderr why a followed log stopped early (it is corrupt or unreadable).
fn report(path: &Path, finished: &Finished) {
    match &finished.end {
        Ok(()) => {}
        Err(e @ ReadError::Io(_)) => say!("failed to read log {}: {e}", escape::path(path)),
        Err(e) => say!("invalid log {}: {e}", escape::path(path)),
    }
}

/// One log of a followed run.
struct Followed {
    path: PathBuf,
    conv: Conversation<File>,
}

/// Follows every log of the run recorded under `root`, old and new, until a
/// signal comes. Returns whether a log turned out corrupt or unreadable.
fn follow_root(root: &Path, form: &mut AnyForm, out: &mut impl Write, watcher: &mut Watcher) -> anyhow::Result<bool> {
    let dir = match root.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    anyhow::ensure!(
        root.file_name().is_some() && dir.is_dir(),
        "cannot follow {}: it is neither a log nor a log file root in an existing directory",
        escape::path(root)
    );
    crate::process::raise_open_files_limit();
    // Watched before the first listing, so that no log created after it is missed.
    watcher.watch_directory(dir);
    let write_failed = || "failed to write to stdout";
    let mut logs: BTreeMap<u64, Option<Followed>> = BTreeMap::new();
    let mut failed = false;

    // The logs already there, placed in their runs as `--merge` does; new ones
    // are of the latest run.
    let existing = list_logs(dir, root).with_context(|| format!("failed to list directory {}", escape::path(dir)))?;
    let width = tag_width(existing.iter().copied());
    let paths: Vec<PathBuf> = existing.iter().map(|&n| log_path(root, n)).collect();
    let epochs = run_starts(&paths);
    let latest = epochs.iter().copied().max().unwrap_or(0);
    for ((n, path), epoch_us) in existing.into_iter().zip(paths).zip(epochs) {
        add_log(&mut logs, n, path, width, epoch_us);
    }
    let mut next = BinaryHeap::new();
    loop {
        // New logs, created during the last wait, or during one for the rest of
        // a payload.
        let created = watcher.take_created();
        let new: Vec<u64> = if created.maybe_more {
            list_logs(dir, root).with_context(|| format!("failed to list directory {}", escape::path(dir)))?
        } else {
            created
                .names
                .iter()
                .filter_map(|name| log_number(&dir.join(name), root))
                .collect()
        };
        for n in new {
            if !logs.contains_key(&n) {
                add_log(&mut logs, n, log_path(root, n), width, latest);
            }
        }
        // Every log whose next record is there joins the timeline; those whose
        // records are all shown wait for the next change.
        for (&n, log) in logs.iter_mut() {
            let Some(followed) = log else { continue };
            if followed.conv.current.is_some() {
                continue;
            }
            match followed.conv.step() {
                Step::Record => next.push(Reverse((followed.conv.current_key(), n))),
                Step::NotYet => {}
                Step::End => failed |= finish(log, form, out).context(write_failed())?,
            }
        }
        // A wait for the rest of a payload takes the news of every log with it.
        let mut waited = false;
        while let Some(Reverse((_, n))) = next.pop() {
            let log = logs.get_mut(&n).expect("a queued log is followed");
            let followed = log.as_mut().expect("a queued log is open");
            let mut wait_inside = |out: &mut _| {
                waited = true;
                wait(out, watcher)
            };
            let shown = show_record_waiting(form, &mut followed.conv, out, &mut wait_inside);
            if !shown.context(write_failed())? || watcher.stopper().is_stopped() {
                return Ok(failed);
            }
            if followed.conv.is_complete() {
                failed |= finish(log, form, out).context(write_failed())?;
                continue;
            }
            match followed.conv.step() {
                Step::Record => next.push(Reverse((followed.conv.current_key(), n))),
                Step::NotYet => {}
                Step::End => failed |= finish(log, form, out).context(write_failed())?,
            }
        }
        if waited {
            continue;
        }
        out.flush().context(write_failed())?;
        if watcher.wait().context("failed to wait for the logs to change")? == Woke::Stopped {
            return Ok(failed);
        }
    }
}

/// Starts following log `n` at `path`. A log that cannot be opened (removed since
/// it was listed) is passed over.
fn add_log(logs: &mut BTreeMap<u64, Option<Followed>>, n: u64, path: PathBuf, width: usize, epoch_us: u64) {
    match File::open(&path) {
        Ok(file) => {
            let mut conv = Conversation::side_by_side(file, Label::tagged(n, width)).follow();
            conv.epoch_us = epoch_us;
            logs.insert(n, Some(Followed { path, conv }));
        }
        Err(e) => say!("failed to open log {}: {e}", escape::path(&path)),
    }
}

/// Stops following a log whose connection ended, or whose reading failed: says
/// so, and closes it. Returns whether it failed.
fn finish(log: &mut Option<Followed>, form: &mut AnyForm, out: &mut impl Write) -> io::Result<bool> {
    let Some(mut followed) = log.take() else {
        return Ok(false);
    };
    if followed.conv.is_complete() && followed.conv.end.is_none() {
        form.ended(out, &followed.conv.label)?;
        return Ok(false);
    }
    let finished = followed.conv.take_end();
    form.note(out, &followed.conv.label, &finished)?;
    report(&followed.path, &finished);
    Ok(finished.end.is_err())
}

/// The numbers of the logs of `root` in `dir`, in order.
fn list_logs(dir: &Path, root: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(n) = log_number(&dir.join(entry?.file_name()), root) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// The connection number of `path` if it is a log of `root`, `<root>_N`.
fn log_number(path: &Path, root: &Path) -> Option<u64> {
    let (of, n) = split_log_path(path)?;
    (of.file_name() == root.file_name()).then_some(n)
}
