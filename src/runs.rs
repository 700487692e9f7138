//! Which run of the recorder a log belongs to, and when, on the wall clock, the
//! clock of its run started: what readers need to put logs of different runs in
//! one order.
//!
//! All logs of one run share one clock, which starts at zero when netrecord
//! starts: their times compare, but a restart on the same root starts a new
//! clock at zero, so the times of logs of different runs do not. The run index
//! (`<root>_index.jsonl`, which a restarted recorder appends to) says for each
//! connection when it was accepted on both clocks, `start_unix_us` and
//! `start_us`: the Unix time at which the log's clock read zero is their
//! difference, and a record's wall-clock time is that plus its time.
//!
//! For a log `<root>_N` the index is `<root>_index.jsonl`, and the log's entry is
//! the one with connection number N and the same file name (the directory may
//! have moved since). Each entry's start comes from two clock readings taken a
//! moment apart, so the entries of one run differ by a few microseconds: starts
//! within [`SAME_RUN_US`] of each other are taken as one run and share the
//! earliest, so that logs of one run keep the order of their shared clock. (The
//! starts of different runs are far apart: a run lasts longer than that.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::index::{Entry, index_path, read_index_noting};
use crate::log::split_log_path;

/// Run starts closer than this (in microseconds) are one run's.
pub const SAME_RUN_US: u64 = 1_000;

/// What is known of one index file.
#[derive(Debug)]
enum Index {
    /// There is no file.
    Missing,
    /// It could not be read, for this reason.
    Unreadable(String),
    Read {
        entries: Vec<Entry>,
        /// Each entry's run start mapped to the start its run shares.
        runs: HashMap<u64, u64>,
        /// The distinct shared starts, earliest first: one per run.
        starts: Vec<u64>,
    },
}

/// What the run index says about one log.
#[derive(Debug)]
pub enum Found<'a> {
    /// The log's entry, and the Unix time (µs) at which its run's clock read zero.
    Entry { entry: &'a Entry, epoch_us: u64 },
    /// The index has no entry for the log (its connection is still open, or the
    /// line was lost): the starts of the runs it knows, earliest first.
    NoEntry { index: &'a Path, starts: &'a [u64] },
    /// The log is not named `<root>_N`, so it has no index.
    NotNamed,
    /// The log's index does not exist.
    Missing { index: &'a Path },
    /// The log's index could not be read, for this reason.
    Unreadable { index: &'a Path, error: &'a str },
}

/// Finds logs in their run indexes, reading each index once.
#[derive(Debug, Default)]
pub struct Runs {
    indexes: HashMap<PathBuf, Index>,
}

impl Runs {
    pub fn new() -> Runs {
        Runs::default()
    }

    /// Looks `log` up in its run index. Notes about the index itself (lines it
    /// skips) go to `note`, the first time the index is read.
    pub fn find(&mut self, log: &Path, note: &mut dyn FnMut(String)) -> Found<'_> {
        let Some((root, conn)) = split_log_path(log) else {
            return Found::NotNamed;
        };
        let path = index_path(&root);
        if !self.indexes.contains_key(&path) {
            let index = load(&path, note);
            self.indexes.insert(path.clone(), index);
        }
        let (path, index) = self.indexes.get_key_value(&path).expect("just inserted");
        match index {
            Index::Missing => Found::Missing { index: path },
            Index::Unreadable(error) => Found::Unreadable { index: path, error },
            Index::Read { entries, runs, starts } => {
                let name = log.file_name();
                match entries
                    .iter()
                    .rev()
                    .find(|e| e.conn == conn && e.log.file_name() == name)
                {
                    Some(entry) => Found::Entry {
                        entry,
                        epoch_us: runs[&run_start(entry)],
                    },
                    None => Found::NoEntry { index: path, starts },
                }
            }
        }
    }
}

/// Reads an index into what readers look up.
fn load(path: &Path, note: &mut dyn FnMut(String)) -> Index {
    if !path.exists() {
        return Index::Missing;
    }
    match read_index_noting(path, note) {
        Ok(entries) => {
            let runs = group_runs(entries.iter().map(run_start));
            let mut starts: Vec<u64> = runs.values().copied().collect();
            starts.sort_unstable();
            starts.dedup();
            Index::Read { entries, runs, starts }
        }
        Err(err) => Index::Unreadable(format!("{err:#}")),
    }
}

/// The Unix time at which the entry's log clock read zero.
fn run_start(entry: &Entry) -> u64 {
    entry.start_unix_us.saturating_sub(entry.start_us)
}

/// Maps each start to the earliest start of its group, where a group is a chain of
/// starts each within [`SAME_RUN_US`] of the one before.
fn group_runs(starts: impl Iterator<Item = u64>) -> HashMap<u64, u64> {
    let mut starts: Vec<u64> = starts.collect();
    starts.sort_unstable();
    let mut runs = HashMap::new();
    let mut group = (0, 0); // (earliest, previous)
    for (i, &start) in starts.iter().enumerate() {
        if i == 0 || start - group.1 > SAME_RUN_US {
            group.0 = start;
        }
        group.1 = start;
        runs.insert(start, group.0);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::write_test_index;

    fn epoch(runs: &mut Runs, log: &Path) -> Option<u64> {
        match runs.find(log, &mut |n| panic!("{n}")) {
            Found::Entry { epoch_us, .. } => Some(epoch_us),
            _ => None,
        }
    }

    #[test]
    fn entries_give_one_start_per_run_and_others_say_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rec");
        // Two connections of one run (starts 3 µs apart), one of a later run.
        write_test_index(&root);
        let mut runs = Runs::new();
        assert_eq!(epoch(&mut runs, &root.with_file_name("rec_1")), Some(5_000_000));
        assert_eq!(epoch(&mut runs, &root.with_file_name("rec_2")), Some(5_000_000));
        // Matched by number and file name, although the directory differs.
        assert_eq!(epoch(&mut runs, &root.with_file_name("rec_3")), Some(9_000_000));
        match runs.find(&root.with_file_name("rec_4"), &mut |n| panic!("{n}")) {
            Found::NoEntry { starts, .. } => assert_eq!(starts, [5_000_000, 9_000_000]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(runs.find(Path::new("/x/copy"), &mut |_| {}), Found::NotNamed));
        let other = dir.path().join("other_1");
        assert!(matches!(runs.find(&other, &mut |_| {}), Found::Missing { .. }));
    }

    #[test]
    fn starts_chain_into_runs() {
        let runs = group_runs([10, 500, 1_400, 9_000, 9_001].into_iter());
        assert_eq!(runs[&1_400], 10);
        assert_eq!(runs[&9_001], 9_000);
    }
}
