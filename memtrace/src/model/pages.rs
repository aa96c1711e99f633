//! Which pages of the address space are mapped, in what state, and why.
//!
//! Pages are kept as runs: maximal ranges of consecutive pages in the same
//! state. A process with gigabytes resident usually has a few thousand runs,
//! because neighbouring pages tend to be faulted in by the same code and
//! released by the same call; a map entry per page would cost the agent more
//! memory than some of the processes it traces.

use std::{collections::BTreeMap, ops::Range};

use crate::intake::StackId;

/// A page number: an address divided by [`PAGE_SIZE`].
pub type Page = u64;

pub const PAGE_SIZE: u64 = 4096;
pub const PAGE_SHIFT: u32 = 12;

/// The pages that cover the bytes `[start, start + len)`.
pub fn pages_covering(start: u64, len: u64) -> Range<Page> {
    let end = start.saturating_add(len).saturating_add(PAGE_SIZE - 1);
    (start >> PAGE_SHIFT)..(end >> PAGE_SHIFT)
}

/// What a mapped page is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageUse {
    /// Resident, and the program may be using it.
    InUse,
    /// Resident, but given back with `MADV_FREE`: the kernel may take it back
    /// at any time without telling the program, and until then it counts in
    /// RSS.
    LazyFree,
    /// Mapped to the kernel's shared zero page by a read of never-written
    /// anonymous memory: not in RSS until the first write.
    ZeroPage,
}

impl PageUse {
    pub fn resident(self) -> bool {
        self != Self::ZeroPage
    }
}

/// Which of the kernel's RSS counters a resident page is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageKind {
    Anon,
    File,
    Shmem,
}

/// How a page came to be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// A page fault at this page.
    Fault,
    /// Mapped by the kernel along with a nearby fault (a transparent huge
    /// page, or file pages mapped around the faulting one); the stack is that
    /// fault's.
    FaultAround,
    /// Populated by a syscall (`MAP_POPULATE`, `MADV_POPULATE_*`).
    Populate,
    /// Resident when memtrace attached.
    BeforeAttach,
    /// Set up by `execve` (the new stack, arguments, the loader's pages).
    Exec,
    /// Found resident in /proc with no event that explains it (records lost,
    /// or a way in that memtrace does not trace, such as `mlock`).
    Unobserved,
}

/// Why the page is mapped: the cause and, when one was walked, the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin {
    pub cause: Cause,
    pub stack: Option<StackId>,
}

impl Origin {
    pub const fn new(cause: Cause, stack: Option<StackId>) -> Self {
        Self { cause, stack }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageState {
    pub page_use: PageUse,
    pub kind: PageKind,
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    end: Page,
    state: PageState,
}

/// Mapped pages as runs of equal state, keyed by their first page.
#[derive(Clone, Debug, Default)]
pub struct PageMap {
    runs: BTreeMap<Page, Run>,
}

impl PageMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of runs, for the agent's own footprint.
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    pub fn get(&self, page: Page) -> Option<PageState> {
        self.runs
            .range(..=page)
            .next_back()
            .filter(|(_, run)| run.end > page)
            .map(|(_, run)| run.state)
    }

    /// Maps one page in `state`. The fault path: neighbours in the same
    /// state are extended rather than split and merged.
    pub fn set_page(&mut self, page: Page, state: PageState) {
        if let Some((&start, run)) = self.runs.range_mut(..=page).next_back() {
            if run.end > page {
                if run.state != state {
                    self.set(page..page + 1, state);
                }
                return;
            }
            if run.end == page && run.state == state {
                run.end = page + 1;
                self.merge_with_next(start);
                return;
            }
        }
        // Unmapped, and not the end of an equal run: maybe the start of one.
        let end = match self.runs.get(&(page + 1)) {
            Some(next) if next.state == state => {
                let end = next.end;
                self.runs.remove(&(page + 1));
                end
            }
            _ => page + 1,
        };
        self.runs.insert(page, Run { end, state });
    }

    /// Maps `pages`, all in `state`, replacing whatever was there.
    pub fn set(&mut self, pages: Range<Page>, state: PageState) {
        if pages.is_empty() {
            return;
        }
        self.remove(pages.clone(), |_, _| {});
        self.runs.insert(
            pages.start,
            Run {
                end: pages.end,
                state,
            },
        );
        self.merge_around(pages);
    }

    /// Unmaps `pages`, calling `removed` with each run taken out.
    pub fn remove(&mut self, pages: Range<Page>, mut removed: impl FnMut(Range<Page>, PageState)) {
        if pages.is_empty() {
            return;
        }
        self.split_at(pages.start);
        self.split_at(pages.end);
        let starts: Vec<Page> = self.runs.range(pages).map(|(&start, _)| start).collect();
        for start in starts {
            if let Some(run) = self.runs.remove(&start) {
                removed(start..run.end, run.state);
            }
        }
    }

    /// Changes the state of mapped pages in `pages`: `change` returns the new
    /// state of a run, or `None` to unmap it, and sees every run it changes.
    pub fn update(
        &mut self,
        pages: Range<Page>,
        mut change: impl FnMut(Range<Page>, PageState) -> Option<PageState>,
    ) {
        if pages.is_empty() {
            return;
        }
        self.split_at(pages.start);
        self.split_at(pages.end);
        let starts: Vec<Page> = self.runs.range(pages.clone()).map(|(&s, _)| s).collect();
        for start in starts {
            let Some(run) = self.runs.get(&start).copied() else {
                continue;
            };
            match change(start..run.end, run.state) {
                Some(state) if state == run.state => {}
                Some(state) => {
                    self.runs.insert(
                        start,
                        Run {
                            end: run.end,
                            state,
                        },
                    );
                }
                None => {
                    self.runs.remove(&start);
                }
            }
        }
        self.merge_range(pages);
    }

    /// Mapped runs overlapping `pages`, clipped to it.
    pub fn runs_in(
        &self,
        pages: Range<Page>,
    ) -> impl Iterator<Item = (Range<Page>, PageState)> + '_ {
        let first = self
            .runs
            .range(..pages.start)
            .next_back()
            .filter(|(_, run)| run.end > pages.start)
            .map(|(&start, run)| (start, run));
        first
            .into_iter()
            .chain(self.runs.range(pages.clone()).map(|(&s, r)| (s, r)))
            .map(move |(start, run)| (start.max(pages.start)..run.end.min(pages.end), run.state))
            .filter(|(range, _)| !range.is_empty())
    }

    /// Every mapped run.
    pub fn runs(&self) -> impl Iterator<Item = (Range<Page>, PageState)> + '_ {
        self.runs
            .iter()
            .map(|(&start, run)| (start..run.end, run.state))
    }

    /// Moves the runs in `from` so they start at `to` (mremap), dropping
    /// whatever was mapped at the destination first.
    pub fn relocate(&mut self, from: Range<Page>, to: Page) {
        let mut moved = Vec::new();
        self.remove(from.clone(), |range, state| moved.push((range, state)));
        let len = from.end - from.start;
        self.remove(to..to + len, |_, _| {});
        for (range, state) in moved {
            let start = range.start - from.start + to;
            self.runs.insert(
                start,
                Run {
                    end: start + (range.end - range.start),
                    state,
                },
            );
        }
        self.merge_range(to..to + len);
    }

    /// Makes `page` a run boundary, splitting the run that straddles it.
    fn split_at(&mut self, page: Page) {
        let Some((&start, run)) = self.runs.range_mut(..page).next_back() else {
            return;
        };
        if run.end > page {
            let tail = Run {
                end: run.end,
                state: run.state,
            };
            run.end = page;
            debug_assert!(start < page);
            self.runs.insert(page, tail);
        }
    }

    /// Merges runs of equal state that touch, anywhere in `pages` and at its
    /// two edges.
    fn merge_range(&mut self, pages: Range<Page>) {
        let mut starts: Vec<Page> = self.runs.range(pages.clone()).map(|(&s, _)| s).collect();
        if let Some((&before, _)) = self.runs.range(..pages.start).next_back() {
            starts.insert(0, before);
        }
        for start in starts {
            if self.runs.contains_key(&start) {
                self.merge_with_next(start);
            }
        }
    }

    fn merge_around(&mut self, pages: Range<Page>) {
        self.merge_with_next(pages.start);
        if let Some((&before, _)) = self.runs.range(..pages.start).next_back() {
            self.merge_with_next(before);
        }
    }

    /// Absorbs the runs that directly follow the run at `start` while they
    /// have its state.
    fn merge_with_next(&mut self, start: Page) {
        let Some(run) = self.runs.get(&start).copied() else {
            return;
        };
        let mut end = run.end;
        while let Some(next) = self.runs.get(&end).copied() {
            if next.state != run.state {
                break;
            }
            self.runs.remove(&end);
            end = next.end;
        }
        if end != run.end {
            self.runs.insert(
                start,
                Run {
                    end,
                    state: run.state,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(page_use: PageUse, stack: u64) -> PageState {
        PageState {
            page_use,
            kind: PageKind::Anon,
            origin: Origin::new(Cause::Fault, StackId::new(stack)),
        }
    }

    #[test]
    fn consecutive_faults_make_one_run() {
        let mut pages = PageMap::new();
        for page in 100..200 {
            pages.set_page(page, state(PageUse::InUse, 1));
        }
        assert_eq!(pages.run_count(), 1);
        assert_eq!(pages.runs().next().unwrap().0, 100..200);
    }

    #[test]
    fn a_different_state_in_the_middle_splits_and_merges_back() {
        let mut pages = PageMap::new();
        pages.set(0..10, state(PageUse::InUse, 1));
        pages.set(4..6, state(PageUse::LazyFree, 1));
        assert_eq!(pages.run_count(), 3);
        assert_eq!(pages.get(5).unwrap().page_use, PageUse::LazyFree);
        pages.update(0..10, |_, mut s| {
            s.page_use = PageUse::InUse;
            Some(s)
        });
        assert_eq!(pages.run_count(), 1);
    }

    #[test]
    fn remove_reports_exactly_the_removed_pages() {
        let mut pages = PageMap::new();
        pages.set(0..10, state(PageUse::InUse, 1));
        pages.set(20..30, state(PageUse::LazyFree, 2));
        let mut removed = Vec::new();
        pages.remove(5..25, |range, s| removed.push((range, s.page_use)));
        assert_eq!(
            removed,
            vec![(5..10, PageUse::InUse), (20..25, PageUse::LazyFree)]
        );
        let left: Vec<_> = pages.runs().map(|(r, _)| r).collect();
        assert_eq!(left, vec![0..5, 25..30]);
    }

    #[test]
    fn relocate_moves_states_and_clears_the_destination() {
        let mut pages = PageMap::new();
        pages.set(0..4, state(PageUse::InUse, 1));
        pages.set(100..110, state(PageUse::InUse, 9));
        pages.relocate(0..4, 100);
        let runs: Vec<_> = pages.runs().map(|(r, s)| (r, s.origin.stack)).collect();
        assert_eq!(
            runs,
            vec![(100..104, StackId::new(1)), (104..110, StackId::new(9))]
        );
    }

    #[test]
    fn runs_in_clips_to_the_range() {
        let mut pages = PageMap::new();
        pages.set(0..10, state(PageUse::InUse, 1));
        let runs: Vec<_> = pages.runs_in(3..5).map(|(r, _)| r).collect();
        assert_eq!(runs, vec![3..5]);
    }
}
