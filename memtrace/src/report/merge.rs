//! A cgroup's snapshot: its processes' snapshots merged into one, so the
//! live view, the screen, JSON and the verdict show a container the way
//! they show a process.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_common::StackSource;

use super::{
    assemble::TOP_ROWS,
    history::{History, Trend},
    snapshot::{KernelReading, Snapshot},
    state::TargetState,
    whole::{process_label, Charge, Member, Subject, Whole},
};
use crate::{
    attribution::{CallRow, FaultRow, GrowthRow, StackCoverage, StackRow},
    model::{reconcile::Outcome, Activity, Totals},
    proc::{CgroupMemory, KernelTotals},
};

/// Intervals shown in the live view's chart (as for a process).
const SPARKLINE_WIDTH: usize = 40;
/// Intervals kept for the screen's chart.
const RECENT_POINTS: usize = 512;

impl Member {
    pub fn of(snapshot: &Snapshot) -> Self {
        let (anon, file, shmem) = snapshot.resident_kinds();
        Self {
            pid: snapshot.pid,
            pid_in_namespace: snapshot.pid_in_namespace,
            command: snapshot.command.clone(),
            state: snapshot.state,
            rss: snapshot.rss(),
            anon,
            file,
            shmem,
            lazyfree: snapshot.lazyfree(),
            unexplained: snapshot.unexplained(),
            top: snapshot.top_stacks.first().map(|row| {
                row.frames
                    .iter()
                    .take(2)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ← ")
            }),
        }
    }
}

/// What the session knows about the cgroup besides its processes.
pub struct Facts<'a> {
    pub is_final: bool,
    pub elapsed: Duration,
    pub subject: &'a Subject,
    /// The cgroup's figures, as last read.
    pub memory: Option<CgroupMemory>,
    /// The cgroup is gone: `memory` is from before.
    pub removed: bool,
    pub ended: u64,
    pub oom_killed: &'a [Member],
}

/// What the cgroup's earlier snapshots leave for its later ones.
#[derive(Debug, Default)]
pub struct Past {
    seq: u64,
    history: History,
    previous_rss: Option<u64>,
    /// What the processes that ended did, so the whole's counts since
    /// attaching keep them.
    gone: Activity,
}

impl Past {
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Keeps what the process of `last` (its last snapshot) did, as its
    /// model is dropped.
    pub fn retire(&mut self, last: &Snapshot) {
        self.gone.absorb(&last.activity);
    }

    /// The cgroup's snapshot: its processes' `members` snapshots merged,
    /// with `facts`.
    pub fn snapshot(&mut self, facts: Facts<'_>, members: &[Snapshot]) -> Snapshot {
        self.seq += 1;
        let mut merged = merge(members);
        merged.activity.absorb(&self.gone);
        merged.seq = self.seq;
        merged.is_final = facts.is_final;
        merged.elapsed = facts.elapsed;
        merged.command = facts.subject.label.clone();
        merged.previous_rss = self.previous_rss;
        let member_rows: Vec<Member> = members.iter().map(Member::of).collect();
        merged.cgroup = facts.memory.clone();
        if !facts.is_final {
            self.history.push(merged.point());
            self.previous_rss = Some(merged.rss());
        }
        merged.trend = self.history.trend();
        merged.sparkline = self.history.sparkline(SPARKLINE_WIDTH);
        let points = self.history.points();
        merged.recent = points[points.len().saturating_sub(RECENT_POINTS)..].to_vec();
        let charge = facts
            .memory
            .as_ref()
            .map(|memory| Charge::of(memory, &member_rows));
        let time_to_limit = match (&facts.memory, merged.trend) {
            (Some(memory), Trend::Growing { bytes_per_minute }) if bytes_per_minute > 0.0 => {
                memory.max.map(|max| {
                    let left = max.saturating_sub(memory.current) as f64;
                    Duration::from_secs_f64(left / bytes_per_minute * 60.0)
                })
            }
            _ => None,
        };
        merged.whole = Some(Box::new(Whole {
            subject: facts.subject.clone(),
            members: member_rows,
            ended: facts.ended,
            oom_killed: facts.oom_killed.to_vec(),
            charge,
            removed: facts.removed,
            time_to_limit,
        }));
        merged
    }
}

/// The processes' snapshots as one: figures added, rows merged with each
/// row's process as its outermost frame.
fn merge(members: &[Snapshot]) -> Snapshot {
    let mut kernel: Option<KernelTotals> = None;
    let mut model = Totals::default();
    let mut reconcile = Outcome::default();
    let mut activity = Activity::default();
    let mut coverage = StackCoverage::default();
    let mut records = 0;
    let mut anon_before_attach = 0;
    let mut address_space = 0;
    let mut profile_serving = 0;
    let mut unresolved = super::snapshot::Unresolved::default();
    let mut growers: HashMap<String, i64> = HashMap::new();
    for member in members {
        // What happened counts for every process; what is held, only for
        // those still running (an ended process's memory is gone).
        activity.absorb(&member.activity);
        coverage += member.stack_coverage;
        records += member.records;
        unresolved.calls += member.process_madvise_unresolved.calls;
        unresolved.bytes += member.process_madvise_unresolved.bytes;
        if member.state != TargetState::Running {
            continue;
        }
        if let Some(totals) = member.kernel {
            *kernel.get_or_insert_with(KernelTotals::default) += totals;
        }
        model += member.model;
        reconcile += member.reconcile;
        anon_before_attach += member.anon_before_attach;
        address_space += member.address_space;
        profile_serving += member.profile_serving;
        for (name, grown) in &member.growers {
            *growers.entry(name.clone()).or_default() += grown;
        }
    }
    let running: Vec<&Snapshot> = members
        .iter()
        .filter(|member| member.state == TargetState::Running)
        .collect();
    let all: Vec<&Snapshot> = members.iter().collect();
    let first = members.first();
    let lost = first.map(|m| m.lost).unwrap_or_default();
    let mut growers: Vec<(String, i64)> = growers.into_iter().collect();
    growers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    growers.truncate(TOP_ROWS);
    Snapshot {
        seq: 0,
        is_final: false,
        elapsed: Duration::ZERO,
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64),
        pid: 0,
        pid_in_namespace: None,
        command: String::new(),
        executable: None,
        state: TargetState::Running,
        kernel,
        kernel_reading: KernelReading::Current,
        model,
        reconcile,
        activity,
        approximate: lost.any(),
        lost,
        records,
        stack_walks: first.map_or(0, |m| m.stack_walks),
        process_madvise_unresolved: unresolved,
        // Address ranges mean something only within their process.
        top_ranges: Vec::new(),
        mapping_groups: Vec::new(),
        anon_before_attach,
        top_stacks: merged_rows(&running, |m| &m.top_stacks, |row| row.in_use + row.lazyfree),
        top_calls: merged_rows(&all, |m| &m.top_calls, |row: &CallRow| row.resident_bytes),
        top_faults: merged_rows(&all, |m| &m.top_faults, |row: &FaultRow| row.count),
        growth: merged_rows(
            &running,
            |m| &m.growth,
            |row: &GrowthRow| row.grown.unsigned_abs(),
        ),
        growth_from: first.map(|m| m.growth_from.clone()).unwrap_or_default(),
        growers,
        profile_serving,
        trend: Trend::Unknown {
            needs: Duration::ZERO,
        },
        sparkline: String::new(),
        trend_needs: 0,
        recent: Vec::new(),
        cgroup: None,
        oom_kill: None,
        runtime: None,
        address_space,
        go_heap: None,
        previous_rss: None,
        stack_coverage: coverage,
        footprint: first.map(|m| m.footprint).unwrap_or_default(),
        stack_source: first.map_or(StackSource::default(), |m| m.stack_source),
        whole: None,
    }
}

/// Rows with frames, from every process, each with its process as the
/// outermost frame; the largest `TOP_ROWS` by `size`.
fn merged_rows<R: Clone + HasFrames>(
    members: &[&Snapshot],
    rows: impl Fn(&Snapshot) -> &Vec<R>,
    size: impl Fn(&R) -> u64,
) -> Vec<R> {
    let mut merged: Vec<R> = members
        .iter()
        .flat_map(|member| {
            let label = process_label(&member.command, member.pid);
            rows(member).iter().map(move |row| {
                let mut row = row.clone();
                row.frames_mut().push(label.clone());
                row
            })
        })
        .collect();
    merged.sort_by_key(|row| std::cmp::Reverse(size(row)));
    merged.truncate(TOP_ROWS);
    merged
}

/// Rows whose frames can be given a process frame.
trait HasFrames {
    fn frames_mut(&mut self) -> &mut Vec<String>;
}

macro_rules! has_frames {
    ($($row:ty),*) => {
        $(impl HasFrames for $row {
            fn frames_mut(&mut self) -> &mut Vec<String> {
                &mut self.frames
            }
        })*
    };
}

has_frames!(StackRow, CallRow, FaultRow, GrowthRow);

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn merged_rows_name_their_process_outermost_and_keep_the_largest() {
        let row = |name: &str, bytes: u64| StackRow {
            stack: None,
            frames: vec![name.to_owned()],
            in_use: bytes,
            lazyfree: 0,
            end: None,
            cut_in: None,
            unnamed_jit: false,
        };
        let snapshot = |pid: u32, rows: Vec<StackRow>| {
            let mut snapshot = merge(&[]);
            snapshot.pid = pid;
            snapshot.command = "app".into();
            snapshot.top_stacks = rows;
            snapshot
        };
        let members = [
            snapshot(7, vec![row("small", MIB)]),
            snapshot(
                8,
                (0..TOP_ROWS as u64)
                    .map(|i| row("big", 2 * MIB + i))
                    .collect(),
            ),
        ];
        let merged = merged_rows(
            &members.iter().collect::<Vec<_>>(),
            |m| &m.top_stacks,
            |r| r.in_use,
        );
        assert_eq!(merged.len(), TOP_ROWS);
        assert!(merged.iter().all(|r| r.frames == ["big", "app (pid 8)"]));
        assert_eq!(merged[0].in_use, 2 * MIB + TOP_ROWS as u64 - 1);
    }
}
