//! The kernel's run-time stats of memtrace's eBPF programs: how many times
//! each ran and for how long, over a window of a benchmark run.
//!
//! The kernel counts only while stats are enabled, which itself costs every
//! program run a little (two clock reads), so the harness enables them just
//! for the runs that measure them (`BPF_ENABLE_STATS`: on while the file
//! descriptor it returns is open, and off again even if the harness dies),
//! never for the timed ones.
//!
//! memtrace's programs are found through its open file descriptors
//! (`/proc/PID/fdinfo` names each program's id), and opened by id here, so
//! that they outlive memtrace's exit: the counts are read once it is done,
//! with no race against its exit. Their names come from `bpftool`, which
//! reads the full names from the programs' BTF (the kernel keeps only 15
//! characters, and `sched_process_exec` and `sched_process_exit` would look
//! alike).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::Command,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use crate::{child::own_cpu, process};

/// `bpf(2)` commands and the stats type, from linux/bpf.h.
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// How many times a program ran and its total run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTime {
    pub ns: u64,
    pub runs: u64,
}

impl RunTime {
    /// Average nanoseconds per run; `None` when it did not run.
    pub fn ns_per_run(self) -> Option<f64> {
        (self.runs > 0).then(|| self.ns as f64 / self.runs as f64)
    }
}

/// Run time by program name. Programs loaded more than once under one name
/// (none of memtrace's are) would be added up.
pub type ByProgram = BTreeMap<String, RunTime>;

/// What the kernel and memtrace's agent spent over a window of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRun {
    pub programs: ByProgram,
    /// memtrace's own user + system CPU time over the same window.
    pub agent_cpu: Duration,
}

impl KernelRun {
    /// Every program's runs and time together.
    pub fn total(&self) -> RunTime {
        self.programs
            .values()
            .fold(RunTime::default(), |total, run| RunTime {
                ns: total.ns + run.ns,
                runs: total.runs + run.runs,
            })
    }
}

/// A window over which memtrace's programs are measured: stats on, its
/// programs held open, their counts and its CPU time at the start.
pub struct Window {
    _stats_on: OwnedFd,
    pid: u32,
    programs: Vec<(String, OwnedFd)>,
    start: ByProgram,
    agent_start: Duration,
}

impl Window {
    /// Starts measuring the programs of memtrace process `pid`, which has
    /// loaded them.
    pub fn open(pid: u32) -> Result<Self> {
        let stats_on = enable_stats()?;
        let ids = program_ids(pid)?;
        if ids.is_empty() {
            bail!("memtrace (pid {pid}) has no eBPF program open");
        }
        let names = program_names(&ids)?;
        let programs = ids
            .iter()
            .map(|&id| Ok((names[&id].clone(), open_program(id)?)))
            .collect::<Result<Vec<_>>>()?;
        let start = read_all(&programs)?;
        Ok(Self {
            _stats_on: stats_on,
            pid,
            programs,
            start,
            agent_start: own_cpu(pid)?,
        })
    }

    /// What ran since the window opened; `agent_end` is memtrace's CPU time
    /// now (read by the caller, which knows when it exited).
    pub fn close(self, agent_end: Duration) -> Result<KernelRun> {
        let end = read_all(&self.programs)?;
        let programs = end
            .into_iter()
            .map(|(name, end)| {
                let start = self.start.get(&name).copied().unwrap_or_default();
                let run = RunTime {
                    ns: end.ns.saturating_sub(start.ns),
                    runs: end.runs.saturating_sub(start.runs),
                };
                (name, run)
            })
            .collect();
        Ok(KernelRun {
            programs,
            agent_cpu: agent_end.checked_sub(self.agent_start).with_context(|| {
                format!(
                    "memtrace's (pid {}) CPU time went back from {:?} to {agent_end:?}",
                    self.pid, self.agent_start
                )
            })?,
        })
    }
}

/// Turns the kernel's run-time stats on until the returned descriptor is
/// closed.
fn enable_stats() -> Result<OwnedFd> {
    let attr = [BPF_STATS_RUN_TIME, 0];
    bpf(BPF_ENABLE_STATS, &attr).context("cannot enable BPF run-time stats (BPF_ENABLE_STATS)")
}

/// Opens the program with this id, keeping it loaded while open.
fn open_program(id: u32) -> Result<OwnedFd> {
    // prog_id, next_id, open_flags.
    let attr = [id, 0, 0];
    bpf(BPF_PROG_GET_FD_BY_ID, &attr).with_context(|| format!("cannot open eBPF program {id}"))
}

/// The `bpf(2)` call `command` with the attribute words `attr`, for the
/// commands that return a new file descriptor.
fn bpf(command: libc::c_long, attr: &[u32]) -> Result<OwnedFd> {
    let size = std::mem::size_of_val(attr);
    // SAFETY: `attr` is a valid, initialised buffer of `size` bytes that the
    // kernel only reads; the commands used here take no pointers in it.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_ptr(), size) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let fd = i32::try_from(fd).context("bpf(2) returned an impossible descriptor")?;
    // SAFETY: the kernel just returned this new descriptor, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The ids of the eBPF programs process `pid` has open (program and link
/// descriptors both name theirs).
fn program_ids(pid: u32) -> Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = BTreeSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let path = entry.with_context(|| format!("cannot list {dir}"))?.path();
        // A descriptor closed meanwhile is simply not one of them.
        if let Ok(text) = fs::read_to_string(&path) {
            ids.extend(fdinfo_field(&text, "prog_id").and_then(|id| u32::try_from(id).ok()));
        }
    }
    Ok(ids)
}

/// The full names of programs `ids`, from `bpftool prog show --json`.
fn program_names(ids: &BTreeSet<u32>) -> Result<BTreeMap<u32, String>> {
    let text = process::captured(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let listed: Value = serde_json::from_str(&text).context("bpftool printed no JSON")?;
    let names = names_by_id(&listed, ids);
    if let Some(missing) = ids.iter().find(|id| !names.contains_key(id)) {
        bail!("bpftool prog show does not list eBPF program {missing}");
    }
    Ok(names)
}

/// The names of programs `ids` in bpftool's JSON list.
fn names_by_id(listed: &Value, ids: &BTreeSet<u32>) -> BTreeMap<u32, String> {
    listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|program| {
            let id = u32::try_from(program["id"].as_u64()?).ok()?;
            let name = program["name"].as_str()?;
            ids.contains(&id).then(|| (id, name.to_owned()))
        })
        .collect()
}

/// Every held program's counts, from this process's own fdinfo.
fn read_all(programs: &[(String, OwnedFd)]) -> Result<ByProgram> {
    let mut all = ByProgram::new();
    for (name, fd) in programs {
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let (Some(ns), Some(runs)) = (
            fdinfo_field(&text, "run_time_ns"),
            fdinfo_field(&text, "run_cnt"),
        ) else {
            bail!("{path} has no run_time_ns and run_cnt: {text}");
        };
        let total = all.entry(name.clone()).or_default();
        total.ns += ns;
        total.runs += runs;
    }
    Ok(all)
}

/// A whole-number field of an fdinfo file (`run_cnt:\t42`).
fn fdinfo_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == field).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const PROG_FDINFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\n\
        prog_type:\t26\nprog_jited:\t1\nprog_tag:\t3b185187f1855c4c\nmemlock:\t4096\n\
        prog_id:\t11470\nrun_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t0\n";

    #[test]
    fn fdinfo_fields_are_read_by_exact_name() {
        assert_eq!(fdinfo_field(PROG_FDINFO, "prog_id"), Some(11470));
        assert_eq!(fdinfo_field(PROG_FDINFO, "run_time_ns"), Some(123456));
        assert_eq!(fdinfo_field(PROG_FDINFO, "run_cnt"), Some(789));
        assert_eq!(fdinfo_field(PROG_FDINFO, "run"), None);
        assert_eq!(fdinfo_field("pos:\t0\nflags:\t02\n", "prog_id"), None);
        assert_eq!(fdinfo_field("prog_id:\tmany\n", "prog_id"), None);
    }

    #[test]
    fn names_come_from_bpftool_for_the_ids_asked() {
        let listed = json!([
            {"id": 1, "name": "other_tool"},
            {"id": 7, "name": "sched_process_exec"},
            {"id": 8, "name": "sched_process_exit"},
            {"id": 9},
        ]);
        let ids = BTreeSet::from([7, 8, 9]);
        let names = names_by_id(&listed, &ids);
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(names[&7], "sched_process_exec");
        assert_eq!(names[&8], "sched_process_exit");
    }

    #[test]
    fn totals_and_averages() {
        let run = KernelRun {
            programs: ByProgram::from([
                ("sys_exit".to_owned(), RunTime { ns: 600, runs: 20 }),
                ("page_fault_user".to_owned(), RunTime { ns: 400, runs: 5 }),
                ("rss_stat".to_owned(), RunTime::default()),
            ]),
            agent_cpu: Duration::ZERO,
        };
        assert_eq!(run.total(), RunTime { ns: 1000, runs: 25 });
        assert_eq!(run.total().ns_per_run(), Some(40.0));
        assert_eq!(run.programs["sys_exit"].ns_per_run(), Some(30.0));
        assert_eq!(run.programs["rss_stat"].ns_per_run(), None);
    }
}
