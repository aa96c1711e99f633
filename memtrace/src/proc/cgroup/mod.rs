//! Memory cgroups: the one a process is in, or the one `--cgroup` /
//! `--container` names, with its charge, its limits and the processes in
//! it. A process can be killed for its cgroup's memory well before the
//! machine runs out, and a container is a cgroup.
//!
//! Both cgroup versions: v2 (one hierarchy, `memory.current`), and v1 (a
//! hierarchy per controller, `memory.usage_in_bytes`), including hybrid
//! hosts where the memory controller is on v1 while an empty v2 hierarchy
//! (mounted at `/sys/fs/cgroup/unified`) holds the same paths — which is
//! what lets the kernel side test a task's cgroup on either.

mod container;
mod stat;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::tape::{ask, is_dir, is_file, read_text};

pub use container::{container_id_in_path, resolve_container, Container};
pub use stat::{parse_v1 as parse_memory_stat_v1, parse_v2 as parse_memory_stat_v2, MemoryStat};

/// The cgroup's memory use, limits and charge, in bytes (`None`: no
/// limit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The cgroup's path, as in /proc/PID/cgroup.
    pub path: String,
    pub version: Version,
    /// `memory.current` (v2), `memory.usage_in_bytes` (v1).
    pub current: u64,
    /// The hard limit (`memory.max`, v1 `memory.limit_in_bytes`).
    pub max: Option<u64>,
    /// The throttling limit (`memory.high`, v1 `memory.soft_limit_in_bytes`).
    pub high: Option<u64>,
    pub stat: MemoryStat,
}

impl CgroupMemory {
    /// The working set as Kubernetes computes it (and evicts on): usage
    /// less the inactive file list.
    pub fn working_set(&self) -> u64 {
        self.current.saturating_sub(self.stat.inactive_file)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("{path}: not a memory cgroup directory (give a directory under a cgroup v2 mount or v1's memory controller)")]
    NotACgroup { path: String },
    #[error("{0}")]
    Container(String),
}

/// Where the cgroup hierarchies are mounted, from /proc/self/mounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Mounts {
    /// The cgroup v2 hierarchy.
    v2: Option<PathBuf>,
    /// cgroup v1's memory controller.
    v1_memory: Option<PathBuf>,
}

impl Mounts {
    fn parse(text: &str) -> Self {
        let mut mounts = Self::default();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let (Some(_), Some(point), Some(kind), Some(options)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            match kind {
                "cgroup2" => mounts.v2 = Some(PathBuf::from(point)),
                "cgroup" if options.split(',').any(|option| option == "memory") => {
                    mounts.v1_memory = Some(PathBuf::from(point));
                }
                _ => {}
            }
        }
        mounts
    }

    fn read() -> Self {
        Self::parse(&read_text(0, Path::new("/proc/self/mounts")).unwrap_or_default())
    }

    /// Whether the v2 hierarchy has the memory controller (a v2 host, not
    /// a hybrid one).
    fn v2_has_memory(&self) -> bool {
        self.v2.as_ref().is_some_and(|root| {
            read_text(0, &root.join("cgroup.controllers"))
                .is_some_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"))
        })
    }
}

/// A memory cgroup's directories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Its path in the hierarchy, as in /proc/PID/cgroup (`/` for the root).
    pub path: String,
    pub version: Version,
    /// The directory with its memory files.
    pub memory_dir: PathBuf,
    /// Its directory in the v2 hierarchy, when there is one (on a hybrid
    /// host too): the kernel side tests tasks against it.
    pub unified_dir: Option<PathBuf>,
}

impl Cgroup {
    /// The cgroup at `path`, a directory under a cgroup mount (the way
    /// `--cgroup` names it), or a path as /proc/PID/cgroup shows it.
    pub fn open(path: &Path) -> Result<Self, CgroupError> {
        let mounts = Mounts::read();
        let not_a_cgroup = || CgroupError::NotACgroup {
            path: path.display().to_string(),
        };
        let absolute = fs::canonicalize(path).ok();
        let relative = absolute
            .as_deref()
            .and_then(|dir| {
                [&mounts.v2, &mounts.v1_memory]
                    .into_iter()
                    .flatten()
                    .find_map(|root| dir.strip_prefix(root).ok())
            })
            .map(|rest| format!("/{}", rest.display()))
            .or_else(|| {
                path.to_str()
                    .filter(|text| text.starts_with('/') && !text.starts_with("/sys/"))
                    .map(str::to_owned)
            })
            .ok_or_else(not_a_cgroup)?;
        Self::at(&mounts, &relative).ok_or_else(not_a_cgroup)
    }

    /// The memory cgroup process `pid` is in.
    pub fn of_pid(pid: u32) -> Option<Self> {
        Self::at(&Mounts::read(), &membership_of(pid)?)
    }

    /// The cgroup at hierarchy path `path` under `mounts`.
    fn at(mounts: &Mounts, path: &str) -> Option<Self> {
        let under = |root: &PathBuf| root.join(path.trim_start_matches('/'));
        let unified_dir = mounts.v2.as_ref().map(under).filter(|dir| is_dir(dir));
        let (version, memory_dir) = if mounts.v2_has_memory() {
            (Version::V2, unified_dir.clone()?)
        } else {
            (Version::V1, mounts.v1_memory.as_ref().map(under)?)
        };
        let memory_file = match version {
            Version::V2 => "memory.current",
            Version::V1 => "memory.usage_in_bytes",
        };
        is_file(&memory_dir.join(memory_file)).then(|| Self {
            path: path.to_owned(),
            version,
            memory_dir,
            unified_dir,
        })
    }

    /// Whether the cgroup still exists (a container's is removed with it).
    pub fn exists(&self) -> bool {
        is_dir(&self.memory_dir)
    }

    /// Its memory use, limits and charge now.
    pub fn memory(&self) -> Option<CgroupMemory> {
        let dir = &self.memory_dir;
        let read = |name: &str| read_text(0, &dir.join(name));
        let (current, max, high, stat) = match self.version {
            Version::V2 => (
                number(dir.join("memory.current"))?,
                limit(dir.join("memory.max")),
                limit(dir.join("memory.high")),
                stat::parse_v2(&read("memory.stat")?),
            ),
            Version::V1 => (
                number(dir.join("memory.usage_in_bytes"))?,
                limit(dir.join("memory.limit_in_bytes")),
                limit(dir.join("memory.soft_limit_in_bytes")),
                stat::parse_v1(
                    &read("memory.stat")?,
                    number(dir.join("memory.kmem.usage_in_bytes")).unwrap_or(0),
                ),
            ),
        };
        Some(CgroupMemory {
            path: self.path.clone(),
            version: self.version,
            current,
            max,
            high,
            stat,
        })
    }

    /// The processes in the cgroup and in its descendants.
    pub fn processes(&self) -> io::Result<Vec<u32>> {
        let root = self.unified_dir.as_ref().unwrap_or(&self.memory_dir);
        let question = format!("cgroup processes {}", root.display());
        let listed = ask(0, &question, || {
            let pids: Vec<String> = Self::processes_under(root)?
                .iter()
                .map(u32::to_string)
                .collect();
            Ok(pids.join("\n").into_bytes())
        })?;
        Ok(String::from_utf8_lossy(&listed)
            .lines()
            .filter_map(|line| line.parse().ok())
            .collect())
    }

    /// The processes in the cgroup at `root` and below, read now.
    fn processes_under(root: &Path) -> io::Result<Vec<u32>> {
        let mut pids = Vec::new();
        let mut dirs = vec![root.to_owned()];
        while let Some(dir) = dirs.pop() {
            let procs = match fs::read_to_string(dir.join("cgroup.procs")) {
                Ok(procs) => procs,
                // Removed meanwhile: its processes went with it.
                Err(err) if err.kind() == io::ErrorKind::NotFound && dir != root => continue,
                Err(err) => return Err(err),
            };
            pids.extend(
                procs
                    .lines()
                    .filter_map(|line| line.trim().parse::<u32>().ok()),
            );
            for entry in fs::read_dir(&dir)?.flatten() {
                if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

/// The path of the memory cgroup process `pid` is in, as its
/// /proc/PID/cgroup names it.
pub fn membership_of(pid: u32) -> Option<String> {
    parse_membership(&read_text(pid, Path::new(&format!("/proc/{pid}/cgroup")))?)
}

/// The memory cgroup's path in /proc/PID/cgroup's text. A v1 memory line
/// wins over the v2 one: on hybrid hosts the v2 hierarchy has no memory
/// controller.
pub fn parse_membership(text: &str) -> Option<String> {
    let mut v2 = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.split(',').any(|name| name == "memory") {
            return Some(path.to_owned());
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_owned());
        }
    }
    v2
}

/// Reads a limit file: a number of bytes, or `max`; v1 reports "no limit"
/// as a huge number (the largest page-aligned value).
fn limit(path: PathBuf) -> Option<u64> {
    number(path).filter(|&value| value < 1 << 62)
}

fn number(path: PathBuf) -> Option<u64> {
    read_text(0, &path)?.trim().parse().ok()
}

/// The memory cgroup of `pid` and its figures, or `None` where there is
/// none to read.
pub fn memory_of(pid: u32) -> Option<CgroupMemory> {
    Cgroup::of_pid(pid)?.memory()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_wins_on_hybrid_systems() {
        let text = "12:memory:/user.slice/test\n11:cpu,cpuacct:/\n0::/user.slice\n";
        assert_eq!(parse_membership(text).as_deref(), Some("/user.slice/test"));
    }

    #[test]
    fn pure_v2() {
        assert_eq!(
            parse_membership("0::/system.slice/app.service\n").as_deref(),
            Some("/system.slice/app.service")
        );
        assert_eq!(parse_membership("garbage"), None);
    }

    #[test]
    fn mounts_of_a_hybrid_and_of_a_v2_host() {
        let hybrid = Mounts::parse(
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
             cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
             cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0\n\
             cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n",
        );
        assert_eq!(
            hybrid.v1_memory,
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(hybrid.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let v2 = Mounts::parse("cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid 0 0\n");
        assert_eq!(v2.v2, Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(v2.v1_memory, None);
    }

    #[test]
    fn our_own_cgroup_is_readable() {
        // Every process is in a cgroup, and this project's machines mount
        // the memory controller.
        let memory = memory_of(std::process::id()).expect("a memory cgroup");
        assert!(memory.current > 0);
        assert!(memory.path.starts_with('/'));
        let cgroup = Cgroup::of_pid(std::process::id()).unwrap();
        assert!(cgroup.processes().unwrap().contains(&std::process::id()));
        assert_eq!(Cgroup::open(&cgroup.memory_dir).unwrap(), cgroup);
        assert!(Cgroup::open(Path::new("/etc")).is_err());
    }
}
