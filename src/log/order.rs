//! The order in which readers take a run's logs, and the connection numbers in
//! their names (`<root>_N`).

use std::path::{Path, PathBuf};

use super::split_log_path;
use crate::index::is_index_path;

/// The logs to read, in reading order. A run's index (`<root>_index.jsonl`, which a
/// glob like `rec_*` also matches) is not a log and is left out when other files
/// are given. The logs of one run (every name `<root>_N` with the same root) are
/// sorted by connection number, so `rec_*` reads 1, 2, ..., 10 rather than the
/// shell's 1, 10, 2; any other list stays in the order given.
pub fn logs_in_order(paths: &[PathBuf]) -> Vec<PathBuf> {
    let is_index = |p: &PathBuf| is_index_path(p);
    let mut logs: Vec<PathBuf> = if paths.iter().all(is_index) {
        paths.to_vec()
    } else {
        paths.iter().filter(|p| !is_index(p)).cloned().collect()
    };
    let root = |p: &PathBuf| split_log_path(p).map(|(root, _)| root);
    let one_run = logs
        .iter()
        .all(|p| connection_number(p).is_some() && root(p) == root(&logs[0]));
    if one_run {
        logs.sort_by_key(|p| connection_number(p));
    }
    logs
}

/// The connection number of each log, from the `_N` that ends its file name; `None`
/// if a name has no such suffix or two logs have the same number.
pub fn connection_numbers(paths: &[PathBuf]) -> Option<Vec<u64>> {
    let numbers: Vec<u64> = paths.iter().map(|p| connection_number(p)).collect::<Option<_>>()?;
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    (sorted.len() == numbers.len()).then_some(numbers)
}

/// The `N` of a log named `<root>_N`.
pub fn connection_number(path: &Path) -> Option<u64> {
    split_log_path(path).map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_glob_reads_in_connection_order_without_the_index() {
        let paths = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            logs_in_order(&paths(&["/t/rec_1", "/t/rec_10", "/t/rec_2", "/t/rec_index.jsonl"])),
            paths(&["/t/rec_1", "/t/rec_2", "/t/rec_10"])
        );
        assert_eq!(logs_in_order(&paths(&["b", "a_1"])), paths(&["b", "a_1"]));
        assert_eq!(
            logs_in_order(&paths(&["/t/b_2", "/t/a_1"])),
            paths(&["/t/b_2", "/t/a_1"])
        );
        assert_eq!(
            logs_in_order(&paths(&["/t/rec_index.jsonl"])),
            paths(&["/t/rec_index.jsonl"])
        );
    }

    #[test]
    fn connection_numbers_come_from_the_names_or_not_at_all() {
        let paths = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            connection_numbers(&paths(&["/t/rec_3", "/t/rec_10"])),
            Some(vec![3, 10])
        );
        assert_eq!(connection_numbers(&paths(&["/t/rec_3", "/t/rec"])), None);
        assert_eq!(connection_numbers(&paths(&["/t/a_1", "/u/b_1"])), None);
        assert_eq!(connection_number(Path::new("/t/rec_+3")), None);
        assert_eq!(connection_number(Path::new("/t/rec_index.jsonl")), None);
    }
}
