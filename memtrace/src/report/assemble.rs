//! Putting a snapshot together: the facts the session gathered about one
//! process at one moment, the model's attribution with its stacks named,
//! and what earlier snapshots of the same process left behind (the history
//! and the baseline that growth is measured from).

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::{
    history::{History, Trend},
    snapshot::{FunctionMatch, GoHeapSide, KernelReading, Lost, Snapshot, TargetState, Unresolved},
};
use crate::{
    attribution::{self, Held, Holder},
    gopprof::HeapProfile,
    intake::OomKill,
    model::reconcile::Outcome,
    proc::{CgroupMemory, KernelTotals},
    runtime::RuntimeInfo,
    symbolize::Namer,
};

/// Rows in the top-N lists.
pub const TOP_ROWS: usize = 10;
/// Intervals shown in the live view's chart.
const SPARKLINE_WIDTH: usize = 40;

/// What the session knows about a process at the moment of a snapshot,
/// besides its model (which the namer holds).
pub struct Facts<'a> {
    pub is_final: bool,
    pub elapsed: Duration,
    pub pid: u32,
    pub command: &'a str,
    pub executable: Option<&'a str>,
    pub state: TargetState,
    /// The kernel's figures as last read (the last before it exited, once
    /// the process is gone).
    pub kernel: Option<KernelTotals>,
    pub reconcile: Outcome,
    pub lost: Lost,
    pub records: u64,
    pub process_madvise_unresolved: Unresolved,
    pub cgroup: Option<CgroupMemory>,
    pub oom_kill: Option<OomKill>,
    pub runtime: Option<RuntimeInfo>,
    /// The program's own heap profile, and where it came from.
    pub heap: Option<(String, &'a HeapProfile)>,
}

/// What a process's earlier snapshots leave for its later ones.
#[derive(Debug, Default)]
pub struct Past {
    seq: u64,
    history: History,
    /// Resident bytes by holder at the first snapshot, for growth.
    baseline: Option<HashMap<Holder, Held>>,
    previous_rss: Option<u64>,
}

impl Past {
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The snapshot of the process `namer` names, at the moment `facts`
    /// describe. Interval snapshots are remembered in the history.
    pub fn snapshot(&mut self, facts: Facts<'_>, namer: &mut Namer<'_>) -> Snapshot {
        self.seq += 1;
        let model = namer.model;
        let top_stacks = attribution::top_stacks(namer, TOP_ROWS);
        let top_calls = attribution::top_calls(namer, TOP_ROWS);
        let top_faults = attribution::top_faults(namer, TOP_ROWS);
        let go_heap = facts
            .heap
            .map(|(source, profile)| go_heap_side(source, profile, namer));
        let mut growth = match &self.baseline {
            Some(baseline) => attribution::growth(namer, baseline),
            None => Vec::new(),
        };
        let profile_serving = attribution::in_use_serving_profiles(namer);
        let mut growers = attribution::growth_by_responsible(&growth);
        growers.truncate(TOP_ROWS);
        growth.truncate(TOP_ROWS);
        if self.baseline.is_none() {
            self.baseline = Some(attribution::resident_by_holder(model));
        }
        let mut snapshot = Snapshot {
            seq: self.seq,
            is_final: facts.is_final,
            elapsed: facts.elapsed,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
            pid: facts.pid,
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
            process_madvise_unresolved: facts.process_madvise_unresolved,
            top_ranges: attribution::top_ranges(model, TOP_ROWS),
            top_stacks,
            top_calls,
            top_faults,
            growth,
            growers,
            profile_serving,
            trend: Trend::Unknown {
                needs: Duration::ZERO,
            },
            sparkline: String::new(),
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
        };
        if !facts.is_final {
            self.history.push(snapshot.point());
            self.previous_rss = Some(snapshot.rss());
        }
        snapshot.trend = self.history.trend();
        snapshot.sparkline = self.history.sparkline(SPARKLINE_WIDTH);
        snapshot
    }
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
