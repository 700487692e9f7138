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
    #[arg(required = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub server_port: Option<u16>,

    /// The port to accept clients on (0 picks a free port and prints it).
    #[arg(required = true)]
    pub proxy_port: Option<u16>,

    /// Where logs go: connection N is recorded in `<LOG_FILE_ROOT>_N`.
    #[arg(required = true)]
    pub log_file_root: Option<PathBuf>,

    /// The address to accept clients on. Use 0.0.0.0 or :: to accept from other
    /// hosts (anyone who can reach the port can then use the server and is recorded).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: std::net::IpAddr,

    /// Seconds to wait for the server to accept each connection.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
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

/// Parses a positive number of seconds, fractions allowed (`0.5`).
pub fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
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
  netrecord show --raw s /tmp/http_1 > response.bin")]
pub struct ShowArgs {
    /// Log files to show.
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
}

/// Validate logs against the format and summarise each in one line.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 if every log is valid (complete, open or cut short), 1 otherwise.

Example:
  netrecord check /tmp/redis_*")]
pub struct CheckArgs {
    /// Log files to check.
    #[arg(required = true, value_name = "LOG")]
    pub logs: Vec<PathBuf>,
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

    /// The pcap file to write (`-` for stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

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
}
