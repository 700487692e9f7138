//! Reading a log back: `netrecord check` over a log that netrecord recorded from a
//! bulk transfer, against `sha256sum` of the same file.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::Options;
use crate::load::{bulk_transfer, connect};
use crate::paths::{Context, Kind, Running};
use crate::report::{median, num, times};
use crate::upstream::Server;

pub fn race(opts: &Options, ctx: &Context) -> Result<String, String> {
    let half = opts.read_bytes / 2;
    let server = Server::bulk(half).map_err(|e| e.to_string())?;
    let path = Running::start(Kind::Netrecord, ctx, server.addr)?;
    bulk_transfer(connect(path.addr)?, half)?;
    let stopped = path.stop()?;
    drop(server);
    let log = stopped.logs.first().ok_or("netrecord left no log")?.clone();
    let size = stopped.log_bytes();

    let mut sha = Vec::new();
    let mut ours = Vec::new();
    for _ in 0..opts.runs {
        let start = Instant::now();
        let status = Command::new("sha256sum")
            .arg(&log)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run sha256sum: {e}"))?;
        if !status.success() {
            return Err(format!("sha256sum exited with {status}"));
        }
        sha.push(size as f64 / start.elapsed().as_secs_f64() / 1e9);

        let start = Instant::now();
        let status = Command::new(&ctx.netrecord)
            .arg("check")
            .arg(&log)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run netrecord check: {e}"))?;
        if !status.success() {
            return Err(format!("netrecord check failed on {}: {status}", log.display()));
        }
        ours.push(size as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    sha.sort_by(f64::total_cmp);
    ours.sort_by(f64::total_cmp);
    let (sha, ours) = (median(&sha), median(&ours));
    let ratio = ours / sha;
    let verdict = if ratio >= 1.0 { "met" } else { "MISSED" };
    Ok(format!(
        "read a {:.2} GiB log recorded from a bulk transfer, GB/s (median of {} runs):\n  \
         sha256sum {}   netrecord check {}   ratio {}   target >= 1.0x sha256sum: {verdict}\n",
        size as f64 / (1u64 << 30) as f64,
        opts.runs,
        num(Some(sha)),
        num(Some(ours)),
        times(Some(ratio)),
    ))
}
