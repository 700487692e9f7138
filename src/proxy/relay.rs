//! One direction of a proxied connection: receive from one peer, record, then send
//! to the other. Each connection runs two of these, one per thread.
//!
//! The order inside the loop is the point of the tool: bytes are written to the log
//! before they are forwarded, so whatever a peer has received is already recorded
//! even if netrecord dies the next instant. The peers are [`Peer`]s, plain TCP or
//! TLS alike: the loop is the same for both.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::connection::{Conn, Recorded};
use crate::log::Side;
use crate::peer::Peer;

/// The receive buffer starts small, so thousands of idle connections cost little
/// memory, and doubles whenever a receive fills it, up to this size, so a bulk
/// transfer moves large chunks with few system calls and few log records.
pub const MAX_BUFFER: usize = 1024 * 1024;
const FIRST_BUFFER: usize = 4 * 1024;

/// How long a direction thread polls its peer before it blocks, when it does.
const POLL_WINDOW: Duration = Duration::from_micros(50);

/// Waits this short in a row mean a conversation is under way: the next message
/// is likely to come within [`POLL_WINDOW`] too.
const SHORT_WAITS: u32 = 2;

/// Decides whether a direction thread polls before it blocks on a receive.
///
/// A thread that blocks and is woken a few microseconds later pays for it twice:
/// its core may have gone idle meanwhile (on a VM, a halt and an interrupt to
/// leave it), and every hop of a request and its answer through the proxy waits
/// like that. Polling (a receive that does not wait, then `sched_yield`, which
/// gives the core to any thread that has work) saves that while the answer is
/// near: measured with `make bench`, round trips on one connection went 1.27x to
/// 1.37x as fast. But it costs CPU (1.6x to 1.8x per round trip), and where
/// connections outnumber the cores the cores are busy anyway and a polling
/// thread only takes time from the others (fan-in, 50 connections: 0.92x to
/// 0.98x). So a thread polls only while its connection's recent waits were
/// short, only while there are no more connection threads than cores, and at
/// most [`POLL_WINDOW`] before it blocks: an idle connection costs nothing.
#[derive(Debug)]
pub(crate) struct Polling {
    /// Connections in flight in the run.
    in_flight: AtomicUsize,
    /// Connections whose threads fit on the cores, two threads each.
    fit: usize,
}

impl Polling {
    pub(crate) fn new() -> Polling {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Polling {
            in_flight: AtomicUsize::new(0),
            fit: cores / 2,
        }
    }

    /// A connection is in flight from now on.
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection is no longer in flight.
    pub(crate) fn ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn worth_it(&self, short_waits: u32) -> bool {
        short_waits >= SHORT_WAITS && self.in_flight.load(Ordering::Relaxed) <= self.fit
    }
}

/// Receives from `src`, first polling it until `POLL_WINDOW` after `started`.
fn poll_then_recv(src: &dyn Peer, buf: &mut Vec<u8>, started: Instant) -> io::Result<usize> {
    loop {
        match src.try_recv(buf)? {
            Some(n) => return Ok(n),
            None if started.elapsed() < POLL_WINDOW => std::thread::yield_now(),
            None => return src.recv(buf),
        }
    }
}

/// Pumps bytes from `src` (the peer on `from`'s side) to `dst` until `from` hangs
/// up or either peer fails.
///
/// - `from` hangs up: record `hup`, then hang up toward the other peer so it sees
///   the half-close, and return; the other direction goes on by itself.
/// - a receive or send fails: record `err` for the failing side and abort both
///   peers, which wakes the sibling thread and makes each peer see a reset, as it
///   would have without netrecord in the middle.
pub(crate) fn pump(conn: &Conn, from: Side, src: &dyn Peer, dst: &dyn Peer, polling: &Polling) {
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_BUFFER);
    let mut short_waits = 0;
    loop {
        let started = Instant::now();
        let got = if polling.worth_it(short_waits) {
            poll_then_recv(src, &mut buf, started)
        } else {
            src.recv(&mut buf)
        };
        short_waits = if started.elapsed() < POLL_WINDOW {
            short_waits.saturating_add(1)
        } else {
            0
        };
        let n = match got {
            Ok(0) => {
                if let Some(how) = src.tls_hangup() {
                    conn.note_tls_hangup(from, how);
                }
                if conn.hup(from) == Recorded::Go {
                    // The peer on the other side may already be gone; its own
                    // direction will notice and record that.
                    let _ = dst.hang_up();
                }
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return fail(conn, from, &e, src, dst),
        };
        if conn.data(from, &buf[..n]) == Recorded::Stop {
            return;
        }
        if let Err(e) = dst.send_all(&buf[..n]) {
            return fail(conn, from.other(), &e, src, dst);
        }
        if n == buf.capacity() && n < MAX_BUFFER {
            buf = Vec::with_capacity(n * 2);
        }
    }
}

/// Records `side`'s failure and, if it is the first, aborts both peers: each gets
/// a reset and no FIN, and the sibling thread wakes up and stops quietly.
pub(crate) fn fail(conn: &Conn, side: Side, error: &io::Error, a: &dyn Peer, b: &dyn Peer) {
    if conn.err(side, error) == Recorded::Go {
        a.abort();
        b.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_polls_only_in_a_quick_conversation_on_a_proxy_with_cores_to_spare() {
        let polling = Polling {
            in_flight: AtomicUsize::new(0),
            fit: 1,
        };
        polling.started();
        assert!(!polling.worth_it(SHORT_WAITS - 1), "not before the waits were short");
        assert!(polling.worth_it(SHORT_WAITS));
        polling.started();
        assert!(!polling.worth_it(SHORT_WAITS), "more connection threads than cores");
        polling.ended();
        assert!(polling.worth_it(SHORT_WAITS));
    }
}
