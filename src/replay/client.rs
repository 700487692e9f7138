//! `netrecord replay-client`: be the client of a recording against a live server,
//! and check that the server answers byte for byte as the recorded one did (masks
//! aside): a regression check of a server. Given the logs of a run, it replays
//! each in connection order, or with `--parallel` each at its recorded start, so
//! that connections overlap as they did.
//!
//! Results go to stdout: the differences found, and a verdict line per log (with
//! a summary line for a run). Errors (an unreadable log, a refused connection
//! for a single log) go to stderr through `main`.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::mask::Mask;
use super::script::Script;
use super::session::{self, Options, Outcome, Prelude};
use super::{count, tally};
use crate::cli::ReplayClientArgs;
use crate::log::Side;
use crate::process::say;

/// Runs `netrecord replay-client`. Exit status 0 only if the server answered
/// every log as recorded.
pub fn run(args: &ReplayClientArgs) -> anyhow::Result<ExitCode> {
    let mask = Mask::new(&args.masks.patterns, &args.masks.presets)?;
    let logs = crate::log::logs_in_order(&args.target.logs);
    let mut scripts = Vec::with_capacity(logs.len());
    for log in &logs {
        let mut script = Script::load(log, Side::Client)?;
        if let Some(note) = &script.note {
            say!("{note}");
        }
        script.apply_mask(&mask);
        scripts.push(script);
    }
    let (host, port) = (&args.target.host, args.target.port);
    let server = Server {
        name: crate::net::display_name(host, port),
        by_name: host.parse::<IpAddr>().is_err(),
        addrs: crate::net::resolve(host, port)?,
        timeout: args.timeout,
        tls: crate::tls::Upstream::for_replay(&args.tls, host, args.timeout)?,
    };
    let options = Options {
        timeout: args.timeout,
        settle: args.settle,
        timing: args.timing,
        // After the first difference the recorded requests may make no sense to
        // the server any more: unless told to keep going, stop there.
        stop_at_mismatch: !args.keep_going,
        max_differences: if args.keep_going {
            usize::try_from(args.max_differences).unwrap_or(usize::MAX)
        } else {
            1
        },
        mask: &mask,
    };
    let mut out = io::stdout().lock();
    if let ([log], [script]) = (&logs[..], &scripts[..]) {
        // One log: a refused connection is an error, as for any one-shot command.
        let (target, outcome) = server.replay(script, options)?;
        for line in differences(&outcome, "") {
            writeln!(out, "{target}: {line}")?;
        }
        writeln!(
            out,
            "replayed {} against {target}: {}",
            log.display(),
            summary(&outcome, script)
        )?;
        out.flush()?;
        return Ok(exit(outcome.matched()));
    }
    let mut differed = 0;
    let mut report = |log: &Path, script: &Script, result: anyhow::Result<(String, Outcome)>| -> io::Result<()> {
        match result {
            Ok((_, outcome)) => {
                if !outcome.matched() {
                    differed += 1;
                }
                writeln!(out, "{}: {}", log.display(), summary(&outcome, script))?;
                for line in differences(&outcome, "  ") {
                    writeln!(out, "{line}")?;
                }
            }
            Err(e) => {
                differed += 1;
                writeln!(out, "{}: could not replay: {e:#}", log.display())?;
            }
        }
        out.flush()
    };
    if args.parallel {
        let first = scripts.iter().map(|s| s.start).min().unwrap_or_default();
        let begin = Instant::now();
        thread::scope(|scope| -> io::Result<()> {
            let runs: Vec<_> = scripts
                .iter()
                .map(|script| {
                    let (server, start) = (&server, Duration::from_micros(script.start.0 - first.0));
                    scope.spawn(move || {
                        // Each log starts when it started in the recording, so
                        // connections overlap as recorded.
                        if let Some(wait) = start.checked_sub(begin.elapsed()) {
                            thread::sleep(wait);
                        }
                        server.replay(script, options)
                    })
                })
                .collect();
            for ((log, script), run) in logs.iter().zip(&scripts).zip(runs) {
                let result = run.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                report(log, script, result)?;
            }
            Ok(())
        })?;
    } else {
        for (log, script) in logs.iter().zip(&scripts) {
            report(log, script, server.replay(script, options))?;
        }
    }
    writeln!(
        out,
        "replayed {} against {}: {} matched, {differed} differed",
        count(logs.len() as u64, "log"),
        server.name,
        logs.len() - differed
    )?;
    out.flush()?;
    Ok(exit(differed == 0))
}

/// The live server, as resolved once for every log.
struct Server {
    name: String,
    /// Whether it was given by name, so that messages add the address.
    by_name: bool,
    addrs: Vec<SocketAddr>,
    timeout: Duration,
    /// `--tls-upstream`: the TLS to speak to it.
    tls: Option<crate::tls::Upstream>,
}

impl Server {
    /// Connects and replays one script; returns how the server is named in
    /// messages, and what happened.
    fn replay(&self, script: &Script, options: Options) -> anyhow::Result<(String, Outcome)> {
        let (stream, _) = crate::net::connect_first(&self.name, &self.addrs, self.timeout)?;
        let target = self.target(&stream);
        // Recorded chunks go out as recorded, without Nagle's delay.
        let _ = stream.set_nodelay(true);
        let outcome = match &self.tls {
            None => session::play(script, &stream, options, Prelude::default()),
            Some(tls) => {
                let (peer, _) = tls
                    .connect(stream, None, Vec::new())
                    .map_err(|why| anyhow::anyhow!("could not replay against {target}: {why}"))?;
                session::play(script, &peer, options, Prelude::default())
            }
        }
        .with_context(|| format!("could not replay against {target}"))?;
        Ok((target, outcome))
    }

    fn target(&self, stream: &TcpStream) -> String {
        match stream.peer_addr() {
            Ok(addr) if self.by_name => format!("{} ({addr})", self.name),
            Ok(addr) => addr.to_string(),
            Err(_) => self.name.clone(),
        }
    }
}

/// The verdict and the byte counts: `matched; sent 27 client bytes, received 11
/// server bytes`, or `1 difference; sent 6 of 27 client bytes, received 9 of 11
/// server bytes`.
fn summary(o: &Outcome, script: &Script) -> String {
    let recorded = script.theirs().len() as u64;
    let sent = if o.sent == script.our_total() {
        count(o.sent, "client byte")
    } else {
        format!("{} of {}", o.sent, count(script.our_total(), "client byte"))
    };
    format!(
        "{}; sent {sent}, {}",
        o.verdict(),
        tally("server", "server byte", o.received, recorded)
    )
}

/// One line per difference reported, and one for those counted but not shown.
fn differences(o: &Outcome, indent: &str) -> Vec<String> {
    let mut lines: Vec<String> = o.differences.iter().map(|d| format!("{indent}{d}")).collect();
    let hidden = o.difference_count.saturating_sub(o.differences.len() as u64);
    if hidden > 0 {
        lines.push(format!(
            "{indent}... and {}, not shown",
            count(hidden, "more difference")
        ));
    }
    lines
}

fn exit(matched: bool) -> ExitCode {
    if matched { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
