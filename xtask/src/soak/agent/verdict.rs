//! What the agent soak reads and whether it passes: the agent's metrics
//! text, the processes it says it traces, its profile directory and the
//! windows seen in it, and the verdict. Pure, so it is tested without root.

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
/// forked child, the C program, and one that ended within the last
/// interval and is dropped at the next.
pub const MAX_TRACED: u64 = 5;
/// The start of the line the agent prints for each process it takes on.
const TRACING: &str = "memtrace agent: tracing pid ";
/// A window file's name in `--pprof-dir` is `memtrace-<unix ms, 13
/// digits>-<service>-<pid>.pb.gz` (memtrace/src/export/push/spool.rs).
const WINDOW_PREFIX: &str = "memtrace-";
const WINDOW_SUFFIX: &str = ".pb.gz";
const WINDOW_TIME_DIGITS: usize = 13;

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

/// One run of a restarted workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub pid: u32,
    /// The child the service's `fork_touch` forked (`child=PID`).
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

/// The profile windows seen in `--pprof-dir` over the soak, by file name.
/// The directory removes the oldest to stay under its cap, so they are
/// noted as they arrive, not counted at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windows {
    names: BTreeSet<String>,
}

impl Windows {
    /// Notes the window files among `names` (other files are not the
    /// agent's).
    pub fn observe(&mut self, names: impl IntoIterator<Item = String>) {
        self.names
            .extend(names.into_iter().filter(|name| window_of(name).is_some()));
    }

    /// How many were seen for `service`.
    pub fn count(&self, service: &str) -> u64 {
        self.of(service).count() as u64
    }

    /// The processes of `service` that had one.
    pub fn pids(&self, service: &str) -> BTreeSet<u32> {
        self.of(service).collect()
    }

    /// The PID of each window seen for `service`.
    fn of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = u32> + 'a {
        self.names
            .iter()
            .filter_map(|name| window_of(name))
            .filter(move |(of, _)| *of == service)
            .map(|(_, pid)| pid)
    }
}

/// The service and PID in a window file's name, `None` for other names.
/// The service name may hold `-`, the PID cannot.
fn window_of(name: &str) -> Option<(&str, u32)> {
    let rest = name
        .strip_prefix(WINDOW_PREFIX)?
        .strip_suffix(WINDOW_SUFFIX)?;
    let (time, rest) = rest.split_at_checked(WINDOW_TIME_DIGITS)?;
    if !time.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let (service, pid) = rest.strip_prefix('-')?.rsplit_once('-')?;
    Some((service, pid.parse().ok()?))
}

/// Bytes in KiB, rounded up: profile windows are a few KiB.
pub fn kibibytes(bytes: u64) -> String {
    format!("{} KiB", thousands(bytes.div_ceil(1024)))
}

/// One target's figures so far, at a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub target: &'static str,
    /// PIDs (runs and their children) the agent said it traces for it.
    pub traced: u64,
    /// Its profile windows seen in `--pprof-dir`.
    pub windows: u64,
}

/// One reading of the agent, every sample period.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReading {
    /// Its VmRSS and CPU time, as the memtrace soak reads them.
    pub reading: Reading,
    /// Its metrics, or why they could not be read.
    pub scrape: Result<Scrape, String>,
    pub spool: Spool,
    /// Each target's, in the soak's order.
    pub targets: Vec<Tally>,
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
            let targets = self.targets.iter().map(|tally| {
                let figures = json!({ "pids_traced": tally.traced, "windows": tally.windows });
                (tally.target.to_owned(), figures)
            });
            sample.insert("targets".to_owned(), targets.collect());
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
    /// The windows seen in it over the soak.
    pub windows: &'a Windows,
    pub targets: &'a [TargetRuns<'a>],
}

/// One target's workload: its runs and the PIDs the agent said it traces
/// for it.
#[derive(Debug)]
pub struct TargetRuns<'a> {
    /// The target's name, which is also its windows' service name.
    pub name: &'a str,
    pub runs: &'a [Run],
    pub adopted: &'a BTreeSet<u32>,
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

/// How many of a target's processes the agent took on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adoption {
    pub runs: u64,
    pub runs_traced: u64,
    pub children: u64,
    pub children_traced: u64,
}

impl Adoption {
    fn of(ran: &[Run], adopted: &BTreeSet<u32>) -> Self {
        let count = |pids: &mut dyn Iterator<Item = u32>| {
            let (all, traced) = pids.fold((0, 0), |(all, traced), pid| {
                (all + 1, traced + u64::from(adopted.contains(&pid)))
            });
            (all, traced)
        };
        let (runs, runs_traced) = count(&mut ran.iter().map(|run| run.pid));
        let (children, children_traced) = count(&mut ran.iter().filter_map(|run| run.child));
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

    /// Forked children are named only for a workload that forks.
    pub fn describe(&self) -> String {
        let runs = format!("{} of {} runs", self.runs_traced, self.runs);
        match self.children {
            0 => runs,
            children => format!(
                "{runs} and {} of {children} forked children",
                self.children_traced
            ),
        }
    }
}

/// What the agent made of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOutcome {
    pub name: String,
    pub adoption: Adoption,
    /// Its windows seen over the soak.
    pub windows: u64,
    /// The PIDs the agent said it traces for it, and how many of them had
    /// a window seen: each has one at the latest when it ends or the agent
    /// does.
    pub traced: u64,
    pub with_windows: u64,
    /// What is wrong with it, each a sentence.
    pub problems: Vec<String>,
}

impl TargetOutcome {
    fn of(target: &TargetRuns, windows: &Windows) -> Self {
        let windowed = windows.pids(target.name);
        let mut outcome = Self {
            name: target.name.to_owned(),
            adoption: Adoption::of(target.runs, target.adopted),
            windows: windows.count(target.name),
            traced: target.adopted.len() as u64,
            with_windows: target.adopted.intersection(&windowed).count() as u64,
            problems: Vec::new(),
        };
        outcome.problems = outcome.find_problems(target.runs);
        outcome
    }

    pub fn is_fine(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} traced; {} windows, from {} of {} processes",
            self.adoption.describe(),
            thousands(self.windows),
            self.with_windows,
            self.traced
        )
    }

    fn find_problems(&self, runs: &[Run]) -> Vec<String> {
        let name = &self.name;
        let mut problems: Vec<String> = runs
            .iter()
            .filter_map(|run| {
                let why = run.failed.as_ref()?;
                Some(format!("{name}'s run as pid {} failed: {why}", run.pid))
            })
            .collect();
        if self.adoption.runs == 0 {
            problems.push(format!("{name} never ran"));
        } else if !self.adoption.is_enough() {
            problems.push(format!(
                "the agent traced only {} of {name} (all but one of each expected)",
                self.adoption.describe()
            ));
        }
        if self.windows == 0 {
            problems.push(format!("no profile window of {name} reached --pprof-dir"));
        }
        if self.with_windows < self.traced {
            problems.push(format!(
                "no window of {} of the {} processes traced for {name} reached --pprof-dir",
                self.traced - self.with_windows,
                self.traced
            ));
        }
        problems
    }

    fn to_json(&self) -> Value {
        json!({
            "target": self.name,
            "runs": self.adoption.runs,
            "runs_traced": self.adoption.runs_traced,
            "children": self.adoption.children,
            "children_traced": self.adoption.children_traced,
            "windows": self.windows,
            "pids_traced": self.traced,
            "pids_with_windows": self.with_windows,
        })
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
    /// Each target's, in the soak's order.
    pub targets: Vec<TargetOutcome>,
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

        let targets: Vec<TargetOutcome> = evidence
            .targets
            .iter()
            .map(|target| TargetOutcome::of(target, evidence.windows))
            .collect();
        for target in &targets {
            problems.extend(target.problems.iter().cloned());
        }

        Self {
            problems,
            flatness,
            growers,
            stacks,
            lost,
            most_traced,
            targets,
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
            "targets": self.targets.iter().map(TargetOutcome::to_json).collect::<Vec<_>>(),
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

    #[test]
    fn windows_are_counted_by_service_and_pid() {
        assert_eq!(
            window_of("memtrace-1700000001000-svc-42.pb.gz"),
            Some(("svc", 42))
        );
        assert_eq!(
            window_of("memtrace-1700000001000-shop-api-7.pb.gz"),
            Some(("shop-api", 7)),
            "a service name may hold dashes"
        );
        for other in [
            "memtrace-1700000001000.pb.gz",
            "memtrace-170000000100-svc-42.pb.gz",
            "memtrace-1700000001000-svc-x.pb.gz",
            "memtrace-1700000001000-svc-42.pb.gz.tmp",
            "agent.toml",
        ] {
            assert_eq!(window_of(other), None, "{other}");
        }
        let mut windows = Windows::default();
        windows.observe([
            window(1, "svc", 42),
            window(2, "svc2", 43),
            "heap.pb.gz".to_owned(),
        ]);
        // Seen again at the next look, and a new one: each counts once.
        windows.observe([window(1, "svc", 42), window(11, "svc", 44)]);
        assert_eq!(windows.count("svc"), 2);
        assert_eq!(windows.pids("svc"), BTreeSet::from([42, 44]));
        assert_eq!(windows.count("svc2"), 1);
        assert_eq!(windows.count("nofp"), 0);
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
            targets: vec![Tally {
                target: "svc",
                traced: seconds / 5,
                windows: seconds / 10,
            }],
        }
    }

    /// The name of `service`'s window of process `pid`, `ms` after a
    /// moment in 2023.
    fn window(ms: u64, service: &str, pid: u32) -> String {
        format!(
            "memtrace-{:013}-{service}-{pid}.pb.gz",
            1_700_000_000_000 + ms
        )
    }

    /// A target's workload, every process of it traced.
    struct Target {
        name: &'static str,
        runs: Vec<Run>,
        adopted: BTreeSet<u32>,
    }

    impl Target {
        /// `count` runs from pid `first` on, each with a forked child if
        /// `forks`.
        fn new(name: &'static str, count: u32, first: u32, forks: bool) -> Self {
            let runs: Vec<Run> = (0..count)
                .map(|n| Run {
                    pid: first + 2 * n,
                    child: forks.then_some(first + 2 * n + 1),
                    failed: None,
                })
                .collect();
            let adopted = runs
                .iter()
                .flat_map(|run| [run.pid].into_iter().chain(run.child))
                .collect();
            Self {
                name,
                runs,
                adopted,
            }
        }
    }

    struct Case {
        readings: Vec<AgentReading>,
        exit: Result<(), String>,
        targets: Vec<Target>,
        windows: Windows,
        spool: Spool,
    }

    impl Case {
        fn passing() -> Self {
            let targets = vec![
                Target::new("churn", 3, 100, false),
                Target::new("svc", 6, 200, true),
                Target::new("nofp", 2, 300, false),
            ];
            let mut windows = Windows::default();
            for target in &targets {
                let names = target
                    .adopted
                    .iter()
                    .map(|&pid| window(u64::from(pid), target.name, pid));
                windows.observe(names);
            }
            Self {
                readings: [(10, 30, 500), (20, 40, 900), (30, 40, 950), (40, 41, 990)]
                    .into_iter()
                    .map(|(s, rss, stacks)| reading(s, rss, stacks))
                    .collect(),
                exit: Ok(()),
                targets,
                windows,
                spool: Spool {
                    files: 12,
                    bytes: 300_000,
                },
            }
        }

        /// Forgets the windows seen of `service`'s process `pid`.
        fn without_windows(&mut self, service: &str, pid: u32) {
            self.windows
                .names
                .retain(|name| window_of(name) != Some((service, pid)));
        }

        fn judge(&self) -> AgentVerdict {
            let targets: Vec<TargetRuns> = self
                .targets
                .iter()
                .map(|target| TargetRuns {
                    name: target.name,
                    runs: &target.runs,
                    adopted: &target.adopted,
                })
                .collect();
            AgentVerdict::judge(&AgentEvidence {
                readings: &self.readings,
                warmup: Duration::from_secs(20),
                ended_early: None,
                exit: &self.exit,
                mappings: None,
                spool: self.spool,
                spool_cap: MIB,
                windows: &self.windows,
                targets: &targets,
            })
        }
    }

    #[test]
    fn a_clean_agent_soak_passes() {
        let case = Case::passing();
        let verdict = case.judge();
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
        let described: Vec<String> = verdict
            .targets
            .iter()
            .map(TargetOutcome::describe)
            .collect();
        assert_eq!(
            described,
            [
                "3 of 3 runs traced; 3 windows, from 3 of 3 processes",
                "6 of 6 runs and 6 of 6 forked children traced; 12 windows, from 12 of 12 \
                 processes",
                "2 of 2 runs traced; 2 windows, from 2 of 2 processes",
            ]
        );
        assert!(verdict.targets.iter().all(TargetOutcome::is_fine));
        let json = verdict.to_json();
        assert_eq!(json["passed"], true);
        assert_eq!(json["flat"], true);
        assert_eq!(json["rss_after_warmup"]["rss_bytes"], 40 * MIB);
        assert_eq!(json["stacks_last"], 990);
        assert_eq!(json["most_traced_processes"], 3);
        assert_eq!(json["targets"][1]["children_traced"], 6);
        assert_eq!(json["targets"][2]["pids_with_windows"], 2);
        let sample = case.readings[3].to_json();
        assert_eq!(sample["targets"]["svc"]["pids_traced"], 8);
        assert_eq!(sample["targets"]["svc"]["windows"], 4);
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
        let service = &mut case.targets[1].adopted;
        service.remove(&200);
        service.remove(&201);
        assert_eq!(case.judge().problems, Vec::<String>::new());
        case.targets[1].adopted.remove(&202);
        case.targets[2].adopted.clear();
        assert_eq!(
            case.judge().problems,
            [
                "the agent traced only 4 of 6 runs and 5 of 6 forked children of svc (all but \
                 one of each expected)",
                "the agent traced only 0 of 2 runs of nofp (all but one of each expected)",
            ]
        );
    }

    #[test]
    fn every_traced_process_needs_a_window() {
        let mut case = Case::passing();
        case.without_windows("churn", 102);
        case.without_windows("svc", 203);
        case.without_windows("nofp", 300);
        case.without_windows("nofp", 302);
        let verdict = case.judge();
        assert_reported(
            &verdict.problems,
            &[
                "no window of 1 of the 3 processes traced for churn reached --pprof-dir",
                "no window of 1 of the 12 processes traced for svc reached --pprof-dir",
                "no profile window of nofp reached --pprof-dir",
                "no window of 2 of the 2 processes traced for nofp reached --pprof-dir",
            ],
        );
        assert!(!verdict.targets[0].is_fine());
        assert_eq!(
            verdict.targets[2].describe(),
            "2 of 2 runs traced; 0 windows, from 0 of 2 processes"
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
        case.targets[0].runs[1].failed = Some("soak_churn printed no result line".to_owned());
        case.targets[1].runs[2].failed = Some("exit status: 3".to_owned());
        case.targets[1].adopted.clear();
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
            "churn's run as pid 102 failed: soak_churn printed no result line",
            "svc's run as pid 204 failed: exit status: 3",
            "the agent traced only 0 of 6 runs and 0 of 6 forked children of svc",
            ],
        );
        assert!(
            !verdict.targets[0].is_fine(),
            "a failed run marks its target"
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
            windows: &Windows::default(),
            targets: &[TargetRuns {
                name: "svc",
                runs: &[],
                adopted: &BTreeSet::new(),
            }],
        });
        assert_reported(
            &verdict.problems,
            &[
                "the agent was gone 10 s into the soak",
                "0 sample(s) of memtrace's RSS after the 20 s warm-up",
                "no scrape of /metrics after warm-up",
                "the agent wrote no profile window",
                "svc never ran",
                "no profile window of svc reached --pprof-dir",
            ],
        );
        assert!(!verdict.targets[0].is_fine());
    }
}
