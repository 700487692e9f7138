//! The bench's output: the machine it ran on, and the table of medians per path,
//! ratios, and the targets with whether this run met them.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use crate::paths::Kind;

/// How a metric's runs are combined into one number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    Median,
    /// The largest of the runs (worst latency, highest memory).
    Max,
    /// The smallest of the runs (fewest successes).
    Min,
}

/// One measurement of one run.
#[derive(Clone, Debug)]
pub struct Sample {
    pub metric: &'static str,
    pub value: f64,
    pub agg: Agg,
}

impl Sample {
    pub fn new(metric: &'static str, value: f64, agg: Agg) -> Sample {
        Sample { metric, value, agg }
    }
}

struct Row {
    scenario: &'static str,
    metric: &'static str,
    agg: Agg,
    /// Per path (direct, netrecord, socat), one value per run.
    runs: [Vec<f64>; 3],
}

/// What the issue asks of a metric.
enum Target {
    /// netrecord / direct at least this.
    VsDirect(f64),
    /// netrecord / socat at least this.
    VsSocat(f64),
    /// netrecord / socat at most this (latency).
    AtMostSocat(f64),
    /// netrecord's own value at most this.
    AtMost(f64),
    /// netrecord's own value at least this.
    AtLeast(f64),
}

/// The table of one bench run.
pub struct Table {
    socat: bool,
    /// Connections of the hold scenario: all of them must succeed.
    hold: usize,
    rows: Vec<Row>,
}

impl Table {
    pub fn new(socat: bool, hold: usize) -> Table {
        Table {
            socat,
            hold,
            rows: Vec::new(),
        }
    }

    pub fn add(&mut self, scenario: &'static str, path: Kind, sample: Sample) {
        let i = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.metric == sample.metric)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    scenario,
                    metric: sample.metric,
                    agg: sample.agg,
                    runs: Default::default(),
                });
                self.rows.len() - 1
            }
        };
        self.rows[i].runs[path as usize].push(sample.value);
    }

    fn targets(&self, scenario: &str, metric: &str) -> Vec<Target> {
        match (scenario, metric) {
            ("bulk", "Gbit/s both") => vec![Target::VsDirect(0.35), Target::VsSocat(1.3)],
            ("rtt", "round trips/s") => vec![Target::VsDirect(0.9)],
            ("rtt", "p99 us") => vec![Target::AtMostSocat(1.0)],
            ("fan-in", "round trips/s") => vec![Target::VsDirect(0.6)],
            ("churn", "connections/s") => vec![Target::VsDirect(0.5)],
            ("churn", "max ms (worst run)") => vec![Target::AtMost(100.0)],
            ("hold", "round trips ok (worst run)") => vec![Target::AtLeast(self.hold as f64)],
            ("hold", "peak RSS MiB (worst run)") => vec![Target::AtMost(256.0)],
            _ => Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let mut header = vec!["scenario", "metric", "direct", "netrecord"];
        if self.socat {
            header.push("socat");
        }
        header.push("nr/direct");
        if self.socat {
            header.push("nr/socat");
        }
        header.push("target");
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for row in &self.rows {
            let v: Vec<Option<f64>> = row.runs.iter().map(|runs| combine(runs, row.agg)).collect();
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                _ => None,
            };
            let (vs_direct, vs_socat) = (ratio(v[1], v[0]), ratio(v[1], v[2]));
            let mut line = vec![row.scenario.to_string(), row.metric.to_string(), num(v[0]), num(v[1])];
            if self.socat {
                line.push(num(v[2]));
            }
            line.push(times(vs_direct));
            if self.socat {
                line.push(times(vs_socat));
            }
            let verdicts: Vec<String> = self
                .targets(row.scenario, row.metric)
                .iter()
                .map(|t| {
                    let (text, met) = match *t {
                        Target::VsDirect(x) => (format!(">= {x}x direct"), vs_direct.map(|r| r >= x)),
                        Target::VsSocat(x) => (format!(">= {x}x socat"), vs_socat.map(|r| r >= x)),
                        Target::AtMostSocat(x) => (format!("<= {x}x socat"), vs_socat.map(|r| r <= x)),
                        Target::AtMost(x) => (format!("<= {x}"), v[1].map(|n| n <= x)),
                        Target::AtLeast(x) => (format!(">= {x}"), v[1].map(|n| n >= x)),
                    };
                    let word = match met {
                        Some(true) => "met",
                        Some(false) => "MISSED",
                        None => "n/a",
                    };
                    format!("{text}: {word}")
                })
                .collect();
            line.push(verdicts.join(", "));
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for line in &lines {
            let mut text = String::new();
            for (c, cell) in line.iter().enumerate() {
                // Names left-aligned, numbers right-aligned, the target last and free.
                if c < 2 || c == line.len() - 1 {
                    let _ = write!(text, "{cell:<w$}  ", w = widths[c]);
                } else {
                    let _ = write!(text, "{cell:>w$}  ", w = widths[c]);
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }
        let _ = writeln!(
            out,
            "(medians of the runs unless marked worst run; ratios are netrecord's value over the other's)"
        );
        out
    }
}

fn combine(runs: &[f64], agg: Agg) -> Option<f64> {
    let mut v: Vec<f64> = runs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(match agg {
        Agg::Median => median(&v),
        Agg::Max => v[v.len() - 1],
        Agg::Min => v[0],
    })
}

/// The median of sorted values (the mean of the middle two for an even count).
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

pub fn num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

pub fn times(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}x"))
}

/// Date, core count, kernel and CPU model: the table means little without them.
pub fn machine() -> String {
    let date = Command::new("date")
        .arg("-u")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!(
        "netrecord bench, {date}; nproc {nproc}; kernel {}; cpu {cpu}",
        kernel.trim()
    )
}
