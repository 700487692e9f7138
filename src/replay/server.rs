//! `netrecord replay-server`: be the server of a recording. Listens, and plays the
//! recorded server to one client (or, with `--loop`, to each client in turn until
//! a signal), comparing what each client sends with the recorded client.
//!
//! Results go to stdout, one line per client and a summary; the startup line, notes
//! about the log, and errors go to stderr.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::count;
use super::script::Script;
use super::session::{self, Options};
use crate::cli::{ReplayServerArgs, Timing};
use crate::log::Side;
use crate::net::{self, bind};
use crate::process::say;

/// Runs `netrecord replay-server`. Exit status 0 if every client served sent what
/// the recording says, 1 otherwise.
pub fn run(args: &ReplayServerArgs) -> anyhow::Result<ExitCode> {
    let timeout = args.timeout;
    let script = Script::load(&args.log, Side::Server)?;
    if let Some(note) = &script.note {
        say!("{note}");
    }
    let addr = SocketAddr::new(args.listen, args.port);
    let listener = bind(addr).with_context(|| format!("could not listen on {addr}"))?;
    let local = listener.local_addr().context("could not read the listening address")?;
    say!(
        "listening on {local}, replaying {} as the server ({} to expect from each client, {} to send)",
        args.log.display(),
        count(script.theirs().len() as u64, "byte"),
        count(script.our_total(), "byte"),
    );
    let stop = Arc::new(Stop::new(&listener).context("could not prepare the listener for a stop")?);
    if args.repeat {
        // SIGINT and SIGTERM end a `--loop` run, which then reports the clients served.
        let stop = Arc::clone(&stop);
        crate::process::on_stop_signal(move || stop.trigger())?;
    }
    let options = Options {
        timeout,
        timing: Timing::Fast,
        stop_at_mismatch: args.strict,
    };
    let mut out = io::stdout().lock();
    let (mut served, mut failed) = (0u64, 0u64);
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(_) if stop.is_triggered() => break,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
            Err(e) => return Err(e).with_context(|| format!("failed to accept a client on {local}")),
        };
        let n = served + 1;
        // Recorded chunks go out as recorded, without Nagle's delay.
        let _ = stream.set_nodelay(true);
        stop.serving(&stream);
        let outcome = session::play(&script, &stream, options);
        stop.served();
        drop(stream);
        if stop.is_triggered() {
            match &outcome {
                Ok(o) => writeln!(
                    out,
                    "#{n} {peer}: interrupted after receiving {} and sending {} (not counted)",
                    count(o.received, "byte"),
                    count(o.sent, "byte"),
                )?,
                Err(_) => writeln!(out, "#{n} {peer}: interrupted (not counted)")?,
            }
            break;
        }
        served += 1;
        match outcome {
            Ok(o) if o.mismatch.is_none() => writeln!(
                out,
                "#{n} {peer}: matched the recording: received {}, sent {}",
                count(o.received, "byte"),
                count(o.sent, "byte"),
            )?,
            Ok(o) => {
                failed += 1;
                let mismatch = o.mismatch.expect("a mismatch");
                writeln!(
                    out,
                    "#{n} {peer}: {mismatch}; received {} of {}, sent {} of {}",
                    o.received,
                    count(script.theirs().len() as u64, "byte"),
                    o.sent,
                    script.our_total()
                )?;
            }
            Err(e) => {
                failed += 1;
                writeln!(out, "#{n} {peer}: could not replay: {e}")?;
            }
        }
        out.flush()?;
        if !args.repeat {
            break;
        }
    }
    writeln!(
        out,
        "served {}: {} matched the recording, {failed} did not",
        count(served, "client"),
        served - failed
    )?;
    out.flush()?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Ends a `--loop` run: wakes the accept loop (the listener's [`net::Stop`]), and
/// cuts the client being served short so a stop does not wait for it.
struct Stop {
    listener: net::Stop,
    current: Mutex<Option<TcpStream>>,
}

impl Stop {
    fn new(listener: &TcpListener) -> io::Result<Stop> {
        let stop = net::Stop::new();
        stop.attach(listener)?;
        Ok(Stop {
            listener: stop,
            current: Mutex::new(None),
        })
    }

    fn trigger(&self) {
        self.listener.trigger();
        // Shutting the client's socket down ends its session.
        if let Some(stream) = &*self.current.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn is_triggered(&self) -> bool {
        self.listener.is_triggered()
    }

    /// Remembers the client being served, so a stop can reach it.
    fn serving(&self, stream: &TcpStream) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = stream.try_clone().ok();
        // A stop that came between accept and here found no client to cut short.
        if self.is_triggered() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Forgets the client, closing the copy of its socket: its reset or close
    /// must happen when the session's stream is dropped, not later.
    fn served(&self) {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
