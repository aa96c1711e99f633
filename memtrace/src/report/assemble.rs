//! Putting a snapshot together: the facts the session gathered about one
//! process at one moment, the model's attribution with its stacks named,
//! and what earlier snapshots of the same process left behind (the history
//! and the baseline that growth is measured from).

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_common::StackSource;

use super::{
    history::{History, Point, Trend},
    mappings,
    snapshot::{
        Footprint, FunctionMatch, GoHeapSide, GrowthFrom, KernelReading, Lost, Snapshot, Unresolved,
    },
    state::TargetState,
};
use crate::{
    attribution::{self, Held, Holder, NamedBaseline},
    gopprof::HeapProfile,
    intake::OomKill,
    model::{reconcile::Outcome, AddressSpace, Cause, PageKind, PageUse},
    proc::{CgroupMemory, KernelTotals},
    runtime::RuntimeInfo,
    symbolize::Namer,
};

/// Rows in the top-N lists.
pub const TOP_ROWS: usize = 10;
/// Intervals shown in the live view's chart.
const SPARKLINE_WIDTH: usize = 40;
/// Intervals kept for the screen's chart (wider than any terminal).
const RECENT_POINTS: usize = 512;
/// Mappings looked at for grouping alike ones.
const GROUPED_RANGES: usize = 512;
/// Intervals looked ahead for when the trend will be known.
const TREND_LOOKAHEAD: usize = 600;

/// What the session knows about a process at the moment of a snapshot,
/// besides its model (which the namer holds).
pub struct Facts<'a> {
    pub is_final: bool,
    pub elapsed: Duration,
    pub pid: u32,
    pub pid_in_namespace: Option<u32>,
    pub command: &'a str,
    pub executable: Option<&'a str>,
    pub state: TargetState,
    /// The kernel's figures as last read (the last before it exited, once
    /// the process is gone).
    pub kernel: Option<KernelTotals>,
    pub reconcile: Outcome,
    pub lost: Lost,
    pub records: u64,
    pub stack_walks: u64,
    pub process_madvise_unresolved: Unresolved,
    pub cgroup: Option<CgroupMemory>,
    pub oom_kill: Option<OomKill>,
    pub runtime: Option<RuntimeInfo>,
    /// The program's own heap profile, and where it came from.
    pub heap: Option<(String, &'a HeapProfile)>,
    pub footprint: Footprint,
    pub stack_source: StackSource,
}

/// What growth is measured from.
#[derive(Debug)]
enum Baseline {
    /// What the process held at a snapshot of this trace.
    Here {
        at: Duration,
        held: HashMap<Holder, Held>,
    },
    /// What a process of another capture held at its end, by name.
    Capture { label: String, held: NamedBaseline },
}

/// What a process's earlier snapshots leave for its later ones.
#[derive(Debug, Default)]
pub struct Past {
    seq: u64,
    history: History,
    /// What growth is measured from: the first snapshot, the first after
    /// the moment asked for, or another capture.
    baseline: Option<Baseline>,
    /// The baseline is at a moment asked for, not at the first snapshot.
    baseline_asked: bool,
    previous_rss: Option<u64>,
}

impl Past {
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Measures growth from the next snapshot on, instead of from the
    /// first (`report --from`).
    pub fn measure_growth_from_next(&mut self) {
        self.baseline = None;
        self.baseline_asked = true;
    }

    /// Measures growth from what another capture's process held at its end,
    /// by name (`report --diff-base`); `label` names that capture.
    pub fn measure_growth_from(&mut self, label: String, held: NamedBaseline) {
        self.baseline = Some(Baseline::Capture { label, held });
    }

    /// The snapshot of the process `namer` names, at the moment `facts`
    /// describe. Interval snapshots are remembered in the history.
    pub fn snapshot(&mut self, facts: Facts<'_>, namer: &mut Namer<'_>) -> Snapshot {
        self.seq += 1;
        let model = namer.model;
        let top_stacks = attribution::top_stacks(namer, TOP_ROWS);
        let top_calls = attribution::top_calls(namer, TOP_ROWS);
        let top_faults = attribution::top_faults(namer, TOP_ROWS);
        let stack_coverage = attribution::coverage(namer);
        let go_heap = facts
            .heap
            .map(|(source, profile)| go_heap_side(source, profile, namer));
        let mut growth = match &self.baseline {
            Some(Baseline::Here { held, .. }) => attribution::growth(namer, held),
            Some(Baseline::Capture { held, .. }) => attribution::growth_from_names(namer, held),
            None => Vec::new(),
        };
        let profile_serving = attribution::in_use_serving_profiles(namer);
        let mut growers = attribution::growth_by_responsible(&growth);
        growers.truncate(TOP_ROWS);
        growth.truncate(TOP_ROWS);
        if self.baseline.is_none() {
            self.baseline = Some(Baseline::Here {
                at: facts.elapsed,
                held: attribution::resident_by_holder(model),
            });
        }
        let growth_from = match &self.baseline {
            Some(Baseline::Here { at, .. }) if self.baseline_asked => GrowthFrom::Moment(*at),
            Some(Baseline::Capture { label, .. }) => GrowthFrom::Capture(label.clone()),
            _ => GrowthFrom::FirstInterval,
        };
        let ranges = attribution::top_ranges(model, GROUPED_RANGES);
        let mut snapshot = Snapshot {
            seq: self.seq,
            is_final: facts.is_final,
            elapsed: facts.elapsed,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
            pid: facts.pid,
            pid_in_namespace: facts.pid_in_namespace,
            command: facts.command.to_owned(),
            executable: facts.executable.map(str::to_owned),
            state: facts.state,
            kernel: facts.kernel,
            kernel_reading: if facts.state == TargetState::Running {
                KernelReading::Current
            } else {
                KernelReading::LastBeforeExit
            },
            model: model.totals(),
            reconcile: facts.reconcile,
            activity: model.activity().clone(),
            approximate: facts.lost.any(),
            lost: facts.lost,
            records: facts.records,
            stack_walks: facts.stack_walks,
            process_madvise_unresolved: facts.process_madvise_unresolved,
            top_ranges: ranges.iter().take(TOP_ROWS).cloned().collect(),
            mapping_groups: mappings::group(&ranges, TOP_ROWS),
            anon_before_attach: anon_before_attach(model),
            top_stacks,
            top_calls,
            top_faults,
            growth,
            growth_from,
            growers,
            profile_serving,
            trend: Trend::Unknown {
                needs: Duration::ZERO,
            },
            sparkline: String::new(),
            trend_needs: 0,
            recent: Vec::new(),
            cgroup: facts.cgroup,
            oom_kill: facts.oom_kill,
            runtime: facts.runtime,
            address_space: model
                .extents()
                .iter()
                .map(|(start, extent)| extent.end - start)
                .sum(),
            go_heap,
            previous_rss: self.previous_rss,
            stack_coverage,
            footprint: facts.footprint,
            stack_source: facts.stack_source,
            whole: None,
        };
        if !facts.is_final {
            self.history.push(snapshot.point());
            self.previous_rss = Some(snapshot.rss());
        }
        snapshot.trend = self.history.trend();
        snapshot.sparkline = self.history.sparkline(SPARKLINE_WIDTH);
        snapshot.trend_needs = intervals_until_trend(&self.history);
        let points = self.history.points();
        snapshot.recent = points[points.len().saturating_sub(RECENT_POINTS)..].to_vec();
        snapshot
    }
}

/// How many more intervals like the last one the history needs before it
/// names a trend: found by asking it, so this follows whatever rule
/// [`History::trend`] applies. 0 once it knows.
fn intervals_until_trend(history: &History) -> usize {
    if !matches!(history.trend(), Trend::Unknown { .. }) {
        return 0;
    }
    let last: Point = history.last().copied().unwrap_or_default();
    let step = match history.points() {
        [.., before, last] => last.elapsed.saturating_sub(before.elapsed),
        _ => Duration::from_secs(1),
    };
    let mut future = history.clone();
    let mut point = last;
    for needed in 1..=TREND_LOOKAHEAD {
        point.elapsed += step;
        future.push(point);
        if !matches!(future.trend(), Trend::Unknown { .. }) {
            return needed;
        }
    }
    TREND_LOOKAHEAD
}

/// Anonymous in-use bytes resident since before memtrace attached.
fn anon_before_attach(model: &AddressSpace) -> u64 {
    model
        .pages()
        .runs()
        .filter(|(_, state)| {
            state.kind == PageKind::Anon
                && state.page_use == PageUse::InUse
                && state.origin.cause == Cause::BeforeAttach
        })
        .map(|(pages, _)| (pages.end - pages.start) * crate::model::PAGE_SIZE)
        .sum()
}

/// The heap profile's largest holders beside what the kernel saw under them.
fn go_heap_side(source: String, profile: &HeapProfile, namer: &mut Namer<'_>) -> GoHeapSide {
    // Where the profile says the memory is: functions holding it themselves.
    let holders: Vec<&memtrace_pprof::FunctionTotal> = profile
        .functions
        .iter()
        .filter(|total| total.flat > 0)
        .take(TOP_ROWS)
        .collect();
    let functions: Vec<&str> = holders
        .iter()
        .map(|total| total.function.as_str())
        .collect();
    let resident = attribution::resident_under(namer, &functions);
    GoHeapSide {
        source,
        inuse_space: profile.inuse_space.max(0) as u64,
        alloc_space: profile.alloc_space.max(0) as u64,
        functions: holders
            .iter()
            .zip(resident)
            .map(|(total, kernel_resident)| FunctionMatch {
                function: total.function.clone(),
                pprof_inuse: total.flat.max(0) as u64,
                kernel_resident,
            })
            .collect(),
    }
}
