//! Indices into the kernel's per-CPU `COUNTERS` array: what the kernel side
//! did or could not deliver. The agent sums them over CPUs.

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Fault records that could not be reserved in the ring buffer.
    LostFaults = 0,
    /// Syscall records that could not be reserved.
    LostSyscalls = 1,
    /// Lifecycle (exec, exit, fork, OOM) records that could not be reserved.
    LostLifecycle = 2,
    /// Reclaim notices that could not be reserved.
    LostReclaim = 3,
    /// Stacks walked but not stored because the `STACKS` map was full; their
    /// records name a stack the agent cannot read.
    StacksNotStored = 4,
    /// Stack samples (for unwinding in the agent) that could not be written:
    /// their records name a stack the agent never gets.
    LostStackSamples = 5,
    /// Changes to a target's RSS counters made by another task (reclaim,
    /// the OOM reaper, khugepaged, process_madvise from outside).
    ForeignRssChanges = 6,
    /// Frame-pointer walks done for faults (the rest reused a walk).
    FaultStackWalks = 7,
    /// Stack samples copied for faults (the rest reused one).
    FaultStackSamples = 8,
    /// Children that could not be added to the traced processes (the
    /// targets map was full): their events are missed.
    LostTargets = 9,
    /// Program runs skipped because another of memtrace's programs was
    /// running on the same CPU: a fault taken by the kernel while a program
    /// read user memory, which is not the program's own fault.
    Nested = 10,
    /// Stack samples not taken because the ring buffer was half full: the
    /// frame pointers were walked instead, so that samples never crowd out
    /// the records themselves.
    StackSamplesSkipped = 11,
}

impl Counter {
    pub const COUNT: u32 = 12;
}
