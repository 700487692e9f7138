//! Which log answers a new client, when replay-server serves several (the logs of
//! a run): the one whose recorded client began the way this client begins.
//!
//! The client's first bytes are read and compared with each log's recorded client
//! stream, masks applied, until every log is decided (its first request matched
//! whole, or differed), or the client has been quiet for the settle time, or has
//! hung up, or [`LIMIT`] bytes have come. The best log is then:
//!
//! 1. one whose recorded client has not differed from these bytes, before one
//!    that has;
//! 2. one whose first request these bytes matched whole, before one still short;
//! 3. the one that matched the most recorded bytes before differing;
//! 4. when the client sent nothing (it waits for a greeting), one whose server
//!    speaks first;
//! 5. on a tie, the log served the fewest times so far, then the first given: a run
//!    that repeats a request is answered with its recordings in turn.
//!
//! The bytes read go to the session as its [`Prelude`], so the client's stream is
//! compared whole.

use std::cmp::Reverse;
use std::io;
use std::time::{Duration, Instant};

use super::compare::Comparer;
use super::mask::Mask;
use super::script::Script;
use super::session::{Connection, Prelude};

/// The most client bytes read before choosing: enough to tell requests apart,
/// and a bound on what is held.
const LIMIT: usize = 64 * 1024;

/// Reads the client's first bytes from `conn` and returns the index of the log
/// in `scripts` that answers it, with the bytes read. `served` counts how often
/// each log has answered a client so far.
pub fn choose<C: Connection>(
    scripts: &[Script],
    served: &[u64],
    conn: &C,
    mask: &Mask,
    settle: Duration,
) -> io::Result<(usize, Prelude)> {
    let mut comparers: Vec<Comparer> = scripts.iter().map(|s| Comparer::new(s, mask, 1)).collect();
    let mut prelude = Prelude::default();
    let mut last = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let decided = comparers
            .iter()
            .all(|c| c.differences() > 0 || c.first_segment_matched());
        if decided || prelude.hup || prelude.bytes.len() >= LIMIT {
            break;
        }
        let quiet = last.elapsed();
        if quiet >= settle {
            break;
        }
        match conn.recv(&mut buf, (settle - quiet).max(Duration::from_millis(1))) {
            Ok(0) => prelude.hup = true,
            Ok(n) => {
                prelude.bytes.extend_from_slice(&buf[..n]);
                for c in &mut comparers {
                    c.feed(&buf[..n]);
                }
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    // What still waits for more bytes is decided on what came.
    for c in &mut comparers {
        c.quiet();
    }
    let silent = prelude.bytes.is_empty();
    let best = (0..scripts.len())
        .max_by_key(|&i| {
            let c = &comparers[i];
            (
                c.differences() == 0,
                c.first_segment_matched(),
                c.matched_before_difference(),
                silent && scripts[i].speaks_first(),
                Reverse(served[i]),
                Reverse(i),
            )
        })
        .expect("at least one log");
    Ok((best, prelude))
}
