//! smaps, smaps_rollup and status turned into the model's terms. Pure
//! functions of the file's bytes, so they can be fuzzed.
//!
//! smaps and smaps_rollup are parsed here rather than by `procfs`: the path
//! column is whatever name the traced program gave a file it mapped, and
//! procfs-core 0.18 panics on some (a path `/SYSV` shorter than its key,
//! `[stack:` followed by a multi-byte character), which a program could use
//! to crash a root tool. status has no such column and stays with procfs.

use procfs::{process::Status, FromBufRead};

use super::{Rollup, StatusCounters};
use crate::model::reconcile::KernelVma;

pub fn parse_smaps(bytes: &[u8]) -> Result<Vec<KernelVma>, String> {
    let text = String::from_utf8_lossy(bytes);
    let mut vmas: Vec<KernelVma> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if let Some(vma) = vmas.last_mut().filter(|_| is_field(line)) {
            field(vma, line).map_err(|err| format!("line {}: {err}", number + 1))?;
        } else if !line.trim().is_empty() {
            vmas.push(header(line).map_err(|err| format!("line {}: {err}", number + 1))?);
        }
    }
    vmas.sort_by_key(|vma| vma.start);
    Ok(vmas)
}

/// `Name: value...` lines follow each VMA's header; a header starts with
/// its address range, which has no colon before the first space.
fn is_field(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .is_some_and(|first| first.ends_with(':'))
}

/// `start-end perms offset dev inode [path]`.
fn header(line: &str) -> Result<KernelVma, String> {
    let mut rest = line.trim_start();
    let mut next = || -> Result<&str, String> {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (word, tail) = rest.split_at(end);
        rest = tail.trim_start();
        if word.is_empty() {
            Err(format!("short VMA header `{line}`"))
        } else {
            Ok(word)
        }
    };
    let (range, perms, offset, _dev, _inode) = (next()?, next()?, next()?, next()?, next()?);
    let path = rest.to_owned();
    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| format!("bad address range `{range}`"))?;
    let hex =
        |text: &str| u64::from_str_radix(text, 16).map_err(|_| format!("bad hex number `{text}`"));
    let (start, end) = (hex(start)?, hex(end)?);
    let perms = perms.as_bytes();
    let flag = |index: usize, letter: u8| perms.get(index) == Some(&letter);
    let mut prot = 0;
    if flag(0, b'r') {
        prot |= libc::PROT_READ as u32;
    }
    if flag(1, b'w') {
        prot |= libc::PROT_WRITE as u32;
    }
    if flag(2, b'x') {
        prot |= libc::PROT_EXEC as u32;
    }
    Ok(KernelVma {
        start,
        end: end.max(start),
        prot,
        shared: flag(3, b's'),
        offset: hex(offset)?,
        path,
        ..KernelVma::default()
    })
}

/// One `Name: value kB` (or `VmFlags: ...`) line into `vma`.
fn field(vma: &mut KernelVma, line: &str) -> Result<(), String> {
    let (name, value) = line.split_once(':').ok_or("no colon")?;
    if name == "VmFlags" {
        // Raw frames (VM_PFNMAP, VM_IO) are not counted in RSS.
        vma.raw_frames = value
            .split_whitespace()
            .any(|flag| flag == "pf" || flag == "io");
        return Ok(());
    }
    let slot = match name {
        "Rss" => &mut vma.rss,
        "Anonymous" => &mut vma.anonymous,
        "LazyFree" => &mut vma.lazyfree,
        "AnonHugePages" => &mut vma.anon_huge,
        "Swap" => &mut vma.swap,
        _ => return Ok(()),
    };
    *slot = kib(value)?;
    Ok(())
}

/// `  1234 kB` in bytes.
fn kib(value: &str) -> Result<u64, String> {
    let number = value.trim().trim_end_matches("kB").trim();
    number
        .parse::<u64>()
        .map(|kib| kib.saturating_mul(1024))
        .map_err(|_| format!("bad size `{}`", value.trim()))
}

pub fn parse_rollup(bytes: &[u8]) -> Result<Rollup, String> {
    let vmas = parse_smaps(bytes)?;
    let rollup = vmas.first().ok_or("no rollup entry")?;
    Ok(Rollup {
        rss: rollup.rss,
        anonymous: rollup.anonymous,
        lazyfree: rollup.lazyfree,
        anon_huge: rollup.anon_huge,
        swap: rollup.swap,
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
        assert!(parse_smaps(b"not smaps at all\n").is_err());
        assert!(parse_smaps(b"0-1 r--p 0 0:0 0\nRss: lots kB\n").is_err());
        assert!(parse_rollup(b"").is_err());
    }

    #[test]
    fn hostile_paths_are_kept_as_they_are() {
        // Names that crash procfs-core 0.18; found by fuzzing.
        for path in ["/SYSV", "[stack:\u{e9}", "a path with  spaces"] {
            let text = format!("0-1000 rw-p 00000000 00:00 0   {path}\nRss: 4 kB\n");
            let vmas = parse_smaps(text.as_bytes()).unwrap();
            assert_eq!(vmas[0].path, path);
            assert_eq!(vmas[0].rss, 4096);
        }
    }

    #[test]
    fn huge_sizes_saturate() {
        let text = "0-1 r--p 0 0:0 0 x\nRss: 18446744073709551615 kB\n";
        assert_eq!(parse_smaps(text.as_bytes()).unwrap()[0].rss, u64::MAX);
    }

    #[test]
    fn rollup_of_this_process() {
        let rollup = parse_rollup(&std::fs::read("/proc/self/smaps_rollup").unwrap()).unwrap();
        assert!(rollup.rss > 0 && rollup.anonymous > 0);
        let vmas = parse_smaps(&std::fs::read("/proc/self/smaps").unwrap()).unwrap();
        let sum: u64 = vmas.iter().map(|vma| vma.rss).sum();
        assert!(sum > 0);
        assert!(vmas.iter().any(|vma| vma.path == "[stack]"));
    }
}
