//! Indices into the kernel's per-CPU `COUNTERS` array: what the kernel side
//! saw or could not deliver. The agent sums them over CPUs.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Page faults of the targets seen by the fault program.
    Faults = 0,
    /// Fault records that could not be reserved in the ring buffer.
    LostFaults = 1,
    /// Syscall records that could not be reserved.
    LostSyscalls = 2,
    /// Lifecycle (exec, exit, fork, OOM) records that could not be reserved.
    LostLifecycle = 3,
    /// Reclaim notices that could not be reserved.
    LostReclaim = 4,
    /// Stacks walked but not stored because the `STACKS` map was full; their
    /// records name a stack the agent cannot read.
    StacksNotStored = 5,
    /// Changes to a target's RSS counters made by another task (reclaim,
    /// the OOM reaper, khugepaged, process_madvise from outside).
    ForeignRssChanges = 6,
    /// Stack walks performed for faults.
    FaultStackWalks = 7,
}

impl Counter {
    pub const COUNT: u32 = 8;

    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::Faults,
        Self::LostFaults,
        Self::LostSyscalls,
        Self::LostLifecycle,
        Self::LostReclaim,
        Self::StacksNotStored,
        Self::ForeignRssChanges,
        Self::FaultStackWalks,
    ];
}
