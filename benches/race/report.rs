//! The bench's output: the machine it ran on, and the table of medians per path,
//! ratios, and the targets with whether this run met them.

use std::fmt::Write as _;
use std::fs;
use std::process::Command;

use crate::load::WRITE_CEILING;
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
    /// Per path (in [`Kind::ALL`]'s order), one value per run.
    runs: [Vec<f64>; 5],
}

/// What the issue asks of a metric.
enum Target {
    /// netrecord / `Kind` at least this.
    AtLeastX(Kind, f64),
    /// netrecord / `Kind` at most this (latency).
    AtMostX(Kind, f64),
    /// netrecord's own value at most this.
    AtMost(f64),
    /// netrecord's own value at least this.
    AtLeast(f64),
}

/// The table of one bench run.
pub struct Table {
    /// The paths with a column: direct and netrecord, socat and haproxy if installed.
    columns: Vec<Kind>,
    /// Connections of the hold scenario: all of them must succeed.
    hold: usize,
    rows: Vec<Row>,
    /// Scenarios that run netrecord only, and the scenario whose other paths they
    /// are compared with (the paths that do not write logs do not care where
    /// netrecord's logs go).
    bases: Vec<(&'static str, &'static str)>,
}

impl Table {
    pub fn new(columns: Vec<Kind>, hold: usize) -> Table {
        Table {
            columns,
            hold,
            rows: Vec::new(),
            bases: Vec::new(),
        }
    }

    /// `scenario` is compared with `base`'s values for the paths it does not run.
    pub fn set_base(&mut self, scenario: &'static str, base: &'static str) {
        self.bases.push((scenario, base));
    }

    pub fn add(&mut self, scenario: &'static str, path: Kind, sample: Sample) {
        let i = match self.find(scenario, sample.metric) {
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

    fn find(&self, scenario: &str, metric: &str) -> Option<usize> {
        self.rows
            .iter()
            .position(|r| r.scenario == scenario && r.metric == metric)
    }

    /// A row's value per path: its own runs, or its base scenario's for a path it
    /// did not run.
    fn values(&self, row: &Row) -> [Option<f64>; 5] {
        let base = self
            .bases
            .iter()
            .find(|(s, _)| *s == row.scenario)
            .and_then(|(_, base)| self.find(base, row.metric))
            .map(|i| &self.rows[i]);
        std::array::from_fn(|k| {
            combine(&row.runs[k], row.agg).or_else(|| base.and_then(|b| combine(&b.runs[k], b.agg)))
        })
    }

    fn targets(&self, scenario: &str, metric: &str) -> Vec<Target> {
        use Kind::{Direct, Haproxy, Socat};
        match (scenario, metric) {
            ("bulk", "Gbit/s both") => vec![Target::AtLeastX(Socat, 1.0), Target::AtLeastX(Haproxy, 0.6)],
            ("rtt", "round trips/s") => vec![Target::AtLeastX(Haproxy, 1.0)],
            ("rtt", "p99 us") => vec![Target::AtMostX(Socat, 1.0)],
            ("fan-in", "round trips/s") => vec![Target::AtLeastX(Haproxy, 1.0)],
            ("churn", "connections/s") => vec![Target::AtLeastX(Haproxy, 1.0)],
            ("churn", "max ms (worst run)") => vec![Target::AtMost(100.0)],
            ("hold", "round trips ok (worst run)") => vec![Target::AtLeast(self.hold as f64)],
            ("hold", "peak RSS MiB (worst run)") => vec![Target::AtMost(256.0)],
            ("tls-bulk", "Gbit/s both") => vec![Target::AtLeastX(Direct, 0.5)],
            ("tls-rtt", "round trips/s") => vec![Target::AtLeastX(Direct, 0.6)],
            _ => Vec::new(),
        }
    }

    /// The target column: the verdicts, and for bulk throughput how close
    /// netrecord came to the write ceiling measured in the same scenario.
    fn verdicts(&self, row: &Row, v: &[Option<f64>; 5]) -> String {
        let nr = v[Kind::Netrecord as usize];
        let ratio = |k: Kind| match (nr, v[k as usize]) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        };
        let mut words: Vec<String> = self
            .targets(row.scenario, row.metric)
            .iter()
            .map(|t| {
                let (text, met) = match *t {
                    Target::AtLeastX(k, x) => (format!(">= {x:.1}x {}", k.name()), ratio(k).map(|r| r >= x)),
                    Target::AtMostX(k, x) => (format!("<= {x:.1}x {}", k.name()), ratio(k).map(|r| r <= x)),
                    Target::AtMost(x) => (format!("<= {x}"), nr.map(|n| n <= x)),
                    Target::AtLeast(x) => (format!(">= {x}"), nr.map(|n| n >= x)),
                };
                let word = match met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a",
                };
                format!("{text}: {word}")
            })
            .collect();
        if row.metric == "Gbit/s both" {
            let ceiling = self
                .find(row.scenario, WRITE_CEILING)
                .and_then(|i| combine(&self.rows[i].runs[Kind::Netrecord as usize], Agg::Median));
            if let (Some(nr), Some(c)) = (nr, ceiling) {
                words.push(format!("{:.2}x the write ceiling", nr / c));
            }
        }
        words.join(", ")
    }

    pub fn render(&self) -> String {
        let mut header: Vec<String> = vec!["scenario".into(), "metric".into()];
        header.extend(self.columns.iter().map(|k| k.name().to_string()));
        let others: Vec<Kind> = self.columns.iter().copied().filter(|&k| k != Kind::Netrecord).collect();
        header.extend(others.iter().map(|k| format!("nr/{}", k.name())));
        header.push("target".into());
        let mut lines: Vec<Vec<String>> = vec![header];
        for row in &self.rows {
            let v = self.values(row);
            let nr = v[Kind::Netrecord as usize];
            let mut line = vec![row.scenario.to_string(), row.metric.to_string()];
            line.extend(self.columns.iter().map(|&k| num(v[k as usize])));
            line.extend(others.iter().map(|&k| match (nr, v[k as usize]) {
                (Some(a), Some(b)) if b != 0.0 => times(Some(a / b)),
                _ => times(None),
            }));
            line.push(self.verdicts(row, &v));
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
            "(medians of the runs unless marked worst run; ratios are netrecord's value over the other's; \
             {WRITE_CEILING}: writing the bytes of netrecord's log into a new file in the log directory;\n \
             *-disk: netrecord with its logs on disk, other paths from the same run's scenario without -disk; \
             tls-*: direct is a direct TLS connection, netrecord has TLS on both legs)"
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
