//! `memtrace record` and `memtrace report`: a capture of a real trace is
//! written beside the live report, holds what the session consumed, and
//! reads back whole, killed, cut at a random byte, from a newer memtrace,
//! or corrupt, each the way it should.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use memtrace_tests::{
    container::{Container, Image, MIX},
    gotool,
    kernel::MemoryCgroup,
    memtrace::{
        binary, last_running, number, rows_with, run, words, Argv, Finished, Line, Tracing,
    },
    running::{attach_with_heap_profile, Running},
    workloads::{build_dir, ensure_built, split_fault_line},
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// A scratch directory for captures.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a scratch directory")
}

/// What `memtrace report --contents` says the capture holds.
fn report(capture: &Path) -> Finished {
    run(
        &["report", "--contents", capture.to_str().unwrap()],
        Duration::from_secs(60),
    )
}

/// The capture played back: `memtrace report` with `--json -`.
fn replay(capture: &Path) -> Finished {
    let finished = run(
        &Argv::new()
            .words("report --json - -q")
            .arg(capture.to_str().unwrap()),
        Duration::from_secs(120),
    );
    finished.assert_code(0);
    finished
}

/// A snapshot's figures: all of it but when it was taken (`elapsed_s`,
/// `timestamp_unix_ms`, and the trend's timing, whose kind is kept) and
/// memtrace's own footprint, which is the reporting memtrace's.
fn figures(snapshot: &Value) -> Value {
    let mut figures = snapshot.clone();
    let object = figures.as_object_mut().expect("a snapshot is an object");
    for timing in ["elapsed_s", "timestamp_unix_ms", "memtrace"] {
        assert!(object.remove(timing).is_some(), "no {timing} in {snapshot}");
    }
    let trend = object.remove("trend").expect("a trend");
    object.insert("trend_kind".into(), trend["kind"].clone());
    figures
}

/// Every snapshot the report gives is the live run's, figure for figure,
/// in the same order; returns how many.
fn assert_replayed_as_live(live: &Finished, capture: &Path) -> usize {
    let replayed = replay(capture);
    let live: Vec<Value> = live.snapshots().iter().map(figures).collect();
    let played: Vec<Value> = replayed.snapshots().iter().map(figures).collect();
    assert_eq!(played.len(), live.len(), "{}", replayed.transcript());
    for (index, (live, played)) in live.iter().zip(&played).enumerate() {
        let mut differences = Vec::new();
        differ(live, played, String::new(), &mut differences);
        assert!(
            differences.is_empty(),
            "snapshot {index} differs (live, then played):\n{}",
            differences.join("\n")
        );
    }
    live.len()
}

/// Where `a` and `b` differ, as JSON pointers with both values.
fn differ(a: &Value, b: &Value, at: String, differences: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(a_fields), Value::Object(b_fields)) => {
            for key in a_fields
                .keys()
                .chain(b_fields.keys().filter(|k| !a_fields.contains_key(*k)))
            {
                differ(
                    a_fields.get(key).unwrap_or(&Value::Null),
                    b_fields.get(key).unwrap_or(&Value::Null),
                    format!("{at}/{key}"),
                    differences,
                );
            }
        }
        (Value::Array(a_items), Value::Array(b_items)) if a_items.len() == b_items.len() => {
            for (index, (a, b)) in a_items.iter().zip(b_items).enumerate() {
                differ(a, b, format!("{at}/{index}"), differences);
            }
        }
        _ if a != b => differences.push(format!("{at}: {a} | {b}")),
        _ => {}
    }
}

/// The number right before the first ` unit` in `text` (`records in`,
/// `interval ticks`).
fn count_before(text: &str, unit: &str) -> u64 {
    let at = text
        .find(&format!(" {unit}"))
        .unwrap_or_else(|| panic!("no `{unit}` in:\n{text}"));
    text[..at]
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no number before `{unit}` in:\n{text}"))
}

/// The records `memtrace record` said it recorded, from its last line.
fn recorded(finished: &Finished) -> u64 {
    let line = finished
        .stderr()
        .into_iter()
        .find(|line| line.starts_with("memtrace: recorded "))
        .unwrap_or_else(|| panic!("no rate line:\n{}", finished.transcript()))
        .to_owned();
    count_before(&line, "records in")
}

/// Records into `dir`/`name`.mtc with `options` (memtrace's options, `--`
/// and the command); returns the capture and what memtrace printed.
fn record(dir: &Path, name: &str, options: &[&str]) -> (PathBuf, Finished) {
    let capture = dir.join(format!("{name}.mtc"));
    let finished = run(
        &Argv::new()
            .words("record -o")
            .arg(capture.to_str().unwrap())
            .args(options),
        Duration::from_secs(120),
    );
    (capture, finished)
}

/// Records a memops script with `--json -`, and returns the capture and
/// what memtrace printed.
fn record_memops(dir: &Path, script: &str, extra: &[&str]) -> (PathBuf, Finished) {
    let workloads = ensure_built().expect("workloads build");
    record(
        dir,
        "memops",
        &Argv::new()
            .args(extra)
            .words("--json - -q -i 0.2 --")
            .arg(workloads.memops.to_str().unwrap())
            .words(script),
    )
}

#[test]
fn a_recorded_c_workload_is_traced_as_live_and_its_capture_is_complete() {
    let dir = scratch();
    let (capture, finished) = record_memops(
        dir.path(),
        "map A 48M ; touch A 0 48M ; free A 0 16M ; hold 1",
        &[],
    );
    finished.assert_code(0);
    // The live trace is what it is without recording.
    let last: Value = finished
        .snapshots()
        .last()
        .cloned()
        .expect("a final snapshot");
    assert!(number(&last, "/faults/bytes") >= 48 * MIB, "{last}");
    assert_eq!(number(&last, "/madvise/MADV_FREE/bytes"), 16 * MIB);
    let records = recorded(&finished);
    assert!(
        records >= 48 * MIB / 4096 / 64,
        "{records} records for 12288 faults"
    );

    let reported = report(&capture);
    reported.assert_code(0);
    let text = reported.stdout().join("\n");
    // Every record the session took in is in the capture: as many of the
    // workload's events as the live trace counted.
    assert_eq!(count_before(&text, "records in"), records, "{text}");
    let pid = number(&last, "/pid");
    let events = text
        .lines()
        .find_map(|line| line.strip_prefix(&format!("pid {pid}: ")))
        .unwrap_or_else(|| panic!("no line for pid {pid}:\n{text}"));
    assert_eq!(
        count_before(events, "event records"),
        number(&last, "/records/seen"),
        "{text}"
    );
    // Every stack sample's unwound stack, which cannot be unwound again
    // once the binaries are gone.
    let samples = count_before(events, "stack samples");
    assert!(samples > 0, "{text}");
    assert_eq!(
        count_before(&text, "unwound from samples"),
        samples,
        "{text}"
    );
    assert!(count_before(&text, "interval ticks") >= 3, "{text}");
    assert!(count_before(&text, "answers from /proc") > 0, "{text}");
    assert!(count_before(&text, "kernel counter readings") > 0, "{text}");
    assert!(text.contains("stopped: TargetExited"), "{text}");
    assert!(text.contains("memops"), "the command line: {text}");
    assert!(text.ends_with("the capture is complete"), "{text}");
}

#[test]
fn a_recorded_fork_workload_keeps_the_childs_records() {
    let workloads = ensure_built().expect("workloads build");
    let dir = scratch();
    let (capture, finished) = record(
        dir.path(),
        "forks",
        &Argv::new()
            .words("--follow-forks --json - -q -i 0.2 --")
            .arg(workloads.many_threads.to_str().unwrap())
            .words("--threads 4 --mib 16"),
    );
    finished.assert_code(0);
    let child = finished
        .stdout()
        .into_iter()
        .find(|line| line.starts_with("{\"child\""))
        .and_then(|line| serde_json::from_str::<Value>(line).ok())
        .and_then(|said| said["child"].as_u64())
        .expect("the child's line");
    let reported = report(&capture);
    reported.assert_code(0);
    let text = reported.stdout().join("\n");
    assert_eq!(count_before(&text, "records in"), recorded(&finished));
    // The child's events, as many as its live trace counted.
    let child_last = finished
        .snapshots()
        .into_iter()
        .rfind(|snapshot| snapshot["pid"].as_u64() == Some(child))
        .unwrap_or_else(|| panic!("child {child} not followed:\n{}", finished.transcript()));
    let events = text
        .lines()
        .find_map(|line| line.strip_prefix(&format!("pid {child}: ")))
        .unwrap_or_else(|| panic!("no line for pid {child}:\n{text}"));
    assert_eq!(
        count_before(events, "event records"),
        number(&child_last, "/records/seen"),
        "{text}"
    );
    assert!(text.ends_with("the capture is complete"), "{text}");
}

#[test]
fn a_report_of_a_c_workload_that_forks_is_the_live_run_figure_for_figure() {
    let dir = scratch();
    let (capture, finished) = record_memops(
        dir.path(),
        "map A 48M ; touch A 0 48M ; free A 0 16M ; fork_touch A 16M 8M 1 ; \
         dontneed A 24M 8M ; unmap A 40M 8M ; hold 1",
        &["--follow-forks"],
    );
    finished.assert_code(0);
    let snapshots = finished.snapshots();
    assert!(
        snapshots
            .iter()
            .any(|snapshot| snapshot["pid"] != snapshots[0]["pid"]),
        "the child was not followed"
    );
    assert!(assert_replayed_as_live(&finished, &capture) >= 5);
}

#[test]
fn a_report_of_a_go_program_that_execs_is_the_live_run_figure_for_figure() {
    let workloads = ensure_built().expect("workloads build");
    let dir = scratch();
    // `env` execs the Go program: the capture holds an exec, a Go heap
    // and the runtime's MADV_DONTNEED.
    let (capture, finished) = record(
        dir.path(),
        "go",
        &Argv::new()
            .words("--json - -q -i 0.3 -- env GODEBUG=madvdontneed=1")
            .arg(workloads.goheap.to_str().unwrap())
            .words("-alloc-mib 256 -hold 1s"),
    );
    finished.assert_code(0);
    let last = finished
        .snapshots()
        .last()
        .cloned()
        .expect("a final snapshot");
    assert_eq!(last["command"], "goheap", "{last}");
    assert!(number(&last, "/released_bytes/MADV_DONTNEED") > 0, "{last}");
    assert!(assert_replayed_as_live(&finished, &capture) >= 3);
}

#[test]
fn a_report_of_an_oom_kill_is_the_live_run_figure_for_figure() {
    let workloads = ensure_built().expect("workloads build");
    let cgroup = MemoryCgroup::new("memtrace-record-oom");
    cgroup.max(32 * MIB);
    let script = format!(
        "{} {} map A 128M \\; touch A 0 128M \\; hold 1",
        cgroup.enter(),
        workloads.memops.display()
    );
    let dir = scratch();
    let (capture, finished) = record(
        dir.path(),
        "oom",
        &Argv::new()
            .words("--json - -q -i 0.2 -- sh -c")
            .arg(&script),
    );
    finished.assert_code(0);
    let last = finished
        .snapshots()
        .last()
        .cloned()
        .expect("a final snapshot");
    assert_eq!(last["state"], "oom_killed", "{}", finished.transcript());
    assert!(assert_replayed_as_live(&finished, &capture) >= 1);
}

#[test]
fn a_capture_killed_mid_run_reports_what_it_holds_and_where_it_ends() {
    let workloads = ensure_built().expect("workloads build");
    let dir = scratch();
    let capture = dir.path().join("killed.mtc");
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("record -o")
            .arg(capture.to_str().unwrap())
            .words("--json - -q -i 0.2 --")
            .arg(workloads.memops.to_str().unwrap())
            .words("map A 32M ; touch A 0 32M ; hold 30"),
    );
    let started = tracing.wait_for(
        Duration::from_secs(30),
        |line| matches!(line, Line::Stderr(text) if text.starts_with("memtrace: started pid ")),
    );
    let Line::Stderr(started) = started else {
        unreachable!("matched above")
    };
    let workload: i32 = started["memtrace: started pid ".len()..]
        .split(' ')
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("the workload's pid");
    // A few intervals, each closing a chunk.
    tracing.wait_for_snapshot(|snapshot| number(snapshot, "/faults/bytes") >= 32 * MIB);
    tracing.wait_for_snapshot(|_| true);
    tracing.wait_for_snapshot(|_| true);
    tracing.signal(libc::SIGKILL);
    let killed = tracing.finish(Duration::from_secs(30));
    assert_eq!(killed.status.code(), None, "killed by a signal");
    // The killed memtrace's workload holds on: end it.
    // SAFETY: a plain syscall; the workload is this test's.
    unsafe { libc::kill(workload, libc::SIGKILL) };

    let reported = report(&capture);
    reported.assert_code(0);
    let text = reported.stdout().join("\n");
    assert!(
        text.contains("the capture was cut off without its index")
            || text.contains("the capture was cut off inside a chunk"),
        "{text}"
    );
    let size = fs::metadata(&capture).unwrap().len();
    assert!(text.contains(&format!("its {size} bytes hold ")), "{text}");
    assert!(
        count_before(&text, "records in") >= 32 * MIB / 4096 / 64,
        "{text}"
    );
    assert!(count_before(&text, "interval ticks") >= 2, "{text}");
    assert!(!text.contains("stopped:"), "{text}");
}

#[test]
fn a_capture_cut_at_a_random_byte_reads_to_its_last_whole_chunk() {
    let dir = scratch();
    let (capture, finished) = record_memops(
        dir.path(),
        "map A 32M ; touch A 0 32M ; free A 0 16M ; hold 1",
        &[],
    );
    finished.assert_code(0);
    let bytes = fs::read(&capture).unwrap();
    let whole = report(&capture).stdout().join("\n");
    // Past the first half: well past the header.
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize;
    let cut = bytes.len() / 2 + seed % (bytes.len() / 2);
    let cut_path = dir.path().join("cut.mtc");
    fs::write(&cut_path, &bytes[..cut]).unwrap();
    let reported = report(&cut_path);
    reported.assert_code(0);
    let text = reported.stdout().join("\n");
    assert!(
        text.contains("the capture was cut off")
            && text.contains(&format!("its {cut} bytes hold ")),
        "cut at byte {cut} of {}:\n{text}",
        bytes.len()
    );
    let held = count_before(&text, "records in");
    assert!(
        held <= count_before(&whole, "records in"),
        "cut at {cut}: {held} records\n{text}\nwhole:\n{whole}"
    );
    let whole_to: u64 = text
        .split("to byte ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `to byte`:\n{text}"));
    assert!(whole_to <= cut as u64, "{text}");
    // Played back, it reports what it holds and says where it stops; cut
    // inside its first chunk, it holds nothing to play, and says so.
    let played = run(
        &Argv::new()
            .words("report --json - -q")
            .arg(cut_path.to_str().unwrap()),
        Duration::from_secs(120),
    );
    let said = played.stderr().join("\n");
    if count_before(&text, "whole chunks") == 0 {
        played.assert_code(1);
        assert!(
            said.contains("it ends before the traced process is named"),
            "{said}"
        );
        return;
    }
    played.assert_code(0);
    assert!(
        said.contains(&format!("its {cut} bytes hold "))
            && said.contains("what became of the process after it is not known"),
        "{said}"
    );
    assert!(!played.snapshots().is_empty(), "{}", played.transcript());
}

#[test]
fn a_capture_from_a_newer_memtrace_is_refused_in_one_line() {
    let dir = scratch();
    let (capture, finished) = record_memops(dir.path(), "map A 8M ; touch A 0 8M", &[]);
    finished.assert_code(0);
    let mut bytes = fs::read(&capture).unwrap();
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    bytes[8..10].copy_from_slice(&(version + 1).to_le_bytes());
    let newer = dir.path().join("newer.mtc");
    fs::write(&newer, &bytes).unwrap();
    let reported = report(&newer);
    reported.assert_code(14);
    assert_eq!(
        reported.stderr(),
        [format!(
            "memtrace: capture {}: the capture is format version {}, newer than this memtrace \
             reads (up to {version}): report it with a newer memtrace",
            newer.display(),
            version + 1
        )]
    );
    assert!(reported.stdout().is_empty());
}

#[test]
fn corrupt_bytes_in_a_capture_exit_10_in_one_line() {
    let dir = scratch();
    let (capture, finished) = record_memops(dir.path(), "map A 8M ; touch A 0 8M", &[]);
    finished.assert_code(0);
    let bytes = fs::read(&capture).unwrap();
    for (name, at) in [("body", bytes.len() / 2), ("end", bytes.len() - 3)] {
        let mut corrupt = bytes.clone();
        corrupt[at] ^= 0x5a;
        let path = dir.path().join(format!("{name}.mtc"));
        fs::write(&path, &corrupt).unwrap();
        let reported = report(&path);
        reported.assert_code(10);
        let stderr = reported.stderr();
        assert_eq!(stderr.len(), 1, "{}", reported.transcript());
        assert!(
            stderr[0].starts_with(&format!(
                "memtrace: capture {}: corrupt capture at byte ",
                path.display()
            )),
            "{}",
            stderr[0]
        );
        // Played back: whatever it holds before the bad bytes is reported
        // (nothing when they are in its first chunk), then the same line,
        // and the same exit code.
        let played = run(
            &Argv::new().words("report -q").arg(path.to_str().unwrap()),
            Duration::from_secs(60),
        );
        played.assert_code(10);
        let last = played.stderr().last().cloned().unwrap_or_default();
        let said = &stderr[0][..stderr[0].find(" at byte ").unwrap()];
        assert!(last.starts_with(said), "{}", played.transcript());
    }
    // Not a capture at all.
    let reported = report(&ensure_built().unwrap().memops);
    reported.assert_code(10);
    assert!(reported.stderr()[0]
        .ends_with("not a memtrace capture: it does not start with the capture magic"));
}

#[test]
fn a_size_limit_keeps_the_capture_small_and_says_so() {
    let dir = scratch();
    let limit = 16 * 1024;
    let (capture, finished) = record_memops(
        dir.path(),
        "map A 64M ; touch A 0 64M ; free A 0 32M ; hold 1",
        &["--max-size", "16K"],
    );
    finished.assert_code(0);
    let size = fs::metadata(&capture).unwrap().len();
    assert!(size <= limit, "{size} bytes over a {limit}-byte limit");
    let rate = finished
        .stderr()
        .into_iter()
        .find(|line| line.starts_with("memtrace: recorded "))
        .expect("the rate line")
        .to_owned();
    assert!(rate.contains("its size limit was reached"), "{rate}");
    let reported = report(&capture);
    reported.assert_code(0);
    let text = reported.stdout().join("\n");
    assert!(
        text.contains(&format!(
            "note: the capture reached its size limit of {limit} bytes at "
        )),
        "{text}"
    );
    assert!(text.ends_with("the capture is complete"), "{text}");
}

/// The frames of each row of `top_stacks`, in order.
fn top_stack_frames(snapshot: &Value) -> Vec<Value> {
    snapshot["top_stacks"]
        .as_array()
        .unwrap_or_else(|| panic!("no top_stacks in {snapshot}"))
        .iter()
        .map(|row| row["frames"].clone())
        .collect()
}

/// `memtrace report --json - -q --pprof PROFILE CAPTURE`, in a mount
/// namespace of its own where an empty directory covers every workload:
/// the programs, their libraries, the library's debug file. The script
/// fails if the programs can still be seen.
fn report_where_the_workloads_are_gone(capture: &Path, profile: &Path) -> Finished {
    let workloads = ensure_built().expect("workloads build");
    let output = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs memtrace-hides-the-workloads \"$1\" && ! test -e \"$2\" || exit 99; \
             exec \"$3\" report --json - -q --pprof \"$4\" \"$5\"",
        )
        .arg("sh")
        .arg(build_dir())
        .arg(&workloads.split_user)
        .arg(binary())
        .arg(profile)
        .arg(capture)
        .output()
        .expect("run unshare");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let mut lines: Vec<Line> = text(&output.stdout)
        .lines()
        .map(|line| Line::Stdout(line.to_owned()))
        .collect();
    lines.extend(
        text(&output.stderr)
            .lines()
            .map(|line| Line::Stderr(line.to_owned())),
    );
    Finished {
        status: output.status,
        lines,
    }
}

/// Whether `profile` has split_fill at its fault line, which only the
/// library's separate debug file knows.
fn split_fill_at_its_line(profile: &Path) -> Result<(), String> {
    let traces = gotool::pprof(&[
        "-traces",
        "-lines",
        "-sample_index=resident_space",
        profile.to_str().unwrap(),
    ]);
    let position = format!("splitlib.c:{}", split_fault_line());
    traces
        .lines()
        .any(|line| line.contains("split_fill") && line.trim_end().ends_with(&position))
        .then_some(())
        .ok_or_else(|| format!("split_fill is not at {position} in:\n{traces}"))
}

#[test]
fn a_capture_names_its_stacks_where_the_binaries_and_debug_files_are_gone() {
    let workloads = ensure_built().expect("workloads build");
    let dir = scratch();
    let (capture, live) = record(
        dir.path(),
        "split",
        &Argv::new()
            .words("--json - -q -i 0.3 --debug-dir")
            .arg(workloads.split_debug_dir.to_str().unwrap())
            .arg("--")
            .arg(workloads.split_user.to_str().unwrap())
            .words("--hold 1"),
    );
    live.assert_code(0);
    let live_last = last_running(&live.snapshots());
    assert!(
        !rows_with(&live_last, "top_stacks", "split_fill").is_empty(),
        "{live_last}"
    );

    let profile = dir.path().join("split.pb.gz");
    let replayed = report_where_the_workloads_are_gone(&capture, &profile);
    replayed.assert_code(0);
    // Every stack named as it was live, though nothing it was named from is
    // there.
    let played_last = last_running(&replayed.snapshots());
    assert_eq!(
        top_stack_frames(&played_last),
        top_stack_frames(&live_last),
        "{}",
        replayed.transcript()
    );
    // Down to the source line, which only the debug file had.
    if let Err(missing) = split_fill_at_its_line(&profile) {
        panic!("{missing}");
    }
    let contents = report(&capture);
    contents.assert_code(0);
    let said = contents.stdout().join("\n");
    assert!(count_before(&said, "offsets named") > 0, "{said}");
}

/// Records split_user faulting 256 MiB with `options`, one interval a
/// minute, and kills memtrace before its first interval: the capture holds
/// the chunks its records filled (a chunk closes at 1 MiB), and no name,
/// since nothing was reported yet.
fn killed_before_its_first_interval(dir: &Path, name: &str, options: &[&str]) -> PathBuf {
    let workloads = ensure_built().expect("workloads build");
    let capture = dir.join(format!("{name}.mtc"));
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("record -o")
            .arg(capture.to_str().unwrap())
            .args(options)
            .words("-q -i 60 --debug-dir")
            .arg(workloads.split_debug_dir.to_str().unwrap())
            .arg("--")
            .arg(workloads.split_user.to_str().unwrap())
            .words("--pages 65536 --hold 120"),
    );
    let done = tracing.wait_for(
        Duration::from_secs(60),
        |line| matches!(line, Line::Stdout(text) if text.contains("\"split_fill\"")),
    );
    let Line::Stdout(done) = done else {
        unreachable!("matched above")
    };
    let done: Value = serde_json::from_str(&done).expect("split_user's line is JSON");
    let workload = i32::try_from(number(&done, "/pid")).expect("a pid");
    // Until most of the faults are in closed chunks.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let said = report(&capture).stdout().join("\n");
        if said.contains("its ") && count_before(&said, "records in") >= 32_768 {
            assert!(count_before(&said, "interval ticks") == 0, "{said}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{said}");
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing.signal(libc::SIGKILL);
    let killed = tracing.finish(Duration::from_secs(30));
    assert_eq!(killed.status.code(), None, "killed by a signal");
    // SAFETY: a plain syscall; the workload is this test's.
    unsafe { libc::kill(workload, libc::SIGKILL) };
    capture
}

/// Issue 14's `--embed-debug`: a recording killed before it named
/// anything is named from what it embedded as the code was mapped, where
/// the program, its library and the library's debug file are all gone,
/// down to the line; the same recording without it is not.
#[test]
fn a_capture_killed_before_naming_anything_is_named_from_what_it_embedded() {
    let dir = scratch();
    let embedded = killed_before_its_first_interval(dir.path(), "embedded", &["--embed-debug"]);
    let contents = report(&embedded);
    contents.assert_code(0);
    let said = contents.stdout().join("\n");
    assert_eq!(count_before(&said, "offsets named"), 0, "{said}");
    // split_user, libsplit.so, its debug file, the C library, the loader.
    assert!(count_before(&said, "files embedded") >= 5, "{said}");

    let profile = dir.path().join("embedded.pb.gz");
    let replayed = report_where_the_workloads_are_gone(&embedded, &profile);
    replayed.assert_code(0);
    let last = replayed.snapshots().pop().expect("a report");
    let rows = rows_with(&last, "top_stacks", "split_fill");
    assert!(!rows.is_empty(), "{}", replayed.transcript());
    for caller in ["load_tiles", "main"] {
        assert!(
            rows.iter().any(|row| row["frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == caller)),
            "{caller} not named: {rows:?}"
        );
    }
    if let Err(missing) = split_fill_at_its_line(&profile) {
        panic!("{missing}");
    }

    // Without --embed-debug, nothing names it there.
    let bare = killed_before_its_first_interval(dir.path(), "bare", &[]);
    let profile = dir.path().join("bare.pb.gz");
    let replayed = report_where_the_workloads_are_gone(&bare, &profile);
    replayed.assert_code(0);
    let last = replayed.snapshots().pop().expect("a report");
    assert!(
        rows_with(&last, "top_stacks", "split_fill").is_empty(),
        "{last}"
    );
    assert!(split_fill_at_its_line(&profile).is_err());
}

/// The sum of `grown_bytes` over a snapshot's growth rows.
fn grown(snapshot: &Value) -> i64 {
    snapshot["growth"]
        .as_array()
        .unwrap_or_else(|| panic!("no growth in {snapshot}"))
        .iter()
        .map(|row| row["grown_bytes"].as_i64().expect("grown_bytes"))
        .sum()
}

#[test]
fn a_report_stops_at_a_moment_and_measures_growth_from_another() {
    let dir = scratch();
    let (capture, live) = record_memops(
        dir.path(),
        "hold 0.6 ; map A 32M ; touch A 0 32M ; hold 1.5 ; map B 16M ; touch B 0 16M ; hold 1.5",
        &[],
    );
    live.assert_code(0);
    let snapshots = live.snapshots();
    // An interval while A is touched and B is not yet.
    let between = snapshots
        .iter()
        .rev()
        .find(|snapshot| {
            let faulted = number(snapshot, "/faults/bytes");
            snapshot["type"] == "interval" && (32 * MIB..40 * MIB).contains(&faulted)
        })
        .unwrap_or_else(|| {
            panic!(
                "no interval between the two touches:\n{}",
                live.transcript()
            )
        })
        .clone();
    let moment = between["elapsed_s"]
        .as_f64()
        .expect("elapsed_s")
        .to_string();

    // As of that moment: the interval's figures, the process running.
    let at = run(
        &Argv::new()
            .words("report --json - -q --at")
            .arg(&moment)
            .arg(capture.to_str().unwrap()),
        Duration::from_secs(120),
    );
    at.assert_code(0);
    let last = at.snapshots().last().cloned().expect("a final snapshot");
    assert_eq!(last["state"], "running", "{last}");
    for figure in ["/faults/bytes", "/model/rss_bytes", "/madvise"] {
        assert_eq!(last.pointer(figure), between.pointer(figure), "{figure}");
    }
    assert!(
        at.stderr().iter().any(|line| line.contains(&format!(
            "as of {:.3} s",
            between["elapsed_s"].as_f64().unwrap()
        ))),
        "{}",
        at.transcript()
    );

    // Growth from that moment is B's 16 MiB; from the first interval it
    // is A's and B's.
    let whole = last_running(&replay(&capture).snapshots());
    assert!(grown(&whole) >= 47 * MIB as i64, "{whole}");
    assert!(whole.get("growth_since_s").is_none(), "{whole}");
    // Half an interval before that one: growth is measured from it.
    let before = (between["elapsed_s"].as_f64().unwrap() - 0.1).to_string();
    let from = run(
        &Argv::new()
            .words("report --json - -q --from")
            .arg(&before)
            .arg(capture.to_str().unwrap()),
        Duration::from_secs(120),
    );
    from.assert_code(0);
    let since = last_running(&from.snapshots());
    let grown_since = grown(&since);
    assert!(
        (16 * MIB as i64..17 * MIB as i64).contains(&grown_since),
        "{grown_since} grown since {before} s: {since}"
    );
    let growth_since = since["growth_since_s"].as_f64().expect("growth_since_s");
    assert!(
        (before.parse::<f64>().unwrap()..=between["elapsed_s"].as_f64().unwrap())
            .contains(&growth_since),
        "{growth_since} is not the interval after {before} s: {since}"
    );

    // A window that is not one is refused on the command line.
    let backwards = run(
        &Argv::new()
            .words("report --from 2 --to 1")
            .arg(capture.to_str().unwrap()),
        Duration::from_secs(60),
    );
    backwards.assert_code(2);
}

#[test]
fn a_report_of_a_go_program_compares_with_its_recorded_heap_profiles() {
    let workloads = ensure_built().expect("workloads build");
    let workload = Running::start(
        &workloads.goheap,
        &words("-alloc-mib 96 -pprof 127.0.0.1:0 -wait -hold 60s"),
        &[("GODEBUG", "madvdontneed=0")],
    );
    let dir = scratch();
    let capture = dir.path().join("goheap.mtc");
    let live = attach_with_heap_profile(
        workload,
        "released",
        &["record", "-o", capture.to_str().unwrap()],
    );
    let last = live.snapshots().last().cloned().expect("a final snapshot");
    assert!(
        number(&last, "/go_heap/inuse_space_bytes") > 0,
        "the live trace took no heap profile: {last}"
    );

    // Without the program (it is gone by the time anyone reports), the
    // report compares with the heap profiles the recording took, where it
    // took them: every snapshot as live, heap figures and all.
    let snapshots = assert_replayed_as_live(&live, &capture);
    assert!(snapshots >= 3, "{snapshots} snapshots");
    let contents = report(&capture);
    let said = contents.stdout().join("\n");
    assert!(count_before(&said, "Go heap profiles") >= 2, "{said}");
}

#[test]
fn a_report_of_a_cgroup_is_the_live_run_figure_for_figure() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap();
    let cgroup = MemoryCgroup::new("memtrace-record-cgroup");
    // `;` is a word of memops' own, which the shell must not see.
    let start = |script: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} {memops} {}",
                cgroup.enter(),
                script.replace(';', "\\;")
            ))
            .spawn()
            .expect("start a workload in the cgroup")
    };
    let mut before = start("map A 16M ; touch A 0 16M ; hold 3");
    let procs = cgroup.path().join("cgroup.procs");
    while !fs::read_to_string(&procs)
        .unwrap_or_default()
        .lines()
        .any(|pid| pid == before.id().to_string())
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = scratch();
    let capture = dir.path().join("cgroup.mtc");
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("record -o")
            .arg(capture.to_str().unwrap())
            .words("--cgroup")
            .arg(cgroup.path().to_str().unwrap())
            .words("--json - -q -i 0.3"),
    );
    tracing.wait_attached();
    // One that comes into the cgroup while it is traced.
    let mut after = start("map B 8M ; touch B 0 8M ; hold 1");
    assert!(after.wait().unwrap().success());
    assert!(before.wait().unwrap().success());
    cgroup.remove();
    let live = tracing.finish(Duration::from_secs(60));
    live.assert_code(0);
    let whole = live
        .snapshots()
        .into_iter()
        .filter(|snapshot| snapshot["scope"] == "cgroup")
        .count();
    assert!(whole >= 3, "{}", live.transcript());

    // Reported after the cgroup and its processes are gone: every line as
    // live, the cgroup's and each process's.
    assert_replayed_as_live(&live, &capture);
}

#[test]
fn a_report_of_a_container_is_the_live_run_figure_for_figure() {
    let container = Container::run(Image::get(), "memtrace-record-mix", 256 * MIB, &[MIX, "2"]);
    container.wait_for_log("mix: round 1", Duration::from_secs(60));
    let dir = scratch();
    let capture = dir.path().join("container.mtc");
    let mut tracing = Tracing::start(
        &Argv::new()
            .words("record -o")
            .arg(capture.to_str().unwrap())
            .words("--container")
            .arg(container.name())
            .words("--json - -q -i 0.5"),
    );
    tracing.wait_attached();
    assert_eq!(
        container.wait_exit(Duration::from_secs(60)),
        0,
        "{}",
        container.logs()
    );
    let live = tracing.finish(Duration::from_secs(60));
    live.assert_code(0);
    drop(container);
    // Reported where the container, its image's binaries and its runtime's
    // name for it are all gone: every line as live, stacks named from the
    // names the recording resolved.
    let snapshots = assert_replayed_as_live(&live, &capture);
    assert!(snapshots >= 3, "{snapshots} snapshots");
}

#[test]
fn a_report_measures_growth_against_another_capture_of_the_program() {
    let dir = scratch();
    let workloads = ensure_built().expect("workloads build");
    let record_script = |name: &str, script: &str| {
        let (capture, finished) = record(
            dir.path(),
            name,
            &Argv::new()
                .words("-q -i 0.2 --")
                .arg(workloads.memops.to_str().unwrap())
                .words(script),
        );
        finished.assert_code(0);
        capture
    };
    // Yesterday's run touched A; today's touches A and, through the same
    // code, B besides.
    let base = record_script("base", "map A 16M ; touch A 0 16M ; hold 0.5");
    let today = record_script(
        "today",
        "map A 16M ; touch A 0 16M ; map B 8M ; touch B 0 8M ; hold 0.5",
    );
    let compared = run(
        &Argv::new()
            .words("report --json - -q --diff-base")
            .arg(base.to_str().unwrap())
            .arg(today.to_str().unwrap()),
        Duration::from_secs(120),
    );
    compared.assert_code(0);
    let last = last_running(&compared.snapshots());
    assert_eq!(last["growth_base"], base.to_str().unwrap(), "{last}");
    // Stacks are matched by their names (their ids are the other run's):
    // today holds 8 MiB more under the touching code than yesterday did.
    let touched: i64 = last["growth"]
        .as_array()
        .expect("growth rows")
        .iter()
        .filter(|row| {
            row["frames"]
                .as_array()
                .is_some_and(|frames| frames.iter().any(|frame| frame == "op_touch"))
        })
        .map(|row| row["grown_bytes"].as_i64().expect("grown_bytes"))
        .sum();
    assert_eq!(touched, 8 * MIB as i64, "{last}");

    // A base with bad bytes in it would understate what it held: refused,
    // as a corrupt capture, before anything is reported.
    let mut bytes = fs::read(&base).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    let corrupt = dir.path().join("corrupt-base.mtc");
    fs::write(&corrupt, bytes).unwrap();
    let refused = run(
        &Argv::new()
            .words("report -q --diff-base")
            .arg(corrupt.to_str().unwrap())
            .arg(today.to_str().unwrap()),
        Duration::from_secs(120),
    );
    refused.assert_code(10);
    assert!(refused.stdout().is_empty(), "{}", refused.transcript());
}
