//! Records the kernel programs write into the `EVENTS` ring buffer, and the
//! values of the maps both sides touch.
//!
//! Every record starts with a [`RecordHeader`]; its `kind` says which struct
//! the bytes are. Records are kept lean because page faults can arrive by the
//! hundred thousand per second: a fault is 32 bytes. Records carry no
//! timestamp: reading the clock costs as much as the rest of the fault
//! program on a VM, and the ring buffer already keeps the order in which
//! records were reserved, across CPUs.

use crate::config::{MAX_IOVECS, MAX_STACK_FRAMES};

/// `stack` of a record that carries no stack (stacks off, or no frame could
/// be read).
pub const NO_STACK: u64 = 0;

/// Stack keys. A key is either the hash of a stack's return addresses
/// (walked by frame pointers in the kernel, or unwound by the agent: the
/// same frames get the same key either way), or, with [`SAMPLE_BIT`] set,
/// the id of a [`StackSampleRecord`] the agent has yet to unwind.
pub mod stack_key {
    use super::NO_STACK;

    /// Set in the ids of stack samples, clear in hashes of frames.
    pub const SAMPLE_BIT: u64 = 1 << 63;
    /// FNV-1a's offset basis: the hash of no frames.
    pub const EMPTY: u64 = 0xcbf2_9ce4_8422_2325;

    /// The hash so far, with one more return address.
    pub const fn add(hash: u64, address: u64) -> u64 {
        (hash ^ address).wrapping_mul(0x0000_0100_0000_01b3)
    }

    /// The key of a hash: never a sample id, never [`NO_STACK`].
    pub const fn finish(hash: u64) -> u64 {
        let key = hash & !SAMPLE_BIT;
        if key == NO_STACK {
            1
        } else {
            key
        }
    }

    /// The key of the stack `addresses` (innermost first).
    pub fn of(addresses: &[u64]) -> u64 {
        let mut hash = EMPTY;
        for &address in addresses {
            hash = add(hash, address);
        }
        finish(hash)
    }
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Fault = 1,
    Syscall = 2,
    ProcessMadvise = 3,
    Reclaim = 4,
    Lifecycle = 5,
    StackSample = 6,
}

impl RecordKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Fault),
            2 => Some(Self::Syscall),
            3 => Some(Self::ProcessMadvise),
            4 => Some(Self::Reclaim),
            5 => Some(Self::Lifecycle),
            6 => Some(Self::StackSample),
            _ => None,
        }
    }
}

/// The common start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Key of the user stack in the `STACKS` map, or [`NO_STACK`].
    pub stack: u64,
    /// The traced process the record is about.
    pub tgid: u32,
    /// The thread that caused it (for reclaim: the reclaiming task).
    pub tid: u32,
    /// A [`RecordKind`].
    pub kind: u8,
    /// Kind-specific: fault error-code bits, [`SyscallOp`], RSS member, or
    /// [`LifecycleKind`].
    pub detail: u8,
    pub _pad: [u8; 6],
}

impl RecordHeader {
    /// The header of a `kind` record about process `tgid`, caused by thread
    /// `tid`, carrying no stack yet.
    pub const fn new(kind: RecordKind, tgid: u32, tid: u32, detail: u8) -> Self {
        Self {
            stack: NO_STACK,
            tgid,
            tid,
            kind: kind as u8,
            detail,
            _pad: [0; 6],
        }
    }
}

/// x86 page-fault error-code bits, as carried in a fault's `detail`.
pub mod fault_bits {
    /// The page was present: a protection fault (copy-on-write, write to a
    /// read-only or lazily freed page), not a missing page.
    pub const PROTECTION: u8 = 1 << 0;
    pub const WRITE: u8 = 1 << 1;
    pub const USER: u8 = 1 << 2;
    pub const INSTRUCTION: u8 = 1 << 4;
}

/// A user page fault, seen on entry to the fault handler.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    pub header: RecordHeader,
    pub address: u64,
}

/// Which syscall a [`SyscallRecord`] is about.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallOp {
    Mmap = 1,
    Munmap = 2,
    Mremap = 3,
    Brk = 4,
    Madvise = 5,
    ProcessMadvise = 6,
}

impl SyscallOp {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Mmap),
            2 => Some(Self::Munmap),
            3 => Some(Self::Mremap),
            4 => Some(Self::Brk),
            5 => Some(Self::Madvise),
            6 => Some(Self::ProcessMadvise),
            _ => None,
        }
    }
}

/// A completed mmap, munmap, mremap, brk or madvise: its arguments (as the
/// saved registers still hold them on return) and its result. `args` are in
/// the syscall's own order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallRecord {
    pub header: RecordHeader,
    pub ret: i64,
    pub args: [u64; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoVec {
    pub base: u64,
    pub len: u64,
}

/// A completed `process_madvise`, with the first [`MAX_IOVECS`] ranges.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessMadviseRecord {
    pub header: RecordHeader,
    pub ret: i64,
    pub pidfd: i32,
    pub advice: i32,
    /// Number of ranges passed; those past [`MAX_IOVECS`] are not in `iov`.
    pub vlen: u64,
    pub iov: [IoVec; MAX_IOVECS],
}

/// Another task changed a target's RSS counters: reclaim of lazily freed or
/// file pages, swap-out, the OOM reaper. Sent at most once per
/// [`RECLAIM_NOTICE_INTERVAL_NS`] per target; the agent measures the change
/// from /proc, so a notice is a doorbell, not an amount.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReclaimRecord {
    pub header: RecordHeader,
    /// Process (tgid) of the task that changed the counter.
    pub actor_pid: u32,
    /// The `rss_stat` member that changed (see [`rss_member`]).
    pub member: u32,
}

pub const RECLAIM_NOTICE_INTERVAL_NS: u64 = 10_000_000;

/// The kernel's RSS counter members, as in `kmem:rss_stat`.
pub mod rss_member {
    pub const FILE_PAGES: u32 = 0;
    pub const ANON_PAGES: u32 = 1;
    pub const SWAP_ENTS: u32 = 2;
    pub const SHMEM_PAGES: u32 = 3;
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleKind {
    /// The target called exec: its address space was replaced.
    Exec = 1,
    /// The last thread of the target exited.
    Exit = 2,
    /// A target started a new process; `other_pid` is the child.
    Fork = 3,
    /// The OOM killer chose the target.
    OomVictim = 4,
    /// A thread of the target exited, on a kernel whose exit tracepoint
    /// does not say whether it was the last one: /proc tells.
    ThreadExit = 5,
    /// A process of the traced cgroup, seen for the first time: from now on
    /// it is traced.
    Found = 6,
}

impl LifecycleKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Exec),
            2 => Some(Self::Exit),
            3 => Some(Self::Fork),
            4 => Some(Self::OomVictim),
            5 => Some(Self::ThreadExit),
            6 => Some(Self::Found),
            _ => None,
        }
    }
}

/// [`LifecycleRecord`]'s `flags` for a child sharing its parent's memory.
pub const CLONE_VM: u32 = 0x100;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleRecord {
    pub header: RecordHeader,
    /// Fork: the child. OOM kill: the victim thread.
    pub other_pid: u32,
    /// Fork: [`CLONE_VM`] when the child shares the parent's memory until it
    /// calls exec (vfork, posix_spawn).
    pub flags: u32,
    /// OOM kill: the kernel's anon, file and shmem RSS of the victim in KiB
    /// when it was chosen (zero on kernels that do not say). Zero for the
    /// other kinds.
    pub rss_kib: [u64; 3],
}

/// A copy of a thread's user stack and the registers unwinding starts from,
/// for code without frame pointers: the agent unwinds it with the binaries'
/// own unwind tables. The header's `stack` is the sample's id (with
/// [`stack_key::SAMPLE_BIT`]); records that happened at the same place name
/// the same id. `len` bytes of stack, from `sp` up, follow the fixed part.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSampleRecord {
    pub header: RecordHeader,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of stack that follow.
    pub len: u32,
    pub _pad: u32,
}

/// What the agent learnt about an address of a traced process's code from
/// unwinding a sample through it (the instruction an event happened at, or
/// a return address): where the return address of the function it is in
/// sits. With it, the kernel can tell the function's caller, and its
/// caller's caller, at the next event there without a sample, so that
/// samples are reused only at the same instruction, frame and callers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameHintKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ip: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHint {
    /// The return address is at `sp + return_address_offset`...
    pub return_address_offset: u32,
    /// ...or, when non-zero, found through the frame pointer (code with no
    /// unwind tables that keeps frame pointers, such as JIT code).
    pub frame_pointer: u32,
}

/// Where the fields the programs read are on the running kernel: in the
/// classic tracepoints' records (from their `format` files) and in kernel
/// structures (from BTF); [`FIELD_ABSENT`] for a field this kernel lacks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `sched:sched_process_exit`'s `group_dead` (newer kernels only).
    pub exit_group_dead: u32,
    /// `task:task_newtask`'s `pid` and `clone_flags`.
    pub newtask_pid: u32,
    pub newtask_clone_flags: u32,
    /// `oom:mark_victim`'s `pid`, and its RSS fields (newer kernels only).
    pub oom_pid: u32,
    pub oom_anon_rss: u32,
    pub oom_file_rss: u32,
    pub oom_shmem_rss: u32,
    /// `task_struct.pagefault_disabled`: set while a fault must not map a
    /// page (a tracer reading user memory).
    pub task_pagefault_disabled: u32,
    /// `syscalls:sys_exit_*`'s `ret`.
    pub syscall_exit_ret: u32,
    pub _pad: u32,
}

pub const FIELD_ABSENT: u32 = u32::MAX;

impl KernelLayout {
    /// Every field absent: the programs read nothing until the agent sets
    /// the real offsets.
    pub const ABSENT: Self = Self {
        exit_group_dead: FIELD_ABSENT,
        newtask_pid: FIELD_ABSENT,
        newtask_clone_flags: FIELD_ABSENT,
        oom_pid: FIELD_ABSENT,
        oom_anon_rss: FIELD_ABSENT,
        oom_file_rss: FIELD_ABSENT,
        oom_shmem_rss: FIELD_ABSENT,
        task_pagefault_disabled: FIELD_ABSENT,
        syscall_exit_ret: FIELD_ABSENT,
        _pad: 0,
    };
}

/// How the kernel side gets a traced process's stacks ([`TargetState`]'s
/// `stacks`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StackSource {
    /// Walk frame pointers in the kernel (Go, and code built with them).
    #[default]
    FramePointers = 0,
    /// Copy the stack for the agent to unwind with the binaries' unwind
    /// tables (code built without frame pointers).
    Samples = 1,
    /// No stacks: a process memtrace cannot unwind (32-bit).
    Off = 2,
}

impl StackSource {
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            0 => Some(Self::FramePointers),
            1 => Some(Self::Samples),
            2 => Some(Self::Off),
            _ => None,
        }
    }
}

/// A user stack as walked by the kernel side: return addresses, innermost
/// first, starting with the instruction pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackFrames {
    pub len: u32,
    pub _pad: u32,
    pub ips: [u64; MAX_STACK_FRAMES],
}

/// What the kernel keeps per traced process (key: tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetState {
    pub tgid: u32,
    /// A [`StackSource`]; followed children inherit their parent's.
    pub stacks: u32,
    /// The process's `mm_struct`, learnt from its own RSS counter updates, so
    /// that updates made by other tasks (reclaim) can be matched to it.
    pub mm: u64,
    /// When the last [`ReclaimRecord`] for this target was sent.
    pub last_reclaim_ns: u64,
}

/// A record's bytes as the kernel side writes them into the ring buffer:
/// what the agent decodes, and what its tests, benchmarks and fuzz seeds
/// feed it.
#[cfg(feature = "user")]
pub fn bytes_of<T: aya::Pod>(record: &T) -> &[u8] {
    // SAFETY: `Pod` types are plain bytes with every byte initialised.
    unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]` structs of integers with explicit
    // padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::FaultRecord {}
    unsafe impl aya::Pod for super::SyscallRecord {}
    unsafe impl aya::Pod for super::ProcessMadviseRecord {}
    unsafe impl aya::Pod for super::ReclaimRecord {}
    unsafe impl aya::Pod for super::LifecycleRecord {}
    unsafe impl aya::Pod for super::TargetState {}
    unsafe impl aya::Pod for super::StackFrames {}
    unsafe impl aya::Pod for super::StackSampleRecord {}
    unsafe impl aya::Pod for super::FrameHintKey {}
    unsafe impl aya::Pod for super::FrameHint {}
    unsafe impl aya::Pod for super::KernelLayout {}
}
