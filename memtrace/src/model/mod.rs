//! The address-space model: the traced process's mappings and pages, kept
//! current from events and checked against /proc.
//!
//! Pure logic, no I/O. [`AddressSpace::apply`] takes events in the order the
//! kernel produced them; [`reconcile`] folds in what /proc says, which is
//! the ground truth for *which* pages are resident, while events say *why*.

pub mod activity;
pub mod advice;
pub mod extents;
pub mod pages;
pub mod reconcile;
mod totals;

use std::ops::Range;

pub use activity::{Activity, Call, CallStats, Release};
pub use advice::{Advice, Effect};
pub use extents::{Backing, CreatedBy, Extent, Extents};
pub use pages::{Cause, Origin, Page, PageKind, PageMap, PageState, PageUse, PAGE_SIZE};
pub use reconcile::ExecImage;
pub use totals::Totals;

use crate::intake::{Access, Errno, Event, EventKind, Fault, Madvise, Mmap, Mremap, StackId};
use pages::{pages_covering, PAGE_SHIFT};

/// The model of one process's address space.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    extents: Extents,
    pages: PageMap,
    heap: Option<Heap>,
    activity: Activity,
    /// Ranges the program asked the kernel to reclaim (`MADV_PAGEOUT`) since
    /// the last reconciliation: pages that vanish there went that way.
    reclaim_requested: Vec<Range<Page>>,
    /// `execve` replaced the address space and /proc has not been read
    /// since: the mappings found there that the exec itself makes (see
    /// [`ExecImage`]) were set up by it.
    fresh_exec: bool,
    /// What the last exec mapped, as far as the session could tell.
    exec_image: ExecImage,
    /// The kernel's NUMA balancing is on: it unmaps present pages now and
    /// then to sample accesses, so a missing-page fault no longer proves a
    /// page had left.
    numa_hinting: bool,
    /// How far the main thread's stack may grow (`RLIMIT_STACK`); `None`
    /// for the kernel's default.
    stack_limit: Option<u64>,
}

/// The brk heap: `[start, end)`, page-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Heap {
    start: u64,
    end: u64,
}

const MAP_TYPE: u32 = 0x0f;
const MAP_PRIVATE: u32 = libc::MAP_PRIVATE as u32;
const MAP_ANONYMOUS: u32 = libc::MAP_ANONYMOUS as u32;
const MAP_POPULATE: u32 = libc::MAP_POPULATE as u32;
const MAP_NONBLOCK: u32 = libc::MAP_NONBLOCK as u32;
const MAP_LOCKED: u32 = libc::MAP_LOCKED as u32;
const PROT_WRITE: u32 = libc::PROT_WRITE as u32;
const PROT_ACCESS: u32 = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u32;
/// The stack size limit when the process's own is not known: the usual
/// `ulimit -s` (8 MiB).
const DEFAULT_STACK_LIMIT: u64 = 8 << 20;
/// The kernel keeps a growing stack this far from the mapping below it
/// (`stack_guard_gap`, 256 pages).
const STACK_GUARD_GAP: u64 = 256 * PAGE_SIZE;
const MREMAP_DONTUNMAP: u32 = 4;
/// madvise fails with ENOMEM when part of the range is unmapped, but still
/// applies the advice to the mapped part.
const ENOMEM: Errno = Errno(libc::ENOMEM);

fn page_align(addr: u64) -> u64 {
    addr.saturating_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

fn page_bytes(pages: u64) -> u64 {
    pages << PAGE_SHIFT
}

/// No user address on x86-64 reaches this, even with 5-level page tables
/// (2^56).
const USER_SPACE_END: u64 = 1 << 57;

/// The bytes `[start, start + len)` (`len` rounded up to pages), or `None`
/// when that is empty or runs past the end of user space: a record no
/// kernel produces for a call that succeeded.
fn span(start: u64, len: u64) -> Option<Range<u64>> {
    let end = page_align(start.checked_add(len)?);
    (len > 0 && end <= USER_SPACE_END).then_some(start..end)
}

impl AddressSpace {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn extents(&self) -> &Extents {
        &self.extents
    }

    pub fn pages(&self) -> &PageMap {
        &self.pages
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Calls `hold` with every stack that made a mapping or a resident
    /// page: the stacks that explain the address space now.
    pub fn stacks_holding(&self, mut hold: impl FnMut(StackId)) {
        for (_, state) in self.pages.runs() {
            state.origin.stack.into_iter().for_each(&mut hold);
        }
        for (_, extent) in self.extents.iter() {
            extent.stack.into_iter().for_each(&mut hold);
        }
    }

    /// See [`Activity::fold_stacks`].
    pub fn fold_activity_stacks(&mut self, keep: impl Fn(StackId) -> bool) {
        self.activity.fold_stacks(keep);
    }

    /// Says whether the kernel's NUMA balancing is on (see
    /// [`fault_outcome`]).
    pub fn set_numa_hinting(&mut self, on: bool) {
        self.numa_hinting = on;
    }

    /// Sets the process's stack size limit, which bounds how far a fault
    /// below the stack grows it.
    pub fn set_stack_limit(&mut self, bytes: u64) {
        self.stack_limit = Some(bytes);
    }

    /// The address space of a child forked from this one: the same
    /// mappings and resident pages (shared copy-on-write, and counted in the
    /// child's RSS too), with its own activity starting from nothing.
    ///
    /// The kernel copies the page tables only of mappings that have
    /// anonymous memory (an `anon_vma`): private mappings written at least
    /// once, file pages in them included. Shared memory and file mappings
    /// never written (program code, read-only data) start empty in the
    /// child and fault in again as it touches them (`vma_needs_copy`).
    pub fn forked(&self) -> Self {
        let mut pages = PageMap::new();
        for (start, extent) in self.extents.iter() {
            let range = start >> PAGE_SHIFT..extent.end >> PAGE_SHIFT;
            let has_anon = self
                .pages
                .runs_in(range.clone())
                .any(|(_, state)| state.kind == PageKind::Anon && state.page_use.resident());
            if extent.shared || !has_anon {
                continue;
            }
            for (run, state) in self.pages.runs_in(range) {
                pages.set(run, state);
            }
        }
        Self {
            extents: self.extents.clone(),
            pages,
            heap: self.heap,
            activity: Activity::default(),
            reclaim_requested: Vec::new(),
            fresh_exec: false,
            exec_image: ExecImage::default(),
            numa_hinting: self.numa_hinting,
            stack_limit: self.stack_limit,
        }
    }

    /// Tells the model what the last exec mapped, before /proc is read
    /// for the first time since.
    pub fn exec_image(&mut self, image: ExecImage) {
        self.exec_image = image;
    }

    /// Gives the file extent starting at `start` its path.
    pub fn name_file(&mut self, start: u64, name: String) {
        if let Some(Extent {
            backing: Backing::File { path, .. },
            ..
        }) = self.extents.get_mut(start)
        {
            *path = Some(name);
        }
    }

    pub fn totals(&self) -> Totals {
        Totals::of(&self.pages)
    }

    /// Applies one event of the traced process.
    pub fn apply(&mut self, event: &Event) {
        let stack = event.stack;
        match &event.kind {
            EventKind::Fault(fault) => self.fault(fault, stack),
            EventKind::Mmap(mmap) => self.mmap(mmap, stack),
            EventKind::Munmap { addr, len, result } => self.munmap(*addr, *len, *result, stack),
            EventKind::Mremap(mremap) => self.mremap(mremap, stack),
            EventKind::Brk { requested, result } => self.brk(*requested, *result, stack),
            EventKind::Madvise(madvise) => self.madvise(madvise, stack),
            EventKind::Exec => self.exec(),
            // Calls on other processes' memory, lifecycle and reclaim
            // doorbells are the session's business: the model only changes
            // through its own calls, faults and /proc.
            EventKind::ProcessMadvise(_)
            | EventKind::ForeignRssChange { .. }
            | EventKind::Exit
            | EventKind::ThreadExit
            | EventKind::Found
            | EventKind::StackSample(_)
            | EventKind::Fork { .. }
            | EventKind::OomVictim(_) => {}
        }
    }

    fn fault(&mut self, fault: &Fault, stack: Option<StackId>) {
        let access = fault.access;
        let faults = &mut self.activity.faults;
        faults.count += 1;
        faults.write += u64::from(access.write());
        faults.protection += u64::from(access.protection());
        faults.instruction += u64::from(access.instruction());
        faults.kernel_mode += u64::from(!access.user());

        let page = fault.address >> PAGE_SHIFT;
        let at_stack = self.activity.faults_by_stack.entry(stack).or_default();
        at_stack.count += 1;
        if self.extents.find(fault.address).is_none() && !self.grow_stack(fault.address) {
            // No mapping: the kernel sends SIGSEGV (a probe, a guard page, a
            // JVM's implicit null check) and maps nothing.
            self.activity.faults.outside_mappings += 1;
            return;
        }
        let mut current = self.pages.get(page);
        if current.is_some_and(|state| state.page_use == PageUse::LazyFree)
            && !access.protection()
            && !self.numa_hinting
        {
            // A missing-page fault on a page believed lazily freed: the
            // kernel had reclaimed it. (With NUMA balancing on it may as
            // well be a hinting fault on a page still there: then only
            // /proc can tell.)
            self.release(page..page + 1, Release::LazyFreeReclaimed);
            current = None;
        }
        let Some((_, extent)) = self.extents.find(fault.address) else {
            return;
        };
        let origin = Origin::new(Cause::Fault, stack);
        let Some(outcome) = fault_outcome(extent, access, current) else {
            return;
        };
        let at_stack = self.activity.faults_by_stack.entry(stack).or_default();
        at_stack.paged_in += u64::from(outcome.paged_in);
        let state = PageState {
            page_use: outcome.page_use,
            kind: outcome.kind,
            origin: if outcome.keeps_origin {
                current.map_or(origin, |state| state.origin)
            } else {
                origin
            },
        };
        let faults = &mut self.activity.faults;
        if outcome.paged_in {
            faults.paged_in += 1;
        }
        if outcome.copy_on_write {
            faults.copy_on_write += 1;
        }
        if state.page_use == PageUse::ZeroPage {
            faults.zero_page += 1;
        }
        if current.is_some_and(|old| old.page_use == PageUse::LazyFree)
            && state.page_use == PageUse::InUse
        {
            self.activity.lazyfree.reused += PAGE_SIZE;
        }
        self.pages.set_page(page, state);
    }

    /// A fault below the `[stack]` grows it down to the faulting page, as
    /// the kernel does, unless that would take it past its size limit or
    /// into the guard gap above the mapping below. Returns whether it grew.
    fn grow_stack(&mut self, addr: u64) -> bool {
        let page_start = addr & !(PAGE_SIZE - 1);
        let Some((start, stack)) = self.extents.next_after(addr) else {
            return false;
        };
        if stack.backing != Backing::Stack {
            return false;
        }
        let limit = self.stack_limit.unwrap_or(DEFAULT_STACK_LIMIT);
        if stack.end - page_start > limit {
            return false;
        }
        let guarded = self.extents.last_before(addr).is_some_and(|(_, below)| {
            below.prot & PROT_ACCESS != 0 && page_start - below.end < STACK_GUARD_GAP
        });
        if guarded {
            return false;
        }
        self.extents.extend_down(start, page_start);
        true
    }

    fn mmap(&mut self, mmap: &Mmap, stack: Option<StackId>) {
        let mut counter = self.activity.call(Call::Mmap, stack);
        let addr = match mmap.result {
            Ok(addr) => addr,
            Err(_) => {
                counter.failed();
                return;
            }
        };
        let len = page_align(mmap.len);
        counter.succeeded(len);
        let Some(range) = span(addr, len) else {
            return;
        };
        let shared = mmap.flags & MAP_TYPE != MAP_PRIVATE;
        let backing = if mmap.flags & MAP_ANONYMOUS != 0 {
            if shared {
                Backing::Shmem { path: None }
            } else {
                Backing::Anon
            }
        } else {
            Backing::File {
                path: None,
                offset: mmap.offset,
            }
        };
        let pages = range.start >> PAGE_SHIFT..range.end >> PAGE_SHIFT;
        self.release(pages.clone(), Release::Replaced);
        let extent = Extent {
            end: range.end,
            prot: mmap.prot,
            shared,
            backing,
            created_by: CreatedBy::Mmap,
            stack,
        };
        if populates(mmap) {
            let write = mmap.prot & PROT_WRITE != 0 && !shared;
            let populated = self.populate(&extent, pages, write, stack);
            self.activity.call(Call::Mmap, stack).resident(populated);
        }
        self.extents.insert(addr, extent);
    }

    fn munmap(&mut self, addr: u64, len: u64, result: Result<u64, Errno>, stack: Option<StackId>) {
        let mut counter = self.activity.call(Call::Munmap, stack);
        if result.is_err() {
            counter.failed();
            return;
        }
        let len = page_align(len);
        counter.succeeded(len);
        let Some(range) = span(addr, len) else {
            return;
        };
        let released = self.release(
            range.start >> PAGE_SHIFT..range.end >> PAGE_SHIFT,
            Release::Munmap,
        );
        self.activity.call(Call::Munmap, stack).resident(released);
        self.extents.remove(range);
    }

    fn mremap(&mut self, mremap: &Mremap, stack: Option<StackId>) {
        let mut counter = self.activity.call(Call::Mremap, stack);
        let new_addr = match mremap.result {
            Ok(addr) => addr,
            Err(_) => {
                counter.failed();
                return;
            }
        };
        let new_len = page_align(mremap.new_len);
        counter.succeeded(new_len);
        let (Some(old), Some(_)) = (
            span(mremap.old_addr, mremap.old_len),
            span(new_addr, new_len),
        ) else {
            return;
        };
        let kept = (old.end - old.start).min(new_len);

        // Shrinking gives back the tail wherever the mapping ends up.
        let mut released = self.release(
            pages_covering(old.start + kept, (old.end - old.start) - kept),
            Release::Mremap,
        );
        let template = self
            .extents
            .find(old.start)
            .map(|(_, extent)| extent.clone());
        if new_addr == old.start {
            if let Some(template) = template {
                self.extents.remove(old.clone());
                self.extents.insert(
                    new_addr,
                    Extent {
                        end: new_addr + new_len,
                        ..template
                    },
                );
            }
        } else {
            // Moved: whatever was at the destination is replaced, the pages
            // travel with the mapping.
            released += self.release(pages_covering(new_addr, new_len), Release::Mremap);
            self.pages.relocate(
                old.start >> PAGE_SHIFT..(old.start + kept) >> PAGE_SHIFT,
                new_addr >> PAGE_SHIFT,
            );
            if mremap.flags & MREMAP_DONTUNMAP == 0 {
                self.extents.remove(old.clone());
            }
            let extent = match template {
                Some(template) => Extent {
                    end: new_addr + new_len,
                    created_by: CreatedBy::Mremap,
                    stack,
                    ..template
                },
                None => Extent {
                    end: new_addr + new_len,
                    prot: 0,
                    shared: false,
                    backing: Backing::Anon,
                    created_by: CreatedBy::Mremap,
                    stack,
                },
            };
            self.extents.insert(new_addr, extent);
        }
        self.activity.call(Call::Mremap, stack).resident(released);
    }

    fn brk(&mut self, requested: u64, result: u64, stack: Option<StackId>) {
        let new_end = page_align(result);
        if new_end > USER_SPACE_END {
            return;
        }
        let Some(heap) = self.heap else {
            // The first brk seen: a query (`brk(0)`) or a request from a heap
            // not seen before; where it starts is learnt from /proc.
            self.heap = Some(Heap {
                start: new_end,
                end: new_end,
            });
            if requested != 0 {
                self.activity.call(Call::Brk, stack).succeeded(0);
            }
            return;
        };
        if requested == 0 {
            return;
        }
        let mut counter = self.activity.call(Call::Brk, stack);
        if result != requested {
            counter.failed();
            return;
        }
        counter.succeeded(new_end.abs_diff(heap.end));
        if new_end > heap.end {
            self.extents.insert(
                heap.end,
                Extent {
                    end: new_end,
                    prot: (libc::PROT_READ | libc::PROT_WRITE) as u32,
                    shared: false,
                    backing: Backing::Heap,
                    created_by: CreatedBy::Brk,
                    stack,
                },
            );
        } else if new_end < heap.end {
            let released =
                self.release(new_end >> PAGE_SHIFT..heap.end >> PAGE_SHIFT, Release::Brk);
            self.activity.call(Call::Brk, stack).resident(released);
            self.extents.remove(new_end..heap.end);
        }
        self.heap = Some(Heap {
            start: heap.start.min(new_end),
            end: new_end,
        });
    }

    /// Applies `madvise` (or one range of a `process_madvise` on the
    /// process itself).
    pub fn madvise(&mut self, madvise: &Madvise, stack: Option<StackId>) {
        let advice = Advice(madvise.advice);
        let call = Call::Madvise(advice);
        let mut counter = self.activity.call(call, stack);
        match madvise.result {
            Ok(_) => counter.succeeded(madvise.len),
            Err(errno) => {
                counter.failed();
                if errno != ENOMEM {
                    return;
                }
            }
        }
        let pages = pages_covering(madvise.addr, madvise.len);
        let changed = match advice.effect() {
            Effect::Release => self.release(pages, Release::Madvise(advice)),
            Effect::LazyFree => self.lazy_free(pages),
            Effect::Reclaim => {
                self.reclaim_requested.push(pages);
                0
            }
            Effect::Populate { write } => {
                let mut populated = 0;
                let Some(range) = span(madvise.addr, madvise.len) else {
                    return;
                };
                let extents: Vec<(u64, Extent)> = self
                    .extents
                    .overlapping(range.clone())
                    .map(|(start, extent)| (start, extent.clone()))
                    .collect();
                for (start, extent) in extents {
                    let clipped = pages_covering(
                        start.max(range.start),
                        extent.end.min(range.end) - start.max(range.start),
                    );
                    populated += self.populate(&extent, clipped, write, stack);
                }
                populated
            }
            Effect::None => 0,
        };
        self.activity.call(call, stack).resident(changed);
    }

    /// The address space was replaced by `execve`.
    fn exec(&mut self) {
        let everything = 0..u64::MAX >> PAGE_SHIFT;
        self.release(everything, Release::Exec);
        self.extents.clear();
        self.heap = None;
        self.reclaim_requested.clear();
        self.fresh_exec = true;
        self.exec_image = ExecImage::default();
        self.activity.execs += 1;
    }

    /// Unmaps `pages`, counting the resident bytes that leave RSS under
    /// `how`; returns them.
    fn release(&mut self, pages: Range<Page>, how: Release) -> u64 {
        let mut released = 0;
        self.pages.remove(pages, |range, state| {
            if state.page_use.resident() {
                released += page_bytes(range.end - range.start);
            }
        });
        if released > 0 {
            let total = self.activity.released.entry(how).or_default();
            *total = total.saturating_add(released);
        }
        released
    }

    /// `MADV_FREE`: in-use anonymous pages become lazily freed; pages freed
    /// twice count once. Returns the bytes that changed.
    fn lazy_free(&mut self, pages: Range<Page>) -> u64 {
        let mut marked = 0;
        self.pages.update(pages, |range, mut state| {
            if state.page_use == PageUse::InUse && state.kind == PageKind::Anon {
                marked += page_bytes(range.end - range.start);
                state.page_use = PageUse::LazyFree;
            }
            Some(state)
        });
        self.activity.lazyfree.marked += marked;
        marked
    }

    /// Faults in `pages` of `extent` as the kernel does for `MAP_POPULATE`
    /// and `MADV_POPULATE_*`; returns the bytes that became resident.
    fn populate(
        &mut self,
        extent: &Extent,
        pages: Range<Page>,
        write: bool,
        stack: Option<StackId>,
    ) -> u64 {
        if extent.prot & PROT_ACCESS == 0 {
            // The kernel populates nothing it could not fault in for the
            // program.
            return 0;
        }
        let access = Access::from_bits(if write { Access::WRITE } else { 0 });
        let origin = Origin::new(Cause::Populate, stack);
        let mut populated = 0;
        let mut reused = 0;
        // Pages already there: a write makes zero pages and lazily freed
        // pages the program's own again.
        self.pages.update(pages.clone(), |range, state| {
            let outcome = fault_outcome(extent, access, Some(state))?;
            if outcome.paged_in {
                populated += page_bytes(range.end - range.start);
            }
            if state.page_use == PageUse::LazyFree && outcome.page_use == PageUse::InUse {
                reused += page_bytes(range.end - range.start);
            }
            Some(PageState {
                page_use: outcome.page_use,
                kind: outcome.kind,
                origin: if outcome.keeps_origin {
                    state.origin
                } else {
                    origin
                },
            })
        });
        self.activity.lazyfree.reused += reused;
        let gaps: Vec<Range<Page>> = gaps(&self.pages, pages);
        if let Some(outcome) = fault_outcome(extent, access, None) {
            for gap in gaps {
                if outcome.paged_in {
                    populated += page_bytes(gap.end - gap.start);
                }
                self.pages.set(
                    gap,
                    PageState {
                        page_use: outcome.page_use,
                        kind: outcome.kind,
                        origin,
                    },
                );
            }
        }
        populated
    }
}

/// The unmapped stretches of `pages`.
fn gaps(map: &PageMap, pages: Range<Page>) -> Vec<Range<Page>> {
    let mut gaps = Vec::new();
    let mut next = pages.start;
    for (range, _) in map.runs_in(pages.clone()) {
        if range.start > next {
            gaps.push(next..range.start);
        }
        next = range.end;
    }
    if next < pages.end {
        gaps.push(next..pages.end);
    }
    gaps
}

/// Whether the kernel faults in the whole of `mmap` before returning: with
/// `MAP_POPULATE` unless `MAP_NONBLOCK` is also given, and always for
/// `MAP_LOCKED` (`do_mmap`).
fn populates(mmap: &Mmap) -> bool {
    mmap.flags & MAP_LOCKED != 0 || mmap.flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE
}

/// What a fault does to a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FaultOutcome {
    page_use: PageUse,
    kind: PageKind,
    /// A page came into RSS.
    paged_in: bool,
    copy_on_write: bool,
    /// The page keeps the origin it had (a protection fault on a page that
    /// stays as it was).
    keeps_origin: bool,
}

/// How the kernel resolves a fault with `access` on a page in `current`
/// state of `extent`; `None` when nothing changes.
fn fault_outcome(
    extent: &Extent,
    access: Access,
    current: Option<PageState>,
) -> Option<FaultOutcome> {
    let write = access.write();
    let fresh = |page_use, kind| FaultOutcome {
        page_use,
        kind,
        paged_in: page_use.resident(),
        copy_on_write: false,
        keeps_origin: false,
    };
    let (private_anon, private_file, shmem) = match &extent.backing {
        backing if backing.private_anon() => (true, false, false),
        Backing::Shmem { .. } => (false, false, true),
        _ => (false, !extent.shared, false),
    };
    match current {
        None => Some(if private_anon {
            if write {
                fresh(PageUse::InUse, PageKind::Anon)
            } else {
                fresh(PageUse::ZeroPage, PageKind::Anon)
            }
        } else if shmem {
            fresh(PageUse::InUse, PageKind::Shmem)
        } else if private_file && write {
            // A write to a private file mapping gives the program its copy.
            fresh(PageUse::InUse, PageKind::Anon)
        } else {
            fresh(PageUse::InUse, PageKind::File)
        }),
        Some(state) => match state.page_use {
            PageUse::ZeroPage if write => Some(fresh(PageUse::InUse, PageKind::Anon)),
            PageUse::ZeroPage => None,
            _ if state.kind == PageKind::File && private_file && write => Some(FaultOutcome {
                copy_on_write: true,
                ..fresh(PageUse::InUse, PageKind::Anon)
            }),
            // Written again after MADV_FREE (the kernel write-protects some
            // lazily freed pages, e.g. after fork).
            PageUse::LazyFree if write => Some(FaultOutcome {
                paged_in: false,
                ..fresh(PageUse::InUse, state.kind)
            }),
            PageUse::LazyFree => None,
            // A missing-page fault on a page believed resident is a second
            // thread faulting on the page another thread just mapped, or a
            // NUMA hinting fault on a page the kernel unmapped only to sample
            // accesses; or the page had gone unseen and came back. RSS is the
            // same either way: the page keeps its stack (pagemap tells where
            // the model was wrong). Otherwise it is copy-on-write after fork
            // or a write to a read-only mapping, which changes no RSS either.
            PageUse::InUse => None,
        },
    }
}

#[cfg(test)]
mod tests;
