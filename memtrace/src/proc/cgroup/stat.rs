//! `memory.stat`, in cgroup v1's words and in v2's, read into one set of
//! figures: what the cgroup is charged for, and where those pages sit on
//! the kernel's LRU lists.

/// A cgroup's memory charge by kind, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// Anonymous memory (the processes' own pages, lazily freed ones too).
    pub anon: u64,
    /// Page cache, mapped into processes or not (shared memory apart).
    pub file: u64,
    /// Shared memory and tmpfs (page cache in the kernel's books).
    pub shmem: u64,
    /// Page cache mapped into the processes.
    pub file_mapped: u64,
    /// Kernel memory charged to the cgroup: stacks, page tables, slab,
    /// per-CPU data (v2's `kernel`, v1's `memory.kmem.usage_in_bytes`).
    pub kernel: u64,
    /// Socket buffers (v2 only; v1 counts them in `kernel` when at all).
    pub sock: u64,
    pub inactive_anon: u64,
    pub active_anon: u64,
    /// The inactive file list: clean page cache the kernel drops first,
    /// and anonymous pages given back with MADV_FREE, which the kernel
    /// keeps here because it may drop them as readily.
    pub inactive_file: u64,
    pub active_file: u64,
    /// Page cache written to and not yet on disk (dirty or under
    /// writeback): the kernel cannot drop it at once.
    pub dirty: u64,
}

/// The `key value` pairs of a `memory.stat` text; lines that are not one
/// are skipped.
fn pairs(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let (key, value) = line.split_once(' ')?;
        Some((key, value.trim().parse().ok()?))
    })
}

/// cgroup v2's `memory.stat`.
pub fn parse_v2(text: &str) -> MemoryStat {
    let mut stat = MemoryStat::default();
    // Kernels before `kernel` (5.18) only have its parts.
    let (mut kernel, mut parts) = (None, 0u64);
    for (key, value) in pairs(text) {
        match key {
            "anon" => stat.anon = value,
            "file" => stat.file = value,
            "shmem" => stat.shmem = value,
            "file_mapped" => stat.file_mapped = value,
            "kernel" => kernel = Some(value),
            "kernel_stack" | "pagetables" | "sec_pagetables" | "percpu" | "slab" | "vmalloc" => {
                parts = parts.saturating_add(value);
            }
            "sock" => stat.sock = value,
            "inactive_anon" => stat.inactive_anon = value,
            "active_anon" => stat.active_anon = value,
            "inactive_file" => stat.inactive_file = value,
            "active_file" => stat.active_file = value,
            "file_dirty" | "file_writeback" => stat.dirty = stat.dirty.saturating_add(value),
            _ => {}
        }
    }
    stat.kernel = kernel.unwrap_or(parts);
    // v2's `file` includes shared memory; keep the two apart as v1 does.
    stat.file = stat.file.saturating_sub(stat.shmem);
    stat
}

/// cgroup v1's `memory.stat` (its hierarchical `total_*` figures, which
/// include the descendants as v2's do), with the kernel memory read from
/// `memory.kmem.usage_in_bytes`.
pub fn parse_v1(text: &str, kmem: u64) -> MemoryStat {
    let mut stat = MemoryStat {
        kernel: kmem,
        ..MemoryStat::default()
    };
    let mut cache = 0;
    for (key, value) in pairs(text) {
        match key {
            "total_rss" => stat.anon = value,
            "total_cache" => cache = value,
            "total_shmem" => stat.shmem = value,
            "total_mapped_file" => stat.file_mapped = value,
            "total_inactive_anon" => stat.inactive_anon = value,
            "total_active_anon" => stat.active_anon = value,
            "total_inactive_file" => stat.inactive_file = value,
            "total_active_file" => stat.active_file = value,
            "total_dirty" | "total_writeback" => stat.dirty = stat.dirty.saturating_add(value),
            _ => {}
        }
    }
    stat.file = cache.saturating_sub(stat.shmem);
    stat
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container's `memory.stat` on Linux 6.1 with cgroup v2 (Debian 12).
    const V2_6_1: &str = "anon 52428800\nfile 8491008\nkernel 1245184\nkernel_stack 65536\n\
pagetables 217088\nsec_pagetables 0\npercpu 3440\nsock 8192\nvmalloc 0\nshmem 4096\n\
zswap 0\nzswapped 0\nfile_mapped 3006464\nfile_dirty 8192\nfile_writeback 4096\nswapcached 0\n\
anon_thp 0\nfile_thp 0\nshmem_thp 0\ninactive_anon 33554432\nactive_anon 18874368\n\
inactive_file 5373952\nactive_file 3121152\nunevictable 0\nslab_reclaimable 640000\n\
slab_unreclaimable 300000\nslab 940000\nworkingset_refault_anon 0\npgfault 13107\n";

    /// The same figures on a kernel before v2's `kernel` line (5.15).
    const V2_5_15: &str = "anon 52428800\nfile 8491008\nkernel_stack 65536\npagetables 217088\n\
percpu 3440\nsock 8192\nshmem 4096\nfile_mapped 3006464\nslab 940000\n\
inactive_anon 33554432\nactive_anon 18874368\ninactive_file 5373952\nactive_file 3121152\n";

    /// A podman container's `memory.stat` on this project's hybrid host
    /// (Linux 6.18, memory controller on v1).
    const V1: &str = "cache 4096\nrss 53248\nshmem 0\nmapped_file 0\ninactive_anon 49152\n\
total_cache 8192\ntotal_rss 53248\ntotal_rss_huge 0\ntotal_shmem 4096\ntotal_mapped_file 4096\n\
total_inactive_anon 49152\ntotal_active_anon 4096\ntotal_inactive_file 0\n\
total_active_file 4096\n";

    #[test]
    fn v2_splits_the_charge_by_kind() {
        let stat = parse_v2(V2_6_1);
        assert_eq!(stat.anon, 52_428_800);
        assert_eq!(stat.file, 8_491_008 - 4096);
        assert_eq!(stat.shmem, 4096);
        assert_eq!(stat.kernel, 1_245_184);
        assert_eq!(stat.sock, 8192);
        assert_eq!(stat.inactive_file, 5_373_952);
        assert_eq!(stat.file_mapped, 3_006_464);
        assert_eq!(stat.dirty, 12_288);
    }

    #[test]
    fn v2_without_a_kernel_line_adds_its_parts() {
        assert_eq!(parse_v2(V2_5_15).kernel, 65_536 + 217_088 + 3440 + 940_000);
    }

    #[test]
    fn v1_reads_the_hierarchical_totals() {
        let stat = parse_v1(V1, 286_720);
        assert_eq!(stat.anon, 53_248);
        assert_eq!(stat.file, 4096);
        assert_eq!(stat.shmem, 4096);
        assert_eq!(stat.kernel, 286_720);
        assert_eq!(stat.inactive_anon, 49_152);
    }

    #[test]
    fn garbage_reads_as_nothing() {
        assert_eq!(parse_v2("anon\nfile x\n\u{0} 3"), MemoryStat::default());
        assert_eq!(parse_v1("", 0), MemoryStat::default());
    }
}
