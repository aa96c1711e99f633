//! The text shown every interval, and the body of the final report: the
//! line view, for pipes, logs and `--log`. On a terminal its lines are
//! fitted to the width: numbers wrap between words, stacks keep their
//! innermost frames.

use std::fmt::Write as _;

use super::{
    format::{percent, plural, stack_text, wrap, Bytes, Count, Delta, Span},
    history::Trend,
    mappings::created_by_phrase,
    snapshot::{GrowthFrom, KernelReading, Snapshot},
    state::TargetState,
    verdict::Parts,
    whole::Whole,
};
use crate::model::{Call, CallStats, Release};

/// Frames shown per stack in the text report; the JSON and the profiles
/// have them all.
const SHOWN_FRAMES: usize = 6;
/// Advice kinds named on the madvise line; the rest are counted.
const SHOWN_ADVICE: usize = 4;
/// Continuation lines of the numbers start under their values.
const NUMBERS_INDENT: &str = "          ";

/// A table row: `prefix` then the stack, within `width`.
fn stack_row(prefix: String, frames: &[String], width: Option<usize>) -> String {
    let room = width.map(|width| width.saturating_sub(super::format::width_of(&prefix)));
    format!("{prefix}{}", stack_text(frames, SHOWN_FRAMES, room))
}

/// The madvise line's entries: the advice kinds with the most bytes, and
/// how many more there are.
pub fn advice_summary(calls: &[(String, CallStats)], shown: usize) -> Vec<String> {
    let mut calls: Vec<&(String, CallStats)> = calls.iter().collect();
    calls.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
    let mut parts: Vec<String> = calls
        .iter()
        .take(shown)
        .map(|(advice, stats)| {
            format!(
                "{advice} {} {} ({} resident)",
                plural(stats.calls, "call", "calls"),
                Bytes(stats.bytes),
                Bytes(stats.resident_bytes)
            )
        })
        .collect();
    if calls.len() > shown {
        parts.push(format!("+{} more", calls.len() - shown));
    }
    parts
}

/// Every madvise advice seen, with its totals.
pub fn advice_calls(snapshot: &Snapshot) -> Vec<(String, CallStats)> {
    snapshot
        .activity
        .calls
        .iter()
        .filter_map(|(call, stats)| match call {
            Call::Madvise(advice) => Some((advice.to_string(), *stats)),
            _ => None,
        })
        .collect()
}

/// The trend in a few words, with how long until it is known.
pub fn trend_words(snapshot: &Snapshot) -> String {
    match snapshot.trend {
        Trend::Growing { bytes_per_minute } => {
            format!("growing {}/min", Delta(bytes_per_minute as i64))
        }
        Trend::Sawtooth { cycles } => format!("sawtooth ({cycles} cycles)"),
        Trend::Unknown { .. } if snapshot.trend_needs > 0 => format!(
            "needs {} more interval{}",
            snapshot.trend_needs,
            if snapshot.trend_needs == 1 { "" } else { "s" }
        ),
        other => other.name().to_owned(),
    }
}

/// The header: who, how long, in what state.
pub fn header(snapshot: &Snapshot) -> String {
    format!(
        "── memtrace · {} · {:.1}s · {}{}",
        snapshot.subject(),
        snapshot.elapsed.as_secs_f64(),
        snapshot.state.name(),
        if snapshot.approximate {
            " · APPROXIMATE (records lost)"
        } else {
            ""
        }
    )
}

/// The interval view: a few lines, numbers first.
/// `width` is the terminal's, when the lines go to one.
pub fn render(snapshot: &Snapshot, width: Option<usize>) -> String {
    let mut out = String::new();
    let model = &snapshot.model;
    let _ = writeln!(out, "{}", header(snapshot));
    let change = snapshot
        .previous_rss
        .map(|previous| format!(" ({})", Delta(snapshot.rss() as i64 - previous as i64)))
        .unwrap_or_default();
    match &snapshot.kernel {
        Some(kernel) => {
            let source = match snapshot.kernel_reading {
                KernelReading::Current => {
                    format!("kernel; status says {}", Bytes(kernel.status.rss))
                }
                KernelReading::LastBeforeExit => "kernel, last read before the exit".to_owned(),
            };
            let _ = writeln!(
                out,
                "RSS       {}{change}   anon {} · file {} · shmem {} · swap {}   ({source})",
                Bytes(kernel.rss),
                Bytes(kernel.anon),
                Bytes(kernel.file),
                Bytes(kernel.shmem),
                Bytes(kernel.swap),
            );
            let in_flight = snapshot.reconcile.in_flight;
            let _ = writeln!(
                out,
                "model     {}   anon {} · file {} · shmem {}   unexplained {} ({:.1}%){}",
                Bytes(model.rss),
                Bytes(model.anon),
                Bytes(model.file),
                Bytes(model.shmem),
                Bytes(snapshot.unexplained()),
                percent(snapshot.unexplained(), kernel.rss),
                if in_flight > 0 {
                    format!(" · in flight {}", Bytes(in_flight))
                } else {
                    String::new()
                },
            );
            let _ = writeln!(
                out,
                "LazyFree  {} kernel · {} model   (given back with MADV_FREE, still in RSS)",
                Bytes(kernel.lazyfree),
                Bytes(model.lazyfree),
            );
        }
        None => {
            let _ = writeln!(
                out,
                "RSS       {}{change}   anon {} · file {} · shmem {}   (model; the process is gone)",
                Bytes(model.rss),
                Bytes(model.anon),
                Bytes(model.file),
                Bytes(model.shmem),
            );
            let _ = writeln!(out, "LazyFree  {} (model)", Bytes(model.lazyfree));
        }
    }
    if let Some(heap) = &snapshot.go_heap {
        let rss = snapshot.rss();
        let rest = rss.saturating_sub(heap.inuse_space + snapshot.lazyfree());
        let _ = writeln!(
            out,
            "Go heap   {} in use (pprof, as of the last GC) · {} lazily freed · {} the rest \
             (runtime, stacks, file-backed, fragmentation)",
            Bytes(heap.inuse_space),
            Bytes(snapshot.lazyfree()),
            Bytes(rest),
        );
    }
    let activity = &snapshot.activity;
    let mmap = activity.call_stats(Call::Mmap);
    let munmap = activity.call_stats(Call::Munmap);
    let _ = writeln!(
        out,
        "mapped    {} in {} · unmapped {} in {}",
        Bytes(mmap.bytes),
        plural(mmap.calls, "call", "calls"),
        Bytes(munmap.bytes),
        plural(munmap.calls, "call", "calls"),
    );
    let advice = advice_summary(&advice_calls(snapshot), SHOWN_ADVICE);
    if !advice.is_empty() {
        let _ = writeln!(out, "madvise   {}", advice.join(" · "));
    }
    let faults = &activity.faults;
    let _ = writeln!(
        out,
        "faults    {} ({} paged in; {} writes, {} copy-on-write, {} zero-page reads)",
        Count(faults.count),
        Bytes(faults.paged_in_bytes()),
        Count(faults.write),
        Count(faults.copy_on_write),
        Count(faults.zero_page),
    );
    if !activity.released.is_empty() {
        let released: Vec<String> = activity
            .released
            .iter()
            .map(|(how, bytes)| format!("{} {}", how.name(), Bytes(*bytes)))
            .collect();
        let _ = writeln!(out, "released  {}", released.join(" · "));
    }
    if !snapshot.sparkline.is_empty() {
        let _ = writeln!(
            out,
            "trend     {} {}",
            snapshot.sparkline,
            trend_words(snapshot)
        );
    }
    if let Some(whole) = &snapshot.whole {
        whole_lines(&mut out, snapshot, whole);
    } else if let Some(cgroup) = &snapshot.cgroup {
        let limit = |name: &str, value: Option<u64>| {
            value
                .map(|v| format!(" · {name} {}", Bytes(v)))
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "cgroup    {} uses {}{}{}",
            cgroup.path,
            Bytes(cgroup.current),
            limit("max", cgroup.max),
            limit("high", cgroup.high),
        );
    }
    let lost = snapshot.lost.records();
    let _ = writeln!(
        out,
        "records   {} seen · {} lost{}",
        Count(snapshot.records),
        Count(lost),
        if snapshot.lost.stacks > 0 {
            format!(" · {} stacks not stored", Count(snapshot.lost.stacks))
        } else {
            String::new()
        }
    );
    wrap(&out, width, NUMBERS_INDENT)
}

/// One line for a followed child in the interval view.
pub fn render_brief(snapshot: &Snapshot, width: Option<usize>) -> String {
    let line = format!(
        "   child pid {} ({}) · {} · RSS {} · LazyFree {} · unexplained {}\n",
        snapshot.pid,
        snapshot.command,
        snapshot.state.name(),
        Bytes(snapshot.rss()),
        Bytes(snapshot.lazyfree()),
        Bytes(snapshot.unexplained()),
    );
    wrap(&line, width, NUMBERS_INDENT)
}

/// A cgroup's lines: its charge against its limit, split by kind and set
/// beside its processes' RSS, then a line per process.
fn whole_lines(out: &mut String, snapshot: &Snapshot, whole: &Whole) {
    if let (Some(memory), Some(charge)) = (&snapshot.cgroup, &whole.charge) {
        let limit = match memory.max {
            Some(max) => format!(
                " of its {} limit ({:.0}%)",
                Bytes(max),
                percent(memory.current, max)
            ),
            None => " (no limit)".to_owned(),
        };
        let _ = writeln!(
            out,
            "cgroup    {} {}{} uses {}{limit} · working set {}{}",
            memory.path,
            memory.version.name(),
            if whole.removed {
                " (removed; as last read)"
            } else {
                ""
            },
            Bytes(memory.current),
            Bytes(charge.working_set),
            whole
                .time_to_limit
                .map(|left| format!(" · limit in {}", Span(left)))
                .unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "charge    anon {} (lazily freed {}) · page cache {} ({} mapped) · shmem {} · kernel {}{}",
            Bytes(charge.anon),
            Bytes(charge.lazyfree),
            Bytes(charge.file),
            Bytes(charge.file_mapped),
            Bytes(charge.shmem),
            Bytes(charge.kernel),
            match charge.other {
                0 => String::new(),
                other => format!(" · other {}", Delta(other)),
            },
        );
        let _ = writeln!(
            out,
            "          processes' RSS {} · page cache no process maps {} · anon shared between \
             processes {}",
            Bytes(charge.processes_rss),
            Bytes(charge.unmapped_cache()),
            Delta(charge.shared_anon()),
        );
    }
    let running = whole
        .members
        .iter()
        .filter(|member| member.state == TargetState::Running)
        .count();
    let _ = writeln!(
        out,
        "processes {running} running · {} ended{}",
        whole.ended,
        match whole.oom_killed.len() {
            0 => String::new(),
            killed => format!(" ({killed} killed by the OOM killer)"),
        },
    );
    for member in &whole.members {
        let _ = writeln!(
            out,
            "   pid {} ({}{}) · {} · RSS {} · LazyFree {} · unexplained {}{}",
            member.pid,
            member.command,
            member
                .pid_in_namespace
                .map(|inner| format!("; {inner} inside"))
                .unwrap_or_default(),
            member.state.name(),
            Bytes(member.rss),
            Bytes(member.lazyfree),
            Bytes(member.unexplained),
            member
                .top
                .as_ref()
                .map(|top| format!(" · most by {top}"))
                .unwrap_or_default(),
        );
    }
}

/// The final report: the interval view, then what RSS is made of, what
/// holds the memory and what gave it back.
pub fn render_final(snapshot: &Snapshot, width: Option<usize>) -> String {
    let mut out = render(snapshot, width);
    let parts = Parts::of(snapshot);
    let _ = writeln!(
        out,
        "{}",
        wrap(
            &format!(
                "parts     {} = RSS {}",
                parts
                    .named()
                    .iter()
                    .map(|(name, bytes)| format!("{name} {}", Kib(*bytes)))
                    .collect::<Vec<_>>()
                    .join(" + "),
                Kib(parts.total()),
            ),
            width,
            NUMBERS_INDENT,
        )
    );
    if !snapshot.mapping_groups.is_empty() {
        let _ = writeln!(out, "\nLargest resident mappings:");
        for group in &snapshot.mapping_groups {
            let line = if group.count == 1 {
                format!(
                    "  {:>10} {:>10} lazy  {:#x}-{:#x}  {} ({})",
                    Bytes(group.resident).to_string(),
                    Bytes(group.lazyfree).to_string(),
                    group.start,
                    group.end,
                    group.mapping,
                    created_by_phrase(group.created_by),
                )
            } else {
                format!(
                    "  {:>10} {:>10} lazy  {} × {} resident of {} each, {} ({}), the first at {:#x}",
                    Bytes(group.total_resident()).to_string(),
                    Bytes(group.lazyfree * group.count as u64).to_string(),
                    group.count,
                    Bytes(group.resident),
                    Bytes(group.size),
                    group.mapping,
                    created_by_phrase(group.created_by),
                    group.start,
                )
            };
            let _ = writeln!(out, "{}", wrap(&line, width, "      "));
        }
    }
    if !snapshot.top_stacks.is_empty() {
        let _ = writeln!(out, "\nResident bytes by the stack that faulted them in:");
        for row in &snapshot.top_stacks {
            let prefix = format!(
                "  {:>10} in use {:>10} lazily freed  ",
                Bytes(row.in_use).to_string(),
                Bytes(row.lazyfree).to_string(),
            );
            let _ = writeln!(out, "{}", stack_row(prefix, &row.frames, width));
        }
    }
    let releases: Vec<_> = snapshot
        .top_calls
        .iter()
        .filter(|row| row.resident_bytes > 0)
        .collect();
    if !releases.is_empty() {
        let _ = writeln!(out, "\nWho gave memory back (or marked it lazily freed):");
        for row in releases {
            let prefix = format!(
                "  {:>10} {:<16} {}  ",
                Bytes(row.resident_bytes).to_string(),
                row.call,
                plural(row.calls, "call", "calls"),
            );
            let _ = writeln!(out, "{}", stack_row(prefix, &row.frames, width));
        }
    }
    if let Some(heap) = &snapshot.go_heap {
        let _ = writeln!(
            out,
            "\nThe Go heap profile ({}) beside what the kernel saw faulted in:",
            heap.source
        );
        for function in &heap.functions {
            let _ = writeln!(
                out,
                "  {:>10} pprof in use {:>10} resident under it  {}",
                Bytes(function.pprof_inuse).to_string(),
                Bytes(function.kernel_resident).to_string(),
                super::format::short_name(&function.function),
            );
        }
    }
    if !snapshot.growth.is_empty() {
        let since = match &snapshot.growth_from {
            GrowthFrom::FirstInterval => "since the first interval".to_owned(),
            GrowthFrom::Moment(at) => format!("since {:.1} s into the trace", at.as_secs_f64()),
            GrowthFrom::Capture(base) => format!("compared with the end of {base}"),
        };
        let _ = writeln!(out, "\nGrew the most {since}:");
        for row in &snapshot.growth {
            let prefix = format!("  {:>10}  ", Delta(row.grown).to_string());
            let _ = writeln!(out, "{}", stack_row(prefix, &row.frames, width));
        }
    }
    let reclaimed = snapshot
        .activity
        .released
        .get(&Release::LazyFreeReclaimed)
        .copied()
        .unwrap_or(0);
    if reclaimed > 0 {
        let _ = writeln!(
            out,
            "\nThe kernel reclaimed {} of lazily freed memory under memory pressure.",
            Bytes(reclaimed)
        );
    }
    out
}

/// Bytes in KiB, exact for page-sized figures, the way `ps` and `top` give
/// RSS: `44,748 KiB`.
pub struct Kib(pub u64);

impl std::fmt::Display for Kib {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} KiB", Count(self.0 / 1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_madvise_line_names_the_largest_few_and_counts_the_rest() {
        let calls: Vec<(String, CallStats)> = (1..=23u64)
            .map(|i| {
                let stats = CallStats {
                    calls: i,
                    bytes: i << 20,
                    ..CallStats::default()
                };
                (format!("MADV_{i}"), stats)
            })
            .collect();
        let parts = advice_summary(&calls, SHOWN_ADVICE);
        assert_eq!(parts.len(), SHOWN_ADVICE + 1);
        assert!(
            parts[0].starts_with("MADV_23 23 calls 23.0 MiB"),
            "{parts:?}"
        );
        assert!(parts[3].starts_with("MADV_20 "), "{parts:?}");
        assert_eq!(parts[4], "+19 more");
        let line = parts.join(" · ");
        assert!(line.len() < 200, "{line}");
        assert_eq!(advice_summary(&calls[..2], SHOWN_ADVICE).len(), 2);
    }
}
