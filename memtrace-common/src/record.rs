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

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Fault = 1,
    Syscall = 2,
    ProcessMadvise = 3,
    Reclaim = 4,
    Lifecycle = 5,
}

impl RecordKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Fault),
            2 => Some(Self::Syscall),
            3 => Some(Self::ProcessMadvise),
            4 => Some(Self::Reclaim),
            5 => Some(Self::Lifecycle),
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
    /// A target forked; `other_pid` is the child.
    Fork = 3,
    /// The OOM killer chose the target.
    OomVictim = 4,
}

impl LifecycleKind {
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::Exec),
            2 => Some(Self::Exit),
            3 => Some(Self::Fork),
            4 => Some(Self::OomVictim),
            _ => None,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleRecord {
    pub header: RecordHeader,
    /// Fork: the child. OOM kill: the victim thread.
    pub other_pid: u32,
    pub _pad: u32,
    /// OOM kill: the kernel's anon, file and shmem RSS of the victim in KiB
    /// when it was chosen. Zero for the other kinds.
    pub rss_kib: [u64; 3],
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
    pub _pad: u32,
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
}
