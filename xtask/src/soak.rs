//! `cargo xtask soak --minutes N`: memtrace left running for N minutes on
//! churning Go heaps, and checked for what a long run must not do: grow,
//! lose records, stop explaining the target's RSS, or fail to end well.
//!
//! Two memtraces run side by side at default settings, each starting its own
//! `gochurn`, which allocates, collects and gives memory back for the whole
//! soak: one Go runtime returns pages with MADV_DONTNEED
//! (`GODEBUG=madvdontneed=1`, Go 1.19's default), the other with MADV_FREE
//! (`madvdontneed=0`), so lazily freed pages, their reuse and LazyFree
//! reconciliation run for N minutes too. memtrace writes its snapshots to
//! stdout (`--json -`), which the soak reads as they come: a `--json FILE`
//! appears only when memtrace ends.
//!
//! Every sample period (10 s for a 1-minute soak, so CI gets several points;
//! a minute otherwise) each memtrace's VmRSS, own CPU time and records seen
//! and lost are read and printed. At the end each run must pass
//! [`Verdict::judge`]: RSS flat after warm-up, no records lost, memtrace ran
//! to the end and exited 0 with a final snapshot, and the workload's RSS
//! reconciled. CPU time is reported, never judged.
//!
//! `--agent` soaks `memtrace agent` instead (see [`agent`]): one agent for N
//! minutes on three workloads that keep restarting (a Go heap churn, a
//! service that forks, and a C program without frame pointers), read
//! through its own metrics and profile windows as well as /proc.

mod agent;
mod checks;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use memtrace_tests::workloads::Workloads;

use self::checks::{resident_by_mapping, Evidence, Flatness, Mappings, Observed, Reading, Verdict};
use crate::{
    child::{own_cpu, Sample, Started},
    privilege, setup,
    text::{mark, mebibytes, thousands},
    workspace,
};

/// The workload runs this long past the soak, so memtrace is still tracing
/// at the last sample.
const WORKLOAD_EXTRA: Duration = Duration::from_secs(10);
/// How long memtrace gets to end once the soak is over: the workload's last
/// seconds, then memtrace's final report.
const FINISH_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of each line of a failure's transcript is quoted: memtrace's
/// snapshot lines run to kilobytes.
const QUOTED_LINE_CHARS: usize = 300;

/// `cargo xtask soak` options.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// How long memtrace runs, in minutes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub minutes: u32,
    /// Also write the samples and the verdict as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Soak `memtrace agent` on three restarting workloads, read through
    /// its metrics and profile windows, instead of two memtraces.
    #[arg(long)]
    pub agent: bool,
}

impl Options {
    /// What CI runs: one minute.
    pub fn ci() -> Self {
        Self {
            minutes: 1,
            json: None,
            agent: false,
        }
    }

    /// The command that gives these options, for the report.
    fn command_line(&self) -> String {
        let mut line = "cargo xtask soak".to_owned();
        if self.agent {
            line.push_str(" --agent");
        }
        line.push_str(&format!(" --minutes {}", self.minutes));
        if let Some(json) = &self.json {
            line.push_str(&format!(" --json {}", json.display()));
        }
        line
    }
}

/// How long the soak lasts and when memtrace is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Schedule {
    length: Duration,
    period: Duration,
    /// Readings before this are shown but not judged: memtrace's RSS grows
    /// while it loads, learns the target's mappings and fills its tables.
    warmup: Duration,
}

impl Schedule {
    /// A reading every 10 s after a 20 s warm-up for a 1-minute soak, every
    /// minute after a 1-minute warm-up for longer ones.
    fn new(minutes: u32) -> Self {
        let length = Duration::from_secs(u64::from(minutes) * 60);
        if minutes == 1 {
            Self {
                length,
                period: Duration::from_secs(10),
                warmup: Duration::from_secs(20),
            }
        } else {
            Self {
                length,
                period: Duration::from_secs(60),
                warmup: Duration::from_secs(60),
            }
        }
    }

    /// When readings are taken, from the start: every period up to the end.
    fn times(self) -> impl Iterator<Item = Duration> {
        let count = (self.length.as_secs() / self.period.as_secs()) as u32;
        (1..=count).map(move |index| self.period * index)
    }

    /// gochurn's `-seconds`.
    fn workload_seconds(self) -> u64 {
        (self.length + WORKLOAD_EXTRA).as_secs()
    }
}

/// How the churning Go runtime gives memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Churn {
    DontNeed,
    Free,
}

impl Churn {
    const ALL: [Self; 2] = [Self::DontNeed, Self::Free];

    fn label(self) -> &'static str {
        match self {
            Self::DontNeed => "MADV_DONTNEED",
            Self::Free => "MADV_FREE",
        }
    }

    /// Set either way, so a GODEBUG in the caller's environment cannot
    /// change what runs.
    fn godebug(self) -> &'static str {
        match self {
            Self::DontNeed => "madvdontneed=1",
            Self::Free => "madvdontneed=0",
        }
    }

    /// memtrace's arguments: default settings, no live view, snapshots on
    /// stdout, and the workload.
    fn args(gochurn: &Path, seconds: u64) -> Vec<String> {
        vec![
            "-q".to_owned(),
            "--json".to_owned(),
            "-".to_owned(),
            "--".to_owned(),
            gochurn.display().to_string(),
            "-seconds".to_owned(),
            seconds.to_string(),
        ]
    }

    fn command(self, memtrace: &Path, gochurn: &Path, seconds: u64) -> Command {
        let mut command = Command::new(memtrace);
        command
            .args(Self::args(gochurn, seconds))
            .env("GODEBUG", self.godebug());
        command
    }

    /// The command as the report shows it: programs by name.
    fn command_line(self, seconds: u64) -> String {
        format!(
            "GODEBUG={} memtrace {}",
            self.godebug(),
            Self::args(Path::new("gochurn"), seconds).join(" ")
        )
    }
}

pub fn run(options: &Options) -> Result<()> {
    let (memtrace, programs) = prepare(options)?;
    if options.agent {
        return agent::run(options, &memtrace, programs);
    }
    let schedule = Schedule::new(options.minutes);
    println!("\n{}", header(options, schedule, &memtrace));

    let start = Instant::now();
    let mut runs = Churn::ALL
        .into_iter()
        .map(|churn| Soaking::start(churn, &memtrace, &programs.gochurn, schedule))
        .collect::<Result<Vec<_>>>()?;
    println!("{}", row_header());
    for at in schedule.times() {
        thread::sleep((start + at).saturating_duration_since(Instant::now()));
        let elapsed = start.elapsed();
        for run in &mut runs {
            if let Some(reading) = run.sample(elapsed, schedule.warmup)? {
                println!("{}", row(run.churn, &reading, schedule.period));
            }
        }
        if runs.iter().all(|run| run.ended_early.is_some()) {
            break;
        }
    }
    let soaked = runs
        .into_iter()
        .map(|run| run.finish(schedule))
        .collect::<Result<Vec<_>>>()?;
    for run in &soaked {
        println!("\n{}", run.summary(schedule));
    }

    write_json(
        options,
        schedule,
        json!({
            "workload_seconds": schedule.workload_seconds(),
            "runs": soaked.iter().map(|run| run.to_json(schedule)).collect::<Vec<_>>(),
            "passed": soaked.iter().all(|run| run.verdict.problems.is_empty()),
        }),
    )?;
    let problems: Vec<String> = soaked
        .iter()
        .flat_map(|run| {
            run.verdict
                .problems
                .iter()
                .map(move |problem| format!("{}: {problem}", run.churn.label()))
        })
        .collect();
    fail_on(&problems)?;
    println!(
        "\nsoak passed: after {} minute(s) memtrace's RSS is flat, it lost no records, exited \
         0 with a final snapshot, and explained the workload's RSS",
        options.minutes
    );
    Ok(())
}

/// Root, the tools, memtrace (release) and the workloads, for either soak.
fn prepare(options: &Options) -> Result<(PathBuf, &'static Workloads)> {
    if !privilege::is_root()? {
        bail!(
            "xtask soak must run as root (memtrace loads eBPF programs): run it with sudo, \
             e.g. `sudo -E env \"PATH=$PATH\" {}`",
            options.command_line()
        );
    }
    setup::run(setup::Mode::Install)?;
    let memtrace = workspace::build_memtrace()?;
    let programs =
        memtrace_tests::workloads::ensure_built().context("cannot build the soak's workload")?;
    Ok((memtrace, programs))
}

/// Writes `results` to `--json FILE`, if given, after the command and the
/// schedule.
fn write_json(options: &Options, schedule: Schedule, results: Value) -> Result<()> {
    let Some(path) = &options.json else {
        return Ok(());
    };
    let mut all = json!({
        "command": options.command_line(),
        "minutes": options.minutes,
        "sample_period_s": schedule.period.as_secs(),
        "warmup_s": schedule.warmup.as_secs(),
    });
    if let (Some(all), Value::Object(results)) = (all.as_object_mut(), results) {
        all.extend(results);
    }
    fs::write(path, format!("{all:#}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Fails the soak when any check failed, listing them.
fn fail_on(problems: &[String]) -> Result<()> {
    if !problems.is_empty() {
        bail!(
            "soak failed, {} check(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// What the summary says of memtrace's RSS after warm-up.
fn rss_summary(flatness: Option<&Flatness>) -> String {
    flatness.map_or_else(
        || "✗ too few samples after warm-up".to_owned(),
        |flatness| {
            format!(
                "{} {} (flat: at most +{}% after warm-up)",
                flatness.describe(),
                mark(flatness.is_flat()),
                checks::FLAT_PERCENT
            )
        },
    )
}

/// memtrace's CPU time from the first reading after warm-up to the last,
/// as a share of a core.
fn cpu_share_after_warmup(flatness: &Flatness) -> String {
    let cpu = flatness.last.cpu.saturating_sub(flatness.baseline.cpu);
    let wall = flatness
        .last
        .elapsed
        .saturating_sub(flatness.baseline.elapsed);
    format!(
        "{:.1}% of a core after warm-up (not judged)",
        cpu.as_secs_f64() * 100.0 / wall.as_secs_f64().max(f64::EPSILON)
    )
}

/// What runs, how it is read and what is checked.
fn header(options: &Options, schedule: Schedule, memtrace: &Path) -> String {
    let seconds = schedule.workload_seconds();
    let commands: Vec<String> = Churn::ALL
        .iter()
        .map(|churn| format!("  {:<15}{}", churn.label(), churn.command_line(seconds)))
        .collect();
    format!(
        "{}\nmemtrace: {}\nTwo memtraces at default settings, side by side for {} minute(s), \
         each tracing a Go heap churn that gives memory back its own way:\n{}\n\
         Every {} s: memtrace's VmRSS, its own CPU time (utime + stime) in the period, and the \
         records it saw and lost (its latest snapshot).\nChecks: RSS flat after the first {} s \
         (the last sample at most 5% above the first after it), no records lost, exit 0 with a \
         final snapshot, the workload's unexplained bytes at most 1% of its RSS in the last \
         interval snapshot. CPU time is not judged.\n",
        options.command_line(),
        memtrace.display(),
        options.minutes,
        commands.join("\n"),
        schedule.period.as_secs(),
        schedule.warmup.as_secs()
    )
}

fn row_header() -> String {
    format!(
        "{:>8}  {:<14}{:>13}  {:>15}  {:>13}  {:>5}",
        "elapsed", "churn", "memtrace RSS", "CPU in period", "records seen", "lost"
    )
}

fn row(churn: Churn, reading: &Reading, period: Duration) -> String {
    let cpu = reading.period_cpu.as_secs_f64();
    let share = cpu * 100.0 / period.as_secs_f64();
    let (seen, lost) = match reading.records {
        Some(records) => (thousands(records.seen), thousands(records.lost)),
        None => ("-".to_owned(), "-".to_owned()),
    };
    format!(
        "{:>6} s  {:<14}{:>13}  {:>15}  {seen:>13}  {lost:>5}",
        reading.elapsed.as_secs_f64().round(),
        churn.label(),
        mebibytes(reading.rss_bytes),
        format!("{cpu:.2} s ({share:.1}%)"),
    )
}

/// One memtrace being soaked.
struct Soaking {
    churn: Churn,
    memtrace: Started,
    observed: Observed,
    readings: Vec<Reading>,
    mappings: Growth,
    /// When memtrace was found gone before the end.
    ended_early: Option<Duration>,
}

/// A process's VmRSS and own CPU time `elapsed` into the soak, with the CPU
/// time since the `previous` reading; `None` once it is gone. Records and
/// reconciliation are left for the caller.
fn read_process(
    pid: u32,
    elapsed: Duration,
    previous: Option<&Reading>,
) -> Result<Option<Reading>> {
    let Some(memory) = Sample::read(pid) else {
        return Ok(None);
    };
    let cpu = own_cpu(pid)?;
    let before = previous.map_or(Duration::ZERO, |last| last.cpu);
    Ok(Some(Reading {
        elapsed,
        rss_bytes: memory.rss_bytes,
        cpu,
        period_cpu: cpu.saturating_sub(before),
        records: None,
        reconciled: None,
    }))
}

/// A process's mappings at the first reading after warm-up and at the
/// latest, to name what grew.
#[derive(Debug, Default)]
struct Growth {
    baseline: Option<Mappings>,
    last: Option<Mappings>,
}

impl Growth {
    /// Reads process `pid`'s mappings `elapsed` into the soak, once past
    /// the warm-up; `previous` is when the reading before was taken.
    fn observe(
        &mut self,
        pid: u32,
        elapsed: Duration,
        warmup: Duration,
        previous: Option<Duration>,
    ) {
        if elapsed < warmup {
            return;
        }
        let mappings = fs::read_to_string(format!("/proc/{pid}/smaps"))
            .ok()
            .map(|smaps| resident_by_mapping(&smaps));
        if previous.is_none_or(|at| at < warmup) {
            self.baseline.clone_from(&mappings);
        }
        self.last = mappings;
    }

    /// (baseline, last), once both were read.
    fn pair(&self) -> Option<(&Mappings, &Mappings)> {
        self.baseline.as_ref().zip(self.last.as_ref())
    }
}

impl Soaking {
    fn start(churn: Churn, memtrace: &Path, gochurn: &Path, schedule: Schedule) -> Result<Self> {
        let mut command = churn.command(memtrace, gochurn, schedule.workload_seconds());
        Ok(Self {
            churn,
            memtrace: Started::spawn(&mut command)?,
            observed: Observed::default(),
            readings: Vec::new(),
            mappings: Growth::default(),
            ended_early: None,
        })
    }

    /// Reads memtrace `elapsed` into the soak; `None` once it is gone.
    fn sample(&mut self, elapsed: Duration, warmup: Duration) -> Result<Option<Reading>> {
        if self.ended_early.is_some() {
            return Ok(None);
        }
        self.take_output();
        let pid = self.memtrace.pid();
        let previous = self.readings.last();
        let reading = if self.memtrace.is_running()? {
            read_process(pid, elapsed, previous)?
        } else {
            None
        };
        let Some(reading) = reading else {
            self.ended_early = Some(elapsed);
            return Ok(None);
        };
        let reading = Reading {
            records: self.observed.records,
            reconciled: self.observed.reconciled,
            ..reading
        };
        self.mappings
            .observe(pid, elapsed, warmup, previous.map(|r| r.elapsed));
        self.readings.push(reading);
        Ok(Some(reading))
    }

    fn take_output(&mut self) {
        for line in self.memtrace.take_stdout() {
            self.observed.observe(&line);
        }
    }

    /// Waits for memtrace to end (the workload exits 10 s after the soak)
    /// and judges the run.
    fn finish(mut self, schedule: Schedule) -> Result<Soaked> {
        self.memtrace.wait_exit(FINISH_TIMEOUT)?;
        self.take_output();
        let Self {
            churn,
            memtrace,
            mut observed,
            readings,
            mappings,
            ended_early,
        } = self;
        let exit = match memtrace.finish(FINISH_TIMEOUT) {
            Ok(finished) => {
                for line in &finished.stdout {
                    observed.observe(line);
                }
                Ok(finished.cpu)
            }
            Err(err) => Err(shorten_lines(&format!("{err:#}"))),
        };
        let verdict = Verdict::judge(&Evidence {
            readings: &readings,
            warmup: schedule.warmup,
            observed: &observed,
            ended_early,
            exit: &exit,
            mappings: mappings.pair(),
        });
        Ok(Soaked {
            churn,
            readings,
            observed,
            exit,
            verdict,
        })
    }
}

/// Each line of `text` cut to [`QUOTED_LINE_CHARS`].
fn shorten_lines(text: &str) -> String {
    text.lines()
        .map(|line| match line.char_indices().nth(QUOTED_LINE_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One memtrace run, over and judged.
struct Soaked {
    churn: Churn,
    readings: Vec<Reading>,
    observed: Observed,
    /// memtrace's own CPU time if it exited 0, else why not.
    exit: Result<Duration, String>,
    verdict: Verdict,
}

impl Soaked {
    fn summary(&self, schedule: Schedule) -> String {
        let verdict = &self.verdict;
        let outcome = if verdict.problems.is_empty() {
            "passed ✓"
        } else {
            "FAILED ✗"
        };
        let mut lines = vec![format!(
            "{} ({}): {outcome}",
            self.churn.label(),
            self.churn.command_line(schedule.workload_seconds())
        )];
        let mut line = |what: &str, text: String| lines.push(format!("  {what:<22}{text}"));
        line("memtrace RSS", rss_summary(verdict.flatness.as_ref()));
        let seen = self.observed.records.map_or(0, |records| records.seen);
        line(
            "records",
            match verdict.lost {
                Some(lost) => format!(
                    "{} seen, {} lost {}",
                    thousands(seen),
                    thousands(lost),
                    mark(lost == 0)
                ),
                None => "✗ no final snapshot".to_owned(),
            },
        );
        line(
            "end",
            match (&self.exit, &self.observed.final_snapshot) {
                (Ok(_), Some(_)) => "exit 0, final snapshot written ✓".to_owned(),
                (Ok(_), None) => "exit 0, but no final snapshot ✗".to_owned(),
                (Err(_), _) => "✗ did not exit 0 (below)".to_owned(),
            },
        );
        line(
            "workload reconciled",
            verdict.reconciled.map_or_else(
                || "✗ no interval snapshot with the kernel's view".to_owned(),
                |reconciled| {
                    format!(
                        "{} {} (at most 1%)",
                        reconciled.describe(),
                        mark(reconciled.within_bounds())
                    )
                },
            ),
        );
        line("memtrace CPU", self.cpu_summary());
        line(
            "workload",
            match self.observed.collections() {
                Ok(collections) => {
                    format!("gochurn's heap collected {} times", thousands(collections))
                }
                Err(why) => format!("✗ {why}"),
            },
        );
        for problem in &verdict.problems {
            lines.push(format!("  ✗ {problem}"));
        }
        lines.join("\n")
    }

    /// memtrace's CPU time in all, and its share of a core after warm-up.
    fn cpu_summary(&self) -> String {
        let total = match &self.exit {
            Ok(cpu) => format!("{:.2} s in all", cpu.as_secs_f64()),
            Err(_) => "total unknown".to_owned(),
        };
        match &self.verdict.flatness {
            Some(flatness) => format!("{total}; {}", cpu_share_after_warmup(flatness)),
            None => format!("{total} (not judged)"),
        }
    }

    fn to_json(&self, schedule: Schedule) -> Value {
        json!({
            "churn": self.churn.label(),
            "command": self.churn.command_line(schedule.workload_seconds()),
            "samples": self.readings.iter().copied().map(Reading::to_json).collect::<Vec<_>>(),
            "memtrace_cpu_s": self.exit.as_ref().ok().map(Duration::as_secs_f64),
            "memtrace_exit": match &self.exit {
                Ok(_) => Value::from("0"),
                Err(why) => Value::from(why.as_str()),
            },
            "final_snapshot": self.observed.final_snapshot.is_some(),
            "records_seen": self.observed.records.map(|records| records.seen),
            "gochurn_num_gc": self.observed.collections().ok(),
            "verdict": self.verdict.to_json(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        crate::parse_task_options("soak", args)
    }

    #[test]
    fn minutes_are_required_and_positive() {
        assert_eq!(parse(&["--minutes", "30"]).unwrap().minutes, 30);
        assert!(parse(&[]).is_err());
        assert!(parse(&["--minutes", "0"]).is_err());
        let options = parse(&["--minutes", "2", "--json", "soak.json"]).unwrap();
        assert_eq!(
            options.command_line(),
            "cargo xtask soak --minutes 2 --json soak.json"
        );
        assert_eq!(Options::ci().command_line(), "cargo xtask soak --minutes 1");
        let agent = parse(&["--agent", "--minutes", "5"]).unwrap();
        assert!(agent.agent);
        assert_eq!(agent.command_line(), "cargo xtask soak --agent --minutes 5");
    }

    #[test]
    fn one_minute_is_read_every_ten_seconds_longer_soaks_every_minute() {
        let short = Schedule::new(1);
        let seconds =
            |schedule: Schedule| -> Vec<u64> { schedule.times().map(|at| at.as_secs()).collect() };
        assert_eq!(seconds(short), [10, 20, 30, 40, 50, 60]);
        assert_eq!(short.warmup, Duration::from_secs(20));
        assert_eq!(short.workload_seconds(), 70);
        let long = Schedule::new(30);
        assert_eq!(seconds(long).len(), 30);
        assert_eq!(seconds(long)[..2], [60, 120]);
        assert_eq!(seconds(long).last(), Some(&1800));
        assert_eq!(long.warmup, Duration::from_secs(60));
        assert_eq!(long.workload_seconds(), 1810);
        assert_eq!(seconds(Schedule::new(2)), [60, 120]);
    }

    #[test]
    fn both_churns_run_memtrace_at_default_settings() {
        assert_eq!(
            Churn::DontNeed.command_line(70),
            "GODEBUG=madvdontneed=1 memtrace -q --json - -- gochurn -seconds 70"
        );
        let command = Churn::Free.command(Path::new("/t/memtrace"), Path::new("/w/gochurn"), 70);
        assert_eq!(
            crate::process::describe(&command),
            "/t/memtrace -q --json - -- /w/gochurn -seconds 70"
        );
        let env: Vec<_> = command.get_envs().collect();
        assert_eq!(
            env,
            [(
                std::ffi::OsStr::new("GODEBUG"),
                Some(std::ffi::OsStr::new("madvdontneed=0"))
            )]
        );
    }

    #[test]
    fn rows_line_up_under_the_header() {
        let reading = Reading {
            elapsed: Duration::from_millis(10_004),
            rss_bytes: 35 << 20,
            cpu: Duration::from_millis(1200),
            period_cpu: Duration::from_millis(890),
            records: Some(checks::Records {
                seen: 245_047,
                lost: 0,
            }),
            reconciled: None,
        };
        let line = row(Churn::DontNeed, &reading, Duration::from_secs(10));
        assert_eq!(
            line,
            "    10 s  MADV_DONTNEED      35.0 MiB    0.89 s (8.9%)        245,047      0"
        );
        assert_eq!(line.chars().count(), row_header().chars().count());
        let early = Reading {
            records: None,
            ..reading
        };
        assert!(row(Churn::Free, &early, Duration::from_secs(10)).ends_with("  -      -"));
    }

    #[test]
    fn long_lines_are_cut_when_quoted() {
        let long = format!("short\n{}\nlast", "x".repeat(1000));
        let cut = shorten_lines(&long);
        let lines: Vec<&str> = cut.lines().collect();
        assert_eq!(lines[0], "short");
        assert_eq!(lines[1].chars().count(), QUOTED_LINE_CHARS + 1);
        assert!(lines[1].ends_with('…'));
        assert_eq!(lines[2], "last");
    }
}
