//! One traced process's events: its address-space model, and what its
//! events have said about it beyond the model (exit, exec, fork, OOM kill).

use std::ops::Range;

use crate::{
    intake::{Decoded, EventKind, Madvise, OomKill},
    model::{pages::pages_covering, reconcile::Busy, AddressSpace, PAGE_SIZE},
};

/// How the target ended, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    Exited,
    OomKilled,
}

/// What the session has to do because of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    Nothing,
    /// The address space was replaced: read its mappings now.
    Exec,
    /// Something other than the target changed its RSS (reclaim): reconcile
    /// soon.
    Reclaim,
    /// A `process_madvise` whose target must be looked up.
    ProcessMadvise,
    /// The process started this child process.
    Forked {
        child: u32,
        shares_memory: bool,
    },
    /// One of its threads exited; whether the process did is for /proc to
    /// say (kernels whose exit tracepoint does not say).
    ThreadExit,
    /// A file was mapped at this range: its path is for /proc to tell, while
    /// the mapping exists.
    MappedFile {
        start: u64,
        end: u64,
    },
    Ended,
}

#[derive(Default)]
pub struct Tracker {
    pub model: AddressSpace,
    pub records: u64,
    pub forks: u64,
    pub foreign_rss_changes: u64,
    pub oom_kill: Option<OomKill>,
    pub ending: Option<Ending>,
    /// Ranges touched while /proc was being read (see `model::reconcile`).
    busy: Option<Busy>,
    /// A vfork child: until it calls exec, its memory is its parent's, and
    /// what it does there is the parent's to count.
    borrowing: bool,
}

impl Tracker {
    /// Applies one decoded record about this target.
    pub fn ingest(&mut self, decoded: &Decoded) -> Follow {
        let event = &decoded.event;
        self.records += 1;
        if self.borrowing {
            if !matches!(event.kind, EventKind::Exec) {
                return self.follow(decoded);
            }
            self.borrowing = false;
        }
        let Some(busy) = &mut self.busy else {
            self.model.apply(event);
            return self.follow(decoded);
        };
        match touched(&event.kind) {
            Some(range) => {
                busy.add(range.clone());
                let pages = pages_covering(range.start, range.end - range.start);
                let before = self.model.resident_in(pages.clone()).2;
                self.model.apply(event);
                let after = self.model.resident_in(pages).2;
                busy.lazyfree_lost(range, before.saturating_sub(after));
            }
            None => {
                if matches!(event.kind, EventKind::Brk { .. } | EventKind::Exec) {
                    busy.all();
                }
                self.model.apply(event);
            }
        }
        self.follow(decoded)
    }

    /// What the session has to do about `decoded`, already applied.
    fn follow(&mut self, decoded: &Decoded) -> Follow {
        let event = &decoded.event;
        match &event.kind {
            EventKind::Exec => Follow::Exec,
            EventKind::Exit => {
                self.ending.get_or_insert(Ending::Exited);
                Follow::Ended
            }
            EventKind::OomVictim(kill) => {
                self.oom_kill = Some(*kill);
                self.ending = Some(Ending::OomKilled);
                Follow::Nothing
            }
            EventKind::Fork {
                child,
                shares_memory,
            } => {
                self.forks += 1;
                Follow::Forked {
                    child: *child,
                    shares_memory: *shares_memory,
                }
            }
            EventKind::ThreadExit => Follow::ThreadExit,
            EventKind::ForeignRssChange { .. } => {
                self.foreign_rss_changes += 1;
                Follow::Reclaim
            }
            EventKind::ProcessMadvise(_) => Follow::ProcessMadvise,
            EventKind::Mmap(mmap) if mmap.flags & libc::MAP_ANONYMOUS as u32 == 0 => {
                match mmap.result {
                    Ok(start) => Follow::MappedFile {
                        start,
                        end: start + mmap.len.div_ceil(PAGE_SIZE) * PAGE_SIZE,
                    },
                    Err(_) => Follow::Nothing,
                }
            }
            _ => Follow::Nothing,
        }
    }

    /// Applies a `process_madvise` the target made on its own memory.
    pub fn apply_own_process_madvise(&mut self, decoded: &Decoded) {
        let EventKind::ProcessMadvise(call) = &decoded.event.kind else {
            return;
        };
        for &(addr, len) in &call.ranges {
            self.model.madvise(
                &Madvise {
                    addr,
                    len,
                    advice: call.advice,
                    result: call.result,
                },
                decoded.event.stack,
            );
        }
    }

    /// A tracker for a child this process forked: the child starts with a
    /// copy of the parent's address space, as the kernel gives it.
    pub fn forked(&self) -> Self {
        Self {
            model: self.model.forked(),
            ..Self::default()
        }
    }

    /// A tracker for a child that shares its parent's memory until it calls
    /// exec (vfork, posix_spawn): it models nothing until then.
    pub fn sharing_parents_memory() -> Self {
        Self {
            borrowing: true,
            ..Self::default()
        }
    }

    /// Starts noting the ranges events touch (while /proc is read).
    pub fn start_noting_busy(&mut self) {
        self.busy = Some(Busy::default());
    }

    pub fn take_busy(&mut self) -> Busy {
        self.busy.take().unwrap_or_default()
    }
}

/// The addresses an event is about.
fn touched(kind: &EventKind) -> Option<Range<u64>> {
    const PAGE: u64 = 4096;
    let span = |start: u64, len: u64| Some(start..start.saturating_add(len.max(PAGE)));
    match kind {
        EventKind::Fault(fault) => span(fault.address & !(PAGE - 1), PAGE),
        EventKind::Mmap(mmap) => mmap.result.ok().and_then(|addr| span(addr, mmap.len)),
        EventKind::Munmap { addr, len, .. } => span(*addr, *len),
        EventKind::Madvise(call) => span(call.addr, call.len),
        // Old and new places both change; cover both with one range.
        EventKind::Mremap(call) => {
            let new = call.result.unwrap_or(call.old_addr);
            let start = call.old_addr.min(new);
            let end = (call.old_addr + call.old_len).max(new + call.new_len);
            Some(start..end)
        }
        EventKind::ProcessMadvise(call) => {
            let start = call.ranges.iter().map(|r| r.0).min()?;
            let end = call.ranges.iter().map(|r| r.0 + r.1).max()?;
            Some(start..end)
        }
        _ => None,
    }
}
