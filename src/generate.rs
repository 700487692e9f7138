//! `netrecord generate` (not written yet).

use std::process::ExitCode;

use crate::cli::GenerateArgs;

/// Runs `netrecord generate`.
pub fn run(_args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("generate is not implemented yet")
}
