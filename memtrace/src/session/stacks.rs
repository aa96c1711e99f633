//! The session's stacks: the table records name their stacks from, the
//! kernel map frame-pointer walks arrive in, the unwind tables stack samples
//! are unwound with, and the hints that let the kernel side reuse samples.

use aya::maps::{HashMap as BpfHashMap, MapData};
use memtrace_common::{stack_key, StackFrames, StackSource};

use super::{process::Process, record::Recording};
use crate::{
    cli::Unwind,
    elf::ProgramKind,
    intake::{StackEnd, StackId, StackSample, StackTable},
    kernel::FrameHints,
    unwind::{self, TableCache},
};

/// Stacks as a capture recorded them, for a report: the binaries' unwind
/// tables may be gone, and the kernel's map is.
pub trait StackRecord {
    /// The frames and end stack sample `sample` was unwound to.
    fn unwound(&mut self, sample: StackId) -> Option<(Vec<u64>, Option<StackEnd>)>;
    /// The stacks the kernel walked that the recording took since the last
    /// call.
    fn walked(&mut self) -> Vec<(StackId, Vec<u64>, Option<StackEnd>)>;
}

/// Where the stacks records name come from.
enum Origin {
    /// The kernel side's map of walked stacks, and samples unwound here.
    Kernel(BpfHashMap<MapData, u64, StackFrames>),
    Played(Box<dyn StackRecord>),
}

pub struct Stacks {
    pub table: StackTable,
    origin: Origin,
    hints: FrameHints,
    tables: TableCache,
    choice: Unwind,
    /// Bytes a sample copies at most.
    stack_bytes: usize,
    /// `memtrace record`'s capture, which every stack taken goes to.
    recording: Option<Recording>,
}

impl Stacks {
    pub fn new(
        kernel: BpfHashMap<MapData, u64, StackFrames>,
        hints: FrameHints,
        choice: Unwind,
        stack_bytes: u32,
    ) -> Self {
        Self {
            table: StackTable::default(),
            origin: Origin::Kernel(kernel),
            hints,
            tables: TableCache::default(),
            choice,
            stack_bytes: stack_bytes as usize,
            recording: None,
        }
    }

    /// Stacks as `record` holds them, for a capture played back with
    /// `choice` as it was recorded with.
    pub fn played(record: Box<dyn StackRecord>, choice: Unwind, stack_bytes: u32) -> Self {
        Self {
            table: StackTable::default(),
            origin: Origin::Played(record),
            hints: FrameHints::detached(),
            tables: TableCache::default(),
            choice,
            stack_bytes: stack_bytes as usize,
            recording: None,
        }
    }

    /// Records every stack taken into `recording` from now on.
    pub fn record_to(&mut self, recording: Recording) {
        self.recording = Some(recording);
    }

    /// How the kernel side takes the stacks of `program` (unknown: not
    /// readable), as `--unwind` says.
    pub fn source_for(&self, program: Option<ProgramKind>) -> StackSource {
        match (self.choice, program) {
            (_, Some(program)) if program.bits32 => StackSource::Off,
            (Unwind::Auto, Some(program)) => unwind::stack_source(&program),
            (choice, _) => Self::source_before_reading(choice),
        }
    }

    /// How stacks are taken, as `choice` says, of a program not read yet.
    pub fn source_before_reading(choice: Unwind) -> StackSource {
        match choice {
            Unwind::Fp => StackSource::FramePointers,
            Unwind::Dwarf | Unwind::Auto => StackSource::Samples,
        }
    }

    /// Unwinds a stack sample of `process`, and tells the kernel side where
    /// the sampled instruction's return address is, so it can reuse the
    /// sample for later events there.
    pub fn unwind(&mut self, process: &mut Process, sample: &StackSample) {
        let Some(id) = StackId::new(sample.id) else {
            return;
        };
        if let Origin::Played(record) = &mut self.origin {
            if let Some((frames, end)) = record.unwound(id) {
                self.table.add_unwound(id, &frames, end);
            }
            return;
        }
        let unwound = process.unwind(&mut self.tables, sample, self.stack_bytes);
        let stack = self.table.add_unwound(id, &unwound.frames, unwound.end);
        if let Some(recording) = &self.recording {
            recording
                .borrow_mut()
                .stack(stack, Some(id), &unwound.frames, unwound.end);
        }
        for (address, hint) in unwound.hints {
            self.hints.insert(process.pid, address, hint);
        }
    }

    /// The stack a record of a process taking its stacks from `source`
    /// names (a sample's id is its unwound stack's), noting stacks the table
    /// has yet to copy from the kernel.
    pub fn resolve(&mut self, id: Option<StackId>, source: StackSource) -> Option<StackId> {
        let sampled = id.is_some_and(|id| id.key() & stack_key::SAMPLE_BIT != 0);
        let resolved = self.table.resolve(id);
        if let (Some(walked), false, StackSource::Samples) = (resolved, sampled, source) {
            self.table.walked_instead(walked);
        }
        self.table.saw(resolved);
        resolved
    }

    /// Copies the stacks the kernel walked since the last time, if records
    /// named any the table lacks.
    pub fn sync(&mut self) {
        let kernel = match &mut self.origin {
            Origin::Kernel(kernel) => kernel,
            Origin::Played(record) => {
                for (id, frames, end) in record.walked() {
                    self.table.add_walked(id, &frames, end);
                }
                return;
            }
        };
        if self.table.wants_sync() {
            let added = self.table.sync(kernel);
            if let Some(recording) = &self.recording {
                let mut recording = recording.borrow_mut();
                for (id, stack) in added
                    .into_iter()
                    .filter_map(|id| Some((id, self.table.get(id)?)))
                {
                    recording.stack(id, None, &stack.frames, stack.end);
                }
            }
        }
    }

    /// Forgets what was learnt of `tgid`'s code (it called exec).
    pub fn forget(&mut self, tgid: u32) {
        self.hints.forget(tgid);
    }

    /// Drops the unwind tables of files no traced process maps any more.
    pub fn drop_unused_tables(&mut self) {
        self.tables.drop_unused();
    }

    /// Bytes of unwind tables held.
    pub fn table_bytes(&self) -> usize {
        self.tables.bytes()
    }
}
