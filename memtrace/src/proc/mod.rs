//! The kernel's own view of the traced process, from /proc: the ground truth
//! the model is checked against.

mod cgroup;
mod pagemap;
mod smaps;

use std::{fs::File, io, os::unix::fs::FileExt, path::PathBuf};

pub use cgroup::{
    memory_of as cgroup_memory, resolve_container, Cgroup, CgroupError, CgroupMemory, Container,
    MemoryStat, Version as CgroupVersion,
};
pub use pagemap::{decode_pagemap, zero_page_pfn};
pub use smaps::{parse_rollup, parse_smaps, parse_status};

use crate::model::reconcile::{KernelVma, PageEntry};

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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatusCounters {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
    pub swap: u64,
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
        std::fs::read(&path).map_err(|source| self.io_error(path, source))
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

    /// pagemap entries for every page of `vma`.
    pub fn pagemap(&self, vma: &KernelVma) -> Result<Vec<PageEntry>, ProcError> {
        let path = self.path("pagemap");
        let file = File::open(&path).map_err(|source| self.io_error(path.clone(), source))?;
        let pages = vma.pages();
        let count = (pages.end - pages.start) as usize;
        let mut raw = vec![0u8; count * 8];
        let offset = pages.start * 8;
        let mut read = 0;
        while read < raw.len() {
            match file.read_at(&mut raw[read..], offset + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(self.io_error(path, source)),
            }
        }
        raw.truncate(read - read % 8);
        Ok(decode_pagemap(&raw))
    }

    /// The file mapped at exactly `start..end`, through
    /// /proc/PID/map_files (which names it while the mapping lives, even
    /// after its descriptor is closed).
    pub fn mapped_file(&self, start: u64, end: u64) -> Option<String> {
        let link = self.path(&format!("map_files/{start:x}-{end:x}"));
        let path = std::fs::read_link(link).ok()?;
        Some(path.to_string_lossy().into_owned())
    }

    /// A path to open the file the process knows as `path`: through its
    /// root while it lives (which reaches files inside containers), as is
    /// afterwards.
    pub fn file(&self, path: &str) -> PathBuf {
        let through_root = self.path("root").join(path.trim_start_matches('/'));
        if through_root.exists() {
            through_root
        } else {
            PathBuf::from(path)
        }
    }

    /// The process's PID in its own PID namespace (a container's), the
    /// last number of `NStgid` in its status.
    pub fn namespace_pid(&self) -> Option<u32> {
        let status = std::fs::read_to_string(self.path("status")).ok()?;
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

    /// The executable, as the kernel shows it.
    pub fn exe(&self) -> Option<PathBuf> {
        std::fs::read_link(self.path("exe")).ok()
    }

    /// Whether the process still runs: its /proc entry is there and it is
    /// not a zombie (exited, waiting for its parent to reap it).
    pub fn alive(&self) -> bool {
        std::fs::read_to_string(self.path("stat")).is_ok_and(|stat| {
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
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        // The command name (field 2) can hold spaces and parentheses: count
        // fields from the last ')'.
        let after = &stat[stat.rfind(')')? + 1..];
        after.split_whitespace().nth(19)?.parse().ok()
    }

    /// Whether the PID is a process (a thread group's leader), not one of
    /// its other threads, which the fork tracepoint also reports.
    pub fn is_process(&self) -> bool {
        std::fs::read_to_string(self.path("status")).is_ok_and(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Tgid:"))
                .and_then(|tgid| tgid.trim().parse::<u32>().ok())
                == Some(self.pid)
        })
    }

    /// Which process the process's descriptor `pidfd` refers to (from its
    /// fdinfo), when it is a pidfd.
    pub fn pidfd_target(&self, pidfd: i32) -> Option<u32> {
        let info = std::fs::read_to_string(self.path(&format!("fdinfo/{pidfd}"))).ok()?;
        info.lines()
            .find_map(|line| line.strip_prefix("Pid:"))
            .and_then(|value| value.trim().parse().ok())
    }
}
