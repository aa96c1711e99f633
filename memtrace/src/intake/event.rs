//! Typed events: what the kernel programs saw, decoded from their records.
//!
//! These are facts about the traced process in the order they happened. They
//! say nothing about what memory is resident; the address-space model
//! ([`crate::model`]) draws that conclusion.

use std::{fmt, num::NonZeroU64};

/// A user stack walked by the kernel side, by the key it has in `STACKS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(NonZeroU64);

impl StackId {
    /// `None` for the kernel's "no stack" key.
    pub fn new(key: u64) -> Option<Self> {
        NonZeroU64::new(key).map(Self)
    }

    pub fn key(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for StackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Hashes keys made of [`StackId`]s by their bits: a stack id is already a
/// hash of its frames, so hashing it again on every fault is wasted work.
#[derive(Clone, Copy, Debug, Default)]
pub struct StackIdHasher(u64);

impl std::hash::Hasher for StackIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = self.0.rotate_left(29) ^ value;
    }
}

/// A hash map keyed by stack ids (or keys containing them).
pub type StackKeyed<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<StackIdHasher>>;

/// A failed syscall's error number, as the kernel returned it (positive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// A syscall's outcome: the kernel returns `-errno` for failures.
pub type SyscallResult = Result<u64, Errno>;

pub(crate) fn syscall_result(ret: i64) -> SyscallResult {
    // Linux reserves the last 4095 values for errors, so mmap addresses with
    // the top bit set are still successes.
    if (-4095..0).contains(&ret) {
        Err(Errno(-ret as i32))
    } else {
        Ok(ret as u64)
    }
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The thread that caused it (for reclaim, the reclaiming task).
    pub tid: u32,
    /// The user stack of `tid` at the time, when one was walked.
    pub stack: Option<StackId>,
    pub kind: EventKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Fault(Fault),
    Mmap(Mmap),
    Munmap {
        addr: u64,
        len: u64,
        result: SyscallResult,
    },
    Mremap(Mremap),
    /// `brk(requested)`; the result is the break after the call (the old one
    /// when the request failed or was a query).
    Brk {
        requested: u64,
        result: u64,
    },
    Madvise(Madvise),
    /// `process_madvise(pidfd, ranges, advice)`: it applies to the target's
    /// own memory only when `pidfd` refers to the target, which the decoder
    /// cannot know.
    ProcessMadvise(ProcessMadvise),
    /// The target's RSS counter `member` was changed by another task
    /// (reclaim, swap-out, the OOM reaper). A doorbell: the amount is read
    /// from /proc.
    ForeignRssChange {
        member: RssMember,
        actor_pid: u32,
    },
    Exec,
    Exit,
    /// A thread exited, on a kernel that does not say whether it was the
    /// process's last: /proc says.
    ThreadExit,
    /// A process of the traced cgroup, traced from this event on: what it
    /// mapped before is for /proc to tell.
    Found,
    Fork {
        child: u32,
        /// The child shares the parent's memory until it calls exec (vfork,
        /// posix_spawn): what it does meanwhile is the parent's memory.
        shares_memory: bool,
    },
    /// A copy of the thread's stack, for the agent to unwind (code without
    /// frame pointers); later records name it by `id`.
    StackSample(StackSample),
    /// The OOM killer chose the target.
    OomVictim(OomKill),
}

/// What the OOM killer saw when it chose a target: the kernel's RSS of it at
/// that moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomKill {
    pub anon_bytes: u64,
    pub file_bytes: u64,
    pub shmem_bytes: u64,
}

/// A thread's registers and a copy of its stack at an event, as the kernel
/// side took them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSample {
    /// The id records of this place carry (with
    /// `memtrace_common::stack_key::SAMPLE_BIT`).
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The stack's first address that `bytes` hold: the stack pointer
    /// rounded down to the piece the kernel side copies in.
    pub start: u64,
    pub bytes: Vec<u8>,
}

/// A page fault on a user address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub address: u64,
    pub access: Access,
}

/// The x86 page-fault error code's low bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Access(u8);

impl Access {
    pub const PROTECTION: u8 = memtrace_common::fault_bits::PROTECTION;
    pub const WRITE: u8 = memtrace_common::fault_bits::WRITE;
    pub const USER: u8 = memtrace_common::fault_bits::USER;
    pub const INSTRUCTION: u8 = memtrace_common::fault_bits::INSTRUCTION;

    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The page was present: a protection fault (copy-on-write, a write to
    /// the shared zero page), not a missing page.
    pub const fn protection(self) -> bool {
        self.0 & Self::PROTECTION != 0
    }

    pub const fn write(self) -> bool {
        self.0 & Self::WRITE != 0
    }

    /// The program itself touched the page (not the kernel on its behalf).
    pub const fn user(self) -> bool {
        self.0 & Self::USER != 0
    }

    pub const fn instruction(self) -> bool {
        self.0 & Self::INSTRUCTION != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmap {
    pub hint: u64,
    pub len: u64,
    pub prot: u32,
    pub flags: u32,
    pub fd: i32,
    pub offset: u64,
    /// The address of the new mapping.
    pub result: SyscallResult,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mremap {
    pub old_addr: u64,
    pub old_len: u64,
    pub new_len: u64,
    pub flags: u32,
    /// The new address of the mapping.
    pub result: SyscallResult,
}

/// `madvise(addr, len, advice)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Madvise {
    pub addr: u64,
    pub len: u64,
    pub advice: i32,
    pub result: SyscallResult,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessMadvise {
    pub pidfd: i32,
    pub advice: i32,
    /// The first ranges of the call, as (address, length).
    pub ranges: Vec<(u64, u64)>,
    /// The call named more ranges than the kernel side records.
    pub truncated: bool,
    /// Bytes advised.
    pub result: SyscallResult,
}

/// The kernel's RSS counters, as in `kmem:rss_stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssMember {
    File,
    Anon,
    Swap,
    Shmem,
}

impl RssMember {
    pub fn from_raw(member: u32) -> Option<Self> {
        use memtrace_common::rss_member as m;
        match member {
            m::FILE_PAGES => Some(Self::File),
            m::ANON_PAGES => Some(Self::Anon),
            m::SWAP_ENTS => Some(Self::Swap),
            m::SHMEM_PAGES => Some(Self::Shmem),
            _ => None,
        }
    }
}
