//! The kernel's own view of the traced process, from /proc: the ground truth
//! the model is checked against.

mod cgroup;
mod pagemap;
mod smaps;
mod tape;

use std::{
    ffi::OsString,
    fs::File,
    io,
    ops::Range,
    os::unix::{ffi::OsStringExt, fs::FileExt},
    path::{Path, PathBuf},
};

pub use cgroup::{
    container_id_in_path, membership_of as cgroup_membership, memory_of as cgroup_memory,
    parse_membership as parse_cgroup_membership, parse_memory_stat_v1, parse_memory_stat_v2,
    resolve_container, Cgroup, CgroupError, CgroupMemory, Container, MemoryStat,
    Version as CgroupVersion,
};
pub use pagemap::{decode_pagemap, zero_page_pfn};
pub use smaps::{parse_rollup, parse_smaps, parse_status};
pub use tape::{play_answers, record_answers, Answers, Tape};

use crate::{
    elf::ProgramKind,
    model::reconcile::{KernelVma, PageEntry},
    runtime::RuntimeInfo,
};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("process {pid} has exited")]
    Gone { pid: u32 },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}

/// An open /proc/PID/pagemap (none when its answers are played back).
#[derive(Debug)]
pub struct Pagemap {
    view: ProcessView,
    path: PathBuf,
    file: Option<File>,
}

impl Pagemap {
    /// The entries of `pages` (page numbers), fewer if the read stops
    /// short. The caller bounds the range: it costs 8 bytes per page.
    pub fn read(&self, pages: Range<u64>) -> Result<Vec<PageEntry>, ProcError> {
        let count = pages.end.saturating_sub(pages.start);
        let mut raw = vec![0u8; usize::try_from(count.saturating_mul(8)).unwrap_or(usize::MAX)];
        let offset = pages.start.saturating_mul(8);
        let question = format!("pagemap {}-{}", pages.start, pages.end);
        let raw = tape::ask(self.view.pid, &question, || {
            let file = self
                .file
                .as_ref()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
            let mut read = 0;
            while read < raw.len() {
                match file.read_at(&mut raw[read..], offset + read as u64) {
                    Ok(0) => break,
                    Ok(n) => read += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => return Err(source),
                }
            }
            raw.truncate(read - read % 8);
            Ok(raw)
        })
        .map_err(|source| self.view.io_error(self.path.clone(), source))?;
        Ok(decode_pagemap(&raw))
    }
}

/// RSS and its parts as the kernel counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelTotals {
    /// From smaps_rollup, which walks the page tables: exact.
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
    pub lazyfree: u64,
    pub anon_huge: u64,
    /// The RSS counters of /proc/PID/status (the ones `top` shows), kept by
    /// the kernel per CPU and so slightly behind.
    pub status: StatusCounters,
}

impl std::ops::AddAssign for KernelTotals {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.rss += other.rss;
        self.anon += other.anon;
        self.file += other.file;
        self.shmem += other.shmem;
        self.swap += other.swap;
        self.lazyfree += other.lazyfree;
        self.anon_huge += other.anon_huge;
        self.status += other.status;
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounters {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
}

impl std::ops::AddAssign for StatusCounters {
    /// Field by field: the figures of several processes, as one.
    fn add_assign(&mut self, other: Self) {
        self.rss += other.rss;
        self.anon += other.anon;
        self.file += other.file;
        self.shmem += other.shmem;
        self.swap += other.swap;
    }
}

/// What smaps_rollup says, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rollup {
    pub rss: u64,
    pub anonymous: u64,
    pub lazyfree: u64,
    pub anon_huge: u64,
    pub swap: u64,
}

/// One process's /proc directory.
#[derive(Debug, Clone)]
pub struct ProcessView {
    pid: u32,
}

impl ProcessView {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{name}", self.pid))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ProcError> {
        let path = self.path(name);
        tape::ask(self.pid, name, || std::fs::read(&path))
            .map_err(|source| self.io_error(path, source))
    }

    /// A file of the process's directory as text, if it reads.
    fn read_text(&self, name: &str) -> Option<String> {
        String::from_utf8(self.read(name).ok()?).ok()
    }

    /// Where a link of the process's directory points.
    fn read_link(&self, name: &str) -> Option<PathBuf> {
        let path = self.path(name);
        let target = tape::ask(self.pid, &format!("readlink {name}"), || {
            Ok(std::fs::read_link(&path)?.into_os_string().into_vec())
        });
        Some(OsString::from_vec(target.ok()?).into())
    }

    fn io_error(&self, path: PathBuf, source: io::Error) -> ProcError {
        // A process that exited leaves its directory (ENOENT), or an empty
        // one whose files fail with ESRCH while it is being reaped.
        match source.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => ProcError::Gone { pid: self.pid },
            _ => ProcError::Io { path, source },
        }
    }

    pub fn smaps(&self) -> Result<Vec<KernelVma>, ProcError> {
        let bytes = self.read("smaps")?;
        parse_smaps(&bytes).map_err(|detail| ProcError::Parse {
            path: self.path("smaps"),
            detail,
        })
    }

    pub fn totals(&self) -> Result<KernelTotals, ProcError> {
        let rollup =
            parse_rollup(&self.read("smaps_rollup")?).map_err(|detail| ProcError::Parse {
                path: self.path("smaps_rollup"),
                detail,
            })?;
        let status = parse_status(&self.read("status")?).map_err(|detail| ProcError::Parse {
            path: self.path("status"),
            detail,
        })?;
        let shared = rollup.rss.saturating_sub(rollup.anonymous);
        Ok(KernelTotals {
            rss: rollup.rss,
            anon: rollup.anonymous,
            shmem: status.shmem.min(shared),
            file: shared.saturating_sub(status.shmem),
            swap: rollup.swap,
            lazyfree: rollup.lazyfree,
            anon_huge: rollup.anon_huge,
            status,
        })
    }

    /// The process's pagemap, opened for reading a range of pages at a time.
    pub fn pagemap(&self) -> Result<Pagemap, ProcError> {
        let path = self.path("pagemap");
        let mut file = None;
        tape::ask(self.pid, "open pagemap", || {
            file = Some(File::open(&path)?);
            Ok(Vec::new())
        })
        .map_err(|source| self.io_error(path.clone(), source))?;
        Ok(Pagemap {
            view: self.clone(),
            path,
            file,
        })
    }

    /// The file mapped at exactly `start..end`, through
    /// /proc/PID/map_files (which names it while the mapping lives, even
    /// after its descriptor is closed).
    pub fn mapped_file(&self, start: u64, end: u64) -> Option<String> {
        let path = self.read_link(&format!("map_files/{start:x}-{end:x}"))?;
        Some(path.to_string_lossy().into_owned())
    }

    /// A path to open the file the process knows as `path`: through its
    /// root while it lives (which reaches files inside containers), as is
    /// afterwards.
    pub fn file(&self, path: &str) -> PathBuf {
        // A capture played back: the process is gone (its PID may be
        // another's now), and its files are wherever the report runs.
        if tape::playing() {
            return PathBuf::from(path);
        }
        let inside = format!("root/{}", path.trim_start_matches('/'));
        let through_root = self.path(&inside);
        let exists = tape::ask(self.pid, &format!("exists {inside}"), || {
            Ok(vec![u8::from(through_root.exists())])
        });
        if exists.is_ok_and(|answer| answer == [1]) {
            through_root
        } else {
            PathBuf::from(path)
        }
    }

    /// The process's PID in its own PID namespace (a container's), the
    /// last number of `NStgid` in its status.
    pub fn namespace_pid(&self) -> Option<u32> {
        let status = self.read_text("status")?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("NStgid:"))?
            .split_whitespace()
            .last()?
            .parse()
            .ok()
    }

    /// The command name the kernel shows.
    pub fn comm(&self) -> Option<String> {
        let bytes = self.read("comm").ok()?;
        Some(String::from_utf8_lossy(&bytes).trim_end().to_owned())
    }

    /// A path that opens the process's executable, wherever it lives (a
    /// container's, a deleted one's).
    pub fn exe_file(&self) -> PathBuf {
        self.path("exe")
    }

    /// What kind of program the process runs (how its stacks can be
    /// taken), if its executable can be read.
    pub fn program(&self) -> Option<ProgramKind> {
        let answer = tape::ask(self.pid, "program kind", || {
            ProgramKind::read(&self.exe_file())
                .map(|kind| vec![kind.to_byte()])
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOEXEC))
        });
        Some(ProgramKind::from_byte(*answer.ok()?.first()?))
    }

    /// What the process runs on (see [`crate::runtime::detect`]), with
    /// `mapped_paths` the files it maps.
    pub fn runtime(&self, mapped_paths: &[String]) -> RuntimeInfo {
        let answer = tape::ask(self.pid, "runtime facts", || {
            Ok(crate::runtime::detect(self.pid, mapped_paths).to_entries())
        });
        answer
            .map(|entries| RuntimeInfo::from_entries(&entries))
            .unwrap_or_default()
    }

    /// The executable, as the kernel shows it.
    pub fn exe(&self) -> Option<PathBuf> {
        self.read_link("exe")
    }

    /// Where the ELF interpreter (`ld.so`) was loaded: the auxiliary
    /// vector's `AT_BASE`, `None` for a static program.
    pub fn interpreter_base(&self) -> Option<u64> {
        const AT_BASE: u64 = 7;
        let auxv = self.read("auxv").ok()?;
        let words: Vec<u64> = auxv
            .chunks_exact(8)
            .filter_map(|word| Some(u64::from_ne_bytes(word.try_into().ok()?)))
            .collect();
        words
            .chunks_exact(2)
            .find(|pair| pair[0] == AT_BASE)
            .map(|pair| pair[1])
            .filter(|&base| base != 0)
    }

    /// Whether the process still runs: its /proc entry is there and it is
    /// not a zombie (exited, waiting for its parent to reap it).
    pub fn alive(&self) -> bool {
        self.read_text("stat").is_some_and(|stat| {
            // The state follows the command name, which may hold spaces and
            // parentheses: look after the last ')'.
            stat.rfind(')')
                .and_then(|end| stat[end + 1..].split_whitespace().next())
                .is_some_and(|state| !matches!(state, "Z" | "X"))
        })
    }

    /// The kernel's start time of the process (ticks since boot), which
    /// tells a PID reused by another process apart.
    pub fn start_time(&self) -> Option<u64> {
        self.stat_field(19)
    }

    /// The PID of the process's parent.
    pub fn parent(&self) -> Option<u32> {
        self.stat_field(1)
    }

    /// The name of the process when it is a kernel thread, which has no
    /// user address space to trace (PF_KTHREAD in its flags).
    pub fn kernel_thread_name(&self) -> Option<String> {
        const PF_KTHREAD: u32 = 0x0020_0000;
        let flags: u32 = self.stat_field(6)?;
        (flags & PF_KTHREAD != 0).then(|| self.comm().unwrap_or_default())
    }

    /// Field `index` of /proc/PID/stat, counted from the state (field 3,
    /// index 0): the command name before it can hold spaces and
    /// parentheses, so fields are counted from the last ')'.
    fn stat_field<T: std::str::FromStr>(&self, index: usize) -> Option<T> {
        let stat = self.read_text("stat")?;
        let after = &stat[stat.rfind(')')? + 1..];
        after.split_whitespace().nth(index)?.parse().ok()
    }

    /// The process's stack size limit (`RLIMIT_STACK`, soft), in bytes;
    /// `u64::MAX` when unlimited.
    pub fn stack_limit(&self) -> Option<u64> {
        let limits = self.read_text("limits")?;
        parse_stack_limit(&limits)
    }

    /// Which process the process's descriptor `pidfd` refers to (from its
    /// fdinfo), when it is a pidfd.
    pub fn pidfd_target(&self, pidfd: i32) -> Option<u32> {
        let info = self.read_text(&format!("fdinfo/{pidfd}"))?;
        info.lines()
            .find_map(|line| line.strip_prefix("Pid:"))
            .and_then(|value| value.trim().parse().ok())
    }
}

/// Whether the kernel's automatic NUMA balancing is on: it then unmaps
/// present pages now and then to see which node touches them.
pub fn numa_balancing() -> bool {
    tape::read_text(0, Path::new("/proc/sys/kernel/numa_balancing"))
        .is_some_and(|mode| mode.trim() != "0")
}

/// The soft limit in a /proc/PID/limits text's `Max stack size` line.
fn parse_stack_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max stack size"))?;
    match line["Max stack size".len()..].split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_limits_are_read_soft_and_unlimited_is_unbounded() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max stack size            8388608              unlimited            bytes     \n";
        assert_eq!(parse_stack_limit(limits), Some(8 << 20));
        let unlimited = limits.replace("8388608 ", "unlimited");
        assert_eq!(parse_stack_limit(&unlimited), Some(u64::MAX));
        assert_eq!(parse_stack_limit("Max open files 1024 1024 files"), None);
        assert!(ProcessView::new(std::process::id()).stack_limit().is_some());
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let view = ProcessView::new(child.id());
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while view.alive() {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(view.path("stat").exists(), "still listed, as a zombie");
        child.wait().unwrap();
        assert!(ProcessView::new(std::process::id()).alive());
    }

    #[test]
    fn pagemap_is_read_for_the_range_asked() {
        const PAGE: usize = 4096;
        // SAFETY: a private anonymous mapping of four pages, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: writing the first and third of the pages just mapped.
        unsafe {
            base.cast::<u8>().write_volatile(1);
            base.cast::<u8>().add(2 * PAGE).write_volatile(1);
        }
        let first = base as u64 / PAGE as u64;
        let pagemap = ProcessView::new(std::process::id()).pagemap().unwrap();
        let entries = pagemap.read(first..first + 4).unwrap();
        // SAFETY: unmapping the pages mapped above.
        unsafe { libc::munmap(base, 4 * PAGE) };
        let present: Vec<bool> = entries
            .iter()
            .map(|entry| matches!(entry, PageEntry::Present { .. }))
            .collect();
        assert_eq!(present, [true, false, true, false]);
    }
}
