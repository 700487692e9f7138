//! The limits that protect the disk: how many payload bytes one connection's log
//! and all logs of the run may hold (`--max-log-bytes`, `--max-run-bytes`).
//!
//! [`Budget::admit`] is asked before every data record is written, under the
//! connection's lock: a record that does not fit is not written at all, so a log
//! that reached its limit ends after its last whole record, and the connection
//! flows on unrecorded. The run's limit is shared by every connection through one
//! atomic counter; once a record did not fit in it, the run is full and no new
//! log is started.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The size limits of a run and what the run has used of its own.
#[derive(Debug, Default)]
pub struct Budget {
    /// Payload bytes one log may hold.
    pub max_log: Option<u64>,
    /// Payload bytes all logs of the run may hold together.
    pub max_run: Option<u64>,
    /// Payload bytes written (or being written) to all logs of the run.
    run_used: AtomicU64,
    /// A record did not fit in the run's limit: recording has ended for the run.
    run_full: AtomicBool,
}

/// Why a record was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The connection's log reached `--max-log-bytes`.
    Log(String),
    /// The run reached `--max-run-bytes`; `first` is true for the one refusal that
    /// made the run full.
    Run { why: String, first: bool },
}

impl Budget {
    /// A budget with these limits, none of it used.
    pub fn new(max_log: Option<u64>, max_run: Option<u64>) -> Budget {
        Budget {
            max_log,
            max_run,
            ..Budget::default()
        }
    }

    /// Takes `n` bytes for a log that already holds `logged` payload bytes, or says
    /// why they do not fit. Bytes taken whose write then fails go back with
    /// [`Budget::give_back`].
    pub fn admit(&self, logged: u64, n: u64) -> Result<(), Refused> {
        if let Some(max) = self.max_log
            && logged.saturating_add(n) > max
        {
            return Err(Refused::Log(format!("size limit reached: {}", human(max))));
        }
        let Some(max) = self.max_run else { return Ok(()) };
        if let Some(why) = self.run_full() {
            return Err(Refused::Run { why, first: false });
        }
        if n == 0 {
            return Ok(());
        }
        let before = self.run_used.fetch_add(n, Ordering::SeqCst);
        if before.saturating_add(n) > max {
            self.run_used.fetch_sub(n, Ordering::SeqCst);
            let first = !self.run_full.swap(true, Ordering::SeqCst);
            return Err(Refused::Run {
                why: run_limit(max),
                first,
            });
        }
        Ok(())
    }

    /// Returns bytes [`Budget::admit`] took for a record that was not written.
    pub fn give_back(&self, n: u64) {
        if self.max_run.is_some() {
            self.run_used.fetch_sub(n, Ordering::SeqCst);
        }
    }

    /// Why no new log may be started, once the run is full.
    pub fn run_full(&self) -> Option<String> {
        let max = self.max_run?;
        self.run_full.load(Ordering::SeqCst).then(|| run_limit(max))
    }
}

fn run_limit(max: u64) -> String {
    format!("run size limit reached: {}", human(max))
}

/// A size as it would be typed: `64 MiB`, `1 GiB`, `1536 KiB`, `1000 bytes`.
pub fn human(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_typed() {
        assert_eq!(human(64 << 20), "64 MiB");
        assert_eq!(human(1 << 30), "1 GiB");
        assert_eq!(human(1536 << 10), "1536 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }

    #[test]
    fn a_log_stops_at_its_limit_and_the_run_once_full_stays_full() {
        let budget = Budget::new(Some(10), Some(25));
        assert_eq!(budget.admit(0, 10), Ok(()));
        assert_eq!(
            budget.admit(10, 1),
            Err(Refused::Log("size limit reached: 10 bytes".into()))
        );
        assert_eq!(budget.admit(0, 10), Ok(()));
        // 20 of 25 used: 6 more do not fit, and from then on nothing does.
        let full = "run size limit reached: 25 bytes".to_string();
        assert_eq!(
            budget.admit(0, 6),
            Err(Refused::Run {
                why: full.clone(),
                first: true
            })
        );
        assert_eq!(
            budget.admit(0, 1),
            Err(Refused::Run {
                why: full.clone(),
                first: false
            })
        );
        assert_eq!(budget.run_full(), Some(full));
        let unlimited = Budget::new(None, None);
        assert_eq!(unlimited.admit(u64::MAX, u64::MAX), Ok(()));
        assert_eq!(unlimited.run_full(), None);
    }

    #[test]
    fn bytes_given_back_can_be_taken_again() {
        let budget = Budget::new(None, Some(10));
        assert_eq!(budget.admit(0, 10), Ok(()));
        budget.give_back(10);
        assert_eq!(budget.admit(0, 10), Ok(()));
    }
}
