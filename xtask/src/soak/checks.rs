//! What a soak run observed and whether it passes: memtrace's JSON lines as
//! they arrive, its RSS readings, its mappings, and the verdict. Pure, so it
//! is tested without root.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{json, Value};

use crate::{
    bench::workload::{parse_outcome, Benchmark},
    snapshot::lost_records,
    text::{mebibytes, thousands},
};

/// How much memtrace's RSS may grow from the first sample after warm-up to
/// the last: 5%. Allocator noise moves it by less, while anything kept per
/// event, per interval or per stack grows past it in a long run. Shrinking
/// is fine.
pub const FLAT_PERCENT: u64 = 5;
/// How much of the workload's RSS may be unexplained in the last interval
/// snapshot: 1%.
const UNEXPLAINED_PERCENT: u64 = 1;
/// How many stdout lines that are not snapshots (the workload's) are kept.
const OTHER_LINES: usize = 20;
/// How many of memtrace's mappings a growth report names.
const GROWERS: usize = 5;

/// `records.seen` and `records.lost_total` of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Records {
    pub seen: u64,
    pub lost: u64,
}

/// The workload's RSS and what memtrace could not explain of it, from an
/// interval snapshot that had the kernel's view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconciled {
    /// The snapshot's `elapsed_s`: since memtrace attached.
    pub elapsed_s: f64,
    pub unexplained_bytes: u64,
    /// `kernel.rss_bytes`.
    pub kernel_rss_bytes: u64,
}

impl Reconciled {
    /// Unexplained bytes at most 1% of the kernel's RSS.
    pub fn within_bounds(&self) -> bool {
        self.unexplained_bytes * 100 <= self.kernel_rss_bytes * UNEXPLAINED_PERCENT
    }

    fn percent(&self) -> f64 {
        percent(self.unexplained_bytes, self.kernel_rss_bytes)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} B unexplained of {} ({:.2}%) at {:.0} s",
            thousands(self.unexplained_bytes),
            mebibytes(self.kernel_rss_bytes),
            self.percent(),
            self.elapsed_s
        )
    }
}

/// What one memtrace's stdout said so far: its JSON snapshots (`--json -`)
/// and the workload's lines.
#[derive(Debug, Default)]
pub struct Observed {
    /// Snapshots read.
    pub snapshots: u64,
    /// As of the latest snapshot.
    pub records: Option<Records>,
    /// From the last interval snapshot with the kernel's view.
    pub reconciled: Option<Reconciled>,
    /// The `"type":"final"` snapshot.
    pub final_snapshot: Option<Value>,
    /// The last lines that were not snapshots.
    pub other: Vec<String>,
}

impl Observed {
    pub fn observe(&mut self, line: &str) {
        let snapshot = serde_json::from_str::<Value>(line)
            .ok()
            .filter(|value| value["schema"] == "memtrace.snapshot");
        let Some(snapshot) = snapshot else {
            if self.other.len() == OTHER_LINES {
                self.other.remove(0);
            }
            self.other.push(line.to_owned());
            return;
        };
        self.snapshots += 1;
        let count = |pointer: &str| snapshot.pointer(pointer).and_then(Value::as_u64);
        if let (Some(seen), Some(lost)) = (count("/records/seen"), count("/records/lost_total")) {
            self.records = Some(Records { seen, lost });
        }
        match snapshot["type"].as_str() {
            Some("interval") => {
                // Only intervals with a kernel reading to hold the model against.
                if let (Some(unexplained_bytes), Some(kernel_rss_bytes)) =
                    (count("/unexplained_bytes"), count("/kernel/rss_bytes"))
                {
                    self.reconciled = Some(Reconciled {
                        elapsed_s: snapshot["elapsed_s"].as_f64().unwrap_or(0.0),
                        unexplained_bytes,
                        kernel_rss_bytes,
                    });
                }
            }
            Some("final") => self.final_snapshot = Some(snapshot),
            _ => {}
        }
    }

    /// How many times the workload's Go heap was collected, from gochurn's
    /// result line; `Err` says why it is missing.
    pub fn collections(&self) -> Result<u64, String> {
        parse_outcome(&self.other, Benchmark::GoChurn)
            .and_then(|outcome| outcome.field("num_gc"))
            .map_err(|err| format!("{err:#}"))
    }
}

/// One reading of memtrace, taken every sample period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Since the soak started memtrace.
    pub elapsed: Duration,
    /// memtrace's VmRSS.
    pub rss_bytes: u64,
    /// memtrace's own CPU time since it started.
    pub cpu: Duration,
    /// ... of which in the period since the previous reading.
    pub period_cpu: Duration,
    /// From the latest snapshot, if any yet.
    pub records: Option<Records>,
    pub reconciled: Option<Reconciled>,
}

impl Reading {
    pub fn to_json(self) -> Value {
        json!({
            "elapsed_s": self.elapsed.as_secs_f64(),
            "memtrace_rss_bytes": self.rss_bytes,
            "memtrace_cpu_s": self.cpu.as_secs_f64(),
            "period_cpu_s": self.period_cpu.as_secs_f64(),
            "records_seen": self.records.map(|records| records.seen),
            "records_lost": self.records.map(|records| records.lost),
            "workload_rss_bytes": self.reconciled.map(|r| r.kernel_rss_bytes),
            "unexplained_bytes": self.reconciled.map(|r| r.unexplained_bytes),
        })
    }
}

/// memtrace's RSS from the first reading after warm-up to the last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flatness {
    pub baseline: Reading,
    pub last: Reading,
}

impl Flatness {
    /// The first reading at or after `warmup` and the last reading; `Err`
    /// when fewer than two readings are past the warm-up.
    pub fn of(readings: &[Reading], warmup: Duration) -> Result<Self, String> {
        let after = &readings[readings.partition_point(|reading| reading.elapsed < warmup)..];
        match after {
            [baseline, .., last] => Ok(Self {
                baseline: *baseline,
                last: *last,
            }),
            _ => Err(format!(
                "{} sample(s) of memtrace's RSS after the {} s warm-up, too few to tell \
                 whether it stays flat",
                after.len(),
                warmup.as_secs()
            )),
        }
    }

    /// The last reading at most 5% above the baseline.
    pub fn is_flat(&self) -> bool {
        self.last.rss_bytes * 100 <= self.baseline.rss_bytes * (100 + FLAT_PERCENT)
    }

    /// Growth from baseline to last, in percent of the baseline (negative
    /// when it shrank).
    pub fn growth_percent(&self) -> f64 {
        (self.last.rss_bytes as f64 - self.baseline.rss_bytes as f64) * 100.0
            / self.baseline.rss_bytes.max(1) as f64
    }

    pub fn describe(&self) -> String {
        format!(
            "{} at {} s → {} at {} s ({:+.1}%)",
            mebibytes(self.baseline.rss_bytes),
            self.baseline.elapsed.as_secs_f64().round(),
            mebibytes(self.last.rss_bytes),
            self.last.elapsed.as_secs_f64().round(),
            self.growth_percent()
        )
    }
}

/// Resident bytes of a process by mapping (a file's path, `[heap]`,
/// `[stack]`, or `[anon]` for anonymous mappings with no name), from its
/// /proc/PID/smaps. A file deleted or replaced since it was mapped keeps its
/// name, so it compares with an earlier reading.
pub type Mappings = BTreeMap<String, u64>;

pub fn resident_by_mapping(smaps: &str) -> Mappings {
    let mut resident = Mappings::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else {
            continue;
        };
        if is_address_range(first) {
            // address perms offset dev inode [pathname]; a file replaced
            // on disk (memtrace rebuilt while it runs) is the same mapping.
            let name = fields.skip(4).collect::<Vec<_>>().join(" ");
            let name = name.strip_suffix(" (deleted)").unwrap_or(&name).to_owned();
            current = Some(if name.is_empty() {
                "[anon]".to_owned()
            } else {
                name
            });
        } else if first == "Rss:" {
            let kib = fields.next().and_then(|value| value.parse::<u64>().ok());
            if let (Some(name), Some(kib)) = (&current, kib) {
                *resident.entry(name.clone()).or_default() += kib * 1024;
            }
        }
    }
    resident
}

fn is_address_range(field: &str) -> bool {
    let hex = |part: &str| !part.is_empty() && part.chars().all(|c| c.is_ascii_hexdigit());
    field
        .split_once('-')
        .is_some_and(|(start, end)| hex(start) && hex(end))
}

/// The mappings whose resident bytes grew from `before` to `after`, most
/// first, at most five.
pub fn growers(before: &Mappings, after: &Mappings) -> Vec<(String, u64)> {
    let mut grown: Vec<(String, u64)> = after
        .iter()
        .filter_map(|(name, &bytes)| {
            let grew = bytes.saturating_sub(before.get(name).copied().unwrap_or(0));
            (grew > 0).then(|| (name.clone(), grew))
        })
        .collect();
    grown.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    grown.truncate(GROWERS);
    grown
}

fn describe_growers(growers: &[(String, u64)]) -> String {
    growers
        .iter()
        .map(|(name, bytes)| format!("{name} +{}", mebibytes(*bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What went wrong with how `who` ended: gone at a sample before the
/// soak's end (`ended_early`), or not exiting 0 (`exit_failed` says why;
/// `asked` how it was asked to end, e.g. " on SIGTERM").
pub fn ending_problems(
    who: &str,
    ended_early: Option<Duration>,
    exit_failed: Option<&String>,
    asked: &str,
) -> Vec<String> {
    let gone = ended_early.map(|at| {
        format!(
            "{who} was gone {} s into the soak, before its end",
            at.as_secs_f64().round()
        )
    });
    let failed = exit_failed.map(|why| format!("{who} did not exit 0{asked}: {why}"));
    gone.into_iter().chain(failed).collect()
}

/// memtrace's RSS from the first reading after warm-up to the last, and the
/// mappings that grew between `mappings` (baseline, last); a problem is
/// added when it grew more than 5% or too few readings are past the
/// warm-up.
pub fn rss_check(
    readings: &[Reading],
    warmup: Duration,
    mappings: Option<(&Mappings, &Mappings)>,
    problems: &mut Vec<String>,
) -> (Option<Flatness>, Vec<(String, u64)>) {
    let growers = mappings
        .map(|(before, after)| growers(before, after))
        .unwrap_or_default();
    let flatness = match Flatness::of(readings, warmup) {
        Ok(flatness) => {
            if !flatness.is_flat() {
                let mut problem = format!(
                    "memtrace's RSS grew more than {FLAT_PERCENT}% after warm-up: {}",
                    flatness.describe()
                );
                if !growers.is_empty() {
                    problem.push_str(&format!(
                        "; grown in /proc/PID/smaps: {}",
                        describe_growers(&growers)
                    ));
                }
                problems.push(problem);
            }
            Some(flatness)
        }
        Err(why) => {
            problems.push(why);
            None
        }
    };
    (flatness, growers)
}

/// Everything the verdict on one memtrace run is drawn from.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub readings: &'a [Reading],
    pub warmup: Duration,
    pub observed: &'a Observed,
    /// When memtrace was found gone at a sample before the soak's end.
    pub ended_early: Option<Duration>,
    /// memtrace's own CPU time when it exited 0, or why it did not.
    pub exit: &'a Result<Duration, String>,
    /// memtrace's mappings at the baseline reading and the last.
    pub mappings: Option<(&'a Mappings, &'a Mappings)>,
}

/// The checks on one memtrace run.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub flatness: Option<Flatness>,
    /// Where memtrace's RSS grew after warm-up, by mapping.
    pub growers: Vec<(String, u64)>,
    /// `records.lost_total` of the final snapshot.
    pub lost: Option<u64>,
    pub reconciled: Option<Reconciled>,
    /// What failed, each a sentence; empty when the run passed.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn judge(evidence: &Evidence) -> Self {
        let mut problems = ending_problems(
            "memtrace",
            evidence.ended_early,
            evidence.exit.as_ref().err(),
            "",
        );

        let (flatness, growers) = rss_check(
            evidence.readings,
            evidence.warmup,
            evidence.mappings,
            &mut problems,
        );

        let observed = evidence.observed;
        let lost = match &observed.final_snapshot {
            Some(snapshot) => {
                problems.extend(lost_records(snapshot));
                snapshot
                    .pointer("/records/lost_total")
                    .and_then(Value::as_u64)
            }
            None => {
                problems.push(format!(
                    "memtrace wrote no final snapshot ({} snapshot(s) read)",
                    observed.snapshots
                ));
                None
            }
        };

        match &observed.reconciled {
            Some(reconciled) if !reconciled.within_bounds() => problems.push(format!(
                "the workload's RSS was not reconciled in the last interval snapshot: {}, \
                 more than {UNEXPLAINED_PERCENT}%",
                reconciled.describe()
            )),
            Some(_) => {}
            None => problems.push(
                "no interval snapshot had the kernel's view of the workload (kernel.rss_bytes)"
                    .to_owned(),
            ),
        }

        if let Err(why) = observed.collections() {
            problems.push(format!("the workload did not finish its run: {why}"));
        }

        Self {
            flatness,
            growers,
            lost,
            reconciled: observed.reconciled,
            problems,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut verdict = json!({
            "passed": self.problems.is_empty(),
            "records_lost": self.lost,
            "unexplained_bytes": self.reconciled.map(|r| r.unexplained_bytes),
            "workload_rss_bytes": self.reconciled.map(|r| r.kernel_rss_bytes),
            "reconciled": self.reconciled.as_ref().map(Reconciled::within_bounds),
            "problems": self.problems,
        });
        add_rss_json(&mut verdict, self.flatness.as_ref(), &self.growers);
        verdict
    }
}

/// Adds what [`rss_check`] found to a verdict's JSON object: `flat`,
/// `rss_after_warmup`, `rss_last`, `rss_growth_percent`, `rss_grown_in`.
pub fn add_rss_json(verdict: &mut Value, flatness: Option<&Flatness>, growers: &[(String, u64)]) {
    let reading = |reading: &Reading| json!({"elapsed_s": reading.elapsed.as_secs_f64(), "rss_bytes": reading.rss_bytes});
    let rss = json!({
        "flat": flatness.map(Flatness::is_flat),
        "rss_after_warmup": flatness.map(|f| reading(&f.baseline)),
        "rss_last": flatness.map(|f| reading(&f.last)),
        "rss_growth_percent": flatness.map(Flatness::growth_percent),
        "rss_grown_in": growers.iter()
            .map(|(mapping, bytes)| json!({"mapping": mapping, "bytes": bytes}))
            .collect::<Vec<_>>(),
    });
    if let (Some(verdict), Value::Object(rss)) = (verdict.as_object_mut(), rss) {
        verdict.extend(rss);
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

/// Asserts that each of `expected` is in one of `problems`, and that there
/// are no others.
#[cfg(test)]
pub fn assert_reported(problems: &[String], expected: &[&str]) {
    let all = problems.join("\n");
    for expected in expected {
        assert!(all.contains(expected), "{expected}\nnot in\n{all}");
    }
    assert_eq!(problems.len(), expected.len(), "{all}");
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn reading(seconds: u64, rss_bytes: u64) -> Reading {
        Reading {
            elapsed: Duration::from_secs(seconds),
            rss_bytes,
            cpu: Duration::from_secs(seconds / 10),
            period_cpu: Duration::from_millis(100),
            records: Some(Records {
                seen: seconds * 1000,
                lost: 0,
            }),
            reconciled: None,
        }
    }

    fn readings(rss_mib: &[u64]) -> Vec<Reading> {
        rss_mib
            .iter()
            .enumerate()
            .map(|(index, &mib)| reading(10 * (index as u64 + 1), mib * MIB))
            .collect()
    }

    #[test]
    fn flat_allows_five_percent_of_growth_and_any_shrinking() {
        let warmup = Duration::from_secs(20);
        let flat = |rss: &[u64]| Flatness::of(&readings(rss), warmup).unwrap().is_flat();
        assert!(flat(&[10, 40, 40, 40, 41, 42]), "40 → 42 is +5%");
        assert!(!flat(&[10, 40, 40, 40, 41, 43]), "40 → 43 is +7.5%");
        assert!(flat(&[10, 40, 60, 60, 30]), "shrinking is flat enough");
        assert!(
            flat(&[10, 20, 100, 100, 21]),
            "only the first after warm-up and the last count"
        );
    }

    #[test]
    fn the_baseline_is_the_first_reading_at_or_after_the_warm_up() {
        let all = readings(&[10, 20, 30, 40]);
        let flatness = Flatness::of(&all, Duration::from_secs(20)).unwrap();
        assert_eq!(flatness.baseline.elapsed, Duration::from_secs(20));
        assert_eq!(flatness.last.elapsed, Duration::from_secs(40));
        assert_eq!(flatness.growth_percent(), 100.0);
        assert_eq!(
            flatness.describe(),
            "20.0 MiB at 20 s → 40.0 MiB at 40 s (+100.0%)"
        );
        let message = Flatness::of(&all, Duration::from_secs(40)).unwrap_err();
        assert!(message.starts_with("1 sample(s) of memtrace's RSS after the 40 s warm-up"));
        assert!(Flatness::of(&[], Duration::ZERO).is_err());
    }

    fn snapshot(kind: &str, seen: u64, lost: u64, kernel_rss: Option<u64>) -> String {
        json!({
            "schema": "memtrace.snapshot", "type": kind, "seq": 1, "elapsed_s": 59.7,
            "records": {"seen": seen, "lost_total": lost, "lost": {"faults": lost}},
            "unexplained_bytes": 4096,
            "kernel": kernel_rss.map(|rss| json!({"rss_bytes": rss})),
        })
        .to_string()
    }

    const GOCHURN: &str =
        r#"{"benchmark":"gochurn","seconds":70.0,"operations":5517312,"bytes":1,"num_gc":2718}"#;

    fn observed(lines: &[String]) -> Observed {
        let mut observed = Observed::default();
        for line in lines {
            observed.observe(line);
        }
        observed
    }

    #[test]
    fn snapshots_and_the_workloads_lines_are_told_apart() {
        let observed = observed(&[
            snapshot("interval", 100, 0, Some(40 * MIB)),
            "not json".to_owned(),
            snapshot("interval", 200, 0, Some(50 * MIB)),
            GOCHURN.to_owned(),
            r#"{"schema":"memtrace.snap"#.to_owned(),
            snapshot("final", 300, 2, None),
        ]);
        assert_eq!(observed.snapshots, 3);
        assert_eq!(observed.records, Some(Records { seen: 300, lost: 2 }));
        assert_eq!(
            observed.reconciled,
            Some(Reconciled {
                elapsed_s: 59.7,
                unexplained_bytes: 4096,
                kernel_rss_bytes: 50 * MIB
            }),
            "the last interval with the kernel's view; the final has none"
        );
        assert_eq!(observed.final_snapshot.as_ref().unwrap()["type"], "final");
        assert_eq!(observed.other.len(), 3);
        assert_eq!(observed.collections(), Ok(2718));
    }

    #[test]
    fn only_the_last_few_other_lines_are_kept() {
        let lines: Vec<String> = (0..50).map(|n| format!("line {n}")).collect();
        let observed = observed(&lines);
        assert_eq!(observed.other.len(), OTHER_LINES);
        assert_eq!(observed.other.last().unwrap(), "line 49");
        assert!(observed
            .collections()
            .unwrap_err()
            .contains("no result line"));
    }

    #[test]
    fn unexplained_may_be_one_percent() {
        let reconciled = |unexplained_bytes| Reconciled {
            elapsed_s: 60.2,
            unexplained_bytes,
            kernel_rss_bytes: 100 * MIB,
        };
        assert!(reconciled(MIB).within_bounds());
        assert!(!reconciled(MIB + 1).within_bounds());
        assert_eq!(
            reconciled(4096).describe(),
            "4,096 B unexplained of 100.0 MiB (0.00%) at 60 s"
        );
    }

    #[test]
    fn mappings_are_summed_by_name_and_anonymous_ones_together() {
        let smaps = "\
55d0c0a00000-55d0c0c00000 r-xp 00000000 fd:01 1234    /work/target/release/memtrace
Size:               2048 kB
Rss:                1500 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0       [heap]
Rss:                 800 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                 100 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                  20 kB
Pss:                  20 kB
7f0000400000-7f0000500000 r--p 00000000 fd:01 99      /tmp/with space
Rss:                   4 kB
VmFlags: rd mr mw me ac sd
7f0000600000-7f0000700000 r--p 00100000 fd:01 99      /tmp/with space (deleted)
Rss:                   8 kB
";
        let resident = resident_by_mapping(smaps);
        assert_eq!(resident["/work/target/release/memtrace"], 1500 * 1024);
        assert_eq!(resident["[heap]"], 800 * 1024);
        assert_eq!(resident["[anon]"], 120 * 1024);
        assert_eq!(resident["/tmp/with space"], 12 * 1024);
        assert_eq!(resident.len(), 4);
        assert!(resident_by_mapping("").is_empty());
    }

    #[test]
    fn growers_are_the_mappings_that_grew_most_first() {
        let before: Mappings = [("[heap]", 10 * MIB), ("[anon]", 5 * MIB), ("lib", MIB)]
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), bytes))
            .collect();
        let after: Mappings = [("[heap]", 12 * MIB), ("[anon]", 9 * MIB), ("new", MIB)]
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), bytes))
            .collect();
        assert_eq!(
            growers(&before, &after),
            [
                ("[anon]".to_owned(), 4 * MIB),
                ("[heap]".to_owned(), 2 * MIB),
                ("new".to_owned(), MIB)
            ]
        );
        assert!(growers(&after, &after).is_empty());
    }

    fn passing() -> (Vec<Reading>, Observed) {
        let observed = observed(&[
            snapshot("interval", 200, 0, Some(50 * MIB)),
            GOCHURN.to_owned(),
            snapshot("final", 300, 0, None),
        ]);
        (readings(&[30, 35, 35, 35, 36, 35]), observed)
    }

    fn evidence<'a>(
        readings: &'a [Reading],
        observed: &'a Observed,
        exit: &'a Result<Duration, String>,
    ) -> Evidence<'a> {
        Evidence {
            readings,
            warmup: Duration::from_secs(20),
            observed,
            ended_early: None,
            exit,
            mappings: None,
        }
    }

    #[test]
    fn a_clean_run_passes() {
        let (readings, observed) = passing();
        let exit = Ok(Duration::from_secs(3));
        let before: Mappings = [("[heap]".to_owned(), 20 * MIB)].into();
        let after: Mappings = [("[heap]".to_owned(), 20 * MIB + 4096)].into();
        let verdict = Verdict::judge(&Evidence {
            mappings: Some((&before, &after)),
            ..evidence(&readings, &observed, &exit)
        });
        assert_eq!(verdict.problems, Vec::<String>::new());
        assert_eq!(verdict.lost, Some(0));
        let json = verdict.to_json();
        assert_eq!(
            json["rss_grown_in"][0]["bytes"], 4096,
            "growth is recorded even when flat"
        );
        assert_eq!(json["passed"], true);
        assert_eq!(json["flat"], true);
        assert_eq!(json["rss_after_warmup"]["rss_bytes"], 35 * MIB);
        assert_eq!(json["reconciled"], true);
    }

    #[test]
    fn growth_names_the_mappings_that_grew() {
        let (_, observed) = passing();
        let growing = readings(&[30, 35, 36, 38, 40]);
        let exit = Ok(Duration::from_secs(3));
        let before: Mappings = [("[heap]".to_owned(), 20 * MIB)].into();
        let after: Mappings = [("[heap]".to_owned(), 25 * MIB)].into();
        let verdict = Verdict::judge(&Evidence {
            mappings: Some((&before, &after)),
            ..evidence(&growing, &observed, &exit)
        });
        assert_eq!(
            verdict.problems,
            [
                "memtrace's RSS grew more than 5% after warm-up: 35.0 MiB at 20 s → 40.0 MiB at \
              50 s (+14.3%); grown in /proc/PID/smaps: [heap] +5.0 MiB"
            ]
        );
        assert_eq!(verdict.to_json()["rss_grown_in"][0]["mapping"], "[heap]");
    }

    #[test]
    fn every_failure_is_reported() {
        let observed = observed(&[
            snapshot("interval", 200, 3, Some(99 * 4096)),
            snapshot("interval", 200, 3, None),
        ]);
        let readings = readings(&[30]);
        let exit = Err("`memtrace ...`: it failed (exit status: 1)".to_owned());
        let verdict = Verdict::judge(&Evidence {
            ended_early: Some(Duration::from_secs(10)),
            ..evidence(&readings, &observed, &exit)
        });
        assert_reported(
            &verdict.problems,
            &[
                "memtrace was gone 10 s into the soak",
                "memtrace did not exit 0: `memtrace ...`: it failed (exit status: 1)",
                "0 sample(s) of memtrace's RSS after the 20 s warm-up",
                "memtrace wrote no final snapshot (2 snapshot(s) read)",
                "not reconciled in the last interval snapshot: 4,096 B unexplained of 0.4 MiB \
                 (1.01%) at 60 s",
                "the workload did not finish its run: gochurn printed no result line",
            ],
        );
        assert_eq!(verdict.to_json()["passed"], false);
    }

    #[test]
    fn lost_records_fail_the_run() {
        let observed = observed(&[
            snapshot("interval", 200, 0, Some(50 * MIB)),
            GOCHURN.to_owned(),
            snapshot("final", 300, 7, None),
        ]);
        let readings = readings(&[30, 35, 35]);
        let exit = Ok(Duration::from_secs(3));
        let verdict = Verdict::judge(&evidence(&readings, &observed, &exit));
        assert_eq!(
            verdict.problems,
            ["7 records lost (records.lost: {\"faults\":7}), expected none"]
        );
        assert_eq!(verdict.lost, Some(7));
    }
}
