//! memtrace's own memory while it traces a process with 4 GiB resident: it
//! keeps resident pages as runs of equal state, so its RSS should stay small
//! and, once the target stops changing, flat.

use std::{path::Path, process::Command, time::Duration};

use anyhow::Result;
use serde_json::{json, Value};

use super::checks::{faults_through, Tally};
use crate::{
    child::{Line, Sample, Started},
    snapshot,
    text::{mark, mebibytes},
};

/// The memops script: map and write 4 GiB, then hold it for 20 s.
const SCRIPT: &str = "map A 4G ; touch A 0 4G ; hold 20";
const TOUCHED_BYTES: u64 = 4 << 30;
/// memops writes one byte per 4 KiB page, faulting each in once.
const TOUCHED_PAGES: u64 = TOUCHED_BYTES / 4096;
/// memops prints this when the 4 GiB are written and the hold begins.
const TOUCH_DONE: &str = "op 1 touch ";
/// The goal for memtrace's own RSS.
const GOAL_BYTES: u64 = 64 << 20;
const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// Writing 4 GiB on a VM whose first touches are slow, traced.
const TOUCH_TIMEOUT: Duration = Duration::from_secs(600);
const HOLD_TIMEOUT: Duration = Duration::from_secs(120);

/// memtrace's RSS over the run, sampled every second.
#[derive(Debug, Clone, PartialEq)]
pub struct Resident {
    pub command: String,
    /// VmRSS in bytes, one per second.
    pub samples: Vec<u64>,
    /// Index of the first sample taken during the hold.
    pub hold_start: usize,
    /// VmHWM at the last sample: the peak, including any between samples.
    pub peak: u64,
}

/// What flat means: over the 20 s hold, RSS grows by at most 1 MiB or 5%,
/// whichever is more; allocator noise and the periodic reconciliation's
/// buffers move it by less, while anything kept per event or per interval
/// would grow past it.
fn is_flat(first: u64, last: u64) -> bool {
    last <= first + (1 << 20).max(first / 20)
}

impl Resident {
    /// First and last samples of the hold.
    fn hold(&self) -> Option<(u64, u64)> {
        let hold = self.samples.get(self.hold_start..)?;
        Some((*hold.first()?, *hold.last()?))
    }

    pub fn describe(&self) -> String {
        let mut text = format!(
            "memtrace's RSS tracing 4 GiB resident ({}):\n  peak {} (VmHWM) {} (goal ≤ {})",
            self.command,
            mebibytes(self.peak),
            mark(self.peak <= GOAL_BYTES),
            mebibytes(GOAL_BYTES)
        );
        match self.hold() {
            Some((first, last)) => text.push_str(&format!(
                "; during the hold {} → {} {} (goal: flat)",
                mebibytes(first),
                mebibytes(last),
                mark(is_flat(first, last))
            )),
            None => text.push_str("; no sample during the hold"),
        }
        let series: Vec<String> = self
            .samples
            .iter()
            .map(|&bytes| format!("{:.1}", bytes as f64 / (1u64 << 20) as f64))
            .collect();
        text.push_str(&format!(
            "\n  VmRSS each second, MiB (hold from sample {}): {}",
            self.hold_start + 1,
            series.join(" ")
        ));
        text
    }

    pub fn to_json(&self) -> Value {
        let hold = self.hold();
        json!({
            "command": self.command,
            "vm_rss_bytes_each_second": self.samples,
            "hold_start_index": self.hold_start,
            "peak_bytes": self.peak,
            "goal_bytes": GOAL_BYTES,
            "peak_within_goal": self.peak <= GOAL_BYTES,
            "hold_first_bytes": hold.map(|(first, _)| first),
            "hold_last_bytes": hold.map(|(_, last)| last),
            "flat": hold.map(|(first, last)| is_flat(first, last)),
        })
    }
}

/// Runs memtrace on the memops script, sampling its VmRSS; returns the
/// samples and what is wrong with memtrace's counts, if anything.
pub fn measure(memtrace: &Path, memops: &Path, scratch: &Path) -> Result<(Resident, Vec<String>)> {
    let json = scratch.join("resident.json");
    let mut command = Command::new(memtrace);
    command
        .args(["-q", "--json"])
        .arg(&json)
        .arg("--")
        .arg(memops)
        .args(SCRIPT.split_whitespace());
    let mut started = Started::spawn(&mut command)?;
    started.sample_memory(SAMPLE_PERIOD);
    started.wait_for(
        "the end of the touch",
        TOUCH_TIMEOUT,
        |line| matches!(line, Line::Stdout(text) if text.starts_with(TOUCH_DONE)),
    )?;
    let touched_at = std::time::Instant::now();
    let finished = started.finish(HOLD_TIMEOUT)?;
    let resident = Resident {
        command: format!("memtrace -q --json FILE -- memops {SCRIPT}"),
        hold_start: hold_start(&finished.samples, touched_at),
        samples: finished
            .samples
            .iter()
            .map(|sample| sample.rss_bytes)
            .collect(),
        peak: finished
            .samples
            .iter()
            .map(|sample| sample.hwm_bytes)
            .max()
            .unwrap_or(0),
    };
    let final_snapshot = snapshot::final_snapshot(&json)?;
    let mut problems = snapshot::lost_records(&final_snapshot);
    let faulted = faults_through(&final_snapshot, &["op_touch"])?;
    let touched = Tally::of(TOUCHED_PAGES, TOUCHED_BYTES / TOUCHED_PAGES);
    if faulted != touched {
        problems.push(format!(
            "faults in op_touch: {faulted}, expected {touched}: memops wrote 4 GiB, one fault \
             per page"
        ));
    }
    Ok((resident, problems))
}

/// The index of the first sample taken at or after `at`.
fn hold_start(samples: &[Sample], at: std::time::Instant) -> usize {
    samples.partition_point(|sample| sample.at < at)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn flat_allows_noise_not_growth() {
        assert!(is_flat(30 << 20, 30 << 20));
        assert!(is_flat(30 << 20, (30 << 20) + (1 << 20)));
        assert!(is_flat(40 << 20, 42 << 20), "5% of 40 MiB is 2 MiB");
        assert!(!is_flat(40 << 20, 43 << 20));
        assert!(!is_flat(4 << 20, 6 << 20));
        assert!(is_flat(30 << 20, 20 << 20), "shrinking is flat enough");
    }

    #[test]
    fn the_hold_starts_at_the_first_sample_after_the_touch() {
        let start = Instant::now();
        let samples: Vec<Sample> = (0..5)
            .map(|second| Sample {
                at: start + Duration::from_secs(second),
                rss_bytes: second << 20,
                hwm_bytes: second << 20,
            })
            .collect();
        assert_eq!(hold_start(&samples, start + Duration::from_millis(2500)), 3);
        assert_eq!(hold_start(&samples, start), 0);
        assert_eq!(hold_start(&samples, start + Duration::from_secs(9)), 5);
    }

    #[test]
    fn the_report_gives_peak_and_hold_against_goals() {
        let resident = Resident {
            command: "memtrace -q --json FILE -- memops ...".into(),
            samples: vec![5 << 20, 30 << 20, 31 << 20, 31 << 20],
            hold_start: 2,
            peak: 33 << 20,
        };
        let text = resident.describe();
        assert!(
            text.contains("peak 33.0 MiB (VmHWM) ✓ (goal ≤ 64.0 MiB)"),
            "{text}"
        );
        assert!(
            text.contains("during the hold 31.0 MiB → 31.0 MiB ✓"),
            "{text}"
        );
        assert!(
            text.ends_with("(hold from sample 3): 5.0 30.0 31.0 31.0"),
            "{text}"
        );
        let json = resident.to_json();
        assert_eq!(json["flat"], true);
        assert_eq!(json["peak_bytes"], 33 << 20);

        let growing = Resident {
            samples: vec![70 << 20, 80 << 20],
            hold_start: 0,
            peak: 80 << 20,
            ..resident
        };
        assert!(growing.describe().contains("peak 80.0 MiB (VmHWM) ✗"));
        assert!(growing.describe().contains("→ 80.0 MiB ✗"));
        let untouched = Resident {
            hold_start: 2,
            ..growing
        };
        assert!(untouched.describe().contains("no sample during the hold"));
        assert_eq!(untouched.to_json()["flat"], Value::Null);
    }
}
