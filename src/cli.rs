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
  Record Redis and an HTTP service in one run, with one timeline:
    netrecord localhost 6379 7000 /tmp/sys --forward 7001=127.0.0.1:8000 &
    netrecord show --merge /tmp/sys_[0-9]*
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

    /// Print only the startup lines, errors and the final summary, not a line per
    /// connection.
    #[arg(short, long)]
    pub quiet: bool,

    /// Another forward in the same run: clients of PROXY_PORT go to HOST:PORT, with
    /// one clock, one log root and one run index for all. Repeatable; an IPv6 host
    /// goes in brackets (7002=[::1]:5432); a PROXY_PORT of 0 picks a free port.
    #[arg(long = "forward", value_name = "PROXY_PORT=HOST:PORT", value_parser = forward)]
    pub forwards: Vec<ForwardArg>,

    /// Stop recording a connection once its log holds this many payload bytes
    /// (e.g. 64M, 1G, 500000; K, M and G are powers of 1024): the log ends after its
    /// last whole record and the connection flows on unrecorded.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_log_bytes: Option<u64>,

    /// Stop recording once all logs of the run together hold this many payload
    /// bytes: connections flow on unrecorded, and new ones get no log.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub max_run_bytes: Option<u64>,

    /// At most this many connections in flight; beyond it new clients wait in the
    /// listen backlog until one ends.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    #[command(flatten, next_help_heading = "TLS")]
    pub tls_listen: TlsListenArgs,

    #[command(flatten, next_help_heading = "TLS")]
    pub tls_upstream: TlsUpstreamArgs,

    /// Append the TLS session keys of both legs to FILE in the NSS key log format
    /// (SSLKEYLOGFILE), mode 0600, so Wireshark can decrypt a capture of either
    /// leg. Without this option the SSLKEYLOGFILE environment variable is used.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_keylog: Option<PathBuf>,
}

/// How clients reach netrecord over TLS: `--tls-listen` and the certificate it
/// presents.
#[derive(Debug, Clone, Args)]
pub struct TlsListenArgs {
    /// Clients connect with TLS: netrecord terminates it and records the plaintext.
    #[arg(long)]
    pub tls_listen: bool,

    /// The certificate (PEM, chain allowed) to present to clients, instead of one
    /// minted by netrecord's CA.
    #[arg(long, value_name = "FILE", requires_all = ["tls_listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Where netrecord keeps its CA (netrecord-ca.pem, netrecord-ca-key.pem), made
    /// on first use [default: $XDG_DATA_HOME/netrecord, else ~/.local/share/netrecord].
    #[arg(long, value_name = "DIR", requires = "tls_listen", conflicts_with = "tls_cert")]
    pub tls_ca_dir: Option<PathBuf>,
}

/// How netrecord reaches the server over TLS: `--tls-upstream` and how it checks
/// the server.
#[derive(Debug, Clone, Args)]
pub struct TlsUpstreamArgs {
    /// Connect to the server with TLS, verifying its certificate against the
    /// system's trust store (and --tls-ca).
    #[arg(long)]
    pub tls_upstream: bool,

    /// Also trust the CA certificates in FILE (PEM) for the server.
    #[arg(long, value_name = "FILE", requires = "tls_upstream")]
    pub tls_ca: Option<PathBuf>,

    /// Do not verify the server's certificate (anyone in the middle can then read
    /// the traffic).
    #[arg(long, requires = "tls_upstream", conflicts_with = "tls_ca")]
    pub tls_insecure: bool,

    /// The name to send as SNI and to verify the server's certificate against
    /// [default: the name the client asked for with --tls-listen, else the server
    /// host when it is a name].
    #[arg(long, value_name = "NAME", requires = "tls_upstream")]
    pub tls_server_name: Option<String>,
}

/// One `--forward PROXY_PORT=HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardArg {
    /// The port to accept this forward's clients on (0 picks a free one).
    pub proxy_port: u16,
    /// The server: a name, an IPv4 address or an IPv6 address (without brackets).
    pub host: String,
    pub port: u16,
}

/// Parses `PROXY_PORT=HOST:PORT`, with an IPv6 host in brackets.
pub fn forward(s: &str) -> Result<ForwardArg, String> {
    let form = "expected PROXY_PORT=HOST:PORT, e.g. 7002=db.local:5432 or 7002=[::1]:5432";
    let (proxy_port, server) = s.split_once('=').ok_or(form)?;
    let proxy_port: u16 = proxy_port
        .parse()
        .map_err(|_| format!("{proxy_port:?} is not a proxy port (0-65535); {form}"))?;
    let (host, port) = match server.strip_prefix('[') {
        Some(rest) => {
            let (host, port) = rest.split_once("]:").ok_or(form)?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
            (host, port)
        }
        None => {
            let (host, port) = server.rsplit_once(':').ok_or(form)?;
            if host.contains(':') {
                return Err(format!("put the IPv6 address {host} in brackets: [{host}]:{port}"));
            }
            (host, port)
        }
    };
    if host.is_empty() {
        return Err(form.into());
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("{port:?} is not a server port (1-65535)"))?;
    Ok(ForwardArg {
        proxy_port,
        host: host.to_string(),
        port,
    })
}

/// Parses a size in bytes: a positive whole number, optionally followed by K, M
/// or G (KiB, MiB, GiB).
pub fn size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size: expected a positive number of bytes, optionally with K, M or G");
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is too large"))?;
    let bytes = n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("{s:?} is not a size: it must be at least 1 byte"));
    }
    Ok(bytes)
}

impl Cli {
    /// Parses the command line, then the checks that span several arguments, as
    /// clap errors (one line, exit status 2).
    pub fn parse_checked() -> Result<Cli, clap::Error> {
        let cli = Cli::try_parse()?;
        if cli.command.is_none() {
            cli.record.check()?;
        }
        Ok(cli)
    }
}

impl RecordArgs {
    /// No proxy port may be given to two forwards (0, a free port each, may).
    fn check(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory;
        let mut seen = std::collections::HashSet::new();
        let ports = self
            .proxy_port
            .into_iter()
            .chain(self.forwards.iter().map(|f| f.proxy_port));
        for port in ports.filter(|&p| p != 0) {
            if !seen.insert(port) {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("proxy port {port} is given to two forwards"),
                ));
            }
        }
        Ok(())
    }
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
Exit status: 0 if every client sent what the recording says (after masks), 1 otherwise.

Examples:
  netrecord replay-server /tmp/redis_1 6379 & redis-cli -p 6379 ping
  netrecord replay-server --loop /tmp/redis_[0-9]* 6379")]
pub struct ReplayServerArgs {
    /// The logs to serve: one, or the logs of a run, each client then being
    /// answered from the log whose first client bytes match its own best.
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,

    /// The port to listen on (0 picks a free port and prints it).
    pub port: u16,

    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,

    /// Serve each new client in turn, one at a time, until interrupted.
    #[arg(long = "loop")]
    pub repeat: bool,

    /// Close a client's connection at its first byte that differs from the recording.
    #[arg(long)]
    pub strict: bool,

    /// Seconds to wait for a client's next bytes before giving up on it.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub timeout: Duration,

    /// Seconds a client may be quiet after bytes that differ from the recording
    /// before it is answered with the next recorded reply (it is answered at
    /// once if it has sent as many bytes as recorded).
    #[arg(long, value_name = "SECS", default_value = "0.05", value_parser = seconds)]
    pub settle: Duration,

    #[command(flatten)]
    pub masks: MaskArgs,

    /// Clients connect with TLS (the recording holds the plaintext); the
    /// certificate options are the recorder's.
    #[command(flatten)]
    pub tls: TlsListenArgs,
}

/// Act as the recorded client against a live server and compare its answers.
#[derive(Debug, Args)]
#[command(
    override_usage = "netrecord replay-client [OPTIONS] <LOG>... <HOST> <PORT>",
    after_help = "\
Exit status: 0 if the server answered byte for byte as recorded (after masks), 1 otherwise.

Examples:
  netrecord replay-client /tmp/redis_1 localhost 6379
  netrecord replay-client --mask 'Date: [^\\r]*' /tmp/http_1 localhost 8000
  netrecord replay-client --keep-going /tmp/http_[0-9]* localhost 8000"
)]
pub struct ReplayClientArgs {
    #[command(flatten)]
    pub target: ClientTarget,

    /// `fast` sends each client chunk as soon as the server bytes recorded before it
    /// have arrived; `original` also keeps the recorded gaps.
    #[arg(long, value_enum, default_value = "fast")]
    pub timing: Timing,

    /// Seconds to wait for the server's next bytes before giving up.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    pub timeout: Duration,

    /// Seconds the server may be quiet after bytes that differ from the recording
    /// before the next recorded request is sent (with --keep-going).
    #[arg(long, value_name = "SECS", default_value = "0.05", value_parser = seconds)]
    pub settle: Duration,

    #[command(flatten)]
    pub masks: MaskArgs,

    /// Report every difference and go on sending the recorded requests, instead
    /// of stopping at the first difference.
    #[arg(long)]
    pub keep_going: bool,

    /// With --keep-going, the most differences reported per log; the rest are
    /// counted.
    #[arg(long, value_name = "N", default_value = "20", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_differences: u64,

    /// Replay the logs of a run side by side, each started at its recorded start,
    /// instead of one after the other.
    #[arg(long)]
    pub parallel: bool,

    #[command(flatten)]
    pub tls: TlsUpstreamArgs,
}

/// What the peer's stream may differ in: masks, for both replay commands.
#[derive(Debug, Args)]
pub struct MaskArgs {
    /// Bytes of the peer's stream that match REGEX (a bytes regex, Unicode off:
    /// `.` is any byte but newline) compare equal whatever their content and
    /// length, in the recording and live alike. Repeatable.
    #[arg(long = "mask", value_name = "REGEX", value_parser = mask_pattern)]
    pub patterns: Vec<String>,

    /// A built-in mask by name. Repeatable.
    #[arg(long = "mask-preset", value_name = "NAME", value_enum)]
    pub presets: Vec<MaskPreset>,
}

/// Built-in masks for what commonly changes from run to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MaskPreset {
    /// An HTTP `Date:` header line.
    HttpDate,
    /// An ISO 8601 date and time, such as 2025-01-31T12:00:00.123Z.
    IsoTime,
    /// A UUID, such as 0f8fad5b-d9cb-469f-a165-70867728950e.
    Uuid,
}

/// Checks that `s` is a regex a mask can use.
fn mask_pattern(s: &str) -> Result<String, String> {
    crate::replay::Mask::check(s).map(|()| s.to_owned())
}

/// replay-client's positionals: the logs, then the server's host and port. clap
/// lets only the last positional or the one before it take several values, so
/// the split is made here, with clap's own errors.
#[derive(Debug)]
pub struct ClientTarget {
    /// The logs to replay: one, or the logs of a run.
    pub logs: Vec<PathBuf>,
    /// The server to connect to.
    pub host: String,
    /// The server's port.
    pub port: u16,
}

impl clap::FromArgMatches for ClientTarget {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        use clap::error::ErrorKind;
        let mut values: Vec<std::ffi::OsString> = matches.get_many("target").into_iter().flatten().cloned().collect();
        if values.len() < 3 {
            return Err(clap::Error::raw(
                ErrorKind::MissingRequiredArgument,
                "replay-client needs a log, a host and a port\n",
            ));
        }
        let port = values.pop().expect("three values");
        let host = values.pop().expect("three values");
        let text = |v: &std::ffi::OsString| v.to_string_lossy().into_owned();
        let port = text(&port).parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!(
                    "invalid value '{}' for '<PORT>': not a port number from 1 to 65535\n",
                    text(&port)
                ),
            )
        })?;
        Ok(ClientTarget {
            logs: values.into_iter().map(PathBuf::from).collect(),
            host: text(&host),
            port,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = ClientTarget::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ClientTarget {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            clap::Arg::new("target")
                .value_names(["LOG", "HOST", "PORT"])
                .help(
                    "The logs to replay (one, or the logs of a run), then the server's host and port: LOG... HOST PORT",
                )
                .required(true)
                .num_args(3..)
                .value_parser(clap::value_parser!(std::ffi::OsString))
                .value_hint(clap::ValueHint::FilePath),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        ClientTarget::augment_args(cmd)
    }
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
    fn replay_commands_take_one_log_or_a_run() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.command);
        let Ok(Some(Command::ReplayServer(server))) = parse(&["netrecord", "replay-server", "/t/rec_1", "6379"]) else {
            panic!("replay-server LOG PORT")
        };
        assert_eq!((server.logs.len(), server.port), (1, 6379));
        let Ok(Some(Command::ReplayServer(server))) =
            parse(&["netrecord", "replay-server", "/t/rec_1", "/t/rec_2", "0", "--loop"])
        else {
            panic!("replay-server LOG LOG PORT")
        };
        assert_eq!((server.logs.len(), server.port, server.repeat), (2, 0, true));

        let Ok(Some(Command::ReplayClient(client))) = parse(&[
            "netrecord",
            "replay-client",
            "/t/rec_1",
            "/t/rec_2",
            "db.local",
            "5432",
            "--keep-going",
        ]) else {
            panic!("replay-client LOG LOG HOST PORT")
        };
        assert_eq!(
            client.target.logs,
            [PathBuf::from("/t/rec_1"), PathBuf::from("/t/rec_2")]
        );
        assert_eq!((client.target.host.as_str(), client.target.port), ("db.local", 5432));
        assert!(client.keep_going);
        assert_eq!(client.max_differences, 20);
        assert!(parse(&["netrecord", "replay-client", "/t/rec_1", "db.local"]).is_err());
        let e = parse(&["netrecord", "replay-client", "/t/rec_1", "db.local", "http"]).unwrap_err();
        assert!(e.to_string().contains("invalid value 'http' for '<PORT>'"), "{e}");
        assert!(parse(&["netrecord", "replay-client", "/t/rec_1", "db.local", "0"]).is_err());
        let e = parse(&[
            "netrecord",
            "replay-client",
            "--mask",
            "(",
            "/t/rec_1",
            "db.local",
            "80",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("unclosed group"), "{e}");
    }

    #[test]
    fn forwards_parse_with_names_and_bracketed_ipv6() {
        let f = |s: &str| forward(s);
        let want = |p: u16, h: &str, port: u16| {
            Ok(ForwardArg {
                proxy_port: p,
                host: h.into(),
                port,
            })
        };
        assert_eq!(f("7002=db.local:5432"), want(7002, "db.local", 5432));
        assert_eq!(f("7002=[::1]:5432"), want(7002, "::1", 5432));
        assert_eq!(f("0=127.0.0.1:80"), want(0, "127.0.0.1", 80));
        for bad in [
            "7000",
            "=x:1",
            "7000=host",
            "7000=host:70000",
            "7000=host:0",
            "7000=:80",
            "x=h:1",
            "7000=::1:80",
            "7000=[::1]80",
            "7000=[nope]:80",
            "70000=h:1",
        ] {
            assert!(f(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_take_binary_suffixes_and_refuse_nonsense() {
        assert_eq!(size("500000"), Ok(500_000));
        assert_eq!(size("64M"), Ok(64 << 20));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size("2k"), Ok(2048));
        for bad in [
            "0",
            "0K",
            "-1",
            "12Q",
            "",
            "M",
            "1.5M",
            "99999999999G",
            "18446744073709551616",
        ] {
            assert!(size(bad).is_err(), "{bad}");
        }
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
