//! Symbolized stacks and the profiles people already read, checked with
//! their real consumers: `go tool pprof` reads the pprof files, Python's XML
//! parser the flame graph, and the folded file adds up to RSS.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use memtrace_tests::{
    gotool::{pprof, top_row},
    kernel::within,
    memtrace::{bytes_at, last_running, number, rows_with, run, words, Argv, Finished},
    workloads::ensure_built,
};
use serde_json::Value;

const MIB: u64 = 1 << 20;

struct Traced {
    finished: Finished,
    dir: tempfile::TempDir,
}

impl Traced {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Traces `program ARGS` with every profile output written.
fn trace(program: &Path, args: &[&str]) -> Traced {
    trace_with(program, args, &[])
}

/// The same, with memtrace `options` besides the outputs.
fn trace_with(program: &Path, args: &[&str], options: &[&str]) -> Traced {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (pprof, folded, svg) = (out("heap.pb.gz"), out("heap.folded"), out("heap.svg"));
    let argv = Argv::new()
        .words("--json - -q -i 0.3 --pprof")
        .arg(&pprof)
        .words("--folded")
        .arg(&folded)
        .words("--flamegraph")
        .arg(&svg)
        .args(options)
        .words("--")
        .arg(program.to_str().unwrap())
        .args(args);
    let finished = run(&argv, Duration::from_secs(120));
    finished.assert_code(0);
    Traced { finished, dir }
}

/// The totals alloc_sites prints for its functions.
fn alloc_sites_totals(finished: &Finished) -> Value {
    finished
        .stdout()
        .iter()
        .find(|line| line.contains("\"load_catalog\""))
        .and_then(|line| serde_json::from_str(line).ok())
        .expect("alloc_sites' totals line")
}

const SITES: [&str; 3] = ["load_catalog", "build_index", "handle_request"];

#[test]
fn c_allocation_sites_are_named_with_their_bytes() {
    let workloads = ensure_built().expect("workloads build");
    let traced = trace(&workloads.alloc_sites, &words("--hold 1"));
    let totals = alloc_sites_totals(&traced.finished);
    let snapshot = last_running(&traced.finished.snapshots());
    let profile = traced.path("heap.pb.gz");
    let profile = profile.to_str().unwrap();
    let top = pprof(&["-top", "-unit=B", "-sample_index=resident_space", profile]);
    for site in SITES {
        let expected = totals[site].as_u64().unwrap();
        let in_use = bytes_at(&snapshot, "top_stacks", site, "in_use_bytes");
        assert!(
            within(in_use, expected, 1.0),
            "{site}: {in_use} resident, did {expected}"
        );
        let (_, cum) = top_row(&top, site).unwrap_or_else(|| panic!("{site} in:\n{top}"));
        assert!(
            within(cum, expected, 1.0),
            "{site}: pprof says {cum}, did {expected}\n{top}"
        );
    }
    // The callers are there too: whole stacks.
    let traces = pprof(&["-traces", "-sample_index=resident_space", profile]);
    for frame in ["load_catalog", "startup", "handle_request", "serve", "main"] {
        assert!(traces.contains(frame), "{frame} missing from:\n{traces}");
    }
    // The folded file adds up to the resident bytes reported at the end.
    let last = traced.finished.snapshots().last().cloned().unwrap();
    let folded = std::fs::read_to_string(traced.path("heap.folded")).unwrap();
    let sum: u64 = folded
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, number(&last, "/model/rss_bytes"));
    assert!(
        folded
            .lines()
            .any(|line| line.contains("startup;load_catalog")),
        "{folded}"
    );
    // The flame graph is well-formed SVG that names the functions.
    let svg = traced.path("heap.svg");
    let parsed = Command::new("python3")
        .args(["-c", "import sys, xml.etree.ElementTree as t; r = t.parse(sys.argv[1]).getroot(); print(r.tag)"])
        .arg(&svg)
        .output()
        .expect("python3 parses the SVG");
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&parsed.stdout).trim(),
        "{http://www.w3.org/2000/svg}svg"
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    for site in SITES {
        assert!(svg.contains(site), "{site} not in the flame graph");
    }
}

#[test]
fn go_allocating_function_is_named() {
    let workloads = ensure_built().expect("workloads build");
    let traced = trace(
        &workloads.goheap,
        &["-alloc-mib", "64", "-steps", "", "-hold", "1s"],
    );
    let snapshot = last_running(&traced.finished.snapshots());
    let in_use = bytes_at(&snapshot, "top_stacks", "main.allocate", "in_use_bytes");
    assert!(in_use >= 64 * MIB, "main.allocate holds {in_use}");
    let profile = traced.path("heap.pb.gz");
    // The 64 MiB are faulted in by main.allocate's own stores, or, where
    // the runtime hands it memory used before, by the runtime zeroing it
    // for main.allocate: which, depends on the heap's past (a GC's timing).
    let top = pprof(&[
        "-top",
        "-unit=B",
        "-nodefraction=0",
        "-focus=^main\\.allocate$",
        profile.to_str().unwrap(),
    ]);
    let (own, _) = top_row(&top, "main.allocate").unwrap_or_else(|| panic!("{top}"));
    // The runtime zeroes other memory for it too (its span metadata, the
    // slice of slices): so the two together hold at least the 64 MiB, and
    // main.allocate's own stores no more than them.
    let zeroed = top_row(&top, "runtime.memclrNoHeapPointers").map_or(0, |(flat, _)| flat);
    assert!(
        own + zeroed >= 64 * MIB * 99 / 100 && own <= 64 * MIB * 101 / 100,
        "main.allocate {own} + zeroed for it {zeroed}\n{top}"
    );
    let traces = pprof(&["-traces", profile.to_str().unwrap()]);
    assert!(
        traces.contains("runtime.mallocgc") && traces.contains("main.main"),
        "{traces}"
    );
}

#[test]
fn snapshots_diff_to_the_growing_function() {
    let workloads = ensure_built().expect("workloads build");
    let dir = tempfile::tempdir().unwrap();
    let memops = workloads.memops.to_str().unwrap();
    let finished = run(
        &Argv::new()
            .words("-q -i 0.25 --pprof-every 0.5 --pprof-dir")
            .arg(dir.path().to_str().unwrap())
            .words("--")
            .arg(memops)
            .words("map A 32M ; touch A 0 8M ; hold 1.2 ; populate_write A 8M 16M ; hold 1.2"),
        Duration::from_secs(60),
    );
    finished.assert_code(0);
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    profiles.sort();
    assert!(profiles.len() >= 3, "snapshots: {profiles:?}");
    let (first, last) = (&profiles[0], &profiles[profiles.len() - 1]);
    let top = pprof(&[
        "-top",
        "-unit=B",
        "-diff_base",
        first.to_str().unwrap(),
        last.to_str().unwrap(),
    ]);
    let (_, grew) = top_row(&top, "op_populate_write").unwrap_or_else(|| panic!("{top}"));
    assert!(
        within(grew, 16 * MIB, 1.0),
        "op_populate_write grew {grew}\n{top}"
    );
    // op_touch did not grow between the two.
    assert!(
        top_row(&top, "op_touch").is_none_or(|(_, cum)| cum < MIB),
        "{top}"
    );
}

#[test]
fn a_stripped_binary_keeps_every_frame_as_module_and_offset() {
    let workloads = ensure_built().expect("workloads build");
    let with_symbols = trace(&workloads.alloc_sites, &words("--hold 0.8"));
    let stripped = trace(&workloads.alloc_sites_stripped, &words("--hold 0.8"));
    let depth = |traced: &Traced, needle: &str| -> usize {
        let snapshot = last_running(&traced.finished.snapshots());
        let row = snapshot["top_stacks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| {
                row["frames"][0].as_str().unwrap().contains(needle) || row["frames"][1] == needle
            })
            .cloned()
            .unwrap_or_else(|| panic!("no stack with {needle}: {snapshot}"));
        row["frames"].as_array().unwrap().len()
    };
    // With symbols the first frame names map_and_fill inlined into
    // load_catalog: two names for one frame.
    let named = depth(&with_symbols, "load_catalog") - 1;
    let anonymous = depth(&stripped, "alloc_sites_stripped+0x");
    assert_eq!(anonymous, named, "a stripped binary's stacks lose no frame");
    // The mapping carries the build id, so pprof can find symbols later.
    let raw = pprof(&["-raw", stripped.path("heap.pb.gz").to_str().unwrap()]);
    let build_id = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "readelf -n {} | awk '/Build ID/ {{print $3}}'",
            workloads.alloc_sites_stripped.display()
        ))
        .output()
        .unwrap();
    let build_id = String::from_utf8_lossy(&build_id.stdout).trim().to_owned();
    assert!(!build_id.is_empty());
    assert!(
        raw.contains(&build_id),
        "build id {build_id} not in:\n{raw}"
    );
}

#[test]
fn frame_pointer_walks_cut_short_are_said_once_and_unwind_tables_give_whole_stacks() {
    let workloads = ensure_built().expect("workloads build");
    let totals_and_rows = |options: &[&str]| {
        let traced = trace_with(&workloads.alloc_sites_nofp, &words("--hold 0.8"), options);
        let snapshot = last_running(&traced.finished.snapshots());
        (traced, snapshot)
    };
    // Walking frame pointers through code that keeps none: cut, and said.
    let (walked, snapshot) = totals_and_rows(&words("--unwind fp"));
    let notices: Vec<&str> = walked
        .finished
        .stderr()
        .into_iter()
        .filter(|line| line.contains("keeps no frame pointers"))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("alloc_sites_nofp"), "{}", notices[0]);
    // Short, but nothing lost: every site still holds its bytes.
    let totals = alloc_sites_totals(&walked.finished);
    for site in SITES {
        let in_use = bytes_at(&snapshot, "top_stacks", site, "in_use_bytes");
        assert!(
            within(in_use, totals[site].as_u64().unwrap(), 1.0),
            "{site}: {in_use}"
        );
    }
    // By default the same code is unwound with its .eh_frame: whole stacks
    // down to main and the C library's start, and no notice.
    let (unwound, snapshot) = totals_and_rows(&[]);
    assert!(
        !unwound
            .finished
            .stderr()
            .iter()
            .any(|line| line.contains("stop after")),
        "{}",
        unwound.finished.transcript()
    );
    let totals = alloc_sites_totals(&unwound.finished);
    for site in SITES {
        let rows: Vec<&Value> = rows_with(&snapshot, "top_stacks", site);
        assert!(!rows.is_empty(), "{site}");
        for row in &rows {
            assert_eq!(row["end"], "complete", "{site}: {row}");
            let frames: Vec<&str> = row["frames"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(frames.contains(&"main"), "{site}: {frames:?}");
            assert_eq!(frames.last(), Some(&"_start"), "{site}: {frames:?}");
        }
        let in_use = bytes_at(&snapshot, "top_stacks", site, "in_use_bytes");
        assert!(
            within(in_use, totals[site].as_u64().unwrap(), 1.0),
            "{site}: {in_use}"
        );
    }
}

/// The stack period memtrace uses unless told otherwise (`--stack-period`).
const STACK_PERIOD: u64 = 64;

/// What tracing twin_paths (16384 pages, `pages_per_turn` at a time through each path
/// in turn) with `options` gave.
struct Twins {
    /// Faults credited to stacks through each path.
    left: u64,
    right: u64,
    /// The `top_faults` rows of faults in `fill`.
    rows: Vec<Value>,
    /// Every fault of the process, and the stack walks the kernel side made
    /// for them.
    faults: u64,
    walks: u64,
}

fn twin_faults(options: &[&str], pages_per_turn: u32) -> Twins {
    let workloads = ensure_built().expect("workloads build");
    // twin_paths keeps frame pointers: this is about reusing their walks.
    let pages_per_turn = pages_per_turn.to_string();
    let args = Argv::new()
        .words("--json - -q --unwind fp")
        .args(options)
        .words("--")
        .arg(workloads.twin_paths.to_str().unwrap())
        .words("--pages 16384 --hold 0.5 --run")
        .arg(&pages_per_turn);
    let finished = run(&args, Duration::from_secs(60));
    finished.assert_code(0);
    let last = finished.snapshots().last().cloned().unwrap();
    assert_eq!(number(&last, "/records/lost_total"), 0);
    let through = |function| bytes_at(&last, "top_faults", function, "count");
    let rows = last["top_faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["frames"][0] == "fill")
        .cloned()
        .collect();
    Twins {
        left: through("via_left"),
        right: through("via_right"),
        rows,
        faults: number(&last, "/faults/count"),
        walks: number(&last, "/records/stack_walks"),
    }
}

#[test]
fn sampled_stacks_tell_twin_paths_apart_and_save_walks_along_one() {
    // Every stack walked, or a walk for every fault: exact.
    for options in [&["--stacks", "all"][..], &["--stack-period", "1"][..]] {
        let twins = twin_faults(options, 1);
        assert_eq!((twins.left, twins.right), (8192, 8192), "{options:?}");
        assert_eq!(twins.walks, twins.faults, "{options:?}: a walk per fault");
    }
    // Sampled (the default): the two paths reach the same instruction with
    // the same frame pointer and caller, but through different callers'
    // callers, so a walk is reused only along its own path: every fault is
    // credited to its own chain, whether the paths alternate at every page
    // or take turns in runs. A walk serves at most 64 faults.
    let mut walks_in_runs = 0;
    for run in [1, 256] {
        let twins = twin_faults(&[], run);
        walks_in_runs = twins.walks;
        assert_eq!((twins.left, twins.right), (8192, 8192), "runs of {run}");
        assert!(!twins.rows.is_empty());
        for row in &twins.rows {
            assert_eq!(row["frames"][1], "step", "{row}");
        }
        assert!(
            twins.walks >= twins.faults.div_ceil(STACK_PERIOD),
            "{} walks for {} faults: a walk served more than {STACK_PERIOD}",
            twins.walks,
            twins.faults
        );
    }
    // Sampling saves walks where a path repeats: far fewer than faults.
    assert!(
        walks_in_runs * 4 < 16384,
        "{walks_in_runs} walks in runs of 256"
    );
}
