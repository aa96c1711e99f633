//! `cargo xtask bench`: memtrace's overhead beside its peers (bpftrace and
//! perf) and beside the floor any tracer on its tracepoints pays, measured
//! the same way for all of them, in one run: on the traced workloads, on a
//! process nobody traces (the host-wide tax), and in attaching.
//!
//! On a 2-core VM, page-fault costs swing from run to run, so each workload
//! runs every variant once per round, rounds interleaved (untraced, floor,
//! memtrace, peers, untraced, ...), and the tables quote medians and ratios
//! to the untraced median. Each workload times only its measured part,
//! after its warm-up and after the tracer attached. memtrace's kernel-side
//! nanoseconds per event come from separate runs with BPF run-time stats on
//! (interleaved too), since turning them on costs every program run a
//! little.
//!
//! Timings are reported against the overhead issue's goals but never fail
//! the command; only correctness checks do (memtrace lost no records and
//! counted what the workload did), which is what makes `--quick` a CI step.

mod checks;
mod kernel_stats;
mod measure;
mod report;
mod resident;
mod stats;
mod variant;
pub(crate) mod workload;

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use self::{
    measure::{Purpose, Setting, Traced},
    report::{Machine, Runs, Usage, WorkloadReport},
    resident::Resident,
    variant::Variant,
    workload::{Benchmark, Workload},
};
use crate::{privilege, setup, text::thousands, workspace};

/// `cargo xtask bench` options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Options {
    /// Two rounds of small workloads and no 4 GiB RSS run: a few minutes, for
    /// CI, where the correctness checks matter and timings are only shown.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of every variant [default: 5, or 2 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: Option<u32>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Only these workloads (repeatable), by name: fault_storm,
    /// fault_storm_nofp, madvise_storm, mmap_churn, mmap_churn_nofp,
    /// gochurn, neighbour, attach, attach_many_libs. Skips the 4 GiB RSS run.
    #[arg(long, value_name = "NAME", value_parser = parse_benchmark)]
    pub only: Vec<Benchmark>,
}

fn parse_benchmark(name: &str) -> Result<Benchmark, String> {
    Benchmark::ALL
        .into_iter()
        .find(|benchmark| benchmark.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Benchmark::ALL.iter().map(|b| b.name()).collect();
            format!("no workload {name}; there are {}", names.join(", "))
        })
}

impl Options {
    /// What CI runs.
    pub fn quick() -> Self {
        Self {
            quick: true,
            ..Self::default()
        }
    }

    fn rounds(&self) -> u32 {
        self.rounds.unwrap_or(if self.quick { 2 } else { 5 })
    }

    /// The workloads to run.
    fn benchmarks(&self) -> Vec<Benchmark> {
        if self.only.is_empty() {
            Benchmark::ALL.to_vec()
        } else {
            self.only.clone()
        }
    }

    /// The command that gives these options, for the report.
    fn command_line(&self) -> String {
        let mut line = "cargo xtask bench".to_owned();
        if self.quick {
            line.push_str(" --quick");
        }
        if let Some(rounds) = self.rounds {
            line.push_str(&format!(" --rounds {rounds}"));
        }
        for benchmark in &self.only {
            line.push_str(&format!(" --only {}", benchmark.name()));
        }
        if let Some(json) = &self.json {
            line.push_str(&format!(" --json {}", json.display()));
        }
        line
    }
}

pub fn run(options: &Options) -> Result<()> {
    if !privilege::is_root()? {
        bail!(
            "xtask bench must run as root (memtrace, bpftrace and perf load eBPF programs \
             or attach to other processes): run it with sudo, e.g. \
             `sudo -E env \"PATH=$PATH\" {}`",
            options.command_line()
        );
    }
    setup::run(setup::Mode::Install)?;
    let memtrace = workspace::build_memtrace()?;
    let programs = memtrace_tests::workloads::ensure_built()
        .context("cannot build the benchmark workloads")?;
    let scratch = tempfile::Builder::new()
        .prefix("memtrace-bench.")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let setting = Setting {
        memtrace: &memtrace,
        scratch: scratch.path(),
    };
    let machine = Machine::detect();
    let rounds = options.rounds();
    println!("\n{}", header(options, &machine, &memtrace));

    let mut problems = Vec::new();
    let mut reports = Vec::new();
    for benchmark in options.benchmarks() {
        let program = benchmark.program(programs).to_path_buf();
        let workload = Workload::new(benchmark, program, options.quick);
        let runs = measure_workload(&workload, rounds, &setting, &mut problems)?;
        let report = WorkloadReport::new(&workload, rounds, runs);
        println!("{}", report.table());
        reports.push(report);
    }
    println!("All workloads side by side (untraced: seconds; others: ratio to untraced; attach: latency):\n");
    println!("{}", report::summary(&reports));
    println!("memtrace's own cost (records from the timed runs; kernel and agent from the stats runs' measured part):\n");
    println!("{}", report::costs(&reports));
    println!("Kernel-side time of each memtrace program (stats runs):\n");
    println!("{}", report::programs(&reports));
    let resident = if options.quick || !options.only.is_empty() {
        None
    } else {
        Some(measure_resident(&setting, &programs.memops, &mut problems)?)
    };

    if let Some(path) = &options.json {
        let results = json!({
            "command": options.command_line(),
            "machine": machine.to_json(),
            "rounds": rounds,
            "quick": options.quick,
            "workloads": reports.iter().map(WorkloadReport::to_json).collect::<Vec<_>>(),
            "memtrace_rss_4gib": resident.as_ref().map(Resident::to_json),
            "failed_checks": problems,
        });
        fs::write(path, format!("{results:#}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !problems.is_empty() {
        bail!(
            "{} correctness check(s) failed:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    println!("correctness checks passed: no records lost, memtrace's counts match the workloads'");
    Ok(())
}

/// What the numbers below come from: the command, machine and method.
fn header(options: &Options, machine: &Machine, memtrace: &Path) -> String {
    format!(
        "{}\nmachine: {}\nmemtrace: {}\n{} rounds, variants interleaved. Seconds: each \
         workload's own timing of its measured part (after warm-up and attach), median; \
         ratio: to the untraced median; attach rows: from the tracer's start to its attached \
         line.\nFor memtrace: events seen (median), records lost (total), its own CPU time \
         (median, whole run with start-up) and peak RSS (VmHWM, max); kernel-side ns per \
         event from extra runs with BPF stats on (never the timed ones).\n",
        options.command_line(),
        machine.describe(),
        memtrace.display(),
        options.rounds()
    )
}

/// memtrace's RSS tracing 4 GiB resident, printed; adds what its checks
/// find to `problems`.
fn measure_resident(
    setting: &Setting,
    memops: &Path,
    problems: &mut Vec<String>,
) -> Result<Resident> {
    let (resident, found) = resident::measure(setting.memtrace, memops, setting.scratch)?;
    println!("{}\n", resident.describe());
    problems.extend(
        found
            .into_iter()
            .map(|problem| format!("4 GiB resident: {problem}")),
    );
    Ok(resident)
}

/// Runs every variant of `workload` `rounds` times, interleaved, plus a
/// run with BPF stats on of each variant that takes them, adding what the
/// correctness checks find to `problems`.
fn measure_workload(
    workload: &Workload,
    rounds: u32,
    setting: &Setting,
    problems: &mut Vec<String>,
) -> Result<Vec<Runs>> {
    let variants = workload.benchmark.variants();
    let mut all: Vec<Runs> = variants.iter().map(|&variant| Runs::new(variant)).collect();
    for round in 1..=rounds {
        for purpose in [Purpose::Timing, Purpose::KernelStats] {
            for runs in &mut all {
                if purpose == Purpose::KernelStats && !takes_kernel_stats(workload, runs.variant) {
                    continue;
                }
                let label = format!(
                    "{} round {round}/{rounds}: {}{}",
                    workload.benchmark.title(),
                    runs.variant.label(),
                    match purpose {
                        Purpose::Timing => "",
                        Purpose::KernelStats => " (BPF stats on)",
                    }
                );
                if purpose == Purpose::Timing && bpf_stats_enabled() {
                    eprintln!("  warning: BPF run-time stats are on (kernel.bpf_stats_enabled): {label} is slowed by them");
                }
                let measured = measure::once(workload, runs.variant, setting, round, purpose)
                    .with_context(|| format!("{label} failed"))?;
                let usage = measured.memtrace.as_ref().map(usage).transpose()?;
                eprintln!(
                    "  {label}: {}",
                    progress(
                        measured.outcome.seconds,
                        usage.as_ref(),
                        measured.memtrace.as_ref()
                    )
                );
                match purpose {
                    Purpose::Timing => {
                        runs.seconds.push(measured.outcome.seconds);
                        runs.usage.extend(usage);
                    }
                    Purpose::KernelStats => runs.kernel.extend(
                        measured
                            .memtrace
                            .as_ref()
                            .and_then(|traced| traced.kernel.clone()),
                    ),
                }
                if let Some(traced) = measured
                    .memtrace
                    .as_ref()
                    .filter(|_| runs.variant.counts_events())
                {
                    let found =
                        checks::memtrace_run(workload, &measured.outcome, &traced.snapshot)?;
                    problems.extend(
                        found
                            .into_iter()
                            .map(|problem| format!("{label}: {problem}")),
                    );
                }
            }
        }
    }
    Ok(all)
}

/// Whether `variant` of `workload` also runs with BPF stats on: attaching
/// has no events to measure.
fn takes_kernel_stats(workload: &Workload, variant: Variant) -> bool {
    variant.takes_kernel_stats() && workload.benchmark.method() != workload::Method::Attach
}

/// Whether the kernel is counting BPF programs' run time now (someone set
/// `kernel.bpf_stats_enabled`, or holds a `BPF_ENABLE_STATS` descriptor).
fn bpf_stats_enabled() -> bool {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|text| text.trim() != "0")
}

/// memtrace's figures for one run.
fn usage(traced: &Traced) -> Result<Usage> {
    let count = |pointer: &str| {
        traced
            .snapshot
            .pointer(pointer)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("memtrace's final snapshot has no {pointer}"))
    };
    Ok(Usage {
        seen: count("/records/seen")?,
        lost: count("/records/lost_total")?,
        cpu_seconds: traced.cpu.as_secs_f64(),
        peak_rss_bytes: traced.peak_rss_bytes,
    })
}

/// One run in a line, so a long benchmark shows it is moving.
fn progress(seconds: f64, usage: Option<&Usage>, traced: Option<&Traced>) -> String {
    let mut line = format!("{seconds:.3} s");
    if let Some(usage) = usage {
        line.push_str(&format!(
            " ({} events, {} lost, memtrace CPU {:.2} s)",
            thousands(usage.seen),
            usage.lost,
            usage.cpu_seconds
        ));
    }
    if let Some(kernel) = traced.and_then(|traced| traced.kernel.as_ref()) {
        let total = kernel.total();
        line.push_str(&format!(
            "; programs: {} runs, {} ns/run",
            thousands(total.runs),
            total
                .ns_per_run()
                .map_or("—".to_owned(), |ns| format!("{ns:.0}"))
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        crate::parse_task_options("bench", args)
    }

    #[test]
    fn rounds_default_to_five_or_two_when_quick() {
        assert_eq!(parse(&[]).unwrap().rounds(), 5);
        assert_eq!(parse(&["--quick"]).unwrap().rounds(), 2);
        assert_eq!(parse(&["--quick", "--rounds", "3"]).unwrap().rounds(), 3);
        assert!(parse(&["--rounds", "0"]).is_err());
    }

    #[test]
    fn only_picks_workloads_by_name() {
        assert_eq!(parse(&[]).unwrap().benchmarks(), Benchmark::ALL);
        assert_eq!(
            parse(&["--only", "mmap_churn_nofp"]).unwrap().benchmarks(),
            [Benchmark::MmapChurnNoFp]
        );
        let error = parse(&["--only", "storm"]).unwrap_err().to_string();
        assert!(
            error.contains("no workload storm; there are fault_storm, "),
            "{error}"
        );
    }

    #[test]
    fn the_command_line_is_given_back_for_the_report() {
        let options = parse(&["--rounds", "7", "--quick", "--json", "out.json"]).unwrap();
        assert_eq!(
            options.command_line(),
            "cargo xtask bench --quick --rounds 7 --json out.json"
        );
        let only = parse(&["--only", "neighbour", "--only", "attach"]).unwrap();
        assert_eq!(
            only.command_line(),
            "cargo xtask bench --only neighbour --only attach"
        );
        assert_eq!(Options::quick().command_line(), "cargo xtask bench --quick");
    }
}
