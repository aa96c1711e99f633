//! A cgroup as a whole (`--cgroup`, `--container`): what its snapshot adds
//! to a process's. The cgroup's processes, and its own charge split into
//! what its processes hold and what no process's RSS shows (page cache,
//! kernel memory), against the limit that kills it. [`super::merge`] builds
//! it from the processes' snapshots.

use std::time::Duration;

use super::state::TargetState;
use crate::proc::CgroupMemory;

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
    /// How the process is named in rows and root frames.
    pub fn label(&self) -> String {
        process_label(&self.command, self.pid)
    }
}

/// How a process is named in the rows of a whole and in root frames.
pub fn process_label(command: &str, pid: u32) -> String {
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
    pub fn of(memory: &CgroupMemory, members: &[Member]) -> Self {
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
}
