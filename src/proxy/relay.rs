//! One direction of a proxied connection: receive from one peer, record, then send
//! to the other. Each connection runs two of these, one per thread.
//!
//! The order inside the loop is the point of the tool: bytes are written to the log
//! before they are forwarded, so whatever a peer has received is already recorded
//! even if netrecord dies the next instant. The peers are [`Peer`]s, plain TCP or
//! TLS alike: the loop is the same for both.

use std::io;

use super::connection::{Conn, Recorded};
use crate::log::Side;
use crate::peer::Peer;

/// The receive buffer starts small, so thousands of idle connections cost little
/// memory, and doubles whenever a receive fills it, up to this size, so a bulk
/// transfer moves large chunks with few system calls and few log records.
pub const MAX_BUFFER: usize = 1024 * 1024;
const FIRST_BUFFER: usize = 4 * 1024;

/// Pumps bytes from `src` (the peer on `from`'s side) to `dst` until `from` hangs
/// up or either peer fails.
///
/// - `from` hangs up: record `hup`, then hang up toward the other peer so it sees
///   the half-close, and return; the other direction goes on by itself.
/// - a receive or send fails: record `err` for the failing side and abort both
///   peers, which wakes the sibling thread and makes each peer see a reset, as it
///   would have without netrecord in the middle.
pub(crate) fn pump(conn: &Conn, from: Side, src: &dyn Peer, dst: &dyn Peer) {
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_BUFFER);
    loop {
        let n = match src.recv(&mut buf) {
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
