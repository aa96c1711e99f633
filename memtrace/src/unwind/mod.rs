//! Unwinding stack samples with the binaries' own unwind tables: whole
//! stacks for code built without frame pointers (most distribution packages
//! and release builds), the way `perf --call-graph dwarf` gets them.
//!
//! The kernel side copies the registers and a bounded slice of the stack
//! (see `memtrace-ebpf`'s `stacks`); here the copy is unwound with framehop
//! over the process's executable mappings, each described by its file's
//! `.eh_frame` (or `.debug_frame`). Frames in code with neither (JIT code,
//! some hand-written assembly) are crossed by frame pointers where they have
//! them. Tables are read once per file and shared by every process mapping
//! it, off the event path: at the first sample that needs them.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::Arc,
};

use framehop::{
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
    Error, ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder,
};
use memtrace_common::{config::MAX_STACK_FRAMES, FrameHint, StackSource};

use crate::{
    elf::{Bytes, ProgramKind, UnwindSections},
    intake::{CutReason, StackEnd, StackSample},
    model::{Backing, Extents},
    proc::ProcessView,
};

/// How the kernel side should take the stacks of a program: walking frame
/// pointers where all of its code keeps them (a statically linked Go
/// program), copying stacks for unwinding here otherwise (C, C++ and Rust
/// built the usual way, and anything linked with the C library, which
/// distributions build without frame pointers); none for 32-bit programs,
/// which memtrace does not unwind.
pub fn stack_source(program: &ProgramKind) -> StackSource {
    if program.bits32 {
        StackSource::Off
    } else if program.go && !program.dynamic {
        StackSource::FramePointers
    } else {
        StackSource::Samples
    }
}

/// A file as the kernel knows it: device and inode, so a file replaced at
/// the same path is read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
}

/// Unwind tables of every file read so far, shared by all processes.
#[derive(Default)]
pub struct TableCache {
    files: HashMap<FileKey, Option<Arc<UnwindSections>>>,
    bytes: usize,
}

impl TableCache {
    /// Bytes of unwind tables held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the tables no traced process's unwinder uses any more (files
    /// of processes that ended), and what was learnt of unreadable files.
    pub fn drop_unused(&mut self) {
        self.files
            .retain(|_, tables| tables.as_ref().is_some_and(|tables| tables.shared()));
        self.bytes = self
            .files
            .values()
            .flatten()
            .map(|tables| tables.size())
            .sum();
    }

    /// The tables of the file at `path` (as opened from memtrace), or
    /// `None` when it cannot be read or is not ELF.
    fn tables(&mut self, path: &PathBuf) -> Option<Arc<UnwindSections>> {
        let meta = std::fs::metadata(path).ok()?;
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if let Some(known) = self.files.get(&key) {
            return known.clone();
        }
        let tables = read_tables(path).map(Arc::new);
        self.bytes += tables.as_ref().map_or(0, |tables| tables.size());
        self.files.insert(key, tables.clone());
        tables
    }
}

fn read_tables(path: &PathBuf) -> Option<UnwindSections> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the mapping is only read, and only while this function runs;
    // a file truncated meanwhile can at worst fail the parse with SIGBUS,
    // which binaries in use are not (the kernel forbids writing them).
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    UnwindSections::from_elf(&data).ok()
}

/// One stack sample, unwound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwound {
    /// Return addresses, innermost first, starting with the instruction.
    pub frames: Vec<u64>,
    /// How the stack ends, when unwinding can tell; `None` when the frame
    /// pointers ran out (only the names of the frames can tell then).
    pub end: Option<StackEnd>,
    /// For the first frames, where the function's return address was: by
    /// the code address (the instruction, then the return addresses) it
    /// holds for, as the kernel side looks it up.
    pub hints: Vec<(u64, FrameHint)>,
}

/// Frames whose return address's place is told to the kernel side: the
/// innermost function's, for its caller, and its caller's, for theirs.
const HINTED_FRAMES: usize = 2;

/// One executable mapping registered with framehop.
struct Mapped {
    end: u64,
    has_tables: bool,
}

/// A process's unwinder: framehop over its executable file mappings, kept
/// in step with the model's extents.
#[derive(Default)]
pub struct ProcessUnwinder {
    framehop: UnwinderX86_64<Bytes>,
    cache: Option<Box<CacheX86_64>>,
    mapped: BTreeMap<u64, Mapped>,
}

impl ProcessUnwinder {
    /// Forgets every mapping (the program was replaced by exec).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Unwinds `sample` of process `pid`, whose mappings are `extents`;
    /// `stack_bytes` is how much stack a sample copies at most.
    pub fn unwind(
        &mut self,
        pid: u32,
        extents: &Extents,
        tables: &mut TableCache,
        sample: &StackSample,
        stack_bytes: usize,
    ) -> Unwound {
        self.sync(pid, extents, tables);
        let Self {
            framehop,
            cache,
            mapped,
        } = self;
        let cache = cache.get_or_insert_with(|| Box::new(CacheX86_64::new()));
        let start = sample.start;
        let bytes = &sample.bytes;
        let mut read = |address: u64| -> Result<u64, ()> {
            let offset = usize::try_from(address.checked_sub(start).ok_or(())?).map_err(|_| ())?;
            let word = bytes
                .get(offset..offset.checked_add(8).ok_or(())?)
                .ok_or(())?;
            Ok(u64::from_le_bytes(word.try_into().map_err(|_| ())?))
        };
        let mut regs = UnwindRegsX86_64::new(sample.ip, sample.sp, sample.bp);
        let mut frames = vec![sample.ip];
        let mut address = FrameAddress::from_instruction_pointer(sample.ip);
        let mut hints = Vec::with_capacity(HINTED_FRAMES);
        let end = loop {
            if frames.len() >= MAX_STACK_FRAMES {
                break Some(StackEnd::Cut(CutReason::DepthLimit));
            }
            let pc = address.address_for_lookup();
            let frame_sp = regs.sp();
            match framehop.unwind_frame(address, &mut regs, cache, &mut read) {
                Ok(Some(return_address)) => {
                    if hints.len() < HINTED_FRAMES {
                        let at = *frames.last().expect("frames start with the instruction");
                        // The caller's stack pointer is the canonical frame
                        // address; the return address sits just below it.
                        let hint = if has_tables_at(mapped, pc) {
                            regs.sp()
                                .checked_sub(8 + frame_sp)
                                .and_then(|offset| u32::try_from(offset).ok())
                                .map(|offset| FrameHint {
                                    return_address_offset: offset,
                                    frame_pointer: 0,
                                })
                        } else if in_anonymous_code(extents, pc) {
                            // Crossed by frame pointers: code without unwind
                            // tables (JIT code) that keeps them.
                            Some(FrameHint {
                                return_address_offset: 0,
                                frame_pointer: 1,
                            })
                        } else {
                            // A file whose tables are not read (yet): say
                            // nothing rather than guess.
                            None
                        };
                        hints.extend(hint.map(|hint| (at, hint)));
                    }
                    frames.push(return_address);
                    match FrameAddress::from_return_address(return_address) {
                        Some(next) => address = next,
                        None => break Some(StackEnd::Root),
                    }
                }
                // The tables mark the root (the return address undefined, as
                // in `_start` and `clone3`); frame pointers ending in zero
                // may be the root or not.
                Ok(None) if has_tables_at(mapped, pc) => break Some(StackEnd::Root),
                Ok(None) => break None,
                Err(Error::CouldNotReadStack(_)) if bytes.len() >= stack_bytes => {
                    break Some(StackEnd::Cut(CutReason::StackCopyTooSmall))
                }
                Err(_) => break Some(StackEnd::Cut(why_stuck(mapped, pc, extents))),
            }
        };
        Unwound { frames, end, hints }
    }

    /// Registers the executable file mappings of `extents` that framehop
    /// does not have yet, and drops those that are gone.
    fn sync(&mut self, pid: u32, extents: &Extents, tables: &mut TableCache) {
        let wanted: Vec<(u64, u64, &str, u64)> = extents
            .iter()
            .filter(|(_, extent)| extent.prot & libc::PROT_EXEC as u32 != 0)
            .filter_map(|(start, extent)| match &extent.backing {
                Backing::File {
                    path: Some(path),
                    offset,
                } => Some((start, extent.end, path.as_str(), *offset)),
                _ => None,
            })
            .collect();
        let stale: Vec<u64> = self
            .mapped
            .iter()
            .filter(|(start, mapped)| {
                !wanted
                    .iter()
                    .any(|&(s, end, _, _)| s == **start && end == mapped.end)
            })
            .map(|(&start, _)| start)
            .collect();
        for start in stale {
            self.framehop.remove_module(start);
            self.mapped.remove(&start);
        }
        for (start, end, path, offset) in wanted {
            if self.mapped.contains_key(&start) {
                continue;
            }
            let readable = ProcessView::new(pid).file(path);
            let module = tables.tables(&readable).and_then(|tables| {
                let bias = tables.load_bias(start, offset)?;
                Some((module(path, start..end, bias, &tables), tables.has_tables()))
            });
            let has_tables = module.as_ref().is_some_and(|(_, has)| *has);
            if let Some((module, _)) = module {
                self.framehop.add_module(module);
            }
            self.mapped.insert(start, Mapped { end, has_tables });
        }
    }
}

/// Whether the code at `pc` is in a mapped file that has unwind tables.
fn has_tables_at(mapped: &BTreeMap<u64, Mapped>, pc: u64) -> bool {
    mapped
        .range(..=pc)
        .next_back()
        .is_some_and(|(_, mapping)| pc < mapping.end && mapping.has_tables)
}

/// Whether `pc` is in an anonymous mapping: generated (JIT) code.
fn in_anonymous_code(extents: &Extents, pc: u64) -> bool {
    extents
        .find(pc)
        .is_some_and(|(_, extent)| !matches!(extent.backing, Backing::File { .. }))
}

/// Why unwinding could not get past code at `pc`.
fn why_stuck(mapped: &BTreeMap<u64, Mapped>, pc: u64, extents: &Extents) -> CutReason {
    if in_anonymous_code(extents, pc) {
        CutReason::JitCode
    } else if has_tables_at(mapped, pc) {
        CutReason::BadUnwind
    } else {
        CutReason::NoUnwindInfo
    }
}

/// The framehop module of `tables`' file, mapped at `range` with `bias`.
fn module(
    name: &str,
    range: std::ops::Range<u64>,
    bias: u64,
    tables: &UnwindSections,
) -> Module<Bytes> {
    let info = ExplicitModuleSectionInfo {
        // ELF addresses are the file's own; framehop adds the bias.
        base_svma: 0,
        text_svma: tables.text.clone(),
        got_svma: tables.got.clone(),
        eh_frame_svma: tables
            .eh_frame
            .as_ref()
            .map(|section| section.address.clone()),
        eh_frame: tables
            .eh_frame
            .as_ref()
            .map(|section| section.bytes.clone()),
        eh_frame_hdr_svma: tables
            .eh_frame_hdr
            .as_ref()
            .map(|section| section.address.clone()),
        eh_frame_hdr: tables
            .eh_frame_hdr
            .as_ref()
            .map(|section| section.bytes.clone()),
        debug_frame: tables.debug_frame.clone(),
        ..Default::default()
    };
    Module::new(name.to_owned(), range, bias, info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_no_unwinder_holds_are_dropped_and_held_ones_kept() {
        let mut cache = TableCache::default();
        let exe = PathBuf::from("/proc/self/exe");
        let tables = cache.tables(&exe).expect("this test's own tables");
        let held = tables.eh_frame.as_ref().expect(".eh_frame").bytes.clone();
        drop(tables);
        assert!(cache.bytes() > 0);
        cache.drop_unused();
        assert_eq!(cache.files.len(), 1, "an unwinder holds its bytes");
        drop(held);
        cache.drop_unused();
        assert!(cache.files.is_empty());
        assert_eq!(cache.bytes(), 0);
    }
}
