//! `make demo` (not written yet).

use std::process::ExitCode;

/// Runs the demo.
pub fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("demo is not implemented yet")
}
