//! Every way of stopping leaves nothing behind: the programs detached and
//! their maps freed, outputs complete or absent, a documented exit code.
//! One test in its own binary, so no other memtrace runs meanwhile and the
//! kernel's list of programs is ours to read.

use std::{collections::HashSet, fs, time::Duration};

use memtrace_tests::{
    kernel::loaded_bpf_programs,
    memtrace::{snapshots_in, Argv, FakeEndpoint, Line, Tracing},
    workloads::ensure_built,
};

/// memtrace's programs, by the names bpftool shows.
const OUR_PROGRAMS: &[&str] = &[
    "exit_mmap",
    "mark_victim",
    "page_fault_kernel",
    "page_fault_user",
    "rss_stat",
    "sched_process_exec",
    "sched_process_exit",
    "sys_exit",
    "task_newtask",
];

#[derive(Debug, Clone, Copy)]
enum Way {
    Signal(i32),
    Duration,
    TargetExits,
    SecondInterrupt,
}

#[test]
fn every_way_of_stopping_unloads_everything_and_writes_whole_outputs() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap().to_owned();
    for way in [
        Way::Signal(libc::SIGINT),
        Way::Signal(libc::SIGTERM),
        Way::Signal(libc::SIGHUP),
        Way::Duration,
        Way::TargetExits,
        Way::SecondInterrupt,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("out.jsonl");
        let profile = dir.path().join("heap.pb.gz");
        let hold = if matches!(way, Way::TargetExits) {
            "1"
        } else {
            "30"
        };
        // A heap endpoint that never answers: memtrace's final phase waits
        // for the fetch in flight (up to its 5 s read timeout) before the
        // report, which is where the second Ctrl-C must land.
        let silent = FakeEndpoint::start(None);
        let url = silent.url();
        let mut args = Argv::new()
            .words("-q -i 0.3 --json")
            .arg(json.to_str().unwrap())
            .words("--pprof")
            .arg(profile.to_str().unwrap());
        match way {
            Way::Duration => args = args.words("-d 1.5"),
            Way::SecondInterrupt => args = args.words("--go-pprof").arg(&url),
            Way::Signal(_) | Way::TargetExits => {}
        }
        let args = args
            .words("--")
            .arg(&memops)
            .words("map A 16M ; touch A 0 16M ; hold")
            .arg(hold);
        let before: HashSet<u32> = loaded_bpf_programs()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let mut tracing = Tracing::start(&args);
        tracing.wait_attached();
        // Programs that appeared since, named as memtrace's are (a benchmark
        // running bpftrace meanwhile loads programs too).
        let ours: Vec<u32> = loaded_bpf_programs()
            .into_iter()
            .filter(|(id, name)| !before.contains(id) && OUR_PROGRAMS.contains(&name.as_str()))
            .map(|(id, _)| id)
            .collect();
        assert!(
            ours.len() >= OUR_PROGRAMS.len(),
            "{way:?}: memtrace's programs are loaded: {ours:?}"
        );
        std::thread::sleep(Duration::from_millis(800));
        match way {
            Way::Signal(signal) => tracing.signal(signal),
            Way::SecondInterrupt => {
                // A fetch has just connected, so it has seconds left to
                // wait; the first Ctrl-C starts stopping, which then waits
                // for that fetch, and the second lands while it does.
                silent.wait_for_next_connection(Duration::from_secs(30));
                tracing.signal(libc::SIGINT);
                tracing.wait_for(Duration::from_secs(10), |line| {
                    matches!(line, Line::Stderr(text) if text.starts_with("memtrace: stopping;"))
                });
                tracing.signal(libc::SIGINT);
            }
            Way::Duration | Way::TargetExits => {}
        }
        let finished = tracing.finish(Duration::from_secs(60));
        let still = still_loaded(&ours);
        assert!(still.is_empty(), "{way:?}: programs left loaded: {still:?}");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().starts_with('.'))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{way:?}: temporary files left: {leftovers:?}"
        );
        match way {
            Way::SecondInterrupt => {
                finished.assert_code(13);
                // Interval lines went to the JSON file as they came; the
                // final ones, and the profile, are never written.
                let lines = fs::read_to_string(&json).unwrap_or_default();
                assert!(
                    !lines.contains(r#""type":"final""#) && !profile.exists(),
                    "{way:?}: output written after the second Ctrl-C"
                );
            }
            _ => {
                finished.assert_code(0);
                let text = fs::read_to_string(&json).unwrap();
                let snapshots = snapshots_in(text.lines());
                assert_eq!(snapshots.last().unwrap()["type"], "final", "{way:?}");
                assert!(fs::metadata(&profile).unwrap().len() > 0, "{way:?}");
            }
        }
    }
}

/// Which of `ours` the kernel still lists. The kernel frees a program once
/// its last reference goes, but some of those references (links, perf
/// events) are dropped from a workqueue or after an RCU grace period, just
/// after the process that held them is gone; so a program still listed is
/// asked about again for a few seconds before it counts as left behind.
fn still_loaded(ours: &[u32]) -> Vec<(u32, String)> {
    let listed = || -> Vec<(u32, String)> {
        loaded_bpf_programs()
            .into_iter()
            .filter(|(id, _)| ours.contains(id))
            .collect()
    };
    for _ in 0..50 {
        if listed().is_empty() {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    listed()
}
