//! Playing one side of a recorded connection over a live socket: a writer thread
//! sends our recorded records in order, each once the peer has sent what was
//! recorded before it, while the calling thread reads the peer's stream and
//! compares it with the recording.
//!
//! Reading and writing run side by side, as in the proxy, because a peer may send
//! while it is being sent to: a single thread that wrote a large response while the
//! peer was still writing its request could deadlock with it. The two threads meet
//! in one `State` behind a mutex and a condition variable: the reader publishes
//! how far the peer has got, the writer how far we have.
//!
//! The peer's bytes are compared as one stream, so it may split them into any
//! chunks. A peer that goes silent is given up on after the timeout, counted from
//! its last bytes or from our last send, and only once we have sent everything the
//! recording has before the bytes we wait for: a peer waiting for our next message
//! is not late.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::mismatch::{EXCERPT, Kind, Mismatch};
use super::script::{Action, Mark, Script};
use crate::cli::Timing;

/// How to play a script.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long the peer may stay silent when it owes us bytes; also the limit for
    /// one send to a peer that does not read.
    pub timeout: Duration,
    /// `Original` keeps the recorded gaps before each of our records.
    pub timing: Timing,
    /// End the connection at the first mismatch instead of replaying on.
    pub stop_at_mismatch: bool,
}

/// What happened on one replayed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The first departure from the recording, if any.
    pub mismatch: Option<Mismatch>,
    /// Bytes of ours sent.
    pub sent: u64,
    /// Bytes received from the peer (compared or not).
    pub received: u64,
}

/// The receive buffer: large enough to move a bulk transfer in few calls.
const BUFFER: usize = 64 * 1024;

/// What the two threads share.
struct State {
    /// The peer's progress, as read.
    theirs: Mark,
    last_received: Instant,
    /// Our progress, as sent.
    ours: Mark,
    last_sent: Instant,
    reader_done: bool,
    writer_done: bool,
    /// The connection was shut down: both threads stop.
    aborted: bool,
    mismatch: Option<Mismatch>,
}

struct Shared<'a> {
    script: &'a Script,
    stream: &'a TcpStream,
    options: Options,
    state: Mutex<State>,
    changed: Condvar,
}

/// Plays `script` on `stream` until both directions are done, then returns what
/// happened; the caller closes the stream.
pub fn play(script: &Script, stream: &TcpStream, options: Options) -> io::Result<Outcome> {
    let now = Instant::now();
    let shared = Shared {
        script,
        stream,
        options,
        state: Mutex::new(State {
            theirs: Mark::default(),
            last_received: now,
            ours: Mark::default(),
            last_sent: now,
            reader_done: false,
            writer_done: false,
            aborted: false,
            mismatch: None,
        }),
        changed: Condvar::new(),
    };
    stream.set_write_timeout(Some(options.timeout))?;
    thread::scope(|scope| {
        let writer = thread::Builder::new()
            .name("replay-writer".into())
            .spawn_scoped(scope, || write_side(&shared))?;
        read_side(&shared);
        if let Err(panic) = writer.join() {
            std::panic::resume_unwind(panic);
        }
        Ok::<(), io::Error>(())
    })?;
    let state = shared.state.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Outcome {
        mismatch: state.mismatch,
        sent: state.ours.bytes,
        received: state.theirs.bytes,
    })
}

impl Shared<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `mismatch` unless an earlier one was, and ends the connection if
    /// told to stop at the first mismatch or if `fatal` (nothing sensible can
    /// follow). Shutting the socket down wakes a thread blocked on it.
    fn fail(&self, state: &mut State, mismatch: Mismatch, fatal: bool) {
        if state.aborted {
            return;
        }
        state.mismatch.get_or_insert(mismatch);
        if fatal || self.options.stop_at_mismatch {
            state.aborted = true;
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        self.changed.notify_all();
    }
}

/// Sends our records in order, each once the peer has got as far as recorded
/// before it (or the reader has given up on the peer, and we replay on).
fn write_side(shared: &Shared) {
    let mut previous = Instant::now();
    for step in &shared.script.steps {
        let mut state = shared.lock();
        let mut waited = false;
        while !state.aborted && !state.reader_done && !state.theirs.reaches(step.after) {
            state = shared.changed.wait(state).unwrap_or_else(|e| e.into_inner());
            waited = true;
        }
        if state.aborted {
            break;
        }
        drop(state);
        if shared.options.timing == Timing::Original && !step.gap.is_zero() {
            // The gap runs from the record before this one: the peer's bytes we
            // just waited for, or our previous send.
            let anchor = if waited { Instant::now() } else { previous };
            if !pause_until(shared, anchor.checked_add(step.gap)) {
                break;
            }
        }
        let done = match &step.action {
            Action::Send(range) => send(shared, shared.script.ours(range)),
            Action::Hup => hang_up(shared),
            Action::Reset => {
                // Closing with linger 0 sends a reset, as the recorded peer saw;
                // the stream is closed when the session ends.
                let _ = SockRef::from(shared.stream).set_linger(Some(Duration::ZERO));
                false
            }
        };
        if !done {
            break;
        }
        previous = Instant::now();
    }
    let mut state = shared.lock();
    state.writer_done = true;
    shared.changed.notify_all();
}

/// Waits until `when`, or returns false if the connection is aborted first. A
/// `None` (a recorded gap too long for the clock to represent) never comes: the
/// writer stops there.
fn pause_until(shared: &Shared, when: Option<Instant>) -> bool {
    let Some(when) = when else { return false };
    let mut state = shared.lock();
    loop {
        if state.aborted {
            return false;
        }
        let now = Instant::now();
        if now >= when {
            return true;
        }
        state = shared
            .changed
            .wait_timeout(state, when - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Sends one record's bytes; false if the connection failed.
fn send(shared: &Shared, mut bytes: &[u8]) -> bool {
    let start = shared.lock().ours.bytes;
    let mut sent = 0;
    while !bytes.is_empty() {
        match (&*shared.stream).write(bytes) {
            Ok(0) => return write_failed(shared, start + sent, io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                sent += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return write_failed(shared, start + sent, e),
        }
    }
    let mut state = shared.lock();
    state.ours.bytes = start + sent;
    state.last_sent = Instant::now();
    shared.changed.notify_all();
    true
}

/// Closes our sending half, as the recorded side did with its `hup`.
fn hang_up(shared: &Shared) -> bool {
    let offset = shared.lock().ours.bytes;
    if let Err(e) = shared.stream.shutdown(Shutdown::Write) {
        return write_failed(shared, offset, e);
    }
    let mut state = shared.lock();
    state.ours.hup = true;
    state.last_sent = Instant::now();
    shared.changed.notify_all();
    true
}

fn write_failed(shared: &Shared, offset: u64, error: io::Error) -> bool {
    let error = if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        format!(
            "the peer read nothing for {}s (timed out)",
            shared.options.timeout.as_secs_f64()
        )
    } else {
        error.to_string()
    };
    let mismatch = Mismatch {
        side: shared.script.us,
        offset,
        kind: Kind::Failed { sending: true, error },
    };
    let mut state = shared.lock();
    shared.fail(&mut state, mismatch, true);
    false
}

/// Reads the peer's stream to its recorded end (its hang-up, if recorded) and
/// compares it with the recording. Runs on the calling thread.
fn read_side(shared: &Shared) {
    read_stream(shared);
    let mut state = shared.lock();
    state.reader_done = true;
    shared.changed.notify_all();
}

fn read_stream(shared: &Shared) {
    let script = shared.script;
    let peer = script.us.other();
    let recorded = script.theirs();
    let total = recorded.len() as u64;
    let expect_hup = script.their_hup();
    let mut pos: u64 = 0;
    let mut next = 0;
    let mut buf = vec![0u8; BUFFER];
    loop {
        let wait = {
            let mut state = shared.lock();
            if state.aborted {
                return;
            }
            while next < script.expects.len() && state.theirs.reaches(script.expects[next].until) {
                next += 1;
            }
            if next == script.expects.len() {
                return;
            }
            // The peer is late only once we have sent what it may be waiting for.
            let due = state.writer_done || state.ours.reaches(script.expects[next].after);
            let since = state.last_received.max(state.last_sent);
            if due && since.elapsed() >= shared.options.timeout {
                let mismatch = Mismatch {
                    side: peer,
                    offset: pos,
                    kind: Kind::Silent {
                        waited: shared.options.timeout,
                        hup: pos == total,
                    },
                };
                shared.fail(&mut state, mismatch, false);
                return;
            }
            if due {
                shared.options.timeout.saturating_sub(since.elapsed())
            } else {
                shared.options.timeout
            }
        };
        // A zero timeout would mean "block forever".
        let _ = shared.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        // Without a recorded hang-up, what follows the recorded bytes is not ours
        // to judge: read no further than them.
        let room = if expect_hup {
            buf.len()
        } else {
            buf.len().min((total - pos) as usize)
        };
        let n = match (&*shared.stream).read(&mut buf[..room]) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let mut state = shared.lock();
                let mismatch = Mismatch {
                    side: peer,
                    offset: pos,
                    kind: Kind::Failed {
                        sending: false,
                        error: e.to_string(),
                    },
                };
                shared.fail(&mut state, mismatch, true);
                return;
            }
        };
        let mut state = shared.lock();
        if state.aborted {
            return;
        }
        if n == 0 {
            state.theirs.hup = true;
            state.last_received = Instant::now();
            if pos < total {
                let mismatch = Mismatch {
                    side: peer,
                    offset: pos,
                    kind: Kind::HungUpEarly { recorded: total },
                };
                shared.fail(&mut state, mismatch, false);
            }
            shared.changed.notify_all();
            return;
        }
        let got = &buf[..n];
        let expected = &recorded[pos as usize..(pos + n as u64).min(total) as usize];
        compare(shared, &mut state, pos, expected, got);
        pos += n as u64;
        // Count the bytes only after comparing them: with --strict, the writer
        // must not answer bytes that differ.
        state.theirs.bytes = pos.min(total);
        state.last_received = Instant::now();
        shared.changed.notify_all();
        if pos > total || state.aborted {
            return;
        }
    }
}

/// Compares one chunk of the peer's stream, starting at `pos`, with the recorded
/// bytes there (`expected` is shorter than `got` when the peer sent more than
/// recorded).
fn compare(shared: &Shared, state: &mut State, pos: u64, expected: &[u8], got: &[u8]) {
    let peer = shared.script.us.other();
    if let Some(first) = &mut state.mismatch {
        first.follow(got);
    }
    if let Some(i) = expected.iter().zip(got).position(|(a, b)| a != b) {
        let offset = pos + i as u64;
        let recorded = shared.script.theirs();
        let end = (offset as usize + EXCERPT).min(recorded.len());
        let mismatch = Mismatch {
            side: peer,
            offset,
            kind: Kind::Differs {
                expected: recorded[offset as usize..end].to_vec(),
                got: got[i..got.len().min(i + EXCERPT)].to_vec(),
            },
        };
        shared.fail(state, mismatch, false);
    } else if got.len() > expected.len() {
        let extra = &got[expected.len()..];
        let mismatch = Mismatch {
            side: peer,
            offset: pos + expected.len() as u64,
            kind: Kind::Extra {
                got: extra[..extra.len().min(EXCERPT)].to_vec(),
            },
        };
        shared.fail(state, mismatch, false);
    }
}
