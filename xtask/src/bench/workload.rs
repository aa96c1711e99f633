//! The benchmark workloads (`tests/workloads/`): their command lines at each
//! scale, which variants and goals apply to them, and their result lines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use memtrace_tests::workloads::Workloads;
use serde_json::Value;

use super::{stats::Goal, variant::Variant};

/// One of the benchmark programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    FaultStorm,
    MadviseStorm,
    MmapChurn,
    GoChurn,
}

/// Every variant: the fault storm is where stack walking costs the most, so
/// it alone compares memtrace's `--stacks=all` with the bpftrace ustack one.
const FAULT_STORM_VARIANTS: &[Variant] = &[
    Variant::Untraced,
    Variant::Memtrace,
    Variant::MemtraceStacksAll,
    Variant::BpftraceStacks,
    Variant::BpftraceCount,
    Variant::PerfRecord,
];
const VARIANTS: &[Variant] = &[
    Variant::Untraced,
    Variant::Memtrace,
    Variant::BpftraceStacks,
    Variant::BpftraceCount,
    Variant::PerfRecord,
];

impl Benchmark {
    pub const ALL: [Self; 4] = [
        Self::FaultStorm,
        Self::MadviseStorm,
        Self::MmapChurn,
        Self::GoChurn,
    ];

    /// The program's name, which is also the `benchmark` of its result line.
    pub fn name(self) -> &'static str {
        match self {
            Self::FaultStorm => "fault_storm",
            Self::MadviseStorm => "madvise_storm",
            Self::MmapChurn => "mmap_churn",
            Self::GoChurn => "gochurn",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::FaultStorm => "page-fault storm",
            Self::MadviseStorm => "madvise storm",
            Self::MmapChurn => "mmap/munmap churn",
            Self::GoChurn => "Go allocation churn",
        }
    }

    /// Options and their values. The full fault storm faults 1 GiB into
    /// memory it reuses (first touches of fresh memory cost host-side faults
    /// that swing from run to run on a VM); `quick` shrinks every workload so
    /// the CI step stays within a few minutes. gochurn measures a fixed
    /// number of allocations, so its seconds compare like the others'.
    fn options(self, quick: bool) -> Vec<(&'static str, u64)> {
        match (self, quick) {
            (Self::FaultStorm, false) => vec![("--mib", 64), ("--rounds", 16), ("--warmup", 4)],
            (Self::FaultStorm, true) => vec![("--mib", 16), ("--rounds", 8), ("--warmup", 2)],
            (Self::MadviseStorm, false) => vec![("--mib", 64), ("--rounds", 16), ("--warmup", 2)],
            (Self::MadviseStorm, true) => vec![("--mib", 16), ("--rounds", 8), ("--warmup", 1)],
            (Self::MmapChurn, false) => vec![("--ops", 200_000), ("--warmup", 10_000)],
            (Self::MmapChurn, true) => vec![("--ops", 50_000), ("--warmup", 2_000)],
            (Self::GoChurn, false) => vec![("-iterations", 2_000_000), ("-warmup", 100_000)],
            (Self::GoChurn, true) => vec![("-iterations", 500_000), ("-warmup", 20_000)],
        }
    }

    /// The flag that makes the program print `ready` after its warm-up and
    /// wait for a line on stdin (Go's flag package takes one dash).
    fn wait_flag(self) -> &'static str {
        match self {
            Self::GoChurn => "-wait",
            _ => "--wait",
        }
    }

    /// Whether `line` is the program's announcement that it is warmed up and
    /// waiting: `ready` from the C programs, `{"event":"ready"}` from Go.
    pub fn is_ready(self, line: &str) -> bool {
        match self {
            Self::GoChurn => line.starts_with(r#"{"event":"ready""#),
            _ => line == "ready",
        }
    }

    pub fn variants(self) -> &'static [Variant] {
        match self {
            Self::FaultStorm => FAULT_STORM_VARIANTS,
            _ => VARIANTS,
        }
    }

    /// The overhead issue's goal for `variant` on this workload.
    pub fn goal(self, variant: Variant) -> Option<Goal> {
        match (self, variant) {
            (Self::GoChurn, Variant::Memtrace) => Some(Goal::RatioAtMost(1.05)),
            (_, Variant::Memtrace) => Some(Goal::RatioAtMost(1.25)),
            (_, Variant::MemtraceStacksAll) => Some(Goal::FasterThan(Variant::BpftraceStacks)),
            _ => None,
        }
    }

    /// The built program among the workloads.
    pub fn program(self, programs: &Workloads) -> &Path {
        match self {
            Self::FaultStorm => &programs.fault_storm,
            Self::MadviseStorm => &programs.madvise_storm,
            Self::MmapChurn => &programs.mmap_churn,
            Self::GoChurn => &programs.gochurn,
        }
    }
}

/// A benchmark at a given scale, ready to run.
#[derive(Debug)]
pub struct Workload {
    pub benchmark: Benchmark,
    pub program: PathBuf,
    options: Vec<(&'static str, u64)>,
}

impl Workload {
    /// `benchmark` at full scale, or small for `quick`; `program` is where
    /// it was built.
    pub fn new(benchmark: Benchmark, program: PathBuf, quick: bool) -> Self {
        Self {
            benchmark,
            program,
            options: benchmark.options(quick),
        }
    }

    /// The program's arguments, ending with its wait flag.
    pub fn args(&self) -> Vec<String> {
        self.options
            .iter()
            .flat_map(|(name, value)| [name.to_string(), value.to_string()])
            .chain([self.benchmark.wait_flag().to_owned()])
            .collect()
    }

    /// The value this workload passes for option `name`.
    pub fn option(&self, name: &str) -> Option<u64> {
        self.options
            .iter()
            .find(|(option, _)| *option == name)
            .map(|&(_, value)| value)
    }

    /// The command line as the tables show it: program name, not path.
    pub fn command_line(&self) -> String {
        std::iter::once(self.benchmark.name().to_owned())
            .chain(self.args())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a workload run reported in its last line.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Time of the measured part only: after warm-up and after the tracer
    /// attached.
    pub seconds: f64,
    /// Faults, madvise calls, map cycles or allocations in the measured part.
    pub operations: u64,
    /// The whole line, for workload-specific fields (`pages_per_round`).
    pub line: Value,
}

impl Outcome {
    /// A whole-number field of the result line.
    pub fn field(&self, name: &str) -> Result<u64> {
        self.line[name]
            .as_u64()
            .with_context(|| format!("no whole number `{name}` in {}", self.line))
    }
}

/// The result line of `benchmark` among a run's stdout `lines`: the last
/// JSON object naming it. Other lines (memtrace's report, `ready`) are
/// skipped.
pub fn parse_outcome(lines: &[String], benchmark: Benchmark) -> Result<Outcome> {
    let Some(line) = lines.iter().rev().find_map(|line| {
        let value: Value = serde_json::from_str(line).ok()?;
        (value["benchmark"] == benchmark.name()).then_some(value)
    }) else {
        bail!(
            "{} printed no result line ({{\"benchmark\":\"{}\",...}})",
            benchmark.name(),
            benchmark.name()
        );
    };
    let seconds = line["seconds"]
        .as_f64()
        .with_context(|| format!("no seconds in {line}"))?;
    let operations = line["operations"]
        .as_u64()
        .with_context(|| format!("no operations in {line}"))?;
    Ok(Outcome {
        seconds,
        operations,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(benchmark: Benchmark, quick: bool) -> Workload {
        Workload::new(benchmark, Path::new("/w").join(benchmark.name()), quick)
    }

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn the_full_fault_storm_faults_a_reused_gibibyte() {
        let storm = workload(Benchmark::FaultStorm, false);
        assert_eq!(
            storm.command_line(),
            "fault_storm --mib 64 --rounds 16 --warmup 4 --wait"
        );
        assert_eq!(
            storm.option("--mib").unwrap() * storm.option("--rounds").unwrap(),
            1024
        );
        assert_eq!(storm.option("--chunk-kib"), None);
    }

    #[test]
    fn quick_runs_are_smaller_and_go_takes_single_dash_flags() {
        assert_eq!(
            workload(Benchmark::FaultStorm, true).command_line(),
            "fault_storm --mib 16 --rounds 8 --warmup 2 --wait"
        );
        assert_eq!(
            workload(Benchmark::GoChurn, true).args(),
            ["-iterations", "500000", "-warmup", "20000", "-wait"]
        );
        for benchmark in Benchmark::ALL {
            let (full, quick) = (workload(benchmark, false), workload(benchmark, true));
            let size = |w: &Workload| w.options.iter().map(|(_, v)| v).product::<u64>();
            assert!(size(&quick) < size(&full), "{benchmark:?}");
        }
    }

    #[test]
    fn ready_lines_of_c_and_go() {
        assert!(Benchmark::FaultStorm.is_ready("ready"));
        assert!(!Benchmark::FaultStorm.is_ready("memtrace: ready"));
        assert!(Benchmark::GoChurn.is_ready(r#"{"event":"ready"}"#));
        assert!(!Benchmark::GoChurn.is_ready("ready"));
    }

    #[test]
    fn goals_from_the_issue() {
        assert_eq!(
            Benchmark::FaultStorm.goal(Variant::Memtrace),
            Some(Goal::RatioAtMost(1.25))
        );
        assert_eq!(
            Benchmark::MmapChurn.goal(Variant::Memtrace),
            Some(Goal::RatioAtMost(1.25))
        );
        assert_eq!(
            Benchmark::GoChurn.goal(Variant::Memtrace),
            Some(Goal::RatioAtMost(1.05))
        );
        assert_eq!(
            Benchmark::FaultStorm.goal(Variant::MemtraceStacksAll),
            Some(Goal::FasterThan(Variant::BpftraceStacks))
        );
        assert_eq!(Benchmark::FaultStorm.goal(Variant::PerfRecord), None);
        assert_eq!(Benchmark::FaultStorm.goal(Variant::Untraced), None);
    }

    #[test]
    fn only_the_fault_storm_runs_stacks_all() {
        assert!(Benchmark::FaultStorm
            .variants()
            .contains(&Variant::MemtraceStacksAll));
        assert!(!Benchmark::GoChurn
            .variants()
            .contains(&Variant::MemtraceStacksAll));
        for benchmark in Benchmark::ALL {
            assert_eq!(
                benchmark.variants()[0],
                Variant::Untraced,
                "the baseline runs first"
            );
        }
    }

    #[test]
    fn outcome_is_the_last_result_line_among_other_output() {
        let out = lines(
            "ready\n\
             {\"benchmark\":\"fault_storm\",\"seconds\":0.535375579,\"operations\":262144,\"rounds\":16,\"mib\":64,\"pages_per_round\":16384}\n\
             ── memtrace · pid 1 (fault_storm) · 1.1s · exited\n\
             {\"schema\":\"memtrace.snapshot\"}",
        );
        let outcome = parse_outcome(&out, Benchmark::FaultStorm).unwrap();
        assert_eq!(outcome.seconds, 0.535375579);
        assert_eq!(outcome.operations, 262144);
        assert_eq!(outcome.field("pages_per_round").unwrap(), 16384);
        assert!(outcome.field("chunk_kib").is_err());
    }

    #[test]
    fn go_result_lines_parse_too() {
        let out = lines(
            "{\"event\":\"ready\"}\n\
             {\"benchmark\":\"gochurn\",\"seconds\":2.0,\"operations\":1351680,\"bytes\":10022514880,\"num_gc\":1141}",
        );
        let outcome = parse_outcome(&out, Benchmark::GoChurn).unwrap();
        assert_eq!((outcome.seconds, outcome.operations), (2.0, 1351680));
    }

    #[test]
    fn missing_or_incomplete_result_lines_are_errors() {
        let other = lines(r#"{"benchmark":"mmap_churn","seconds":1.0,"operations":5}"#);
        assert!(parse_outcome(&other, Benchmark::FaultStorm)
            .unwrap_err()
            .to_string()
            .contains("no result line"));
        let partial = lines(r#"{"benchmark":"mmap_churn","seconds":1.0}"#);
        assert!(parse_outcome(&partial, Benchmark::MmapChurn).is_err());
        assert!(parse_outcome(&[], Benchmark::MmapChurn).is_err());
    }
}
