//! What the kernel itself says about a process: the ground truth the tests
//! hold memtrace's numbers against.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

/// `/proc/PID/smaps_rollup` in bytes, by field name (`Rss`, `LazyFree`...).
pub fn smaps_rollup(pid: u32) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|err| panic!("read smaps_rollup of {pid}: {err}"));
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let kib: u64 = rest.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((name.to_owned(), kib * 1024))
        })
        .collect()
}

/// The CPUs online: the kernel's per-CPU batches bound how far its
/// figures lag.
pub fn cpus() -> u64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) as u64 }
}

/// What the per-CPU folio batches (FOLIO_BATCH_SIZE, 31 pages each) may
/// hold at once over all CPUs, in bytes. Pages given back with MADV_FREE
/// wait there, still resident but not yet on the lazy-free list, until the
/// batch drains, and only then count as LazyFree. Reclaim drains only the
/// reclaiming CPU's batch, so after the kernel took back every other lazily
/// freed page, smaps may say 0 while up to this many bytes are still on
/// their way.
pub fn folio_batches_bytes() -> u64 {
    31 * 4096 * cpus()
}

/// Whether `actual` is within `percent` % of `expected` (or both are 0).
pub fn within(actual: u64, expected: u64, percent: f64) -> bool {
    let tolerance = expected as f64 * percent / 100.0;
    (actual as f64 - expected as f64).abs() <= tolerance
}

/// The BPF programs loaded in the kernel right now, as (id, name), from
/// bpftool (`cargo xtask setup` installs it).
pub fn loaded_bpf_programs() -> Vec<(u32, String)> {
    let output = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool lists BPF programs; run `cargo xtask setup` to install it");
    assert!(output.status.success(), "bpftool failed: {:?}", output);
    let programs: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("bpftool's JSON");
    programs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|program| {
            let id = program["id"].as_u64()? as u32;
            let name = program["name"].as_str().unwrap_or_default().to_owned();
            Some((id, name))
        })
        .collect()
}

/// A memory cgroup the test controls, removed afterwards. On a hybrid host
/// (memory controller on v1) it is made in the empty v2 hierarchy too, as
/// container runtimes do, so the kernel side can test tasks against it.
pub struct MemoryCgroup {
    dir: PathBuf,
    unified: Option<PathBuf>,
    v2: bool,
}

impl MemoryCgroup {
    pub fn new(name: &str) -> Self {
        let v2 = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"));
        let root = if v2 {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/memory"
        };
        let leaf = format!("{name}-{}", std::process::id());
        let dir = PathBuf::from(root).join(&leaf);
        fs::create_dir_all(&dir).expect("create a memory cgroup (needs root and cgroups)");
        let unified = Path::new(HYBRID_UNIFIED)
            .is_dir()
            .then(|| Path::new(HYBRID_UNIFIED).join(&leaf))
            .filter(|_| !v2);
        if let Some(unified) = &unified {
            fs::create_dir_all(unified).expect("create the cgroup in the v2 hierarchy too");
        }
        Self { dir, unified, v2 }
    }

    /// Its memory controller's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A shell prefix that moves the shell into the cgroup, then execs.
    pub fn enter(&self) -> String {
        let mut enter = format!("echo $$ > {}/cgroup.procs && ", self.dir.display());
        if let Some(unified) = &self.unified {
            enter += &format!("echo $$ > {}/cgroup.procs && ", unified.display());
        }
        enter + "exec"
    }

    /// Removes the cgroup now (its processes must have exited): what a
    /// container runtime does when a container stops.
    pub fn remove(&self) {
        for dir in std::iter::once(&self.dir).chain(&self.unified) {
            fs::remove_dir(dir).unwrap_or_else(|err| panic!("remove {}: {err}", dir.display()));
        }
    }

    /// Sets the hard limit: past it, the OOM killer acts.
    pub fn max(&self, bytes: u64) {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        fs::write(self.dir.join(file), bytes.to_string()).expect("set the memory limit");
    }

    /// Lowers the limit: the kernel reclaims to get under it.
    pub fn limit(&self, bytes: u64) {
        let file = if self.v2 {
            "memory.high"
        } else {
            "memory.limit_in_bytes"
        };
        fs::write(self.dir.join(file), bytes.to_string()).expect("set the memory limit");
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        for dir in std::iter::once(&self.dir).chain(&self.unified) {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Where hybrid hosts mount the (empty) cgroup v2 hierarchy.
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";
