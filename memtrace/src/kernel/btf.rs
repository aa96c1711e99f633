//! Where a structure member is on the running kernel, from its BTF.
//!
//! The kernel programs read one kernel structure field that no tracepoint
//! hands them: `task_struct.pagefault_disabled`, which says that a fault is
//! taken inside a read that will not map the page (another tracer's read of
//! the process's stack, say), so it is no fault of the process's. Its offset
//! moves between kernel versions and configurations; BTF says where it is.
//! aya does not expose member offsets, and only this lookup is needed, so the
//! format (Documentation/bpf/btf.rst) is walked here: a header, then type
//! records, each a fixed part and a kind-dependent tail.

/// `BTF_MAGIC`, little-endian.
const MAGIC: u16 = 0xeb9f;

/// Type kinds (`BTF_KIND_*`).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

/// A cursor over little-endian words.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn u32(&mut self) -> Option<u32> {
        let word = self.bytes.get(self.at..self.at.checked_add(4)?)?;
        self.at += 4;
        Some(u32::from_le_bytes(word.try_into().ok()?))
    }

    fn skip(&mut self, bytes: usize) -> Option<()> {
        self.at = self.at.checked_add(bytes)?;
        (self.at <= self.bytes.len()).then_some(())
    }
}

/// The byte offset of member `member` of `struct name` in the BTF blob
/// `btf`, when it is there and is not a bit field.
pub fn member_offset(btf: &[u8], name: &str, member: &str) -> Option<u32> {
    let mut header = Reader { bytes: btf, at: 0 };
    let magic_version = header.u32()?;
    if magic_version as u16 != MAGIC {
        return None;
    }
    let header_len = header.u32()? as usize;
    let (type_off, type_len, str_off, str_len) =
        (header.u32()?, header.u32()?, header.u32()?, header.u32()?);
    let section = |offset: u32, len: u32| {
        let start = header_len.checked_add(offset as usize)?;
        btf.get(start..start.checked_add(len as usize)?)
    };
    let types = section(type_off, type_len)?;
    let strings = section(str_off, str_len)?;
    let string = |offset: u32| -> Option<&[u8]> {
        let rest = strings.get(offset as usize..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    };

    let mut types = Reader {
        bytes: types,
        at: 0,
    };
    while types.at < types.bytes.len() {
        let name_off = types.u32()?;
        let info = types.u32()?;
        let _size_or_type = types.u32()?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let kind_flag = info >> 31 != 0;
        if kind == 0 || kind > KIND_MAX {
            return None;
        }
        let wanted = kind == KIND_STRUCT && string(name_off)? == name.as_bytes();
        match kind {
            KIND_STRUCT | KIND_UNION => {
                for _ in 0..vlen {
                    let member_name = types.u32()?;
                    let _member_type = types.u32()?;
                    let offset = types.u32()?;
                    if wanted && string(member_name)? == member.as_bytes() {
                        // With the kind flag, the top byte is a bit field's
                        // size; a whole field has none.
                        let (bits, size) = if kind_flag {
                            (offset & 0x00ff_ffff, offset >> 24)
                        } else {
                            (offset, 0)
                        };
                        return (size == 0 && bits % 8 == 0).then_some(bits / 8);
                    }
                }
            }
            KIND_INT | KIND_VAR | KIND_DECL_TAG => types.skip(4)?,
            KIND_ARRAY => types.skip(12)?,
            KIND_ENUM | KIND_FUNC_PROTO => types.skip(vlen.checked_mul(8)?)?,
            KIND_DATASEC | KIND_ENUM64 => types.skip(vlen.checked_mul(12)?)?,
            // Pointers, typedefs, qualifiers, functions, floats, type tags
            // and forward declarations have no tail.
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernels_task_struct_is_found() {
        let btf = std::fs::read(super::super::preflight::SYSFS_BTF).expect("kernel BTF");
        let offset = member_offset(&btf, "task_struct", "pagefault_disabled").expect("the member");
        // Far into the structure, and aligned like the int it is.
        assert!(offset > 1000 && offset.is_multiple_of(4), "{offset}");
        assert_eq!(member_offset(&btf, "task_struct", "no such member"), None);
        assert_eq!(
            member_offset(&btf, "no_such_struct", "pagefault_disabled"),
            None
        );
    }

    #[test]
    fn garbage_is_nothing_not_a_panic() {
        for bytes in [&b""[..], b"\x9f\xeb\x01\x00\x18\x00\x00\x00", &[0xff; 64]] {
            assert_eq!(
                member_offset(bytes, "task_struct", "pagefault_disabled"),
                None
            );
        }
    }
}
