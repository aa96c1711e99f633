//! Turning stack addresses into function names, with blazesym.
//!
//! An address is resolved through the model's own mappings (extent →
//! file and offset) rather than through the live /proc/PID/maps, so stacks
//! can still be named after the process has exited, and code mapped after
//! attaching is found like any other. Files are opened through
//! /proc/PID/root while the process lives, which reaches binaries inside
//! containers. Each address and each stack is resolved once.

mod frames;
mod namer;

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized,
};

pub use frames::{Frame, Function, Module};
pub use namer::Namer;

use crate::{
    intake::StackId,
    model::{Backing, Extents},
};

/// Functions a complete stack ends in: a stack whose outermost frame is
/// none of these, and that has only a few frames, was cut short.
const STACK_ROOTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
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

/// Stacks this short that do not end in a root are taken to be cut short by
/// code without frame pointers.
const SHORT_STACK: usize = 3;

pub struct Symbolizer {
    inner: blazesym::symbolize::Symbolizer,
    pid: u32,
    frames: HashMap<u64, Frame>,
    stacks: HashMap<StackId, Arc<[Frame]>>,
    modules: HashMap<String, Arc<Module>>,
}

impl Symbolizer {
    pub fn new(pid: u32) -> Self {
        Self {
            inner: blazesym::symbolize::Symbolizer::new(),
            pid,
            frames: HashMap::new(),
            stacks: HashMap::new(),
            modules: HashMap::new(),
        }
    }

    /// The frames of stack `id` (return addresses `ips`, innermost first).
    pub fn stack(&mut self, id: StackId, ips: &[u64], extents: &Extents) -> Arc<[Frame]> {
        if let Some(frames) = self.stacks.get(&id) {
            return frames.clone();
        }
        let ips = &ips[..plausible_depth(ips, extents)];
        let missing: Vec<u64> = ips
            .iter()
            .enumerate()
            .map(|(depth, &ip)| lookup_address(depth, ip))
            .filter(|address| !self.frames.contains_key(address))
            .collect();
        self.resolve(&missing, extents);
        let frames: Arc<[Frame]> = ips
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
        self.stacks.insert(id, frames.clone());
        frames
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
                self.frames.insert(
                    address,
                    Frame::in_anonymous(address, extent.backing.to_string()),
                );
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
            let source = Source::Elf(Elf::new(self.readable_path(&module.path)));
            let results = self
                .inner
                .symbolize(&source, Input::FileOffset(&offsets))
                .unwrap_or_default();
            for (index, &(address, file_offset)) in addresses.iter().enumerate() {
                let functions = match results.get(index) {
                    Some(Symbolized::Sym(sym)) => frames::functions(sym),
                    _ => Vec::new(),
                };
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
        let readable = self.readable_path(path);
        let build_id = blazesym::helper::read_elf_build_id(&readable)
            .ok()
            .flatten()
            .map(|id| id.iter().map(|byte| format!("{byte:02x}")).collect());
        let module = Arc::new(Module {
            path: path.to_owned(),
            build_id,
        });
        self.modules.insert(path.to_owned(), module.clone());
        module
    }

    /// A path to open `path` as the process sees it: through its root while
    /// it lives (containers), as is afterwards.
    fn readable_path(&self, path: &str) -> PathBuf {
        let through_root = PathBuf::from(format!("/proc/{}/root{path}", self.pid));
        if through_root.exists() {
            through_root
        } else {
            PathBuf::from(path)
        }
    }
}

/// The module where a walk stopped early: a stack this short whose
/// outermost frame is not where threads start stopped in code that keeps no
/// frame pointer.
pub fn cut_short_in(frames: &[Frame]) -> Option<&Module> {
    let outermost = frames.last()?;
    if frames.len() > SHORT_STACK
        || outermost
            .outermost_function()
            .is_some_and(|name| STACK_ROOTS.contains(&name))
    {
        return None;
    }
    outermost.module.as_deref()
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
