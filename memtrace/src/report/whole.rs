//! A cgroup as a whole (`--cgroup`, `--container`): its processes'
//! snapshots merged into one, so the live view, the screen, JSON and the
//! verdict show a container the way they show a process; and the cgroup's
//! own charge, split into what its processes hold and what no process's
//! RSS shows (page cache, kernel memory), against the limit that kills it.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_common::StackSource;

use super::{
    assemble::TOP_ROWS,
    history::{History, Trend},
    snapshot::{KernelReading, Snapshot, TargetState},
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

/// What the cgroup is, as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    /// The container's name (or short id), else the cgroup's path.
    pub label: String,
    /// The cgroup's path in its hierarchy.
    pub path: String,
    pub container: Option<ContainerMeta>,
}

/// The container runtime's own names for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerMeta {
    pub id: String,
    pub name: Option<String>,
    pub runtime: Option<String>,
}

/// One process of the cgroup at this moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub pid: u32,
    /// Its PID inside its own PID namespace (the container's), when that
    /// differs.
    pub pid_in_namespace: Option<u32>,
    pub command: String,
    pub state: TargetState,
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub lazyfree: u64,
    pub unexplained: u64,
    /// Where most of its memory was faulted in: the innermost function and
    /// its caller.
    pub top: Option<String>,
}

impl Member {
    pub fn of(snapshot: &Snapshot) -> Self {
        let (anon, file, shmem) = match snapshot.kernel {
            Some(kernel) => (kernel.anon, kernel.file, kernel.shmem),
            None => (
                snapshot.model.anon,
                snapshot.model.file,
                snapshot.model.shmem,
            ),
        };
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

    /// How the process is named in rows and root frames.
    pub fn label(&self) -> String {
        process_label(&self.command, self.pid)
    }
}

fn process_label(command: &str, pid: u32) -> String {
    format!("{command} (pid {pid})")
}

/// The cgroup's charge (memory.current) split by what holds it, beside
/// what its processes' RSS adds up to. All in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Charge {
    pub current: u64,
    /// Anonymous memory charged (the processes' own pages, lazily freed
    /// ones too).
    pub anon: u64,
    /// Page cache charged, shared memory apart.
    pub file: u64,
    /// The part of `file` the processes map.
    pub file_mapped: u64,
    pub shmem: u64,
    /// Kernel memory: stacks, page tables, slab, and socket buffers.
    pub kernel: u64,
    /// What the parts above leave of `current` (positive: charged but not
    /// in any part the kernel names; negative: parts counted ahead of the
    /// charge, which the kernel batches per CPU).
    pub other: i64,
    /// What the processes' RSS adds up to, and its parts.
    pub processes_rss: u64,
    pub processes_anon: u64,
    pub processes_file: u64,
    pub processes_shmem: u64,
    /// Anonymous memory the processes gave back with MADV_FREE: charged,
    /// and in RSS, until the kernel reclaims it.
    pub lazyfree: u64,
    /// Page cache the kernel may drop at once: the inactive file list,
    /// which also holds the lazily freed pages, less dirty pages.
    pub reclaimable: u64,
    pub working_set: u64,
}

impl Charge {
    fn of(memory: &CgroupMemory, members: &[Member]) -> Self {
        let stat = &memory.stat;
        let alive = members.iter().filter(|m| m.state == TargetState::Running);
        let (mut rss, mut anon, mut file, mut shmem, mut lazyfree) = (0, 0, 0, 0, 0);
        for member in alive {
            rss += member.rss;
            anon += member.anon;
            file += member.file;
            shmem += member.shmem;
            lazyfree += member.lazyfree;
        }
        let kernel = stat.kernel + stat.sock;
        let named = stat.anon + stat.file + stat.shmem + kernel;
        Self {
            current: memory.current,
            anon: stat.anon,
            file: stat.file,
            file_mapped: stat.file_mapped,
            shmem: stat.shmem,
            kernel,
            other: memory.current as i64 - named as i64,
            processes_rss: rss,
            processes_anon: anon,
            processes_file: file,
            processes_shmem: shmem,
            lazyfree,
            reclaimable: stat.inactive_file.saturating_sub(stat.dirty),
            working_set: memory.working_set(),
        }
    }

    /// Anonymous pages counted in several processes' RSS (shared since a
    /// fork) but charged once; negative when the charge holds anonymous
    /// memory no traced process maps.
    pub fn shared_anon(&self) -> i64 {
        self.processes_anon as i64 - self.anon as i64
    }

    /// Page cache charged to the cgroup that no process maps: files read
    /// or written, not mapped.
    pub fn unmapped_cache(&self) -> u64 {
        self.file.saturating_sub(self.file_mapped)
    }
}

/// What a cgroup's snapshot adds to a process's.
#[derive(Clone, Debug, PartialEq)]
pub struct Whole {
    pub subject: Subject,
    pub members: Vec<Member>,
    /// Processes that ended since attaching, and those of them the OOM
    /// killer took.
    pub ended: u64,
    pub oom_killed: Vec<Member>,
    /// `None` if the cgroup's figures were never read.
    pub charge: Option<Charge>,
    /// The cgroup was removed (its container stopped): its figures are the
    /// last read before.
    pub removed: bool,
    /// At the current growth of in-use memory, how long until the limit.
    pub time_to_limit: Option<Duration>,
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
    use crate::proc::{CgroupVersion, MemoryStat};

    const MIB: u64 = 1 << 20;

    fn member(pid: u32, anon: u64, file: u64, lazyfree: u64) -> Member {
        Member {
            pid,
            pid_in_namespace: Some(pid - 1000),
            command: format!("p{pid}"),
            state: TargetState::Running,
            rss: anon + file,
            anon,
            file,
            shmem: 0,
            lazyfree,
            unexplained: 0,
            top: None,
        }
    }

    #[test]
    fn the_charge_is_split_and_set_beside_the_processes_rss() {
        let memory = CgroupMemory {
            path: "/pod".into(),
            version: CgroupVersion::V2,
            current: 200 * MIB,
            max: Some(256 * MIB),
            high: None,
            stat: MemoryStat {
                anon: 100 * MIB,
                file: 70 * MIB,
                file_mapped: 20 * MIB,
                shmem: 5 * MIB,
                kernel: 20 * MIB,
                sock: 2 * MIB,
                inactive_file: 60 * MIB,
                dirty: 4 * MIB,
                ..MemoryStat::default()
            },
        };
        // Two processes that share 10 MiB of anonymous memory since a fork.
        let members = [
            member(1001, 60 * MIB, 12 * MIB, 8 * MIB),
            member(1002, 50 * MIB, 8 * MIB, 0),
        ];
        let charge = Charge::of(&memory, &members);
        assert_eq!(charge.kernel, 22 * MIB);
        assert_eq!(charge.other, 200 * MIB as i64 - 197 * MIB as i64);
        assert_eq!(charge.processes_rss, 130 * MIB);
        assert_eq!(charge.shared_anon(), 10 * MIB as i64);
        assert_eq!(charge.unmapped_cache(), 50 * MIB);
        assert_eq!(charge.lazyfree, 8 * MIB);
        assert_eq!(charge.reclaimable, 56 * MIB);
        assert_eq!(charge.working_set, 140 * MIB);
    }

    #[test]
    fn processes_that_ended_are_not_counted_in_the_charge() {
        let memory = CgroupMemory {
            path: "/pod".into(),
            version: CgroupVersion::V1,
            current: 10 * MIB,
            max: None,
            high: None,
            stat: MemoryStat::default(),
        };
        let mut gone = member(1003, 40 * MIB, 0, 0);
        gone.state = TargetState::Exited;
        let charge = Charge::of(&memory, &[member(1001, 8 * MIB, 0, 0), gone]);
        assert_eq!(charge.processes_rss, 8 * MIB);
    }

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
