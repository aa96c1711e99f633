//! How much of what memtrace attributes stands under whole stacks: of the
//! resident bytes faulted in since attaching, and of the bytes given back,
//! the share whose stacks reach their thread's root.

use super::holders::{resident_by_holder, Holder};
use crate::{
    intake::{CutReason, StackEnd},
    model::{Call, Effect},
    symbolize::{Completeness, Namer},
};

/// Bytes under whole and cut stacks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackCoverage {
    /// Resident bytes faulted in (or populated) since attaching.
    pub resident: Completeness,
    /// Bytes given back (unmapped, released or lazily freed) since attaching.
    pub released: Completeness,
}

impl std::ops::AddAssign for StackCoverage {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.resident += other.resident;
        self.released += other.released;
    }
}

/// Whether `call` gives memory back: unmaps it, releases it, or marks it
/// lazily freed.
pub fn gives_back(call: Call) -> bool {
    match call {
        Call::Munmap | Call::Mremap | Call::Brk => true,
        Call::Madvise(advice) => matches!(advice.effect(), Effect::Release | Effect::LazyFree),
        Call::Mmap => false,
    }
}

pub fn coverage(namer: &mut Namer<'_>) -> StackCoverage {
    let mut coverage = StackCoverage::default();
    for (holder, held) in resident_by_holder(namer.model) {
        let end = match holder {
            Holder::Stack(stack) => end_of(namer, Some(stack)),
            // A fault whose stack could not be taken.
            Holder::NoStack => end_of(namer, None),
            // Resident before attaching, set up by exec, or unexplained:
            // no call of the program's brought them in while traced.
            _ => continue,
        };
        coverage.resident.add(end, held.resident());
    }
    let calls: Vec<_> = namer
        .model
        .activity()
        .calls_by_stack
        .iter()
        .filter(|((call, _), stats)| gives_back(*call) && stats.bytes > 0)
        .map(|(&(_, stack), stats)| (stack, stats.bytes))
        .collect();
    for (stack, bytes) in calls {
        let end = end_of(namer, stack);
        coverage.released.add(end, bytes);
    }
    coverage
}

fn end_of(namer: &mut Namer<'_>, stack: Option<crate::intake::StackId>) -> StackEnd {
    namer
        .named(stack)
        .map_or(StackEnd::Cut(CutReason::NotTaken), |named| named.end)
}
