//! `netrecord replay-server`: be the server of a recording. Listens, and plays the
//! recorded server to one client (or, with `--loop`, to each client in turn until
//! a signal), comparing what each client sends with the recorded client. Given
//! the logs of a run, it answers each client from the log that [`choose`] picks.
//!
//! Results go to stdout, one line per client and a summary; the startup line, notes
//! about the logs, and errors go to stderr.

use std::io::{self, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::choose::choose;
use super::mask::Mask;
use super::script::Script;
use super::session::{self, Connection, Options, Outcome, Prelude};
use super::{count, tally};
use crate::cli::{ReplayServerArgs, Timing};
use crate::log::Side;
use crate::net::{self, bind};
use crate::process::say;

/// Runs `netrecord replay-server`. Exit status 0 if every client served sent what
/// the recording says, 1 otherwise.
pub fn run(args: &ReplayServerArgs) -> anyhow::Result<ExitCode> {
    let mask = Mask::new(&args.masks.patterns, &args.masks.presets)?;
    let logs = crate::log::logs_in_order(&args.logs);
    let scripts = load(&logs, &mask)?;
    let addr = SocketAddr::new(args.listen, args.port);
    // Before the listener opens, so a client can be pointed at the CA first.
    let tls = crate::tls::Listen::for_replay(&args.tls, args.timeout)?;
    let listener = bind(addr).with_context(|| format!("could not listen on {addr}"))?;
    let local = listener.local_addr().context("could not read the listening address")?;
    let tls_words = match tls.as_ref().map(|t| t.ca_path()) {
        Some(Some(ca)) => format!(" over TLS (clients must trust netrecord's CA {})", ca.display()),
        Some(None) => " over TLS".to_string(),
        None => String::new(),
    };
    if let [script] = &scripts[..] {
        say!(
            "listening on {local}{tls_words}, replaying {} as the server ({} to expect from each client, {} to send)",
            logs[0].display(),
            count(script.theirs().len() as u64, "byte"),
            count(script.our_total(), "byte"),
        );
    } else {
        say!(
            "listening on {local}{tls_words}, replaying {} as the server, each client answered from the log its first bytes match best",
            count(scripts.len() as u64, "log"),
        );
    }
    let stop = Arc::new(Stop::new(&listener).context("could not prepare the listener for a stop")?);
    if args.repeat {
        // SIGINT and SIGTERM end a `--loop` run, which then reports the clients served.
        let stop = Arc::clone(&stop);
        crate::process::on_stop_signal(move || stop.trigger())?;
    }
    let options = Options {
        timeout: args.timeout,
        settle: args.settle,
        timing: Timing::Fast,
        stop_at_mismatch: args.strict,
        // One line per client: the first difference, and how many there were.
        max_differences: 1,
        mask: &mask,
    };
    let mut out = io::stdout().lock();
    let (mut served, mut failed) = (0u64, 0u64);
    let mut served_by_log = vec![0u64; scripts.len()];
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
        let outcome = match &tls {
            None => serve(&scripts, &served_by_log, &stream, options, args.settle),
            Some(tls) => match stream
                .try_clone()
                .map_err(|e| e.to_string())
                .and_then(|s| tls.accept(s))
            {
                Ok(peer) => serve(&scripts, &served_by_log, &peer, options, args.settle),
                Err(why) => Err(io::Error::other(why)),
            },
        };
        stop.served();
        drop(stream);
        let from = |i: usize| {
            if scripts.len() == 1 {
                String::new()
            } else {
                format!(" ({})", logs[i].display())
            }
        };
        if stop.is_triggered() {
            match &outcome {
                Ok((i, o)) => writeln!(
                    out,
                    "#{n} {peer}{}: interrupted after receiving {} and sending {} (not counted)",
                    from(*i),
                    count(o.received, "byte"),
                    count(o.sent, "byte"),
                )?,
                Err(_) => writeln!(out, "#{n} {peer}: interrupted (not counted)")?,
            }
            break;
        }
        served += 1;
        match outcome {
            Ok((i, o)) => {
                served_by_log[i] += 1;
                if !o.matched() {
                    failed += 1;
                }
                writeln!(out, "#{n} {peer}{}: {}", from(i), report(&o, &scripts[i]))?;
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

/// Reads every log, with a note for each that stops short of a whole connection.
fn load(logs: &[PathBuf], mask: &Mask) -> anyhow::Result<Vec<Script>> {
    logs.iter()
        .map(|log| {
            let mut script = Script::load(log, Side::Server)?;
            if let Some(note) = &script.note {
                say!("{note}");
            }
            script.apply_mask(mask);
            Ok(script)
        })
        .collect()
}

/// One client's result: the verdict, the first difference, and the byte counts.
fn report(o: &Outcome, script: &Script) -> String {
    let recorded = script.theirs().len() as u64;
    if o.matched() {
        let masked = if o.masked == 0 {
            String::new()
        } else {
            format!(" with {}", count(o.masked, "masked span"))
        };
        return format!(
            "matched the recording{masked}: received {}, sent {}",
            count(o.received, "byte"),
            count(o.sent, "byte")
        );
    }
    let first = o.differences.first().map(|d| format!(": {d}")).unwrap_or_default();
    format!(
        "{}{first}; {}; sent {} of {}",
        count(o.difference_count, "difference"),
        tally("client", "byte", o.received, recorded),
        o.sent,
        count(script.our_total(), "byte"),
    )
}

/// Serves one client on `stream`: picks the log to answer it from (when there
/// are several), then plays it.
fn serve<C: Connection>(
    scripts: &[Script],
    served_by_log: &[u64],
    stream: &C,
    options: Options,
    settle: std::time::Duration,
) -> io::Result<(usize, Outcome)> {
    let (i, prelude) = if scripts.len() == 1 {
        (0, Prelude::default())
    } else {
        choose(scripts, served_by_log, stream, options.mask, settle)?
    };
    Ok((i, session::play(&scripts[i], stream, options, prelude)?))
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
