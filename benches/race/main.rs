//! `make bench`: races traffic through netrecord against a direct connection and
//! against socat (which forwards without recording), on loopback, and prints a
//! table of medians and ratios.
//!
//! Each scenario starts its own upstream server in this process, then drives the
//! same client load through each path in turn — direct, netrecord (the release
//! binary, recording every byte), socat if installed — and repeats that round
//! several times, so the paths share whatever else the machine is doing. A fresh
//! netrecord and socat are started for every run and stopped by their own handles;
//! logs go to a temporary directory under `--log-dir` (tmpfs by default) and are
//! removed after each run.
//!
//! Under `cargo test` (no `--bench` argument) the bench only says how to run it:
//! it needs the release binary and minutes of a quiet machine.

mod load;
mod paths;
mod read;
mod report;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use report::{Sample, Table};

/// The command line: sizes of every scenario, and where things are.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes each way in the bulk scenario.
    pub bulk_bytes: u64,
    /// Round trips of the rtt scenario, and of each fan-in connection.
    pub round_trips: usize,
    /// Parallel connections in fan-in.
    pub fan_in: usize,
    /// Connections in churn, and how many clients open them at once.
    pub churn: usize,
    pub churn_clients: usize,
    /// Connections held open at once in hold, and how long they stay idle.
    pub hold: usize,
    pub hold_idle: Duration,
    /// Size of the log read in the read scenario.
    pub read_bytes: u64,
    /// Runs of each path per scenario.
    pub runs: usize,
    pub log_dir: PathBuf,
    pub netrecord: PathBuf,
    pub socat: bool,
    /// Paths to drive; all of them unless `--paths` narrows it (for profiling).
    pub paths: Vec<paths::Kind>,
    /// Scenarios to run; empty means all.
    pub only: Vec<String>,
}

const SCENARIOS: [&str; 6] = ["bulk", "rtt", "fan-in", "churn", "hold", "read"];

const USAGE: &str = "\
usage: make bench [BENCH_ARGS='OPTIONS']   (or: cargo bench --bench race -- OPTIONS)

  --quick             small sizes, for a run of a minute or two
  --runs N            runs of each path per scenario (default 3)
  --only LIST         comma-separated scenarios: bulk,rtt,fan-in,churn,hold,read
  --log-dir DIR       where netrecord writes its logs (default /dev/shm)
  --netrecord PATH    the binary to race (default target/release/netrecord)
  --no-socat          skip the socat path even if socat is installed
  --paths LIST        only these paths: direct,netrecord,socat (to profile one)";

impl Options {
    fn full() -> Options {
        Options {
            bulk_bytes: 2 << 30,
            round_trips: 20_000,
            fan_in: 50,
            churn: 10_000,
            churn_clients: 20,
            hold: 5_000,
            hold_idle: Duration::from_secs(2),
            read_bytes: 1 << 30,
            runs: 3,
            log_dir: PathBuf::from("/dev/shm"),
            netrecord: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/netrecord"),
            socat: true,
            paths: Vec::new(),
            only: Vec::new(),
        }
    }

    fn quick(self) -> Options {
        Options {
            bulk_bytes: 256 << 20,
            round_trips: 2_000,
            churn: 2_000,
            hold: 1_000,
            hold_idle: Duration::from_millis(500),
            read_bytes: 128 << 20,
            ..self
        }
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut opts = if quick {
            Options::full().quick()
        } else {
            Options::full()
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--bench" | "--quick" => {}
                "--no-socat" => opts.socat = false,
                "--runs" => {
                    opts.runs = value("--runs")?
                        .parse()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or("--runs needs a positive count")?
                }
                "--only" => {
                    opts.only = value("--only")?.split(',').map(str::to_owned).collect();
                    if let Some(bad) = opts.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
                        return Err(format!("unknown scenario {bad:?}"));
                    }
                }
                "--paths" => {
                    opts.paths = value("--paths")?
                        .split(',')
                        .map(|p| paths::Kind::parse(p).ok_or(format!("unknown path {p:?}")))
                        .collect::<Result<_, _>>()?
                }
                "--log-dir" => opts.log_dir = PathBuf::from(value("--log-dir")?),
                "--netrecord" => opts.netrecord = PathBuf::from(value("--netrecord")?),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(opts)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("race: skipped (run it with `make bench`; it needs the release build and a quiet machine)");
        return ExitCode::SUCCESS;
    }
    let mut opts = match Options::parse(&args) {
        Ok(opts) => opts,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("race: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !opts.netrecord.is_file() {
        eprintln!(
            "race: {} not found: build it first (`make bench` does)",
            opts.netrecord.display()
        );
        return ExitCode::from(2);
    }
    if opts.socat && !paths::have_socat() {
        println!("race: socat is not installed: racing direct and netrecord only");
        opts.socat = false;
    }
    // Hold opens thousands of sockets on both ends in this process.
    netrecord::process::raise_open_files_limit();
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("race: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let logs = tempfile::Builder::new()
        .prefix("netrecord-bench-")
        .tempdir_in(&opts.log_dir)
        .map_err(|e| format!("cannot create a log directory in {}: {e}", opts.log_dir.display()))?;
    println!("{}", report::machine());
    println!(
        "logs in {}, {} runs per path{}",
        logs.path().display(),
        opts.runs,
        if opts.socat { "" } else { ", no socat" }
    );
    let mut table = Table::new(opts.socat, opts.hold);
    let ctx = paths::Context {
        netrecord: opts.netrecord.clone(),
        log_dir: logs.path().to_path_buf(),
    };
    let scenarios: [(&str, load::Scenario); 5] = [
        ("bulk", load::bulk),
        ("rtt", load::rtt),
        ("fan-in", load::fan_in),
        ("churn", load::churn),
        ("hold", load::hold),
    ];
    for (name, scenario) in scenarios {
        if !opts.wants(name) {
            continue;
        }
        eprintln!("race: {name}");
        for run in 0..opts.runs {
            for path in paths::Kind::all(opts.socat) {
                if !opts.paths.is_empty() && !opts.paths.contains(&path) {
                    continue;
                }
                let samples: Vec<Sample> = scenario(opts, &ctx, path)
                    .map_err(|e| format!("{name}, run {} through {}: {e}", run + 1, path.name()))?;
                for s in samples {
                    table.add(name, path, s);
                }
            }
        }
    }
    let reading = if opts.wants("read") {
        eprintln!("race: read");
        Some(read::race(opts, &ctx)?)
    } else {
        None
    };
    println!();
    print!("{}", table.render());
    if let Some(reading) = reading {
        println!();
        print!("{reading}");
    }
    Ok(())
}
