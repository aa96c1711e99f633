//! The ways a workload runs: untraced, under memtrace (at its defaults, with
//! another syscall hook, walking every stack, or with programs that only
//! return: the floor), or watched by a peer (bpftrace, perf) that attaches
//! to its PID.

use std::{
    fmt::Display,
    path::{Path, PathBuf},
    process::Command,
};

/// One way of running a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The baseline every ratio is taken against.
    Untraced,
    /// memtrace's programs on the same tracepoints, each returning at once
    /// (`--floor`): what any tracer there pays before doing anything.
    Floor,
    /// memtrace at its default settings.
    Memtrace,
    /// memtrace seeing the memory syscalls on their own tracepoints
    /// (`--syscall-hook per-call`) instead of on every syscall's return.
    MemtracePerCall,
    /// memtrace walking the stack of every page fault.
    MemtraceStacksAll,
    /// `memtrace record`: memtrace at its defaults, also writing a capture.
    MemtraceRecord,
    /// bpftrace counting page faults and memory syscalls by user stack.
    BpftraceStacks,
    /// bpftrace counting page faults and memory syscalls.
    BpftraceCount,
    /// perf recording every page fault with frame-pointer call graphs.
    PerfRecord,
    /// perf recording every page fault with a copy of the stack to unwind
    /// (`--call-graph dwarf`), the peer for code without frame pointers.
    PerfDwarf,
}

/// Set in its environment, bpftrace prints this line once every probe is
/// attached (its own test framework relies on it). Its usual "Attaching N
/// probes..." comes before the attaching, and a SIGINT that arrives in
/// between is lost: bpftrace 0.17 then never exits.
const BPFTRACE_NOTIFY: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";

/// memtrace's line on stderr once its programs are attached to a running
/// process and its first reading of the process is done.
const MEMTRACE_ATTACHED: &str = "memtrace: attached to pid ";

/// perf records a software event at 4000 samples a second unless told a
/// period: `-c 1` makes it record every page fault, as memtrace and the
/// bpftrace one-liners do (the fault storm takes some 500,000 a second).
const PERF_EVERY_EVENT: &[&str] = &["-c", "1"];

/// What memtrace traces, for bpftrace to trace the same: user page faults
/// and the exits of the six memory syscalls, on their own tracepoints.
const BPFTRACE_PROBES: &[&str] = &[
    "tracepoint:exceptions:page_fault_user",
    "tracepoint:syscalls:sys_exit_mmap",
    "tracepoint:syscalls:sys_exit_munmap",
    "tracepoint:syscalls:sys_exit_mremap",
    "tracepoint:syscalls:sys_exit_brk",
    "tracepoint:syscalls:sys_exit_madvise",
    "tracepoint:syscalls:sys_exit_process_madvise",
];

/// How to tell that a tracer is attached, so the workload is released only
/// once it is really being traced.
#[derive(Debug, PartialEq, Eq)]
pub enum Attached {
    /// It prints a line starting with this.
    Says(&'static str),
    /// It has written the header of this file. perf writes the header once
    /// its events are open, and enables them just after, so the harness adds
    /// a short grace period.
    Wrote(PathBuf),
}

/// A tracer to start against a running process.
#[derive(Debug)]
pub struct Peer {
    pub command: Command,
    pub attached: Attached,
}

/// Where a tracer's files go: memtrace's binary and JSON file, and a
/// scratch directory for the peers'.
pub struct Files<'a> {
    pub memtrace: &'a Path,
    pub json: &'a Path,
    pub scratch: &'a Path,
}

impl Variant {
    /// Every variant, in the order of the summary table's columns.
    pub const ALL: [Self; 10] = [
        Self::Untraced,
        Self::Floor,
        Self::Memtrace,
        Self::MemtracePerCall,
        Self::MemtraceStacksAll,
        Self::MemtraceRecord,
        Self::BpftraceStacks,
        Self::BpftraceCount,
        Self::PerfRecord,
        Self::PerfDwarf,
    ];

    /// The name in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Floor => "floor",
            Self::Memtrace => "memtrace",
            Self::MemtracePerCall => "memtrace per-call",
            Self::MemtraceStacksAll => "memtrace --stacks=all",
            Self::MemtraceRecord => "memtrace record",
            Self::BpftraceStacks => "bpftrace ustack",
            Self::BpftraceCount => "bpftrace count",
            Self::PerfRecord => "perf -g",
            Self::PerfDwarf => "perf dwarf",
        }
    }

    /// A name usable in file names.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Floor => "floor",
            Self::Memtrace => "memtrace",
            Self::MemtracePerCall => "memtrace-per-call",
            Self::MemtraceStacksAll => "memtrace-stacks-all",
            Self::MemtraceRecord => "memtrace-record",
            Self::BpftraceStacks => "bpftrace-ustack",
            Self::BpftraceCount => "bpftrace-count",
            Self::PerfRecord => "perf",
            Self::PerfDwarf => "perf-dwarf",
        }
    }

    /// Whether this variant runs memtrace.
    pub fn is_memtrace(self) -> bool {
        self.memtrace_options().is_some()
    }

    /// Whether memtrace records events in this variant (all but the floor),
    /// so that its counts can be checked.
    pub fn counts_events(self) -> bool {
        self.is_memtrace() && self != Self::Floor
    }

    /// Whether the harness also runs this variant with BPF run-time stats
    /// on, for the kernel-side nanoseconds per event.
    pub fn takes_kernel_stats(self) -> bool {
        matches!(self, Self::Floor | Self::Memtrace | Self::MemtracePerCall)
    }

    /// memtrace's options that make this variant; `None` for the variants
    /// memtrace has no part in.
    fn memtrace_options(self) -> Option<&'static [&'static str]> {
        match self {
            Self::Floor => Some(&["--floor"]),
            Self::Memtrace => Some(&[]),
            Self::MemtracePerCall => Some(&["--syscall-hook", "per-call"]),
            Self::MemtraceStacksAll => Some(&["--stacks=all"]),
            Self::MemtraceRecord => Some(&[]),
            _ => None,
        }
    }

    /// memtrace's options for this variant, before `-- CMD` or `-p PID`;
    /// `None` for the variants memtrace has no part in.
    pub fn memtrace_args(self, json: &Path) -> Option<Vec<String>> {
        let options = self.memtrace_options()?;
        // The capture goes beside the JSON.
        let record = match self {
            Self::MemtraceRecord => vec![
                "record".to_owned(),
                "-o".to_owned(),
                json.with_extension("mtc").display().to_string(),
            ],
            _ => Vec::new(),
        };
        let args = ["-q", "--json"].map(str::to_owned).into_iter();
        Some(
            record
                .into_iter()
                .chain(args)
                .chain([json.display().to_string()])
                .chain(options.iter().map(|&option| option.to_owned()))
                .collect(),
        )
    }

    /// The variant's command line as the report shows it: memtrace starting
    /// the `workload` command line, or a tracer attached to the process
    /// `attached_to` names (when it is `Some`, memtrace attaches too).
    pub fn command_line(self, workload: &str, attached_to: Option<&str>) -> String {
        let files = Files {
            memtrace: Path::new("memtrace"),
            json: Path::new("FILE"),
            scratch: Path::new("$TMP"),
        };
        if attached_to.is_none() {
            if let Some(args) = self.memtrace_args(files.json) {
                return format!("memtrace {} -- {workload}", args.join(" "));
            }
        }
        match self.tracer("$PID", &files, attached_to.is_some()) {
            Some(peer) => format!(
                "{}   (PID: {})",
                quoted(&peer.command),
                attached_to.unwrap_or(workload)
            ),
            None => workload.to_owned(),
        }
    }

    /// The tracer to attach to `pid`: a peer, or memtrace too when
    /// `memtrace_by_pid` (otherwise memtrace starts the workload itself and
    /// is not attached afterwards).
    pub fn tracer(self, pid: impl Display, files: &Files, memtrace_by_pid: bool) -> Option<Peer> {
        if let Some(args) = self.memtrace_args(files.json) {
            if !memtrace_by_pid {
                return None;
            }
            let mut command = Command::new(files.memtrace);
            command.args(args).arg("-p").arg(pid.to_string());
            return Some(Peer {
                command,
                attached: Attached::Says(MEMTRACE_ATTACHED),
            });
        }
        let bpftrace = |action: &str| {
            let mut command = Command::new("bpftrace");
            command
                .arg("-e")
                .arg(bpftrace_program(&pid, action))
                .env(BPFTRACE_NOTIFY, "1");
            Peer {
                command,
                attached: Attached::Says(BPFTRACE_NOTIFY),
            }
        };
        let perf = |call_graph: &[&str]| {
            let output = files.scratch.join(format!("{}-{pid}.data", self.slug()));
            let mut command = Command::new("perf");
            command
                .args(["record", "-e", "page-faults"])
                .args(PERF_EVERY_EVENT)
                .args(call_graph)
                .arg("-p")
                .arg(pid.to_string())
                .arg("-o")
                .arg(&output);
            Peer {
                command,
                attached: Attached::Wrote(output),
            }
        };
        match self {
            Self::BpftraceStacks => Some(bpftrace("@[ustack] = count();")),
            Self::BpftraceCount => Some(bpftrace("@ = count();")),
            Self::PerfRecord => Some(perf(&["-g"])),
            Self::PerfDwarf => Some(perf(&["--call-graph", "dwarf"])),
            _ => None,
        }
    }
}

/// A command as a shell would take it: arguments with spaces in single quotes.
fn quoted(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| {
            let part = part.to_string_lossy();
            if part.contains(' ') {
                format!("'{part}'")
            } else {
                part.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A bpftrace one-liner running `action` on each event of `pid` that
/// memtrace records.
fn bpftrace_program(pid: impl Display, action: &str) -> String {
    format!(
        "{} /pid == {pid}/ {{ {action} }}",
        BPFTRACE_PROBES.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process;

    fn files() -> Files<'static> {
        Files {
            memtrace: Path::new("/t/memtrace"),
            json: Path::new("/s/out.json"),
            scratch: Path::new("/scratch"),
        }
    }

    #[test]
    fn bpftrace_one_liners_trace_what_memtrace_does_for_the_pid() {
        let peer = Variant::BpftraceStacks.tracer(42, &files(), true).unwrap();
        assert_eq!(
            process::describe(&peer.command),
            "bpftrace -e tracepoint:exceptions:page_fault_user,\
             tracepoint:syscalls:sys_exit_mmap,tracepoint:syscalls:sys_exit_munmap,\
             tracepoint:syscalls:sys_exit_mremap,tracepoint:syscalls:sys_exit_brk,\
             tracepoint:syscalls:sys_exit_madvise,tracepoint:syscalls:sys_exit_process_madvise \
             /pid == 42/ { @[ustack] = count(); }"
        );
        assert_eq!(
            peer.attached,
            Attached::Says("__BPFTRACE_NOTIFY_PROBES_ATTACHED")
        );
        let env: Vec<_> = peer.command.get_envs().collect();
        assert_eq!(
            env,
            [(
                "__BPFTRACE_NOTIFY_PROBES_ATTACHED".as_ref(),
                Some("1".as_ref())
            )]
        );
        let count = Variant::BpftraceCount.tracer(42, &files(), false).unwrap();
        assert!(process::describe(&count.command).ends_with("/pid == 42/ { @ = count(); }"));
    }

    #[test]
    fn perf_records_into_scratch_and_is_attached_once_it_wrote() {
        let peer = Variant::PerfRecord.tracer(7, &files(), false).unwrap();
        assert_eq!(
            process::describe(&peer.command),
            "perf record -e page-faults -c 1 -g -p 7 -o /scratch/perf-7.data"
        );
        assert_eq!(
            peer.attached,
            Attached::Wrote("/scratch/perf-7.data".into())
        );
        let dwarf = Variant::PerfDwarf.tracer(7, &files(), false).unwrap();
        assert_eq!(
            process::describe(&dwarf.command),
            "perf record -e page-faults -c 1 --call-graph dwarf -p 7 -o /scratch/perf-dwarf-7.data"
        );
    }

    #[test]
    fn memtrace_attaches_by_pid_only_when_asked() {
        assert!(Variant::Memtrace.tracer(9, &files(), false).is_none());
        let peer = Variant::MemtracePerCall.tracer(9, &files(), true).unwrap();
        assert_eq!(
            process::describe(&peer.command),
            "/t/memtrace -q --json /s/out.json --syscall-hook per-call -p 9"
        );
        assert_eq!(peer.attached, Attached::Says("memtrace: attached to pid "));
        assert!(Variant::Untraced.tracer(9, &files(), true).is_none());
    }

    #[test]
    fn command_lines_show_how_each_variant_runs_the_workload() {
        let workload = "fault_storm --mib 16 --wait";
        assert_eq!(Variant::Untraced.command_line(workload, None), workload);
        assert_eq!(
            Variant::MemtraceStacksAll.command_line(workload, None),
            "memtrace -q --json FILE --stacks=all -- fault_storm --mib 16 --wait"
        );
        assert_eq!(
            Variant::Floor.command_line("syscall_storm", Some("sleep")),
            "memtrace -q --json FILE --floor -p $PID   (PID: sleep)"
        );
        assert_eq!(
            Variant::BpftraceCount.command_line(workload, None),
            format!(
                "bpftrace -e '{} /pid == $PID/ {{ @ = count(); }}'   (PID: {workload})",
                BPFTRACE_PROBES.join(",")
            )
        );
        assert_eq!(
            Variant::PerfRecord.command_line(workload, None),
            "perf record -e page-faults -c 1 -g -p $PID -o $TMP/perf-$PID.data   \
             (PID: fault_storm --mib 16 --wait)"
        );
    }

    #[test]
    fn memtrace_variants_are_memtrace_with_their_options() {
        let json = Path::new("/s/out.json");
        assert_eq!(
            Variant::Memtrace.memtrace_args(json).unwrap(),
            ["-q", "--json", "/s/out.json"]
        );
        assert_eq!(
            Variant::Floor.memtrace_args(json).unwrap(),
            ["-q", "--json", "/s/out.json", "--floor"]
        );
        assert_eq!(
            Variant::MemtraceRecord.memtrace_args(json).unwrap(),
            ["record", "-o", "/s/out.mtc", "-q", "--json", "/s/out.json"]
        );
        assert!(Variant::Untraced.memtrace_args(json).is_none());
        assert!(Variant::PerfDwarf.memtrace_args(json).is_none());
        let memtrace: Vec<_> = Variant::ALL
            .into_iter()
            .filter(|variant| variant.is_memtrace())
            .collect();
        assert_eq!(
            memtrace,
            [
                Variant::Floor,
                Variant::Memtrace,
                Variant::MemtracePerCall,
                Variant::MemtraceStacksAll,
                Variant::MemtraceRecord
            ]
        );
        assert!(!Variant::Floor.counts_events());
        assert!(Variant::MemtracePerCall.counts_events());
        assert!(!Variant::MemtraceStacksAll.takes_kernel_stats());
        assert!(!Variant::BpftraceCount.takes_kernel_stats());
    }
}
