//! `netrecord show` (not written yet).

use std::process::ExitCode;

use crate::cli::ShowArgs;

/// Runs `netrecord show`.
pub fn run(_args: &ShowArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("show is not implemented yet")
}
