//! The verdict: what RSS is made of, in plain language, and what would
//! change it. Every sentence comes from something observed; a sentence
//! whose facts are missing is left out, never guessed.

use std::fmt::Write as _;

use memtrace_common::StackSource;

use super::{
    format::{percent, short_name, Bytes, Delta, Span},
    history::Trend,
    snapshot::Snapshot,
    state::TargetState,
    whole::Whole,
};
use crate::{
    attribution::{self, GOROUTINE_STACKS, PROFILE_SERVING},
    intake::{CutReason, StackEnd},
    model::{Advice, Call, Release},
    runtime::Allocator,
};

/// A part of RSS that is worth a sentence.
const NOTABLE: f64 = 5.0;

pub fn verdict(snapshot: &Snapshot) -> String {
    let mut sentences = Vec::new();
    if let Some(whole) = &snapshot.whole {
        sentences.extend(whole_sentences(snapshot, whole));
    }
    sentences.push(composition(snapshot));
    if let Some(advice) = advice(snapshot) {
        sentences.push(advice);
    }
    if let Some(heap) = heap_profile(snapshot) {
        sentences.push(heap);
    }
    if let Some(given_back) = given_back(snapshot) {
        sentences.push(given_back);
    }
    if let Some(mapped) = address_space(snapshot) {
        sentences.push(mapped);
    }
    if let Some(trend) = trend(snapshot) {
        sentences.push(trend);
    }
    if snapshot.whole.is_none() {
        if let Some(cgroup) = cgroup(snapshot) {
            sentences.push(cgroup);
        }
        if let Some(ending) = ending(snapshot) {
            sentences.push(ending);
        }
    }
    if let Some(caveat) = caveats(snapshot) {
        sentences.push(caveat);
    }
    format!("Verdict: {}", sentences.join("\n  "))
}

fn share(part: u64, whole: u64) -> String {
    format!("{} ({:.0}%)", Bytes(part), percent(part, whole))
}

/// RSS split into parts that do not overlap and add up to it exactly.
///
/// Each part is taken, in this order, from what is left of RSS, so none can
/// count a page another has counted, and the last takes the rest:
/// 1. lazily freed: LazyFree (the kernel's figure while the process runs);
/// 2. file-backed: RssFile + RssShmem (the kernel's), file and shared pages
///    whoever faulted them in;
/// 3. resident before attach: anonymous pages still in use that were
///    resident when memtrace attached (the model's);
/// 4. unexplained: what memtrace cannot account for (the snapshot's
///    `unexplained`: pages found with no event, and what still differs from
///    the kernel);
/// 5. in use: the rest, anonymous memory faulted in since attaching and
///    not given back.
///
/// A part is only cut short when the figures before it already exceed RSS
/// (the kernel's counters and the model disagree for a moment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    pub in_use: u64,
    pub lazily_freed: u64,
    pub file: u64,
    pub before_attach: u64,
    pub unexplained: u64,
}

impl Parts {
    pub fn of(snapshot: &Snapshot) -> Self {
        let file = match snapshot.kernel {
            Some(kernel) => kernel.file + kernel.shmem,
            None => snapshot.model.file + snapshot.model.shmem,
        };
        Self::split(
            snapshot.rss(),
            [
                snapshot.lazyfree(),
                file,
                snapshot.anon_before_attach,
                snapshot.unexplained(),
            ],
        )
    }

    /// `rss` split: lazily freed, file-backed, before attach and
    /// unexplained, in this order, each from what is left; in use is the
    /// rest.
    fn split(rss: u64, [lazily_freed, file, before_attach, unexplained]: [u64; 4]) -> Self {
        let mut left = rss;
        let mut take = |bytes: u64| {
            let taken = bytes.min(left);
            left -= taken;
            taken
        };
        let lazily_freed = take(lazily_freed);
        let file = take(file);
        let before_attach = take(before_attach);
        let unexplained = take(unexplained);
        Self {
            in_use: left,
            lazily_freed,
            file,
            before_attach,
            unexplained,
        }
    }

    pub fn total(&self) -> u64 {
        self.in_use + self.lazily_freed + self.file + self.before_attach + self.unexplained
    }

    /// The parts with their names, as the final report lists them.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("in use", self.in_use),
            ("lazily freed", self.lazily_freed),
            ("file-backed", self.file),
            ("resident before attach", self.before_attach),
            ("unexplained", self.unexplained),
        ]
    }
}

/// Whole percentages of `parts` that add up to 100 (the largest remainders
/// are rounded up), so the verdict's shares add up as its bytes do.
fn shares(parts: &[u64]) -> Vec<u64> {
    let whole: u64 = parts.iter().sum();
    if whole == 0 {
        return vec![0; parts.len()];
    }
    let exact: Vec<u128> = parts.iter().map(|&part| part as u128 * 100).collect();
    let mut shares: Vec<u64> = exact.iter().map(|e| (e / whole as u128) as u64).collect();
    let mut by_remainder: Vec<usize> = (0..parts.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(exact[i] % whole as u128));
    let short = 100 - shares.iter().sum::<u64>();
    for &i in by_remainder.iter().take(short as usize) {
        shares[i] += 1;
    }
    shares
}

/// "RSS 96 MiB: 32 MiB (33%) is lazily freed ...; 48 MiB (50%) is in use,
/// faulted in by f; ..." Every non-zero part of [`Parts`] is named, so the
/// shares add up to 100%.
fn composition(snapshot: &Snapshot) -> String {
    let rss = snapshot.rss();
    let parts = Parts::of(snapshot);
    let bytes = [
        parts.lazily_freed,
        parts.in_use,
        parts.file,
        parts.before_attach,
        parts.unexplained,
    ];
    let percents = shares(&bytes);
    let share = |index: usize| format!("{} ({}%)", Bytes(bytes[index]), percents[index]);
    let mut said = Vec::new();
    if parts.lazily_freed > 0 {
        said.push(format!(
            "{} is memory the program already gave back with MADV_FREE (LazyFree); the kernel \
             takes it back only under memory pressure, so it still counts in RSS",
            share(0)
        ));
    }
    if parts.in_use > 0 {
        let holder = snapshot
            .top_stacks
            .iter()
            .filter(|row| row.in_use > 0)
            .max_by_key(|row| row.in_use)
            .map(|row| {
                let frame = row.frames.first().map_or("?", String::as_str);
                if row.stack.is_some() {
                    format!(
                        ", the largest part ({}) faulted in by {}",
                        Bytes(row.in_use),
                        short_name(&attribution::responsible(&row.frames))
                    )
                } else {
                    format!(", the largest part ({}) under {frame}", Bytes(row.in_use))
                }
            })
            .unwrap_or_default();
        said.push(format!("{} is in use{holder}", share(1)));
    }
    if parts.file > 0 {
        said.push(format!(
            "{} is file-backed (program code and mapped files, which the kernel can drop and \
             read back{})",
            share(2),
            if snapshot.kernel.map_or(snapshot.model.shmem, |k| k.shmem) > 0 {
                ", and shared memory"
            } else {
                ""
            }
        ));
    }
    if parts.before_attach > 0 {
        said.push(format!(
            "{} was already resident when memtrace attached",
            share(3)
        ));
    }
    if parts.unexplained > 0 {
        said.push(format!(
            "{} is unexplained: resident with no event memtrace saw",
            share(4)
        ));
    }
    let what = if snapshot.state == TargetState::Running {
        "RSS"
    } else {
        "At the end, RSS"
    };
    if said.is_empty() {
        format!("{what} {}.", Bytes(rss))
    } else {
        format!("{what} {}: {}.", Bytes(rss), said.join("; "))
    }
}

/// How memory left RSS, in words for "… was given back …".
fn release_phrase(how: Release, bytes: u64) -> Option<String> {
    let bytes = Bytes(bytes);
    Some(match how {
        Release::Munmap => format!("{bytes} with munmap"),
        Release::Madvise(advice) => format!("{bytes} with {advice}"),
        Release::Replaced => format!("{bytes} by mapping over it (mmap with MAP_FIXED)"),
        Release::Mremap => format!("{bytes} with mremap"),
        Release::Brk => format!("{bytes} by shrinking the heap (brk)"),
        Release::LazyFreeReclaimed => {
            format!("{bytes} of the MADV_FREE memory was taken back by the kernel")
        }
        Release::Reclaimed => format!("{bytes} reclaimed by the kernel under memory pressure"),
        Release::Exec => return None,
        Release::Unobserved => format!("{bytes} went with no event memtrace saw"),
    })
}

/// What would make RSS follow use, when lazily freed memory dominates.
fn advice(snapshot: &Snapshot) -> Option<String> {
    let rss = snapshot.rss();
    let lazyfree = snapshot.lazyfree();
    if percent(lazyfree, rss) < NOTABLE {
        return None;
    }
    let runtime = snapshot.runtime.as_ref();
    if let Some(go) = runtime.and_then(|runtime| runtime.go.as_ref()) {
        let settings = &runtime.expect("go implies runtime").go_settings;
        let why = if settings.madvdontneed() == Some(false) {
            "its GODEBUG sets madvdontneed=0".to_owned()
        } else {
            format!("{} does so by default", go.version)
        };
        return Some(format!(
            "This is Go's runtime returning memory with MADV_FREE ({why}): setting \
             GODEBUG=madvdontneed=1 makes it use MADV_DONTNEED, so RSS follows the heap."
        ));
    }
    if runtime.is_some_and(|runtime| runtime.allocators.contains(&Allocator::Jemalloc)) {
        return Some(
            "jemalloc returns memory with MADV_FREE (its \"muzzy\" pages): \
             MALLOC_CONF=muzzy_decay_ms:0 makes it use MADV_DONTNEED, so RSS follows use."
                .to_owned(),
        );
    }
    let go_frames = snapshot
        .top_stacks
        .iter()
        .map(|row| &row.frames)
        .chain(snapshot.top_calls.iter().map(|row| &row.frames))
        .any(|frames| frames.iter().any(|frame| frame.starts_with("runtime.")));
    Some(if go_frames {
        "This is Go's runtime returning memory with MADV_FREE: setting GODEBUG=madvdontneed=1 \
         makes it use MADV_DONTNEED, so RSS follows the heap (Go 1.16 and later do this by \
         default)."
            .to_owned()
    } else {
        "Returning memory with MADV_DONTNEED instead of MADV_FREE would make RSS follow use; \
         as it is, RSS overstates what the program holds until the kernel is short of memory."
            .to_owned()
    })
}

/// The program's own heap profile beside RSS, or what is missing for it.
fn heap_profile(snapshot: &Snapshot) -> Option<String> {
    let runtime = snapshot.runtime.as_ref();
    let Some(heap) = &snapshot.go_heap else {
        let go = runtime.and_then(|runtime| runtime.go.as_ref())?;
        return Some(format!(
            "This is a Go program ({}{}); give --go-pprof \
             http://127.0.0.1:PORT/debug/pprof/heap (its net/http/pprof endpoint) to set its own \
             heap profile beside these numbers.",
            go.version,
            go.module
                .as_deref()
                .map(|module| format!(", {module}"))
                .unwrap_or_default()
        ));
    };
    let rss = snapshot.rss();
    let lazyfree = snapshot.lazyfree();
    let rest = rss.saturating_sub(heap.inuse_space + lazyfree);
    let beside = if lazyfree > 0 {
        format!("{} is lazily freed, and ", Bytes(lazyfree))
    } else {
        String::new()
    };
    let mut text = format!(
        "The Go heap profile counts {} of live heap (as of the last GC): {} of RSS. Beside it, \
         {beside}{} is the rest: the runtime's own memory (spans, goroutine stacks, GC \
         metadata), file-backed pages, and heap that is free but not given back.",
        Bytes(heap.inuse_space),
        share(heap.inuse_space.min(rss), rss),
        Bytes(rest),
    );
    let gogc = runtime
        .and_then(|runtime| runtime.go_settings.gogc.as_deref())
        .and_then(|gogc| gogc.parse::<u64>().ok());
    let growth = gogc.unwrap_or(100);
    let _ = write!(
        text,
        " With GOGC={growth}{} the heap may grow to {:.1}x its live data before a collection.",
        if gogc.is_none() { " (the default)" } else { "" },
        1.0 + growth as f64 / 100.0
    );
    Some(text)
}

/// Address space that stays mapped after the memory was given back.
fn address_space(snapshot: &Snapshot) -> Option<String> {
    let rss = snapshot.rss();
    let advised: u64 = snapshot
        .activity
        .released
        .iter()
        .filter(|(how, _)| matches!(how, Release::Madvise(_)))
        .map(|(_, bytes)| bytes)
        .sum::<u64>()
        + snapshot
            .activity
            .call_stats(Call::Madvise(Advice::FREE))
            .resident_bytes;
    if snapshot.address_space < 2 * rss.max(1) || advised < rss / 10 {
        return None;
    }
    Some(format!(
        "{} of address space stays mapped but only {} is resident: the program gives memory \
         back with madvise, which keeps the mapping (Go's runtime never unmaps its heap), so \
         the virtual size only grows; that costs no RAM.",
        Bytes(snapshot.address_space),
        Bytes(rss)
    ))
}

/// "Given back since attaching: 32 MiB with MADV_FREE (still in RSS), 16 MiB
/// with MADV_DONTNEED, 16 MiB with munmap."
fn given_back(snapshot: &Snapshot) -> Option<String> {
    let activity = &snapshot.activity;
    let mut parts = Vec::new();
    let free = activity.call_stats(Call::Madvise(Advice::FREE));
    if free.resident_bytes > 0 {
        parts.push(format!(
            "{} with MADV_FREE (stays in RSS until reclaimed)",
            Bytes(free.resident_bytes)
        ));
    }
    for (how, bytes) in &activity.released {
        if *bytes > 0 {
            parts.extend(release_phrase(*how, *bytes));
        }
    }
    (!parts.is_empty()).then(|| format!("Given back since attaching: {}.", parts.join(", ")))
}

/// Whether memory grows, and who grows it. Memory the program spent
/// serving heap-profile requests is set apart: memtrace's own `--go-pprof`
/// fetches cause it, and it is no leak.
fn trend(snapshot: &Snapshot) -> Option<String> {
    let growers: Vec<&(String, i64)> = snapshot
        .growers
        .iter()
        .filter(|(who, _)| who != PROFILE_SERVING)
        .collect();
    let serving: i64 = snapshot
        .growers
        .iter()
        .filter(|(who, _)| who == PROFILE_SERVING)
        .map(|(_, grown)| grown)
        .sum();
    let mut text = own_growth(snapshot, &growers)?;
    if percent(serving.max(0) as u64, snapshot.rss()) >= 1.0 {
        let _ = write!(
            text,
            " {} more is what the program spent answering heap-profile requests (runtime/pprof{}): \
             not its own growth, and left out of the trend.",
            Delta(serving),
            if snapshot.go_heap.is_some() {
                ", memtrace's own --go-pprof fetches among them"
            } else {
                ""
            }
        );
    }
    Some(text)
}

/// The trend of the program's own memory, and what grew most.
fn own_growth(snapshot: &Snapshot, growers: &[&(String, i64)]) -> Option<String> {
    let named: Vec<String> = growers
        .iter()
        .take(3)
        .map(|(who, grown)| format!("{} ({})", short_name(who), Delta(*grown)))
        .collect();
    let mut text = match snapshot.trend {
        Trend::Growing { bytes_per_minute } => format!(
            "In-use memory kept growing, at {}/min: a leak suspect",
            Delta(bytes_per_minute as i64)
        ),
        Trend::Sawtooth { cycles } => {
            return Some(format!(
                "Memory rises and falls ({cycles} cycles seen): the pattern of a \
                 garbage-collected heap, not a leak."
            ))
        }
        // Growth that stopped is still worth naming when it is large.
        _ => {
            let grown: i64 = growers.iter().map(|(_, grown)| grown).sum();
            if percent(grown.max(0) as u64, snapshot.rss()) < 10.0 {
                return None;
            }
            format!("Since the first interval {} more is in use", Delta(grown))
        }
    };
    if !named.is_empty() {
        let _ = write!(text, "; what grew most: {}", named.join(", "));
    }
    text.push('.');
    let needs = snapshot.trend.needs();
    if !needs.is_zero() {
        let _ = write!(
            text,
            " Too short a trace to tell a leak from a one-off rise: a trend needs {:.0} s more.",
            needs.as_secs_f64().ceil()
        );
    }
    if growers
        .first()
        .is_some_and(|(who, _)| who == GOROUTINE_STACKS)
    {
        text.push_str(
            " New goroutines keep being created and do not end: a goroutine leak is likely",
        );
        if let Some(heap) = &snapshot.go_heap {
            let held: Vec<String> = heap
                .functions
                .iter()
                .filter(|function| !function.function.starts_with("runtime."))
                .take(3)
                .map(|function| {
                    format!(
                        "{} ({})",
                        short_name(&function.function),
                        Bytes(function.pprof_inuse)
                    )
                })
                .collect();
            if !held.is_empty() {
                let _ = write!(
                    text,
                    "; besides their stacks, the heap profile has them holding {}",
                    held.join(", ")
                );
            }
        }
        text.push('.');
    }
    Some(text)
}

/// How close the process's cgroup is to its limit.
fn cgroup(snapshot: &Snapshot) -> Option<String> {
    let cgroup = snapshot.cgroup.as_ref()?;
    let max = cgroup.max?;
    (percent(cgroup.current, max) >= 90.0).then(|| {
        format!(
            "Its cgroup {} uses {} of its {} limit: at the limit the kernel reclaims, then the \
             OOM killer acts.",
            cgroup.path,
            Bytes(cgroup.current),
            Bytes(max)
        )
    })
}

/// A cgroup's charge, what no process's RSS shows of it, its working set,
/// its headroom, and the processes the OOM killer took.
fn whole_sentences(snapshot: &Snapshot, whole: &Whole) -> Vec<String> {
    let mut sentences = Vec::new();
    let what = snapshot.subject();
    let (Some(memory), Some(charge)) = (&snapshot.cgroup, whole.charge) else {
        sentences.push(format!(
            "The {what} is gone: its charge can no longer be read."
        ));
        return sentences;
    };
    let current = memory.current;
    let limit = match memory.max {
        Some(max) => format!(
            " of its {} limit ({:.0}%)",
            Bytes(max),
            percent(current, max)
        ),
        None => ", with no memory limit".to_owned(),
    };
    let lazily = if charge.lazyfree > 0 {
        format!(
            " ({} of it lazily freed with MADV_FREE, which the kernel takes back before any OOM \
             kill)",
            Bytes(charge.lazyfree)
        )
    } else {
        String::new()
    };
    sentences.push(format!(
        "The {what} is charged {}{limit}: {} anonymous memory{lazily}, {} page cache ({} of it \
         mapped by its processes), {} shared memory, {} kernel memory (page tables, slab, \
         sockets).",
        Bytes(current),
        Bytes(charge.anon),
        Bytes(charge.file),
        Bytes(charge.file_mapped),
        Bytes(charge.shmem),
        Bytes(charge.kernel),
    ));
    let notable = |bytes: u64| percent(bytes, current) >= 1.0;
    let mut gap = Vec::new();
    if notable(charge.unmapped_cache()) {
        gap.push(format!(
            "{} of page cache no process maps (files read or written)",
            Bytes(charge.unmapped_cache())
        ));
    }
    if notable(charge.kernel) {
        gap.push(format!("{} of kernel memory", Bytes(charge.kernel)));
    }
    let mut text = format!(
        "Its processes' RSS adds up to {}",
        Bytes(charge.processes_rss)
    );
    if !gap.is_empty() {
        let _ = write!(
            text,
            "; the cgroup is also charged for what no RSS counts: {}",
            gap.join(" and ")
        );
    }
    let shared = charge.shared_anon();
    if notable(shared.unsigned_abs()) {
        let _ = if shared > 0 {
            write!(
                text,
                "; {} of anonymous memory is shared between processes (since a fork), in each \
                 one's RSS but charged once",
                Bytes(shared as u64)
            )
        } else {
            write!(
                text,
                "; {} of anonymous memory is charged to the cgroup and mapped by none of its \
                 processes now (charged to it by processes gone, or by the kernel)",
                Bytes(shared.unsigned_abs())
            )
        };
    }
    sentences.push(format!("{text}."));
    let mut working_set = format!(
        "Kubernetes evicts on the working set, {}: the charge less the {} inactive file list",
        Bytes(charge.working_set),
        Bytes(memory.stat.inactive_file)
    );
    if charge.lazyfree > 0 {
        // Measured (tests/tests/containers.rs): MADV_FREE moves pages from
        // the anon lists to the inactive file list.
        working_set.push_str(
            ", which holds the lazily freed pages: they count in RSS and in the charge, not in \
             the working set",
        );
    }
    sentences.push(format!("{working_set}."));
    let reclaimable = charge.reclaimable;
    match (whole.time_to_limit, snapshot.trend) {
        (Some(left), Trend::Growing { bytes_per_minute }) => {
            let grows = snapshot
                .growth
                .first()
                .filter(|row| row.grown > 0)
                .map(|row| format!("; what grows most is {}", short_stack(&row.frames)))
                .unwrap_or_default();
            sentences.push(format!(
                "At the present growth of in-use memory ({}/min) the limit is reached in {}{grows}; \
                 before the OOM killer acts the kernel can reclaim up to {} (clean page cache \
                 and lazily freed pages).",
                Delta(bytes_per_minute as i64),
                Span(left),
                Bytes(reclaimable),
            ));
        }
        _ => {
            if let Some(max) = memory.max.filter(|&max| percent(current, max) >= 90.0) {
                sentences.push(format!(
                    "It is near its {} limit: the kernel reclaims first (up to {} of clean page \
                     cache and lazily freed pages), then the OOM killer acts.",
                    Bytes(max),
                    Bytes(reclaimable)
                ));
            }
        }
    }
    for victim in &whole.oom_killed {
        sentences.push(format!(
            "The OOM killer took pid {} ({}) holding {} ({} anonymous){}; its report and profile \
             were written when it was killed.",
            victim.pid,
            victim.command,
            Bytes(victim.rss),
            Bytes(victim.anon),
            victim
                .top
                .as_ref()
                .map(|top| format!(", most of it faulted in by {top}"))
                .unwrap_or_default(),
        ));
    }
    sentences
}

/// A stack's first frames, innermost first, for a sentence.
fn short_stack(frames: &[String]) -> String {
    let mut shown: Vec<&str> = frames.iter().take(3).map(String::as_str).collect();
    if let Some(process) = frames.last().filter(|_| frames.len() > 3) {
        shown.push("…");
        shown.push(process);
    }
    shown.join(" ← ")
}

fn ending(snapshot: &Snapshot) -> Option<String> {
    match snapshot.state {
        TargetState::Running => None,
        TargetState::Exited => {
            Some("The process exited; the figures above are its memory just before it did.".into())
        }
        TargetState::OomKilled => {
            let seen = snapshot
                .oom_kill
                .map(|kill| {
                    format!(
                        " (when chosen the kernel counted {} anonymous, {} file, {} shared)",
                        Bytes(kill.anon_bytes),
                        Bytes(kill.file_bytes),
                        Bytes(kill.shmem_bytes)
                    )
                })
                .unwrap_or_default();
            Some(format!(
                "The process was killed by the OOM killer{seen}; the figures above are what held \
                 its memory at the end."
            ))
        }
    }
}

fn caveats(snapshot: &Snapshot) -> Option<String> {
    let mut caveats = Vec::new();
    if snapshot.lost.records() > 0 {
        caveats.push(format!(
            "{} records were lost (ring buffer full), so the figures are approximate; memtrace \
             re-read /proc to correct them",
            snapshot.lost.records()
        ));
    }
    if snapshot.lost.targets > 0 {
        caveats.push(format!(
            "{} processes that should have been traced were not: the kernel's table of traced \
             processes was full",
            snapshot.lost.targets
        ));
    }
    if snapshot.lost.counters_unreadable {
        caveats.push(
            "the kernel side's loss counters could not be read, so records may have been lost \
             unseen"
                .to_owned(),
        );
    }
    if let Some(kernel) = snapshot.kernel {
        let in_flight = snapshot.reconcile.in_flight;
        if percent(in_flight, kernel.rss) >= 1.0 {
            caveats.push(format!(
                "{} more was changing while /proc was read (in flight), and is checked again at \
                 the next interval",
                Bytes(in_flight)
            ));
        }
    }
    let unresolved = snapshot.process_madvise_unresolved;
    if unresolved.calls > 0 {
        caveats.push(format!(
            "{} process_madvise call{} ({}) named a pidfd that was closed before memtrace could \
             see whose it was; if it was this process's, /proc shows the effect and the events \
             do not",
            unresolved.calls,
            if unresolved.calls == 1 { "" } else { "s" },
            Bytes(unresolved.bytes)
        ));
    }
    (!caveats.is_empty()).then(|| format!("Note: {}.", caveats.join("; ")))
}

/// Resident bytes under stacks cut short that are worth a word.
const CUT_SHORT_NOTABLE: f64 = 1.0;

/// A note for the end of the report, and what it is about: a process's
/// notes are gathered over the whole trace (the code they are about may be
/// gone by the end), the latest said of each thing kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub about: String,
    pub text: String,
}

/// Notes for the end of the report: one per module and reason that cut
/// short the stacks of a notable part of RSS, with what would fix it.
pub fn notices(snapshot: &Snapshot) -> Vec<Notice> {
    if snapshot.stack_source == StackSource::Off {
        return vec![Notice {
            about: "32-bit".to_owned(),
            text: format!(
                "pid {} runs 32-bit code: memtrace follows its memory exactly, but takes no \
                 stacks (it unwinds 64-bit code only)",
                snapshot.pid
            ),
        }];
    }
    let mut notices = Vec::new();
    // The rows are the model's: weighed against the model's RSS (after an
    // exit, the kernel's last reading is from before the teardown).
    let rss = snapshot.model.rss;
    let unnamed_jit: u64 = snapshot
        .top_stacks
        .iter()
        .filter(|row| row.unnamed_jit)
        .map(|row| row.in_use + row.lazyfree)
        .sum();
    if percent(unnamed_jit, rss) >= CUT_SHORT_NOTABLE {
        notices.push(Notice {
            about: "unnamed JIT".to_owned(),
            text: format!(
                "{} resident was faulted in through JIT-compiled code that has no names; to \
                 name it, {}",
                Bytes(unnamed_jit),
                perf_map_advice(&snapshot.command)
            ),
        });
    }
    let mut by_cut: Vec<(String, CutReason, u64, usize)> = Vec::new();
    for row in &snapshot.top_stacks {
        let (Some(StackEnd::Cut(reason)), Some(module)) = (row.end, &row.cut_in) else {
            continue;
        };
        let bytes = row.in_use + row.lazyfree;
        match by_cut
            .iter_mut()
            .find(|(known, why, _, _)| known == module && *why == reason)
        {
            Some(entry) => entry.2 += bytes,
            None => by_cut.push((module.clone(), reason, bytes, row.frames.len())),
        }
    }
    notices.extend(
        by_cut
            .into_iter()
            .filter(|(_, _, bytes, _)| percent(*bytes, rss) >= CUT_SHORT_NOTABLE)
            .map(|(module, reason, bytes, frames)| Notice {
                about: format!("{module} {}", reason.name()),
                text: format!(
                    "stacks through {module} stop after {frames} frame{} ({} resident): {}",
                    if frames == 1 { "" } else { "s" },
                    Bytes(bytes),
                    remedy(reason, &snapshot.command),
                ),
            }),
    );
    notices
}

/// How the runtime `command` is made to write the perf map that names its
/// JIT code (`/tmp/perf-PID.map`).
fn perf_map_advice(command: &str) -> &'static str {
    match command {
        "node" | "nodejs" => "start node with --perf-basic-prof",
        "java" => {
            "run jcmd PID Compiler.perfmap (or start java with \
            -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit)"
        }
        "dotnet" => "set DOTNET_PerfMapEnabled=1",
        name if name.starts_with("python") => "start python 3.12 with -X perf",
        _ => {
            "have the runtime write /tmp/perf-PID.map (node --perf-basic-prof, jcmd PID \
            Compiler.perfmap, DOTNET_PerfMapEnabled=1, python -X perf)"
        }
    }
}

/// Why a stack stopped, and what would give the whole stack.
fn remedy(reason: CutReason, command: &str) -> String {
    match reason {
        CutReason::NoFramePointer => "its code keeps no frame pointers, and they were walked \
            (--unwind fp); --unwind dwarf unwinds it with its unwind tables, or rebuild it with \
            -fno-omit-frame-pointer"
            .to_owned(),
        CutReason::NoUnwindInfo => "its code has neither unwind tables nor frame pointers; \
            rebuild it with -fasynchronous-unwind-tables (gcc's default) or \
            -fno-omit-frame-pointer"
            .to_owned(),
        CutReason::JitCode => match command {
            "java" => "they run through JIT-compiled code that keeps no frame pointers; start \
                java with -XX:+PreserveFramePointer"
                .to_owned(),
            _ => "they run through JIT-compiled code that keeps neither frame pointers nor \
                unwind tables; start the runtime with frame pointers kept, where it can"
                .to_owned(),
        },
        CutReason::StackCopyTooSmall => format!(
            "the stack is deeper than the bytes copied per sample; give --stack-bytes {}K",
            memtrace_common::config::MAX_STACK_COPY / 1024
        ),
        CutReason::DepthLimit => format!(
            "the stack has more than {} frames, which memtrace keeps",
            memtrace_common::config::MAX_STACK_FRAMES
        ),
        CutReason::BadUnwind => "its unwind tables did not lead to a caller".to_owned(),
        CutReason::NotTaken => "no stack was taken".to_owned(),
        CutReason::RingBufferBusy => "the ring buffer was busy when they were taken, so frame \
            pointers were walked instead of unwinding; give a larger --ring-size"
            .to_owned(),
        CutReason::UnreadableCode => "the file their outermost frame is in could not be read \
            (the process and its files were gone before memtrace opened them)"
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn parts_add_up_to_rss_whatever_the_figures() {
        let parts = Parts::split(44 * MIB, [24 * MIB, 3 * MIB, 0, MIB]);
        assert_eq!(parts.in_use, 16 * MIB);
        assert_eq!(parts.total(), 44 * MIB);
        // Counters that disagree for a moment cut the later parts short,
        // never the sum.
        let parts = Parts::split(10 * MIB, [8 * MIB, 4 * MIB, MIB, MIB]);
        assert_eq!(
            (
                parts.lazily_freed,
                parts.file,
                parts.before_attach,
                parts.in_use
            ),
            (8 * MIB, 2 * MIB, 0, 0)
        );
        assert_eq!(parts.total(), 10 * MIB);
    }

    #[test]
    fn shares_add_up_to_a_hundred() {
        assert_eq!(shares(&[1, 1, 1]), [34, 33, 33]);
        assert_eq!(shares(&[24, 16, 3, 0, 0]).iter().sum::<u64>(), 100);
        assert_eq!(shares(&[0, 0]), [0, 0]);
        assert_eq!(shares(&[999, 1]), [100, 0]);
    }
}
