//! The model against a reference that keeps one entry per page and applies
//! the kernel's rules in the most direct way, on unit cases and on random
//! sequences of operations (proptest).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;

use super::{
    reconcile::{Busy, KernelVma, Moment, Outcome, PageEntry, Reading},
    *,
};
use crate::intake::{Access, Errno, Event, EventKind, Fault, Madvise, Mmap, Mremap, StackId};

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
fn stacks_that_hold_nothing_fold_into_no_stack_and_keep_their_counts() {
    // Stack 1 maps and faults a region that is then unmapped; stack 2's
    // pages stay resident.
    let mut space = AddressSpace::new();
    let with = |stack: u64, mut event: Event| {
        event.stack = StackId::new(stack);
        event
    };
    space.apply(&with(1, mmap(BASE, MIB)));
    space.apply(&with(1, fault(BASE, true)));
    space.apply(&with(1, munmap(BASE, MIB)));
    space.apply(&with(2, mmap(BASE + 8 * MIB, MIB)));
    space.apply(&with(2, fault(BASE + 8 * MIB, true)));
    let mut holding = std::collections::BTreeSet::new();
    space.stacks_holding(|stack| {
        holding.insert(stack.key());
    });
    assert_eq!(holding, [2].into());
    let faults_before: u64 = space
        .activity()
        .faults_by_stack
        .values()
        .map(|f| f.count)
        .sum();
    space.fold_activity_stacks(|stack| holding.contains(&stack.key()));
    let activity = space.activity();
    let by_stack = |key: Option<u64>| {
        activity
            .faults_by_stack
            .get(&key.and_then(StackId::new))
            .map(|faults| faults.count)
    };
    assert_eq!(by_stack(Some(1)), None);
    assert_eq!(by_stack(None), Some(1));
    assert_eq!(by_stack(Some(2)), Some(1));
    let faults_after: u64 = activity.faults_by_stack.values().map(|f| f.count).sum();
    assert_eq!(faults_after, faults_before);
    assert!(activity
        .calls_by_stack
        .keys()
        .all(|(_, stack)| stack.is_none_or(|id| id.key() == 2)));
    assert_eq!(activity.calls_by_stack[&(Call::Munmap, None)].calls, 1);
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

fn mmap_with(addr: u64, len: u64, prot: u32, flags: u32) -> Event {
    event(EventKind::Mmap(Mmap {
        hint: 0,
        len,
        prot,
        flags,
        fd: if flags & libc::MAP_ANONYMOUS as u32 != 0 {
            -1
        } else {
            3
        },
        offset: 0,
        result: Ok(addr),
    }))
}

fn fault_from(addr: u64, bits: u8, stack: u64) -> Event {
    Event {
        tid: 1,
        stack: StackId::new(stack),
        kind: EventKind::Fault(Fault {
            address: addr,
            access: Access::from_bits(Access::USER | bits),
        }),
    }
}

/// A VMA as smaps shows it, for reconciling.
fn kernel_vma(start: u64, end: u64, path: &str, rss: u64) -> KernelVma {
    KernelVma {
        start,
        end,
        prot: RW,
        path: path.into(),
        rss,
        anonymous: rss,
        ..KernelVma::default()
    }
}

/// Pagemap saying every page of `pages` is present, each in a frame of
/// its own.
fn all_present(pages: std::ops::Range<Page>) -> Vec<PageEntry> {
    pages
        .map(|page| PageEntry::Present {
            pfn: 1000 + page,
            file_or_shared: false,
        })
        .collect()
}

fn reconcile_with(
    model: &mut AddressSpace,
    vmas: &[KernelVma],
    moment: Moment,
    scan_all: bool,
    read_pagemap: impl FnMut(std::ops::Range<Page>) -> Option<Vec<PageEntry>>,
) -> Outcome {
    model.reconcile(
        Reading {
            vmas,
            busy: &Busy::default(),
            moment,
            scan_all,
            zero_pfn: Some(ZERO_PFN),
            lazyfree_slack: 0,
            lazyfree_at_read: &[],
        },
        read_pagemap,
    )
}

const MAP_NONBLOCK: u32 = libc::MAP_NONBLOCK as u32;
const MAP_LOCKED: u32 = libc::MAP_LOCKED as u32;
const MAP_POPULATE: u32 = libc::MAP_POPULATE as u32;

#[test]
fn populate_with_nonblock_is_not_populated() {
    // The kernel populates MAP_POPULATE only without MAP_NONBLOCK.
    let mut space = AddressSpace::new();
    space.apply(&mmap_with(
        BASE,
        MIB,
        RW,
        ANON | MAP_POPULATE | MAP_NONBLOCK,
    ));
    assert_eq!(space.totals(), Totals::default());
    assert_eq!(space.activity().call_stats(Call::Mmap).resident_bytes, 0);
}

#[test]
fn map_locked_populates_even_with_nonblock() {
    for flags in [ANON | MAP_LOCKED, ANON | MAP_LOCKED | MAP_NONBLOCK] {
        let mut space = AddressSpace::new();
        space.apply(&mmap_with(BASE, MIB, RW, flags));
        let totals = space.totals();
        assert_eq!(
            (totals.rss, totals.by_cause.populate),
            (MIB, MIB),
            "{flags:#x}"
        );
        assert_eq!(space.activity().call_stats(Call::Mmap).resident_bytes, MIB);
    }
}

#[test]
fn populating_an_inaccessible_mapping_maps_nothing() {
    let mut space = AddressSpace::new();
    space.apply(&mmap_with(BASE, MIB, 0, ANON | MAP_POPULATE));
    space.apply(&mmap_with(
        BASE + MIB,
        MIB,
        0,
        libc::MAP_PRIVATE as u32 | MAP_LOCKED,
    ));
    assert_eq!(space.pages().run_count(), 0);
}

#[test]
fn a_fault_outside_every_mapping_maps_nothing() {
    // A SIGSEGV probe, a JVM implicit null check: the kernel maps no page.
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, MIB));
    for (addr, bits) in [(0x10, 0), (BASE + 2 * MIB, Access::WRITE), (BASE - 4096, 0)] {
        space.apply(&fault_from(addr, bits, 7));
    }
    assert_eq!(space.pages().run_count(), 0);
    assert_eq!(space.activity().faults.outside_mappings, 3);
    assert_eq!(space.activity().faults.paged_in, 0);
}

#[test]
fn the_stack_grows_down_into_its_gap_but_not_into_the_guard_gap() {
    const STACK_TOP: u64 = 0x7ffd_0000_0000;
    let stack_start = STACK_TOP - 132 * 1024;
    let mut space = AddressSpace::new();
    let vmas = [
        kernel_vma(BASE, BASE + MIB, "", 0),
        kernel_vma(stack_start, STACK_TOP, "[stack]", 0),
    ];
    reconcile_with(&mut space, &vmas, Moment::Attach, false, |_| None);
    // A fault just below the stack grows it, as the kernel does.
    let below = stack_start - 3 * PAGE_SIZE;
    space.apply(&fault_from(below + 8, Access::WRITE, 7));
    assert_eq!(space.totals().rss, PAGE_SIZE);
    let (start, extent) = space.extents().find(below).expect("the stack grew");
    assert_eq!((start, extent.end), (below, STACK_TOP));
    assert_eq!(extent.backing, Backing::Stack);
    // Within the guard gap above another mapping it cannot, nor past the
    // stack's size limit.
    space.apply(&fault_from(BASE + MIB + PAGE_SIZE, Access::WRITE, 7));
    space.apply(&fault_from(STACK_TOP - 16 * MIB, Access::WRITE, 7));
    assert_eq!(space.totals().rss, PAGE_SIZE);
    space.set_stack_limit(32 * MIB);
    space.apply(&fault_from(STACK_TOP - 16 * MIB, Access::WRITE, 7));
    assert_eq!(space.totals().rss, 2 * PAGE_SIZE);
}

#[test]
fn a_missing_page_fault_on_a_resident_page_moves_nothing() {
    // A second thread faulting on a page the first just mapped, or a NUMA
    // hinting fault: the page is there; it keeps its stack and is not
    // counted as paged in again.
    let mut space = AddressSpace::new();
    space.apply(&mmap(BASE, MIB));
    space.apply(&fault_from(BASE, Access::WRITE, 7));
    space.apply(&fault_from(BASE, 0, 9));
    space.apply(&fault_from(BASE, Access::WRITE, 9));
    let state = space.pages().get(BASE / PAGE_SIZE).unwrap();
    assert_eq!(state.origin.stack, StackId::new(7));
    assert_eq!(space.activity().faults.paged_in, 1);
    assert_eq!(space.activity().faults.count, 3);
}

#[test]
fn with_numa_hinting_a_fault_on_a_lazily_freed_page_is_not_a_reclaim() {
    let mut space = AddressSpace::new();
    space.set_numa_hinting(true);
    space.apply(&mmap(BASE, MIB));
    touch(&mut space, BASE, 2 * PAGE_SIZE);
    space.apply(&madvise(BASE, 2 * PAGE_SIZE, libc::MADV_FREE));
    // A read leaves it lazily freed; a write makes it the program's again.
    space.apply(&fault_from(BASE, 0, 9));
    space.apply(&fault_from(BASE + PAGE_SIZE, Access::WRITE, 9));
    assert!(!space
        .activity()
        .released
        .contains_key(&Release::LazyFreeReclaimed));
    let totals = space.totals();
    assert_eq!((totals.rss, totals.lazyfree), (2 * PAGE_SIZE, PAGE_SIZE));
    assert_eq!(space.activity().lazyfree.reused, PAGE_SIZE);
    assert_eq!(
        space.activity().faults.paged_in,
        2,
        "only the first touches"
    );
    // The page written again is the writer's, as a write with no fault
    // would be; the one only read keeps its stack.
    let stack_of = |addr: u64| space.pages().get(addr / PAGE_SIZE).unwrap().origin.stack;
    assert_eq!(stack_of(BASE), StackId::new(7));
    assert_eq!(stack_of(BASE + PAGE_SIZE), StackId::new(9));
}

#[test]
fn a_fork_copies_only_the_page_tables_the_kernel_copies() {
    const PRIVATE: u32 = libc::MAP_PRIVATE as u32;
    const SHARED: u32 = libc::MAP_SHARED as u32;
    let mut parent = AddressSpace::new();
    let (anon, text, data, shmem, zero) = (
        BASE,
        BASE + MIB,
        BASE + 2 * MIB,
        BASE + 3 * MIB,
        BASE + 4 * MIB,
    );
    parent.apply(&mmap(anon, MIB));
    touch(&mut parent, anon, 4 * PAGE_SIZE);
    // Program text: file pages only, no anonymous page: not copied.
    parent.apply(&mmap_with(text, MIB, libc::PROT_READ as u32, PRIVATE));
    parent.apply(&fault_from(text, 0, 7));
    // Data: written once (copy-on-write), so the VMA has anonymous pages
    // and the kernel copies all of its page tables, file pages included.
    parent.apply(&mmap_with(data, MIB, RW, PRIVATE));
    parent.apply(&fault_from(data, 0, 7));
    parent.apply(&fault_from(data + PAGE_SIZE, Access::WRITE, 7));
    // Shared memory is faulted in again by the child.
    parent.apply(&mmap_with(
        shmem,
        MIB,
        RW,
        SHARED | libc::MAP_ANONYMOUS as u32,
    ));
    parent.apply(&fault_from(shmem, Access::WRITE, 7));
    // Only read: the zero page, and no anonymous VMA yet.
    parent.apply(&mmap(zero, MIB));
    parent.apply(&fault_from(zero, 0, 7));

    let child = parent.forked();
    let resident = |start: u64| {
        child
            .resident_in(start / PAGE_SIZE..(start + MIB) / PAGE_SIZE)
            .0
    };
    assert_eq!(resident(anon), 4 * PAGE_SIZE);
    assert_eq!(resident(text), 0);
    assert_eq!(resident(data), 2 * PAGE_SIZE);
    assert_eq!(resident(shmem), 0);
    assert!(child.pages().get(zero / PAGE_SIZE).is_none());
    assert_eq!(
        child.extents().iter().count(),
        parent.extents().iter().count()
    );
}

#[test]
fn pagemap_is_read_in_bounded_chunks_and_never_for_mappings_without_rss() {
    const GIB: u64 = 1 << 30;
    // 64 MiB of address space: 128 KiB of pagemap entries at a time.
    const MAX_CHUNK_PAGES: u64 = 64 * MIB / PAGE_SIZE;
    let reservation = BASE;
    let used = BASE + 64 * GIB;
    let mut model = AddressSpace::new();
    model.apply(&mmap_with(
        reservation,
        64 * GIB,
        0,
        ANON | libc::MAP_NORESERVE as u32,
    ));
    model.apply(&mmap(used, 256 * MIB));
    // Records were lost: the model believes pages resident in the
    // reservation that are not, and lacks half of the used range.
    touch(&mut model, reservation + GIB, 8 * PAGE_SIZE);
    touch(&mut model, used, 128 * MIB);
    let vmas = [
        KernelVma {
            prot: 0,
            ..kernel_vma(reservation, reservation + 64 * GIB, "", 0)
        },
        kernel_vma(used, used + 256 * MIB, "", 256 * MIB),
    ];
    let mut requested: Vec<std::ops::Range<Page>> = Vec::new();
    let outcome = reconcile_with(&mut model, &vmas, Moment::Interval, true, |pages| {
        requested.push(pages.clone());
        Some(all_present(pages))
    });
    assert!(requested
        .iter()
        .all(|pages| pages.end - pages.start <= MAX_CHUNK_PAGES));
    let read: u64 = requested.iter().map(|pages| pages.end - pages.start).sum();
    assert_eq!(read, 256 * MIB / PAGE_SIZE, "only the used range is read");
    assert_eq!(model.totals().rss, 256 * MIB);
    assert_eq!(outcome.residual, 0);
    assert_eq!(
        model.activity().released[&Release::Unobserved],
        8 * PAGE_SIZE
    );
}

#[test]
fn differences_in_different_mappings_add_up_instead_of_cancelling() {
    let mut model = AddressSpace::new();
    model.apply(&mmap(BASE, MIB));
    model.apply(&mmap(BASE + 2 * MIB, MIB));
    touch(&mut model, BASE, 8 * PAGE_SIZE);
    touch(&mut model, BASE + 2 * MIB, 8 * PAGE_SIZE);
    // The kernel has 4 pages more in one and 4 fewer in the other; pagemap
    // cannot be read.
    let vmas = [
        kernel_vma(BASE, BASE + MIB, "", 12 * PAGE_SIZE),
        kernel_vma(BASE + 2 * MIB, BASE + 3 * MIB, "", 4 * PAGE_SIZE),
    ];
    let outcome = reconcile_with(&mut model, &vmas, Moment::Interval, false, |_| None);
    assert_eq!(outcome.residual, 8 * PAGE_SIZE);
}

/// An address or length: anything, but often one that looks real.
fn any_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        BASE..BASE + 64 * MIB,
        0..1u64 << 48,
        Just(0),
        Just(u64::MAX),
        Just(1 << 57),
    ]
}

fn any_result() -> impl Strategy<Value = Result<u64, Errno>> {
    prop_oneof![
        any_number().prop_map(Ok),
        (1..4096i32).prop_map(|e| Err(Errno(e)))
    ]
}

/// Any event, with any field values: records can be garbage (a kernel with
/// another layout, a decoding bug), and the model must not panic on them.
fn any_event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        (any_number(), any::<u8>()).prop_map(|(address, bits)| EventKind::Fault(Fault {
            address,
            access: Access::from_bits(bits),
        })),
        (
            any_number(),
            any::<u32>(),
            any::<u32>(),
            any_number(),
            any_result()
        )
            .prop_map(|(len, prot, flags, offset, result)| EventKind::Mmap(Mmap {
                hint: 0,
                len,
                prot,
                flags,
                fd: 3,
                offset,
                result,
            })),
        (any_number(), any_number(), any_result())
            .prop_map(|(addr, len, result)| EventKind::Munmap { addr, len, result }),
        (
            any_number(),
            any_number(),
            any_number(),
            any::<u32>(),
            any_result()
        )
            .prop_map(
                |(old_addr, old_len, new_len, flags, result)| EventKind::Mremap(Mremap {
                    old_addr,
                    old_len,
                    new_len,
                    flags,
                    result,
                })
            ),
        (any_number(), any_number())
            .prop_map(|(requested, result)| EventKind::Brk { requested, result }),
        (any_number(), any_number(), 0..110i32, any_result()).prop_map(
            |(addr, len, advice, result)| EventKind::Madvise(Madvise {
                addr,
                len,
                advice,
                result,
            })
        ),
        Just(EventKind::Exec),
    ];
    (kind, any_number()).prop_map(|(kind, stack)| Event {
        tid: 1,
        stack: StackId::new(stack),
        kind,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_event_sequence_leaves_a_consistent_model(events in proptest::collection::vec(any_event(), 1..40)) {
        let mut model = AddressSpace::new();
        for event in &events {
            model.apply(event);
        }
        // Whatever happened, runs are well formed and totals add up.
        let totals = model.totals();
        prop_assert_eq!(totals.rss, totals.in_use + totals.lazyfree);
        prop_assert!(model.pages().runs().all(|(range, _)| range.start < range.end));
        prop_assert!(model.extents().iter().all(|(start, extent)| start < extent.end));
    }
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

    fn pagemap(&self, pages: std::ops::Range<Page>) -> Vec<PageEntry> {
        pages
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
            model.reconcile(reading, |pages| Some(reference.pagemap(pages)));
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

#[test]
fn after_an_exec_only_what_the_exec_maps_is_the_execs() {
    let mut model = AddressSpace::new();
    model.apply(&event(EventKind::Exec));
    model.exec_image(ExecImage {
        program: Some("/usr/bin/server".into()),
        interpreter_base: Some(0x7f00_0000_0000),
    });
    let program = 0x40_0000;
    let bss = program + MIB;
    let reserved = 0x10_0000_0000;
    let interpreter = 0x7f00_0000_0000;
    let stack = 0x7ffc_0000_0000;
    // Read late (the exec's record waited in a busy ring buffer, or the
    // next records were lost): an anonymous mapping made and touched
    // after the exec is already there.
    let vmas = [
        kernel_vma(program, bss, "/usr/bin/server", 0),
        kernel_vma(bss, bss + MIB, "", MIB),
        kernel_vma(reserved, reserved + 256 * MIB, "", 256 * MIB),
        kernel_vma(interpreter, interpreter + MIB, "/lib/ld-linux.so.2", 0),
        kernel_vma(stack, stack + MIB, "[stack]", MIB),
    ];
    reconcile_with(&mut model, &vmas, Moment::Interval, true, |pages| {
        Some(all_present(pages))
    });
    let created: Vec<CreatedBy> = vmas
        .iter()
        .map(|vma| model.extents().find(vma.start).unwrap().1.created_by)
        .collect();
    use CreatedBy::{Exec, Unobserved};
    assert_eq!(created, [Exec, Exec, Unobserved, Exec, Exec]);
    let by_cause = model.totals().by_cause;
    assert_eq!(by_cause.exec, 2 * MIB);
    assert_eq!(by_cause.unobserved, 256 * MIB);
}
