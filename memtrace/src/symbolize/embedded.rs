//! `memtrace record --embed-debug`: the parts of the traced code's files
//! that naming reads, carried in the capture.
//!
//! A recording names what it reaches a snapshot with, and every stack when
//! it ends (see [`Learned`](super::Learned)). What it never named stays
//! unnamed wherever the capture goes: the stacks of its last interval when
//! it is killed, or the offsets a later report asks about. perf's build-id
//! cache and parca-agent's debuginfo upload answer this by keeping the
//! files; here each code file is written into the capture as soon as the
//! process maps it, with only what naming reads: the file as it is, but
//! with the contents of its loaded code and data zeroed (its ELF headers,
//! symbol tables, notes and debug sections stay, so file offsets still
//! place and the zeroed runs compress to nothing), and its separate debug
//! file, where a debug directory has one. A report reassembles them in
//! memory and names from them what the recording did not.

use std::{
    collections::HashMap,
    ffi::CStr,
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::{
        fd::{AsRawFd, FromRawFd},
        unix::fs::FileExt,
    },
    path::{Path, PathBuf},
};

use object::{read::ReadCache, Object, ObjectSection, SectionKind};

use super::read_build_id;
use crate::{
    capture::{CaptureError, In, Out},
    elf::NotElf,
};

/// Which file of a code file's a piece is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// The code file itself, its loaded contents zeroed.
    Naming,
    /// Its separate debug file, as found.
    DebugFile,
}

/// One piece of an embedded file: the file of `part` of the code file
/// known as `key` (its build id or identity), `size` bytes in all, with
/// `bytes` at `offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub key: String,
    pub part: Part,
    pub size: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// A piece's bytes at most: files go in several entries, each well within
/// the capture's bound on one.
pub const PIECE_BYTES: usize = 4 << 20;
/// A file embedded at most (larger ones are left out, and said to be).
pub const MAX_FILE: u64 = 1 << 30;

/// Sections naming reads although the loader maps them: Go's function
/// table and symbol table.
const KEPT_LOADED: [&str; 2] = [".gopclntab", ".gosymtab"];

/// A file to embed, read a piece at a time (the files are as large as the
/// programs, and memtrace stays small): open, with its size and the byte
/// ranges it is embedded without.
pub struct ToEmbed {
    file: File,
    size: u64,
    zeroed: Vec<(u64, u64)>,
}

/// A code file's `.gnu_debuglink`: its debug file's name and CRC-32.
pub struct DebugLink {
    name: String,
    crc: u32,
}

impl ToEmbed {
    /// The code file at `path`, with the contents of every loaded section
    /// of code or data zeroed, but for those naming reads; and its debug
    /// link, if it has one.
    pub fn naming_parts(path: &Path) -> Result<(Self, Option<DebugLink>), NotElf> {
        let not_elf = |err: &dyn std::fmt::Display| NotElf(err.to_string());
        let file = File::open(path).map_err(|err| not_elf(&err))?;
        let size = file.metadata().map_err(|err| not_elf(&err))?.len();
        let cache = ReadCache::new(&file);
        let elf = object::File::parse(&cache).map_err(|err| not_elf(&err))?;
        let zeroed = elf
            .sections()
            .filter(|section| {
                matches!(
                    section.kind(),
                    SectionKind::Text
                        | SectionKind::Data
                        | SectionKind::ReadOnlyData
                        | SectionKind::ReadOnlyDataWithRel
                        | SectionKind::ReadOnlyString
                        | SectionKind::Tls
                ) && !section.name().is_ok_and(|name| KEPT_LOADED.contains(&name))
            })
            .filter_map(|section| section.file_range())
            .collect();
        let link = elf.gnu_debuglink().ok().flatten().and_then(|(name, crc)| {
            Some(DebugLink {
                name: std::str::from_utf8(name).ok()?.to_owned(),
                crc,
            })
        });
        drop(elf);
        drop(cache);
        Ok((Self { file, size, zeroed }, link))
    }

    /// A file embedded as it is.
    fn whole(file: File) -> Option<Self> {
        let size = file.metadata().ok()?.len();
        Some(Self {
            file,
            size,
            zeroed: Vec::new(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file in pieces, as `part` of the file known as `key`, each read
    /// when asked for.
    pub fn pieces<'a>(
        &'a self,
        key: &'a str,
        part: Part,
    ) -> impl Iterator<Item = io::Result<Piece>> + 'a {
        let step = PIECE_BYTES as u64;
        (0..self.size.div_ceil(step)).map(move |index| {
            let offset = index * step;
            let len = step.min(self.size - offset);
            let mut bytes = vec![0; len as usize];
            self.file.read_exact_at(&mut bytes, offset)?;
            for &(start, length) in &self.zeroed {
                let from = start.max(offset);
                let to = start.saturating_add(length).min(offset + len);
                if from < to {
                    bytes[(from - offset) as usize..(to - offset) as usize].fill(0);
                }
            }
            Ok(Piece {
                key: key.to_owned(),
                part,
                size: self.size,
                offset,
                bytes,
            })
        })
    }
}

/// The separate debug file of a code file whose build id is `build_id`:
/// under a debug directory's `.build-id/xx/rest.debug` with the same build
/// id, or by its debug `link`'s name, with the checksum the link records,
/// in a debug directory or beside the file (`beside(name)` says where a
/// name beside it is, as the process sees it).
pub fn separate_debug_file(
    build_id: Option<&str>,
    link: Option<&DebugLink>,
    dirs: &[PathBuf],
    beside: &dyn Fn(&str) -> PathBuf,
) -> Option<ToEmbed> {
    if let Some(id) = build_id.filter(|id| id.len() > 2) {
        for dir in dirs {
            let path = dir
                .join(".build-id")
                .join(&id[..2])
                .join(format!("{}.debug", &id[2..]));
            if read_build_id(&path).as_deref() == Some(id) {
                return File::open(&path).ok().and_then(ToEmbed::whole);
            }
        }
    }
    let link = link?;
    // A name only: never a path that leaves the directories searched.
    if link.name.contains('/') {
        return None;
    }
    let name = &link.name;
    dirs.iter()
        .map(|dir| dir.join(name))
        .chain([beside(name), beside(&format!(".debug/{name}"))])
        .filter_map(|path| File::open(path).ok())
        .find(|debug| crc32(debug).is_some_and(|crc| crc == link.crc))
        .and_then(ToEmbed::whole)
}

/// The CRC-32 of the whole of `file`, as `.gnu_debuglink` records it.
fn crc32(mut file: &File) -> Option<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        match file.read(&mut buffer).ok()? {
            0 => return Some(hasher.finalize()),
            read => hasher.update(&buffer[..read]),
        }
    }
}

impl Piece {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Out::default();
        out.text(&self.key);
        out.bytes(&[match self.part {
            Part::Naming => 0,
            Part::DebugFile => 1,
        }]);
        out.u64(self.size);
        out.u64(self.offset);
        out.u32(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
        out.bytes(&self.bytes);
        out.0
    }

    /// Reads back what [`Piece::encode`] wrote; `base` is the payload's
    /// offset, for errors.
    pub fn decode(payload: &[u8], base: u64) -> Result<Self, CaptureError> {
        let mut input = In::new(payload, base);
        let key = input.text("file key")?;
        let part = match input.u8("part")? {
            0 => Part::Naming,
            1 => Part::DebugFile,
            other => {
                return Err(CaptureError::Corrupt {
                    offset: input.offset(),
                    detail: format!("unknown embedded part {other}"),
                })
            }
        };
        let size = input.u64("file size")?;
        let offset = input.u64("piece offset")?;
        let len = input.u32("piece length")?;
        let bytes = input.take(len as usize, "piece")?.to_vec();
        Ok(Self {
            key,
            part,
            size,
            offset,
            bytes,
        })
    }
}

/// The embedded files of a capture, reassembled as its pieces come, each in
/// memory of its own that blazesym reads by path (`/proc/self/fd/N`).
#[derive(Default)]
pub struct Embedded {
    files: HashMap<(String, Part), Assembling>,
}

struct Assembling {
    file: File,
    size: u64,
    /// Bytes written so far, in order; `None` once a piece was missing or
    /// out of place, and the file is not to be read.
    written: Option<u64>,
}

impl Embedded {
    /// Takes a piece in. Pieces come in order; a file missing one (a
    /// capture cut inside it) is never read.
    pub fn take(&mut self, piece: Piece) {
        if piece.size > MAX_FILE {
            return;
        }
        let at = (piece.key, piece.part);
        if !self.files.contains_key(&at) {
            if piece.offset != 0 {
                return;
            }
            let Some(file) = anonymous_file() else {
                return;
            };
            self.files.insert(
                at.clone(),
                Assembling {
                    file,
                    size: piece.size,
                    written: Some(0),
                },
            );
        }
        let Some(assembling) = self.files.get_mut(&at) else {
            return;
        };
        let fits = piece.size == assembling.size
            && assembling.written == Some(piece.offset)
            && piece.offset + piece.bytes.len() as u64 <= assembling.size;
        let wrote = fits
            && assembling.file.seek(SeekFrom::Start(piece.offset)).is_ok()
            && assembling.file.write_all(&piece.bytes).is_ok();
        assembling.written = wrote.then_some(piece.offset.saturating_add(piece.bytes.len() as u64));
    }

    /// Where the whole file of `part` of the code file `key` reads, once
    /// every piece of it came.
    pub fn path(&self, key: &str, part: Part) -> Option<PathBuf> {
        let assembling = self.files.get(&(key.to_owned(), part))?;
        (assembling.written == Some(assembling.size))
            .then(|| PathBuf::from(format!("/proc/self/fd/{}", assembling.file.as_raw_fd())))
    }
}

/// A file in memory only, gone when closed.
fn anonymous_file() -> Option<File> {
    const NAME: &CStr = c"memtrace-embedded";
    // SAFETY: a plain syscall with a valid name; the descriptor it returns
    // is owned by the `File` alone.
    let fd = unsafe { libc::memfd_create(NAME.as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: `fd` is a descriptor just opened, owned by nothing else.
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn section(data: &[u8], name: &str) -> Option<(u64, u64)> {
        let file = object::File::parse(data).unwrap();
        let section = file.section_by_name(name)?;
        section.file_range()
    }

    /// What `to_embed` embeds, put together again.
    fn embedded(to_embed: &ToEmbed) -> Vec<u8> {
        to_embed
            .pieces("key", Part::Naming)
            .flat_map(|piece| piece.unwrap().bytes)
            .collect()
    }

    #[test]
    fn naming_parts_zero_the_code_and_keep_the_symbols() {
        let exe = Path::new("/proc/self/exe");
        let data = std::fs::read(exe).unwrap();
        let (to_embed, _) = ToEmbed::naming_parts(exe).unwrap();
        let parts = embedded(&to_embed);
        assert_eq!(parts.len(), data.len(), "offsets must still place");
        let bytes = |data: &[u8], (offset, size): (u64, u64)| {
            data[offset as usize..(offset + size) as usize].to_vec()
        };
        let text = section(&data, ".text").expect("a .text");
        assert!(bytes(&parts, text).iter().all(|&byte| byte == 0));
        assert!(bytes(&data, text).iter().any(|&byte| byte != 0));
        for kept in [".symtab", ".strtab", ".dynsym", ".dynstr"] {
            if let Some(range) = section(&data, kept) {
                assert_eq!(bytes(&parts, range), bytes(&data, range), "{kept}");
            }
        }
        assert!(
            section(&data, ".symtab").is_some(),
            "the test binary has symbols"
        );
        // What the capture carries is what zstd makes of it: the zeroed
        // code costs next to nothing.
        let packed = |data: &[u8]| zstd::bulk::compress(data, 3).unwrap().len();
        let saved = packed(&data) - packed(&parts);
        let code = packed(&bytes(&data, text));
        assert!(
            saved * 10 >= code * 9,
            "{saved} bytes saved, the code packs to {code}"
        );
    }

    #[test]
    fn a_file_reassembles_from_its_pieces_in_order_only() {
        let data: Vec<u8> = (0..(PIECE_BYTES * 2 + 100)).map(|i| i as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let to_embed = ToEmbed::whole(file).unwrap();
        let pieces: Vec<Piece> = to_embed
            .pieces("0a1b", Part::Naming)
            .map(Result::unwrap)
            .collect();
        assert_eq!(pieces.len(), 3);
        for piece in &pieces {
            assert_eq!(&Piece::decode(&piece.encode(), 0).unwrap(), piece);
        }
        let mut whole = Embedded::default();
        for piece in pieces.iter().cloned() {
            assert_eq!(whole.path("0a1b", Part::Naming), None, "not yet whole");
            whole.take(piece);
        }
        let path = whole.path("0a1b", Part::Naming).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), data);
        assert_eq!(whole.path("0a1b", Part::DebugFile), None);
        // A capture cut inside the file: never read.
        let mut cut = Embedded::default();
        cut.take(pieces[0].clone());
        cut.take(pieces[2].clone());
        cut.take(pieces[1].clone());
        assert_eq!(cut.path("0a1b", Part::Naming), None);
        // A hostile piece anywhere: refused, no overflow.
        let mut hostile = Embedded::default();
        hostile.take(pieces[0].clone());
        hostile.take(Piece {
            offset: u64::MAX,
            ..pieces[1].clone()
        });
        assert_eq!(hostile.path("0a1b", Part::Naming), None);
    }

    proptest! {
        /// Pieces come from a file anyone may hand over.
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Piece::decode(&payload, 0);
        }
    }
}
