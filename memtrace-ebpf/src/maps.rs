//! Maps shared with the agent, and the globals it sets before loading.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    macros::map,
    maps::{Array, CgroupArray, HashMap, PerCpuArray, RingBuf},
    Global,
};
use memtrace_common::{
    config::{DEFAULT_STACK_COPY, MAX_TARGETS},
    Counter, KernelLayout, StackMode, StackSource, TargetState,
};

/// A `StackMode` as u32; set by the agent.
#[unsafe(no_mangle)]
static STACK_MODE: Global<u32> = Global::new(StackMode::Sampled as u32);
/// Faults between two stack walks of one thread in sampled mode.
#[unsafe(no_mangle)]
static STACK_PERIOD: Global<u32> = Global::new(64);
/// Non-zero: children forked by a target become targets themselves.
#[unsafe(no_mangle)]
static FOLLOW_FORKS: Global<u32> = Global::new(0);
/// Non-zero: every process under the cgroup in `CGROUP` is traced, found
/// at its first event (implies following forks).
#[unsafe(no_mangle)]
static CGROUP_MODE: Global<u32> = Global::new(0);
/// A `StackSource` as u32: how the stacks of processes found in the cgroup
/// are taken until the agent says otherwise.
#[unsafe(no_mangle)]
static CGROUP_STACKS: Global<u32> = Global::new(StackSource::Samples as u32);
/// Bytes waiting in the ring buffer that make a record wake the agent.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u32> = Global::new(1024 * 1024);
/// Bytes of user stack a stack sample copies above the stack pointer.
#[unsafe(no_mangle)]
static STACK_BYTES: Global<u32> = Global::new(DEFAULT_STACK_COPY);
/// Non-zero: every program returns at once (`cargo xtask bench`'s floor:
/// what any tracer on these tracepoints pays before doing anything).
#[unsafe(no_mangle)]
static FLOOR: Global<u32> = Global::new(0);
/// Where the classic tracepoints' fields are on this kernel.
#[unsafe(no_mangle)]
static KERNEL_LAYOUT: Global<KernelLayout> = Global::new(KernelLayout::ABSENT);

pub(crate) fn stack_mode() -> u32 {
    STACK_MODE.load()
}

pub(crate) fn stack_period() -> u32 {
    STACK_PERIOD.load()
}

pub(crate) fn follow_forks() -> bool {
    FOLLOW_FORKS.load() != 0 || cgroup_mode()
}

pub(crate) fn cgroup_mode() -> bool {
    CGROUP_MODE.load() != 0
}

pub(crate) fn cgroup_stacks() -> u32 {
    CGROUP_STACKS.load()
}

pub(crate) fn floor() -> bool {
    FLOOR.load() != 0
}

pub(crate) fn stack_bytes() -> u32 {
    STACK_BYTES.load()
}

pub(crate) fn kernel_layout() -> KernelLayout {
    KERNEL_LAYOUT.load()
}

/// Every record goes here. The agent sets the real size at load time.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// The process named on the command line. An array lookup is inlined by the
/// verifier, so every fault in the system pays a load and a compare rather
/// than a hash lookup to learn it is not ours.
#[map]
pub(crate) static PRIMARY: Array<TargetState> = Array::with_max_entries(1, 0);

/// The cgroup traced with `--cgroup` / `--container` (slot 0): a cgroup v2
/// directory; its descendants are traced too.
#[map]
pub(crate) static CGROUP: CgroupArray = CgroupArray::with_max_entries(1, 0);

/// Children followed with `--follow-forks`, and the processes found in the
/// cgroup, by tgid. Only consulted in those modes.
#[map]
pub(crate) static TARGETS: HashMap<u32, TargetState> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// `mm_struct` address to tgid of followed children, for RSS changes made by
/// other tasks (the primary target's mm is in `PRIMARY`).
#[map]
pub(crate) static MMS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

pub(crate) fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot; a program nested on this CPU (see
        // `Exclusive`) only ever counts `Nested`, which nothing else touches
        // while it runs.
        unsafe { *value += 1 };
    }
}

/// Whether one of memtrace's programs that read user memory is running on
/// this CPU.
#[map]
static RUNNING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The right to run on this CPU, for a program that reads user memory.
///
/// Reading user memory that is not present makes the kernel take a page
/// fault, and the fault tracepoints run even for faults that the read then
/// gives up on. Their programs would run nested inside the one reading,
/// overwrite its per-CPU scratch state, and record a fault the process never
/// took. So the holder's thread is noted per CPU: a program that finds its
/// own thread there is nested in that read and returns at once.
pub(crate) struct Exclusive(*mut u32);

/// Why [`Exclusive::take`] failed.
pub(crate) enum Busy {
    /// Inside one of memtrace's own reads of this thread's memory: not an
    /// event of the program's.
    Nested,
    /// Another thread's program holds the CPU (it was preempted there): the
    /// event is real, but the per-CPU scratch state is not free.
    Preempted,
}

impl Exclusive {
    pub(crate) fn take(tid: u32) -> Result<Self, Busy> {
        let running = RUNNING.get_ptr_mut(0).ok_or(Busy::Preempted)?;
        // SAFETY: this CPU's slot. A nested program runs to completion
        // before the one it interrupted goes on, so the check and the set
        // cannot interleave with another holder's.
        unsafe {
            match *running {
                0 => {
                    *running = tid;
                    Ok(Self(running))
                }
                holder if holder == tid => {
                    count(Counter::Nested);
                    Err(Busy::Nested)
                }
                _ => Err(Busy::Preempted),
            }
        }
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        // SAFETY: this CPU's slot, taken in `take`.
        unsafe { *self.0 = 0 };
    }
}

/// Wake the agent only once the ring buffer holds more than `WAKEUP_BYTES`:
/// a wake-up per record would cost more than the record. The agent also
/// drains on a short timer, so nothing waits long.
pub(crate) fn wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= u64::from(WAKEUP_BYTES.load()) {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// Whether the ring buffer is more than half full: the room left is for
/// records, not for stack samples.
pub(crate) fn ring_half_full() -> bool {
    EVENTS.query(BPF_RB_AVAIL_DATA.into()) > EVENTS.query(BPF_RB_RING_SIZE.into()) / 2
}

/// Records that end something (exit, exec, OOM kill) wake the agent at once.
pub(crate) const fn immediate_wakeup() -> u64 {
    BPF_RB_FORCE_WAKEUP as u64
}
