//! Settings the agent writes into the kernel programs' global variables before
//! loading them, and the sizes of the maps they share.

/// Name of the global that selects how fault stacks are collected.
pub const STACK_MODE_GLOBAL: &str = "STACK_MODE";
/// Name of the global with the sampling period for [`StackMode::Sampled`].
pub const STACK_PERIOD_GLOBAL: &str = "STACK_PERIOD";
/// Name of the global that makes the kernel add forked children to the targets.
pub const FOLLOW_FORKS_GLOBAL: &str = "FOLLOW_FORKS";
/// Name of the global that traces every process under the cgroup in the
/// `CGROUP` map.
pub const CGROUP_MODE_GLOBAL: &str = "CGROUP_MODE";
/// Name of the global with how the stacks of processes found in the cgroup
/// are taken at first (a `StackSource`).
pub const CGROUP_STACKS_GLOBAL: &str = "CGROUP_STACKS";
/// Name of the global with the number of bytes waiting in the ring buffer
/// that make a record wake the agent (below it, records wait for its tick).
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";

/// Name of the global with the bytes of user stack a stack sample copies.
pub const STACK_BYTES_GLOBAL: &str = "STACK_BYTES";
/// Name of the global that makes every program return at once (the
/// benchmark's floor).
pub const FLOOR_GLOBAL: &str = "FLOOR";
/// Name of the global with where the fields the programs read are on the
/// running kernel ([`crate::KernelLayout`]).
pub const KERNEL_LAYOUT_GLOBAL: &str = "KERNEL_LAYOUT";

/// Most user stack one sample copies (with the record and one piece more,
/// it must fit a per-CPU map value, at most 32K), and the piece it is
/// copied in: pieces
/// never cross a page boundary, so a copy stops cleanly at the end of the
/// stack mapping, where the first unreadable piece fails.
pub const MAX_STACK_COPY: usize = 30 * 1024;
pub const STACK_COPY_PIECE: usize = 1024;
/// What a sample copies unless told otherwise: twice perf's `--call-graph
/// dwarf` default, which cuts a database's stacks (PostgreSQL's COPY and
/// B-tree builds: 58% of stacks whole with 8K, 99.5% with 16K).
pub const DEFAULT_STACK_COPY: u32 = 16 * 1024;

/// Deepest user stack recorded; deeper stacks keep their innermost frames.
pub const MAX_STACK_FRAMES: usize = 64;
/// Distinct stacks the kernel holds until the agent has read them.
pub const DEFAULT_STACK_ENTRIES: u32 = 16 * 1024;

/// How many processes (the target and, with `--follow-forks`, its children).
pub const MAX_TARGETS: u32 = 1024;
/// How many innermost-frame hints ([`crate::FrameHint`]) the kernel keeps.
pub const MAX_FRAME_HINTS: u32 = 16 * 1024;
/// How many iovecs of one `process_madvise` call are recorded.
pub const MAX_IOVECS: usize = 8;

/// How user stacks are collected for page faults. Syscalls always get one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackMode {
    /// Every fault walks its stack (`--stacks=all`).
    All = 0,
    /// A fault reuses its thread's last walked stack when it comes from the
    /// same instruction, frame pointer and caller, for at most
    /// `STACK_PERIOD` faults; otherwise the whole stack is walked.
    Sampled = 1,
    /// Faults carry no stack (`--stacks=none`).
    None = 2,
}

impl StackMode {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::All),
            1 => Some(Self::Sampled),
            2 => Some(Self::None),
            _ => None,
        }
    }
}
