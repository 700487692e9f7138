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

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::path::Path;
    use std::sync::Mutex;

    use super::*;
    use crate::log::Side;

    /// A client that sends `chunks`, one per receive, then stays quiet.
    struct Client(Mutex<Vec<&'static [u8]>>);

    impl Connection for Client {
        fn recv(&self, buf: &mut [u8], _: Duration) -> io::Result<usize> {
            let mut chunks = self.0.lock().unwrap();
            if chunks.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let chunk = chunks.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
        fn send(&self, bytes: &[u8]) -> io::Result<usize> {
            Ok(bytes.len())
        }
        fn set_send_timeout(&self, _: Duration) -> io::Result<()> {
            Ok(())
        }
        fn close_send(&self) -> io::Result<()> {
            Ok(())
        }
        fn abort(&self) {}
        fn reset_on_close(&self) {}
    }

    fn server(log: &[u8]) -> Script {
        Script::read(Cursor::new(log), Path::new("t"), Side::Server).unwrap()
    }

    fn pick(scripts: &[Script], served: &[u64], chunks: Vec<&'static [u8]>) -> (usize, Prelude) {
        let client = Client(Mutex::new(chunks));
        choose(scripts, served, &client, &Mask::default(), Duration::from_millis(1)).unwrap()
    }

    #[test]
    fn the_closest_log_answers_and_ties_go_round() {
        let get = server(b"c 0.000001 con\nc 0.000002 6\nGET a\ns 0.000003 1\n1");
        let get_again = server(b"c 0.000001 con\nc 0.000002 6\nGET a\ns 0.000003 1\n2");
        let set = server(b"c 0.000001 con\nc 0.000002 8\nSET a 1\ns 0.000003 2\nOK");
        let greet = server(b"c 0.000001 con\ns 0.000002 3\nhi\nc 0.000003 5\nQUIT\n");
        let all = [get, get_again, set, greet];
        let (i, prelude) = pick(&all, &[0; 4], vec![b"SET", b" a 2\n"]);
        assert_eq!((i, prelude.bytes.as_slice()), (2, &b"SET a 2\n"[..]));
        // The same request twice: the log served less often, then the first.
        assert_eq!(pick(&all, &[0; 4], vec![b"GET a\n"]).0, 0);
        assert_eq!(pick(&all, &[1, 0, 0, 0], vec![b"GET a\n"]).0, 1);
        // A request recorded nowhere: the closest recording answers it.
        assert_eq!(pick(&all, &[0; 4], vec![b"GET b\n"]).0, 0);
        // A client that waits to be greeted.
        assert_eq!(pick(&all, &[0; 4], vec![]).0, 3);
    }
}
