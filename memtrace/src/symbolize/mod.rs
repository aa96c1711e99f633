//! Turning stack addresses into function names, with blazesym, and saying
//! whether each stack is whole.
//!
//! An address is resolved through the model's own mappings (extent → file
//! and offset) rather than through the live /proc/PID/maps, so stacks can
//! still be named after the process has exited, and code mapped after
//! attaching is found like any other. Files are opened through
//! /proc/PID/root while the process lives, which reaches binaries inside
//! containers. Names come from the binaries' own symbols and DWARF, from
//! their separate debug files (`.gnu_debuglink`, the build-id directories
//! under `/usr/lib/debug` and `--debug-dir`), from debuginfod when
//! `DEBUGINFOD_URLS` says so, and, for JIT-compiled code, from the perf map
//! the runtime writes. Each address and each stack is resolved once per
//! process, and each offset of a binary once for every process (see
//! [`library`]). A capture carries the names its recording resolved to
//! wherever it is reported (see [`learned`]).

mod binaries;
mod debuginfod;
mod embedded;
mod ends;
mod frames;
mod learned;
mod library;
mod namer;
mod perfmap;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

pub use debuginfod::Debuginfod;
pub use ends::{Completeness, STACK_ROOTS};
pub use frames::{Frame, Function, Module};
pub use learned::Learned;
pub use library::{Library, SharedLibrary};
pub use namer::Namer;
pub use perfmap::{parse_perf_map, PerfMap};

use crate::{
    intake::{Stack, StackEnd, StackId},
    model::{Backing, Extents},
    proc::ProcessView,
};

/// Where separate debug information is looked for, besides the binaries.
#[derive(Clone, Debug, Default)]
pub struct DebugSources {
    /// Directories holding `.build-id/xx/yyyy.debug` trees and debuglink
    /// targets, searched before the system's `/usr/lib/debug`.
    pub dirs: Vec<PathBuf>,
    /// debuginfod servers, when `DEBUGINFOD_URLS` names any.
    pub debuginfod: Option<Debuginfod>,
}

/// The GNU build id of the file at `path`, in hex.
fn read_build_id(path: &Path) -> Option<String> {
    blazesym::helper::read_elf_build_id(path)
        .ok()
        .flatten()
        .map(|id| id.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The system's own debug directories, searched after `--debug-dir`.
const SYSTEM_DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// A stack with its frames named.
#[derive(Clone, Debug)]
pub struct NamedStack {
    pub frames: Vec<Frame>,
    /// Frames in JIT code that no perf map names.
    pub unnamed_jit: usize,
    pub end: StackEnd,
    /// Where a cut stack stops: the module of its outermost frame.
    pub cut_in: Option<Arc<Module>>,
}

/// One process's names: its own addresses and stacks, resolved through
/// the session's shared [`Library`].
pub struct Symbolizer {
    library: SharedLibrary,
    /// The library's generation the names here were resolved at.
    generation: u64,
    pid: u32,
    binaries: binaries::Binaries,
    frames: HashMap<u64, Frame>,
    stacks: HashMap<StackId, Arc<NamedStack>>,
    modules: HashMap<String, Arc<Module>>,
    perf_map: PerfMap,
}

impl Symbolizer {
    pub fn new(pid: u32, library: SharedLibrary) -> Self {
        let generation = library.borrow_mut().generation();
        Self {
            library,
            generation,
            pid,
            binaries: binaries::Binaries::new(ProcessView::new(pid)),
            frames: HashMap::new(),
            stacks: HashMap::new(),
            modules: HashMap::new(),
            perf_map: PerfMap::new(pid),
        }
    }

    /// Forgets every name: the process's program was replaced by exec, and
    /// the same addresses now hold other code.
    pub fn reset(&mut self) {
        self.frames.clear();
        self.stacks.clear();
        self.modules.clear();
        self.binaries.clear();
        self.perf_map = PerfMap::new(self.pid);
    }

    /// Keeps the code file the process knows as `path` readable after the
    /// process is gone; called while it lives, as code is mapped.
    /// When recording with `--embed-debug`, this is also when the file is
    /// embedded: while the process lives to read it through, and before
    /// anything could cut the capture short.
    pub fn keep_file(&mut self, path: &str) {
        if !self.binaries.keep(path) || !self.library.borrow().embeds_debug() {
            return;
        }
        let module = self.module(path);
        let readable = self.binaries.readable(path);
        let directory = Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .to_owned();
        let binaries = &self.binaries;
        let beside = |name: &str| binaries.as_seen(&directory.join(name).to_string_lossy());
        self.library.borrow_mut().embed(&module, &readable, &beside);
    }

    /// Names learnt since the last look (a debug file debuginfod delivered,
    /// a perf map the runtime wrote or grew) replace those resolved before:
    /// called before each snapshot.
    pub fn refresh(&mut self) {
        let generation = self.library.borrow_mut().generation();
        let debug_arrived = std::mem::replace(&mut self.generation, generation) != generation;
        if debug_arrived || self.perf_map.changed() {
            self.frames.clear();
            self.stacks.clear();
        }
    }

    /// Stack `id` (`stack`) with its frames named.
    pub fn stack(&mut self, id: StackId, stack: &Stack, extents: &Extents) -> Arc<NamedStack> {
        if let Some(named) = self.stacks.get(&id) {
            return named.clone();
        }
        let ips = &stack.frames[..plausible_depth(&stack.frames, extents)];
        let trimmed = ips.len() < stack.frames.len();
        let missing: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(depth, &ip)| lookup_address(depth, ip))
            .filter(|address| !self.frames.contains_key(address))
            .collect();
        self.resolve(&missing, extents);
        let frames: Vec<Frame> = ips
            .iter()
            .enumerate()
            .map(|(depth, &ip)| {
                let address = lookup_address(depth, ip);
                self.frames
                    .get(&address)
                    .cloned()
                    .unwrap_or_else(|| Frame::unknown(address))
            })
            .collect();
        let end = ends::end_of(stack.end, &frames, trimmed, extents);
        let cut_in = match end {
            StackEnd::Root => None,
            StackEnd::Cut(_) => frames.last().and_then(|frame| frame.module.clone()),
        };
        let unnamed_jit = frames.iter().filter(|frame| frame.is_unnamed_jit()).count();
        let named = Arc::new(NamedStack {
            unnamed_jit,
            frames,
            end,
            cut_in,
        });
        self.stacks.insert(id, named.clone());
        named
    }

    /// Resolves `addresses` not yet known, grouped by the file they are in.
    fn resolve(&mut self, addresses: &[u64], extents: &Extents) {
        let mut by_file: HashMap<Arc<Module>, Vec<(u64, u64)>> = HashMap::new();
        for &address in addresses {
            let Some((start, extent)) = extents.find(address) else {
                self.frames.insert(address, Frame::unknown(address));
                continue;
            };
            let Backing::File {
                path: Some(path),
                offset,
            } = &extent.backing
            else {
                let mapping = extent.backing.to_string();
                let frame = match self.perf_map.lookup(address) {
                    Some(name) => Frame::jit(address, start, mapping, name),
                    None => Frame::in_anonymous(address, start, mapping),
                };
                self.frames.insert(address, frame);
                continue;
            };
            let module = self.module(path);
            by_file
                .entry(module)
                .or_default()
                .push((address, address - start + offset));
        }
        for (module, addresses) in by_file {
            let offsets: Vec<u64> = addresses.iter().map(|&(_, offset)| offset).collect();
            let readable = self.binaries.readable(&module.path);
            let results = self
                .library
                .borrow_mut()
                .functions(&module, &readable, &offsets);
            for (&(address, file_offset), functions) in addresses.iter().zip(results) {
                self.frames.insert(
                    address,
                    Frame {
                        address,
                        file_offset,
                        module: Some(module.clone()),
                        functions,
                    },
                );
            }
        }
    }

    /// The build id of the file at `path`, in hex.
    pub fn build_id(&mut self, path: &str) -> Option<String> {
        self.module(path).build_id.clone()
    }

    fn module(&mut self, path: &str) -> Arc<Module> {
        if let Some(module) = self.modules.get(path) {
            return module.clone();
        }
        let file = self.binaries.readable(path);
        let module = Arc::new(self.library.borrow_mut().identify(self.pid, path, &file));
        self.modules.insert(path.to_owned(), module.clone());
        module
    }
}

/// How many of `ips` are real frames. Code without frame pointers uses the
/// frame-pointer register for data, and a walk through it reads words that
/// are not return addresses; a return address always points into code, so
/// the stack ends before the first one that does not.
fn plausible_depth(ips: &[u64], extents: &Extents) -> usize {
    let executable = |ip: u64| {
        extents
            .find(ip)
            .is_some_and(|(_, extent)| extent.prot & libc::PROT_EXEC as u32 != 0)
    };
    ips.iter()
        .enumerate()
        .skip(1)
        .find(|&(_, &ip)| !executable(ip))
        .map_or(ips.len(), |(depth, _)| depth)
}

/// Return addresses point after the call; the call itself is one byte
/// before. The innermost frame is the faulting instruction itself.
fn lookup_address(depth: usize, ip: u64) -> u64 {
    if depth == 0 {
        ip
    } else {
        ip.saturating_sub(1)
    }
}
