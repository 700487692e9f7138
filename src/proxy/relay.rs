//! One direction of a proxied connection: receive from one peer, record, then send
//! to the other. Each connection runs two of these, one per thread.
//!
//! The order inside the loop is the point of the tool: bytes are written to the log
//! before they are forwarded, so whatever a peer has received is already recorded
//! even if netrecord dies the next instant.

use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use socket2::SockRef;

use super::connection::{Conn, Recorded};
use crate::log::Side;

/// The receive buffer starts small, so thousands of idle connections cost little
/// memory, and doubles whenever a receive fills it, up to this size, so a bulk
/// transfer moves large chunks with few system calls and few log records.
pub const MAX_BUFFER: usize = 1024 * 1024;
const FIRST_BUFFER: usize = 4 * 1024;

/// Pumps bytes from `src` (the peer on `from`'s side) to `dst` until `from` hangs
/// up or either socket fails.
///
/// - `from` hangs up: record `hup`, then `shutdown(Write)` toward the other peer so
///   it sees the half-close, and return; the other direction goes on by itself.
/// - a receive or send fails: record `err` for the failing side and tear the whole
///   connection down, which also wakes the sibling thread out of its `recv`.
pub fn pump(conn: &Conn, from: Side, src: &TcpStream, dst: &TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(FIRST_BUFFER);
    loop {
        let n = match recv(src, &mut buf) {
            Ok(0) => {
                if conn.hup(from) == Recorded::Go {
                    // The peer on the other side may already be gone; its own
                    // direction will notice and record that.
                    let _ = dst.shutdown(Shutdown::Write);
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
        if let Err(e) = (&*dst).write_all(&buf[..n]) {
            return fail(conn, from.other(), &e, src, dst);
        }
        if n == buf.capacity() && n < MAX_BUFFER {
            buf = Vec::with_capacity(n * 2);
        }
    }
}

/// Receives into `buf`'s spare capacity without zeroing it first (a fresh large
/// buffer would otherwise be written twice) and returns the byte count.
fn recv(src: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let spare: &mut [MaybeUninit<u8>] = buf.spare_capacity_mut();
    let n = SockRef::from(src).recv(spare)?;
    // SAFETY: recv initialised the first n bytes of the spare capacity.
    unsafe { buf.set_len(n) };
    Ok(n)
}

/// Records `side`'s failure and, if it is the first, tears the connection down:
/// both sockets are shut down, which wakes the sibling thread, and set to linger 0
/// so that closing them sends a reset: each peer sees the connection abort, as it
/// would have without netrecord in the middle.
fn fail(conn: &Conn, side: Side, error: &io::Error, a: &TcpStream, b: &TcpStream) {
    if conn.err(side, error) == Recorded::Go {
        for s in [a, b] {
            let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
