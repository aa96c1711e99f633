//! Which malloc implementation a process uses.
//!
//! Allocators differ in when freed memory leaves RSS (glibc keeps it in
//! arenas until `malloc_trim`, jemalloc and mimalloc purge on timers,
//! tcmalloc releases at a configured rate), so the verdict's advice depends
//! on which one is in use. A shared library shows in the process's mapped
//! file names; a statically linked one only in the executable's symbols.

use std::fmt;

use object::{Object, ObjectSymbol};

/// A malloc implementation memtrace can recognise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Allocator {
    /// The GNU C library's ptmalloc.
    Glibc,
    /// jemalloc, as a shared library or linked in (e.g. Rust's
    /// tikv-jemallocator).
    Jemalloc,
    /// gperftools' tcmalloc.
    Tcmalloc,
    /// Microsoft's mimalloc.
    Mimalloc,
}

impl Allocator {
    pub const ALL: [Self; 4] = [Self::Glibc, Self::Jemalloc, Self::Tcmalloc, Self::Mimalloc];
}

impl fmt::Display for Allocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Glibc => "glibc malloc",
            Self::Jemalloc => "jemalloc",
            Self::Tcmalloc => "tcmalloc",
            Self::Mimalloc => "mimalloc",
        })
    }
}

/// The allocators whose shared libraries appear among `mapped_paths` (the
/// file names of a process's mappings), sorted and without repeats.
pub fn allocators<'a>(mapped_paths: impl IntoIterator<Item = &'a str>) -> Vec<Allocator> {
    let mut found: Vec<_> = mapped_paths
        .into_iter()
        .filter_map(library_allocator)
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The allocator a shared library file provides, by its file name.
fn library_allocator(path: &str) -> Option<Allocator> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let name = path.rsplit('/').next().unwrap_or(path);
    let shared_library = |prefix: &str| name.starts_with(prefix) && name.contains(".so");
    if name == "libc.so.6" || (name.starts_with("libc-2.") && name.ends_with(".so")) {
        Some(Allocator::Glibc)
    } else if name.starts_with("libjemalloc.so") {
        Some(Allocator::Jemalloc)
    } else if shared_library("libtcmalloc") {
        Some(Allocator::Tcmalloc)
    } else if shared_library("libmimalloc") {
        Some(Allocator::Mimalloc)
    } else {
        None
    }
}

/// The allocators an ELF executable (or library) defines itself, found by
/// their entry points in its symbol tables; sorted and without repeats.
/// Empty for input that is not ELF.
pub fn allocator_symbols(elf: &[u8]) -> Vec<Allocator> {
    let Ok(file) = object::File::parse(elf) else {
        return Vec::new();
    };
    let mut found: Vec<_> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|symbol| !symbol.is_undefined())
        .filter_map(|symbol| symbol.name().ok().and_then(symbol_allocator))
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The allocator a defined symbol belongs to. jemalloc is known by its own
/// `mallocx`, bare or behind a prefix (`je_mallocx`, `_rjem_mallocx`), since
/// a jemalloc that replaces malloc defines plain `malloc`.
fn symbol_allocator(name: &str) -> Option<Allocator> {
    match name {
        "je_malloc" | "mallocx" => Some(Allocator::Jemalloc),
        _ if name.ends_with("_mallocx") => Some(Allocator::Jemalloc),
        "tc_malloc" => Some(Allocator::Tcmalloc),
        "mi_malloc" => Some(Allocator::Mimalloc),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_libraries_are_recognised_by_file_name() {
        let maps = [
            "/usr/bin/app",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/libc-2.17.so",
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/libtcmalloc_minimal.so.4.5.9",
            "/opt/lib/libmimalloc-secure.so.2.1 (deleted)",
            "[heap]",
            "",
        ];
        assert_eq!(
            allocators(maps),
            [
                Allocator::Glibc,
                Allocator::Jemalloc,
                Allocator::Tcmalloc,
                Allocator::Mimalloc
            ]
        );
    }

    #[test]
    fn look_alikes_are_not_allocators() {
        let maps = [
            "/usr/lib/libcrypto.so.3",
            "/usr/lib/libc.so.6.bak/other.so",
            "/usr/lib/libc-2.31.so.debug",
            "/src/libjemalloc.a",
            "/src/libtcmalloc.a",
            "/usr/lib/libmimalloc.a",
            "/usr/lib/musl/libc.so",
        ];
        assert_eq!(allocators(maps), []);
    }

    #[test]
    fn each_allocator_is_listed_once() {
        let maps = ["/lib/libc.so.6", "/lib/libc.so.6", "/lib32/libc.so.6"];
        assert_eq!(allocators(maps), [Allocator::Glibc]);
    }

    #[test]
    fn allocator_entry_points_are_recognised_by_name() {
        for (name, allocator) in [
            ("je_malloc", Some(Allocator::Jemalloc)),
            ("mallocx", Some(Allocator::Jemalloc)),
            ("_rjem_mallocx", Some(Allocator::Jemalloc)),
            ("tc_malloc", Some(Allocator::Tcmalloc)),
            ("mi_malloc", Some(Allocator::Mimalloc)),
            ("malloc", None),
            ("mi_malloc_aligned", None),
        ] {
            assert_eq!(symbol_allocator(name), allocator, "{name}");
        }
    }

    #[test]
    fn non_elf_input_has_no_symbols() {
        assert_eq!(allocator_symbols(b""), []);
        assert_eq!(allocator_symbols(b"#!/bin/sh\n"), []);
    }
}
