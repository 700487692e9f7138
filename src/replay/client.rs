//! `netrecord replay-client`: be the client of a recording against a live server,
//! and check that the server answers byte for byte as the recorded one did: a
//! regression check of a server.
//!
//! Results go to stdout: the first divergence, if any, and a summary line. Errors
//! (an unreadable log, a refused connection) go to stderr through `main`.

use std::io::{self, Write};
use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;

use super::count;
use super::script::Script;
use super::session::{self, Options};
use crate::cli::ReplayClientArgs;
use crate::log::Side;
use crate::process::say;

/// Runs `netrecord replay-client`. Exit status 0 only if the server answered
/// exactly as recorded.
pub fn run(args: &ReplayClientArgs) -> anyhow::Result<ExitCode> {
    let timeout = args.timeout;
    let script = Script::load(&args.log, Side::Client)?;
    if let Some(note) = &script.note {
        say!("{note}");
    }
    let addrs = crate::net::resolve(&args.host, args.port)?;
    let stream = crate::net::connect_first(&crate::net::display_name(&args.host, args.port), &addrs, timeout)?;
    let target = match stream.peer_addr() {
        Ok(addr) if args.host.parse::<IpAddr>().is_err() => format!("{}:{} ({addr})", args.host, args.port),
        Ok(addr) => addr.to_string(),
        Err(_) => format!("{}:{}", args.host, args.port),
    };
    // Recorded chunks go out as recorded, without Nagle's delay.
    let _ = stream.set_nodelay(true);
    let options = Options {
        timeout,
        timing: args.timing,
        // After the first divergence the recorded requests may make no sense to
        // the server any more, and only the first divergence is reported.
        stop_at_mismatch: true,
    };
    let outcome =
        session::play(&script, &stream, options).with_context(|| format!("could not replay against {target}"))?;
    drop(stream);
    let log = args.log.display();
    let mut out = io::stdout().lock();
    let code = if let Some(mismatch) = &outcome.mismatch {
        writeln!(out, "{target}: {mismatch}")?;
        writeln!(
            out,
            "replayed {log} against {target}: the server differs from the recording; \
             sent {} of {}, received {} of {}",
            outcome.sent,
            count(script.our_total(), "client byte"),
            outcome.received,
            count(script.theirs().len() as u64, "server byte"),
        )?;
        ExitCode::FAILURE
    } else {
        writeln!(
            out,
            "replayed {log} against {target}: the server answered as recorded; sent {}, received {}",
            count(outcome.sent, "client byte"),
            count(outcome.received, "server byte"),
        )?;
        ExitCode::SUCCESS
    };
    out.flush()?;
    Ok(code)
}
