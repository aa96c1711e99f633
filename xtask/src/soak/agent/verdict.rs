//! What the agent soak reads and whether it passes: the agent's metrics
//! text, the processes it says it traces, its profile directory, and the
//! verdict. Pure, so it is tested without root.

use std::{collections::BTreeSet, time::Duration};

use serde_json::{json, Value};

use crate::{
    soak::checks::{
        add_rss_json, ending_problems, rss_check, Flatness, Mappings, Reading, FLAT_PERCENT,
    },
    text::thousands,
};

/// The agent's stack-table cap (memtrace/src/agent/run.rs `STACK_CAP`):
/// past it, stacks that explain no resident memory are pruned.
pub const STACK_CAP: u64 = 100_000;
/// Processes the agent may trace at once: the churn, the service and its
/// forked child, and one that ended within the last interval and is
/// dropped at the next.
pub const MAX_TRACED: u64 = 4;
/// The start of the line the agent prints for each process it takes on.
const TRACING: &str = "memtrace agent: tracing pid ";

/// The agent's own series in one scrape of /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrape {
    /// `memtrace_traced_processes`.
    pub traced: u64,
    /// `memtrace_stacks`.
    pub stacks: u64,
    /// `memtrace_stacks_pruned_total`.
    pub pruned: u64,
    /// `memtrace_lost_records_total`.
    pub lost: u64,
    /// `memtrace_agent_resident_bytes`: the agent's RSS as it reads it.
    pub resident_bytes: u64,
    /// How many `memtrace_rss_bytes` series (one per process and part).
    pub rss_series: u64,
}

impl Scrape {
    /// The series in OpenMetrics text; `Err` names the first one missing.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value = |name: &str| {
            unlabelled(text, name).ok_or_else(|| format!("/metrics has no `{name}` sample"))
        };
        Ok(Self {
            traced: value("memtrace_traced_processes")?,
            stacks: value("memtrace_stacks")?,
            pruned: value("memtrace_stacks_pruned_total")?,
            lost: value("memtrace_lost_records_total")?,
            resident_bytes: value("memtrace_agent_resident_bytes")?,
            rss_series: text
                .lines()
                .filter(|line| line.starts_with("memtrace_rss_bytes{"))
                .count() as u64,
        })
    }

    pub fn to_json(self) -> Value {
        json!({
            "traced_processes": self.traced,
            "stacks": self.stacks,
            "stacks_pruned_total": self.pruned,
            "lost_records_total": self.lost,
            "agent_resident_bytes": self.resident_bytes,
            "rss_series": self.rss_series,
        })
    }
}

/// The value of the series `name` without labels (`name 123`), as an
/// integer (a float sample is rounded down).
fn unlabelled(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == name)
            .then(|| fields.next()?.parse::<f64>().ok())
            .flatten()
            .filter(|value| value.is_finite() && *value >= 0.0)
            .map(|value| value as u64)
    })
}

/// The body of an HTTP response, if its status is 200.
pub fn http_body(response: &str) -> Result<&str, String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or("the response has no end of headers")?;
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(body),
        _ => Err(format!("answered `{status}`")),
    }
}

/// A process the agent said it traces for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    pub pid: u32,
    pub command: String,
    pub target: String,
}

impl Adopted {
    /// `memtrace agent: tracing pid N (COMMAND) for NAME`.
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix(TRACING)?;
        let (pid, rest) = rest.split_once(' ')?;
        let (command, target) = rest.strip_prefix('(')?.rsplit_once(") for ")?;
        Some(Self {
            pid: pid.parse().ok()?,
            command: command.to_owned(),
            target: target.to_owned(),
        })
    }

    /// The PIDs traced for `target` in the agent's stderr `lines`.
    pub fn pids<'a>(lines: impl IntoIterator<Item = &'a str>, target: &str) -> BTreeSet<u32> {
        lines
            .into_iter()
            .filter_map(Self::parse)
            .filter(|adopted| adopted.target == target)
            .map(|adopted| adopted.pid)
            .collect()
    }
}

/// One run of the restarting service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRun {
    pub pid: u32,
    /// The child its `fork_touch` forked (`child=PID`).
    pub child: Option<u32>,
    /// Why it did not exit 0, if it did not.
    pub failed: Option<String>,
}

/// The child PID in memops's `fork_touch` line (`... child=PID`).
pub fn forked_child(stdout: &str) -> Option<u32> {
    stdout.lines().find_map(|line| {
        line.starts_with("op ")
            .then(|| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix("child="))
            })
            .flatten()?
            .parse()
            .ok()
    })
}

/// The profile windows in the agent's `--pprof-dir`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spool {
    pub files: u64,
    pub bytes: u64,
}

impl Spool {
    pub fn describe(self) -> String {
        format!("{} files, {}", thousands(self.files), kibibytes(self.bytes))
    }
}

/// Bytes in KiB, rounded up: profile windows are a few KiB.
pub fn kibibytes(bytes: u64) -> String {
    format!("{} KiB", thousands(bytes.div_ceil(1024)))
}

/// One reading of the agent, every sample period.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReading {
    /// Its VmRSS and CPU time, as the memtrace soak reads them.
    pub reading: Reading,
    /// Its metrics, or why they could not be read.
    pub scrape: Result<Scrape, String>,
    pub spool: Spool,
    /// Service PIDs (runs and their children) it said it traces so far.
    pub adopted: u64,
}

impl AgentReading {
    pub fn to_json(&self) -> Value {
        let mut sample = self.reading.to_json();
        if let Some(sample) = sample.as_object_mut() {
            // The agent's records are in its metrics, not in snapshots.
            for key in [
                "records_seen",
                "records_lost",
                "workload_rss_bytes",
                "unexplained_bytes",
            ] {
                sample.remove(key);
            }
            sample.insert(
                "metrics".to_owned(),
                match &self.scrape {
                    Ok(scrape) => scrape.to_json(),
                    Err(why) => json!({ "error": why }),
                },
            );
            sample.insert("pprof_files".to_owned(), self.spool.files.into());
            sample.insert("pprof_bytes".to_owned(), self.spool.bytes.into());
            sample.insert("service_pids_traced".to_owned(), self.adopted.into());
        }
        sample
    }
}

/// Everything the verdict on the agent soak is drawn from.
#[derive(Debug)]
pub struct AgentEvidence<'a> {
    pub readings: &'a [AgentReading],
    pub warmup: Duration,
    /// When the agent was found gone at a sample before the soak's end.
    pub ended_early: Option<Duration>,
    /// Ok when it exited 0 on SIGTERM, else why not.
    pub exit: &'a Result<(), String>,
    /// The agent's mappings at the first reading after warm-up and the last.
    pub mappings: Option<(&'a Mappings, &'a Mappings)>,
    /// The profile directory once the agent ended, and its cap.
    pub spool: Spool,
    pub spool_cap: u64,
    pub service: &'a [ServiceRun],
    /// The service PIDs the agent said it traces.
    pub adopted: &'a BTreeSet<u32>,
    /// Why the long-lived churn did not run to its end, if it did not.
    pub churn_failed: Option<&'a str>,
}

/// The number of stacks the agent holds, after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackCount {
    /// At the first scrape after warm-up and at the last.
    pub baseline: u64,
    pub last: u64,
    /// The most at any scrape.
    pub most: u64,
    pub pruned: u64,
}

impl StackCount {
    /// Under the cap at every scrape, or no more than 5% up after warm-up.
    pub fn is_bounded(&self) -> bool {
        self.most <= STACK_CAP || self.last * 100 <= self.baseline * (100 + FLAT_PERCENT)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} after warm-up → {} at the end, at most {}; {} pruned",
            thousands(self.baseline),
            thousands(self.last),
            thousands(self.most),
            thousands(self.pruned)
        )
    }
}

/// How many of the service's processes the agent took on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adoption {
    pub runs: u64,
    pub runs_traced: u64,
    pub children: u64,
    pub children_traced: u64,
}

impl Adoption {
    fn of(service: &[ServiceRun], adopted: &BTreeSet<u32>) -> Self {
        let count = |pids: &mut dyn Iterator<Item = u32>| {
            let (all, traced) = pids.fold((0, 0), |(all, traced), pid| {
                (all + 1, traced + u64::from(adopted.contains(&pid)))
            });
            (all, traced)
        };
        let (runs, runs_traced) = count(&mut service.iter().map(|run| run.pid));
        let (children, children_traced) = count(&mut service.iter().filter_map(|run| run.child));
        Self {
            runs,
            runs_traced,
            children,
            children_traced,
        }
    }

    /// All but at most one of each: the last run may start as the soak
    /// ends.
    pub fn is_enough(&self) -> bool {
        self.runs_traced + 1 >= self.runs && self.children_traced + 1 >= self.children
    }

    pub fn describe(&self) -> String {
        format!(
            "{} of {} runs and {} of {} forked children",
            self.runs_traced, self.runs, self.children_traced, self.children
        )
    }
}

/// The checks on the agent soak.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentVerdict {
    /// What failed, each a sentence; empty when the soak passed.
    pub problems: Vec<String>,
    pub flatness: Option<Flatness>,
    pub growers: Vec<(String, u64)>,
    pub stacks: Option<StackCount>,
    /// `memtrace_lost_records_total` at the last scrape.
    pub lost: Option<u64>,
    /// The most processes traced at once after warm-up.
    pub most_traced: Option<u64>,
    pub adoption: Adoption,
}

impl AgentVerdict {
    pub fn judge(evidence: &AgentEvidence) -> Self {
        // Asked to end with SIGTERM, it must exit 0.
        let exit = evidence.exit.as_ref().err();
        let mut problems = ending_problems("the agent", evidence.ended_early, exit, " on SIGTERM");

        let readings: Vec<Reading> = evidence.readings.iter().map(|r| r.reading).collect();
        let (flatness, growers) =
            rss_check(&readings, evidence.warmup, evidence.mappings, &mut problems);

        for reading in evidence.readings {
            if let Err(why) = &reading.scrape {
                problems.push(format!(
                    "/metrics could not be read {} s into the soak: {why}",
                    reading.reading.elapsed.as_secs_f64().round()
                ));
            }
        }
        let scrapes: Vec<(Duration, Scrape)> = evidence
            .readings
            .iter()
            .filter_map(|r| Some((r.reading.elapsed, *r.scrape.as_ref().ok()?)))
            .collect();
        let after: Vec<Scrape> = scrapes
            .iter()
            .filter(|(elapsed, _)| *elapsed >= evidence.warmup)
            .map(|(_, scrape)| *scrape)
            .collect();

        let stacks = match (after.first(), after.last()) {
            (Some(baseline), Some(last)) => Some(StackCount {
                baseline: baseline.stacks,
                last: last.stacks,
                most: scrapes.iter().map(|(_, s)| s.stacks).max().unwrap_or(0),
                pruned: last.pruned,
            }),
            _ => None,
        };
        match stacks {
            Some(stacks) if !stacks.is_bounded() => problems.push(format!(
                "the agent's stacks passed the cap of {} and grew more than {FLAT_PERCENT}% \
                 after warm-up: {}",
                thousands(STACK_CAP),
                stacks.describe()
            )),
            Some(_) => {}
            None => problems.push("no scrape of /metrics after warm-up".to_owned()),
        }

        let lost = scrapes.last().map(|(_, scrape)| scrape.lost);
        if let Some(lost) = lost.filter(|&lost| lost > 0) {
            problems.push(format!(
                "{} records lost (memtrace_lost_records_total), expected none",
                thousands(lost)
            ));
        }

        let most_traced = after.iter().map(|scrape| scrape.traced).max();
        if let Some(most) = most_traced.filter(|&most| most > MAX_TRACED) {
            problems.push(format!(
                "the agent traced {most} processes at once after warm-up, more than the \
                 {MAX_TRACED} that can be alive: ended ones are not dropped"
            ));
        }

        let spool = evidence.spool;
        if spool.files == 0 {
            problems.push("the agent wrote no profile window to --pprof-dir".to_owned());
        }
        let most_spooled = evidence
            .readings
            .iter()
            .map(|r| r.spool.bytes)
            .chain([spool.bytes])
            .max()
            .unwrap_or(0);
        if most_spooled > evidence.spool_cap {
            problems.push(format!(
                "--pprof-dir held {}, more than its cap of {}",
                kibibytes(most_spooled),
                kibibytes(evidence.spool_cap)
            ));
        }

        for run in evidence.service {
            if let Some(why) = &run.failed {
                problems.push(format!(
                    "the service's run as pid {} failed: {why}",
                    run.pid
                ));
            }
        }
        let adoption = Adoption::of(evidence.service, evidence.adopted);
        if adoption.runs == 0 {
            problems.push("the service never ran".to_owned());
        } else if !adoption.is_enough() {
            problems.push(format!(
                "the agent traced only {} (all but one of each expected)",
                adoption.describe()
            ));
        }
        if let Some(why) = evidence.churn_failed {
            problems.push(format!(
                "the long-lived churn did not finish its run: {why}"
            ));
        }

        Self {
            problems,
            flatness,
            growers,
            stacks,
            lost,
            most_traced,
            adoption,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut verdict = json!({
            "passed": self.problems.is_empty(),
            "stacks_after_warmup": self.stacks.map(|s| s.baseline),
            "stacks_last": self.stacks.map(|s| s.last),
            "stacks_most": self.stacks.map(|s| s.most),
            "stacks_pruned_total": self.stacks.map(|s| s.pruned),
            "stacks_bounded": self.stacks.as_ref().map(StackCount::is_bounded),
            "records_lost": self.lost,
            "most_traced_processes": self.most_traced,
            "service_runs": self.adoption.runs,
            "service_runs_traced": self.adoption.runs_traced,
            "service_children": self.adoption.children,
            "service_children_traced": self.adoption.children_traced,
            "problems": self.problems,
        });
        add_rss_json(&mut verdict, self.flatness.as_ref(), &self.growers);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::checks::assert_reported;

    const MIB: u64 = 1 << 20;

    const METRICS: &str = "\
# TYPE memtrace_rss_bytes gauge
memtrace_rss_bytes{target=\"churn\",pid=\"12\",command=\"soak_churn\",part=\"in_use\"} 4096
memtrace_rss_bytes{target=\"churn\",pid=\"12\",command=\"soak_churn\",part=\"file\"} 8192
# TYPE memtrace_lost_records counter
memtrace_lost_records_total 0
# TYPE memtrace_traced_processes gauge
memtrace_traced_processes 2
# TYPE memtrace_stacks gauge
memtrace_stacks 1234
memtrace_stacks_created 1.7e9
# TYPE memtrace_stacks_pruned counter
memtrace_stacks_pruned_total 40
memtrace_agent_resident_bytes 3.5e7
# EOF
";

    #[test]
    fn the_agents_series_are_read_from_the_metrics_text() {
        let scrape = Scrape::parse(METRICS).unwrap();
        assert_eq!(
            scrape,
            Scrape {
                traced: 2,
                stacks: 1234,
                pruned: 40,
                lost: 0,
                resident_bytes: 35_000_000,
                rss_series: 2,
            }
        );
        let without = METRICS.replace("memtrace_stacks 1234\n", "");
        assert_eq!(
            Scrape::parse(&without).unwrap_err(),
            "/metrics has no `memtrace_stacks` sample"
        );
        assert_eq!(scrape.to_json()["stacks_pruned_total"], 40);
    }

    #[test]
    fn only_a_200_has_a_body() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbody\n";
        assert_eq!(http_body(ok), Ok("body\n"));
        assert_eq!(
            http_body("HTTP/1.1 404 Not Found\r\n\r\n"),
            Err("answered `HTTP/1.1 404 Not Found`".to_owned())
        );
        assert!(http_body("HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn traced_processes_are_read_from_the_agents_lines() {
        let lines = [
            "memtrace agent: 2 target(s), 0 process(es) now; metrics on http://127.0.0.1:1/metrics",
            "memtrace agent: tracing pid 41 (soak_churn) for churn",
            "memtrace agent: tracing pid 42 (soak_svc) for svc",
            "memtrace agent: tracing pid 43 (a (b) for c) for svc",
            "memtrace agent: tracing pid x (soak_svc) for svc",
            "memtrace agent: cannot trace pid 44: gone",
        ];
        assert_eq!(
            Adopted::parse(lines[3]),
            Some(Adopted {
                pid: 43,
                command: "a (b) for c".to_owned(),
                target: "svc".to_owned()
            })
        );
        assert_eq!(Adopted::pids(lines, "svc"), BTreeSet::from([42, 43]));
        assert_eq!(Adopted::pids(lines, "churn"), BTreeSet::from([41]));
    }

    #[test]
    fn the_forked_child_is_read_from_memops_output() {
        let stdout = "pid 100\nop 0 map A addr=0x7f00 len=1 ret=0\n\
                      op 3 fork_touch A addr=0x7f00 len=1 ret=0 child=101\n";
        assert_eq!(forked_child(stdout), Some(101));
        assert_eq!(forked_child("pid 100\n"), None);
    }

    fn reading(seconds: u64, rss_mib: u64, stacks: u64) -> AgentReading {
        AgentReading {
            reading: Reading {
                elapsed: Duration::from_secs(seconds),
                rss_bytes: rss_mib * MIB,
                cpu: Duration::from_secs(seconds / 10),
                period_cpu: Duration::from_millis(100),
                records: None,
                reconciled: None,
            },
            scrape: Ok(Scrape {
                traced: 3,
                stacks,
                pruned: 0,
                lost: 0,
                resident_bytes: rss_mib * MIB,
                rss_series: 12,
            }),
            spool: Spool {
                files: seconds / 10,
                bytes: seconds * 1000,
            },
            adopted: seconds / 5,
        }
    }

    fn runs(count: u32) -> Vec<ServiceRun> {
        (0..count)
            .map(|n| ServiceRun {
                pid: 100 + 2 * n,
                child: Some(101 + 2 * n),
                failed: None,
            })
            .collect()
    }

    struct Case {
        readings: Vec<AgentReading>,
        exit: Result<(), String>,
        service: Vec<ServiceRun>,
        adopted: BTreeSet<u32>,
        spool: Spool,
    }

    impl Case {
        fn passing() -> Self {
            let service = runs(6);
            let adopted = service
                .iter()
                .flat_map(|run| [run.pid].into_iter().chain(run.child))
                .collect();
            Self {
                readings: [(10, 30, 500), (20, 40, 900), (30, 40, 950), (40, 41, 990)]
                    .into_iter()
                    .map(|(s, rss, stacks)| reading(s, rss, stacks))
                    .collect(),
                exit: Ok(()),
                service,
                adopted,
                spool: Spool {
                    files: 12,
                    bytes: 300_000,
                },
            }
        }

        fn judge(&self) -> AgentVerdict {
            AgentVerdict::judge(&AgentEvidence {
                readings: &self.readings,
                warmup: Duration::from_secs(20),
                ended_early: None,
                exit: &self.exit,
                mappings: None,
                spool: self.spool,
                spool_cap: MIB,
                service: &self.service,
                adopted: &self.adopted,
                churn_failed: None,
            })
        }
    }

    #[test]
    fn a_clean_agent_soak_passes() {
        let verdict = Case::passing().judge();
        assert_eq!(verdict.problems, Vec::<String>::new());
        assert_eq!(
            verdict.stacks,
            Some(StackCount {
                baseline: 900,
                last: 990,
                most: 990,
                pruned: 0
            }),
            "under the cap, growing stacks are fine"
        );
        assert_eq!(
            verdict.adoption.describe(),
            "6 of 6 runs and 6 of 6 forked children"
        );
        let json = verdict.to_json();
        assert_eq!(json["passed"], true);
        assert_eq!(json["flat"], true);
        assert_eq!(json["rss_after_warmup"]["rss_bytes"], 40 * MIB);
        assert_eq!(json["stacks_last"], 990);
        assert_eq!(json["most_traced_processes"], 3);
    }

    #[test]
    fn stacks_past_the_cap_must_stay_flat() {
        let at = |baseline, last| StackCount {
            baseline,
            last,
            most: last.max(baseline),
            pruned: 7,
        };
        assert!(at(90_000, 100_000).is_bounded());
        assert!(at(100_000, 105_000).is_bounded(), "+5% past the cap");
        assert!(!at(100_000, 105_001).is_bounded());
        assert!(at(120_000, 101_000).is_bounded(), "pruned back down");
        assert_eq!(
            at(100_000, 120_000).describe(),
            "100,000 after warm-up → 120,000 at the end, at most 120,000; 7 pruned"
        );
    }

    #[test]
    fn one_missed_run_is_allowed_two_are_not() {
        let mut case = Case::passing();
        case.adopted.remove(&100);
        case.adopted.remove(&101);
        assert_eq!(case.judge().problems, Vec::<String>::new());
        case.adopted.remove(&102);
        assert_eq!(
            case.judge().problems,
            [
                "the agent traced only 4 of 6 runs and 5 of 6 forked children (all but one of \
              each expected)"
            ]
        );
    }

    #[test]
    fn every_agent_failure_is_reported() {
        let mut case = Case::passing();
        case.exit = Err("exit status: 1".to_owned());
        case.readings[1].scrape = Err("connection refused".to_owned());
        let last = case.readings.last_mut().unwrap();
        last.reading.rss_bytes = 50 * MIB;
        last.spool.bytes = 2 * MIB;
        if let Ok(scrape) = &mut last.scrape {
            scrape.lost = 9;
            scrape.traced = 7;
            scrape.stacks = 200_000;
        }
        case.readings[2].scrape.as_mut().unwrap().stacks = 150_000;
        case.service[2].failed = Some("exit status: 3".to_owned());
        case.adopted.clear();
        case.spool.files = 0;
        let verdict = case.judge();
        assert_reported(
            &verdict.problems,
            &[
            "the agent did not exit 0 on SIGTERM: exit status: 1",
            "memtrace's RSS grew more than 5% after warm-up: 40.0 MiB at 20 s → 50.0 MiB at 40 s",
            "/metrics could not be read 20 s into the soak: connection refused",
            "the agent's stacks passed the cap of 100,000 and grew more than 5% after warm-up: \
             150,000 after warm-up → 200,000 at the end",
            "9 records lost (memtrace_lost_records_total), expected none",
            "the agent traced 7 processes at once after warm-up",
            "the agent wrote no profile window to --pprof-dir",
            "--pprof-dir held 2,048 KiB, more than its cap of 1,024 KiB",
            "the service's run as pid 104 failed: exit status: 3",
            "the agent traced only 0 of 6 runs and 0 of 6 forked children",
            ],
        );
        assert_eq!(verdict.to_json()["passed"], false);
    }

    #[test]
    fn nothing_to_judge_is_a_failure() {
        let verdict = AgentVerdict::judge(&AgentEvidence {
            readings: &[],
            warmup: Duration::from_secs(20),
            ended_early: Some(Duration::from_secs(10)),
            exit: &Ok(()),
            mappings: None,
            spool: Spool::default(),
            spool_cap: MIB,
            service: &[],
            adopted: &BTreeSet::new(),
            churn_failed: Some("soak_churn printed no result line"),
        });
        assert_reported(
            &verdict.problems,
            &[
                "the agent was gone 10 s into the soak",
                "0 sample(s) of memtrace's RSS after the 20 s warm-up",
                "no scrape of /metrics after warm-up",
                "the agent wrote no profile window",
                "the service never ran",
                "the long-lived churn did not finish its run: soak_churn printed no result line",
            ],
        );
    }
}
