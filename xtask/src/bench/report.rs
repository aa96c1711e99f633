//! What the benchmark measured, summarised: the machine, one table per
//! workload, and the same as JSON.

use std::fs;

use serde_json::{json, Value};

use super::{
    stats::{median, ratio, Goal},
    variant::Variant,
    workload::Workload,
};
use crate::text::{mark, mebibytes, thousands};

/// The machine the numbers come from: they mean little without it.
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub cpu_model: String,
}

impl Machine {
    pub fn detect() -> Self {
        let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu_model: cpu_model(&read("/proc/cpuinfo"))
                .unwrap_or_else(|| "unknown CPU".to_owned()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), Linux {}",
            self.cpus, self.cpu_model, self.kernel
        )
    }

    pub fn to_json(&self) -> Value {
        json!({"nproc": self.cpus, "kernel": self.kernel, "cpu_model": self.cpu_model})
    }
}

/// The first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name")?
                .trim_start()
                .strip_prefix(':')
        })
        .map(|model| model.trim().to_owned())
}

/// memtrace's figures for one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// `records.seen`.
    pub seen: u64,
    /// `records.lost_total`.
    pub lost: u64,
    /// Its own user + system CPU time.
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

/// Every run of one variant of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Runs {
    pub variant: Variant,
    pub seconds: Vec<f64>,
    /// One per run, for memtrace variants only.
    pub usage: Vec<Usage>,
}

impl Runs {
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            seconds: Vec::new(),
            usage: Vec::new(),
        }
    }
}

/// memtrace's figures over all runs of a variant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct UsageSummary {
    /// Median: events vary a little with what the runtime and loader do.
    seen: u64,
    /// Total: every lost record counts.
    lost: u64,
    /// Median.
    cpu_seconds: f64,
    /// Maximum: the peak is what a user has to provision for.
    peak_rss_bytes: u64,
}

impl UsageSummary {
    fn of(usage: &[Usage]) -> Option<Self> {
        let median_of =
            |value: fn(&Usage) -> f64| median(&usage.iter().map(value).collect::<Vec<_>>());
        Some(Self {
            seen: median_of(|usage| usage.seen as f64)?.round() as u64,
            lost: usage.iter().map(|usage| usage.lost).sum(),
            cpu_seconds: median_of(|usage| usage.cpu_seconds)?,
            peak_rss_bytes: usage.iter().map(|usage| usage.peak_rss_bytes).max()?,
        })
    }
}

/// One line of a workload's table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    runs: Runs,
    command: String,
    median: f64,
    ratio: f64,
    memtrace: Option<UsageSummary>,
    goal: Option<Goal>,
    met: Option<bool>,
}

/// A workload's results.
pub struct WorkloadReport {
    title: &'static str,
    name: &'static str,
    command: String,
    rounds: u32,
    rows: Vec<Row>,
}

impl WorkloadReport {
    /// Summarises `runs` (the untraced variant first) of `workload`.
    pub fn new(workload: &Workload, rounds: u32, runs: Vec<Runs>) -> Self {
        let command = workload.command_line();
        let medians: Vec<(Variant, f64)> = runs
            .iter()
            .map(|runs| (runs.variant, median(&runs.seconds).unwrap_or(f64::NAN)))
            .collect();
        let median_of = |variant| {
            medians
                .iter()
                .find(|(other, _)| *other == variant)
                .map(|&(_, median)| median)
        };
        let untraced = median_of(Variant::Untraced).unwrap_or(f64::NAN);
        let rows = runs
            .into_iter()
            .map(|runs| {
                let median = median_of(runs.variant).unwrap_or(f64::NAN);
                let ratio = ratio(median, untraced);
                let goal = workload.benchmark.goal(runs.variant);
                Row {
                    command: runs.variant.command_line(&command),
                    memtrace: UsageSummary::of(&runs.usage),
                    met: goal.and_then(|goal| goal.met(ratio, median, median_of)),
                    median,
                    ratio,
                    goal,
                    runs,
                }
            })
            .collect();
        Self {
            title: workload.benchmark.title(),
            name: workload.benchmark.name(),
            command,
            rounds,
            rows,
        }
    }

    /// The table: one row per variant, then each variant's command line.
    pub fn table(&self) -> String {
        let mut text = format!(
            "{} ({}), {} rounds\n  {:<22} {:>8} {:>6}  {:<13} {:>11} {:>6} {:>6} {:>9}  {}\n",
            self.title,
            self.name,
            self.rounds,
            "variant",
            "median s",
            "ratio",
            "range s",
            "events seen",
            "lost",
            "CPU s",
            "peak RSS",
            "goal"
        );
        for row in &self.rows {
            text.push_str(&row.line());
            text.push('\n');
        }
        text.push_str("  commands:\n");
        for row in &self.rows {
            text.push_str(&format!(
                "    {:<22} {}\n",
                row.runs.variant.label(),
                row.command
            ));
        }
        text
    }

    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": self.name,
            "title": self.title,
            "command": self.command,
            "rounds": self.rounds,
            "variants": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        })
    }
}

impl Row {
    fn line(&self) -> String {
        let (low, high) = range(&self.runs.seconds);
        let mut line = format!(
            "  {:<22} {:>8.3} {:>5.2}x  {:<13}",
            self.runs.variant.label(),
            self.median,
            self.ratio,
            format!("{low:.3}–{high:.3}")
        );
        if let Some(usage) = &self.memtrace {
            line.push_str(&format!(
                " {:>11} {:>6} {:>6.2} {:>9}",
                thousands(usage.seen),
                format!("{} {}", usage.lost, mark(usage.lost == 0)),
                usage.cpu_seconds,
                mebibytes(usage.peak_rss_bytes)
            ));
        }
        if let Some(goal) = self.goal {
            let verdict = self.met.map_or("(not measured)", mark);
            line.push_str(&format!("  {} {verdict}", goal.describe()));
        }
        line.trim_end().to_owned()
    }

    fn to_json(&self) -> Value {
        json!({
            "variant": self.runs.variant.label(),
            "command": self.command,
            "seconds": self.runs.seconds,
            "median_seconds": self.median,
            "ratio": self.ratio,
            "goal": self.goal.map(Goal::describe),
            "goal_met": self.met,
            "memtrace": self.memtrace.map(|usage| json!({
                "events_seen": usage.seen,
                "records_lost": usage.lost,
                "cpu_seconds": usage.cpu_seconds,
                "peak_rss_bytes": usage.peak_rss_bytes,
                "runs": self.runs.usage.iter().map(|run| json!({
                    "events_seen": run.seen,
                    "records_lost": run.lost,
                    "cpu_seconds": run.cpu_seconds,
                    "peak_rss_bytes": run.peak_rss_bytes,
                })).collect::<Vec<_>>(),
            })),
        })
    }
}

/// The fastest and slowest of `seconds`.
fn range(seconds: &[f64]) -> (f64, f64) {
    seconds
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), &s| {
            (low.min(s), high.max(s))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Benchmark;

    #[test]
    fn cpu_model_is_the_first_model_name() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }

    fn runs(variant: Variant, seconds: &[f64], usage: &[Usage]) -> Runs {
        Runs {
            variant,
            seconds: seconds.to_vec(),
            usage: usage.to_vec(),
        }
    }

    fn usage(seen: u64, lost: u64, cpu_seconds: f64, mib: u64) -> Usage {
        Usage {
            seen,
            lost,
            cpu_seconds,
            peak_rss_bytes: mib << 20,
        }
    }

    fn storm_report() -> WorkloadReport {
        let workload = Workload::new(Benchmark::FaultStorm, "/w/fault_storm".into(), true);
        WorkloadReport::new(
            &workload,
            3,
            vec![
                runs(Variant::Untraced, &[1.0, 1.2, 0.9], &[]),
                runs(
                    Variant::Memtrace,
                    &[1.1, 1.3, 1.2],
                    &[
                        usage(100, 0, 0.5, 40),
                        usage(110, 0, 0.7, 42),
                        usage(90, 0, 0.6, 41),
                    ],
                ),
                runs(
                    Variant::MemtraceStacksAll,
                    &[1.6, 1.5, 1.7],
                    &[
                        usage(100, 2, 0.9, 40),
                        usage(100, 0, 0.8, 40),
                        usage(100, 0, 1.0, 40),
                    ],
                ),
                runs(Variant::BpftraceStacks, &[1.5, 1.5, 1.5], &[]),
            ],
        )
    }

    #[test]
    fn rows_take_medians_ratios_and_goals() {
        let report = storm_report();
        let memtrace = &report.rows[1];
        assert_eq!(memtrace.median, 1.2);
        assert_eq!(memtrace.ratio, 1.2);
        assert_eq!(memtrace.met, Some(true));
        assert_eq!(
            memtrace.memtrace,
            Some(UsageSummary {
                seen: 100,
                lost: 0,
                cpu_seconds: 0.6,
                peak_rss_bytes: 42 << 20
            })
        );
        let stacks = &report.rows[2];
        assert_eq!(
            stacks.met,
            Some(false),
            "1.6 s is not below bpftrace's 1.5 s"
        );
        assert_eq!(stacks.memtrace.unwrap().lost, 2);
        assert_eq!(report.rows[0].ratio, 1.0);
        assert_eq!(report.rows[3].goal, None);
    }

    #[test]
    fn the_table_marks_goals_and_lists_commands() {
        let table = storm_report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "page-fault storm (fault_storm), 3 rounds");
        assert!(lines[1].starts_with("  variant  "), "{table}");
        assert_eq!(
            lines[2],
            "  untraced                  1.000  1.00x  0.900–1.200"
        );
        assert_eq!(
            lines[3],
            "  memtrace                  1.200  1.20x  1.100–1.300           100    0 ✓   0.60  42.0 MiB  ≤ 1.25x ✓"
        );
        assert!(
            lines[4].ends_with("2 ✗   0.90  40.0 MiB  < bpftrace ustack ✗"),
            "{}",
            lines[4]
        );
        assert_eq!(
            lines[5],
            "  bpftrace ustack           1.500  1.50x  1.500–1.500"
        );
        assert_eq!(lines[6], "  commands:");
        assert_eq!(
            lines[8],
            "    memtrace               memtrace -q --json FILE -- fault_storm --mib 16 --rounds 8 --warmup 2 --wait"
        );
    }

    #[test]
    fn json_has_every_run() {
        let json = storm_report().to_json();
        assert_eq!(json["benchmark"], "fault_storm");
        let memtrace = &json["variants"][1];
        assert_eq!(memtrace["variant"], "memtrace");
        assert_eq!(memtrace["seconds"].as_array().unwrap().len(), 3);
        assert_eq!(memtrace["goal"], "≤ 1.25x");
        assert_eq!(memtrace["goal_met"], true);
        assert_eq!(memtrace["memtrace"]["runs"][1]["events_seen"], 110);
        assert_eq!(json["variants"][0]["memtrace"], Value::Null);
    }
}
