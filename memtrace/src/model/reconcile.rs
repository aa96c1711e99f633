//! Folding the kernel's view (/proc/PID/smaps and pagemap) into the model.
//!
//! Events say why memory changed; /proc says what is resident now. Each
//! interval the session reads smaps, and for every VMA where the model's
//! bytes differ from the kernel's, pagemap, and hands both here:
//!
//! - mappings the model lacks are added (set up by `execve`, or mapped before
//!   attaching), mappings it has that the kernel no longer does are dropped;
//! - resident pages the model lacks are added, attributed to a nearby fault
//!   when the kernel mapped them along with it (a huge page, fault-around),
//!   otherwise marked unobserved; pages the model has that are gone were
//!   reclaimed (or paged out on request);
//! - per VMA, the kernel's LazyFree decides how many lazily freed bytes are
//!   still lazily freed: the rest were written again.
//!
//! VMAs that events touched while /proc was read are left for the next
//! interval: their /proc numbers are already out of date.

use std::ops::Range;

use super::{
    activity::Release,
    extents::{Backing, CreatedBy, Extent},
    pages::{Cause, Origin, Page, PageKind, PageState, PageUse, PAGE_SHIFT, PAGE_SIZE},
    AddressSpace,
};

/// One VMA as /proc/PID/smaps shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelVma {
    pub start: u64,
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    pub shared: bool,
    pub offset: u64,
    /// The path column: empty for anonymous memory, `[heap]`, a file...
    pub path: String,
    pub rss: u64,
    pub anonymous: u64,
    pub lazyfree: u64,
    pub anon_huge: u64,
    pub swap: u64,
    /// Its pages are raw frames the kernel does not count (`VM_PFNMAP`,
    /// `VM_IO`), such as `[vvar]`.
    pub raw_frames: bool,
}

impl KernelVma {
    pub fn pages(&self) -> Range<Page> {
        self.start >> PAGE_SHIFT..self.end >> PAGE_SHIFT
    }

    /// What backs this VMA, from its path and flags.
    pub fn backing(&self) -> Backing {
        let path = self.path.as_str();
        let shmem = path.starts_with("/dev/zero")
            || path.starts_with("/SYSV")
            || path.starts_with("/memfd:")
            || path.starts_with("/dev/shm/");
        match path {
            "" if self.shared => Backing::Shmem { path: None },
            "" => Backing::Anon,
            "[heap]" => Backing::Heap,
            "[stack]" => Backing::Stack,
            _ if path.starts_with("[anon") => Backing::Anon,
            _ if path.starts_with('[') => Backing::Special(path.to_owned()),
            _ if shmem => Backing::Shmem {
                path: Some(path.to_owned()),
            },
            _ => Backing::File {
                path: Some(path.to_owned()),
                offset: self.offset,
            },
        }
    }
}

/// What pagemap says of one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageEntry {
    Absent,
    Swapped,
    Present {
        pfn: u64,
        /// A page of a file or of shared memory, not the process's own
        /// anonymous page.
        file_or_shared: bool,
    },
}

/// What is known of pages the kernel does not have resident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NotResident {
    /// pagemap: not mapped.
    Absent,
    /// pagemap: swapped out.
    Swapped,
    /// smaps counts none of the VMA's pages in its RSS; zero-page mappings
    /// are never counted, so they may still be there.
    Uncounted,
}

/// When in the process's life the reconciliation happens: it decides what
/// pages found without an event are put down to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// Attaching to a running process: everything found was there before.
    Attach,
    /// An ordinary interval.
    Interval,
}

/// What `execve` itself maps: the program, its ELF interpreter, the bss
/// after either, and the kernel's own areas (`[stack]`, `[vdso]`...).
/// Everything else in a fresh address space was mapped afterwards by
/// syscalls memtrace traces; found with no event (records lost, or read
/// late), it is unexplained, not the exec's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecImage {
    /// The program's path, as smaps shows it.
    pub program: Option<String>,
    /// Where the interpreter was loaded (`AT_BASE`); `None` for a static
    /// program.
    pub interpreter_base: Option<u64>,
}

impl ExecImage {
    /// Which of `vmas` (sorted by start) the exec made.
    fn made(&self, vmas: &[KernelVma]) -> Vec<bool> {
        let interpreter = self.interpreter_base.and_then(|base| {
            vmas.iter()
                .find(|vma| (vma.start..vma.end).contains(&base))
                .map(|vma| vma.path.as_str())
        });
        let loaded = |path: &str| {
            !path.is_empty() && (self.program.as_deref() == Some(path) || interpreter == Some(path))
        };
        let mut made = Vec::with_capacity(vmas.len());
        let mut previous: Option<&KernelVma> = None;
        for vma in vmas {
            let bss = vma.path.is_empty()
                && previous.is_some_and(|before| before.end == vma.start && loaded(&before.path));
            made.push(vma.path.starts_with('[') || loaded(&vma.path) || bss);
            previous = Some(vma);
        }
        made
    }
}

/// Address ranges that events touched while /proc was being read.
#[derive(Clone, Debug, Default)]
pub struct Busy {
    ranges: Vec<Range<u64>>,
    everything: bool,
    /// Lazily freed bytes events took out of the model in these ranges
    /// (released, or written again).
    lazyfree_lost: Vec<(Range<u64>, u64)>,
}

impl Busy {
    /// Notes that an event in `range` took `bytes` out of the model's
    /// LazyFree.
    pub fn lazyfree_lost(&mut self, range: Range<u64>, bytes: u64) {
        if bytes > 0 {
            self.lazyfree_lost.push((range, bytes));
        }
    }

    /// LazyFree bytes events took out of `range`; `None` when unknown (the
    /// whole address space was busy).
    fn lazyfree_lost_in(&self, range: &Range<u64>) -> Option<u64> {
        (!self.everything).then(|| {
            self.lazyfree_lost
                .iter()
                .filter(|(lost, _)| lost.start < range.end && range.start < lost.end)
                .map(|(_, bytes)| bytes)
                .sum()
        })
    }

    pub fn add(&mut self, range: Range<u64>) {
        if !range.is_empty() {
            self.ranges.push(range);
        }
    }

    /// Marks the whole address space busy (exec, lost records).
    pub fn all(&mut self) {
        self.everything = true;
    }

    pub fn overlaps(&self, range: &Range<u64>) -> bool {
        self.everything
            || self
                .ranges
                .iter()
                .any(|busy| busy.start < range.end && range.start < busy.end)
    }
}

/// One reading of /proc, and how to take it.
#[derive(Clone, Copy, Debug)]
pub struct Reading<'a> {
    /// The kernel's VMAs, sorted by start.
    pub vmas: &'a [KernelVma],
    pub busy: &'a Busy,
    pub moment: Moment,
    /// Compare every quiet VMA page by page even where the byte counts
    /// agree: after records were lost, equal counts can hide moved pages.
    pub scan_all: bool,
    /// The kernel's zero page frame, when known.
    pub zero_pfn: Option<u64>,
    /// How far below the model the kernel's LazyFree may be without meaning
    /// anything: the kernel moves pages to its lazy-free list through
    /// per-CPU batches, and counts them only once a batch is drained.
    pub lazyfree_slack: u64,
    /// The model's LazyFree in each of `vmas` when smaps was read (before
    /// the events of the read were applied); empty when nothing happened
    /// meanwhile.
    pub lazyfree_at_read: &'a [u64],
}

/// Pages of pagemap read at a time: 64 MiB of address space, 128 KiB of
/// entries.
pub const PAGEMAP_CHUNK_PAGES: u64 = 16 * 1024;

/// Pages in one of the kernel's per-CPU folio batches (FOLIO_BATCH_SIZE).
pub const FOLIO_BATCH_PAGES: u64 = 31;

/// How far the model was from the kernel, and what was done about it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The difference between the kernel's RSS and the model's, summed as
    /// absolute values per VMA (so errors in different mappings add up
    /// rather than cancel), over the VMAs events did not touch while /proc
    /// was read, after correction: bytes the model cannot account for.
    pub residual: u64,
    /// The same over the VMAs that were busy (changes still in flight).
    pub in_flight: u64,
    /// VMAs whose pages were compared one by one.
    pub scanned_vmas: usize,
    /// Bytes found resident that the model did not have.
    pub added: u64,
    /// Bytes the model had that were gone.
    pub removed: u64,
}

impl std::ops::AddAssign for Outcome {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.residual += other.residual;
        self.in_flight += other.in_flight;
        self.scanned_vmas += other.scanned_vmas;
        self.added += other.added;
        self.removed += other.removed;
    }
}

/// Pages within this many of a fault are taken to have been mapped with it:
/// a transparent huge page is 2 MiB; fault-around maps up to 64 KiB.
const HUGE_PAGE_PAGES: u64 = (2 << 20) / PAGE_SIZE;
const FAULT_AROUND_PAGES: u64 = (64 << 10) / PAGE_SIZE;

impl AddressSpace {
    /// Reconciles the model with a reading of /proc, reading pagemap through
    /// `read_pagemap` for the VMAs whose bytes differ.
    pub fn reconcile(
        &mut self,
        reading: Reading<'_>,
        mut read_pagemap: impl FnMut(Range<Page>) -> Option<Vec<PageEntry>>,
    ) -> Outcome {
        let Reading {
            vmas,
            busy,
            moment,
            scan_all,
            zero_pfn,
            lazyfree_slack,
            lazyfree_at_read,
        } = reading;
        let mut outcome = Outcome::default();
        self.sync_extents(vmas, busy, moment);
        self.drop_pages_outside(vmas, busy);
        for (index, vma) in vmas.iter().enumerate() {
            let range = vma.start..vma.end;
            if busy.overlaps(&range) {
                let (rss, _, _) = self.resident_in(vma.pages());
                outcome.in_flight += vma.rss.abs_diff(rss);
                // A busy heap (a Go program allocating all the time) must
                // still see its lazily freed pages written again: compare
                // with the model as it was when smaps was read, less what
                // events took out of LazyFree since.
                if let (Some(&at_read), Some(lost)) =
                    (lazyfree_at_read.get(index), busy.lazyfree_lost_in(&range))
                {
                    let excess = at_read.saturating_sub(vma.lazyfree + lost);
                    if excess > lazyfree_slack {
                        self.mark_reused(vma.pages(), excess);
                    }
                }
                continue;
            }
            if (scan_all && !vma.raw_frames) || self.needs_page_scan(vma) {
                self.scan(vma, &mut read_pagemap, zero_pfn, moment, &mut outcome);
            }
            // LazyFree the kernel has and the model lacks can only come from
            // before attaching or from lost records: every MADV_FREE is an
            // event. Otherwise it is the kernel freeing pages between the
            // reads of smaps and pagemap, and believing it would misplace
            // lazily freed pages.
            let place_unexplained = moment == Moment::Attach || scan_all;
            self.reconcile_lazyfree(vma, moment, lazyfree_slack, place_unexplained);
            let (rss, _, _) = self.resident_in(vma.pages());
            outcome.residual += vma.rss.abs_diff(rss);
        }
        self.reclaim_requested.clear();
        outcome
    }

    /// Compares the model's pages in `vma` with pagemap's, a bounded chunk
    /// at a time: memtrace's own memory must not grow with the size of the
    /// target's mappings (a reservation can be terabytes). A VMA with
    /// nothing resident needs no pagemap at all.
    fn scan(
        &mut self,
        vma: &KernelVma,
        read_pagemap: &mut impl FnMut(Range<Page>) -> Option<Vec<PageEntry>>,
        zero_pfn: Option<u64>,
        moment: Moment,
        outcome: &mut Outcome,
    ) {
        if vma.rss == 0 && vma.swap == 0 {
            outcome.scanned_vmas += 1;
            outcome.removed += self.vanish(vma.pages(), NotResident::Uncounted);
            return;
        }
        let pages = vma.pages();
        let mut first = pages.start;
        while first < pages.end {
            let chunk = first..first.saturating_add(PAGEMAP_CHUNK_PAGES).min(pages.end);
            let Some(entries) = read_pagemap(chunk.clone()) else {
                return;
            };
            if first == pages.start {
                outcome.scanned_vmas += 1;
            }
            let (added, removed) = self.apply_pagemap(vma, first, &entries, zero_pfn, moment);
            outcome.added += added;
            outcome.removed += removed;
            if (entries.len() as u64) < chunk.end - chunk.start {
                return;
            }
            first = chunk.end;
        }
    }

    /// Unmaps model pages that lie in no kernel VMA.
    fn drop_pages_outside(&mut self, vmas: &[KernelVma], busy: &Busy) {
        let Some(last) = vmas.last() else { return };
        let everything = 0..last.end.max(u64::MAX >> 1);
        let outside = uncovered(&everything, vmas.iter().map(|vma| vma.start..vma.end));
        for range in outside {
            if !busy.overlaps(&range) {
                self.release(
                    range.start >> PAGE_SHIFT..range.end >> PAGE_SHIFT,
                    Release::Unobserved,
                );
            }
        }
    }

    /// Brings the extents in line with the kernel's VMAs (sorted by start)
    /// outside `busy`.
    pub fn sync_extents(&mut self, vmas: &[KernelVma], busy: &Busy, moment: Moment) {
        // Mappings the kernel no longer has.
        let mut kernel = vmas.iter().peekable();
        let stale: Vec<Range<u64>> = self
            .extents
            .iter()
            .filter_map(|(start, extent)| {
                let range = start..extent.end;
                while kernel.next_if(|vma| vma.end <= range.start).is_some() {}
                let covered = kernel
                    .peek()
                    .is_some_and(|vma| vma.start <= range.start && vma.end >= range.end);
                (!covered && !busy.overlaps(&range)).then_some(range)
            })
            .collect();
        for range in stale {
            // Part of it may still be mapped (a VMA boundary moved): keep
            // those parts, drop the rest.
            for gap in uncovered(&range, vmas.iter().map(|vma| vma.start..vma.end)) {
                self.release(
                    gap.start >> PAGE_SHIFT..gap.end >> PAGE_SHIFT,
                    Release::Unobserved,
                );
                self.extents.remove(gap);
            }
        }

        let made_by_exec = if self.fresh_exec {
            self.exec_image.made(vmas)
        } else {
            vec![false; vmas.len()]
        };
        for (vma, made_by_exec) in vmas.iter().zip(made_by_exec) {
            let range = vma.start..vma.end;
            if busy.overlaps(&range) {
                continue;
            }
            self.extents.split_at(vma.start);
            self.extents.split_at(vma.end);
            let backing = vma.backing();
            // Learn what events cannot tell: paths, and protection changes.
            let starts: Vec<u64> = self
                .extents
                .overlapping(range.clone())
                .map(|(s, _)| s)
                .collect();
            for start in starts {
                if let Some(extent) = self.extents.get_mut(start) {
                    extent.prot = vma.prot;
                    extent.shared = vma.shared;
                    extent.backing = match backing {
                        Backing::File { ref path, .. } => Backing::File {
                            path: path.clone(),
                            offset: vma.offset + (start - vma.start),
                        },
                        ref other => other.clone(),
                    };
                }
            }
            // Mappings the model does not have.
            let created_by = match moment {
                Moment::Attach => CreatedBy::BeforeAttach,
                Moment::Interval if made_by_exec => CreatedBy::Exec,
                Moment::Interval => CreatedBy::Unobserved,
            };
            let known: Vec<Range<u64>> = self
                .extents
                .overlapping(range.clone())
                .map(|(start, extent)| start..extent.end)
                .collect();
            for gap in uncovered(&range, known.into_iter()) {
                let offset = vma.offset + (gap.start - vma.start);
                self.extents.insert(
                    gap.start,
                    Extent {
                        end: gap.end,
                        prot: vma.prot,
                        shared: vma.shared,
                        backing: match backing {
                            Backing::File { ref path, .. } => Backing::File {
                                path: path.clone(),
                                offset,
                            },
                            ref other => other.clone(),
                        },
                        created_by,
                        stack: None,
                    },
                );
            }
            if vma.path == "[heap]" {
                self.heap = Some(super::Heap {
                    start: vma.start,
                    end: vma.end,
                });
            }
        }
        self.fresh_exec = false;
    }

    /// Whether the model's resident bytes in `vma` differ from the kernel's,
    /// so that its pages need to be compared one by one.
    pub fn needs_page_scan(&self, vma: &KernelVma) -> bool {
        if vma.raw_frames {
            return false;
        }
        let (rss, anon, _) = self.resident_in(vma.pages());
        rss != vma.rss || anon != vma.anonymous
    }

    /// Resident, anonymous and lazily freed bytes of the model in `pages`.
    pub fn resident_in(&self, pages: Range<Page>) -> (u64, u64, u64) {
        let (mut rss, mut anon, mut lazyfree) = (0, 0, 0);
        for (range, state) in self.pages.runs_in(pages) {
            if !state.page_use.resident() {
                continue;
            }
            let bytes = (range.end - range.start) << PAGE_SHIFT;
            rss += bytes;
            if state.kind == PageKind::Anon {
                anon += bytes;
            }
            if state.page_use == PageUse::LazyFree {
                lazyfree += bytes;
            }
        }
        (rss, anon, lazyfree)
    }

    /// Makes the model's pages in `vma` what pagemap says: `entries`, one
    /// per page from page `first` on; `zero_pfn` is the kernel's zero page.
    pub fn apply_pagemap(
        &mut self,
        vma: &KernelVma,
        first: Page,
        entries: &[PageEntry],
        zero_pfn: Option<u64>,
        moment: Moment,
    ) -> (u64, u64) {
        let extent_kind = match vma.backing() {
            Backing::Shmem { .. } => PageKind::Shmem,
            _ => PageKind::File,
        };
        let (mut added, mut removed) = (0, 0);
        let mut index = 0;
        while index < entries.len() {
            let page = first + index as u64;
            let entry = entries[index];
            index += 1;
            match entry {
                PageEntry::Absent | PageEntry::Swapped => {
                    // A stretch of pages not there is taken in one go.
                    let same = entries[index..].iter().take_while(|&&e| e == entry).count();
                    index += same;
                    let end = first + index as u64;
                    let how = if entry == PageEntry::Swapped {
                        NotResident::Swapped
                    } else {
                        NotResident::Absent
                    };
                    removed += self.vanish(page..end, how);
                }
                PageEntry::Present { pfn, .. } if Some(pfn) == zero_pfn => {
                    if self
                        .pages
                        .get(page)
                        .is_some_and(|state| state.page_use.resident())
                    {
                        removed += self.release(page..page + 1, Release::Unobserved);
                    }
                }
                PageEntry::Present { file_or_shared, .. } => {
                    let kind = if file_or_shared {
                        extent_kind
                    } else {
                        PageKind::Anon
                    };
                    match self.pages.get(page) {
                        Some(state) if state.page_use.resident() => {
                            if state.kind != kind {
                                self.pages.set_page(page, PageState { kind, ..state });
                            }
                        }
                        current => {
                            added += PAGE_SIZE;
                            let origin = self.found_origin(page, kind, vma, moment, current);
                            self.pages.set_page(
                                page,
                                PageState {
                                    page_use: PageUse::InUse,
                                    kind,
                                    origin,
                                },
                            );
                        }
                    }
                }
            }
        }
        self.activity.discovered_bytes += added;
        (added, removed)
    }

    /// Takes out the model's resident pages in `pages`, which the kernel
    /// does not have resident; returns the bytes that left, each counted
    /// under why it most likely went.
    fn vanish(&mut self, pages: Range<Page>, known: NotResident) -> u64 {
        let runs: Vec<(Range<Page>, PageState)> = self.pages.runs_in(pages).collect();
        let mut removed = 0;
        for (run, state) in runs {
            if !state.page_use.resident() {
                if known != NotResident::Uncounted {
                    self.pages.remove(run, |_, _| {});
                }
                continue;
            }
            for (part, requested) in self.reclaim_requested_parts(run) {
                let how = if state.page_use == PageUse::LazyFree {
                    Release::LazyFreeReclaimed
                } else if requested {
                    Release::Madvise(super::Advice::PAGEOUT)
                } else if known == NotResident::Swapped || state.kind != PageKind::Anon {
                    Release::Reclaimed
                } else {
                    Release::Unobserved
                };
                removed += self.release(part, how);
            }
        }
        removed
    }

    /// `pages` cut where the ranges the program asked to have reclaimed
    /// begin and end, each part with whether it was asked for.
    fn reclaim_requested_parts(&self, pages: Range<Page>) -> Vec<(Range<Page>, bool)> {
        let mut cuts = vec![pages.start, pages.end];
        for requested in &self.reclaim_requested {
            cuts.extend(
                [requested.start, requested.end]
                    .into_iter()
                    .filter(|page| pages.contains(page)),
            );
        }
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .map(|pair| {
                let part = pair[0]..pair[1];
                let requested = self
                    .reclaim_requested
                    .iter()
                    .any(|range| range.start <= part.start && part.end <= range.end);
                (part, requested)
            })
            .collect()
    }

    /// Why a page found resident with no event got there.
    fn found_origin(
        &self,
        page: Page,
        kind: PageKind,
        vma: &KernelVma,
        moment: Moment,
        current: Option<PageState>,
    ) -> Origin {
        if moment == Moment::Attach {
            return Origin::new(Cause::BeforeAttach, None);
        }
        // A read that mapped the zero page, then a write the kernel took
        // care of without a fault we saw (e.g. a huge page): the same code.
        if let Some(state) = current {
            return state.origin;
        }
        // The kernel maps more than the faulting page in two cases only:
        // file pages around it (fault-around), and a whole huge page.
        let window = if kind != PageKind::Anon {
            Some(FAULT_AROUND_PAGES)
        } else if vma.anon_huge > 0 {
            Some(HUGE_PAGE_PAGES)
        } else {
            None
        };
        if let Some(stack) = window.and_then(|pages| self.fault_within(page, pages)) {
            return Origin::new(Cause::FaultAround, stack);
        }
        match self.extents.find(page << PAGE_SHIFT) {
            Some((_, extent)) if extent.created_by == CreatedBy::Exec => {
                Origin::new(Cause::Exec, None)
            }
            Some((_, extent)) if extent.created_by == CreatedBy::BeforeAttach => {
                Origin::new(Cause::BeforeAttach, None)
            }
            _ => Origin::new(Cause::Unobserved, None),
        }
    }

    /// The stack of a fault in the same aligned block of `pages` as `page`.
    fn fault_within(&self, page: Page, pages: u64) -> Option<Option<crate::intake::StackId>> {
        let start = page & !(pages - 1);
        self.pages
            .runs_in(start..start + pages)
            .find(|(_, state)| state.origin.cause == Cause::Fault)
            .map(|(_, state)| state.origin.stack)
    }

    /// Makes the model's lazily freed bytes in `vma` equal the kernel's
    /// LazyFree (a shortfall within `slack` is the kernel's batching). Lazily freed pages written again stop counting as LazyFree
    /// without any event; which ones is not visible, so the lowest addresses
    /// are taken to be the reused ones (allocators reuse low addresses
    /// first). LazyFree with no observed `MADV_FREE` goes to the highest
    /// in-use pages (runtimes give back from the top), when
    /// `place_unexplained` says it can be real (at attach, or after lost
    /// records).
    pub fn reconcile_lazyfree(
        &mut self,
        vma: &KernelVma,
        moment: Moment,
        slack: u64,
        place_unexplained: bool,
    ) {
        let (_, _, model) = self.resident_in(vma.pages());
        if model > vma.lazyfree + slack {
            self.mark_reused(vma.pages(), model - vma.lazyfree);
        } else if model < vma.lazyfree && place_unexplained {
            self.place_lazyfree(vma.pages(), vma.lazyfree - model, moment);
        }
    }

    /// Takes `bytes` of the lazily freed pages in `pages` to have been
    /// written again, lowest addresses first.
    fn mark_reused(&mut self, pages: Range<Page>, bytes: u64) {
        let mut excess = bytes;
        let runs: Vec<(Range<Page>, PageState)> = self
            .pages
            .runs_in(pages)
            .filter(|(_, state)| state.page_use == PageUse::LazyFree)
            .collect();
        for (range, state) in runs {
            if excess == 0 {
                break;
            }
            let take = ((range.end - range.start) << PAGE_SHIFT).min(excess);
            let reused = range.start..range.start + (take >> PAGE_SHIFT);
            self.pages.set(
                reused,
                PageState {
                    page_use: PageUse::InUse,
                    ..state
                },
            );
            excess -= take;
            self.activity.lazyfree.reused += take;
        }
    }

    /// Makes `bytes` of the in-use anonymous pages in `pages` lazily freed,
    /// highest addresses first.
    fn place_lazyfree(&mut self, pages: Range<Page>, bytes: u64, moment: Moment) {
        let mut missing = bytes;
        let runs: Vec<(Range<Page>, PageState)> = self
            .pages
            .runs_in(pages)
            .filter(|(_, state)| state.page_use == PageUse::InUse && state.kind == PageKind::Anon)
            .collect();
        for (range, state) in runs.into_iter().rev() {
            if missing == 0 {
                break;
            }
            let take = ((range.end - range.start) << PAGE_SHIFT).min(missing);
            let freed = range.end - (take >> PAGE_SHIFT)..range.end;
            self.pages.set(
                freed,
                PageState {
                    page_use: PageUse::LazyFree,
                    ..state
                },
            );
            missing -= take;
            if moment == Moment::Interval {
                self.activity.lazyfree.unobserved += take;
            }
        }
    }
}

/// The parts of `range` that none of `covered` (sorted by start) covers.
fn uncovered(range: &Range<u64>, covered: impl Iterator<Item = Range<u64>>) -> Vec<Range<u64>> {
    let mut gaps = Vec::new();
    let mut next = range.start;
    for piece in covered.filter(|piece| piece.end > range.start && piece.start < range.end) {
        if piece.start > next {
            gaps.push(next..piece.start);
        }
        next = next.max(piece.end);
    }
    if next < range.end {
        gaps.push(next..range.end);
    }
    gaps
}
