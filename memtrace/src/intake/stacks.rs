//! User stacks: the return addresses records refer to, and whether each
//! stack reached its thread's root or was cut, and why.
//!
//! Stacks come two ways. Walked by frame pointers in the kernel, they are
//! stored once in the `STACKS` map under a hash of their frames; the agent
//! copies stacks it has not seen and deletes every entry it has read, so the
//! kernel map only holds stacks waiting to be read. Unwound by the agent from
//! a stack sample, they are added here under the same kind of hash (the same
//! frames get the same id either way), and the sample's id becomes an alias
//! for it: records of the same place carry the sample id.

use std::{collections::VecDeque, fmt, sync::Arc};

use aya::maps::{HashMap as BpfHashMap, MapData};
use memtrace_common::{stack_key, StackFrames};

use super::event::{StackId, StackKeyed};

/// Return addresses of a user stack, innermost first (the first is the
/// instruction of the event itself).
pub type Frames = Arc<[u64]>;

/// How a stack ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackEnd {
    /// At its thread's root (`_start`, `clone3`, `runtime.goexit`...): the
    /// stack is whole.
    Root,
    Cut(CutReason),
}

/// Why a stack stops before its thread's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CutReason {
    /// A frame's code keeps no frame pointer, and the stack was walked by
    /// frame pointers.
    NoFramePointer,
    /// A frame's code has no unwind information (`.eh_frame` or
    /// `.debug_frame`) and no frame pointer either.
    NoUnwindInfo,
    /// JIT-compiled or generated code (an anonymous executable mapping).
    JitCode,
    /// The stack copy ended before the root: the stack is deeper than the
    /// bytes a sample copies (`--stack-bytes`).
    StackCopyTooSmall,
    /// More frames than memtrace keeps.
    DepthLimit,
    /// The unwind information led somewhere that is not a stack frame.
    BadUnwind,
    /// No stack was taken (stacks off, a 32-bit process, or the sample or
    /// walk was lost).
    NotTaken,
    /// The ring buffer was half full, so frame pointers were walked instead
    /// of copying the stack for unwinding.
    RingBufferBusy,
    /// The outermost frame walked is in a file memtrace could not read, so
    /// whether it is the thread's first function is not known.
    UnreadableCode,
}

impl CutReason {
    pub const ALL: [Self; 9] = [
        Self::NoFramePointer,
        Self::NoUnwindInfo,
        Self::JitCode,
        Self::StackCopyTooSmall,
        Self::DepthLimit,
        Self::BadUnwind,
        Self::NotTaken,
        Self::RingBufferBusy,
        Self::UnreadableCode,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Self::NoFramePointer => "code without frame pointers",
            Self::NoUnwindInfo => "code with neither unwind tables nor frame pointers",
            Self::JitCode => "JIT-compiled code",
            Self::StackCopyTooSmall => "a stack deeper than the copied bytes",
            Self::DepthLimit => "more frames than memtrace keeps",
            Self::BadUnwind => "unwind tables that did not lead to a caller",
            Self::NotTaken => "no stack taken",
            Self::RingBufferBusy => "frame pointers walked while the ring buffer was busy",
            Self::UnreadableCode => "code in a file memtrace could not read",
        }
    }

    /// The JSON and label name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoFramePointer => "no_frame_pointer",
            Self::NoUnwindInfo => "no_unwind_info",
            Self::JitCode => "jit_code",
            Self::StackCopyTooSmall => "stack_copy_too_small",
            Self::DepthLimit => "depth_limit",
            Self::BadUnwind => "bad_unwind",
            Self::NotTaken => "not_taken",
            Self::RingBufferBusy => "ring_buffer_busy",
            Self::UnreadableCode => "unreadable_code",
        }
    }
}

impl StackEnd {
    /// The end its [`Display`](fmt::Display) names; `None` for any other
    /// text (an empty one: not known).
    pub fn parse(text: &str) -> Option<Self> {
        if text == "complete" {
            return Some(Self::Root);
        }
        CutReason::ALL
            .into_iter()
            .find(|reason| reason.name() == text)
            .map(Self::Cut)
    }
}

impl fmt::Display for StackEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("complete"),
            Self::Cut(reason) => f.write_str(reason.name()),
        }
    }
}

/// A stack: its return addresses and, when the way it was taken says so,
/// how it ends (for stacks walked by frame pointers in the kernel, only the
/// names of its frames can tell: see `symbolize`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    pub frames: Frames,
    pub end: Option<StackEnd>,
}

/// Sample ids kept as aliases. The kernel side reuses only the newest sample
/// of each of its per-CPU caches (nine per CPU), and a record is always
/// behind its sample in the ring buffer, so a few thousand is ample.
const ALIASES: usize = 4096;

#[derive(Default)]
pub struct StackTable {
    stacks: StackKeyed<StackId, Stack>,
    /// Stack samples unwound, by sample id, oldest first.
    aliases: StackKeyed<StackId, StackId>,
    alias_order: VecDeque<StackId>,
    /// Ids seen in records that the table does not have yet.
    wanted: usize,
    /// Stacks walked by frame pointers for processes whose stacks are
    /// unwound, because the ring buffer was busy; not read yet.
    walked_instead: std::collections::HashSet<StackId>,
}

impl StackTable {
    pub fn get(&self, id: StackId) -> Option<&Stack> {
        self.stacks.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (StackId, &Stack)> + '_ {
        self.stacks.iter().map(|(&id, stack)| (id, stack))
    }

    /// The stack a record names: a sample's id is its unwound stack's, and
    /// `None` when the sample was lost.
    pub fn resolve(&self, id: Option<StackId>) -> Option<StackId> {
        let id = id?;
        if id.key() & stack_key::SAMPLE_BIT == 0 {
            return Some(id);
        }
        self.aliases.get(&id).copied()
    }

    /// Notes a stack id seen in a record; cheap when it is known.
    pub fn saw(&mut self, id: Option<StackId>) {
        if let Some(id) = id {
            if !self.stacks.contains_key(&id) {
                self.wanted += 1;
            }
        }
    }

    /// Notes that stack `id` was walked by frame pointers where the stack
    /// would have been unwound, had the ring buffer had room: where it stops
    /// short, that is why.
    pub fn walked_instead(&mut self, id: StackId) {
        match self.stacks.get_mut(&id) {
            Some(stack) => {
                stack
                    .end
                    .get_or_insert(StackEnd::Cut(CutReason::RingBufferBusy));
            }
            None => {
                self.walked_instead.insert(id);
            }
        }
    }

    /// Whether records named stacks the table lacks since the last sync.
    pub fn wants_sync(&self) -> bool {
        self.wanted > 0
    }

    /// Copies new stacks out of the kernel map and deletes every entry read.
    /// Returns the ids of the new stacks.
    pub fn sync(&mut self, kernel: &mut BpfHashMap<MapData, u64, StackFrames>) -> Vec<StackId> {
        self.wanted = 0;
        let keys: Vec<u64> = kernel.keys().filter_map(Result::ok).collect();
        let mut added = Vec::new();
        for key in keys {
            let Some(id) = StackId::new(key) else {
                continue;
            };
            if let std::collections::hash_map::Entry::Vacant(entry) = self.stacks.entry(id) {
                if let Ok(stack) = kernel.get(&key, 0) {
                    let len = (stack.len as usize).min(stack.ips.len());
                    let end = self
                        .walked_instead
                        .remove(&id)
                        .then_some(StackEnd::Cut(CutReason::RingBufferBusy));
                    entry.insert(Stack {
                        frames: stack.ips[..len].into(),
                        end,
                    });
                    added.push(id);
                }
            }
            // Already gone if the kernel side raced us; nothing to undo.
            let _ = kernel.remove(&key);
        }
        added
    }

    /// Adds the stack unwound from the sample `sample`, and returns its id.
    pub fn add_unwound(
        &mut self,
        sample: StackId,
        frames: &[u64],
        end: Option<StackEnd>,
    ) -> StackId {
        let id = StackId::new(stack_key::of(frames)).expect("stack keys are never zero");
        self.stacks.entry(id).or_insert_with(|| Stack {
            frames: frames.into(),
            end,
        });
        if self.aliases.insert(sample, id).is_none() {
            self.alias_order.push_back(sample);
            if self.alias_order.len() > ALIASES {
                if let Some(oldest) = self.alias_order.pop_front() {
                    self.aliases.remove(&oldest);
                }
            }
        }
        id
    }

    /// Adds stack `id` as a capture recorded it, walked by the kernel and
    /// ending as `end` said then.
    pub fn add_walked(&mut self, id: StackId, frames: &[u64], end: Option<StackEnd>) {
        self.wanted = 0;
        let busy = self.walked_instead.remove(&id);
        self.stacks.entry(id).or_insert_with(|| Stack {
            frames: frames.into(),
            end: end.or(busy.then_some(StackEnd::Cut(CutReason::RingBufferBusy))),
        });
    }

    /// Adds a stack directly (tests, and stacks read from elsewhere).
    pub fn insert(&mut self, id: StackId, frames: &[u64]) {
        self.stacks.insert(
            id,
            Stack {
                frames: frames.into(),
                end: None,
            },
        );
    }

    /// Drops the stacks `keep` refuses, and the samples unwound to them;
    /// returns how many stacks went.
    pub fn retain(&mut self, keep: impl Fn(StackId) -> bool) -> usize {
        let before = self.stacks.len();
        self.stacks.retain(|&id, _| keep(id));
        self.aliases.retain(|_, &mut id| keep(id));
        let aliases = &self.aliases;
        self.alias_order
            .retain(|sample| aliases.contains_key(sample));
        before - self.stacks.len()
    }

    /// Distinct stacks held, for the agent's own footprint.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: u64) -> StackId {
        StackId::new(key).unwrap()
    }

    #[test]
    fn samples_resolve_to_their_unwound_stack_and_the_same_frames_share_one_id() {
        let mut table = StackTable::default();
        let first = id(stack_key::SAMPLE_BIT | 1);
        let second = id(stack_key::SAMPLE_BIT | 2);
        let frames = [0x1000, 0x2000, 0x3000];
        let a = table.add_unwound(first, &frames, Some(StackEnd::Root));
        let b = table.add_unwound(second, &frames, Some(StackEnd::Root));
        assert_eq!(a, b);
        assert_eq!(a.key(), stack_key::of(&frames));
        assert_eq!(table.resolve(Some(first)), Some(a));
        assert_eq!(table.resolve(Some(second)), Some(a));
        assert_eq!(table.get(a).unwrap().end, Some(StackEnd::Root));
        // A walked stack's id is its own; an unknown sample is no stack.
        assert_eq!(table.resolve(Some(id(42))), Some(id(42)));
        assert_eq!(table.resolve(Some(id(stack_key::SAMPLE_BIT | 3))), None);
    }

    #[test]
    fn old_aliases_make_room_for_new_ones() {
        let mut table = StackTable::default();
        for n in 1..=(ALIASES as u64 + 10) {
            table.add_unwound(id(stack_key::SAMPLE_BIT | n), &[n], Some(StackEnd::Root));
        }
        assert_eq!(table.resolve(Some(id(stack_key::SAMPLE_BIT | 1))), None);
        assert!(table
            .resolve(Some(id(stack_key::SAMPLE_BIT | (ALIASES as u64 + 10))))
            .is_some());
        assert_eq!(table.aliases.len(), ALIASES);
    }

    #[test]
    fn retain_drops_the_stacks_refused_and_the_samples_unwound_to_them() {
        let mut table = StackTable::default();
        let kept = table.add_unwound(id(stack_key::SAMPLE_BIT | 1), &[1, 2], None);
        let dropped = table.add_unwound(id(stack_key::SAMPLE_BIT | 2), &[3, 4], None);
        table.insert(id(7), &[5]);
        assert_eq!(table.retain(|stack| stack == kept), 2);
        assert!(table.get(kept).is_some());
        assert!(table.get(dropped).is_none() && table.get(id(7)).is_none());
        assert_eq!(
            table.resolve(Some(id(stack_key::SAMPLE_BIT | 1))),
            Some(kept)
        );
        assert_eq!(table.resolve(Some(id(stack_key::SAMPLE_BIT | 2))), None);
        assert_eq!(table.alias_order.len(), 1);
    }

    #[test]
    fn every_end_reads_back_from_its_name() {
        for end in CutReason::ALL
            .into_iter()
            .map(StackEnd::Cut)
            .chain([StackEnd::Root])
        {
            assert_eq!(StackEnd::parse(&end.to_string()), Some(end));
        }
        assert_eq!(StackEnd::parse(""), None);
    }
}
