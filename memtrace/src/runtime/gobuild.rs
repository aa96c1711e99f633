//! The Go toolchain version and main module recorded in a Go executable.
//!
//! The Go linker writes a small blob at the start of the `.go.buildinfo`
//! section (or, when there is no such section, of the first writable data
//! segment): the magic `\xff Go buildinf:`, a pointer size, a flags byte,
//! and then the `runtime.buildVersion` and `runtime.modinfo` strings. Since
//! Go 1.18 the strings follow the 32-byte header inline, each prefixed by its
//! length as a varint (flags bit 2 set); older toolchains store the virtual
//! addresses of the two Go string headers instead. This follows
//! `debug/buildinfo` in Go's standard library.
//!
//! The input is an untrusted file: every offset and length is checked, and
//! anything unexpected yields `None` rather than a panic.

use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};

/// How a Go executable was built, as `go version -m` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBuildInfo {
    /// The toolchain's version, e.g. `go1.19.8`.
    pub version: String,
    /// The main package's import path (the `path` line of the module info).
    pub path: Option<String>,
    /// The main module's path (the `mod` line); absent for binaries built
    /// outside module mode.
    pub module: Option<String>,
}

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER_SIZE: usize = 32;
/// The blob starts on a 16-byte boundary of the data it is searched in.
const ALIGN: usize = 16;
/// How much of the data `debug/buildinfo` searches for the blob.
const SEARCH_LIMIT: usize = 64 * 1024;
/// Offsets of the pointer size and flags bytes in the header.
const PTR_SIZE_AT: usize = 14;
const FLAGS_AT: usize = 15;
/// Where the pointer format's two addresses start.
const POINTERS_AT: usize = 16;
const FLAG_BIG_ENDIAN: u8 = 1;
const FLAG_INLINE_STRINGS: u8 = 2;
/// Longer strings are damage, not build information: real versions are
/// under 100 bytes, module info a few KiB.
const MAX_VERSION_BYTES: usize = 256;
const MAX_MODINFO_BYTES: usize = 1 << 20;
/// The module info is framed by 16-byte sentinels, with a newline 17 bytes
/// before its end (cmd/go's `infoStart` and `infoEnd`).
const MODINFO_FRAME: usize = 16;

/// The build information of a Go ELF executable, or `None` if `elf` is not
/// one (or is damaged).
pub fn parse_go_buildinfo(elf: &[u8]) -> Option<GoBuildInfo> {
    let file = object::File::parse(elf).ok()?;
    let header = find_header(&file)?;
    let (version, mut modinfo) = if header[FLAGS_AT] & FLAG_INLINE_STRINGS != 0 {
        inline_strings(&header[HEADER_SIZE..])?
    } else {
        pointed_strings(&file, header)?
    };
    if version.is_empty() || version.len() > MAX_VERSION_BYTES {
        return None;
    }
    if modinfo.len() > MAX_MODINFO_BYTES {
        modinfo = &[];
    }
    let (path, module) = parse_modinfo(&String::from_utf8_lossy(unframe(modinfo)));
    Some(GoBuildInfo {
        version: String::from_utf8_lossy(version).into_owned(),
        path,
        module,
    })
}

/// The data from the blob's header to the end of the searched region.
fn find_header<'d>(file: &object::File<'d>) -> Option<&'d [u8]> {
    let data = data_start(file)?;
    let data = &data[..data.len().min(SEARCH_LIMIT)];
    (0..data.len())
        .step_by(ALIGN)
        .map(|offset| &data[offset..])
        .find(|rest| rest.len() >= HEADER_SIZE && rest.starts_with(MAGIC))
}

/// Where the Go linker puts the blob: the `.go.buildinfo` section, else the
/// first writable, non-executable loaded segment.
fn data_start<'d>(file: &object::File<'d>) -> Option<&'d [u8]> {
    if let Some(section) = file.section_by_name(".go.buildinfo") {
        return section.data().ok();
    }
    file.segments()
        .find(|segment| is_writable_data(segment.flags()))
        .and_then(|segment| segment.data().ok())
}

fn is_writable_data(flags: SegmentFlags) -> bool {
    use object::elf::{PF_W, PF_X};
    matches!(flags, SegmentFlags::Elf { p_flags } if p_flags & (PF_W | PF_X) == PF_W)
}

/// The version and module info stored inline after the header (Go 1.18+).
fn inline_strings(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (version, rest) = varint_string(data)?;
    let modinfo = varint_string(rest).map_or(&[][..], |(modinfo, _)| modinfo);
    Some((version, modinfo))
}

/// A string prefixed by its length as an unsigned LEB128 varint, and what
/// follows it.
fn varint_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (length, used) = uvarint(data)?;
    let rest = &data[used..];
    let length = usize::try_from(length).ok().filter(|&n| n <= rest.len())?;
    Some(rest.split_at(length))
}

/// Decodes an unsigned LEB128 varint of at most 64 bits: its value and how
/// many bytes it took.
fn uvarint(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, &byte) in data.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * index as u32;
        if index == 9 && byte > 1 {
            return None; // more than 64 bits
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// The version and module info reached through the addresses of their Go
/// string headers (before Go 1.18).
fn pointed_strings<'d>(file: &object::File<'d>, header: &[u8]) -> Option<(&'d [u8], &'d [u8])> {
    let pointer = Pointer::new(header[PTR_SIZE_AT], header[FLAGS_AT])?;
    let version_at = pointer.read(&header[POINTERS_AT..])?;
    let modinfo_at = pointer.read(&header[POINTERS_AT + pointer.size..])?;
    let version = go_string(file, pointer, version_at)?;
    let modinfo = go_string(file, pointer, modinfo_at).unwrap_or_default();
    Some((version, modinfo))
}

/// How the executable stores a pointer.
#[derive(Clone, Copy)]
struct Pointer {
    size: usize,
    big_endian: bool,
}

impl Pointer {
    fn new(size: u8, flags: u8) -> Option<Self> {
        matches!(size, 4 | 8).then_some(Self {
            size: usize::from(size),
            big_endian: flags & FLAG_BIG_ENDIAN != 0,
        })
    }

    fn read(self, bytes: &[u8]) -> Option<u64> {
        let bytes = bytes.get(..self.size)?;
        let mut word = [0u8; 8];
        if self.big_endian {
            word[8 - self.size..].copy_from_slice(bytes);
            Some(u64::from_be_bytes(word))
        } else {
            word[..self.size].copy_from_slice(bytes);
            Some(u64::from_le_bytes(word))
        }
    }
}

/// The bytes of the Go string whose header (data pointer, length) is at
/// virtual address `at`.
fn go_string<'d>(file: &object::File<'d>, pointer: Pointer, at: u64) -> Option<&'d [u8]> {
    let header = read_at(file, at, 2 * pointer.size as u64)?;
    let data = pointer.read(header)?;
    let length = pointer.read(header.get(pointer.size..)?)?;
    read_at(file, data, length)
}

/// `size` bytes at virtual address `address`, if a loaded segment holds
/// them in the file.
fn read_at<'d>(file: &object::File<'d>, address: u64, size: u64) -> Option<&'d [u8]> {
    file.segments()
        .find_map(|segment| segment.data_range(address, size).ok().flatten())
}

/// The module info text without its sentinel framing; empty when the
/// framing is missing, as `debug/buildinfo` does.
fn unframe(modinfo: &[u8]) -> &[u8] {
    let framed =
        modinfo.len() > 2 * MODINFO_FRAME && modinfo[modinfo.len() - MODINFO_FRAME - 1] == b'\n';
    if framed {
        &modinfo[MODINFO_FRAME..modinfo.len() - MODINFO_FRAME]
    } else {
        &[]
    }
}

/// The main package path and main module path from module info lines such
/// as `path\tPKG` and `mod\tMODULE\tVERSION\tSUM`.
fn parse_modinfo(text: &str) -> (Option<String>, Option<String>) {
    let mut path = None;
    let mut module = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("path\t") {
            path = non_empty(rest);
        } else if let Some(rest) = line.strip_prefix("mod\t") {
            module = rest.split('\t').next().and_then(non_empty);
        }
    }
    (path, module)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Virtual address of the start of the test executables' file.
    const BASE: u64 = 0x40_0000;
    /// File offset (and offset from BASE) of their data section.
    const DATA_AT: usize = 128;

    /// A minimal little-endian ELF64 executable: one read-write PT_LOAD
    /// segment mapping the whole file at BASE, and a section `name` holding
    /// `data` at BASE + DATA_AT.
    pub(crate) fn elf_with_section(name: &str, data: &[u8]) -> Vec<u8> {
        let names = format!("\0{name}\0.shstrtab\0");
        let names_at = DATA_AT + data.len();
        let headers_at = (names_at + names.len()).next_multiple_of(8);
        let file_len = headers_at + 3 * 64;

        let mut elf = Vec::with_capacity(file_len);
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        push_u16(&mut elf, 2); // ET_EXEC
        push_u16(&mut elf, 62); // EM_X86_64
        push_u32(&mut elf, 1);
        push_u64(&mut elf, 0); // entry
        push_u64(&mut elf, 64); // program headers follow this header
        push_u64(&mut elf, headers_at as u64);
        push_u32(&mut elf, 0);
        for half in [64, 56, 1, 64, 3, 2] {
            push_u16(&mut elf, half); // sizes, counts, .shstrtab index
        }
        // PT_LOAD, readable and writable, the whole file at BASE.
        push_u32(&mut elf, 1);
        push_u32(&mut elf, 6);
        for word in [0, BASE, BASE, file_len as u64, file_len as u64, 0x1000] {
            push_u64(&mut elf, word);
        }
        elf.resize(DATA_AT, 0);
        elf.extend_from_slice(data);
        elf.extend_from_slice(names.as_bytes());
        elf.resize(headers_at, 0);
        elf.extend_from_slice(&[0; 64]); // the null section
        let sections = [
            (1, 1, DATA_AT, data.len()),                       // PROGBITS
            (2 + name.len() as u32, 3, names_at, names.len()), // STRTAB
        ];
        for (name_at, kind, offset, size) in sections {
            push_u32(&mut elf, name_at);
            push_u32(&mut elf, kind);
            push_u64(&mut elf, 3); // SHF_WRITE | SHF_ALLOC
            push_u64(&mut elf, BASE + offset as u64);
            push_u64(&mut elf, offset as u64);
            push_u64(&mut elf, size as u64);
            push_u64(&mut elf, 0); // link, info
            push_u64(&mut elf, 1); // alignment
            push_u64(&mut elf, 0);
        }
        elf
    }

    fn push_u16(out: &mut Vec<u8>, value: u16) {
        out.extend_from_slice(&value.to_le_bytes());
    }
    fn push_u32(out: &mut Vec<u8>, value: u32) {
        out.extend_from_slice(&value.to_le_bytes());
    }
    fn push_u64(out: &mut Vec<u8>, value: u64) {
        out.extend_from_slice(&value.to_le_bytes());
    }

    const MODINFO: &str = "path\texample.com/app/cmd/app\n\
                           mod\texample.com/app\t(devel)\t\n\
                           build\t-compiler=gc\n";

    /// The module info with cmd/go's 16-byte sentinels around it.
    fn framed(modinfo: &str) -> Vec<u8> {
        let mut bytes = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
        bytes.extend_from_slice(modinfo.as_bytes());
        bytes.extend_from_slice(b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2");
        bytes
    }

    fn header(flags: u8) -> Vec<u8> {
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&[8, flags]);
        header.resize(HEADER_SIZE, 0);
        header
    }

    /// A `.go.buildinfo` section in the Go 1.18+ format.
    fn inline_blob(version: &str, modinfo: &[u8]) -> Vec<u8> {
        let mut blob = header(FLAG_INLINE_STRINGS);
        for string in [version.as_bytes(), modinfo] {
            let mut length = string.len();
            while length >= 0x80 {
                blob.push(length as u8 | 0x80);
                length >>= 7;
            }
            blob.push(length as u8);
            blob.extend_from_slice(string);
        }
        blob
    }

    /// A `.go.buildinfo` section in the pre-1.18 format: the header, two Go
    /// string headers, then the strings, all at BASE + DATA_AT.
    fn pointer_blob(version: &str, modinfo: &[u8]) -> Vec<u8> {
        let at = BASE + DATA_AT as u64;
        let (headers_at, strings_at) = (at + 32, at + 64);
        let mut blob = header(0);
        blob[16..24].copy_from_slice(&headers_at.to_le_bytes());
        blob[24..32].copy_from_slice(&(headers_at + 16).to_le_bytes());
        let version_data = strings_at;
        let modinfo_data = strings_at + version.len() as u64;
        for word in [
            version_data,
            version.len() as u64,
            modinfo_data,
            modinfo.len() as u64,
        ] {
            push_u64(&mut blob, word);
        }
        blob.extend_from_slice(version.as_bytes());
        blob.extend_from_slice(modinfo);
        blob
    }

    fn expected(version: &str) -> GoBuildInfo {
        GoBuildInfo {
            version: version.to_owned(),
            path: Some("example.com/app/cmd/app".to_owned()),
            module: Some("example.com/app".to_owned()),
        }
    }

    #[test]
    fn inline_format_is_parsed() {
        let elf = elf_with_section(".go.buildinfo", &inline_blob("go1.21.3", &framed(MODINFO)));
        assert_eq!(parse_go_buildinfo(&elf), Some(expected("go1.21.3")));
    }

    #[test]
    fn pointer_format_is_parsed() {
        let elf = elf_with_section(
            ".go.buildinfo",
            &pointer_blob("go1.16.15", &framed(MODINFO)),
        );
        assert_eq!(parse_go_buildinfo(&elf), Some(expected("go1.16.15")));
    }

    #[test]
    fn without_the_section_the_first_writable_segment_is_searched() {
        let elf = elf_with_section(".data", &inline_blob("go1.20", &framed(MODINFO)));
        assert_eq!(parse_go_buildinfo(&elf), Some(expected("go1.20")));
    }

    #[test]
    fn module_info_is_optional() {
        let elf = elf_with_section(".go.buildinfo", &inline_blob("go1.19.8", b""));
        let info = parse_go_buildinfo(&elf).unwrap();
        assert_eq!((info.path, info.module), (None, None));
        // Without its framing the module info is ignored, as Go does.
        let elf = elf_with_section(
            ".go.buildinfo",
            &inline_blob("go1.19.8", MODINFO.as_bytes()),
        );
        assert_eq!(parse_go_buildinfo(&elf).unwrap().module, None);
    }

    #[test]
    fn non_go_and_damaged_inputs_yield_none() {
        let no_blob = elf_with_section(".go.buildinfo", &[0; 64]);
        let empty_version = elf_with_section(".go.buildinfo", &inline_blob("", b""));
        let mut dangling = pointer_blob("go1.16", b"");
        dangling[16..24].copy_from_slice(&0xdead_0000u64.to_le_bytes());
        let dangling = elf_with_section(".go.buildinfo", &dangling);
        let mut bad_size = inline_blob("go1.16", b"");
        bad_size[PTR_SIZE_AT] = 3;
        bad_size[FLAGS_AT] = 0;
        let bad_size = elf_with_section(".go.buildinfo", &bad_size);
        let long_version = elf_with_section(".go.buildinfo", &inline_blob(&"go".repeat(200), b""));
        let mut overlong = header(FLAG_INLINE_STRINGS);
        overlong.extend_from_slice(&[0xff; 12]);
        let overlong = elf_with_section(".go.buildinfo", &overlong);
        for input in [
            &b""[..],
            b"\x7fELF",
            MAGIC,
            &no_blob,
            &empty_version,
            &dangling,
            &bad_size,
            &overlong,
            &long_version,
        ] {
            assert_eq!(parse_go_buildinfo(input), None);
        }
    }

    #[test]
    fn varints_are_bounded() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80]), None);
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(uvarint(&max), Some((u64::MAX, 10)));
        let too_big = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(uvarint(&too_big), None);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = parse_go_buildinfo(&bytes);
        }

        #[test]
        fn damaged_executables_never_panic(
            pointer_format in any::<bool>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let blob = if pointer_format {
                pointer_blob("go1.16.15", &framed(MODINFO))
            } else {
                inline_blob("go1.21.3", &framed(MODINFO))
            };
            let mut elf = elf_with_section(".go.buildinfo", &blob);
            for (at, value) in flips {
                let at = at.index(elf.len());
                elf[at] = value;
            }
            if let Some(cut) = cut {
                elf.truncate(cut.index(elf.len()));
            }
            let _ = parse_go_buildinfo(&elf);
        }
    }
}
