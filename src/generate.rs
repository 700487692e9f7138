//! `netrecord generate man|completions <DIR>`: the man page and the shell
//! completions, made from the clap definition in [`crate::cli`] so they cannot
//! drift from the real command line.
//!
//! The subcommand is hidden: `make install` runs it with the binary it is about to
//! install and copies the files where `man` and the shells look for them.
//!
//! The man page is one `netrecord.1`: the usage lines come from clap, the options
//! of the recording proxy and of every visible subcommand from clap_mangen, and
//! this module adds, in roff, what clap does not know: the description, the log
//! format, the exit status, diagnostics, environment, files and examples. Hidden subcommands (`generate`,
//! `demo`) appear in neither the page nor the completions.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Command, CommandFactory};
use clap_complete::{Generator, Shell};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::cli::{Cli, GenerateArgs, Generated};

/// The program's name, as installed and as the shells complete it.
const NAME: &str = "netrecord";

/// The shells `generate completions` writes files for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Runs `netrecord generate`: writes `netrecord.1`, or `netrecord.bash`,
/// `_netrecord` and `netrecord.fish`, into the directory (created if missing).
pub fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let dir = &args.out_dir;
    fs::create_dir_all(dir).with_context(|| format!("failed to create directory {}", dir.display()))?;
    match args.what {
        Generated::Man => write(&dir.join(man_file_name()), man_page().as_bytes(), "man page")?,
        Generated::Completions => {
            for shell in SHELLS {
                let path = dir.join(shell.file_name(NAME));
                write(&path, &completions(shell), &format!("{shell} completions"))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The man page's file name, `netrecord.1`.
pub fn man_file_name() -> String {
    format!("{NAME}.1")
}

fn write(path: &Path, contents: &[u8], what: &str) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("failed to write {what} {}", path.display()))
}

/// The completion script for `shell`.
pub fn completions(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible_command(true), NAME, &mut out);
    out
}

/// netrecord's command line as a user sees it: the top-level command with its
/// visible subcommands (all of them when `with_subcommands`), or none.
///
/// clap cannot remove a subcommand from a command, and clap_complete would offer
/// hidden ones, so the top-level command is rebuilt from its parts. Only what the
/// man page and the completions read is carried over; the unit tests check that
/// nothing visible is lost.
fn visible_command(with_subcommands: bool) -> Command {
    let full = Cli::command();
    let subcommands: Vec<Command> = if with_subcommands {
        full.get_subcommands().filter(|s| !s.is_hide_set()).cloned().collect()
    } else {
        Vec::new()
    };
    let mut cmd = Command::new(NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(subcommands)
        .args_conflicts_with_subcommands(full.is_args_conflicts_with_subcommands_set())
        .subcommand_negates_reqs(full.is_subcommand_negates_reqs_set())
        .arg_required_else_help(full.is_arg_required_else_help_set());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    if let Some(after_help) = full.get_after_help() {
        cmd = cmd.after_help(after_help.clone());
    }
    cmd
}

/// The man page `netrecord(1)`, as roff source.
pub fn man_page() -> String {
    let mut record = visible_command(false);
    record.build();
    // The help subcommand is left out: `netrecord help show` is `netrecord show --help`.
    let mut all = visible_command(true).disable_help_subcommand(true);
    all.build();
    let subcommands: Vec<Command> = all.get_subcommands().cloned().collect();
    // The page starts with roff's preamble, which defines the apostrophe string
    // every later part uses; the parts after it are rendered without it. The title
    // line is written here because clap_mangen drops an empty date argument, which
    // shifts the source and manual into the wrong fields.
    let mut page = Roff::new().render();
    page += &format!(
        ".TH {} 1 \"\" \"{NAME} {}\" \"User Commands\"\n",
        NAME.to_uppercase(),
        env!("CARGO_PKG_VERSION")
    );
    page += &roff(|r| {
        r.control("SH", ["NAME"]);
        r.text([roman(format!(
            "{NAME} - {}",
            lowercase_first(&about(record.get_about()))
        ))]);
        r.control("SH", ["SYNOPSIS"]);
        // Ragged right: justified, a wrapped usage line is hard to read.
        r.control("na", []);
        synopsis(r, &record);
        for sub in &subcommands {
            r.control("br", []);
            synopsis(r, sub);
        }
        r.control("ad", []);
    });
    page += &roff(description);
    page += &roff(|r| {
        r.control("SH", ["OPTIONS"]);
        r.text([roman("The recording proxy's arguments and options:")]);
    });
    page += &section_body(|w| Man::new(record.clone()).render_options_section(w));
    page += &roff(|r| {
        r.control("SH", ["COMMANDS"]);
        r.text([roman(
            "Each command reads logs the proxy wrote. Options go before or after the command's arguments.",
        )]);
    });
    for sub in &subcommands {
        page += &subcommand(sub);
    }
    page += &roff(|r| {
        log_format(r);
        exit_status(r);
        diagnostics(r);
        environment(r);
        files(r);
        examples(r);
        see_also(r);
    });
    page
}

/// One subcommand's part of the COMMANDS section: its name, what it does, its
/// synopsis and options, and its help's closing notes and examples.
fn subcommand(sub: &Command) -> String {
    let man = Man::new(sub.clone());
    let mut out = roff(|r| {
        r.control("SS", [format!("{NAME} {}", sub.get_name()).as_str()]);
        r.text([roman(about(sub.get_long_about().or(sub.get_about())))]);
        r.control("PP", []);
    });
    out += &roff(|r| synopsis(r, sub));
    out += &section_body(|w| man.render_options_section(w));
    if let Some(after) = sub.get_after_help() {
        out += &roff(|r| help_text(r, &after.to_string()));
    }
    out
}

/// A command's usage line, as `--help` shows it (clap's own synopsis says
/// `<LOG>...` where clap_mangen's drops the `...` and the option values).
fn synopsis(r: &mut Roff, cmd: &Command) {
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.trim().trim_start_matches("Usage:").trim();
    let name = cmd.get_bin_name().unwrap_or(cmd.get_name());
    match usage.strip_prefix(name) {
        Some(rest) => r.text([bold(name), roman(rest)]),
        None => r.text([roman(usage)]),
    };
}

/// Text from a command's `after_help`: unindented lines become paragraphs and
/// indented ones (examples) stay as they are, one per line.
fn help_text(r: &mut Roff, text: &str) {
    let mut verbatim = false;
    for line in text.lines() {
        let indented = line.starts_with(' ');
        if indented && !verbatim {
            r.control("nf", []);
            verbatim = true;
        } else if !indented && verbatim {
            r.control("fi", []);
            verbatim = false;
        }
        if indented {
            r.text([roman(line)]);
        } else if !line.trim().is_empty() {
            r.control("PP", []);
            r.text([roman(line)]);
        }
    }
    if verbatim {
        r.control("fi", []);
    }
}

fn description(r: &mut Roff) {
    r.control("SH", ["DESCRIPTION"]);
    r.text([
        bold(NAME),
        roman(" listens on "),
        italic("PROXY_PORT"),
        roman(" and forwards every client that connects to "),
        italic("SERVER_HOST"),
        roman(":"),
        italic("SERVER_PORT"),
        roman(
            ". It records both directions of each connection, with timestamps, in a log file of its own, \
             and adds a line per connection to a run index. It runs until it receives SIGINT, SIGTERM or \
             SIGHUP, then writes the index lines of the connections still open, prints a summary and exits; \
             a second signal while it stops exits at once.",
        ),
    ]);
    r.control("PP", []);
    r.text([roman(
        "Every byte is written to the log before it is forwarded, and each record is written with one \
         write. A log cut short by a full disk or a stop ends after its last whole record. After kill -9 \
         or a crash, every record but the last is whole; the last may be cut inside its payload, which \
         readers report as cut short, never as corrupt, and no peer received its missing bytes. \
         A full disk never stops traffic: a connection that cannot be recorded is forwarded unrecorded, \
         and its index line says why. A reset from one peer reaches the other as a reset. \
         One connection's failure is reported on standard error and never stops the proxy, \
         and a standard error nobody reads never stalls it (lines are queued, then dropped and counted).",
    )]);
    r.control("PP", []);
    r.text([roman(
        "Each --forward PROXY_PORT=HOST:PORT adds one more forward to the run, with its own listener and \
         server; all forwards share one clock, one log root, one run index and one sequence of connection \
         numbers, so show --merge on the run's logs is the whole system's timeline. The index line of each \
         connection names its forward (listen) and its server as given (upstream_name). \
         --max-log-bytes and --max-run-bytes end recording (never traffic) once a log or the whole run \
         holds that many payload bytes; --max-connections bounds the connections in flight, and clients \
         beyond it wait in the listen backlog.",
    )]);
    r.control("PP", []);
    r.text([roman(
        "By default only this host can connect (the proxy listens on 127.0.0.1). \
         With --listen 0.0.0.0 or --listen :: anyone who can reach the port can use the server through it, \
         and is recorded.",
    )]);
    r.control("PP", []);
    r.text([
        roman("The commands "),
        bold("show"),
        roman(", "),
        bold("check"),
        roman(", "),
        bold("pcap"),
        roman(", "),
        bold("replay-server"),
        roman(" and "),
        bold("replay-client"),
        roman(" read, validate, export and replay the logs; see COMMANDS."),
    ]);
}

/// A summary of the log format; the contract is the project's FORMAT.md and the
/// doc of [`crate::log`], which this must agree with.
fn log_format(r: &mut Roff) {
    r.control("SH", ["LOG FORMAT"]);
    r.text([
        roman("Connection "),
        italic("N"),
        roman(" is recorded in "),
        italic("LOG_FILE_ROOT"),
        roman("_"),
        italic("N"),
        roman(
            ", with N = 1, 2, ... in accept order. A name that already exists is skipped, never \
             overwritten. Logs are created with mode 0600: recorded traffic often holds secrets.",
        ),
    ]);
    r.control("PP", []);
    r.text([roman(
        "A log is a sequence of records and nothing else. Each record starts with one header line",
    )]);
    verbatim(r, &["<side> <time> <what>"]);
    r.text([
        roman("where "),
        italic("side"),
        roman(" is "),
        bold("c"),
        roman(" (the client) or "),
        bold("s"),
        roman(" (the server), "),
        italic("time"),
        roman(
            " is seconds since netrecord started, on a monotonic clock shared by all logs of a run, \
             written with exactly six decimals, and ",
        ),
        italic("what"),
        roman(" is one of:"),
    ]);
    let items: [(&str, &str); 4] = [
        (
            "con",
            "The connection was accepted: always the first record, always from c.",
        ),
        (
            "N",
            "A byte count of at least 1: exactly N raw bytes, as that side sent them, follow the newline, \
             with nothing after them. One record per receive.",
        ),
        ("hup", "That side closed its sending half."),
        (
            "err",
            "That side's connection failed; always the last record. s err right after con means \
             the server could not be reached.",
        ),
    ];
    for (what, meaning) in items {
        r.control("TP", []);
        r.text([bold(what)]);
        r.text([roman(meaning)]);
    }
    r.control("PP", []);
    r.text([roman(
        "For example, a client that sends PING\\r\\n, gets +PONG\\r\\n and hangs up (the payloads end with \
         a carriage return and a newline):",
    )]);
    verbatim(
        r,
        &[
            "c 0.000104 con",
            "c 0.000231 6",
            "PING",
            "s 0.000390 7",
            "+PONG",
            "c 1.204551 hup",
            "s 1.204602 hup",
        ],
    );
    r.control("PP", []);
    r.text([roman(
        "A complete connection ends with both hup records or with one err. A log that ends without them \
         is a connection still open, or cut short; the records it has are still valid. \
         netrecord check validates logs against these rules.",
    )]);
    r.control("PP", []);
    r.text([roman(
        "The full contract, with the connection numbers, every field of the run index and the \
         permissions, is FORMAT.md in netrecord's source repository.",
    )]);
}

fn exit_status(r: &mut Roff) {
    r.control("SH", ["EXIT STATUS"]);
    let statuses: [(&str, &str); 4] = [
        (
            "0",
            "Success: the proxy was stopped by SIGINT, SIGTERM or SIGHUP; show or pcap wrote its output; \
             show --follow saw its connection end, or was stopped by SIGINT or SIGTERM; \
             check found every log valid; the replay matched the recording. \
             A reader that goes away early (netrecord show log | head) is not an error.",
        ),
        (
            "1",
            "A runtime failure (the proxy could not listen, a file could not be opened or written, \
             a server could not be reached), a log that check finds invalid, \
             or a replay that differed from the recording.",
        ),
        (
            "2",
            "A usage error: an unknown option, or a missing or malformed argument.",
        ),
        (
            "129, 130, 143",
            "The proxy got a second SIGHUP, SIGINT or SIGTERM while stopping and exited at once \
             (128 plus the signal's number).",
        ),
    ];
    for (code, meaning) in statuses {
        r.control("TP", []);
        r.text([bold(code)]);
        r.text([roman(meaning)]);
    }
}

fn diagnostics(r: &mut Roff) {
    r.control("SH", ["DIAGNOSTICS"]);
    r.text([roman(
        "Errors are one line on standard error, starting with \"netrecord: \", saying what failed and on \
         what, followed by the system's error text, for example",
    )]);
    verbatim(
        r,
        &["netrecord: log directory /tmp/nowhere does not exist: No such file or directory (os error 2)"],
    );
    r.control("PP", []);
    r.text([roman(
        "While recording, the proxy also prints a line per connection (unless --quiet) and a summary when \
         it stops.",
    )]);
}

/// What `show --color auto` honours, as its help says.
fn environment(r: &mut Roff) {
    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", []);
    r.text([bold("NO_COLOR")]);
    r.text([roman(
        "If set to a non-empty value, show --color auto does not colour its output.",
    )]);
    r.control("TP", []);
    r.text([bold("CLICOLOR_FORCE")]);
    r.text([roman(
        "If set to a value other than 0, show --color auto colours its output even when it is not \
         written to a terminal.",
    )]);
    r.control("TP", []);
    r.text([bold("SSLKEYLOGFILE")]);
    r.text([roman(
        "Without --tls-keylog, the file the TLS session keys of both legs are appended to.",
    )]);
    r.control("TP", []);
    r.text([bold("XDG_DATA_HOME")]);
    r.text([roman(
        "Without --tls-ca-dir, netrecord's CA lives in $XDG_DATA_HOME/netrecord (else \
         ~/.local/share/netrecord).",
    )]);
}

fn files(r: &mut Roff) {
    r.control("SH", ["FILES"]);
    r.control("TP", []);
    r.text([italic("LOG_FILE_ROOT"), roman("_"), italic("N")]);
    r.text([roman("Connection N's log; see LOG FORMAT.")]);
    r.control("TP", []);
    r.text([italic("LOG_FILE_ROOT"), roman("_index.jsonl")]);
    r.text([roman(
        "The run index: one JSON object per line, one line per connection, written when the connection \
         ends: its number and log, the client's address, the proxy address it connected to and the server \
         (as given, and the address used), when it started (wall clock \
         and run clock) and ended, the bytes each side sent, and how each side ended (hup, err or open) \
         with the error text, and why a log is incomplete (log_error). Every accepted connection has \
         exactly one line. A restart with the same root appends to it; an existing index that is not \
         this user's own regular file, or is writable by others, is refused. pcap reads it to give packets \
         their real addresses and times, and show --merge and --follow to order the logs of several runs \
         by the wall clock. Log globs should leave it out: ",
    )]);
    r.text([
        italic("LOG_FILE_ROOT"),
        roman("_[0-9]*"),
        roman(" matches the logs only."),
    ]);
    r.control("TP", []);
    r.text([italic("CA_DIR"), roman("/netrecord-ca.pem")]);
    r.text([roman(
        "With --tls-listen and no --tls-cert: the CA certificate clients must trust to accept the \
         certificates netrecord mints per server name (mode 0644). Its key, netrecord-ca-key.pem, is \
         beside it (mode 0600). Both are made on first use and reused afterwards; CA_DIR is \
         --tls-ca-dir, else $XDG_DATA_HOME/netrecord, else ~/.local/share/netrecord.",
    )]);
}

fn examples(r: &mut Roff) {
    r.control("SH", ["EXAMPLES"]);
    let examples: &[(&str, &[&str])] = &[
        (
            "Record redis-cli's traffic with a Redis server on port 6379:",
            &["netrecord localhost 6379 7000 /tmp/redis &", "redis-cli -p 7000 ping"],
        ),
        (
            "Show the first connection's log, then only the server's bytes in hex:",
            &[
                "netrecord show /tmp/redis_1",
                "netrecord show --hex --side s /tmp/redis_1",
            ],
        ),
        ("Check every log of the run:", &["netrecord check /tmp/redis_[0-9]*"]),
        (
            "Watch the run as it is recorded, every connection tagged, until Ctrl-C:",
            &["netrecord show --follow /tmp/redis"],
        ),
        (
            "The bytes each connection carried, from the JSON form, with jq:",
            &[
                "netrecord show --json /tmp/redis_[0-9]* | jq -s -c 'map(select(.event == \"data\"))",
                "    | group_by(.conn)[] | {conn: .[0].conn, bytes: (map(.len) | add)}'",
            ],
        ),
        (
            "Export the run to pcap and open it in Wireshark:",
            &["netrecord pcap -o redis.pcap /tmp/redis_[0-9]*", "wireshark redis.pcap"],
        ),
        (
            "Stand in for the server in a test, answering with the recorded replies:",
            &["netrecord replay-server /tmp/redis_1 6379"],
        ),
        (
            "Stand in for it over a whole run, each client answered from the log its command matches:",
            &["netrecord replay-server --loop /tmp/redis_[0-9]* 6379"],
        ),
        (
            "Check that another server answers every recorded connection byte for byte:",
            &["netrecord replay-client /tmp/redis_[0-9]* localhost 6380 && echo same"],
        ),
        (
            "Check a web server, whose Date header changes every second, and list every difference:",
            &["netrecord replay-client --keep-going --mask 'Date: [^\\r]*' /tmp/http_1 localhost 8000"],
        ),
        (
            "Record a database's clients from other hosts, quietly:",
            &["netrecord --listen :: -q db.internal 5432 5432 /var/tmp/pg"],
        ),
        (
            "Record a whole system in one run: Redis, an HTTP service and a database on ::1, one timeline:",
            &[
                "netrecord localhost 6379 7000 /tmp/sys --forward 7001=127.0.0.1:8000 --forward 7002=[::1]:5432 &",
                "netrecord show --merge /tmp/sys_[0-9]*",
            ],
        ),
        (
            "Keep each log under 64 MiB and the whole run under 10 GiB:",
            &["netrecord --max-log-bytes 64M --max-run-bytes 10G db.internal 5432 5432 /var/tmp/pg"],
        ),
        (
            "Record an HTTPS API in plaintext, curl trusting netrecord's CA:",
            &[
                "netrecord api.example.com 443 7443 /tmp/api --tls-listen --tls-upstream \\",
                "    --tls-server-name api.example.com &",
                "curl --cacert ~/.local/share/netrecord/netrecord-ca.pem https://localhost:7443/",
            ],
        ),
    ];
    for &(what, commands) in examples {
        r.control("PP", []);
        r.text([roman(what)]);
        verbatim(r, commands);
    }
}

fn see_also(r: &mut Roff) {
    r.control("SH", ["SEE ALSO"]);
    r.text([bold("wireshark"), roman("(1), "), bold("tshark"), roman("(1)")]);
}

/// Lines shown as they are, indented.
fn verbatim(r: &mut Roff, lines: &[&str]) {
    r.control("RS", ["4"]);
    r.control("nf", []);
    for line in lines {
        r.text([roman(*line)]);
    }
    r.control("fi", []);
    r.control("RE", []);
}

/// A command's help summary as plain text, without the final period clap keeps.
fn about(text: Option<&clap::builder::StyledStr>) -> String {
    let text = text.map(ToString::to_string).unwrap_or_default();
    text.trim().trim_end_matches('.').to_string()
}

/// Man pages start the NAME line's description in lowercase ("netrecord - record ...").
fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Roff written by `build`, without the preamble (the title part has it).
fn roff(build: impl FnOnce(&mut Roff)) -> String {
    let mut r = Roff::new();
    build(&mut r);
    without_preamble(&r.render())
}

/// One clap_mangen section without its `.SH` heading line, so it can go under a
/// heading of ours, and without the preamble.
fn section_body(render: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> String {
    let mut out = Vec::new();
    render(&mut out).expect("rendering into memory cannot fail");
    let text = without_preamble(&String::from_utf8_lossy(&out));
    match text.split_once('\n') {
        Some((heading, body)) if heading.starts_with(".SH ") => body.to_string(),
        _ => text,
    }
}

/// Every roff render starts by defining the apostrophe string (`.ie \n(.g .ds Aq ...`
/// and its `.el`); the page needs it once, at the top.
fn without_preamble(text: &str) -> String {
    text.lines()
        .filter(|line| !(line.starts_with(".ie \\n(.g .ds Aq") || line.starts_with(".el .ds Aq")))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visible_names() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| s.get_name().to_string())
            .collect()
    }

    #[test]
    fn the_rebuilt_command_keeps_everything_visible() {
        let full = Cli::command();
        visible_command(true).debug_assert();
        let mut visible = visible_command(true);
        visible.build();
        assert_eq!(visible.get_name(), full.get_name());
        assert_eq!(visible.get_version(), full.get_version());
        let text = |s: Option<&clap::builder::StyledStr>| s.map(ToString::to_string);
        assert_eq!(text(visible.get_about()), text(full.get_about()));
        assert_eq!(text(visible.get_after_help()), text(full.get_after_help()));
        assert_eq!(
            visible.render_usage().to_string(),
            full.clone().render_usage().to_string()
        );
        let ids = |c: &Command| c.get_arguments().map(|a| a.get_id().to_string()).collect::<Vec<_>>();
        let mut full_built = full.clone();
        full_built.build();
        assert_eq!(ids(&visible), ids(&full_built));
        let names: Vec<String> = visible
            .get_subcommands()
            .map(|s| s.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        assert_eq!(names, visible_names());
        assert!(!names.contains(&"generate".to_string()) && !names.contains(&"demo".to_string()));
    }

    #[test]
    fn the_man_page_has_every_section_once_and_in_order() {
        let page = man_page();
        let headings: Vec<&str> = page.lines().filter(|l| l.starts_with(".SH ")).collect();
        assert_eq!(
            headings,
            [
                ".SH NAME",
                ".SH SYNOPSIS",
                ".SH DESCRIPTION",
                ".SH OPTIONS",
                ".SH TLS",
                ".SH COMMANDS",
                ".SH \"LOG FORMAT\"",
                ".SH \"EXIT STATUS\"",
                ".SH DIAGNOSTICS",
                ".SH ENVIRONMENT",
                ".SH FILES",
                ".SH EXAMPLES",
                ".SH \"SEE ALSO\"",
            ]
        );
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "the preamble comes first");
        assert_eq!(page.matches(".ds Aq").count(), 2, "one preamble (.ie and .el)");
        assert!(page.contains("\n.TH NETRECORD 1 "));
    }

    #[test]
    fn the_man_page_documents_every_visible_subcommand_and_option() {
        let page = man_page();
        for name in visible_names() {
            assert!(
                page.contains(&format!(".SS \"netrecord {name}\"")),
                "no section for {name}"
            );
        }
        let mut cmd = Cli::command();
        cmd.build();
        for sub in std::iter::once(&cmd).chain(cmd.get_subcommands().filter(|s| !s.is_hide_set())) {
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                if let Some(long) = arg.get_long() {
                    let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                    assert!(page.contains(&roff), "--{long} of {} missing", sub.get_name());
                }
            }
        }
        assert!(!page.contains("netrecord generate") && !page.contains("netrecord demo"));
        assert!(!page.contains("netrecord\\-generate") && !page.contains("netrecord\\-demo"));
    }

    #[test]
    fn completions_name_the_visible_subcommands_only() {
        for shell in SHELLS {
            let script = String::from_utf8(completions(shell)).unwrap();
            for name in visible_names() {
                assert!(script.contains(&name), "{shell} completions lack {name}");
            }
            assert!(!script.contains("generate"), "{shell} completions offer generate");
            assert!(!script.contains("demo"), "{shell} completions offer demo");
        }
    }

    #[test]
    fn help_text_keeps_examples_verbatim() {
        let mut r = Roff::new();
        help_text(&mut r, "Exit status: 0 or 1.\n\nExample:\n  netrecord check /tmp/a_1");
        let text = r.to_roff();
        assert_eq!(
            text,
            ".PP\nExit status: 0 or 1.\n.PP\nExample:\n.nf\n  netrecord check /tmp/a_1\n.fi\n"
        );
    }
}
