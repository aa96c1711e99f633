//! The text shown every interval, and the body of the final report.

use std::fmt::Write as _;

use super::{
    format::{percent, plural, Bytes, Count, Delta},
    history::Trend,
    snapshot::{KernelReading, Snapshot},
};
use crate::model::{Call, Release};

/// Frames shown per stack in the text report; the JSON and the profiles
/// have them all.
const SHOWN_FRAMES: usize = 6;

/// `a ← b ← c`, cut after [`SHOWN_FRAMES`].
fn stack_line(frames: &[String]) -> String {
    let mut line = frames
        .iter()
        .take(SHOWN_FRAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ← ");
    if frames.len() > SHOWN_FRAMES {
        line.push_str(" ← …");
    }
    line
}

/// The interval view: a few lines, numbers first.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let model = &snapshot.model;
    let _ = writeln!(
        out,
        "── memtrace · pid {} ({}) · {:.1}s · {}{}",
        snapshot.pid,
        snapshot.command,
        snapshot.elapsed.as_secs_f64(),
        snapshot.state.name(),
        if snapshot.approximate {
            " · APPROXIMATE (records lost)"
        } else {
            ""
        }
    );
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
    let advice: Vec<String> = activity
        .calls
        .iter()
        .filter_map(|(call, stats)| match call {
            Call::Madvise(advice) => Some(format!(
                "{advice} {} {} ({} resident)",
                plural(stats.calls, "call", "calls"),
                Bytes(stats.bytes),
                Bytes(stats.resident_bytes)
            )),
            _ => None,
        })
        .collect();
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
        let trend = match snapshot.trend {
            Trend::Growing { bytes_per_minute } => {
                format!("growing {}/min", Delta(bytes_per_minute as i64))
            }
            Trend::Sawtooth { cycles } => format!("sawtooth ({cycles} cycles)"),
            other => other.name().to_owned(),
        };
        let _ = writeln!(out, "trend     {} {trend}", snapshot.sparkline);
    }
    if let Some(cgroup) = &snapshot.cgroup {
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
    out
}

/// One line for a followed child in the interval view.
pub fn render_brief(snapshot: &Snapshot) -> String {
    format!(
        "   child pid {} ({}) · {} · RSS {} · LazyFree {} · unexplained {}\n",
        snapshot.pid,
        snapshot.command,
        snapshot.state.name(),
        Bytes(snapshot.rss()),
        Bytes(snapshot.lazyfree()),
        Bytes(snapshot.unexplained()),
    )
}

/// The final report: the interval view, then what holds the memory and
/// what gave it back.
pub fn render_final(snapshot: &Snapshot) -> String {
    let mut out = render(snapshot);
    if !snapshot.top_ranges.is_empty() {
        let _ = writeln!(out, "\nLargest resident mappings:");
        for row in &snapshot.top_ranges {
            let _ = writeln!(
                out,
                "  {:>10} {:>10} lazy  {:#x}-{:#x}  {} (created by {})",
                Bytes(row.resident).to_string(),
                Bytes(row.lazyfree).to_string(),
                row.start,
                row.end,
                row.mapping,
                row.created_by.name(),
            );
        }
    }
    if !snapshot.top_stacks.is_empty() {
        let _ = writeln!(out, "\nResident bytes by the stack that faulted them in:");
        for row in &snapshot.top_stacks {
            let _ = writeln!(
                out,
                "  {:>10} in use {:>10} lazily freed  {}",
                Bytes(row.in_use).to_string(),
                Bytes(row.lazyfree).to_string(),
                stack_line(&row.frames),
            );
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
            let _ = writeln!(
                out,
                "  {:>10} {:<16} {}  {}",
                Bytes(row.resident_bytes).to_string(),
                row.call,
                plural(row.calls, "call", "calls"),
                stack_line(&row.frames),
            );
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
                function.function,
            );
        }
    }
    if !snapshot.growth.is_empty() {
        let _ = writeln!(out, "\nGrew the most since the first interval:");
        for row in &snapshot.growth {
            let _ = writeln!(
                out,
                "  {:>10}  {}",
                Delta(row.grown).to_string(),
                stack_line(&row.frames),
            );
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
