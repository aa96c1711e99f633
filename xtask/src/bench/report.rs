//! What the benchmark measured, summarised: the machine, one table per
//! workload as it finishes, then every workload side by side (Markdown, for
//! the README), memtrace's own cost and its programs' nanoseconds, and the
//! same as JSON.

use std::{collections::BTreeSet, fs};

use serde_json::{json, Value};

use super::{
    kernel_stats::{KernelRun, RunTime},
    stats::{median, ratio, Goal},
    variant::Variant,
    workload::{Benchmark, Method, Workload},
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

/// memtrace's figures for one timed run.
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
    /// The timed runs' seconds (attach rows: latency).
    pub seconds: Vec<f64>,
    /// One per timed run, for memtrace variants only.
    pub usage: Vec<Usage>,
    /// One per run with BPF stats on, for the variants that take them.
    pub kernel: Vec<KernelRun>,
}

impl Runs {
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            seconds: Vec::new(),
            usage: Vec::new(),
            kernel: Vec::new(),
        }
    }
}

/// memtrace's figures over all timed runs of a variant.
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
        Some(Self {
            seen: median_of(usage, |usage| usage.seen as f64)?.round() as u64,
            lost: usage.iter().map(|usage| usage.lost).sum(),
            cpu_seconds: median_of(usage, |usage| usage.cpu_seconds)?,
            peak_rss_bytes: usage.iter().map(|usage| usage.peak_rss_bytes).max()?,
        })
    }
}

/// The median of `value` over `items`.
fn median_of<T>(items: &[T], value: impl Fn(&T) -> f64) -> Option<f64> {
    median(&items.iter().map(value).collect::<Vec<_>>())
}

/// One program's runs in the stats runs: medians of its nanoseconds per run
/// and of its runs.
#[derive(Debug, Clone, PartialEq)]
struct ProgramSummary {
    name: String,
    ns_per_run: f64,
    runs: u64,
}

/// The kernel side of a variant, from its stats runs (medians).
#[derive(Debug, Clone, PartialEq)]
struct KernelSummary {
    /// All programs' time over all their runs, per run.
    ns_per_event: Option<f64>,
    /// All programs' runs.
    events: u64,
    /// All programs' time.
    program_seconds: f64,
    /// memtrace's own CPU time over the same window.
    agent_seconds: f64,
    /// The programs that typically ran, busiest first.
    programs: Vec<ProgramSummary>,
}

impl KernelSummary {
    fn of(runs: &[KernelRun]) -> Option<Self> {
        let totals: Vec<RunTime> = runs.iter().map(KernelRun::total).collect();
        let names: BTreeSet<&String> = runs.iter().flat_map(|run| run.programs.keys()).collect();
        let mut programs: Vec<ProgramSummary> = names
            .into_iter()
            .filter_map(|name| {
                let each: Vec<RunTime> = runs
                    .iter()
                    .filter_map(|run| run.programs.get(name).copied())
                    .collect();
                let ran: Vec<f64> = each.iter().filter_map(|run| run.ns_per_run()).collect();
                let runs = median_of(&each, |run| run.runs as f64)?.round() as u64;
                // A program that ran in fewer than half the runs (an exec
                // before the measured part) says nothing typical.
                if runs == 0 {
                    return None;
                }
                Some(ProgramSummary {
                    name: name.clone(),
                    ns_per_run: median(&ran)?,
                    runs,
                })
            })
            .collect();
        programs.sort_by(|a, b| {
            let time = |program: &ProgramSummary| program.ns_per_run * program.runs as f64;
            time(b).total_cmp(&time(a))
        });
        Some(Self {
            ns_per_event: median(
                &totals
                    .iter()
                    .filter_map(|total| total.ns_per_run())
                    .collect::<Vec<_>>(),
            ),
            events: median_of(&totals, |total| total.runs as f64)?.round() as u64,
            program_seconds: median_of(&totals, |total| total.ns as f64 / 1e9)?,
            agent_seconds: median_of(runs, |run| run.agent_cpu.as_secs_f64())?,
            programs,
        })
    }

    /// `page_fault_user 512 ns × 262k; sys_exit 38 ns × 1.2M`.
    fn per_program(&self) -> String {
        self.programs
            .iter()
            .map(|program| {
                format!(
                    "{} {:.0} ns × {}",
                    program.name,
                    program.ns_per_run,
                    short_count(program.runs)
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// `262144` as `262k`, `6000123` as `6.0M`.
fn short_count(count: u64) -> String {
    match count {
        0..1_000 => count.to_string(),
        1_000..1_000_000 => format!("{:.0}k", count as f64 / 1e3),
        _ => format!("{:.1}M", count as f64 / 1e6),
    }
}

/// One line of a workload's table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    runs: Runs,
    command: String,
    median: f64,
    /// To the untraced median; NaN where there is none (attach rows).
    ratio: f64,
    memtrace: Option<UsageSummary>,
    kernel: Option<KernelSummary>,
    /// Each goal and whether it was met (`None`: the variant it is compared
    /// with did not run).
    goals: Vec<(Goal, Option<bool>)>,
}

/// A workload's results.
pub struct WorkloadReport {
    benchmark: Benchmark,
    command: String,
    rounds: u32,
    rows: Vec<Row>,
}

impl WorkloadReport {
    /// Summarises `runs` (the untraced variant first, where there is one)
    /// of `workload`.
    pub fn new(workload: &Workload, rounds: u32, runs: Vec<Runs>) -> Self {
        let command = workload.command_line();
        let attached_to = workload.attached_to();
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
                let goals = workload
                    .benchmark
                    .goals(runs.variant)
                    .into_iter()
                    .map(|goal| (goal, goal.met(ratio, median, median_of)))
                    .collect();
                Row {
                    command: runs.variant.command_line(&command, attached_to.as_deref()),
                    memtrace: UsageSummary::of(&runs.usage),
                    kernel: KernelSummary::of(&runs.kernel),
                    median,
                    ratio,
                    goals,
                    runs,
                }
            })
            .collect();
        Self {
            benchmark: workload.benchmark,
            command,
            rounds,
            rows,
        }
    }

    /// The table: one row per variant, the kernel side of the variants
    /// that take stats, then each variant's command line.
    pub fn table(&self) -> String {
        let mut text = format!(
            "{} ({}), {} rounds\n  {:<22} {:>8} {:>6}  {:<13} {:>11} {:>6} {:>6} {:>9}  {}\n",
            self.benchmark.title(),
            self.benchmark.name(),
            self.rounds,
            "variant",
            self.seconds_heading(),
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
        for row in &self.rows {
            if let Some(kernel) = &row.kernel {
                text.push_str(&format!(
                    "  kernel side of {} (BPF stats on, {} runs): {} ns/event over {} program \
                     runs, {:.3} s in programs, agent {:.3} s\n    {}\n",
                    row.runs.variant.label(),
                    row.runs.kernel.len(),
                    kernel
                        .ns_per_event
                        .map_or("—".to_owned(), |ns| format!("{ns:.0}")),
                    thousands(kernel.events),
                    kernel.program_seconds,
                    kernel.agent_seconds,
                    kernel.per_program()
                ));
            }
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

    fn seconds_heading(&self) -> &'static str {
        match self.benchmark.method() {
            Method::Attach => "attach s",
            _ => "median s",
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": self.benchmark.name(),
            "title": self.benchmark.title(),
            "command": self.command,
            "rounds": self.rounds,
            "seconds_are": match self.benchmark.method() {
                Method::Attach => "attach latency: from the tracer's start to its attached line",
                _ => "the workload's own timing of its measured part",
            },
            "variants": self.rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        })
    }

    fn row(&self, variant: Variant) -> Option<&Row> {
        self.rows.iter().find(|row| row.runs.variant == variant)
    }

    /// This workload's cell for `variant` in the summary: the untraced
    /// seconds, a ratio to them, or an attach latency.
    fn cell(&self, variant: Variant) -> String {
        let Some(row) = self.row(variant) else {
            return "—".to_owned();
        };
        let value = match (self.benchmark.method(), variant) {
            (Method::Attach, _) => format!("{:.0} ms", row.median * 1e3),
            (_, Variant::Untraced) => format!("{:.3} s", row.median),
            _ => format!("{:.2}x", row.ratio),
        };
        if variant == Variant::Memtrace {
            format!("**{value}**")
        } else {
            value
        }
    }

    /// Every goal of the row and its verdict, e.g. `≤ 1.10x ✓`.
    fn goals(&self) -> String {
        self.rows
            .iter()
            .flat_map(|row| {
                row.goals.iter().map(|(goal, met)| {
                    let who = match row.runs.variant {
                        Variant::Memtrace => String::new(),
                        other => format!("{} ", other.label()),
                    };
                    format!(
                        "{who}{} {}",
                        goal.describe(),
                        met.map_or("(not measured)", mark)
                    )
                })
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The variants any of `reports` ran, in column order.
fn columns(reports: &[WorkloadReport]) -> Vec<Variant> {
    Variant::ALL
        .into_iter()
        .filter(|&variant| reports.iter().any(|report| report.row(variant).is_some()))
        .collect()
}

/// One Markdown table of every workload side by side: untraced seconds,
/// every other variant's ratio to them (attach rows: latencies), and the
/// goals.
pub fn summary(reports: &[WorkloadReport]) -> String {
    let columns = columns(reports);
    let mut heading = vec!["workload".to_owned()];
    heading.extend(columns.iter().map(|variant| variant.label().to_owned()));
    heading.push("goal".to_owned());
    let mut lines = vec![markdown_row(&heading), markdown_rule(heading.len())];
    for report in reports {
        let mut cells = vec![report.benchmark.title().to_owned()];
        cells.extend(columns.iter().map(|&variant| report.cell(variant)));
        cells.push(report.goals());
        lines.push(markdown_row(&cells));
    }
    lines.join("\n") + "\n"
}

/// A Markdown table of memtrace's own cost in every run that traced:
/// records, what its programs spent in the kernel (stats runs) and what its
/// agent spent.
pub fn costs(reports: &[WorkloadReport]) -> String {
    let heading = [
        "workload",
        "variant",
        "records seen",
        "lost",
        "program runs",
        "kernel ns/run",
        "kernel s",
        "agent s (same window)",
        "agent s (whole run)",
        "peak RSS",
    ];
    let mut lines = vec![markdown_row(&heading), markdown_rule(heading.len())];
    for report in reports {
        for row in &report.rows {
            if row.memtrace.is_none() && row.kernel.is_none() {
                continue;
            }
            let usage = row.memtrace.as_ref();
            let kernel = row.kernel.as_ref();
            let dash = || "—".to_owned();
            lines.push(markdown_row(&[
                report.benchmark.title().to_owned(),
                row.runs.variant.label().to_owned(),
                usage.map_or_else(dash, |usage| thousands(usage.seen)),
                usage.map_or_else(dash, |usage| usage.lost.to_string()),
                kernel.map_or_else(dash, |kernel| thousands(kernel.events)),
                kernel
                    .and_then(|kernel| kernel.ns_per_event)
                    .map_or_else(dash, |ns| format!("{ns:.0}")),
                kernel.map_or_else(dash, |kernel| format!("{:.3}", kernel.program_seconds)),
                kernel.map_or_else(dash, |kernel| format!("{:.3}", kernel.agent_seconds)),
                usage.map_or_else(dash, |usage| format!("{:.2}", usage.cpu_seconds)),
                usage.map_or_else(dash, |usage| mebibytes(usage.peak_rss_bytes)),
            ]));
        }
    }
    lines.join("\n") + "\n"
}

/// A Markdown table of each program's nanoseconds per run, where stats
/// were taken.
pub fn programs(reports: &[WorkloadReport]) -> String {
    let heading = ["workload", "variant", "ns per run × runs, by program"];
    let mut lines = vec![markdown_row(&heading), markdown_rule(heading.len())];
    for report in reports {
        for row in &report.rows {
            if let Some(kernel) = &row.kernel {
                lines.push(markdown_row(&[
                    report.benchmark.title(),
                    row.runs.variant.label(),
                    &kernel.per_program(),
                ]));
            }
        }
    }
    lines.join("\n") + "\n"
}

fn markdown_row(cells: &[impl AsRef<str>]) -> String {
    let cells: Vec<&str> = cells.iter().map(AsRef::as_ref).collect();
    format!("| {} |", cells.join(" | "))
}

fn markdown_rule(columns: usize) -> String {
    format!("|{}", " --- |".repeat(columns))
}

impl Row {
    fn line(&self) -> String {
        let (low, high) = range(&self.runs.seconds);
        let ratio = if self.ratio.is_nan() {
            format!("{:>6}", "—")
        } else {
            format!("{:>5.2}x", self.ratio)
        };
        let mut line = format!(
            "  {:<22} {:>8.3} {ratio}  {:<13}",
            self.runs.variant.label(),
            self.median,
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
        for (goal, met) in &self.goals {
            let verdict = met.map_or("(not measured)", mark);
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
            "ratio": (!self.ratio.is_nan()).then_some(self.ratio),
            "goals": self.goals.iter().map(|(goal, met)| json!({
                "goal": goal.describe(),
                "met": met,
            })).collect::<Vec<_>>(),
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
            "kernel": self.kernel.as_ref().map(|kernel| json!({
                "ns_per_event": kernel.ns_per_event,
                "program_runs": kernel.events,
                "program_seconds": kernel.program_seconds,
                "agent_seconds": kernel.agent_seconds,
                "programs": kernel.programs.iter().map(|program| json!({
                    "name": program.name,
                    "ns_per_run": program.ns_per_run,
                    "runs": program.runs,
                })).collect::<Vec<_>>(),
                "runs": self.runs.kernel.iter().map(|run| json!({
                    "agent_seconds": run.agent_cpu.as_secs_f64(),
                    "programs": run.programs.iter().map(|(name, time)| json!({
                        "name": name,
                        "run_time_ns": time.ns,
                        "run_cnt": time.runs,
                    })).collect::<Vec<_>>(),
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
    use std::time::Duration;

    use super::*;
    use crate::bench::kernel_stats::ByProgram;

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
            kernel: Vec::new(),
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

    fn kernel(programs: &[(&str, u64, u64)], agent_ms: u64) -> KernelRun {
        KernelRun {
            programs: programs
                .iter()
                .map(|&(name, ns, runs)| (name.to_owned(), RunTime { ns, runs }))
                .collect::<ByProgram>(),
            agent_cpu: Duration::from_millis(agent_ms),
        }
    }

    fn storm_report() -> WorkloadReport {
        let workload = Workload::new(Benchmark::FaultStorm, "/w/fault_storm".into(), true);
        let mut memtrace = runs(
            Variant::Memtrace,
            &[1.1, 1.3, 1.05],
            &[
                usage(100, 0, 0.5, 40),
                usage(110, 0, 0.7, 42),
                usage(90, 0, 0.6, 41),
            ],
        );
        memtrace.kernel = vec![
            kernel(
                &[("page_fault_user", 30_000, 100), ("sys_exit", 1_000, 50)],
                20,
            ),
            kernel(
                &[("page_fault_user", 36_000, 120), ("sys_exit", 3_000, 50)],
                40,
            ),
        ];
        WorkloadReport::new(
            &workload,
            3,
            vec![
                runs(Variant::Untraced, &[1.0, 1.2, 0.9], &[]),
                memtrace,
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
        assert_eq!(memtrace.median, 1.1);
        assert_eq!(memtrace.ratio, 1.1);
        assert_eq!(memtrace.goals, [(Goal::RatioAtMost(1.10), Some(true))]);
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
            stacks.goals,
            [(Goal::FasterThan(Variant::BpftraceStacks), Some(false))],
            "1.6 s is not below bpftrace's 1.5 s"
        );
        assert_eq!(stacks.memtrace.unwrap().lost, 2);
        assert_eq!(report.rows[0].ratio, 1.0);
        assert!(report.rows[3].goals.is_empty());
    }

    #[test]
    fn kernel_figures_are_medians_of_the_stats_runs() {
        let report = storm_report();
        let kernel = report.rows[1].kernel.as_ref().unwrap();
        // Per run: 31000 ns / 150 runs and 39000 ns / 170 runs.
        let (first, second) = (31_000.0 / 150.0, 39_000.0 / 170.0);
        assert_eq!(kernel.ns_per_event, Some((first + second) / 2.0));
        assert_eq!(kernel.events, 160);
        assert_eq!(kernel.program_seconds, 35_000e-9);
        assert_eq!(kernel.agent_seconds, 0.03);
        assert_eq!(
            kernel.programs,
            [
                ProgramSummary {
                    name: "page_fault_user".into(),
                    ns_per_run: 300.0,
                    runs: 110
                },
                ProgramSummary {
                    name: "sys_exit".into(),
                    ns_per_run: 40.0,
                    runs: 50
                },
            ]
        );
        assert_eq!(
            kernel.per_program(),
            "page_fault_user 300 ns × 110; sys_exit 40 ns × 50"
        );
        assert!(report.rows[0].kernel.is_none());
    }

    #[test]
    fn programs_that_rarely_ran_are_left_out() {
        let summary = KernelSummary::of(&[
            kernel(&[("sched_process_exec", 100, 1), ("sys_exit", 90, 3)], 1),
            kernel(&[("sched_process_exec", 0, 0), ("sys_exit", 90, 3)], 1),
            kernel(&[("sched_process_exec", 0, 0), ("sys_exit", 90, 3)], 1),
        ])
        .unwrap();
        let names: Vec<&str> = summary.programs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sys_exit"]);
        assert_eq!(
            summary.events, 3,
            "the median of the runs' totals (4, 3, 3)"
        );
    }

    #[test]
    fn programs_that_never_ran_have_no_average() {
        let summary =
            KernelSummary::of(&[kernel(&[("rss_stat", 0, 0), ("sys_exit", 90, 3)], 1)]).unwrap();
        assert_eq!(summary.programs.len(), 1);
        assert_eq!(summary.programs[0].name, "sys_exit");
        assert_eq!(KernelSummary::of(&[]), None);
        let idle = KernelSummary::of(&[kernel(&[("rss_stat", 0, 0)], 1)]).unwrap();
        assert_eq!(idle.ns_per_event, None);
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
            "  memtrace                  1.100  1.10x  1.050–1.300           100    0 ✓   0.60  42.0 MiB  ≤ 1.10x ✓"
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
        assert!(
            lines[6].starts_with("  kernel side of memtrace (BPF stats on, 2 runs): 218 ns/event"),
            "{}",
            lines[6]
        );
        assert_eq!(
            lines[7],
            "    page_fault_user 300 ns × 110; sys_exit 40 ns × 50"
        );
        assert_eq!(lines[8], "  commands:");
        assert_eq!(
            lines[10],
            "    memtrace               memtrace -q --json FILE -- fault_storm --mib 16 --rounds 8 --warmup 2 --wait"
        );
    }

    fn attach_report() -> WorkloadReport {
        let workload = Workload::new(Benchmark::Attach, "/w/many_libs".into(), false);
        WorkloadReport::new(
            &workload,
            1,
            vec![
                runs(Variant::Memtrace, &[0.240], &[usage(3, 0, 0.2, 30)]),
                runs(Variant::BpftraceCount, &[0.9], &[]),
            ],
        )
    }

    #[test]
    fn attach_rows_show_latencies_without_ratios() {
        let report = attach_report();
        assert!(report.rows[0].ratio.is_nan());
        assert_eq!(
            report.rows[0].goals,
            [(Goal::SecondsAtMost(0.25), Some(true))]
        );
        let table = report.table();
        assert!(table.contains("attach s"), "{table}");
        assert!(
            table.contains("  memtrace                  0.240      —  0.240–0.240"),
            "{table}"
        );
        assert!(
            table.contains("memtrace -q --json FILE -p $PID   (PID: many_libs --libs 15 --wait)"),
            "{table}"
        );
        assert_eq!(report.to_json()["variants"][0]["ratio"], Value::Null);
    }

    #[test]
    fn the_summary_puts_every_workload_side_by_side() {
        let summary = summary(&[storm_report(), attach_report()]);
        let lines: Vec<&str> = summary.lines().collect();
        assert_eq!(
            lines[0],
            "| workload | untraced | memtrace | memtrace --stacks=all | bpftrace ustack | \
             bpftrace count | goal |"
        );
        assert_eq!(lines[1], "| --- | --- | --- | --- | --- | --- | --- |");
        assert_eq!(
            lines[2],
            "| page-fault storm | 1.000 s | **1.10x** | 1.60x | 1.50x | — | ≤ 1.10x ✓, \
             memtrace --stacks=all < bpftrace ustack ✗ |"
        );
        assert_eq!(
            lines[3],
            "| attach, 15 libraries (about 100 mappings) | — | **240 ms** | — | — | 900 ms | \
             ≤ 250 ms ✓ |"
        );
    }

    #[test]
    fn cost_tables_list_memtraces_runs_only() {
        let reports = [storm_report()];
        let costs = costs(&reports);
        let lines: Vec<&str> = costs.lines().collect();
        assert_eq!(lines.len(), 4, "{costs}");
        assert_eq!(
            lines[2],
            "| page-fault storm | memtrace | 100 | 0 | 160 | 218 | 0.000 | 0.030 | 0.60 | 42.0 MiB |"
        );
        assert_eq!(
            lines[3],
            "| page-fault storm | memtrace --stacks=all | 100 | 2 | — | — | — | — | 0.90 | 40.0 MiB |"
        );
        let programs = programs(&reports);
        assert_eq!(
            programs.lines().nth(2).unwrap(),
            "| page-fault storm | memtrace | page_fault_user 300 ns × 110; sys_exit 40 ns × 50 |"
        );
    }

    #[test]
    fn counts_are_short() {
        assert_eq!(short_count(999), "999");
        assert_eq!(short_count(262_144), "262k");
        assert_eq!(short_count(6_000_123), "6.0M");
    }

    #[test]
    fn json_has_every_run() {
        let json = storm_report().to_json();
        assert_eq!(json["benchmark"], "fault_storm");
        let memtrace = &json["variants"][1];
        assert_eq!(memtrace["variant"], "memtrace");
        assert_eq!(memtrace["seconds"].as_array().unwrap().len(), 3);
        assert_eq!(memtrace["goals"][0]["goal"], "≤ 1.10x");
        assert_eq!(memtrace["goals"][0]["met"], true);
        assert_eq!(memtrace["memtrace"]["runs"][1]["events_seen"], 110);
        assert_eq!(memtrace["kernel"]["runs"][1]["programs"][0]["run_cnt"], 120);
        assert_eq!(memtrace["kernel"]["programs"][0]["name"], "page_fault_user");
        assert_eq!(json["variants"][0]["memtrace"], Value::Null);
        assert_eq!(json["variants"][0]["kernel"], Value::Null);
    }
}
