//! Byte totals of the model's pages, in the kernel's terms.

use super::pages::{Cause, PageKind, PageMap, PageUse, PAGE_SHIFT};

/// Resident bytes by why they are there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByCause {
    pub fault: u64,
    pub fault_around: u64,
    pub populate: u64,
    pub before_attach: u64,
    pub exec: u64,
    pub unobserved: u64,
}

impl std::ops::AddAssign for ByCause {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.fault += other.fault;
        self.fault_around += other.fault_around;
        self.populate += other.populate;
        self.before_attach += other.before_attach;
        self.exec += other.exec;
        self.unobserved += other.unobserved;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Resident bytes: anon + file + shmem.
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    /// Resident bytes given back with `MADV_FREE` (part of `anon`).
    pub lazyfree: u64,
    /// Resident bytes not lazily freed.
    pub in_use: u64,
    /// Bytes mapped to the shared zero page (not in RSS).
    pub zero_page: u64,
    pub by_cause: ByCause,
}

impl std::ops::AddAssign for Totals {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.rss += other.rss;
        self.anon += other.anon;
        self.file += other.file;
        self.shmem += other.shmem;
        self.lazyfree += other.lazyfree;
        self.in_use += other.in_use;
        self.zero_page += other.zero_page;
        self.by_cause += other.by_cause;
    }
}

impl Totals {
    pub fn of(pages: &PageMap) -> Self {
        let mut totals = Self::default();
        for (range, state) in pages.runs() {
            totals.add(
                state.page_use,
                state.kind,
                state.origin.cause,
                (range.end - range.start) << PAGE_SHIFT,
            );
        }
        totals
    }

    fn add(&mut self, page_use: PageUse, kind: PageKind, cause: Cause, bytes: u64) {
        if !page_use.resident() {
            self.zero_page += bytes;
            return;
        }
        self.rss += bytes;
        match kind {
            PageKind::Anon => self.anon += bytes,
            PageKind::File => self.file += bytes,
            PageKind::Shmem => self.shmem += bytes,
        }
        match page_use {
            PageUse::LazyFree => self.lazyfree += bytes,
            _ => self.in_use += bytes,
        }
        let by_cause = &mut self.by_cause;
        *match cause {
            Cause::Fault => &mut by_cause.fault,
            Cause::FaultAround => &mut by_cause.fault_around,
            Cause::Populate => &mut by_cause.populate,
            Cause::BeforeAttach => &mut by_cause.before_attach,
            Cause::Exec => &mut by_cause.exec,
            Cause::Unobserved => &mut by_cause.unobserved,
        } += bytes;
    }
}
