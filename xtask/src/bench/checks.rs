//! Correctness checks on memtrace's final snapshot of a benchmark run: it
//! lost no records, and it counted exactly what the workload did. These,
//! not the timings, are what can fail `cargo xtask bench`.
//!
//! memtrace starts each workload and traces it from its first instruction,
//! so it sees the warm-up as well as the measured part, and the dynamic
//! loader's work before `main`. The workload's own faults and unmaps are
//! told apart by their stacks and checked exactly, count and bytes; madvise
//! calls come only from the workload and are checked exactly in total.
//! Where only a total exists and someone else adds to it (mmap calls, a Go
//! program's faults), the check is a bound, its width justified where it
//! is set. The no-frame-pointer rows do their twins' work and are checked
//! alike; next to the idle process the neighbour row traces, memtrace must
//! see nothing at all.

use std::fmt;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::workload::{Benchmark, Outcome, Workload};
use crate::snapshot::{lost_records, number, rows_through};

const PAGE_SIZE: u64 = 4096;

/// The functions the fault storm writes its pages from, and unmaps them:
/// `bench_touch` and `bench_unmap` are inlined into `run_round` at -O2.
const FAULT_STORM_ROUND: &[&str] = &["bench_touch", "bench_unmap", "run_round"];
/// The mmap churn's cycle: map, write the first page, unmap.
const MMAP_CHURN_CYCLE: &[&str] = &["run_op"];

/// mmap calls the dynamic loader makes before a C workload's `main`:
/// mapping the C library's segments and its own data, 8 with Debian 12's
/// glibc 2.36. Twice that leaves room for another C library, while a count
/// off by one per cycle of the workload is off by thousands.
const LOADER_MMAP_CALLS: u64 = 16;

/// How far memtrace's count of a Go program's page faults may be from the
/// kernel's own (getrusage, printed by gochurn). Both count every fault of
/// the process, but the kernel's also has the few it took between fork and
/// exec (memtrace traces from the exec) and those it takes on the process's
/// behalf without an exception (get_user_pages: execve copying the
/// arguments, futex wake-ups), and memtrace's has the few after gochurn read
/// its count (printing it, exiting). Measured 0 to 10 apart in runs of 150k
/// to 800k faults; a lost or doubled fault per GC cycle would be hundreds
/// off.
const GO_FAULTS_SLACK: u64 = 64;

/// Events and the bytes they covered: faults and the bytes paged in, or
/// calls and the bytes they named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    count: u64,
    bytes: u64,
}

impl Tally {
    pub fn of(count: u64, bytes_each: u64) -> Self {
        Self {
            count,
            bytes: count * bytes_each,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.count, self.bytes)
    }
}

/// What is wrong with a memtrace run of `workload` that reported `outcome`,
/// judging by memtrace's final `snapshot`; empty when all is right. An
/// error when the outcome or the snapshot lacks what the checks read.
pub fn memtrace_run(
    workload: &Workload,
    outcome: &Outcome,
    snapshot: &Value,
) -> Result<Vec<String>> {
    let mut problems = lost_records(snapshot);
    let warmup = workload.option("--warmup").unwrap_or(0);
    let mut expect = |what: &str, got: Tally, wanted: Tally, why: String| {
        if got != wanted {
            problems.push(format!("{what}: {got}, expected {wanted}: {why}"));
        }
    };
    match workload.benchmark {
        Benchmark::FaultStorm | Benchmark::FaultStormNoFp => {
            let pages = outcome.field("pages_per_round")?;
            let measured = outcome.field("rounds")?;
            let rounds = warmup + measured;
            let why = format!("{warmup} warm-up + {measured} rounds of {pages} pages");
            expect(
                "faults in the storm's round",
                faults_through(snapshot, FAULT_STORM_ROUND)?,
                Tally::of(rounds * pages, PAGE_SIZE),
                why.clone(),
            );
            expect(
                "munmap calls in the storm's round",
                calls_through(snapshot, "munmap", FAULT_STORM_ROUND)?,
                Tally::of(rounds, pages * PAGE_SIZE),
                format!("one per round, {why}"),
            );
            problems.extend(mmap_calls(snapshot, rounds)?);
        }
        Benchmark::MadviseStorm => {
            let measured = outcome.field("rounds")?;
            let rounds = warmup + measured;
            let length = outcome.field("mib")? << 20;
            let chunk = outcome.field("chunk_kib")? << 10;
            let (free, dontneed) = madvise_round(length, chunk);
            let why = format!(
                "{warmup} warm-up + {measured} rounds over {length} bytes in pieces of {chunk}, \
                 alternating MADV_FREE and MADV_DONTNEED"
            );
            for (advice, per_round) in [("MADV_FREE", free), ("MADV_DONTNEED", dontneed)] {
                expect(
                    &format!("madvise {advice}"),
                    Tally {
                        count: number(snapshot, &format!("/madvise/{advice}/calls"))?,
                        bytes: number(snapshot, &format!("/madvise/{advice}/bytes"))?,
                    },
                    Tally {
                        count: rounds * per_round.count,
                        bytes: rounds * per_round.bytes,
                    },
                    why.clone(),
                );
            }
        }
        Benchmark::MmapChurn | Benchmark::MmapChurnNoFp => {
            let measured = outcome.operations;
            let cycles = warmup + measured;
            let length = outcome.field("kib")? << 10;
            let why = format!("{warmup} warm-up + {measured} cycles");
            expect(
                "faults in the churn's cycle (one page each)",
                faults_through(snapshot, MMAP_CHURN_CYCLE)?,
                Tally::of(cycles, PAGE_SIZE),
                why.clone(),
            );
            expect(
                "munmap calls in the churn's cycle",
                calls_through(snapshot, "munmap", MMAP_CHURN_CYCLE)?,
                Tally::of(cycles, length),
                why,
            );
            problems.extend(mmap_calls(snapshot, cycles)?);
        }
        Benchmark::GoChurn => {
            let kernel = outcome.field("page_faults")?;
            let counted = number(snapshot, "/faults/count")?;
            if counted.abs_diff(kernel) > GO_FAULTS_SLACK {
                problems.push(format!(
                    "faults.count is {counted}, the kernel counted {kernel} page faults of the \
                     process (getrusage): more than {GO_FAULTS_SLACK} apart"
                ));
            }
        }
        Benchmark::Neighbour => {
            let seen = number(snapshot, "/records/seen")?;
            if seen != 0 {
                problems.push(format!(
                    "records.seen is {seen} for an idle sleep: events of other processes \
                     (the neighbour's) were taken for its"
                ));
            }
        }
        // Attaching is timed; what memtrace saw of the waiting target is not
        // the point, only that it lost nothing.
        Benchmark::Attach | Benchmark::AttachManyLibs => {}
    }
    Ok(problems)
}

/// The calls and bytes of one round of the madvise storm, per advice
/// (MADV_FREE, MADV_DONTNEED): it walks `length` bytes in pieces of `chunk`
/// (the last one shorter), MADV_FREE first, then alternating.
fn madvise_round(length: u64, chunk: u64) -> (Tally, Tally) {
    let (mut free, mut dontneed) = (Tally::default(), Tally::default());
    for (index, start) in (0..length).step_by(chunk as usize).enumerate() {
        let advised = if index % 2 == 0 {
            &mut free
        } else {
            &mut dontneed
        };
        advised.count += 1;
        advised.bytes += chunk.min(length - start);
    }
    (free, dontneed)
}

/// The workload made `made` mmap calls; the loader adds a few of its own.
fn mmap_calls(snapshot: &Value, made: u64) -> Result<Option<String>> {
    let calls = number(snapshot, "/calls/mmap/calls")?;
    Ok(
        (!(made..=made + LOADER_MMAP_CALLS).contains(&calls)).then(|| {
            format!(
                "calls.mmap.calls is {calls}, expected the workload's {made} and at most \
             {LOADER_MMAP_CALLS} by the dynamic loader"
            )
        }),
    )
}

/// Faults in stacks through one of `functions`, and the bytes they paged in.
pub fn faults_through(snapshot: &Value, functions: &[&str]) -> Result<Tally> {
    sum_rows(
        &rows_through(snapshot, "top_faults", functions)?,
        "count",
        "paged_in_bytes",
    )
}

/// `call`s (`munmap`, `MADV_FREE`) in stacks through one of `functions`,
/// and the bytes they named.
fn calls_through(snapshot: &Value, call: &str, functions: &[&str]) -> Result<Tally> {
    let rows: Vec<&Value> = rows_through(snapshot, "top_calls", functions)?
        .into_iter()
        .filter(|row| row["call"] == call)
        .collect();
    sum_rows(&rows, "calls", "bytes")
}

fn sum_rows(rows: &[&Value], count: &str, bytes: &str) -> Result<Tally> {
    let field = |row: &Value, name: &str| {
        row[name]
            .as_u64()
            .with_context(|| format!("a row without a whole number {name}: {row}"))
    };
    let mut tally = Tally::default();
    for row in rows {
        tally.count += field(row, count)?;
        tally.bytes += field(row, bytes)?;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bench::workload::parse_outcome;

    const MIB: u64 = 1 << 20;

    fn workload(benchmark: Benchmark) -> Workload {
        Workload::new(benchmark, benchmark.name().into(), true)
    }

    fn check(benchmark: Benchmark, line: &str, snapshot: &Value) -> Vec<String> {
        let outcome = parse_outcome(&[line.to_owned()], benchmark).unwrap();
        memtrace_run(&workload(benchmark), &outcome, snapshot).unwrap()
    }

    /// The quick storm: 2 warm-up + 8 measured rounds of 16 MiB, as memtrace
    /// reports them (`touched` pages faulted, `unmapped` rounds unmapped).
    fn storm_snapshot(touched: u64, unmapped: u64, lost: u64) -> Value {
        json!({
            "records": {"seen": 30000, "lost_total": lost, "lost": {"faults": lost}},
            "calls": {"mmap": {"calls": unmapped + 8}},
            "top_faults": [
                {"frames": ["run_round", "main"], "count": touched, "paged_in_bytes": touched * 4096},
                {"frames": ["_dl_start", "_start"], "count": 3, "paged_in_bytes": 12288},
            ],
            "top_calls": [
                {"call": "munmap", "frames": ["__GI_munmap", "run_round", "main"],
                 "calls": unmapped, "bytes": unmapped * 16 * MIB},
                {"call": "munmap", "frames": ["__GI_munmap", "_dl_unload_cache"],
                 "calls": 1, "bytes": 49152},
            ],
        })
    }

    const STORM: &str = r#"{"benchmark":"fault_storm","seconds":0.1,"operations":32768,"rounds":8,"mib":16,"pages_per_round":4096}"#;

    #[test]
    fn a_right_fault_storm_passes() {
        let snapshot = storm_snapshot(10 * 4096, 10, 0);
        assert_eq!(
            check(Benchmark::FaultStorm, STORM, &snapshot),
            Vec::<String>::new()
        );
    }

    #[test]
    fn lost_records_and_one_fault_too_few_fail_the_storm() {
        let snapshot = storm_snapshot(10 * 4096 - 1, 10, 7);
        let problems = check(Benchmark::FaultStorm, STORM, &snapshot);
        assert_eq!(
            problems,
            [
                "7 records lost (records.lost: {\"faults\":7}), expected none",
                "faults in the storm's round: 40959 (167768064 bytes), expected 40960 \
                 (167772160 bytes): 2 warm-up + 8 rounds of 4096 pages"
            ]
        );
    }

    #[test]
    fn one_fault_too_many_or_an_unmap_missing_fail_the_storm() {
        let problems = check(
            Benchmark::FaultStorm,
            STORM,
            &storm_snapshot(10 * 4096 + 1, 10, 0),
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        let problems = check(
            Benchmark::FaultStorm,
            STORM,
            &storm_snapshot(10 * 4096, 9, 0),
        );
        assert_eq!(
            problems,
            [
                "munmap calls in the storm's round: 9 (150994944 bytes), expected 10 \
              (167772160 bytes): one per round, 2 warm-up + 8 rounds of 4096 pages"
            ]
        );
    }

    #[test]
    fn mmap_calls_are_the_workloads_and_a_few_of_the_loaders() {
        let snapshot = |calls: u64| json!({"calls": {"mmap": {"calls": calls}}});
        assert_eq!(mmap_calls(&snapshot(10), 10).unwrap(), None);
        assert_eq!(mmap_calls(&snapshot(26), 10).unwrap(), None);
        assert_eq!(
            mmap_calls(&snapshot(9), 10).unwrap().unwrap(),
            "calls.mmap.calls is 9, expected the workload's 10 and at most 16 by the dynamic loader"
        );
        assert!(mmap_calls(&snapshot(27), 10).unwrap().is_some());
        assert!(mmap_calls(&json!({"calls": {}}), 10).is_err());
    }

    #[test]
    fn madvise_rounds_alternate_from_free_with_a_short_last_piece() {
        assert_eq!(
            madvise_round(16 * MIB, 64 << 10),
            (Tally::of(128, 64 << 10), Tally::of(128, 64 << 10))
        );
        assert_eq!(
            madvise_round(5 * 4096, 8192),
            (
                Tally {
                    count: 2,
                    bytes: 8192 + 4096
                },
                Tally::of(1, 8192)
            )
        );
    }

    #[test]
    fn madvise_calls_and_bytes_are_exact_per_advice() {
        // The quick storm: 1 warm-up + 8 rounds of 16 MiB in 64 KiB pieces.
        let line = r#"{"benchmark":"madvise_storm","seconds":0.1,"operations":2048,"rounds":8,"mib":16,"chunk_kib":64}"#;
        let snapshot = |free: u64, dontneed: u64| {
            json!({"records": {"lost_total": 0}, "madvise": {
                "MADV_FREE": {"calls": free, "bytes": free * 65536},
                "MADV_DONTNEED": {"calls": dontneed, "bytes": dontneed * 65536}}})
        };
        assert!(check(Benchmark::MadviseStorm, line, &snapshot(1152, 1152)).is_empty());
        assert_eq!(
            check(Benchmark::MadviseStorm, line, &snapshot(1152, 1151)),
            [
                "madvise MADV_DONTNEED: 1151 (75431936 bytes), expected 1152 (75497472 bytes): \
              1 warm-up + 8 rounds over 16777216 bytes in pieces of 65536, alternating \
              MADV_FREE and MADV_DONTNEED"
            ]
        );
    }

    #[test]
    fn mmap_churn_counts_every_cycle() {
        // The quick churn: 2000 warm-up + 50000 cycles of 64 KiB.
        let line = r#"{"benchmark":"mmap_churn","seconds":0.1,"operations":50000,"kib":64}"#;
        let snapshot = |faults: u64, unmaps: u64| {
            json!({"records": {"lost_total": 0}, "calls": {"mmap": {"calls": 52_008}},
            "top_faults": [{"frames": ["run_op", "main"], "count": faults, "paged_in_bytes": faults * 4096}],
            "top_calls": [
                {"call": "munmap", "frames": ["__GI_munmap", "run_op", "main"], "calls": unmaps - 1, "bytes": (unmaps - 1) * 65536},
                {"call": "munmap", "frames": ["__GI_munmap", "run_op", "main"], "calls": 1, "bytes": 65536},
            ]})
        };
        assert!(check(Benchmark::MmapChurn, line, &snapshot(52_000, 52_000)).is_empty());
        assert_eq!(
            check(Benchmark::MmapChurn, line, &snapshot(51_999, 52_000)),
            [
                "faults in the churn's cycle (one page each): 51999 (212987904 bytes), \
              expected 52000 (212992000 bytes): 2000 warm-up + 50000 cycles"
            ]
        );
    }

    #[test]
    fn no_frame_pointer_twins_are_checked_alike() {
        let outcome = parse_outcome(&[STORM.to_owned()], Benchmark::FaultStormNoFp).unwrap();
        let nofp = workload(Benchmark::FaultStormNoFp);
        let right = storm_snapshot(10 * 4096, 10, 0);
        assert!(memtrace_run(&nofp, &outcome, &right).unwrap().is_empty());
        let short = storm_snapshot(10 * 4096 - 1, 10, 0);
        assert_eq!(memtrace_run(&nofp, &outcome, &short).unwrap().len(), 1);
    }

    #[test]
    fn memtrace_on_an_idle_sleep_sees_nothing_of_its_neighbour() {
        let line =
            r#"{"benchmark":"syscall_storm","seconds":1.0,"operations":600000,"cpu_seconds":0.9}"#;
        let snapshot = |seen: u64| json!({"records": {"seen": seen, "lost_total": 0}});
        assert!(check(Benchmark::Neighbour, line, &snapshot(0)).is_empty());
        assert_eq!(
            check(Benchmark::Neighbour, line, &snapshot(3)),
            [
                "records.seen is 3 for an idle sleep: events of other processes (the \
                 neighbour's) were taken for its"
            ]
        );
        let without = json!({"records": {"lost_total": 0}});
        let outcome = parse_outcome(&[line.to_owned()], Benchmark::Neighbour).unwrap();
        assert!(memtrace_run(&workload(Benchmark::Neighbour), &outcome, &without).is_err());
    }

    #[test]
    fn attaching_checks_only_lost_records() {
        let line = r#"{"benchmark":"many_libs","seconds":0.001,"operations":15,"mappings":99}"#;
        let lost = |lost: u64| json!({"records": {"seen": 5, "lost_total": lost, "lost": {}}});
        assert!(check(Benchmark::Attach, line, &lost(0)).is_empty());
        assert_eq!(check(Benchmark::Attach, line, &lost(2)).len(), 1);
    }

    #[test]
    fn go_churn_faults_are_held_against_the_kernels_count() {
        let line = r#"{"benchmark":"gochurn","seconds":1.0,"operations":500000,"bytes":1,"num_gc":2,"page_faults":150000}"#;
        let snapshot =
            |faults: u64| json!({"records": {"lost_total": 0}, "faults": {"count": faults}});
        assert!(check(Benchmark::GoChurn, line, &snapshot(149_936)).is_empty());
        assert!(check(Benchmark::GoChurn, line, &snapshot(150_064)).is_empty());
        assert_eq!(
            check(Benchmark::GoChurn, line, &snapshot(149_935)),
            [
                "faults.count is 149935, the kernel counted 150000 page faults of the process \
              (getrusage): more than 64 apart"
            ]
        );
        let without = r#"{"benchmark":"gochurn","seconds":1.0,"operations":500000}"#;
        let outcome = parse_outcome(&[without.to_owned()], Benchmark::GoChurn).unwrap();
        assert!(memtrace_run(&workload(Benchmark::GoChurn), &outcome, &snapshot(1)).is_err());
    }

    #[test]
    fn a_snapshot_without_the_counts_is_an_error() {
        let outcome = parse_outcome(&[STORM.to_owned()], Benchmark::FaultStorm).unwrap();
        let snapshot = json!({"records": {"lost_total": 0}});
        assert!(memtrace_run(&workload(Benchmark::FaultStorm), &outcome, &snapshot).is_err());
    }
}
