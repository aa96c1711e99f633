//! The four stories memtrace exists for (../shared/seeds), each reproduced
//! by a small program and answered by one memtrace command, with the facts
//! the verdict must state:
//!
//! 1. pprof says little, top says a lot: Go returning memory with MADV_FREE;
//! 2. RSS and the address space that never shrink;
//! 3. a goroutine leak (a ticker goroutine per request);
//! 4. a request-driven leak, then the OOM kill it ends in;
//!
//! the first story's own false alarm (a one-off allocation called a leak,
//! because memtrace's heap-profile fetches made the program allocate), and
//! the program's own heap endpoint misbehaving while memtrace traces.

use std::time::Duration;

use memtrace_tests::{
    kernel::{within, MemoryCgroup},
    memtrace::{
        http_ok, number, run, size_before, verdict, words, Argv, FakeEndpoint, Finished, Tracing,
    },
    running::{attach_with_heap_profile, heap_endpoint, Running},
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;
const MINUTE: Duration = Duration::from_secs(60);

fn final_snapshot(finished: &Finished) -> Value {
    let snapshots = finished.snapshots();
    let last = snapshots.last().cloned().expect("snapshots");
    assert_eq!(last["type"], "final");
    last
}

#[test]
fn pprof_says_little_top_says_a_lot() {
    let workloads = ensure_built().expect("workloads build");
    let workload = Running::start(
        &workloads.goheap,
        &words("-alloc-mib 256 -pprof 127.0.0.1:0 -wait -hold 60s"),
        &[("GODEBUG", "madvdontneed=0")],
    );
    let finished = attach_with_heap_profile(workload, "released", &[]);
    let last = final_snapshot(&finished);
    let rss = number(&last, "/kernel/rss_bytes");
    let lazyfree = number(&last, "/kernel/lazyfree_bytes");
    let inuse = number(&last, "/go_heap/inuse_space_bytes");
    assert!(
        inuse * 4 < rss,
        "pprof in use {inuse} should be far below RSS {rss}"
    );
    assert!(lazyfree >= 250 * MIB, "LazyFree {lazyfree}");
    assert_eq!(last["runtime"]["go_settings"]["GODEBUG"], "madvdontneed=0");
    let text = verdict(&finished);
    assert!(text.contains("The Go heap profile counts"), "{text}");
    let gap = size_before(&text, " is lazily freed").unwrap_or_else(|| panic!("{text}"));
    assert!(within(gap, lazyfree, 1.0), "{text}");
    assert!(text.contains("GODEBUG=madvdontneed=1"), "{text}");
}

#[test]
fn the_address_space_that_never_shrinks() {
    let workloads = ensure_built().expect("workloads build");
    let finished = run(
        &Argv::new()
            .words("--json - -q -i 0.3 -- env GODEBUG=madvdontneed=1")
            .arg(workloads.goheap.to_str().unwrap())
            .words("-alloc-mib 512 -hold 1.5s"),
        MINUTE,
    );
    finished.assert_code(0);
    let released: Value = finished
        .stdout()
        .iter()
        .find(|line| line.contains("\"event\":\"released\""))
        .and_then(|line| serde_json::from_str(line).ok())
        .expect("goheap's released event");
    let snapshot = finished
        .snapshots()
        .into_iter()
        .rev()
        .find(|s| s["state"] == "running")
        .expect("a running snapshot");
    let rss = number(&snapshot, "/kernel/rss_bytes");
    let mapped = number(&snapshot, "/address_space_bytes");
    assert!(
        mapped >= 512 * MIB && mapped > 4 * rss,
        "mapped {mapped}, RSS {rss}"
    );
    // What the runtime calls released is what memtrace saw given back.
    let heap_released = released["HeapReleased"].as_u64().unwrap();
    let dontneed = number(&snapshot, "/madvise/MADV_DONTNEED/bytes");
    assert!(
        within(dontneed, heap_released, 1.0),
        "{dontneed} vs HeapReleased {heap_released}"
    );
    let text = verdict(&finished);
    assert!(
        text.contains("of address space stays mapped but only"),
        "{text}"
    );
    assert!(text.contains("with MADV_DONTNEED"), "{text}");
}

#[test]
fn a_goroutine_leak() {
    let workloads = ensure_built().expect("workloads build");
    let workload = Running::start(
        &workloads.tickerleak,
        &words("-requests 4000 -concurrency 4 -interval 1ms -wait -hold 60s"),
        &[],
    );
    let finished = attach_with_heap_profile(workload, "requests_done", &[]);
    let last = final_snapshot(&finished);
    // 4000 leaked goroutines: their stacks are what grew most.
    let top = &last["growers"][0];
    assert_eq!(
        top["responsible"], "goroutine stacks (runtime.malg)",
        "{}",
        last["growers"]
    );
    assert!(
        top["grown_bytes"].as_i64().unwrap() >= 3 * MIB as i64,
        "{top}"
    );
    let text = verdict(&finished);
    assert!(text.contains("goroutine stacks (runtime.malg)"), "{text}");
    assert!(text.contains("goroutine leak is likely"), "{text}");
    assert!(text.contains("time.NewTicker"), "{text}");
}

#[test]
fn a_request_driven_leak() {
    let workloads = ensure_built().expect("workloads build");
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.csv");
    let finished = run(
        &Argv::new()
            .words("--json - -q -i 0.4 --history")
            .arg(history.to_str().unwrap())
            .words("--")
            .arg(workloads.reqleak.to_str().unwrap())
            // 12 s of requests: a trend needs at least 10 s of history.
            .words("-requests 3000 -rate 250 -body-kib 64 -hold 1s"),
        MINUTE,
    );
    finished.assert_code(0);
    let last = final_snapshot(&finished);
    assert_eq!(last["trend"]["kind"], "growing", "{}", last["trend"]);
    assert!(last["trend"]["bytes_per_minute"].as_f64().unwrap() > 100.0 * MIB as f64);
    let text = verdict(&finished);
    assert!(text.contains("a leak suspect"), "{text}");
    assert!(text.contains("what grew most: main.remember"), "{text}");
    let csv = std::fs::read_to_string(&history).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows.len() >= 10, "{csv}");
    assert!(rows[0].starts_with("elapsed_s,"));
}

/// Attaches memtrace (`-i 0.25 -d 12`, with `--go-pprof` at the workload's
/// endpoint when `heap_profile`) to goheap keeping 32 MiB it allocated
/// once, and returns what it said.
fn one_off_allocation(heap_profile: bool) -> Finished {
    let workloads = ensure_built().expect("workloads build");
    let mut workload = Running::start(
        &workloads.goheap,
        &[
            "-alloc-mib",
            "32",
            "-steps=",
            "-pprof",
            "127.0.0.1:0",
            "-wait",
            "-hold",
            "60s",
        ],
        &[],
    );
    let (pid, url) = heap_endpoint(&mut workload);
    let mut args = vec!["-p", &pid, "-i", "0.25", "-d", "12", "--json", "-", "-q"];
    if heap_profile {
        args.extend(["--go-pprof", &url]);
    }
    let mut tracing = Tracing::start(&args);
    tracing.wait_attached();
    workload.send_line("go");
    let finished = tracing.finish(MINUTE);
    finished.assert_code(0);
    finished
}

#[test]
fn a_one_off_allocation_is_no_leak_with_or_without_the_heap_profile() {
    // The first story's own false alarm: the program allocated once and
    // idled, and memtrace's heap-profile fetches (each one makes it build
    // and gzip a profile) read as a leak.
    let with = one_off_allocation(true);
    let without = one_off_allocation(false);
    let trends: Vec<Value> = [&with, &without]
        .map(|finished| final_snapshot(finished)["trend"].clone())
        .to_vec();
    for (finished, trend) in [&with, &without].iter().zip(&trends) {
        let text = verdict(finished);
        assert!(!text.contains("leak suspect"), "{text}");
        assert!(!text.contains("compress/flate"), "{text}");
        assert_ne!(trend["kind"], "growing", "{trend}");
        assert_eq!(trend["needs_seconds"], 0.0, "12 s is long enough: {trend}");
    }
    assert_eq!(trends[0]["kind"], trends[1]["kind"], "{trends:?}");
    assert!(final_snapshot(&with)["go_heap"].is_object());
}

#[test]
fn the_oom_kill_it_ends_in_is_caught() {
    let workloads = ensure_built().expect("workloads build");
    let cgroup = MemoryCgroup::new("memtrace-oom");
    cgroup.max(160 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let (json, profile) = (dir.path().join("out.jsonl"), dir.path().join("heap.pb.gz"));
    let script = format!(
        "{} {} -forever -rate 300 -body-kib 64",
        cgroup.enter(),
        workloads.reqleak.display()
    );
    let finished = run(
        &Argv::new()
            .words("--json")
            .arg(json.to_str().unwrap())
            .words("--pprof")
            .arg(profile.to_str().unwrap())
            .words("-q -i 0.4 -- sh -c")
            .arg(&script),
        Duration::from_secs(120),
    );
    finished.assert_code(0);
    let lines = std::fs::read_to_string(&json).unwrap();
    let snapshots = memtrace_tests::memtrace::snapshots_in(lines.lines());
    let last = snapshots.last().unwrap();
    assert_eq!(last["type"], "final");
    assert_eq!(last["state"], "oom_killed");
    let limited = snapshots
        .iter()
        .find_map(|s| s["cgroup"]["max_bytes"].as_u64())
        .expect("the cgroup's limit shown");
    assert_eq!(limited, 160 * MIB);
    assert!(std::fs::metadata(&profile).unwrap().len() > 0);
    let text = verdict(&finished);
    assert!(text.contains("killed by the OOM killer"), "{text}");
    assert!(text.contains("main.remember"), "{text}");
}

#[test]
fn a_misbehaving_heap_endpoint_is_said_and_tracing_goes_on() {
    let workloads = ensure_built().expect("workloads build");
    let memops = workloads.memops.to_str().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let silent = FakeEndpoint::start(None);
    let html = FakeEndpoint::start(Some(http_ok("text/html", b"<html>not a profile</html>")));
    let huge = FakeEndpoint::start(Some(http_ok(
        "application/octet-stream",
        &vec![0x1f; 80 << 20],
    )));
    let cases = [
        (
            format!("http://{closed}/debug/pprof/heap"),
            "connection refused",
        ),
        (silent.url(), "timed out"),
        (html.url(), "not a"),
        (huge.url(), "larger than the limit"),
    ];
    for (url, says) in cases {
        let finished = run(
            &Argv::new()
                .words("--go-pprof")
                .arg(&url)
                .words("--json - -q -i 0.3 --")
                .arg(memops)
                .words("map A 8M ; touch A 0 8M ; hold 7"),
            MINUTE,
        );
        finished.assert_code(0);
        let said: Vec<&str> = finished
            .stderr()
            .into_iter()
            .filter(|line| line.contains("--go-pprof"))
            .collect();
        assert_eq!(
            said.len(),
            1,
            "said once: {said:?}\n{}",
            finished.transcript()
        );
        assert!(
            said[0].contains(says) && said[0].contains("tracing goes on"),
            "{}",
            said[0]
        );
        let last = finished.snapshots().last().cloned().unwrap();
        assert_eq!(last["type"], "final");
        assert_eq!(last.get("go_heap"), Some(&Value::Null), "{last}");
        assert!(number(&last, "/faults/count") >= 2048);
    }
}

#[test]
fn a_corrupt_saved_profile_is_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("heap.pb.gz");
    std::fs::write(&path, b"\x1f\x8b\x08\x00garbage").unwrap();
    let output = std::process::Command::new(memtrace_tests::memtrace::binary())
        .args(["--go-pprof", path.to_str().unwrap(), "-p", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("memtrace: ") && stderr.contains("heap.pb.gz"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
