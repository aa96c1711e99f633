//! One traced process's events: its address-space model, and what its
//! events have said about it beyond the model (exit, exec, fork, OOM kill).

use std::ops::Range;

use crate::{
    intake::{Decoded, EventKind, Madvise, OomKill, ProcessMadvise},
    model::{pages::pages_covering, reconcile::Busy, AddressSpace, PAGE_SIZE},
    report::snapshot::Unresolved,
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
    /// `process_madvise` calls whose pidfd could no longer be resolved.
    pub unresolved_process_madvise: Unresolved,
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
                        end: start
                            .saturating_add(mmap.len.div_ceil(PAGE_SIZE).saturating_mul(PAGE_SIZE)),
                    },
                    Err(_) => Follow::Nothing,
                }
            }
            _ => Follow::Nothing,
        }
    }

    /// Follows a `process_madvise` the target made, whose pidfd names
    /// `target`: onto its own memory when that is itself; counted as
    /// unresolved when nobody can say any more.
    pub fn process_madvise(&mut self, decoded: &Decoded, target: MadviseTarget) {
        let EventKind::ProcessMadvise(call) = &decoded.event.kind else {
            return;
        };
        match target {
            MadviseTarget::Itself => self.apply_own_process_madvise(call, decoded),
            MadviseTarget::Other => {}
            MadviseTarget::Unknown => {
                let unresolved = &mut self.unresolved_process_madvise;
                unresolved.calls += 1;
                unresolved.bytes = unresolved.bytes.saturating_add(call.result.unwrap_or(0));
            }
        }
    }

    fn apply_own_process_madvise(&mut self, call: &ProcessMadvise, decoded: &Decoded) {
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

/// Whose memory a `process_madvise` advised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadviseTarget {
    Itself,
    Other,
    /// Its pidfd no longer says (closed, or reused for something else).
    Unknown,
}

/// The kernel's pidfds for "the calling thread" and "the calling process"
/// (`PIDFD_SELF_THREAD`, `PIDFD_SELF_THREAD_GROUP`: -10000 and -10001 since
/// Linux 6.17, -10000 and -20000 in 6.14 to 6.16). A thread's memory is
/// its process's.
const PIDFD_SELF: [i32; 3] = [-10_000, -10_001, -20_000];

/// Whose memory the target `pid`'s `call` advised; `resolve` says which
/// process one of its descriptors is a pidfd of, when it still can. It is
/// asked after the call, so the descriptor may have been closed (then the
/// answer is unknown, never a guess) or, rarely, reused for another pidfd.
pub fn madvise_target(
    call: &ProcessMadvise,
    pid: u32,
    resolve: impl FnOnce(i32) -> Option<u32>,
) -> MadviseTarget {
    if PIDFD_SELF.contains(&call.pidfd) {
        return MadviseTarget::Itself;
    }
    if call.pidfd < 0 {
        // No descriptor: the call failed and advised nothing.
        return MadviseTarget::Other;
    }
    match resolve(call.pidfd) {
        Some(target) if target == pid => MadviseTarget::Itself,
        Some(_) => MadviseTarget::Other,
        None => MadviseTarget::Unknown,
    }
}

/// The addresses an event is about. Its fields are whatever the program
/// passed, so the arithmetic saturates.
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
            let end =
                (call.old_addr.saturating_add(call.old_len)).max(new.saturating_add(call.new_len));
            Some(start..end)
        }
        EventKind::ProcessMadvise(call) => {
            let start = call.ranges.iter().map(|r| r.0).min()?;
            let end = call.ranges.iter().map(|r| r.0.saturating_add(r.1)).max()?;
            Some(start..end)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::intake::Mremap;

    fn call(pidfd: i32) -> ProcessMadvise {
        ProcessMadvise {
            pidfd,
            advice: 4,
            ranges: vec![(0x1000, 0x1000)],
            truncated: false,
            result: Ok(0x1000),
        }
    }

    #[test]
    fn process_madvise_targets_are_itself_other_or_unknown_never_guessed() {
        let nobody = |_| None;
        for pidfd in [-10_000, -10_001, -20_000] {
            assert_eq!(
                madvise_target(&call(pidfd), 7, nobody),
                MadviseTarget::Itself
            );
        }
        assert_eq!(madvise_target(&call(-100), 7, nobody), MadviseTarget::Other);
        assert_eq!(
            madvise_target(&call(5), 7, |_| Some(7)),
            MadviseTarget::Itself
        );
        assert_eq!(
            madvise_target(&call(5), 7, |_| Some(8)),
            MadviseTarget::Other
        );
        assert_eq!(madvise_target(&call(5), 7, nobody), MadviseTarget::Unknown);
    }

    #[test]
    fn unresolved_process_madvise_is_counted_not_applied() {
        let mut tracker = Tracker::default();
        let decoded = Decoded {
            tgid: 7,
            event: crate::intake::Event {
                tid: 7,
                stack: None,
                kind: EventKind::ProcessMadvise(call(5)),
            },
        };
        tracker.process_madvise(&decoded, MadviseTarget::Unknown);
        tracker.process_madvise(&decoded, MadviseTarget::Other);
        assert_eq!(
            tracker.unresolved_process_madvise,
            Unresolved {
                calls: 1,
                bytes: 0x1000
            }
        );
        assert!(tracker.model.activity().calls.is_empty());
        tracker.process_madvise(&decoded, MadviseTarget::Itself);
        assert_eq!(tracker.model.activity().calls.len(), 1);
    }

    proptest! {
        /// Records carry whatever the program passed (a failed call's
        /// garbage included): the range they touch is computed without
        /// overflowing, and is never inverted.
        #[test]
        fn touched_ranges_never_overflow(a in any::<u64>(), b in any::<u64>(), c in any::<u64>(), d in any::<u64>()) {
            let kinds = [
                EventKind::Mremap(Mremap { old_addr: a, old_len: b, new_len: c, flags: 0, result: Ok(d) }),
                EventKind::Mremap(Mremap { old_addr: a, old_len: b, new_len: c, flags: 0, result: Err(crate::intake::Errno(22)) }),
                EventKind::ProcessMadvise(ProcessMadvise {
                    pidfd: 3,
                    advice: 4,
                    ranges: vec![(a, b), (c, d)],
                    truncated: false,
                    result: Ok(0),
                }),
            ];
            for kind in kinds {
                if let Some(range) = touched(&kind) {
                    prop_assert!(range.start <= range.end, "{:?} from {:?}", range, kind);
                }
            }
            // Nor does naming a file mapping, busy or not.
            let mmap = EventKind::Mmap(crate::intake::Mmap {
                hint: 0,
                len: b,
                prot: 1,
                flags: libc::MAP_PRIVATE as u32,
                fd: 3,
                offset: c,
                result: Ok(a),
            });
            let decoded = Decoded { tgid: 1, event: crate::intake::Event { tid: 1, stack: None, kind: mmap } };
            let mut tracker = Tracker::default();
            tracker.ingest(&decoded);
            tracker.start_noting_busy();
            if let Follow::MappedFile { start, end } = tracker.ingest(&decoded) {
                prop_assert!(start <= end);
            }
        }
    }
}
