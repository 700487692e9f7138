//! `netrecord replay-client`: be the client of a recording against a live server,
//! and check that the server answers byte for byte as the recorded one did: a
//! regression check of a server.
//!
//! Results go to stdout: the first divergence, if any, and a summary line. Errors
//! (an unreadable log, a refused connection) go to stderr through `main`.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use super::script::Script;
use super::session::{self, Options};
use crate::cli::ReplayClientArgs;
use crate::log::Side;

/// Runs `netrecord replay-client`. Exit status 0 only if the server answered
/// exactly as recorded.
pub fn run(args: &ReplayClientArgs) -> anyhow::Result<ExitCode> {
    let timeout = super::timeout(args.timeout)?;
    let script = Script::load(&args.log, Side::Client)?;
    if let Some(note) = &script.note {
        eprintln!("netrecord: {note}");
    }
    let stream = connect(&args.host, args.port, timeout)?;
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
             sent {} of {} client bytes, received {} of {} server bytes",
            outcome.sent,
            script.our_total(),
            outcome.received,
            script.theirs().len()
        )?;
        ExitCode::FAILURE
    } else {
        writeln!(
            out,
            "replayed {log} against {target}: the server answered as recorded; sent {} client bytes, received {} server bytes",
            outcome.sent, outcome.received
        )?;
        ExitCode::SUCCESS
    };
    out.flush()?;
    Ok(code)
}

/// Connects to the first of the host's addresses that accepts within `timeout`.
fn connect(host: &str, port: u16, timeout: Duration) -> anyhow::Result<TcpStream> {
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    };
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("could not resolve host {host}"))?
        .collect();
    if addrs.is_empty() {
        bail!("could not resolve host {host}: no addresses");
    }
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    let tried = if host.parse::<IpAddr>().is_ok() {
        String::new()
    } else {
        let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        format!(" ({})", list.join(", "))
    };
    let error = last.map_or_else(|| anyhow!("no address answered"), anyhow::Error::new);
    Err(error.context(format!("could not connect to {name}{tried}")))
}
