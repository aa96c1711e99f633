//! What memtrace reads from the ELF files a process maps: their unwind
//! tables (`.eh_frame` with its search table `.eh_frame_hdr`, or
//! `.debug_frame`), the addresses they describe, and the loadable segments
//! that place file offsets in memory. Pure functions of a file's bytes.

use std::{ops::Range, sync::Arc};

use object::{Object, ObjectSection, ObjectSegment};

/// Section bytes, shared by every process that maps the file.
pub type Bytes = Arc<[u8]>;

/// A section's bytes and where the file says they live.
#[derive(Clone, Debug)]
pub struct Section {
    pub address: Range<u64>,
    pub bytes: Bytes,
}

/// The unwind tables of one file.
#[derive(Clone, Debug, Default)]
pub struct UnwindSections {
    pub text: Option<Range<u64>>,
    pub got: Option<Range<u64>>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub debug_frame: Option<Bytes>,
    /// Loadable segments as (file offset, file size, address), to place the
    /// file where a mapping of it is.
    segments: Vec<(u64, u64, u64)>,
}

impl UnwindSections {
    /// Whether anything besides `self` holds the tables' bytes (a
    /// process's unwinder does while the file is mapped in it).
    pub fn shared(&self) -> bool {
        let held = |bytes: &Bytes| std::sync::Arc::strong_count(bytes) > 1;
        [&self.eh_frame, &self.eh_frame_hdr]
            .into_iter()
            .flatten()
            .any(|section| held(&section.bytes))
            || self.debug_frame.as_ref().is_some_and(held)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not an ELF file memtrace can read: {0}")]
pub struct NotElf(pub(crate) String);

/// What kind of program an executable is, as far as taking its stacks goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramKind {
    /// 32-bit code (run in compat mode on x86-64).
    pub bits32: bool,
    /// Linked with a dynamic loader (`PT_INTERP`): it maps shared libraries.
    pub dynamic: bool,
    /// A Go program (it has Go's build info).
    pub go: bool,
}

impl ProgramKind {
    pub fn of(data: &[u8]) -> Result<Self, NotElf> {
        let file = object::File::parse(data).map_err(|err| NotElf(err.to_string()))?;
        // The loader's path, which only programs that map libraries have.
        let dynamic = file.section_by_name(".interp").is_some();
        Ok(Self {
            bits32: !file.is_64(),
            dynamic,
            go: file.section_by_name(".go.buildinfo").is_some()
                || file.section_by_name(".note.go.buildid").is_some(),
        })
    }

    /// The program file at `path`, if it can be read.
    pub fn read(path: &std::path::Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: read-only, only while this function runs; a file changed
        // meanwhile gives a wrong kind or none, never undefined behaviour
        // in safe code that outlives the map.
        let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        Self::of(&data).ok()
    }

    /// One byte that says it all, for /proc's tape.
    pub fn to_byte(self) -> u8 {
        u8::from(self.bits32) | u8::from(self.dynamic) << 1 | u8::from(self.go) << 2
    }

    pub fn from_byte(byte: u8) -> Self {
        Self {
            bits32: byte & 1 != 0,
            dynamic: byte & 2 != 0,
            go: byte & 4 != 0,
        }
    }
}

impl UnwindSections {
    /// Reads the tables from an ELF file's bytes.
    pub fn from_elf(data: &[u8]) -> Result<Self, NotElf> {
        let file = object::File::parse(data).map_err(|err| NotElf(err.to_string()))?;
        let range = |name: &str| {
            file.section_by_name(name)
                .map(|section| section.address()..section.address() + section.size())
        };
        let bytes = |name: &str| -> Option<Bytes> {
            let section = file.section_by_name(name)?;
            let data = section.uncompressed_data().ok()?;
            (!data.is_empty()).then(|| Bytes::from(&*data))
        };
        let section = |name: &str| {
            Some(Section {
                address: range(name)?,
                bytes: bytes(name)?,
            })
        };
        Ok(Self {
            text: range(".text"),
            got: range(".got"),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: bytes(".debug_frame"),
            segments: file
                .segments()
                .map(|segment| {
                    let (offset, size) = segment.file_range();
                    (offset, size, segment.address())
                })
                .collect(),
        })
    }

    /// Whether the file describes how to unwind its code.
    pub fn has_tables(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }

    /// Bytes held, for memtrace's own footprint.
    pub fn size(&self) -> usize {
        [&self.eh_frame, &self.eh_frame_hdr]
            .into_iter()
            .flatten()
            .map(|section| section.bytes.len())
            .chain(self.debug_frame.as_ref().map(|bytes| bytes.len()))
            .sum()
    }

    /// The file's own address (as its symbols and DWARF know it) of the byte
    /// at file offset `offset`, when a loadable segment holds it.
    pub fn address_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|&&(file_offset, size, _)| offset >= file_offset && offset < file_offset + size)
            .map(|&(file_offset, _, address)| offset - file_offset + address)
    }

    /// The load bias of a mapping of the file at `start` from file offset
    /// `offset`: what is added to the file's addresses to get the process's.
    pub fn load_bias(&self, start: u64, offset: u64) -> Option<u64> {
        let page = 4096;
        let &(segment_offset, _, address) =
            self.segments
                .iter()
                .rev()
                .find(|&&(file_offset, size, _)| {
                    offset >= file_offset & !(page - 1) && offset < file_offset + size
                })?;
        Some(
            start
                .wrapping_sub(offset)
                .wrapping_add(segment_offset)
                .wrapping_sub(address),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_binary_has_unwind_tables_and_places_its_text() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let sections = UnwindSections::from_elf(&exe).unwrap();
        assert!(sections.eh_frame.is_some() && sections.eh_frame_hdr.is_some());
        assert!(sections.has_tables());
        assert!(sections.size() > 1000);
        // Where this very function is, by /proc/self/maps and by the tables.
        let here = our_own_binary_has_unwind_tables_and_places_its_text as *const () as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mapping = maps
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                let (start, end) = fields.next()?.split_once('-')?;
                let (start, end) = (
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(end, 16).ok()?,
                );
                let offset = u64::from_str_radix(fields.nth(1)?, 16).ok()?;
                (start..end).contains(&here).then_some((start, offset))
            })
            .unwrap();
        let bias = sections.load_bias(mapping.0, mapping.1).unwrap();
        let text = sections.text.clone().unwrap();
        assert!((text.start + bias..text.end + bias).contains(&here));
    }

    #[test]
    fn not_elf_is_an_error_not_a_panic() {
        assert!(UnwindSections::from_elf(b"\x7fELF garbage").is_err());
        assert!(UnwindSections::from_elf(&[]).is_err());
    }
}
