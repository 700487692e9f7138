//! `netrecord check` (not written yet).

use std::process::ExitCode;

use crate::cli::CheckArgs;

/// Runs `netrecord check`.
pub fn run(_args: &CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check is not implemented yet")
}
