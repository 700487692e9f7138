//! `netrecord pcap` (not written yet).

use std::process::ExitCode;

use crate::cli::PcapArgs;

/// Runs `netrecord pcap`.
pub fn run(_args: &PcapArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("pcap is not implemented yet")
}
