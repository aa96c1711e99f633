//! The model against a reference that keeps one entry per page and applies
//! the kernel's rules in the most direct way, on unit cases and on random
//! sequences of operations (proptest).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::{
    reconcile::{Busy, KernelVma, Moment, PageEntry, Reading},
    *,
};
use crate::intake::{Access, Event, EventKind, Fault, Madvise, Mmap, Mremap, StackId};

const RW: u32 = (libc::PROT_READ | libc::PROT_WRITE) as u32;
const ANON: u32 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32;
const BASE: u64 = 0x7f00_0000_0000;
const MIB: u64 = 1 << 20;

fn event(kind: EventKind) -> Event {
    Event {
        tid: 1,
        stack: StackId::new(7),
        kind,
    }
}

fn mmap(addr: u64, len: u64) -> Event {
    event(EventKind::Mmap(Mmap {
        hint: 0,
        len,
        prot: RW,
        flags: ANON,
        fd: -1,
        offset: 0,
        result: Ok(addr),
    }))
}

fn fault(addr: u64, write: bool) -> Event {
    let mut bits = Access::USER;
    if write {
        bits |= Access::WRITE;
    }
    event(EventKind::Fault(Fault {
        address: addr,
        access: Access::from_bits(bits),
    }))
}

fn madvise(addr: u64, len: u64, advice: i32) -> Event {
    event(EventKind::Madvise(Madvise {
        addr,
        len,
        advice,
        result: Ok(0),
    }))
}

fn munmap(addr: u64, len: u64) -> Event {
    event(EventKind::Munmap {
        addr,
        len,
        result: Ok(0),
    })
}

fn touch(space: &mut AddressSpace, addr: u64, len: u64) {
    for page in (addr..addr + len).step_by(PAGE_SIZE as usize) {
        space.apply(&fault(page, true));
    }
}

#[test]
fn the_issue_example_counts_exactly() {
    // map 64 MiB, touch it all, MADV_FREE 32, MADV_DONTNEED 16, munmap 16.
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, 64 * MIB));
    touch(&mut space, BASE, 64 * MIB);
    space.apply(&madvise(BASE, 32 * MIB, libc::MADV_FREE));
    space.apply(&madvise(BASE + 32 * MIB, 16 * MIB, libc::MADV_DONTNEED));
    space.apply(&munmap(BASE + 48 * MIB, 16 * MIB));
    let totals = space.totals();
    assert_eq!(totals.rss, 32 * MIB);
    assert_eq!(totals.lazyfree, 32 * MIB);
    let activity = space.activity();
    assert_eq!(activity.faults.paged_in_bytes(), 64 * MIB);
    assert_eq!(
        activity.released[&Release::Madvise(Advice::DONTNEED)],
        16 * MIB
    );
    assert_eq!(activity.released[&Release::Munmap], 16 * MIB);
    assert_eq!(activity.lazyfree.marked, 32 * MIB);
    assert_eq!(
        space.pages().run_count(),
        1,
        "one run: every page from one stack"
    );
}

#[test]
fn giving_back_twice_counts_once_and_untouched_memory_releases_nothing() {
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, 8 * MIB));
    touch(&mut space, BASE, 4 * MIB);
    space.apply(&madvise(BASE, 8 * MIB, libc::MADV_DONTNEED));
    space.apply(&madvise(BASE, 8 * MIB, libc::MADV_DONTNEED));
    space.apply(&madvise(BASE, 8 * MIB, libc::MADV_FREE));
    let activity = space.activity();
    assert_eq!(
        activity.released[&Release::Madvise(Advice::DONTNEED)],
        4 * MIB
    );
    let dontneed = activity.call_stats(Call::Madvise(Advice::DONTNEED));
    assert_eq!(
        (dontneed.calls, dontneed.bytes, dontneed.resident_bytes),
        (2, 16 * MIB, 4 * MIB)
    );
    assert_eq!(activity.lazyfree.marked, 0);
    assert_eq!(space.totals().rss, 0);
}

#[test]
fn reads_of_fresh_memory_map_the_zero_page_until_written() {
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, MIB));
    space.apply(&fault(BASE, false));
    assert_eq!(space.totals().rss, 0);
    assert_eq!(space.totals().zero_page, PAGE_SIZE);
    let mut write = fault(BASE, true);
    if let EventKind::Fault(fault) = &mut write.kind {
        fault.access = Access::from_bits(Access::USER | Access::WRITE | Access::PROTECTION);
    }
    space.apply(&write);
    assert_eq!(space.totals().rss, PAGE_SIZE);
}

#[test]
fn a_fault_on_a_lazily_freed_page_means_the_kernel_took_it() {
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, MIB));
    touch(&mut space, BASE, MIB);
    space.apply(&madvise(BASE, MIB, libc::MADV_FREE));
    space.apply(&fault(BASE, true));
    assert_eq!(
        space.activity().released[&Release::LazyFreeReclaimed],
        PAGE_SIZE
    );
    assert_eq!(space.totals().lazyfree, MIB - PAGE_SIZE);
    assert_eq!(space.totals().rss, MIB);
}

#[test]
fn mremap_moves_pages_and_shrinking_releases_the_tail() {
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, 4 * MIB));
    touch(&mut space, BASE, 4 * MIB);
    let new = BASE + 64 * MIB;
    space.apply(&event(EventKind::Mremap(Mremap {
        old_addr: BASE,
        old_len: 4 * MIB,
        new_len: 2 * MIB,
        flags: 1,
        result: Ok(new),
    })));
    assert_eq!(space.totals().rss, 2 * MIB);
    assert_eq!(space.activity().released[&Release::Mremap], 2 * MIB);
    assert!(space.pages().get(new / PAGE_SIZE).is_some());
    assert!(space.pages().get(BASE / PAGE_SIZE).is_none());
    assert_eq!(
        space.extents().find(new).unwrap().1.created_by,
        CreatedBy::Mremap
    );
}

#[test]
fn brk_grows_and_shrinking_releases() {
    let mut space = AddressSpace::new();
    let heap = 0x5555_0000_0000;
    space.apply(&event(EventKind::Brk {
        requested: 0,
        result: heap,
    }));
    space.apply(&event(EventKind::Brk {
        requested: heap + MIB,
        result: heap + MIB,
    }));
    touch(&mut space, heap, MIB);
    assert_eq!(space.totals().rss, MIB);
    space.apply(&event(EventKind::Brk {
        requested: heap + 256 * 1024,
        result: heap + 256 * 1024,
    }));
    assert_eq!(space.activity().released[&Release::Brk], 768 * 1024);
    assert_eq!(space.totals().rss, 256 * 1024);
}

#[test]
fn exec_replaces_everything() {
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, MIB));
    touch(&mut space, BASE, MIB);
    space.apply(&event(EventKind::Exec));
    assert_eq!(space.totals().rss, 0);
    assert!(space.extents().is_empty());
    assert_eq!(space.activity().released[&Release::Exec], MIB);
}

#[test]
fn populate_write_makes_pages_resident_with_the_callers_stack() {
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, MIB));
    space.apply(&madvise(BASE, MIB, 23));
    let totals = space.totals();
    assert_eq!(totals.rss, MIB);
    assert_eq!(totals.by_cause.populate, MIB);
}

// ---- the reference model -------------------------------------------------

/// The kernel as a page table: one entry per page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RefPage {
    Zero,
    InUse,
    LazyFree,
}

#[derive(Default, Debug)]
struct Reference {
    /// Anonymous private mappings: start page → end page.
    vmas: BTreeMap<u64, u64>,
    pages: HashMap<u64, RefPage>,
    /// First pages of the 2 MiB blocks mapped as huge pages.
    huge_blocks: std::collections::HashSet<u64>,
    released: u64,
}

impl Reference {
    fn vma_of(&self, page: u64) -> Option<(u64, u64)> {
        self.vmas
            .range(..=page)
            .next_back()
            .filter(|(_, &end)| end > page)
            .map(|(&start, &end)| (start, end))
    }

    fn release(&mut self, start: u64, end: u64) {
        // Giving back part of a huge page splits it.
        self.huge_blocks
            .retain(|&block| block + 512 <= start || block >= end);
        for page in start..end {
            if let Some(state) = self.pages.remove(&page) {
                if state != RefPage::Zero {
                    self.released += 1;
                }
            }
        }
    }

    fn unmap(&mut self, start: u64, end: u64) {
        self.release(start, end);
        let overlapping: Vec<(u64, u64)> = self
            .vmas
            .iter()
            .filter(|(&s, &e)| s < end && e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.vmas.remove(&s);
            if s < start {
                self.vmas.insert(s, start);
            }
            if e > end {
                self.vmas.insert(end, e);
            }
        }
    }

    fn rss(&self) -> u64 {
        self.pages.values().filter(|s| **s != RefPage::Zero).count() as u64 * PAGE_SIZE
    }

    fn lazyfree(&self) -> u64 {
        self.pages
            .values()
            .filter(|s| **s == RefPage::LazyFree)
            .count() as u64
            * PAGE_SIZE
    }

    /// What /proc would show.
    fn kernel_vmas(&self) -> Vec<KernelVma> {
        self.vmas
            .iter()
            .map(|(&start, &end)| {
                let count = |want: fn(RefPage) -> bool| {
                    (start..end)
                        .filter(|page| self.pages.get(page).is_some_and(|s| want(*s)))
                        .count() as u64
                        * PAGE_SIZE
                };
                let rss = count(|s| s != RefPage::Zero);
                let huge = self
                    .huge_blocks
                    .iter()
                    .filter(|&&block| block >= start && block + 512 <= end)
                    .count() as u64;
                KernelVma {
                    anon_huge: huge * 512 * PAGE_SIZE,
                    start: start * PAGE_SIZE,
                    end: end * PAGE_SIZE,
                    prot: RW,
                    rss,
                    anonymous: rss,
                    lazyfree: count(|s| s == RefPage::LazyFree),
                    ..KernelVma::default()
                }
            })
            .collect()
    }

    fn pagemap(&self, vma: &KernelVma) -> Vec<PageEntry> {
        (vma.start / PAGE_SIZE..vma.end / PAGE_SIZE)
            .map(|page| match self.pages.get(&page) {
                None => PageEntry::Absent,
                Some(RefPage::Zero) => PageEntry::Present {
                    pfn: ZERO_PFN,
                    file_or_shared: false,
                },
                Some(_) => PageEntry::Present {
                    pfn: 1000 + page,
                    file_or_shared: false,
                },
            })
            .collect()
    }
}

const ZERO_PFN: u64 = 42;
/// Pages in the test's address window.
const WINDOW: u64 = 2048;

#[derive(Clone, Debug)]
enum Op {
    Map {
        start: u64,
        len: u64,
    },
    /// The program touches a page; the kernel faults only if it must.
    Touch {
        page: u64,
        write: bool,
    },
    /// A transparent huge page fault: the whole aligned 2 MiB block at once.
    TouchHuge {
        block: u64,
    },
    Free {
        start: u64,
        len: u64,
    },
    DontNeed {
        start: u64,
        len: u64,
    },
    Unmap {
        start: u64,
        len: u64,
    },
    Move {
        start: u64,
        len: u64,
        to: u64,
        new_len: u64,
    },
    /// Memory pressure: the kernel drops every lazily freed page.
    Reclaim,
    Reconcile,
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..WINDOW, 1..256u64);
    prop_oneof![
        2 => range.clone().prop_map(|(start, len)| Op::Map { start, len }),
        8 => (0..WINDOW, any::<bool>()).prop_map(|(page, write)| Op::Touch { page, write }),
        1 => (0..WINDOW / 512).prop_map(|block| Op::TouchHuge { block }),
        2 => range.clone().prop_map(|(start, len)| Op::Free { start, len }),
        2 => range.clone().prop_map(|(start, len)| Op::DontNeed { start, len }),
        1 => range.clone().prop_map(|(start, len)| Op::Unmap { start, len }),
        1 => (range, 0..WINDOW, 1..256u64)
            .prop_map(|((start, len), to, new_len)| Op::Move { start, len, to, new_len }),
        1 => Just(Op::Reclaim),
        2 => Just(Op::Reconcile),
    ]
}

fn addr(page: u64) -> u64 {
    BASE + page * PAGE_SIZE
}

/// Applies `op` to both; returns whether the model was told everything (no
/// change it cannot see happened).
fn apply(op: &Op, model: &mut AddressSpace, reference: &mut Reference) -> bool {
    let base = BASE / PAGE_SIZE;
    match *op {
        Op::Map { start, len } => {
            let end = (start + len).min(WINDOW);
            reference.unmap(base + start, base + end);
            reference.vmas.insert(base + start, base + end);
            model.apply(&mmap(addr(start), (end - start) * PAGE_SIZE));
        }
        Op::Touch { page, write } => {
            let page = base + page;
            if reference.vma_of(page).is_none() {
                return true;
            }
            let state = reference.pages.get(&page).copied();
            let faults = match state {
                None => true,
                Some(RefPage::Zero) => write,
                // Present and writable: no fault, but a write makes a
                // lazily freed page the program's again.
                Some(RefPage::InUse) => false,
                Some(RefPage::LazyFree) => {
                    if write {
                        reference.pages.insert(page, RefPage::InUse);
                        return false;
                    }
                    false
                }
            };
            if faults {
                reference
                    .pages
                    .insert(page, if write { RefPage::InUse } else { RefPage::Zero });
                let mut fault = fault(page * PAGE_SIZE, write);
                if state == Some(RefPage::Zero) {
                    if let EventKind::Fault(fault) = &mut fault.kind {
                        fault.access =
                            Access::from_bits(Access::USER | Access::WRITE | Access::PROTECTION);
                    }
                }
                model.apply(&fault);
            }
        }
        Op::TouchHuge { block } => {
            let start = base + block * 512;
            let whole = reference.vma_of(start).is_some_and(|(_, end)| {
                end >= start + 512 && reference.vma_of(start + 511).is_some()
            }) && (start..start + 512).all(|page| !reference.pages.contains_key(&page))
                && reference.vma_of(start).map(|v| v.0)
                    == reference.vma_of(start + 511).map(|v| v.0);
            if !whole {
                return true;
            }
            for page in start..start + 512 {
                reference.pages.insert(page, RefPage::InUse);
            }
            reference.huge_blocks.insert(start);
            model.apply(&fault(start * PAGE_SIZE, true));
            return false;
        }
        Op::Free { start, len } => {
            for page in base + start..base + start + len {
                if reference.vma_of(page).is_some()
                    && reference.pages.get(&page) == Some(&RefPage::InUse)
                {
                    reference.pages.insert(page, RefPage::LazyFree);
                }
            }
            model.apply(&madvise(addr(start), len * PAGE_SIZE, libc::MADV_FREE));
        }
        Op::DontNeed { start, len } => {
            reference.release(base + start, base + start + len);
            model.apply(&madvise(addr(start), len * PAGE_SIZE, libc::MADV_DONTNEED));
        }
        Op::Unmap { start, len } => {
            reference.unmap(base + start, base + start + len);
            model.apply(&munmap(addr(start), len * PAGE_SIZE));
        }
        Op::Move {
            start,
            len,
            to,
            new_len,
        } => {
            // mremap needs the old range inside one mapping, and a free
            // destination for the kernel to choose.
            let (s, e) = (base + start, base + start + len);
            let Some((vs, ve)) = reference.vma_of(s) else {
                return true;
            };
            if e > ve || vs != s {
                return true;
            }
            let dest = base + WINDOW + 4096 + to * 4;
            if reference
                .vmas
                .range(dest..dest + new_len.max(len))
                .next()
                .is_some()
                || reference.vma_of(dest).is_some()
            {
                return true;
            }
            let kept = len.min(new_len);
            let moved: Vec<(u64, RefPage)> = (s..s + kept)
                .filter_map(|page| reference.pages.get(&page).map(|st| (page - s + dest, *st)))
                .collect();
            reference.unmap(s, e);
            // The shrunk tail was released by the unmap above together with
            // the moved pages; give the moved ones back.
            for (page, state) in &moved {
                if *state != RefPage::Zero {
                    reference.released -= 1;
                }
                reference.pages.insert(*page, *state);
            }
            reference.vmas.insert(dest, dest + new_len);
            if vs < s {
                reference.vmas.insert(vs, s);
            }
            model.apply(&event(EventKind::Mremap(Mremap {
                old_addr: s * PAGE_SIZE,
                old_len: len * PAGE_SIZE,
                new_len: new_len * PAGE_SIZE,
                flags: 1,
                result: Ok(dest * PAGE_SIZE),
            })));
        }
        Op::Reclaim => {
            let lazy: Vec<u64> = reference
                .pages
                .iter()
                .filter(|(_, s)| **s == RefPage::LazyFree)
                .map(|(p, _)| *p)
                .collect();
            for page in &lazy {
                reference.pages.remove(page);
                reference.released += 1;
            }
            return lazy.is_empty();
        }
        Op::Reconcile => {
            let vmas = reference.kernel_vmas();
            let reading = Reading {
                vmas: &vmas,
                busy: &Busy::default(),
                moment: Moment::Interval,
                scan_all: false,
                zero_pfn: Some(ZERO_PFN),
                lazyfree_slack: 0,
                lazyfree_at_read: &[],
            };
            model.reconcile(reading, |vma| Some(reference.pagemap(vma)));
            return true;
        }
    }
    true
}

fn page_use(model: &AddressSpace, page: u64) -> Option<PageUse> {
    model.pages().get(page).map(|state| state.page_use)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_model_follows_the_kernel(ops in proptest::collection::vec(op(), 1..60)) {
        let mut model = AddressSpace::new();
        let mut reference = Reference::default();
        let mut told_everything = true;
        for op in &ops {
            told_everything &= apply(op, &mut model, &mut reference);
            if matches!(op, Op::Reconcile) {
                told_everything = true;
            }
            let totals = model.totals();
            if told_everything {
                // Every change was seen: the model is exact, page by page.
                prop_assert_eq!(totals.rss, reference.rss(), "rss after {:?}", op);
                prop_assert_eq!(totals.lazyfree, reference.lazyfree(), "lazyfree after {:?}", op);
                prop_assert_eq!(totals.anon, totals.rss);
                for (&page, &state) in &reference.pages {
                    let expected = match state {
                        RefPage::Zero => PageUse::ZeroPage,
                        RefPage::InUse => PageUse::InUse,
                        RefPage::LazyFree => PageUse::LazyFree,
                    };
                    prop_assert_eq!(page_use(&model, page), Some(expected), "page {:#x} after {:?}", page, op);
                }
                prop_assert_eq!(model.pages().runs().map(|(r, _)| r.end - r.start).sum::<u64>(),
                    reference.pages.len() as u64);
                // Bytes left RSS exactly as often as the kernel let them go.
                let released: u64 = model.activity().released.values().sum();
                prop_assert_eq!(released, reference.released * PAGE_SIZE);
            }
        }
    }
}
