//! The client side of each scenario: one run of it through one path, returning
//! that run's measurements. Every socket operation has a timeout, so every run
//! ends.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::Options;
use crate::paths::{Context, Kind, Running, Stopped, proc_status};
use crate::report::{Agg, Sample};
use crate::upstream::{CHUNK, IO_TIMEOUT, Server, Stream, pattern};

/// One run of a scenario through one path.
pub type Scenario = fn(&Options, &Context, Kind) -> Result<Vec<Sample>, String>;

/// A request or response of the small-message scenarios.
const MESSAGE: usize = 64;
/// Round trips before the timed ones, to get past connection start-up.
const WARMUP: usize = 200;
/// Client threads that walk the held connections for their one round trip.
const HOLD_WALKERS: usize = 8;
/// The write ceiling writes this much per system call, like `dd bs=1M`.
const WRITE_CHUNK: usize = 1 << 20;

pub fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Sends one 64-byte request and reads the 64-byte echo.
fn round_trip(mut s: impl Read + Write, request: &[u8; MESSAGE]) -> Result<(), String> {
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    let mut reply = [0u8; MESSAGE];
    s.read_exact(&mut reply).map_err(|e| format!("receive: {e}"))?;
    if &reply != request {
        return Err("the echo differs from the request".into());
    }
    Ok(())
}

fn request() -> [u8; MESSAGE] {
    pattern(MESSAGE).try_into().expect("64 bytes")
}

/// Checks that netrecord recorded exactly what went through it.
pub fn check_recorded(kind: Kind, stopped: &Stopped, client: u64, server: u64) -> Result<(), String> {
    if !kind.records() {
        return Ok(());
    }
    if !stopped.problems.is_empty() {
        return Err(format!("netrecord reported: {:?}", stopped.problems));
    }
    match stopped.recorded {
        Some(got) if got == (client, server) => Ok(()),
        got => Err(format!(
            "netrecord recorded {got:?} bytes (client, server), expected ({client}, {server})"
        )),
    }
}

pub fn gbits(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

/// The `q` quantile of `lat` (nanoseconds), in the unit `div` nanoseconds.
fn quantile(lat: &mut [u64], q: f64, div: f64) -> f64 {
    if lat.is_empty() {
        return f64::NAN;
    }
    lat.sort_unstable();
    let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
    lat[i] as f64 / div
}

/// The rows of a bulk transfer's throughput each way and both ways, in Gbit/s.
pub fn throughput(up: f64, down: f64, both: f64) -> Vec<Sample> {
    vec![
        Sample::new("Gbit/s c->s", up, Agg::Median),
        Sample::new("Gbit/s s->c", down, Agg::Median),
        Sample::new("Gbit/s both", both, Agg::Median),
    ]
}

/// One connection: `bulk_bytes` client to server, then as much back. Before
/// netrecord's run, the write ceiling: the same bytes netrecord's log receives,
/// written into a fresh file in the log directory.
pub fn bulk(opts: &Options, ctx: &Context, kind: Kind) -> Result<Vec<Sample>, String> {
    let n = opts.bulk_bytes;
    let ceiling = match kind {
        Kind::Netrecord => Some(write_ceiling(&ctx.log_dir, 2 * n)?),
        _ => None,
    };
    let server = Server::bulk(n).map_err(|e| e.to_string())?;
    let path = Running::start(kind, ctx, server.addr)?;
    let (up, down, both) = bulk_transfer(connect(path.addr)?, n)?;
    let stopped = path.stop()?;
    drop(server);
    check_recorded(kind, &stopped, n, n)?;
    let mut samples = throughput(up, down, both);
    if let Some(ceiling) = ceiling {
        samples.push(Sample::new(WRITE_CEILING, ceiling, Agg::Median));
    }
    samples.extend(per_unit(&stopped, (2 * n) as f64 / 1e9, ("proxy CPU s/GB", 1.0), None));
    Ok(samples)
}

/// The proxy process's CPU per unit of work (`cpu.1` scales seconds to the
/// metric's unit) and, with `switches`, its context switches per unit: steadier
/// than rates on a shared machine, and what an optimisation should bring down.
pub fn per_unit(
    stopped: &Stopped,
    units: f64,
    cpu: (&'static str, f64),
    switches: Option<&'static str>,
) -> Vec<Sample> {
    let Some(usage) = stopped.usage else {
        return Vec::new();
    };
    let mut samples = vec![Sample::new(cpu.0, usage.cpu * cpu.1 / units, Agg::Median)];
    if let Some(metric) = switches {
        samples.push(Sample::new(metric, usage.switches as f64 / units, Agg::Median));
    }
    samples
}

/// The metric of the page-cache write ceiling.
pub const WRITE_CEILING: &str = "write ceiling Gbit/s";

static CEILING_FILE: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` into a new file in `dir`, 1 MiB per write (what `dd bs=1M`
/// does, without reading a source), and returns the rate in Gbit/s. The file
/// lands in the page cache like netrecord's log and is removed afterwards; that
/// is the most a recorder can write to this file system, so bulk through
/// netrecord cannot beat it.
pub fn write_ceiling(dir: &Path, bytes: u64) -> Result<f64, String> {
    let path = dir.join(format!("ceiling{}", CEILING_FILE.fetch_add(1, Ordering::SeqCst)));
    let chunk = pattern(WRITE_CHUNK);
    let result = (|| {
        let start = Instant::now();
        let mut file = fs::File::create_new(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let mut written = 0u64;
        while written < bytes {
            let len = (bytes - written).min(WRITE_CHUNK as u64) as usize;
            file.write_all(&chunk[..len])
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            written += len as u64;
        }
        drop(file);
        Ok(gbits(bytes, start.elapsed()))
    })();
    let _ = fs::remove_file(&path);
    result
}

/// Sends `n` bytes, then receives `n` bytes: Gbit/s up, down and overall. The
/// upload ends when the first byte of the reply arrives: the server replies only
/// after it has received everything.
pub fn bulk_transfer(mut s: impl Stream, n: u64) -> Result<(f64, f64, f64), String> {
    let chunk = pattern(CHUNK);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < n {
        let len = (n - sent).min(CHUNK as u64) as usize;
        s.write_all(&chunk[..len]).map_err(|e| format!("send: {e}"))?;
        sent += len as u64;
    }
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let mut first = None;
    while got < n {
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("the server hung up after {got} of {n} bytes")),
            Ok(len) => {
                first.get_or_insert_with(Instant::now);
                got += len as u64;
            }
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    let end = Instant::now();
    match s.read(&mut buf) {
        Ok(0) => {}
        other => return Err(format!("expected the server's hang-up, got {other:?}")),
    }
    s.hang_up();
    let first = first.expect("n > 0");
    Ok((
        gbits(n, first - start),
        gbits(n, end - first),
        gbits(2 * n, end - start),
    ))
}

/// One connection, `round_trips` sequential 64-byte round trips.
pub fn rtt(opts: &Options, ctx: &Context, kind: Kind) -> Result<Vec<Sample>, String> {
    let server = Server::echo(1).map_err(|e| e.to_string())?;
    let path = Running::start(kind, ctx, server.addr)?;
    let s = connect(path.addr)?;
    let (mut samples, bytes) = round_trips(s, opts.round_trips)?;
    let stopped = path.stop()?;
    check_recorded(kind, &stopped, bytes, bytes)?;
    samples.extend(per_round_trip(&stopped, bytes));
    Ok(samples)
}

/// The proxy's CPU and context switches per round trip, warm-up included (the
/// process's totals cover it).
pub fn per_round_trip(stopped: &Stopped, bytes: u64) -> Vec<Sample> {
    per_unit(
        stopped,
        (bytes / MESSAGE as u64) as f64,
        ("proxy CPU us/round trip", 1e6),
        Some("proxy switches/round trip"),
    )
}

/// `n` timed round trips (after a warm-up) on `s`, then hangs up: the rate and
/// latency samples, and the bytes sent each way.
pub fn round_trips(mut s: impl Stream, n: usize) -> Result<(Vec<Sample>, u64), String> {
    let req = request();
    for _ in 0..WARMUP {
        round_trip(&mut s, &req)?;
    }
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        round_trip(&mut s, &req)?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let elapsed = start.elapsed();
    s.hang_up();
    drop(s);
    let bytes = ((WARMUP + n) * MESSAGE) as u64;
    let samples = vec![
        Sample::new("round trips/s", n as f64 / elapsed.as_secs_f64(), Agg::Median),
        Sample::new("p50 us", quantile(&mut lat, 0.50, 1e3), Agg::Median),
        Sample::new("p99 us", quantile(&mut lat, 0.99, 1e3), Agg::Median),
    ];
    Ok((samples, bytes))
}

/// `fan_in` connections at once, each doing `round_trips` round trips.
pub fn fan_in(opts: &Options, ctx: &Context, kind: Kind) -> Result<Vec<Sample>, String> {
    let server = Server::echo(opts.fan_in).map_err(|e| e.to_string())?;
    let path = Running::start(kind, ctx, server.addr)?;
    let conns = (0..opts.fan_in)
        .map(|_| connect(path.addr))
        .collect::<Result<Vec<_>, _>>()?;
    let barrier = Arc::new(Barrier::new(opts.fan_in + 1));
    let n = opts.round_trips;
    let workers: Vec<_> = conns
        .into_iter()
        .map(|s| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || -> Result<(Instant, Vec<u64>), String> {
                let req = request();
                let warm = (0..WARMUP).try_for_each(|_| round_trip(&s, &req));
                let mut lat = Vec::with_capacity(n);
                // Every thread reaches the barrier, even one whose warm-up failed.
                barrier.wait();
                warm?;
                for _ in 0..n {
                    let t = Instant::now();
                    round_trip(&s, &req)?;
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                Ok((Instant::now(), lat))
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut end = start;
    let mut lat = Vec::with_capacity(n * opts.fan_in);
    let mut failure = None;
    for w in workers {
        match w
            .join()
            .map_err(|_| "a client thread panicked".to_string())
            .and_then(|r| r)
        {
            Ok((done, l)) => {
                end = end.max(done);
                lat.extend(l);
            }
            Err(e) => failure = Some(e),
        }
    }
    let stopped = path.stop()?;
    if let Some(e) = failure {
        return Err(e);
    }
    let bytes = ((WARMUP + n) * MESSAGE * opts.fan_in) as u64;
    check_recorded(kind, &stopped, bytes, bytes)?;
    let mut samples = vec![
        Sample::new(
            "round trips/s",
            lat.len() as f64 / (end - start).as_secs_f64(),
            Agg::Median,
        ),
        Sample::new("p99 us", quantile(&mut lat, 0.99, 1e3), Agg::Median),
    ];
    samples.extend(per_round_trip(&stopped, bytes));
    Ok(samples)
}

/// `churn` connections, each one 64-byte round trip, `churn_clients` at a time.
pub fn churn(opts: &Options, ctx: &Context, kind: Kind) -> Result<Vec<Sample>, String> {
    let server = Server::echo(opts.churn_clients * 2).map_err(|e| e.to_string())?;
    let path = Running::start(kind, ctx, server.addr)?;
    let addr = path.addr;
    let per_client = opts.churn / opts.churn_clients;
    let start = Instant::now();
    let clients: Vec<_> = (0..opts.churn_clients)
        .map(|_| {
            thread::spawn(move || {
                let req = request();
                let mut lat = Vec::with_capacity(per_client);
                let mut failed = 0u64;
                for _ in 0..per_client {
                    let t = Instant::now();
                    match connect(addr).and_then(|s| round_trip(&s, &req)) {
                        Ok(()) => lat.push(t.elapsed().as_nanos() as u64),
                        Err(_) => failed += 1,
                    }
                }
                (lat, failed)
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(opts.churn);
    let mut failed = 0;
    for c in clients {
        let (l, f) = c.join().map_err(|_| "a client thread panicked".to_string())?;
        lat.extend(l);
        failed += f;
    }
    let elapsed = start.elapsed();
    let stopped = path.stop()?;
    let ok = lat.len() as u64;
    if failed == 0 {
        check_recorded(kind, &stopped, ok * MESSAGE as u64, ok * MESSAGE as u64)?;
    }
    let mut samples = vec![
        Sample::new("connections/s", ok as f64 / elapsed.as_secs_f64(), Agg::Median),
        Sample::new("p50 ms", quantile(&mut lat, 0.50, 1e6), Agg::Median),
        Sample::new("p99 ms", quantile(&mut lat, 0.99, 1e6), Agg::Median),
        Sample::new("max ms (worst run)", quantile(&mut lat, 1.0, 1e6), Agg::Max),
        Sample::new("failed (worst run)", failed as f64, Agg::Max),
    ];
    samples.extend(per_unit(
        &stopped,
        ok as f64,
        ("proxy CPU us/conn", 1e6),
        Some("proxy switches/conn"),
    ));
    Ok(samples)
}

/// `hold` connections open at once, idle for a while, then one round trip each.
pub fn hold(opts: &Options, ctx: &Context, kind: Kind) -> Result<Vec<Sample>, String> {
    let server = Server::echo(opts.hold).map_err(|e| e.to_string())?;
    let path = Running::start(kind, ctx, server.addr)?;
    let start = Instant::now();
    let mut conns = Vec::with_capacity(opts.hold);
    let mut failed = 0u64;
    for _ in 0..opts.hold {
        match connect(path.addr) {
            Ok(s) => conns.push(s),
            Err(_) => failed += 1,
        }
    }
    let opened = start.elapsed();
    thread::sleep(opts.hold_idle);
    let mut threads = path.pid().and_then(proc_status).map_or(0, |(_, t)| t);
    let per_walker = conns.len().div_ceil(HOLD_WALKERS).max(1);
    let walked: Vec<u64> = thread::scope(|scope| {
        let walkers: Vec<_> = conns
            .chunks(per_walker)
            .map(|chunk| {
                scope.spawn(move || {
                    let req = request();
                    chunk.iter().filter(|s| round_trip(*s, &req).is_ok()).count() as u64
                })
            })
            .collect();
        walkers.into_iter().map(|w| w.join().unwrap_or(0)).collect()
    });
    let ok: u64 = walked.iter().sum();
    failed += conns.len() as u64 - ok;
    let status = path.pid().and_then(proc_status);
    threads = threads.max(status.map_or(0, |(_, t)| t));
    drop(conns);
    let stopped = path.stop()?;
    if failed == 0 {
        let bytes = ok * MESSAGE as u64;
        check_recorded(kind, &stopped, bytes, bytes)?;
    }
    let mut samples = vec![
        Sample::new("round trips ok (worst run)", ok as f64, Agg::Min),
        Sample::new(
            "connections opened/s",
            opts.hold as f64 / opened.as_secs_f64(),
            Agg::Median,
        ),
    ];
    if kind.records() {
        let hwm = status.map_or(f64::NAN, |(kib, _)| kib as f64 / 1024.0);
        samples.push(Sample::new("peak RSS MiB (worst run)", hwm, Agg::Max));
        samples.push(Sample::new("threads", threads as f64, Agg::Max));
    }
    Ok(samples)
}
