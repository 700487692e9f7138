//! The command line: the original four positionals that start the recording
//! proxy, and the subcommands that read, export and replay recordings.
//!
//! `netrecord <server host> <server port> <proxy port> <log file root>` must keep
//! working exactly as in the original, beside `netrecord show ...` and friends, so
//! the recording arguments live on the top-level command and a subcommand, when
//! given, takes their place.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Record TCP traffic: a proxy that logs both directions of every connection.
#[derive(Debug, Parser)]
#[command(
    name = "netrecord",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    arg_required_else_help = true,
    after_help = "\
Examples:
  Record redis-cli's traffic with a Redis server on port 6379:
    netrecord localhost 6379 7000 /tmp/redis &
    redis-cli -p 7000 ping
  Show the first connection's log:
    netrecord show /tmp/redis_1
  Export every connection to pcap for Wireshark:
    netrecord pcap -o redis.pcap /tmp/redis_[0-9]*
    wireshark redis.pcap"
)]
pub struct Cli {
    #[command(flatten)]
    pub record: RecordArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The recording proxy's arguments: the original four positionals and options.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The server to forward connections to (a name or an IPv4/IPv6 address).
    #[arg(required = true)]
    pub server_host: Option<String>,

    /// The server's TCP port.
    // A negative number is taken as a value, so that `-1` is reported as a bad
    // port rather than as an unknown option.
    #[arg(required = true, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub server_port: Option<u16>,

    /// The port to accept clients on (0 picks a free port and prints it).
    #[arg(required = true, allow_negative_numbers = true, value_parser = clap::value_parser!(u16).range(0..))]
    pub proxy_port: Option<u16>,

    /// Where logs go: connection N is recorded in `<LOG_FILE_ROOT>_N`.
    #[arg(required = true)]
    pub log_file_root: Option<PathBuf>,

    /// The address to accept clients on. Use 0.0.0.0 or :: to accept from other
    /// hosts (anyone who can reach the port can then use the server and is recorded).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,

    /// Seconds to wait for the server to accept each connection.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds, allow_negative_numbers = true)]
    pub connect_timeout: Duration,

    /// Print only the startup line, errors and the final summary, not a line per
    /// connection.
    #[arg(short, long)]
    pub quiet: bool,
}

/// The longest duration [`seconds`] accepts, about 31 years: longer than any
/// wait anyone means, and short enough that adding it to the current time can
/// never overflow.
pub const MAX_SECONDS: f64 = 1e9;

/// Parses a positive number of seconds, fractions allowed (`0.5`), at most
/// [`MAX_SECONDS`].
pub fn seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a positive number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("{s:?} is not a positive number of seconds"));
    }
    if secs > MAX_SECONDS {
        return Err(format!(
            "{s:?} seconds is too long: at most {MAX_SECONDS:.0} (about 31 years)"
        ));
    }
    Some(Duration::from_secs_f64(secs))
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} seconds is too short: at least 0.000000001 (a nanosecond)"))
}

/// The subcommands, each run by its own module.
#[derive(Debug, Subcommand)]
pub enum Command {
    Show(ShowArgs),
    Check(CheckArgs),
    Pcap(PcapArgs),
    ReplayServer(ReplayServerArgs),
    ReplayClient(ReplayClientArgs),
    #[command(hide = true)]
    Generate(GenerateArgs),
    #[command(hide = true)]
    Demo,
}

/// One side of a connection, as a command-line value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SideArg {
    /// The client.
    C,
    /// The server.
    S,
}

impl From<SideArg> for crate::log::Side {
    fn from(side: SideArg) -> Self {
        match side {
            SideArg::C => crate::log::Side::Client,
            SideArg::S => crate::log::Side::Server,
        }
    }
}

/// When to colour output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal (NO_COLOR and CLICOLOR_FORCE are honoured).
    Auto,
    Always,
    Never,
}

/// Show recorded conversations as text (or hex).
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  netrecord show /tmp/redis_1
  netrecord show --hex --side s /tmp/redis_1
  netrecord show --merge /tmp/redis_*
  netrecord show --raw s /tmp/http_1 > response.bin
  netrecord show --follow /tmp/redis
  netrecord show --json /tmp/redis_* | jq -c 'select(.event == \"data\")'")]
pub struct ShowArgs {
    /// Log files to show (with --follow, one log, or one log file root).
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,

    /// Dump payloads as offset / hex / ASCII; offsets count each side's stream.
    #[arg(long)]
    pub hex: bool,

    /// Show only this side's records.
    #[arg(long, value_enum, value_name = "c|s")]
    pub side: Option<SideArg>,

    /// Write only this side's payload bytes, concatenated, to stdout.
    #[arg(long, value_enum, value_name = "c|s", conflicts_with_all = ["hex", "side", "merge"])]
    pub raw: Option<SideArg>,

    /// When to colour the client and the server.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub color: ColorChoice,

    /// Interleave the records of all logs in one timeline, tagged with their
    /// connection number.
    #[arg(long)]
    pub merge: bool,

    /// One JSON object per line per record (conn, side, time_us, event, and for
    /// data len and the bytes as text or base64), for scripts.
    #[arg(long, conflicts_with_all = ["hex", "raw"])]
    pub json: bool,

    /// Show records as they are written: LOG until its connection ends, or a log
    /// file root (as given to the recorder) for every log of the run, new ones
    /// included, until interrupted.
    #[arg(long, conflicts_with = "merge")]
    pub follow: bool,
}

/// Validate logs against the format and summarise each in one line.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 if every log is valid (complete, open or cut short), 1 otherwise.

Examples:
  netrecord check /tmp/redis_*
  netrecord check --json /tmp/redis_* | jq -c 'select(.valid | not)'")]
pub struct CheckArgs {
    /// Log files to check.
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,

    /// One JSON object per log instead of a line of text, with every count of the
    /// summary, how each side ended, and the violation with its offset.
    #[arg(long)]
    pub json: bool,
}

/// Export recordings as a pcap file for Wireshark or tshark.
#[derive(Debug, Args)]
#[command(after_help = "\
Example:
  netrecord pcap /tmp/redis_* -o redis.pcap && wireshark redis.pcap")]
pub struct PcapArgs {
    /// Log files to export, one TCP stream each.
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,

    /// The pcap file to write (`-` for stdout), created with mode 0600 since it
    /// holds the recorded traffic. An existing file is not replaced without --force.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Replace the output file if it exists (it is replaced only once the export
    /// has succeeded).
    #[arg(long)]
    pub force: bool,

    /// The server port to put in the packets (so Wireshark picks the right
    /// dissector), instead of the one in the run index.
    #[arg(long, value_name = "PORT")]
    pub server_port: Option<u16>,
}

/// Act as the recorded server: answer clients with the recorded server bytes.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 if every client sent what the recording says, 1 otherwise.

Example:
  netrecord replay-server /tmp/redis_1 6379 & redis-cli -p 6379 ping")]
pub struct ReplayServerArgs {
    /// The log to serve.
    #[arg(value_name = "LOG")]
    pub log: PathBuf,

    /// The port to listen on (0 picks a free port and prints it).
    pub port: u16,

    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,

    /// Serve the recording to each new client, one at a time, until interrupted.
    #[arg(long = "loop")]
    pub repeat: bool,

    /// Close a client's connection at its first byte that differs from the recording.
    #[arg(long)]
    pub strict: bool,

    /// Seconds to wait for a client's next bytes before giving up on it.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub timeout: Duration,
}

/// Act as the recorded client against a live server and compare its answers.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 if the server answered byte for byte as recorded, 1 otherwise.

Example:
  netrecord replay-client /tmp/redis_1 localhost 6379")]
pub struct ReplayClientArgs {
    /// The log to replay.
    #[arg(value_name = "LOG")]
    pub log: PathBuf,

    /// The server to connect to.
    pub host: String,

    /// The server's port.
    #[arg(value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,

    /// `fast` sends each client chunk as soon as the server bytes recorded before it
    /// have arrived; `original` also keeps the recorded gaps.
    #[arg(long, value_enum, default_value = "fast")]
    pub timing: Timing,

    /// Seconds to wait for the server's next bytes before giving up.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub timeout: Duration,
}

/// How replay-client paces what it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Timing {
    Original,
    Fast,
}

/// Generate the man page or shell completions (used by `make install`).
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to generate.
    #[arg(value_enum)]
    pub what: Generated,

    /// The directory to write into.
    #[arg(value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// Files `netrecord generate` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page, netrecord.1.
    Man,
    /// Completions for bash, zsh and fish.
    Completions,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn four_positionals_and_subcommands_coexist() {
        let cli = Cli::try_parse_from(["netrecord", "db.local", "5432", "0", "/tmp/rec"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.record.server_host.as_deref(), Some("db.local"));
        assert_eq!(cli.record.proxy_port, Some(0));
        let cli = Cli::try_parse_from(["netrecord", "check", "/tmp/rec_1"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Check(_))));
        assert!(Cli::try_parse_from(["netrecord", "db.local", "5432"]).is_err());
        assert!(Cli::try_parse_from(["netrecord", "db.local", "0", "0", "/tmp/rec"]).is_err());
        assert!(Cli::try_parse_from(["netrecord", "db.local", "5432", "70000", "/tmp/rec"]).is_err());
    }

    #[test]
    fn seconds_say_what_is_wrong_with_them() {
        assert_eq!(seconds("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(seconds("1e9"), Ok(Duration::from_secs(1_000_000_000)));
        assert_eq!(
            seconds("1e30").unwrap_err(),
            "\"1e30\" seconds is too long: at most 1000000000 (about 31 years)"
        );
        assert!(seconds("inf").unwrap_err().contains("too long"));
        for bad in ["0", "-1", "nan", "ten", ""] {
            assert!(
                seconds(bad)
                    .unwrap_err()
                    .ends_with("is not a positive number of seconds"),
                "{bad}"
            );
        }
        assert!(seconds("1e-12").unwrap_err().contains("too short"));
    }

    #[test]
    fn a_negative_port_is_a_bad_port_not_an_unknown_option() {
        for args in [
            ["netrecord", "db.local", "-1", "0", "/tmp/rec"],
            ["netrecord", "db.local", "5432", "-1", "/tmp/rec"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{err}");
            assert!(err.to_string().contains("invalid value '-1' for '<"), "{err}");
        }
        let err = Cli::try_parse_from([
            "netrecord",
            "db.local",
            "5432",
            "0",
            "/tmp/rec",
            "--connect-timeout",
            "-1",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("is not a positive number of seconds"), "{err}");
    }
}
