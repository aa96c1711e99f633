//! A moment of the trace: the model's totals beside the kernel's, what
//! happened since attaching, and what holds the memory. Everything the live
//! view, the JSON output and the verdict show comes from here.

use std::time::Duration;

use memtrace_common::StackSource;

use super::{
    history::{Point, Trend},
    mappings::MappingGroup,
    state::TargetState,
    whole::Whole,
};
use crate::{
    attribution::{CallRow, FaultRow, GrowthRow, RangeRow, StackCoverage, StackRow},
    intake::OomKill,
    model::{reconcile::Outcome, Activity, Totals},
    proc::{CgroupMemory, KernelTotals},
    runtime::RuntimeInfo,
};

/// How current [`Snapshot::kernel`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelReading {
    /// Read while the process runs: at this snapshot, or at the last
    /// interval.
    Current,
    /// The last reading before the process exited, kept so the final
    /// report still holds the model against the kernel.
    LastBeforeExit,
}

impl KernelReading {
    pub fn name(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::LastBeforeExit => "last_before_exit",
        }
    }
}

/// Records the kernel side could not deliver, or the agent could not read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lost {
    pub faults: u64,
    pub syscalls: u64,
    pub lifecycle: u64,
    pub reclaim: u64,
    /// Stacks walked but not stored (the stack map was full).
    pub stacks: u64,
    /// Stack samples the ring buffer had no room for: their events have no
    /// stack.
    pub stack_samples: u64,
    /// Stack samples not taken because the ring buffer was half full (frame
    /// pointers walked instead).
    pub stack_samples_skipped: u64,
    /// Processes forked by a target, or found in the traced cgroup, that
    /// the kernel's target map had no room for: they are not traced.
    pub targets: u64,
    pub undecodable: u64,
    /// The kernel side's counters could not be read: the figures above are
    /// the last that could, and more may have been lost unseen.
    pub counters_unreadable: bool,
}

impl Lost {
    /// Records lost: every one of these leaves a gap in the model.
    pub fn records(&self) -> u64 {
        self.faults + self.syscalls + self.lifecycle + self.reclaim + self.undecodable
    }

    /// Whether the model may have missed events.
    pub fn any(&self) -> bool {
        self.records() > 0 || self.counters_unreadable
    }
}

/// `process_madvise` calls whose target memtrace could not resolve: the
/// pidfd was closed (or reused) before it looked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unresolved {
    pub calls: u64,
    /// Bytes the kernel said it advised.
    pub bytes: u64,
}

/// The program's own heap profile beside the kernel's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoHeapSide {
    /// The URL or file it came from.
    pub source: String,
    /// Live heap bytes, as the profile states them (as of the last GC, and
    /// sampled).
    pub inuse_space: u64,
    /// Bytes allocated since the program started.
    pub alloc_space: u64,
    /// The profile's largest holders, with what the kernel saw under them.
    pub functions: Vec<FunctionMatch>,
}

/// A function the heap profile says holds memory, and the resident bytes
/// the kernel saw faulted in by stacks through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionMatch {
    pub function: String,
    pub pprof_inuse: u64,
    pub kernel_resident: u64,
}

/// What memtrace itself takes, to trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// memtrace's own resident memory.
    pub rss: u64,
    /// Unwind tables read from the traced programs' files.
    pub unwind_tables: u64,
    /// Distinct stacks held.
    pub stacks: u64,
    /// Kernel memory of memtrace's maps (ring buffer, stacks, scratch).
    pub kernel_maps: u64,
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub seq: u64,
    pub is_final: bool,
    pub elapsed: Duration,
    pub unix_ms: u64,
    /// The process's PID (0 for a cgroup's whole, see `whole`).
    pub pid: u32,
    /// Its PID in its own PID namespace (a container's), when that differs.
    pub pid_in_namespace: Option<u32>,
    /// The command, or for a cgroup's whole the cgroup's label.
    pub command: String,
    /// The program file, as the kernel shows it (`/proc/PID/exe`).
    pub executable: Option<String>,
    pub state: TargetState,
    /// The kernel's figures, as last read (`None` if never read).
    pub kernel: Option<KernelTotals>,
    pub kernel_reading: KernelReading,
    pub model: Totals,
    pub reconcile: Outcome,
    pub activity: Activity,
    pub lost: Lost,
    /// Records were lost: the figures may be off until /proc catches up.
    pub approximate: bool,
    pub records: u64,
    /// Stacks the kernel side walked for faults, over every traced process.
    pub stack_walks: u64,
    pub process_madvise_unresolved: Unresolved,
    pub top_ranges: Vec<RangeRow>,
    /// The largest mappings, alike ones counted once (for the text).
    pub mapping_groups: Vec<MappingGroup>,
    /// Anonymous bytes still in use that were resident before memtrace
    /// attached (file pages before attach count as file-backed).
    pub anon_before_attach: u64,
    pub top_stacks: Vec<StackRow>,
    pub top_calls: Vec<CallRow>,
    pub top_faults: Vec<FaultRow>,
    /// Stacks that grew the most since `growth_from`.
    pub growth: Vec<GrowthRow>,
    pub growth_from: GrowthFrom,
    /// The same growth over all stacks, by what is responsible (the
    /// program's own function, or goroutine stacks).
    pub growers: Vec<(String, i64)>,
    /// In-use bytes the program faulted in while serving heap-profile
    /// requests (memtrace's own `--go-pprof` fetches among them); the
    /// trend leaves them out.
    pub profile_serving: u64,
    pub trend: Trend,
    /// In-use RSS over the last intervals, as a line of bars.
    pub sparkline: String,
    /// Intervals still needed before the trend is known (0 once it is).
    pub trend_needs: usize,
    /// The last intervals' numbers, oldest first, for the screen's chart.
    pub recent: Vec<Point>,
    pub cgroup: Option<CgroupMemory>,
    /// The kernel's RSS of the process when the OOM killer chose it.
    pub oom_kill: Option<OomKill>,
    /// What the program runs on (Go, its settings, its allocator).
    pub runtime: Option<RuntimeInfo>,
    /// Bytes of address space mapped (the virtual size the model knows).
    pub address_space: u64,
    pub go_heap: Option<GoHeapSide>,
    /// RSS at the previous snapshot, for the change.
    pub previous_rss: Option<u64>,
    /// How much of what is attributed stands under whole stacks.
    pub stack_coverage: StackCoverage,
    pub footprint: Footprint,
    /// How the kernel side took the process's stacks.
    pub stack_source: StackSource,
    /// For a cgroup traced as a whole: its processes and its charge. The
    /// figures above are then its processes' added up.
    pub whole: Option<Box<Whole>>,
}

impl Snapshot {
    /// What the snapshot is of, in words: `pid 42 (server)`, or
    /// `container web (3 processes)`.
    pub fn subject(&self) -> String {
        match &self.whole {
            Some(whole) => {
                let kind = if whole.subject.container.is_some() {
                    "container"
                } else {
                    "cgroup"
                };
                let alive = whole
                    .members
                    .iter()
                    .filter(|member| member.state == TargetState::Running)
                    .count();
                let plural = if alive == 1 { "" } else { "es" };
                format!("{kind} {} ({alive} process{plural})", whole.subject.label)
            }
            None => match self.pid_in_namespace {
                Some(inner) => format!(
                    "pid {} ({}; pid {inner} in its container)",
                    self.pid, self.command
                ),
                None => format!("pid {} ({})", self.pid, self.command),
            },
        }
    }

    /// What names its files: the PID, or the cgroup's label made safe for
    /// a file name.
    pub fn file_stem(&self) -> String {
        match &self.whole {
            Some(whole) => whole
                .subject
                .label
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
            None => self.pid.to_string(),
        }
    }

    /// Resident bytes memtrace cannot say where they came from: found in
    /// /proc with no event, plus what still differs from the kernel over
    /// quiet mappings (per mapping, so differences never cancel). Mappings
    /// that changed while /proc was read are in `reconcile.in_flight`.
    pub fn unexplained(&self) -> u64 {
        self.model.by_cause.unobserved + self.reconcile.residual
    }

    /// RSS as the kernel counts it when known, as the model does otherwise.
    pub fn rss(&self) -> u64 {
        self.kernel.map_or(self.model.rss, |kernel| kernel.rss)
    }

    /// Anonymous, file and shared-memory resident bytes: the kernel's
    /// when known, the model's otherwise (as [`Self::rss`]).
    pub fn resident_kinds(&self) -> (u64, u64, u64) {
        match self.kernel {
            Some(kernel) => (kernel.anon, kernel.file, kernel.shmem),
            None => (self.model.anon, self.model.file, self.model.shmem),
        }
    }

    pub fn lazyfree(&self) -> u64 {
        self.kernel
            .map_or(self.model.lazyfree, |kernel| kernel.lazyfree)
    }

    /// This moment's numbers, for the history.
    pub fn point(&self) -> Point {
        let (anon, file, shmem, swap) = match self.kernel {
            Some(kernel) => (kernel.anon, kernel.file, kernel.shmem, kernel.swap),
            None => (self.model.anon, self.model.file, self.model.shmem, 0),
        };
        Point {
            elapsed: self.elapsed,
            unix_ms: self.unix_ms,
            rss: self.rss(),
            anon,
            file,
            shmem,
            swap,
            lazyfree: self.lazyfree(),
            unexplained: self.unexplained(),
            go_heap_inuse: None,
            profile_serving: self.profile_serving,
            cgroup_current: self.cgroup.as_ref().map(|cgroup| cgroup.current),
        }
    }
}

/// What growth is measured from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GrowthFrom {
    /// The first interval of the trace.
    #[default]
    FirstInterval,
    /// The first interval at or after a moment asked for (`report
    /// --from`): its time.
    Moment(Duration),
    /// What a process of another capture held at its end (`report
    /// --diff-base`): that capture.
    Capture(String),
}
