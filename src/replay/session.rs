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
//! The peer's bytes are judged by a [`Comparer`] as one stream, so the peer may
//! split them into any chunks; how far into the recording it says the peer has
//! got is what our next step waits for. A peer that goes silent is given up on
//! after the timeout, counted from its last bytes or from our last send, and only
//! once we have sent everything the recording has before the bytes we wait for: a
//! peer waiting for our next message is not late. A peer quiet for the settle
//! time after a difference has said what it will say: the comparer moves on.
//!
//! The session reads and writes through a [`Connection`], which the TCP socket
//! implements in one place at the bottom of this file.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::compare::Comparer;
use super::count;
use super::mask::Mask;
use super::mismatch::{Kind, Mismatch};
use super::script::{Action, Mark, Script};
use crate::cli::Timing;

/// How to play a script.
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// How long the peer may stay silent when it owes us bytes; also the limit for
    /// one send to a peer that does not read.
    pub timeout: Duration,
    /// How long the peer may be quiet after a difference before we go on.
    pub settle: Duration,
    /// `Original` keeps the recorded gaps before each of our records.
    pub timing: Timing,
    /// End the connection at the first difference instead of replaying on.
    pub stop_at_mismatch: bool,
    /// The most differences kept for the report; the rest are counted.
    pub max_differences: usize,
    /// What of the peer's stream compares equal whatever its bytes.
    pub mask: &'a Mask,
}

/// Bytes read from the peer before the session started (while a log was chosen
/// for it), and whether it had hung up.
#[derive(Debug, Default)]
pub struct Prelude {
    pub bytes: Vec<u8>,
    pub hup: bool,
}

/// What happened on one replayed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The first departures from the recording, up to the limit.
    pub differences: Vec<Mismatch>,
    /// How many departures there were in all.
    pub difference_count: u64,
    /// Masked spans that compared equal.
    pub masked: u64,
    /// Bytes of ours sent.
    pub sent: u64,
    /// Bytes received from the peer (compared or not).
    pub received: u64,
}

impl Outcome {
    /// Whether the peer did as recorded (after masks).
    pub fn matched(&self) -> bool {
        self.difference_count == 0
    }

    /// The replay's result in a few words: `matched`, `matched with 2 masked
    /// spans`, or `3 differences`.
    pub fn verdict(&self) -> String {
        match (self.difference_count, self.masked) {
            (0, 0) => "matched".into(),
            (0, masked) => format!("matched with {}", count(masked, "masked span")),
            (n, _) => count(n, "difference"),
        }
    }
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
    /// Sending failed: the writer's departure (the reader's go to its comparer).
    failure: Option<Mismatch>,
}

struct Shared<'a, C> {
    script: &'a Script,
    stream: &'a C,
    options: Options<'a>,
    state: Mutex<State>,
    changed: Condvar,
}

/// Plays `script` on `stream` until both directions are done, then returns what
/// happened; the caller closes the stream. `prelude` is what the peer sent before.
pub fn play<C: Connection>(script: &Script, stream: &C, options: Options, prelude: Prelude) -> io::Result<Outcome> {
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
            failure: None,
        }),
        changed: Condvar::new(),
    };
    stream.set_send_timeout(options.timeout)?;
    let comparer = thread::scope(|scope| {
        let writer = thread::Builder::new()
            .name("replay-writer".into())
            .spawn_scoped(scope, || write_side(&shared))?;
        let comparer = read_side(&shared, prelude);
        if let Err(panic) = writer.join() {
            std::panic::resume_unwind(panic);
        }
        Ok::<_, io::Error>(comparer)
    })?;
    let state = shared.state.into_inner().unwrap_or_else(|e| e.into_inner());
    let (received, masked) = (comparer.received(), comparer.masked());
    let (mut differences, mut difference_count) = comparer.into_differences();
    if let Some(failure) = state.failure {
        difference_count += 1;
        if differences.len() < options.max_differences.max(1) {
            differences.push(failure);
        }
    }
    Ok(Outcome {
        differences,
        difference_count,
        masked,
        sent: state.ours.bytes,
        received,
    })
}

impl<C: Connection> Shared<'_, C> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a departure from the recording: ends the connection if told to stop
    /// at the first one, or if `fatal` (nothing sensible can follow). Aborting
    /// the connection wakes a thread blocked on it.
    fn departed(&self, state: &mut State, fatal: bool) {
        if fatal || self.options.stop_at_mismatch {
            state.aborted = true;
            self.stream.abort();
        }
        self.changed.notify_all();
    }
}

/// Sends our records in order, each once the peer has got as far as recorded
/// before it (or the reader has given up on the peer, and we replay on).
fn write_side<C: Connection>(shared: &Shared<C>) {
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
                // The recorded peer saw a reset; the stream is closed when the
                // session ends.
                shared.stream.reset_on_close();
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
fn pause_until<C: Connection>(shared: &Shared<C>, when: Option<Instant>) -> bool {
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
fn send<C: Connection>(shared: &Shared<C>, mut bytes: &[u8]) -> bool {
    let start = shared.lock().ours.bytes;
    let mut sent = 0;
    while !bytes.is_empty() {
        match shared.stream.send(bytes) {
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
fn hang_up<C: Connection>(shared: &Shared<C>) -> bool {
    let offset = shared.lock().ours.bytes;
    if let Err(e) = shared.stream.close_send() {
        return write_failed(shared, offset, e);
    }
    let mut state = shared.lock();
    state.ours.hup = true;
    state.last_sent = Instant::now();
    shared.changed.notify_all();
    true
}

fn write_failed<C: Connection>(shared: &Shared<C>, offset: u64, error: io::Error) -> bool {
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
        live: offset,
        kind: Kind::Failed { sending: true, error },
    };
    let mut state = shared.lock();
    // After an abort, a failed send is its consequence, not news.
    if !state.aborted {
        state.failure = Some(mismatch);
        shared.departed(&mut state, true);
    }
    false
}

/// Reads the peer's stream to its recorded end (its hang-up, if recorded) and
/// compares it with the recording. Runs on the calling thread.
fn read_side<'a, C: Connection>(shared: &Shared<'a, C>, prelude: Prelude) -> Comparer<'a> {
    let comparer = read_stream(shared, prelude);
    let mut state = shared.lock();
    state.reader_done = true;
    shared.changed.notify_all();
    comparer
}

fn read_stream<'a, C: Connection>(shared: &Shared<'a, C>, prelude: Prelude) -> Comparer<'a> {
    let script = shared.script;
    let options = shared.options;
    let total = script.theirs().len() as u64;
    let expect_hup = script.their_hup();
    let mut comparer = Comparer::new(script, options.mask, options.max_differences);
    let mut hup = false;
    if !prelude.bytes.is_empty() {
        let before = comparer.differences();
        comparer.feed(&prelude.bytes);
        publish(shared, &mut shared.lock(), &comparer, hup, before);
    }
    if prelude.hup {
        let before = comparer.differences();
        comparer.hang_up();
        hup = true;
        publish(shared, &mut shared.lock(), &comparer, hup, before);
    }
    let mut buf = vec![0u8; BUFFER];
    // The first expectation the peer has not reached: progress only grows.
    let mut next = 0;
    loop {
        let wait = {
            let mut state = shared.lock();
            // After the peer's hang-up nothing more can come; without a recorded
            // hang-up, what follows the recorded bytes is not ours to judge.
            if state.aborted || hup || (comparer.progress() == total && !expect_hup) {
                return comparer;
            }
            let quiet = state.last_received.elapsed();
            if comparer.needs_quiet() && quiet >= options.settle {
                let before = comparer.differences();
                comparer.quiet();
                publish(shared, &mut state, &comparer, hup, before);
                continue;
            }
            // The peer is late only once we have sent what it may be waiting for.
            while next < script.expects.len() && state.theirs.reaches(script.expects[next].until) {
                next += 1;
            }
            let due = state.writer_done || script.expects.get(next).is_none_or(|e| state.ours.reaches(e.after));
            let since = state.last_received.max(state.last_sent);
            if due && since.elapsed() >= options.timeout {
                comparer.report(Kind::Silent {
                    waited: options.timeout,
                    hup: comparer.progress() == total,
                });
                shared.departed(&mut state, false);
                return comparer;
            }
            let mut wait = if due {
                options.timeout.saturating_sub(since.elapsed())
            } else {
                options.timeout
            };
            if comparer.needs_quiet() {
                wait = wait.min(options.settle.saturating_sub(quiet));
            }
            wait
        };
        // In lockstep, read no further than the recorded bytes: see above.
        let room = if expect_hup || !comparer.in_lockstep() {
            buf.len()
        } else {
            buf.len().min((total - comparer.progress()) as usize)
        };
        // A zero timeout would mean "block forever".
        let n = match shared.stream.recv(&mut buf[..room], wait.max(Duration::from_millis(1))) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let mut state = shared.lock();
                if !state.aborted {
                    comparer.report(Kind::Failed {
                        sending: false,
                        error: e.to_string(),
                    });
                    shared.departed(&mut state, true);
                }
                return comparer;
            }
        };
        let mut state = shared.lock();
        if state.aborted {
            return comparer;
        }
        let before = comparer.differences();
        if n == 0 {
            hup = true;
            comparer.hang_up();
        } else {
            comparer.feed(&buf[..n]);
        }
        state.last_received = Instant::now();
        publish(shared, &mut state, &comparer, hup, before);
    }
}

/// Tells the writer how far the peer has got, and acts on a new difference. The
/// progress counts only bytes compared: with --strict, the writer must not
/// answer bytes that differ.
fn publish<C: Connection>(shared: &Shared<C>, state: &mut State, comparer: &Comparer, hup: bool, before: u64) {
    state.theirs = Mark {
        bytes: comparer.progress(),
        hup,
    };
    if comparer.differences() > before {
        shared.departed(state, false);
    }
    shared.changed.notify_all();
}

/// The live peer's connection as a session uses it: receive with a time limit,
/// send, half-close, abort. The TCP socket is the one implementation here; a
/// peer's stream of another kind plays the same part.
pub trait Connection: Sync {
    /// Receives into `buf`, waiting at most `wait`; `WouldBlock` or `TimedOut`
    /// when nothing came in time, `Ok(0)` when the peer hung up.
    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<usize>;
    /// Sends some of `bytes`, returning how many.
    fn send(&self, bytes: &[u8]) -> io::Result<usize>;
    /// The longest one send may block on a peer that does not read.
    fn set_send_timeout(&self, timeout: Duration) -> io::Result<()>;
    /// Closes our sending half (a `hup`).
    fn close_send(&self) -> io::Result<()>;
    /// Ends the connection at once, waking a thread blocked on it.
    fn abort(&self);
    /// Makes the close, when the connection is dropped, a reset.
    fn reset_on_close(&self);
}

/// A TLS peer (`replay-server --tls-listen`, `replay-client --tls-upstream`):
/// the same stream of plaintext as a socket.
impl Connection for crate::tls::TlsPeer {
    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
        // A receive that times out leaves the TLS session as it was.
        self.socket().set_read_timeout(Some(wait))?;
        let mut plain = Vec::with_capacity(buf.len());
        let n = crate::peer::Peer::recv(self, &mut plain)?;
        buf[..n].copy_from_slice(&plain[..n]);
        Ok(n)
    }

    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        crate::peer::Peer::send_all(self, bytes)?;
        Ok(bytes.len())
    }

    fn set_send_timeout(&self, timeout: Duration) -> io::Result<()> {
        crate::tls::TlsPeer::set_send_timeout(self, timeout);
        Ok(())
    }

    fn close_send(&self) -> io::Result<()> {
        crate::peer::Peer::hang_up(self)
    }

    fn abort(&self) {
        // Shutting both halves down wakes a thread blocked in read or write.
        let _ = self.socket().shutdown(Shutdown::Both);
    }

    fn reset_on_close(&self) {
        // Closing with linger 0 sends a reset.
        let _ = SockRef::from(self.socket()).set_linger(Some(Duration::ZERO));
    }
}

impl Connection for TcpStream {
    fn recv(&self, buf: &mut [u8], wait: Duration) -> io::Result<usize> {
        self.set_read_timeout(Some(wait))?;
        (&*self).read(buf)
    }

    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        (&*self).write(bytes)
    }

    fn set_send_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(timeout))
    }

    fn close_send(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn abort(&self) {
        // Shutting both halves down wakes a thread blocked in read or write.
        let _ = self.shutdown(Shutdown::Both);
    }

    fn reset_on_close(&self) {
        // Closing with linger 0 sends a reset.
        let _ = SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}
