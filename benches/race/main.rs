//! `make bench`: races traffic through netrecord against a direct connection and
//! against socat and haproxy (which forward without recording), on loopback, and
//! prints a table of medians and ratios.
//!
//! Each scenario starts its own upstream server in this process, then drives the
//! same client load through each path in turn — direct, netrecord (the release
//! binary, recording every byte), socat and haproxy if installed — and repeats
//! that round several times, so the paths share whatever else the machine is
//! doing. A fresh proxy is started for every run and stopped by its own handle;
//! logs go to a temporary directory under `--log-dir` (tmpfs by default) and are
//! removed after each run. The `-disk` scenarios run netrecord alone with its logs
//! under `--disk-dir` (on the disk under `target/` by default), where most logs
//! go; the `tls-` scenarios race netrecord with TLS on both legs against a direct
//! TLS connection (`tls.rs`).
//!
//! Under `cargo test` (no `--bench` argument) the bench only says how to run it:
//! it needs the release binary and minutes of a quiet machine.

mod load;
mod paths;
mod read;
mod report;
mod tls;
mod upstream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use paths::{Context, Kind};
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
    /// Bytes each way in the TLS bulk scenario.
    pub tls_bulk_bytes: u64,
    /// Runs of each path per scenario.
    pub runs: usize,
    pub log_dir: PathBuf,
    /// Where the `-disk` scenarios put netrecord's logs.
    pub disk_dir: PathBuf,
    pub netrecord: PathBuf,
    /// Another netrecord build to race as the baseline path.
    pub baseline: Option<PathBuf>,
    pub socat: bool,
    pub haproxy: bool,
    /// Paths to drive; all of them unless `--paths` narrows it (for profiling).
    pub paths: Vec<paths::Kind>,
    /// Scenarios to run; empty means all.
    pub only: Vec<String>,
}

const SCENARIOS: [&str; 10] = [
    "bulk",
    "rtt",
    "fan-in",
    "churn",
    "hold",
    "bulk-disk",
    "churn-disk",
    "tls-bulk",
    "tls-rtt",
    "read",
];

const USAGE: &str = "\
usage: make bench [BENCH_ARGS='OPTIONS']   (or: cargo bench --bench race -- OPTIONS)

  --quick             small sizes, for a run of a minute or two
  --runs N            runs of each path per scenario (default 3)
  --only LIST         comma-separated scenarios: bulk,rtt,fan-in,churn,hold,
                      bulk-disk,churn-disk,tls-bulk,tls-rtt,read
  --log-dir DIR       where netrecord writes its logs (default /dev/shm)
  --disk-dir DIR      its logs in the -disk scenarios (default target/bench-logs)
  --netrecord PATH    the binary to race (default target/release/netrecord)
  --baseline PATH     also race this netrecord build, as the baseline column
  --no-socat          skip the socat path even if socat is installed
  --no-haproxy        skip the haproxy path even if haproxy is installed
  --paths LIST        only these paths: direct,netrecord,socat,haproxy (to profile one)";

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
            tls_bulk_bytes: 1 << 30,
            runs: 3,
            log_dir: PathBuf::from("/dev/shm"),
            disk_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-logs"),
            netrecord: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/netrecord"),
            baseline: None,
            socat: true,
            haproxy: true,
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
            tls_bulk_bytes: 128 << 20,
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
                "--no-haproxy" => opts.haproxy = false,
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
                "--disk-dir" => opts.disk_dir = PathBuf::from(value("--disk-dir")?),
                "--netrecord" => opts.netrecord = PathBuf::from(value("--netrecord")?),
                "--baseline" => opts.baseline = Some(PathBuf::from(value("--baseline")?)),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(opts)
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }

    /// The paths with a column in the table.
    fn columns(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| match k {
                Kind::Socat => self.socat,
                Kind::Haproxy => self.haproxy,
                Kind::Baseline => self.baseline.is_some(),
                _ => true,
            })
            .collect()
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
    if let Some(baseline) = opts.baseline.as_ref().filter(|b| !b.is_file()) {
        eprintln!("race: the --baseline build {} does not exist", baseline.display());
        return ExitCode::from(2);
    }
    if opts.socat && !paths::have_socat() {
        println!("race: socat is not installed (apt-get install socat): skipping its column");
        opts.socat = false;
    }
    if opts.haproxy && !paths::have_haproxy() {
        println!("race: haproxy is not installed (apt-get install haproxy): skipping its column");
        opts.haproxy = false;
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
    let others: Vec<&str> = opts.columns()[2..].iter().map(|k| k.name()).collect();
    println!(
        "logs in {}, {} runs per path, racing direct, netrecord{}",
        logs.path().display(),
        opts.runs,
        others.iter().map(|o| format!(", {o}")).collect::<String>()
    );
    let mut table = Table::new(opts.columns(), opts.hold);
    let ctx = Context {
        netrecord: opts.netrecord.clone(),
        baseline: opts.baseline.clone(),
        log_dir: logs.path().to_path_buf(),
        netrecord_args: Vec::new(),
        tls: None,
    };
    let disk = if opts.wants("bulk-disk") || opts.wants("churn-disk") {
        std::fs::create_dir_all(&opts.disk_dir)
            .map_err(|e| format!("cannot create {}: {e}", opts.disk_dir.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("netrecord-bench-")
            .tempdir_in(&opts.disk_dir)
            .map_err(|e| format!("cannot create a log directory in {}: {e}", opts.disk_dir.display()))?;
        println!("-disk scenarios: logs in {}", dir.path().display());
        Some(dir)
    } else {
        None
    };
    let disk_ctx = Context {
        log_dir: disk.as_ref().map_or(ctx.log_dir.clone(), |d| d.path().to_path_buf()),
        ..ctx.clone()
    };
    let tls_ctx = if opts.wants("tls-bulk") || opts.wants("tls-rtt") {
        let setup = tls::Setup::new(logs.path())?;
        Context {
            netrecord_args: setup.netrecord_args(),
            tls: Some(std::sync::Arc::new(setup)),
            ..ctx.clone()
        }
    } else {
        ctx.clone()
    };
    let all = opts.columns();
    // The -disk scenarios run only netrecord (and the baseline build); the TLS
    // ones only direct TLS and netrecord.
    let recorders: Vec<Kind> = all.iter().copied().filter(|k| k.records()).collect();
    let tls_kinds: Vec<Kind> = all
        .iter()
        .copied()
        .filter(|&k| k == Kind::Direct || k.records())
        .collect();
    // Each scenario: what it runs, through which paths, in which context.
    let plans: [(&str, load::Scenario, &[Kind], &Context); 9] = [
        ("bulk", load::bulk, &all, &ctx),
        ("rtt", load::rtt, &all, &ctx),
        ("fan-in", load::fan_in, &all, &ctx),
        ("churn", load::churn, &all, &ctx),
        ("hold", load::hold, &all, &ctx),
        ("bulk-disk", load::bulk, &recorders, &disk_ctx),
        ("churn-disk", load::churn, &recorders, &disk_ctx),
        ("tls-bulk", tls::bulk, &tls_kinds, &tls_ctx),
        ("tls-rtt", tls::rtt, &tls_kinds, &tls_ctx),
    ];
    table.set_base("bulk-disk", "bulk");
    table.set_base("churn-disk", "churn");
    for (name, scenario, kinds, ctx) in plans {
        if !opts.wants(name) {
            continue;
        }
        eprintln!("race: {name}");
        for run in 0..opts.runs {
            for &path in kinds {
                if !opts.paths.is_empty() && !opts.paths.contains(&path) {
                    continue;
                }
                let samples: Vec<Sample> = scenario(opts, ctx, path)
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
