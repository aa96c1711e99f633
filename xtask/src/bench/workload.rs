//! The benchmark workloads (`tests/workloads/`): their command lines at each
//! scale, which variants and goals apply to them, and their result lines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use memtrace_tests::workloads::Workloads;
use serde_json::Value;

use super::{
    stats::Goal,
    variant::Variant::{
        self, BpftraceCount, BpftraceStacks, Floor, Memtrace, MemtracePerCall, MemtraceRecord,
        MemtraceStacksAll, PerfDwarf, PerfRecord, Untraced,
    },
};

/// How long the idle process the neighbour runs beside would sleep; it is
/// killed once the neighbour is done.
pub const IDLE_SECONDS: u64 = 86_400;

/// One row of the benchmark: a program, at a scale, measured one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    FaultStorm,
    /// The fault storm's source built without frame pointers.
    FaultStormNoFp,
    MadviseStorm,
    MmapChurn,
    /// The mmap churn's source built without frame pointers.
    MmapChurnNoFp,
    GoChurn,
    /// A syscall-bound process nobody traces, beside a traced idle one.
    Neighbour,
    /// Attaching to a process with about 100 mappings.
    Attach,
    /// Attaching to a process with about 500 mappings.
    AttachManyLibs,
}

/// How a benchmark is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// memtrace starts the workload (and sees it from its first
    /// instruction); peers attach after its warm-up; the workload times its
    /// measured part.
    Timed,
    /// Every tracer attaches to an idle `sleep`; the workload, untraced,
    /// runs beside it and times itself: what the rest of the host pays.
    Neighbour,
    /// The workload waits; each tracer attaches to it, timed by the harness
    /// from the tracer's start until it says it is attached.
    Attach,
}

/// The fault storm is where stack walking costs the most, so it alone
/// compares memtrace's `--stacks=all` with the bpftrace ustack one; and
/// where records come fastest, so it measures what recording adds.
const FAULT_STORM_VARIANTS: &[Variant] = &[
    Untraced,
    Floor,
    Memtrace,
    MemtraceRecord,
    MemtraceStacksAll,
    BpftraceStacks,
    BpftraceCount,
    PerfRecord,
];
/// Where syscalls are most of the work, both syscall hooks.
const SYSCALL_VARIANTS: &[Variant] = &[
    Untraced,
    Floor,
    Memtrace,
    MemtracePerCall,
    BpftraceStacks,
    BpftraceCount,
    PerfRecord,
];
/// Code without frame pointers, against the peer that can unwind it.
const NO_FRAME_POINTER_VARIANTS: &[Variant] = &[Untraced, Floor, Memtrace, PerfDwarf];
const GO_VARIANTS: &[Variant] = &[
    Untraced,
    Floor,
    Memtrace,
    BpftraceStacks,
    BpftraceCount,
    PerfRecord,
];
/// Attaching has no untraced baseline.
const ATTACH_VARIANTS: &[Variant] = &[
    Floor,
    Memtrace,
    MemtracePerCall,
    BpftraceStacks,
    BpftraceCount,
    PerfRecord,
];

impl Benchmark {
    pub const ALL: [Self; 9] = [
        Self::FaultStorm,
        Self::FaultStormNoFp,
        Self::MadviseStorm,
        Self::MmapChurn,
        Self::MmapChurnNoFp,
        Self::GoChurn,
        Self::Neighbour,
        Self::Attach,
        Self::AttachManyLibs,
    ];

    /// The row's name in JSON and file names, and for `--only`.
    pub fn name(self) -> &'static str {
        match self {
            Self::FaultStorm => "fault_storm",
            Self::FaultStormNoFp => "fault_storm_nofp",
            Self::MadviseStorm => "madvise_storm",
            Self::MmapChurn => "mmap_churn",
            Self::MmapChurnNoFp => "mmap_churn_nofp",
            Self::GoChurn => "gochurn",
            Self::Neighbour => "neighbour",
            Self::Attach => "attach",
            Self::AttachManyLibs => "attach_many_libs",
        }
    }

    /// The `benchmark` of the program's result line.
    pub fn result_name(self) -> &'static str {
        match self {
            Self::FaultStorm | Self::FaultStormNoFp => "fault_storm",
            Self::MmapChurn | Self::MmapChurnNoFp => "mmap_churn",
            Self::Neighbour => "syscall_storm",
            Self::Attach | Self::AttachManyLibs => "many_libs",
            other => other.name(),
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Self::FaultStorm => "page-fault storm",
            Self::FaultStormNoFp => "page-fault storm, no frame pointers",
            Self::MadviseStorm => "madvise storm",
            Self::MmapChurn => "mmap/munmap churn",
            Self::MmapChurnNoFp => "mmap/munmap churn, no frame pointers",
            Self::GoChurn => "Go allocation churn",
            Self::Neighbour => "untraced neighbour, CPU s (tracer on an idle sleep)",
            Self::Attach => "attach, 15 libraries (about 100 mappings)",
            Self::AttachManyLibs => "attach, 100 libraries (about 500 mappings)",
        }
    }

    /// The field of the result line the row compares: the neighbour's CPU
    /// time, since a tracer elsewhere costs it CPU in its own syscalls, and
    /// its wall time also counts waiting for a CPU other programs hold (on
    /// a small shared machine, most of the spread); the others' wall time.
    pub fn seconds_field(self) -> &'static str {
        match self {
            Self::Neighbour => "cpu_seconds",
            _ => "seconds",
        }
    }

    pub fn method(self) -> Method {
        match self {
            Self::Neighbour => Method::Neighbour,
            Self::Attach | Self::AttachManyLibs => Method::Attach,
            _ => Method::Timed,
        }
    }

    /// Options and their values. The full fault storm faults 1 GiB into
    /// memory it reuses (first touches of fresh memory cost host-side faults
    /// that swing from run to run on a VM); `quick` shrinks every timed
    /// workload so the CI step stays within a few minutes. gochurn measures
    /// a fixed number of allocations, so its seconds compare like the
    /// others'. The neighbour makes as many calls as `dd if=/dev/zero
    /// of=/dev/null bs=1 count=3000000`.
    fn options(self, quick: bool) -> Vec<(&'static str, u64)> {
        match (self, quick) {
            (Self::FaultStorm | Self::FaultStormNoFp, false) => {
                vec![("--mib", 64), ("--rounds", 16), ("--warmup", 4)]
            }
            (Self::FaultStorm | Self::FaultStormNoFp, true) => {
                vec![("--mib", 16), ("--rounds", 8), ("--warmup", 2)]
            }
            (Self::MadviseStorm, false) => vec![("--mib", 64), ("--rounds", 16), ("--warmup", 2)],
            (Self::MadviseStorm, true) => vec![("--mib", 16), ("--rounds", 8), ("--warmup", 1)],
            (Self::MmapChurn | Self::MmapChurnNoFp, false) => {
                vec![("--ops", 200_000), ("--warmup", 10_000)]
            }
            (Self::MmapChurn | Self::MmapChurnNoFp, true) => {
                vec![("--ops", 50_000), ("--warmup", 2_000)]
            }
            (Self::GoChurn, false) => vec![("-iterations", 2_000_000), ("-warmup", 100_000)],
            (Self::GoChurn, true) => vec![("-iterations", 500_000), ("-warmup", 20_000)],
            (Self::Neighbour, false) => vec![("--ops", 3_000_000), ("--warmup", 100_000)],
            (Self::Neighbour, true) => vec![("--ops", 300_000), ("--warmup", 10_000)],
            (Self::Attach, _) => vec![("--libs", 15)],
            (Self::AttachManyLibs, _) => vec![("--libs", 100)],
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
            Self::FaultStormNoFp | Self::MmapChurnNoFp => NO_FRAME_POINTER_VARIANTS,
            Self::MadviseStorm | Self::MmapChurn | Self::Neighbour => SYSCALL_VARIANTS,
            Self::GoChurn => GO_VARIANTS,
            Self::Attach | Self::AttachManyLibs => ATTACH_VARIANTS,
        }
    }

    /// The performance issues' goals for `variant` on this row.
    pub fn goals(self, variant: Variant) -> Vec<Goal> {
        match (self, variant) {
            (Self::FaultStorm | Self::Neighbour, Memtrace) => {
                let mut goals = vec![Goal::RatioAtMost(1.10)];
                if self == Self::Neighbour {
                    goals.push(Goal::NoSlowerThan(BpftraceCount));
                }
                goals
            }
            (Self::FaultStorm, MemtraceStacksAll) => vec![Goal::FasterThan(BpftraceStacks)],
            // Recording must not cost much more than tracing live.
            (Self::FaultStorm, MemtraceRecord) => vec![Goal::TimesAtMost(Memtrace, 1.05)],
            (Self::MadviseStorm | Self::MmapChurn, Memtrace) => vec![Goal::RatioAtMost(1.15)],
            (Self::FaultStormNoFp | Self::MmapChurnNoFp, Memtrace) => {
                vec![Goal::RatioAtMost(1.35), Goal::FasterThan(PerfDwarf)]
            }
            (Self::GoChurn, Memtrace) => vec![Goal::RatioAtMost(1.05)],
            (Self::Attach, Memtrace) => vec![Goal::SecondsAtMost(0.25)],
            _ => Vec::new(),
        }
    }

    /// The built program among the workloads.
    pub fn program(self, programs: &Workloads) -> &Path {
        match self {
            Self::FaultStorm => &programs.fault_storm,
            Self::FaultStormNoFp => &programs.fault_storm_nofp,
            Self::MadviseStorm => &programs.madvise_storm,
            Self::MmapChurn => &programs.mmap_churn,
            Self::MmapChurnNoFp => &programs.mmap_churn_nofp,
            Self::GoChurn => &programs.gochurn,
            Self::Neighbour => &programs.syscall_storm,
            Self::Attach | Self::AttachManyLibs => &programs.many_libs,
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

    /// What the tracers attach to, as the tables say it: `None` when
    /// memtrace starts the workload itself.
    pub fn attached_to(&self) -> Option<String> {
        match self.benchmark.method() {
            Method::Timed => None,
            Method::Neighbour => Some(format!("sleep {IDLE_SECONDS}")),
            Method::Attach => Some(self.command_line()),
        }
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
        let name = self.program.file_name().map_or_else(
            || self.benchmark.name().into(),
            |name| name.to_string_lossy(),
        );
        std::iter::once(name.into_owned())
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
    let name = benchmark.result_name();
    let Some(line) = lines.iter().rev().find_map(|line| {
        let value: Value = serde_json::from_str(line).ok()?;
        (value["benchmark"] == name).then_some(value)
    }) else {
        bail!("{name} printed no result line ({{\"benchmark\":\"{name}\",...}})");
    };
    let field = benchmark.seconds_field();
    let seconds = line[field]
        .as_f64()
        .with_context(|| format!("no {field} in {line}"))?;
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

    /// `benchmark` as built in `/w`: under its program's name.
    fn workload(benchmark: Benchmark, quick: bool) -> Workload {
        let program = match benchmark.method() {
            Method::Timed => benchmark.name(),
            _ => benchmark.result_name(),
        };
        Workload::new(benchmark, Path::new("/w").join(program), quick)
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
            if benchmark.method() == Method::Attach {
                assert_eq!(
                    size(&quick),
                    size(&full),
                    "{benchmark:?}: attaching is quick"
                );
            } else {
                assert!(size(&quick) < size(&full), "{benchmark:?}");
            }
        }
    }

    #[test]
    fn no_frame_pointer_rows_run_their_twins_work_built_otherwise() {
        for (twin, nofp) in [
            (Benchmark::FaultStorm, Benchmark::FaultStormNoFp),
            (Benchmark::MmapChurn, Benchmark::MmapChurnNoFp),
        ] {
            let (a, b) = (workload(twin, false), workload(nofp, false));
            assert_eq!(a.args(), b.args());
            assert_eq!(twin.result_name(), nofp.result_name());
            assert_ne!(twin.name(), nofp.name());
            assert_eq!(
                b.command_line(),
                format!("{}_nofp {}", twin.name(), a.args().join(" "))
            );
        }
    }

    #[test]
    fn the_neighbour_makes_dds_six_million_calls_beside_an_idle_sleep() {
        let neighbour = workload(Benchmark::Neighbour, false);
        assert_eq!(neighbour.option("--ops"), Some(3_000_000));
        assert_eq!(neighbour.attached_to().unwrap(), "sleep 86400");
        assert_eq!(Benchmark::Neighbour.result_name(), "syscall_storm");
        let attach = workload(Benchmark::Attach, false);
        assert_eq!(
            attach.attached_to().unwrap(),
            "many_libs --libs 15 --wait",
            "tracers attach to the workload itself"
        );
        assert_eq!(workload(Benchmark::MmapChurn, false).attached_to(), None);
    }

    #[test]
    fn ready_lines_of_c_and_go() {
        assert!(Benchmark::FaultStorm.is_ready("ready"));
        assert!(!Benchmark::FaultStorm.is_ready("memtrace: ready"));
        assert!(Benchmark::GoChurn.is_ready(r#"{"event":"ready"}"#));
        assert!(!Benchmark::GoChurn.is_ready("ready"));
    }

    #[test]
    fn goals_from_the_issues() {
        let goals = [
            (
                Benchmark::FaultStorm,
                Memtrace,
                vec![Goal::RatioAtMost(1.10)],
            ),
            (
                Benchmark::MadviseStorm,
                Memtrace,
                vec![Goal::RatioAtMost(1.15)],
            ),
            (
                Benchmark::MmapChurn,
                Memtrace,
                vec![Goal::RatioAtMost(1.15)],
            ),
            (
                Benchmark::MmapChurnNoFp,
                Memtrace,
                vec![Goal::RatioAtMost(1.35), Goal::FasterThan(PerfDwarf)],
            ),
            (
                Benchmark::Neighbour,
                Memtrace,
                vec![Goal::RatioAtMost(1.10), Goal::NoSlowerThan(BpftraceCount)],
            ),
            (Benchmark::GoChurn, Memtrace, vec![Goal::RatioAtMost(1.05)]),
            (Benchmark::Attach, Memtrace, vec![Goal::SecondsAtMost(0.25)]),
            (
                Benchmark::FaultStorm,
                MemtraceStacksAll,
                vec![Goal::FasterThan(BpftraceStacks)],
            ),
            (Benchmark::FaultStorm, PerfRecord, vec![]),
            (Benchmark::Neighbour, MemtracePerCall, vec![]),
            (Benchmark::AttachManyLibs, Memtrace, vec![]),
        ];
        for (benchmark, variant, expected) in goals {
            assert_eq!(
                benchmark.goals(variant),
                expected,
                "{benchmark:?} {variant:?}"
            );
        }
    }

    #[test]
    fn every_goal_names_a_variant_the_row_runs() {
        for benchmark in Benchmark::ALL {
            for &variant in benchmark.variants() {
                for goal in benchmark.goals(variant) {
                    if let Goal::FasterThan(other) | Goal::NoSlowerThan(other) = goal {
                        assert!(benchmark.variants().contains(&other), "{benchmark:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn rows_run_their_baseline_first_and_memtrace_always() {
        assert!(Benchmark::FaultStorm
            .variants()
            .contains(&MemtraceStacksAll));
        assert!(!Benchmark::GoChurn.variants().contains(&MemtraceStacksAll));
        for benchmark in Benchmark::ALL {
            let variants = benchmark.variants();
            assert!(variants.contains(&Memtrace), "{benchmark:?}");
            assert!(variants.contains(&Floor), "{benchmark:?}");
            match benchmark.method() {
                Method::Attach => assert!(!variants.contains(&Untraced), "{benchmark:?}"),
                _ => assert_eq!(variants[0], Untraced, "the baseline runs first"),
            }
        }
        for benchmark in [
            Benchmark::Neighbour,
            Benchmark::MadviseStorm,
            Benchmark::MmapChurn,
        ] {
            assert!(benchmark.variants().contains(&MemtracePerCall));
        }
        for benchmark in [Benchmark::FaultStormNoFp, Benchmark::MmapChurnNoFp] {
            assert!(benchmark.variants().contains(&PerfDwarf));
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
    fn the_neighbour_is_measured_by_its_cpu_time() {
        let out = lines(
            r#"{"benchmark":"syscall_storm","seconds":0.9,"operations":6000000,"cpu_seconds":0.6}"#,
        );
        assert_eq!(
            parse_outcome(&out, Benchmark::Neighbour).unwrap().seconds,
            0.6
        );
        let wall_only = lines(r#"{"benchmark":"syscall_storm","seconds":0.9,"operations":6}"#);
        let error = parse_outcome(&wall_only, Benchmark::Neighbour).unwrap_err();
        assert!(error.to_string().contains("no cpu_seconds"), "{error}");
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
