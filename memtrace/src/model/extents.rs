//! The mappings of the address space as they were created: by which call and
//! from which stack.
//!
//! An extent is not a kernel VMA. The kernel merges two adjacent anonymous
//! mappings into one VMA and splits one VMA in three when the middle changes
//! protection; memtrace keeps one extent per creating call, so that a range
//! can still be traced back to the code that mapped it. /proc supplies what
//! events cannot (file paths, mappings set up by `execve`), see
//! [`super::reconcile`].

use std::{collections::BTreeMap, fmt, ops::Range};

use crate::intake::StackId;

/// What backs an extent's pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory: malloc arenas, Go's heap, thread stacks.
    Anon,
    /// The `[heap]` grown with `brk`.
    Heap,
    /// The main thread's `[stack]`.
    Stack,
    /// A file; `path` is learnt from /proc (a `mmap` event only has the fd).
    File { path: Option<String>, offset: u64 },
    /// Shared memory: `MAP_SHARED|MAP_ANONYMOUS`, memfd, tmpfs, SysV.
    Shmem { path: Option<String> },
    /// A mapping the kernel provides, such as `[vdso]`.
    Special(String),
}

impl Backing {
    /// Whether the pages are the program's own anonymous memory (the only
    /// kind `MADV_FREE` applies to).
    pub fn private_anon(&self) -> bool {
        matches!(self, Self::Anon | Self::Heap | Self::Stack)
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anon => f.write_str("anonymous"),
            Self::Heap => f.write_str("[heap]"),
            Self::Stack => f.write_str("[stack]"),
            Self::File {
                path: Some(path), ..
            } => f.write_str(path),
            Self::File { path: None, .. } => f.write_str("file (path not yet known)"),
            Self::Shmem { path: Some(path) } => write!(f, "shared memory {path}"),
            Self::Shmem { path: None } => f.write_str("shared anonymous"),
            Self::Special(name) => f.write_str(name),
        }
    }
}

/// How an extent came to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CreatedBy {
    Mmap,
    Brk,
    Mremap,
    /// Mapped before memtrace attached.
    BeforeAttach,
    /// Set up by `execve`.
    Exec,
    /// Found in /proc with no event that created it.
    Unobserved,
}

impl CreatedBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::Brk => "brk",
            Self::Mremap => "mremap",
            Self::BeforeAttach => "before attach",
            Self::Exec => "execve",
            Self::Unobserved => "unobserved",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    pub end: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    pub shared: bool,
    pub backing: Backing,
    pub created_by: CreatedBy,
    pub stack: Option<StackId>,
}

/// Extents by start address; they never overlap.
#[derive(Clone, Debug, Default)]
pub struct Extents {
    map: BTreeMap<u64, Extent>,
}

impl Extents {
    pub fn clear(&mut self) {
        self.map.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The extent containing `addr`.
    pub fn find(&self, addr: u64) -> Option<(u64, &Extent)> {
        self.map
            .range(..=addr)
            .next_back()
            .filter(|(_, extent)| extent.end > addr)
            .map(|(&start, extent)| (start, extent))
    }

    /// The first extent that starts above `addr`.
    pub fn next_after(&self, addr: u64) -> Option<(u64, &Extent)> {
        self.map
            .range(addr.saturating_add(1)..)
            .next()
            .map(|(&start, extent)| (start, extent))
    }

    /// The last extent that starts at or below `addr`.
    pub fn last_before(&self, addr: u64) -> Option<(u64, &Extent)> {
        self.map
            .range(..=addr)
            .next_back()
            .map(|(&start, extent)| (start, extent))
    }

    /// Moves the start of the extent at `start` down to `new_start` (a stack
    /// growing), over addresses no extent covers.
    pub fn extend_down(&mut self, start: u64, new_start: u64) {
        if let Some(extent) = self.map.remove(&start) {
            self.map.insert(new_start.min(start), extent);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Extent)> + '_ {
        self.map.iter().map(|(&start, extent)| (start, extent))
    }

    /// Extents overlapping `range`, unclipped.
    pub fn overlapping(&self, range: Range<u64>) -> impl Iterator<Item = (u64, &Extent)> + '_ {
        let before = self
            .map
            .range(..range.start)
            .next_back()
            .filter(|(_, extent)| extent.end > range.start);
        before
            .into_iter()
            .chain(self.map.range(range))
            .map(|(&start, extent)| (start, extent))
    }

    /// Adds `extent` at `start`, replacing whatever overlapped it (as
    /// `MAP_FIXED` does).
    pub fn insert(&mut self, start: u64, extent: Extent) {
        self.remove(start..extent.end);
        self.map.insert(start, extent);
    }

    /// Removes `range`, trimming extents that stick out of it; returns the
    /// removed pieces.
    pub fn remove(&mut self, range: Range<u64>) -> Vec<(u64, Extent)> {
        if range.is_empty() {
            return Vec::new();
        }
        self.split_at(range.start);
        self.split_at(range.end);
        let starts: Vec<u64> = self.map.range(range).map(|(&s, _)| s).collect();
        starts
            .into_iter()
            .filter_map(|start| self.map.remove(&start).map(|extent| (start, extent)))
            .collect()
    }

    /// Changes the end of the extent that starts at `start` (brk, mremap in
    /// place). Growing takes over whatever it grows into.
    pub fn resize(&mut self, start: u64, end: u64) {
        let Some(old_end) = self.map.get(&start).map(|extent| extent.end) else {
            return;
        };
        if end > old_end {
            self.remove(old_end..end);
        } else {
            self.remove(end..old_end);
        }
        if let Some(extent) = self.map.get_mut(&start) {
            extent.end = end;
        }
    }

    /// Cuts the extent that straddles `addr` in two. A file extent's second
    /// half starts further into the file.
    pub fn split_at(&mut self, addr: u64) {
        let Some((&start, extent)) = self.map.range_mut(..addr).next_back() else {
            return;
        };
        if extent.end <= addr {
            return;
        }
        let mut tail = extent.clone();
        extent.end = addr;
        if let Backing::File { offset, .. } = &mut tail.backing {
            *offset = offset.saturating_add(addr - start);
        }
        self.map.insert(addr, tail);
    }

    pub fn get_mut(&mut self, start: u64) -> Option<&mut Extent> {
        self.map.get_mut(&start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anon(end: u64) -> Extent {
        Extent {
            end,
            prot: 3,
            shared: false,
            backing: Backing::Anon,
            created_by: CreatedBy::Mmap,
            stack: None,
        }
    }

    #[test]
    fn insert_over_an_existing_extent_replaces_the_overlap() {
        let mut extents = Extents::default();
        extents.insert(0x1000, anon(0x9000));
        extents.insert(0x3000, anon(0x4000));
        let ranges: Vec<_> = extents.iter().map(|(s, e)| (s, e.end)).collect();
        assert_eq!(
            ranges,
            vec![(0x1000, 0x3000), (0x3000, 0x4000), (0x4000, 0x9000)]
        );
    }

    #[test]
    fn splitting_a_file_extent_advances_the_offset() {
        let mut extents = Extents::default();
        let mut file = anon(0x5000);
        file.backing = Backing::File {
            path: Some("/lib/x.so".into()),
            offset: 0x10000,
        };
        extents.insert(0x1000, file);
        extents.split_at(0x3000);
        let (_, tail) = extents.find(0x3000).unwrap();
        assert_eq!(
            tail.backing,
            Backing::File {
                path: Some("/lib/x.so".into()),
                offset: 0x12000
            }
        );
    }

    #[test]
    fn resize_grows_and_shrinks() {
        let mut extents = Extents::default();
        extents.insert(0x1000, anon(0x2000));
        extents.resize(0x1000, 0x8000);
        assert_eq!(extents.find(0x7fff).unwrap().0, 0x1000);
        extents.resize(0x1000, 0x3000);
        assert!(extents.find(0x3000).is_none());
    }
}
