//! What the metrics show: plain numbers the caller fills per target each
//! interval, and the push counters.

/// One target's numbers at one interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetMetrics {
    /// The target's name, as configured (the `target` label).
    pub target: String,
    pub pid: u32,
    /// The process's command name.
    pub command: String,
    pub rss: RssParts,
    /// Resident bytes memtrace cannot say where they came from.
    pub unexplained_bytes: u64,
    /// Bytes taken out of RSS since attaching, by how: `munmap`,
    /// `MADV_DONTNEED`, ... (a small fixed set of names).
    pub released_bytes: Vec<(String, u64)>,
    /// Page faults since attaching.
    pub page_faults: u64,
    /// How fast in-use RSS grows, in bytes per second, once known.
    pub trend_bytes_per_second: Option<f64>,
    /// The memory cgroup the target is in, when it has one.
    pub cgroup: Option<CgroupUsage>,
}

/// The agent's own numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentCounts {
    /// Records the kernel side could not deliver since the agent started,
    /// for all targets together.
    pub lost_records: u64,
    pub traced_processes: u64,
    /// Stacks in the agent's table now.
    pub stacks: u64,
    /// Stacks dropped to stay under the cap, since the agent started.
    pub stacks_pruned: u64,
    pub resident_bytes: u64,
}

/// RSS in four parts that add up to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssParts {
    /// Anonymous memory in use: anonymous RSS minus lazily freed.
    pub in_use: u64,
    /// Given back with `MADV_FREE` but still counted in RSS until the
    /// kernel reclaims it.
    pub lazily_freed: u64,
    /// File-backed pages (code, mapped files).
    pub file: u64,
    /// Shared memory (tmpfs, shared anonymous mappings).
    pub shmem: u64,
}

impl RssParts {
    /// The parts with their `part` label values.
    pub fn labelled(&self) -> [(&'static str, u64); 4] {
        [
            ("in_use", self.in_use),
            ("lazily_freed", self.lazily_freed),
            ("file", self.file),
            ("shmem", self.shmem),
        ]
    }
}

/// A memory cgroup's usage against its limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// `memory.current`.
    pub usage_bytes: u64,
    /// `memory.max`; None when unlimited.
    pub limit_bytes: Option<u64>,
}
