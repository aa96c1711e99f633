//! The ways a workload runs: untraced, under memtrace, or watched by a peer
//! (bpftrace, perf) that attaches to its PID.

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
    /// memtrace at its default settings.
    Memtrace,
    /// memtrace walking the stack of every page fault.
    MemtraceStacksAll,
    /// bpftrace counting page faults by user stack.
    BpftraceStacks,
    /// bpftrace counting page faults.
    BpftraceCount,
    /// perf sampling page faults with call graphs.
    PerfRecord,
}

/// Set in its environment, bpftrace prints this line once every probe is
/// attached (its own test framework relies on it). Its usual "Attaching N
/// probes..." comes before the attaching, and a SIGINT that arrives in
/// between is lost: bpftrace 0.17 then never exits.
const BPFTRACE_NOTIFY: &str = "__BPFTRACE_NOTIFY_PROBES_ATTACHED";

/// How to tell that a peer is attached, so the workload is released only
/// once it is really being traced.
#[derive(Debug, PartialEq, Eq)]
pub enum Attached {
    /// It prints this line.
    Says(&'static str),
    /// It has written the header of this file. perf writes the header once
    /// its events are open, and enables them just after, so the harness adds
    /// a short grace period.
    Wrote(PathBuf),
}

/// A peer tracer to start against a running workload.
#[derive(Debug)]
pub struct Peer {
    pub command: Command,
    pub attached: Attached,
}

impl Variant {
    /// The name in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Memtrace => "memtrace",
            Self::MemtraceStacksAll => "memtrace --stacks=all",
            Self::BpftraceStacks => "bpftrace ustack",
            Self::BpftraceCount => "bpftrace count",
            Self::PerfRecord => "perf record -g",
        }
    }

    /// A name usable in file names.
    pub fn slug(self) -> &'static str {
        match self {
            Self::Untraced => "untraced",
            Self::Memtrace => "memtrace",
            Self::MemtraceStacksAll => "memtrace-stacks-all",
            Self::BpftraceStacks => "bpftrace-ustack",
            Self::BpftraceCount => "bpftrace-count",
            Self::PerfRecord => "perf",
        }
    }

    pub fn is_memtrace(self) -> bool {
        matches!(self, Self::Memtrace | Self::MemtraceStacksAll)
    }

    /// memtrace's options for this variant, before `-- CMD`; `None` for the
    /// variants memtrace has no part in.
    pub fn memtrace_args(self, json: &Path) -> Option<Vec<String>> {
        let stacks = match self {
            Self::Memtrace => None,
            Self::MemtraceStacksAll => Some("--stacks=all"),
            _ => return None,
        };
        let args = ["-q", "--json"].map(str::to_owned).into_iter();
        Some(
            args.chain([json.display().to_string()])
                .chain(stacks.map(str::to_owned))
                .collect(),
        )
    }

    /// The variant's command line as the report shows it, around the
    /// workload's `workload` command line.
    pub fn command_line(self, workload: &str) -> String {
        if let Some(args) = self.memtrace_args(Path::new("FILE")) {
            return format!("memtrace {} -- {workload}", args.join(" "));
        }
        match self.peer("$PID", Path::new("$TMP")) {
            Some(peer) => format!("{}   (PID: {workload})", quoted(&peer.command)),
            None => workload.to_owned(),
        }
    }

    /// The peer to attach to `pid`, writing any file under `scratch`.
    pub fn peer(self, pid: impl Display, scratch: &Path) -> Option<Peer> {
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
        match self {
            Self::Untraced | Self::Memtrace | Self::MemtraceStacksAll => None,
            Self::BpftraceStacks => Some(bpftrace("@[ustack] = count();")),
            Self::BpftraceCount => Some(bpftrace("@ = count();")),
            Self::PerfRecord => {
                let output = scratch.join(format!("perf-{pid}.data"));
                let mut command = Command::new("perf");
                command
                    .args(["record", "-e", "page-faults", "-g", "-p"])
                    .arg(pid.to_string())
                    .arg("-o")
                    .arg(&output);
                Some(Peer {
                    command,
                    attached: Attached::Wrote(output),
                })
            }
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

/// A bpftrace one-liner running `action` on each user page fault of `pid`.
fn bpftrace_program(pid: impl Display, action: &str) -> String {
    format!("tracepoint:exceptions:page_fault_user /pid == {pid}/ {{ {action} }}")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::process;

    #[test]
    fn bpftrace_one_liners_filter_on_the_pid() {
        let peer = Variant::BpftraceStacks.peer(42, Path::new("/tmp")).unwrap();
        assert_eq!(
            process::describe(&peer.command),
            "bpftrace -e tracepoint:exceptions:page_fault_user /pid == 42/ { @[ustack] = count(); }"
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
        let count = Variant::BpftraceCount.peer(42, Path::new("/tmp")).unwrap();
        assert!(process::describe(&count.command).ends_with("/pid == 42/ { @ = count(); }"));
    }

    #[test]
    fn perf_records_into_scratch_and_is_attached_once_it_wrote() {
        let peer = Variant::PerfRecord.peer(7, Path::new("/scratch")).unwrap();
        assert_eq!(
            process::describe(&peer.command),
            "perf record -e page-faults -g -p 7 -o /scratch/perf-7.data"
        );
        assert_eq!(
            peer.attached,
            Attached::Wrote("/scratch/perf-7.data".into())
        );
    }

    #[test]
    fn command_lines_show_how_each_variant_runs_the_workload() {
        let workload = "fault_storm --mib 16 --wait";
        assert_eq!(Variant::Untraced.command_line(workload), workload);
        assert_eq!(
            Variant::MemtraceStacksAll.command_line(workload),
            "memtrace -q --json FILE --stacks=all -- fault_storm --mib 16 --wait"
        );
        assert_eq!(
            Variant::BpftraceCount.command_line(workload),
            "bpftrace -e 'tracepoint:exceptions:page_fault_user /pid == $PID/ { @ = count(); }'   \
             (PID: fault_storm --mib 16 --wait)"
        );
        assert_eq!(
            Variant::PerfRecord.command_line(workload),
            "perf record -e page-faults -g -p $PID -o $TMP/perf-$PID.data   (PID: fault_storm --mib 16 --wait)"
        );
    }

    #[test]
    fn only_memtrace_variants_run_memtrace_and_only_peers_attach() {
        let json = Path::new("/s/out.json");
        assert_eq!(
            Variant::Memtrace.memtrace_args(json).unwrap(),
            ["-q", "--json", "/s/out.json"]
        );
        assert_eq!(
            Variant::MemtraceStacksAll.memtrace_args(json).unwrap(),
            ["-q", "--json", "/s/out.json", "--stacks=all"]
        );
        assert!(Variant::Untraced.memtrace_args(json).is_none());
        assert!(Variant::PerfRecord.memtrace_args(json).is_none());
        assert!(Variant::Untraced.peer(1, json).is_none());
        assert!(Variant::Memtrace.peer(1, json).is_none());
    }
}
