//! Names shared by every traced process: one blazesym symbolizer, each
//! binary opened once by its build id, and each (build id, offset)
//! resolved once.
//!
//! The agent traces processes that come and go, most of them running the
//! same few binaries (the service, its libc). Resolved per process, every
//! new process parsed the same symbols and separate debug information again
//! (tens of MiB for a libc), and the agent's RSS swung with each one. Keyed
//! by build id (or, for a file without one, by its device, inode, size and
//! time), a binary is parsed once for all of them, whatever path each
//! process knows it by (its own /proc/PID/root, a container's image).
//! Bounded: past [`MAX_FILES`] binaries the least recently used one is
//! forgotten, and past [`MAX_NAMES`] resolved offsets all are.
//!
//! While recording, the library tells the capture what it learns (see
//! [`Learned`]); reporting a capture, it recalls that first.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use blazesym::symbolize::{
    evict,
    source::{Elf, Source},
    Input, Symbolized,
};

use super::{
    embedded::{self, Embedded, Part, ToEmbed},
    frames, read_build_id, DebugSources, Debuginfod, Function, Learned, Module, SYSTEM_DEBUG_DIRS,
};
use crate::elf::UnwindSections;

/// A file's identity where it has no build id: its device, inode, size and
/// modification time, which change when it is replaced or rewritten.
fn file_identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(format!(
        "file {:x}:{:x} {} {}.{}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

/// Binaries whose parsed symbols and debug information are kept.
pub const MAX_FILES: usize = 64;
/// Resolved offsets kept, over all binaries.
pub const MAX_NAMES: usize = 200_000;

/// The library, shared by the processes of one session (all on its
/// thread).
pub type SharedLibrary = Rc<RefCell<Library>>;

/// A binary opened by the library: its descriptor reads the file whatever
/// happens to the path, and names it to blazesym, which caches by path.
struct Kept {
    file: File,
    /// The separate debug file debuginfod delivered, once used.
    debuginfod_file: Option<PathBuf>,
    last_used: u64,
}

impl Kept {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

pub struct Library {
    inner: blazesym::symbolize::Symbolizer,
    debuginfod: Option<Debuginfod>,
    kept: HashMap<Arc<str>, Kept>,
    names: HashMap<(Arc<str>, u64), Vec<Function>>,
    /// Counts lookups, to find the least recently used binary.
    clock: u64,
    /// Bumped when names resolved before may have changed (a debug file
    /// arrived): processes compare it with the one they named stacks at.
    generation: u64,
    /// Told each file identified and each offset named (a recording).
    listener: Option<Listener>,
    /// Files as a recording identified them, by process and path.
    recalled_files: HashMap<(u32, String), Module>,
    /// Names a recording resolved: never evicted, since the files they came
    /// from may be nowhere here.
    recalled_names: HashMap<(Arc<str>, u64), Vec<Function>>,
    /// Files a recording identified that are not here (gone, or another
    /// file at their path): never read for names.
    not_here: HashSet<String>,
    /// Where separate debug files are looked for (`--debug-dir` first).
    debug_dirs: Vec<PathBuf>,
    /// Recording with `--embed-debug`: the files embedded so far, by key.
    embedding: Option<HashSet<Arc<str>>>,
    /// The files a recording embedded, as the report reassembles them.
    embedded: Embedded,
}

/// What is told each thing the library learns.
pub type Listener = Box<dyn FnMut(&Learned)>;

impl Library {
    pub fn new(debug: DebugSources) -> Self {
        let mut dirs = debug.dirs;
        dirs.extend(SYSTEM_DEBUG_DIRS.map(PathBuf::from));
        Self {
            inner: blazesym::symbolize::Symbolizer::builder()
                .set_debug_dirs(Some(dirs.clone()))
                .build(),
            debuginfod: debug.debuginfod,
            kept: HashMap::new(),
            names: HashMap::new(),
            clock: 0,
            generation: 0,
            listener: None,
            recalled_files: HashMap::new(),
            recalled_names: HashMap::new(),
            not_here: HashSet::new(),
            debug_dirs: dirs,
            embedding: None,
            embedded: Embedded::default(),
        }
    }

    /// Embeds what naming reads of every code file identified from now on
    /// (`record --embed-debug`; see [`embedded`]).
    pub fn embed_debug(&mut self) {
        self.embedding.get_or_insert_with(HashSet::new);
    }

    pub fn embeds_debug(&self) -> bool {
        self.embedding.is_some()
    }

    /// Tells the recording what naming reads of `module` (read through
    /// `readable`) and of its separate debug file, once per file; `beside`
    /// says where a name beside the file is, as its process sees it.
    pub fn embed(&mut self, module: &Module, readable: &Path, beside: &dyn Fn(&str) -> PathBuf) {
        let Some(key) = module.key() else {
            return;
        };
        let Some(embedded) = self.embedding.as_mut() else {
            return;
        };
        if !embedded.insert(Arc::from(key)) {
            return;
        }
        let Ok((naming, link)) = ToEmbed::naming_parts(readable) else {
            return;
        };
        let debug_file = embedded::separate_debug_file(
            module.build_id.as_deref(),
            link.as_ref(),
            &self.debug_dirs,
            beside,
        );
        let files = [(Part::Naming, Some(naming)), (Part::DebugFile, debug_file)];
        for (part, file) in files {
            let Some(file) = file.filter(|file| file.size() <= embedded::MAX_FILE) else {
                continue;
            };
            // A piece that cannot be read leaves the file incomplete, and a
            // report never reads it.
            for piece in file.pieces(key, part).map_while(Result::ok) {
                self.learnt(Learned::Embedded(piece));
            }
        }
    }

    /// Tells `listener` everything learnt from now on.
    pub fn tell(&mut self, listener: Listener) {
        self.listener = Some(listener);
    }

    /// Takes in what a recording learnt, before anything is named.
    pub fn recall(&mut self, learned: Learned) {
        match learned {
            Learned::File { pid, module } => {
                self.recalled_files
                    .insert((pid, module.path.clone()), module);
            }
            Learned::Names {
                key,
                offset,
                functions,
            } => {
                self.recalled_names
                    .insert((Arc::from(key), offset), functions);
            }
            Learned::Embedded(piece) => self.embedded.take(piece),
        }
    }

    fn learnt(&mut self, learned: Learned) {
        if let Some(listener) = self.listener.as_mut() {
            listener(&learned);
        }
    }

    /// The file process `pid` knows as `path`, read through `readable`.
    /// A file a recording identified is that file: one at the same path
    /// here is read only if it has the same build id (or is the very same
    /// file), never taken for it otherwise.
    pub fn identify(&mut self, pid: u32, path: &str, readable: &Path) -> Module {
        let here_build_id = read_build_id(readable);
        let here_identity = here_build_id
            .is_none()
            .then(|| file_identity(readable))
            .flatten();
        let opens = File::open(readable).is_ok();
        if let Some(recalled) = self.recalled_files.get(&(pid, path.to_owned())) {
            let same = match (&recalled.build_id, &here_build_id) {
                (Some(recorded), Some(here)) => recorded == here,
                (None, None) => recalled.identity.is_some() && recalled.identity == here_identity,
                _ => false,
            };
            let module = recalled.clone();
            if !(opens && same) {
                if let Some(key) = module.key() {
                    self.not_here.insert(key.to_owned());
                }
            }
            return module;
        }
        let module = Module {
            path: path.to_owned(),
            build_id: here_build_id,
            identity: here_identity,
            readable: opens,
        };
        self.learnt(Learned::File {
            pid,
            module: module.clone(),
        });
        module
    }

    pub fn shared(debug: DebugSources) -> SharedLibrary {
        Rc::new(RefCell::new(Self::new(debug)))
    }

    /// Which names are current: changes when debuginfod delivered a debug
    /// file, since names resolved before it may now have file and line.
    pub fn generation(&mut self) -> u64 {
        if self
            .debuginfod
            .as_mut()
            .is_some_and(Debuginfod::take_arrivals)
        {
            self.names.clear();
            self.generation += 1;
        }
        self.generation
    }

    /// How many binaries and resolved offsets are kept now.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        (self.kept.len(), self.names.len())
    }

    /// The functions at `offsets` of `module`, read through `readable` (a
    /// path that opens it for the process that maps it) for those a
    /// recording did not name.
    pub fn functions(
        &mut self,
        module: &Module,
        readable: &Path,
        offsets: &[u64],
    ) -> Vec<Vec<Function>> {
        // A binary is known by its build id, or, without one (Go's linker
        // writes none unless asked), by the file itself; without either it
        // could not be opened.
        let Some(key) = module.key() else {
            return vec![Vec::new(); offsets.len()];
        };
        let key = match self.kept.get_key_value(key) {
            Some((key, _)) => key.clone(),
            None => Arc::from(key),
        };
        let named = |library: &Self, offset: u64| {
            let at = (key.clone(), offset);
            library.recalled_names.contains_key(&at) || library.names.contains_key(&at)
        };
        let missing: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|&offset| !named(self, offset))
            .collect();
        // The file here when it is the recorded one, else what the
        // recording embedded of it.
        let source = if missing.is_empty() || !module.readable {
            None
        } else if self.not_here.contains(&*key) {
            self.embedded.path(&key, Part::Naming)
        } else {
            Some(self.keep(&key, readable))
        };
        if let Some(path) = source {
            let resolved = self.resolve(&path, &key, module.build_id.as_deref(), &missing);
            if self.names.len() + missing.len() > MAX_NAMES {
                self.names.clear();
            }
            for (offset, functions) in missing.into_iter().zip(resolved) {
                if !functions.is_empty() {
                    self.learnt(Learned::Names {
                        key: key.to_string(),
                        offset,
                        functions: functions.clone(),
                    });
                }
                self.names.insert((key.clone(), offset), functions);
            }
        }
        offsets
            .iter()
            .map(|&offset| {
                let at = (key.clone(), offset);
                self.recalled_names
                    .get(&at)
                    .or_else(|| self.names.get(&at))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    /// The path blazesym reads `build_id` by: the library's own descriptor,
    /// opened from `readable` the first time.
    fn keep(&mut self, build_id: &Arc<str>, readable: &Path) -> PathBuf {
        self.clock += 1;
        let now = self.clock;
        if let Some(kept) = self.kept.get_mut(build_id) {
            kept.last_used = now;
            return kept.path();
        }
        let Ok(file) = File::open(readable) else {
            return readable.to_owned();
        };
        if self.kept.len() >= MAX_FILES {
            self.forget_least_used();
        }
        let kept = Kept {
            file,
            debuginfod_file: None,
            last_used: now,
        };
        let path = kept.path();
        self.kept.insert(build_id.clone(), kept);
        path
    }

    fn forget_least_used(&mut self) {
        let Some(oldest) = self
            .kept
            .iter()
            .min_by_key(|(_, kept)| kept.last_used)
            .map(|(build_id, _)| build_id.clone())
        else {
            return;
        };
        if let Some(kept) = self.kept.remove(&oldest) {
            self.forget_path(&kept.path());
            if let Some(debug_file) = kept.debuginfod_file {
                self.forget_path(&debug_file);
            }
        }
        self.names.retain(|(build_id, _), _| *build_id != oldest);
    }

    /// Lets blazesym drop what it parsed of the file at `path`.
    fn forget_path(&mut self, path: &Path) {
        // Eviction is best effort; what stays is re-read if asked again.
        let _ = self.inner.evict(&evict::Evict::from(evict::Elf::new(path)));
    }

    /// The functions at `offsets` of the file at `path` (known as `key`):
    /// from the file itself and its separate debug file, or, when the file
    /// has no line information, from the debug file the recording embedded
    /// or debuginfod has delivered for `build_id`.
    fn resolve(
        &mut self,
        path: &Path,
        key: &str,
        build_id: Option<&str>,
        offsets: &[u64],
    ) -> Vec<Vec<Function>> {
        let mut elf = Elf::new(path);
        let own = match self
            .inner
            .symbolize(&Source::Elf(elf.clone()), Input::FileOffset(offsets))
        {
            Ok(results) => results,
            // A debug file whose checksum does not match fails the whole
            // call: fall back to the file's own symbols.
            Err(_) => {
                elf.debug_syms = false;
                self.inner
                    .symbolize(&Source::Elf(elf), Input::FileOffset(offsets))
                    .unwrap_or_default()
            }
        };
        let mut functions: Vec<Vec<Function>> = (0..offsets.len())
            .map(|index| match own.get(index) {
                Some(Symbolized::Sym(sym)) => frames::functions(sym),
                _ => Vec::new(),
            })
            .collect();
        let has_lines = functions
            .iter()
            .flatten()
            .any(|function| function.line.is_some());
        if !has_lines {
            let debug_file = self
                .embedded
                .path(key, Part::DebugFile)
                .or_else(|| build_id.and_then(|id| self.debuginfod_file(id)));
            if let Some(improved) = debug_file
                .and_then(|debug_file| self.debug_file_functions(&debug_file, path, offsets))
            {
                for (slot, better) in functions.iter_mut().zip(improved) {
                    if !better.is_empty() {
                        *slot = better;
                    }
                }
            }
        }
        functions
    }

    /// The debug file debuginfod serves for `build_id`, once it has been
    /// fetched (in the background: tracing never waits).
    fn debuginfod_file(&mut self, build_id: &str) -> Option<PathBuf> {
        let debug_file = self.debuginfod.as_mut()?.debug_file(build_id)?;
        if let Some(kept) = self.kept.get_mut(build_id) {
            kept.debuginfod_file = Some(debug_file.clone());
        }
        Some(debug_file)
    }

    /// Names from `debug_file`, the separate debug file of the file at
    /// `path`.
    fn debug_file_functions(
        &mut self,
        debug_file: &Path,
        path: &Path,
        offsets: &[u64],
    ) -> Option<Vec<Vec<Function>>> {
        // The debug file has the program's addresses but none of its code:
        // look the offsets up by address, placed by the program's segments.
        let data = std::fs::read(path).ok()?;
        let segments = UnwindSections::from_elf(&data).ok()?;
        let addresses: Vec<u64> = offsets
            .iter()
            .map(|&offset| segments.address_of(offset).unwrap_or(u64::MAX))
            .collect();
        let results = self
            .inner
            .symbolize(
                &Source::Elf(Elf::new(debug_file.to_owned())),
                Input::VirtOffset(&addresses),
            )
            .ok()?;
        Some(
            results
                .iter()
                .map(|result| match result {
                    Symbolized::Sym(sym) => frames::functions(sym),
                    _ => Vec::new(),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_to_name() -> u64 {
        std::hint::black_box(7)
    }

    /// The file offset of `address` in this test program, from its maps.
    fn own_file_offset(address: u64) -> u64 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                let (start, end) = fields.next()?.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
                (start..end)
                    .contains(&address)
                    .then(|| address - start + offset)
            })
            .unwrap()
    }

    #[test]
    fn a_binary_is_read_once_for_every_process_that_maps_it() {
        assert_eq!(a_function_to_name(), 7);
        let offset = own_file_offset(a_function_to_name as *const () as u64);
        let module = Module {
            path: "/srv/program".into(),
            build_id: Some("0123456789abcdef".into()),
            identity: None,
            readable: true,
        };
        let mut library = Library::new(DebugSources::default());
        let first = library.functions(&module, Path::new("/proc/self/exe"), &[offset]);
        assert!(first[0][0].name.contains("a_function_to_name"), "{first:?}");
        // Another process, whose path no longer opens: named all the same,
        // from the file the library keeps.
        let second = library.functions(&module, Path::new("/nonexistent/program"), &[offset]);
        assert_eq!(second, first);
        assert_eq!(library.size(), (1, 1));
        // Without a build id (a Go program's), a file is known by itself:
        // kept, and named once.
        let no_build_id = Module {
            build_id: None,
            identity: file_identity(Path::new("/proc/self/exe")),
            ..module
        };
        let own = library.functions(&no_build_id, Path::new("/proc/self/exe"), &[offset]);
        assert_eq!(own, first);
        assert_eq!(library.size(), (2, 2));
        // ... but one that no longer opens has nothing to be known by.
        let gone = library.identify(7, "/srv/program", Path::new("/nonexistent/program"));
        assert_eq!((gone.key(), gone.readable), (None, false));
        let nothing = library.functions(&gone, Path::new("/nonexistent/program"), &[offset]);
        assert_eq!(nothing, vec![Vec::new()]);
        assert_eq!(library.size(), (2, 2));
    }

    /// The offset of [`a_function_to_name`] in this program, and a library
    /// recording (telling what it learns to the list returned).
    fn recording_library() -> (u64, Library, Rc<RefCell<Vec<Learned>>>) {
        assert_eq!(a_function_to_name(), 7);
        let offset = own_file_offset(a_function_to_name as *const () as u64);
        let learnt = Rc::new(RefCell::new(Vec::new()));
        let mut recording = Library::new(DebugSources::default());
        let told = Rc::clone(&learnt);
        recording.tell(Box::new(move |learned| {
            told.borrow_mut().push(learned.clone())
        }));
        (offset, recording, learnt)
    }

    #[test]
    fn names_learnt_while_recording_are_recalled_where_the_file_is_not() {
        let (offset, mut recording, learnt) = recording_library();
        let here = recording.identify(7, "/srv/program", Path::new("/proc/self/exe"));
        let named = recording.functions(&here, Path::new("/proc/self/exe"), &[offset]);
        assert!(named[0][0].name.contains("a_function_to_name"), "{named:?}");
        let learnt = learnt.take();
        assert_eq!(learnt.len(), 2, "{learnt:?}");

        // Elsewhere, where /srv/program is nowhere: the same names.
        let mut reporting = Library::new(DebugSources::default());
        for learned in learnt.iter().cloned() {
            reporting.recall(learned);
        }
        let there = reporting.identify(7, "/srv/program", Path::new("/nonexistent/program"));
        // As the recording could read it: a stack through it ends as it did.
        assert_eq!((there.key(), there.readable), (here.key(), here.readable));
        let recalled = reporting.functions(&there, Path::new("/nonexistent/program"), &[offset]);
        assert_eq!(recalled, named);
        // A different file at that path here is not read for the offsets
        // the recording did not name: it would name them wrong.
        let other = reporting.identify(7, "/srv/program", Path::new("/bin/sh"));
        let unnamed = reporting.functions(&other, Path::new("/bin/sh"), &[offset + 64]);
        assert_eq!(unnamed, vec![Vec::new()]);
    }

    #[test]
    fn a_file_embedded_while_recording_names_what_the_recording_did_not() {
        let (offset, mut recording, learnt) = recording_library();
        recording.embed_debug();
        let exe = Path::new("/proc/self/exe");
        let here = recording.identify(7, "/srv/program", exe);
        recording.embed(&here, exe, &|name| PathBuf::from(name));
        recording.embed(&here, exe, &|name| PathBuf::from(name));
        let learnt = learnt.take();
        let pieces = learnt
            .iter()
            .filter(|learned| matches!(learned, Learned::Embedded(_)))
            .count();
        let size = std::fs::metadata(exe).unwrap().len();
        assert_eq!(
            pieces,
            size.div_ceil(embedded::PIECE_BYTES as u64) as usize,
            "embedded once, whole"
        );

        // Elsewhere, where the program is nowhere and the recording named
        // nothing: named from what it embedded.
        let mut reporting = Library::new(DebugSources::default());
        for learned in learnt {
            reporting.recall(learned);
        }
        let there = reporting.identify(7, "/srv/program", Path::new("/nonexistent/program"));
        let named = reporting.functions(&there, Path::new("/nonexistent/program"), &[offset]);
        assert!(
            named[0]
                .first()
                .is_some_and(|function| function.name.contains("a_function_to_name")),
            "{named:?}"
        );
    }
}
