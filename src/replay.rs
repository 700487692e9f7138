//! `netrecord replay-server` and `replay-client` (not written yet).

use std::process::ExitCode;

use crate::cli::{ReplayClientArgs, ReplayServerArgs};

/// Runs `netrecord replay-server`.
pub fn run_server(_args: &ReplayServerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("replay-server is not implemented yet")
}

/// Runs `netrecord replay-client`.
pub fn run_client(_args: &ReplayClientArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("replay-client is not implemented yet")
}
