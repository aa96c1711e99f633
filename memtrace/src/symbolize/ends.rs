//! Whether a stack is whole: it reached its thread's root, or it was cut,
//! and why; and, over many stacks, how many bytes stand under whole ones.

use memtrace_common::config::MAX_STACK_FRAMES;

use super::Frame;
use crate::{
    intake::{CutReason, StackEnd},
    model::{Backing, Extents},
};

/// Functions a thread's stack starts in: a stack whose outermost frame is
/// one of these is whole.
pub const STACK_ROOTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "_dl_start_user",
    "start_thread",
    "clone",
    "clone3",
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
    "runtime.mstart",
    "runtime.mstart.abi0",
    "runtime.morestack",
    "runtime.morestack.abi0",
    "runtime.systemstack",
    "runtime.systemstack.abi0",
    "runtime.mcall",
];

/// How a stack of `frames` ends: as unwinding said (`known`), or, for stacks
/// walked by frame pointers, as its outermost frame says. `trimmed`: the
/// walk went on into words that were not return addresses.
pub(super) fn end_of(
    known: Option<StackEnd>,
    frames: &[Frame],
    trimmed: bool,
    extents: &Extents,
) -> StackEnd {
    let outermost = frames.last();
    let at_root = outermost
        .and_then(Frame::outermost_function)
        .is_some_and(|name| STACK_ROOTS.contains(&name));
    match known {
        // A stack that reached a thread's first function is whole however
        // the unwinding stopped after it.
        _ if at_root => StackEnd::Root,
        Some(end) => end,
        None if !trimmed && frames.len() >= MAX_STACK_FRAMES => {
            StackEnd::Cut(CutReason::DepthLimit)
        }
        None => {
            let backing = outermost
                .and_then(|frame| extents.find(frame.address))
                .map(|(_, extent)| matches!(extent.backing, Backing::File { .. }));
            // Its file could not be opened: whether it is a thread's first
            // function cannot be told from its name.
            let unreadable = outermost
                .and_then(|frame| frame.module.as_ref())
                .is_some_and(|module| !module.readable);
            StackEnd::Cut(match backing {
                Some(false) => CutReason::JitCode,
                Some(true) if unreadable => CutReason::UnreadableCode,
                _ => CutReason::NoFramePointer,
            })
        }
    }
}

/// Bytes under stacks, by whether the stacks are whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completeness {
    pub complete: u64,
    pub cut: u64,
}

impl std::ops::AddAssign for Completeness {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.complete += other.complete;
        self.cut += other.cut;
    }
}

impl Completeness {
    pub fn add(&mut self, end: StackEnd, bytes: u64) {
        match end {
            StackEnd::Root => self.complete += bytes,
            StackEnd::Cut(_) => self.cut += bytes,
        }
    }

    /// The share of the bytes whose stacks are whole, in percent; `None`
    /// with no bytes under any stack.
    pub fn percent_complete(&self) -> Option<f64> {
        let total = self.complete + self.cut;
        (total > 0).then(|| self.complete as f64 * 100.0 / total as f64)
    }
}
