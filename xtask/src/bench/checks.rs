//! Correctness checks on memtrace's final snapshot of a benchmark run: it
//! lost no records, and it counted at least what the workload says it did.
//! These, not the timings, are what can fail `cargo xtask bench`.
//!
//! memtrace starts each workload and traces it from its first instruction,
//! so it also sees the warm-up: counts are checked as "at least the measured
//! part", except where the exact total is known (the fault storm's touches).

use anyhow::Result;
use serde_json::Value;

use super::workload::{Benchmark, Outcome, Workload};
use crate::snapshot::{lost_records, number};

const PAGE_SIZE: u64 = 4096;

/// The functions the fault storm writes its pages from: `bench_touch` is
/// inlined into `run_round` at -O2, and is named only where debug info
/// names inlined frames.
const FAULT_STORM_TOUCH: &[&str] = &["bench_touch", "run_round"];

/// What is wrong with a memtrace run of `workload` that reported `outcome`,
/// judging by memtrace's final `snapshot`; empty when all is right.
pub fn memtrace_run(
    workload: &Workload,
    outcome: &Outcome,
    snapshot: &Value,
) -> Result<Vec<String>> {
    let mut problems = lost_records(snapshot);
    let counted = |pointer: &str| number(snapshot, pointer);
    let at_least = |problems: &mut Vec<String>, what: &str, got: u64, wanted: u64| {
        if got < wanted {
            problems.push(format!("{what} is {got}, expected at least {wanted}"));
        }
    };
    match workload.benchmark {
        Benchmark::FaultStorm => {
            let pages = outcome.field("pages_per_round")?;
            let measured = outcome.field("rounds")?;
            let warmup = workload.option("--warmup").unwrap_or(0);
            at_least(
                &mut problems,
                "faults.count",
                counted("/faults/count"),
                outcome.operations,
            );
            at_least(
                &mut problems,
                "faults.bytes",
                counted("/faults/bytes"),
                measured * pages * PAGE_SIZE,
            );
            let touched = (warmup + measured) * pages * PAGE_SIZE;
            let attributed = paged_in_by(snapshot, FAULT_STORM_TOUCH);
            if attributed != touched {
                problems.push(format!(
                    "top_faults credits {attributed} bytes to the storm's touch loop ({}), \
                     expected {touched} ({warmup} warm-up + {measured} rounds of {pages} pages); \
                     top_faults: {}",
                    FAULT_STORM_TOUCH.join(" or "),
                    snapshot["top_faults"]
                ));
            }
        }
        Benchmark::MadviseStorm => {
            let calls =
                counted("/madvise/MADV_FREE/calls") + counted("/madvise/MADV_DONTNEED/calls");
            at_least(
                &mut problems,
                "MADV_FREE + MADV_DONTNEED calls",
                calls,
                outcome.operations,
            );
        }
        Benchmark::MmapChurn => {
            at_least(
                &mut problems,
                "calls.mmap.calls",
                counted("/calls/mmap/calls"),
                outcome.operations,
            );
            at_least(
                &mut problems,
                "calls.munmap.calls",
                counted("/calls/munmap/calls"),
                outcome.operations,
            );
        }
        Benchmark::GoChurn => {}
    }
    Ok(problems)
}

/// Bytes `top_faults` credits to stacks whose innermost frame is one of
/// `functions`.
fn paged_in_by(snapshot: &Value, functions: &[&str]) -> u64 {
    snapshot["top_faults"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| {
            row["frames"][0]
                .as_str()
                .is_some_and(|frame| functions.contains(&frame))
        })
        .map(|row| row["paged_in_bytes"].as_u64().unwrap_or(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bench::workload::parse_outcome;

    fn workload(benchmark: Benchmark) -> Workload {
        Workload::new(benchmark, benchmark.name().into(), true)
    }

    fn outcome(line: &str) -> Outcome {
        parse_outcome(
            &[line.to_owned()],
            Benchmark::ALL
                .into_iter()
                .find(|b| line.contains(b.name()))
                .unwrap(),
        )
        .unwrap()
    }

    /// The quick storm: 2 warm-up + 8 measured rounds of 16 MiB.
    fn storm_snapshot(count: u64, touch_bytes: u64, lost: u64) -> Value {
        json!({
            "records": {"seen": 30000, "lost_total": lost, "lost": {"faults": lost}},
            "faults": {"count": count, "bytes": touch_bytes + 65536},
            "top_faults": [
                {"frames": ["run_round", "main"], "count": touch_bytes / 4096, "paged_in_bytes": touch_bytes},
                {"frames": ["_dl_start", "_start"], "count": 3, "paged_in_bytes": 12288},
            ],
        })
    }

    const STORM: &str = r#"{"benchmark":"fault_storm","seconds":0.1,"operations":32768,"rounds":8,"mib":16,"pages_per_round":4096}"#;

    #[test]
    fn a_right_fault_storm_passes() {
        let snapshot = storm_snapshot(41_000, (10 * 16) << 20, 0);
        let problems =
            memtrace_run(&workload(Benchmark::FaultStorm), &outcome(STORM), &snapshot).unwrap();
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn lost_records_and_wrong_attribution_fail_the_storm() {
        let snapshot = storm_snapshot(41_000, (9 * 16) << 20, 7);
        let problems =
            memtrace_run(&workload(Benchmark::FaultStorm), &outcome(STORM), &snapshot).unwrap();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].starts_with("7 records lost"), "{}", problems[0]);
        assert!(
            problems[1].starts_with("top_faults credits 150994944 bytes to the storm's touch loop (bench_touch or run_round), expected 167772160 (2 warm-up + 8 rounds of 4096 pages)"),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn too_few_faults_fail_the_storm() {
        let snapshot = storm_snapshot(100, (10 * 16) << 20, 0);
        let problems =
            memtrace_run(&workload(Benchmark::FaultStorm), &outcome(STORM), &snapshot).unwrap();
        assert_eq!(problems, ["faults.count is 100, expected at least 32768"]);
    }

    #[test]
    fn madvise_calls_of_both_kinds_add_up() {
        let line = r#"{"benchmark":"madvise_storm","seconds":0.1,"operations":1024,"rounds":4,"mib":16,"chunk_kib":64}"#;
        let snapshot = |free: u64, dontneed: u64| {
            json!({"records": {"lost_total": 0}, "madvise": {
                "MADV_FREE": {"calls": free}, "MADV_DONTNEED": {"calls": dontneed}}})
        };
        let storm = workload(Benchmark::MadviseStorm);
        assert!(memtrace_run(&storm, &outcome(line), &snapshot(768, 768))
            .unwrap()
            .is_empty());
        assert_eq!(
            memtrace_run(&storm, &outcome(line), &snapshot(512, 0)).unwrap(),
            ["MADV_FREE + MADV_DONTNEED calls is 512, expected at least 1024"]
        );
    }

    #[test]
    fn mmap_churn_needs_both_calls() {
        let line = r#"{"benchmark":"mmap_churn","seconds":0.1,"operations":20000,"kib":64}"#;
        let snapshot = json!({"records": {"lost_total": 0}, "calls": {
            "mmap": {"calls": 21_030}, "munmap": {"calls": 19_999}}});
        assert_eq!(
            memtrace_run(&workload(Benchmark::MmapChurn), &outcome(line), &snapshot).unwrap(),
            ["calls.munmap.calls is 19999, expected at least 20000"]
        );
    }

    #[test]
    fn go_churn_is_checked_for_lost_records_only() {
        let line =
            r#"{"benchmark":"gochurn","seconds":1.0,"operations":300000,"bytes":1,"num_gc":2}"#;
        let go = workload(Benchmark::GoChurn);
        assert!(
            memtrace_run(&go, &outcome(line), &json!({"records": {"lost_total": 0}}))
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            memtrace_run(&go, &outcome(line), &json!({"records": {"lost_total": 3}}))
                .unwrap()
                .len(),
            1
        );
    }
}
