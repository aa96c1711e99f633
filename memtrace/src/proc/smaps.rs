//! smaps, smaps_rollup and status, parsed by `procfs` and turned into the
//! model's terms. Pure functions of the file's bytes, so they can be fuzzed.

use procfs::{
    process::{MMPermissions, MMapPath, MemoryMap, MemoryMaps, SmapsRollup, Status, VmFlags},
    FromBufRead,
};

use super::{Rollup, StatusCounters};
use crate::model::reconcile::KernelVma;

pub fn parse_smaps(bytes: &[u8]) -> Result<Vec<KernelVma>, String> {
    let maps = MemoryMaps::from_buf_read(bytes).map_err(|err| err.to_string())?;
    let mut vmas: Vec<KernelVma> = maps.into_iter().map(|map| vma(&map)).collect();
    vmas.sort_by_key(|vma| vma.start);
    Ok(vmas)
}

fn vma(map: &MemoryMap) -> KernelVma {
    let field = |name: &str| map.extension.map.get(name).copied().unwrap_or(0);
    let mut prot = 0;
    if map.perms.contains(MMPermissions::READ) {
        prot |= libc::PROT_READ as u32;
    }
    if map.perms.contains(MMPermissions::WRITE) {
        prot |= libc::PROT_WRITE as u32;
    }
    if map.perms.contains(MMPermissions::EXECUTE) {
        prot |= libc::PROT_EXEC as u32;
    }
    KernelVma {
        start: map.address.0,
        end: map.address.1.max(map.address.0),
        prot,
        shared: map.perms.contains(MMPermissions::SHARED),
        offset: map.offset,
        path: path_column(&map.pathname),
        rss: field("Rss"),
        anonymous: field("Anonymous"),
        lazyfree: field("LazyFree"),
        anon_huge: field("AnonHugePages"),
        swap: field("Swap"),
        raw_frames: map.extension.vm_flags.intersects(VmFlags::PF | VmFlags::IO),
    }
}

/// The path column as the kernel printed it.
fn path_column(path: &MMapPath) -> String {
    match path {
        MMapPath::Path(path) => path.to_string_lossy().into_owned(),
        MMapPath::Heap => "[heap]".into(),
        MMapPath::Stack => "[stack]".into(),
        MMapPath::TStack(tid) => format!("[stack:{tid}]"),
        MMapPath::Vdso => "[vdso]".into(),
        MMapPath::Vvar => "[vvar]".into(),
        MMapPath::Vsyscall => "[vsyscall]".into(),
        MMapPath::Rollup => "[rollup]".into(),
        MMapPath::Anonymous => String::new(),
        MMapPath::Vsys(key) => format!("/SYSV{key:08x}"),
        MMapPath::Other(other) => other.clone(),
    }
}

pub fn parse_rollup(bytes: &[u8]) -> Result<Rollup, String> {
    let rollup = SmapsRollup::from_buf_read(bytes).map_err(|err| err.to_string())?;
    let map = rollup
        .memory_map_rollup
        .into_iter()
        .next()
        .ok_or("no rollup entry")?;
    let field = |name: &str| map.extension.map.get(name).copied().unwrap_or(0);
    Ok(Rollup {
        rss: field("Rss"),
        anonymous: field("Anonymous"),
        lazyfree: field("LazyFree"),
        anon_huge: field("AnonHugePages"),
        swap: field("Swap"),
    })
}

pub fn parse_status(bytes: &[u8]) -> Result<StatusCounters, String> {
    let status = Status::from_buf_read(bytes).map_err(|err| err.to_string())?;
    let kib = |value: Option<u64>| value.unwrap_or(0).saturating_mul(1024);
    Ok(StatusCounters {
        rss: kib(status.vmrss),
        anon: kib(status.rssanon),
        file: kib(status.rssfile),
        shmem: kib(status.rssshmem),
        swap: kib(status.vmswap),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                   8 kB
Anonymous:             8 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0004000000 rw-p 00000000 00:00 0 
Size:              65536 kB
Rss:               65536 kB
Anonymous:         65536 kB
LazyFree:          32768 kB
AnonHugePages:         0 kB
Swap:                  0 kB
VmFlags: rd wr mr mw me ac
7ffd0000000-7ffd0002000 r--p 00000000 00:00 0                          [vvar]
Size:                  8 kB
Rss:                   0 kB
Anonymous:             0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
Swap:                  0 kB
VmFlags: rd mr pf io de dd
";

    #[test]
    fn parses_vmas_with_their_counters() {
        let vmas = parse_smaps(SMAPS.as_bytes()).unwrap();
        assert_eq!(vmas.len(), 3);
        let anon = vmas
            .iter()
            .find(|vma| vma.start == 0x7f00_0000_0000)
            .unwrap();
        assert_eq!(anon.rss, 64 << 20);
        assert_eq!(anon.lazyfree, 32 << 20);
        assert_eq!(anon.path, "");
        assert!(!anon.raw_frames);
        assert!(vmas
            .iter()
            .any(|vma| vma.path == "[vvar]" && vma.raw_frames));
        assert!(vmas.windows(2).all(|pair| pair[0].start <= pair[1].start));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_smaps(b"not smaps at all\n").is_err() || parse_smaps(b"x").is_ok());
        assert!(parse_rollup(b"").is_err());
    }
}
