//! What the address space went through since memtrace attached: calls,
//! faults, and the bytes that left RSS, by how they left.

use std::collections::BTreeMap;

use super::advice::Advice;
use crate::intake::{StackId, StackKeyed};

/// How resident bytes left RSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Release {
    Munmap,
    Madvise(Advice),
    /// A mapping was replaced by a new one (`mmap` with `MAP_FIXED`).
    Replaced,
    /// `mremap` shrank or moved over a mapping.
    Mremap,
    /// `brk` shrank the heap.
    Brk,
    /// The kernel took back pages the program had given back with
    /// `MADV_FREE`, with no call from the program.
    LazyFreeReclaimed,
    /// The kernel reclaimed pages under memory pressure (file pages evicted,
    /// anonymous pages swapped out).
    Reclaimed,
    /// `execve` replaced the whole address space.
    Exec,
    /// Gone from /proc with no event that explains it.
    Unobserved,
}

impl Release {
    /// Name used in reports and JSON keys.
    pub fn name(self) -> String {
        match self {
            Self::Munmap => "munmap".into(),
            Self::Madvise(advice) => advice.to_string(),
            Self::Replaced => "replaced by mmap".into(),
            Self::Mremap => "mremap".into(),
            Self::Brk => "brk".into(),
            Self::LazyFreeReclaimed => "reclaim of MADV_FREE pages".into(),
            Self::Reclaimed => "reclaim".into(),
            Self::Exec => "execve".into(),
            Self::Unobserved => "unobserved".into(),
        }
    }
}

/// A memory call, for counting calls by stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Call {
    Mmap,
    Munmap,
    Mremap,
    Brk,
    Madvise(Advice),
}

impl Call {
    pub fn name(self) -> String {
        match self {
            Self::Mmap => "mmap".into(),
            Self::Munmap => "munmap".into(),
            Self::Mremap => "mremap".into(),
            Self::Brk => "brk".into(),
            Self::Madvise(advice) => advice.to_string(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    pub calls: u64,
    pub failed: u64,
    /// Bytes named by the successful calls.
    pub bytes: u64,
    /// Resident bytes the calls changed: released, lazily freed or populated.
    pub resident_bytes: u64,
}

impl std::ops::AddAssign for CallStats {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.bytes += other.bytes;
        self.resident_bytes += other.resident_bytes;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    pub count: u64,
    /// Faults that mapped a page into RSS (not protection faults, not reads
    /// of never-written memory that map the zero page).
    pub paged_in: u64,
    pub write: u64,
    pub protection: u64,
    pub instruction: u64,
    /// Faults the kernel took while touching the program's memory for it.
    pub kernel_mode: u64,
    /// Writes to private file pages that gave the program its own copy.
    pub copy_on_write: u64,
    /// Reads of never-written anonymous memory (the zero page, not RSS).
    pub zero_page: u64,
    /// Faults on addresses outside every known mapping.
    pub outside_mappings: u64,
}

impl std::ops::AddAssign for FaultCounters {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.count += other.count;
        self.paged_in += other.paged_in;
        self.write += other.write;
        self.protection += other.protection;
        self.instruction += other.instruction;
        self.kernel_mode += other.kernel_mode;
        self.copy_on_write += other.copy_on_write;
        self.zero_page += other.zero_page;
        self.outside_mappings += other.outside_mappings;
    }
}

impl FaultCounters {
    /// Bytes faulted into RSS.
    pub fn paged_in_bytes(&self) -> u64 {
        self.paged_in * super::pages::PAGE_SIZE
    }
}

/// Faults taken at one stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackFaults {
    pub count: u64,
    /// Of them, faults that brought a page into RSS.
    pub paged_in: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyFreeCounters {
    /// In-use bytes given back with `MADV_FREE`.
    pub marked: u64,
    /// Lazily freed bytes the program wrote to again, so in use again.
    pub reused: u64,
    /// LazyFree the kernel reports that no observed `MADV_FREE` explains.
    pub unobserved: u64,
}

impl std::ops::AddAssign for LazyFreeCounters {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.marked += other.marked;
        self.reused += other.reused;
        self.unobserved += other.unobserved;
    }
}

#[derive(Clone, Debug, Default)]
pub struct Activity {
    pub calls: BTreeMap<Call, CallStats>,
    pub faults: FaultCounters,
    /// Bytes that left RSS, by how.
    pub released: BTreeMap<Release, u64>,
    pub lazyfree: LazyFreeCounters,
    /// The same, by the stack of the call.
    pub calls_by_stack: StackKeyed<(Call, Option<StackId>), CallStats>,
    /// Faults by the stack that took them.
    pub faults_by_stack: StackKeyed<Option<StackId>, StackFaults>,
    /// Pages found resident in /proc that no event had mapped.
    pub discovered_bytes: u64,
    /// Times the address space was replaced by `execve`.
    pub execs: u64,
}

impl Activity {
    pub fn call(&mut self, call: Call, stack: Option<StackId>) -> CallCounter<'_> {
        CallCounter {
            activity: self,
            call,
            stack,
        }
    }

    pub fn call_stats(&self, call: Call) -> CallStats {
        self.calls.get(&call).copied().unwrap_or_default()
    }

    /// Adds another process's totals to these, as for a cgroup's whole.
    /// The by-stack tables are left out: a stack's addresses mean
    /// something only in its own process, whose profile has them.
    pub fn absorb(&mut self, other: &Self) {
        for (&call, &stats) in &other.calls {
            *self.calls.entry(call).or_default() += stats;
        }
        self.faults += other.faults;
        for (&release, &bytes) in &other.released {
            *self.released.entry(release).or_default() += bytes;
        }
        self.lazyfree += other.lazyfree;
        self.discovered_bytes += other.discovered_bytes;
        self.execs += other.execs;
    }

    /// Calls `count` with every stack the counts by stack name.
    pub fn stacks_counted(&self, mut count: impl FnMut(StackId)) {
        self.calls_by_stack
            .keys()
            .filter_map(|(_, stack)| *stack)
            .chain(self.faults_by_stack.keys().filter_map(|stack| *stack))
            .for_each(&mut count);
    }

    /// Moves the counts of stacks that `keep` refuses to no stack, so
    /// those stacks can be dropped from the table and the totals stay.
    pub fn fold_stacks(&mut self, keep: impl Fn(StackId) -> bool) {
        let kept = |stack: Option<StackId>| stack.filter(|&id| keep(id));
        for ((call, stack), stats) in std::mem::take(&mut self.calls_by_stack) {
            *self.calls_by_stack.entry((call, kept(stack))).or_default() += stats;
        }
        for (stack, faults) in std::mem::take(&mut self.faults_by_stack) {
            let into = self.faults_by_stack.entry(kept(stack)).or_default();
            into.count += faults.count;
            into.paged_in += faults.paged_in;
        }
    }
}

/// Updates a call's totals and its stack's in one go.
pub struct CallCounter<'a> {
    activity: &'a mut Activity,
    call: Call,
    stack: Option<StackId>,
}

impl CallCounter<'_> {
    fn update(&mut self, f: impl Fn(&mut CallStats)) {
        f(self.activity.calls.entry(self.call).or_default());
        f(self
            .activity
            .calls_by_stack
            .entry((self.call, self.stack))
            .or_default());
    }

    pub fn succeeded(&mut self, bytes: u64) {
        // Saturating: a garbage record may name any length.
        self.update(|stats| {
            stats.calls += 1;
            stats.bytes = stats.bytes.saturating_add(bytes);
        });
    }

    pub fn failed(&mut self) {
        self.update(|stats| {
            stats.calls += 1;
            stats.failed += 1;
        });
    }

    pub fn resident(&mut self, bytes: u64) {
        if bytes > 0 {
            self.update(|stats| stats.resident_bytes = stats.resident_bytes.saturating_add(bytes));
        }
    }
}
