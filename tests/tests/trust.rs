//! memtrace on inputs nobody planned for: a reservation of terabytes with
//! records lost, an exit record lost, mmap flags and faults the model could
//! misread, a `process_madvise` whose pidfd is gone, a new program at the
//! old one's addresses, and what a fork really copies.

use std::{
    panic::{catch_unwind, resume_unwind, AssertUnwindSafe},
    thread,
    time::Duration,
};

use memtrace_tests::{
    kernel::{smaps_rollup, within},
    memtrace::{last_running, number, rows_with, verdict, words, Finished, Tracing},
    running::Running,
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const MINUTE: Duration = Duration::from_secs(60);

fn final_snapshot(finished: &Finished) -> Value {
    let last = finished.snapshots().last().cloned().expect("snapshots");
    assert_eq!(last["type"], "final", "{}", finished.transcript());
    last
}

/// The keys of the snapshot's `released_bytes` (how memory left RSS).
fn released_ways(snapshot: &Value) -> Vec<String> {
    snapshot["released_bytes"]
        .as_object()
        .expect("released_bytes is an object")
        .keys()
        .cloned()
        .collect()
}

/// The VmHWM of process `pid` in bytes, or `None` once it is gone.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Watches memtrace's peak RSS until it exits, and kills it as soon as the
/// peak passes `limit` (a regression must not take the machine's memory).
fn watch_peak(pid: u32, limit: u64) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut peak = 0;
        while let Some(now) = peak_rss(pid) {
            peak = peak.max(now);
            if peak > limit {
                // SAFETY: signalling memtrace, our own child.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        peak
    })
}

#[test]
fn a_terabyte_reservation_with_lost_records_keeps_memtrace_small_and_right() {
    const LIMIT: u64 = 128 * MIB;
    let workloads = ensure_built().expect("workloads build");
    // 4 TiB PROT_NONE, 256 MiB of it churned six times while memtrace is
    // stopped: its 8 KiB ring buffer loses nearly every record, so memtrace
    // rebuilds the model from /proc, every mapping of it.
    let mut tracing = Tracing::start(&[
        "--ring-size",
        "8192",
        "-i",
        "0.5",
        "--json",
        "-",
        "-q",
        "--",
        workloads.reservation.to_str().unwrap(),
        "--wait",
    ]);
    let watcher = watch_peak(tracing.pid(), LIMIT);
    let run = catch_unwind(AssertUnwindSafe(move || {
        tracing.wait_for_stdout("ready");
        tracing.signal(libc::SIGSTOP);
        tracing.send_line("go");
        let line = tracing.wait_for_stdout("\"reserved\":");
        tracing.signal(libc::SIGCONT);
        let said: Value = serde_json::from_str(&line).expect("the workload's JSON line");
        let pid = said["pid"].as_u64().expect("pid") as u32;
        tracing.wait_for_stdout("holding");
        let kernel = smaps_rollup(pid);
        (kernel, tracing.finish(Duration::from_secs(120)))
    }));
    let peak = watcher.join().expect("the watcher");
    assert!(
        peak <= LIMIT,
        "memtrace's own peak RSS was {} MiB",
        peak / MIB
    );
    let (kernel, finished) = run.unwrap_or_else(|panic| resume_unwind(panic));
    finished.assert_code(0);
    let last = final_snapshot(&finished);
    // The premise: more faults lost than the used range has pages.
    assert!(
        number(&last, "/records/lost/faults") > 256 * MIB / 4096,
        "{}",
        last["records"]
    );
    let rss = kernel["Rss"];
    assert!(rss >= 256 * MIB, "the workload holds its 256 MiB: {rss}");
    for pointer in ["/rss_bytes", "/model/rss_bytes"] {
        let reported = number(&last, pointer);
        assert!(
            within(reported, rss, 1.0),
            "{pointer} {reported} vs the kernel's {rss}"
        );
    }
}

/// Whether process `pid` has exited (a zombie not yet reaped counts).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn with_p_memtrace_stops_when_the_target_exits_even_if_its_exit_record_is_lost() {
    let workloads = ensure_built().expect("workloads build");
    let mut workload = Running::start(
        &workloads.memops,
        &words("wait ; map A 64M ; touch A 0 64M"),
        &[],
    );
    let pid = workload.pid();
    let mut tracing = Tracing::start(&[
        "-p",
        &pid.to_string(),
        "--ring-size",
        "8K",
        "--json",
        "-",
        "-q",
        "-i",
        "0.3",
    ]);
    tracing.wait_attached();
    // Stopped, memtrace drains nothing: the fault storm fills its 8 KiB ring
    // buffer, and the target's exit record finds it full.
    tracing.signal(libc::SIGSTOP);
    workload.send_line("go");
    let deadline = std::time::Instant::now() + MINUTE;
    while !exited(pid) {
        assert!(std::time::Instant::now() < deadline, "the workload ran on");
        thread::sleep(Duration::from_millis(20));
    }
    tracing.signal(libc::SIGCONT);
    let finished = tracing.finish(Duration::from_secs(20));
    finished.assert_code(0);
    let last = final_snapshot(&finished);
    assert_eq!(last["state"], "exited");
    assert!(
        number(&last, "/records/lost/lifecycle") >= 1,
        "the premise: the exit record was lost; {}",
        last["records"]
    );
}

#[test]
fn mmap_flags_and_faults_outside_every_mapping_are_what_the_kernel_does() {
    let workloads = ensure_built().expect("workloads build");
    // MAP_POPULATE|MAP_NONBLOCK populates nothing, MAP_LOCKED populates,
    // and reads of an unmapped range (SIGSEGV, caught) map nothing.
    // Attached with -p, so every fault is the workload's own (a started
    // command's first faults are memtrace's fork before its exec).
    let mut workload = Running::start(
        &workloads.memops,
        &words(
            "wait ; map P 8M populate nonblock ; map L 16M locked ; map A 1M ; unmap A 0 1M ; \
             probe A 0 1M ; wait",
        ),
        &[],
    );
    let pid = workload.pid();
    let mut tracing = Tracing::start(&["-p", &pid.to_string(), "--json", "-", "-q", "-i", "0.2"]);
    tracing.wait_attached();
    workload.send_line("go");
    let probed = workload.wait_for("op 5 probe", MINUTE);
    assert!(probed.ends_with("ret=256"), "{probed}");
    let kernel = smaps_rollup(pid);
    thread::sleep(Duration::from_millis(700));
    tracing.signal(libc::SIGINT);
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    let snapshot = final_snapshot(&finished);
    assert_eq!(snapshot["state"], "running");
    assert_eq!(number(&snapshot, "/calls/mmap/resident_bytes"), 16 * MIB);
    assert_eq!(number(&snapshot, "/model/by_cause/populate"), 16 * MIB);
    assert_eq!(number(&snapshot, "/faults/outside_mappings"), 256);
    let ways = released_ways(&snapshot);
    assert!(
        !ways.contains(&"unobserved".to_owned()),
        "nothing went unseen: {ways:?}"
    );
    let model = number(&snapshot, "/model/rss_bytes");
    assert!(
        within(model, kernel["Rss"], 1.0),
        "model {model} vs {kernel:?}"
    );
    let unexplained = number(&snapshot, "/unexplained_bytes");
    assert!(
        unexplained * 100 <= kernel["Rss"],
        "unexplained {unexplained}"
    );
}

#[test]
fn process_madvise_on_itself_is_followed_and_an_unresolvable_pidfd_is_said() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap().to_owned();
    // MADV_DONTNEED of 4 MiB three ways: by the kernel's "this process"
    // pidfd, by a pidfd kept open, and by one closed at once (memtrace
    // cannot tell afterwards what it referred to).
    let script = "map A 16M ; touch A 0 16M ; process_madvise A 0 4M 4 self ; \
                  process_madvise A 4M 4M 4 keep ; process_madvise A 8M 4M 4 ; wait";
    let mut args = vec!["--json", "-", "-q", "-i", "0.2", "--", &memops];
    args.extend(words(script));
    let mut tracing = Tracing::start(&args);
    let pid: u32 = tracing.wait_for_stdout("pid ")[4..].parse().unwrap();
    tracing.wait_for_stdout("op 4 process_madvise");
    let kernel = smaps_rollup(pid);
    thread::sleep(Duration::from_millis(700));
    tracing.send_line("go");
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    let snapshot = last_running(&finished.snapshots());
    assert_eq!(number(&snapshot, "/released_bytes/MADV_DONTNEED"), 8 * MIB);
    assert_eq!(
        number(&snapshot, "/process_madvise_unresolved/calls"),
        1,
        "{}",
        snapshot["process_madvise_unresolved"]
    );
    assert_eq!(
        number(&snapshot, "/process_madvise_unresolved/bytes"),
        4 * MIB
    );
    let model = number(&snapshot, "/model/rss_bytes");
    assert!(
        within(model, kernel["Rss"], 1.0),
        "model {model} vs {kernel:?}"
    );
    let text = verdict(&finished);
    assert!(text.contains("process_madvise"), "{text}");
}

#[test]
fn a_new_program_at_the_old_ones_addresses_gets_its_own_names() {
    let workloads = ensure_built().expect("workloads build");
    let (first, second) = (
        workloads.same_place_first.to_str().unwrap(),
        workloads.same_place_second.to_str().unwrap(),
    );
    // Both programs fault from the same code address; the first is named in
    // a few snapshots before it execs the second.
    let finished = memtrace_tests::memtrace::run(
        &[
            "--json", "-", "-q", "-i", "0.2", "--", first, "0.8", second, "0.8",
        ],
        MINUTE,
    );
    finished.assert_code(0);
    let snapshots = finished.snapshots();
    let before = snapshots
        .iter()
        .find(|s| !rows_with(s, "top_faults", "same_place_first_site").is_empty());
    assert!(before.is_some(), "the first program was named");
    let last = last_running(&snapshots);
    assert!(
        number(&last, "/released_bytes/execve") >= 8 * MIB,
        "{}",
        last["released_bytes"]
    );
    let names: Vec<&Value> = last["top_stacks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row["frames"].as_array().unwrap())
        .collect();
    assert!(
        names.iter().any(|name| *name == "same_place_second_site"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|name| *name == "same_place_first_site"),
        "the old program's name on the new one's code: {names:?}"
    );
}

#[test]
fn a_forked_child_starts_with_the_pages_the_kernel_copied() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap().to_owned();
    // The child lives 1.5 s after writing, so memtrace reconciles it with
    // /proc a few times: nothing the model gave it may turn out missing.
    let script = "map A 32M ; touch A 0 32M ; fork_touch A 0 16M 1.5 ; hold 0.3";
    let mut args = vec![
        "--follow-forks",
        "--json",
        "-",
        "-q",
        "-i",
        "0.3",
        "--",
        &memops,
    ];
    args.extend(words(script));
    let mut tracing = Tracing::start(&args);
    let line = tracing.wait_for_stdout("op 2 fork_touch");
    let child: u64 = line.split("child=").nth(1).unwrap().parse().unwrap();
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    let snapshots: Vec<Value> = finished
        .snapshots()
        .into_iter()
        .filter(|s| s["pid"] == child)
        .collect();
    let running: Vec<&Value> = snapshots
        .iter()
        .filter(|s| s["state"] == "running" && !s["kernel"].is_null())
        .collect();
    assert!(running.len() >= 2, "the child was read a few times");
    let last = snapshots.last().unwrap();
    let ways = released_ways(last);
    assert!(
        !ways
            .iter()
            .any(|way| way == "reclaim" || way == "unobserved"),
        "pages the child never had were taken out of its model: {}",
        last["released_bytes"]
    );
}
