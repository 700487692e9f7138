//! The `netrecord` binary: parse the command line, run one mode, report the error.

use std::io;
use std::process::ExitCode;

use netrecord::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::parse_checked() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let code = match run(cli) {
        Ok(code) => code,
        // `netrecord show log | head`: the reader went away, which is a normal end.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            netrecord::process::message(format_args!("{err:#}"));
            ExitCode::FAILURE
        }
    };
    // The proxy's last lines may still be queued for a slow stderr.
    netrecord::process::flush_messages(netrecord::process::FLUSH_TIMEOUT);
    code
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        None => netrecord::proxy::run(&cli.record),
        Some(Command::Show(args)) => netrecord::show::run(&args),
        Some(Command::Check(args)) => netrecord::check::run(&args),
        Some(Command::Pcap(args)) => netrecord::pcap::run(&args),
        Some(Command::ReplayServer(args)) => netrecord::replay::run_server(&args),
        Some(Command::ReplayClient(args)) => netrecord::replay::run_client(&args),
        Some(Command::Generate(args)) => netrecord::generate::run(&args),
        Some(Command::Demo) => netrecord::demo::run(),
    }
}

/// Help and version go to stdout as clap prints them. A usage error becomes one
/// line, `netrecord: ...`, and exit status 2, like every other error of the program.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.render().to_string();
    let message = text
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    netrecord::process::message(format_args!("{message} (see 'netrecord --help')"));
    ExitCode::from(2)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
