//! Reading a log back: `netrecord check` over a log that netrecord recorded from a
//! bulk transfer, against `sha256sum` of the same file. Where `check` is not
//! implemented in this build, the library's streaming reader is timed instead,
//! skipping payloads as check does.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::Options;
use crate::load::bulk_transfer;
use crate::paths::{Context, Kind, Running};
use crate::report::{median, num, times};
use crate::upstream::Server;

enum Reading {
    /// `netrecord check LOG`, as a process.
    Check,
    /// `netrecord::log::Reader` in this process.
    Library,
}

pub fn race(opts: &Options, ctx: &Context) -> Result<String, String> {
    let half = opts.read_bytes / 2;
    let server = Server::bulk(half).map_err(|e| e.to_string())?;
    let path = Running::start(Kind::Netrecord, ctx, server.addr)?;
    bulk_transfer(path.addr, half)?;
    let stopped = path.stop()?;
    drop(server);
    let log = stopped.logs.first().ok_or("netrecord left no log")?.clone();
    let size = stopped.log_bytes();

    let probe = Command::new(&ctx.netrecord)
        .arg("check")
        .arg(&log)
        .output()
        .map_err(|e| format!("cannot run netrecord check: {e}"))?;
    let how = if probe.status.success() {
        Reading::Check
    } else if String::from_utf8_lossy(&probe.stderr).contains("not implemented") {
        Reading::Library
    } else {
        return Err(format!(
            "netrecord check failed on {}: {}",
            log.display(),
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    };

    let mut sha = Vec::new();
    let mut ours = Vec::new();
    let mut records = 0;
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
        match how {
            Reading::Check => {
                let status = Command::new(&ctx.netrecord)
                    .arg("check")
                    .arg(&log)
                    .stdout(Stdio::null())
                    .status()
                    .map_err(|e| format!("cannot run netrecord check: {e}"))?;
                if !status.success() {
                    return Err(format!("netrecord check exited with {status}"));
                }
            }
            Reading::Library => records = read_with_library(&log)?,
        }
        ours.push(size as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    sha.sort_by(f64::total_cmp);
    ours.sort_by(f64::total_cmp);
    let (sha, ours) = (median(&sha), median(&ours));
    let name = match how {
        Reading::Check => "netrecord check".to_string(),
        Reading::Library => format!("log::Reader ({records} records; check not implemented)"),
    };
    let ratio = ours / sha;
    let verdict = if ratio >= 1.0 { "met" } else { "MISSED" };
    Ok(format!(
        "read a {:.2} GiB log recorded from a bulk transfer, GB/s (median of {} runs):\n  \
         sha256sum {}   {name} {}   ratio {}   target >= 1.0x sha256sum: {verdict}\n",
        size as f64 / (1u64 << 30) as f64,
        opts.runs,
        num(Some(sha)),
        num(Some(ours)),
        times(Some(ratio)),
    ))
}

/// Reads every record header, skipping payloads; returns the record count.
fn read_with_library(log: &Path) -> Result<u64, String> {
    let reader = netrecord::log::Reader::open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?
        .keep_payload(false);
    let mut records = 0;
    for record in reader {
        record.map_err(|e| format!("{}: {e}", log.display()))?;
        records += 1;
    }
    Ok(records)
}
