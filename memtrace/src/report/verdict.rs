//! The verdict: what RSS is made of, in plain language, and what would
//! change it. Every sentence comes from something observed; a sentence
//! whose facts are missing is left out, never guessed.

use std::fmt::Write as _;

use super::{
    format::{percent, Bytes, Delta},
    history::Trend,
    snapshot::{Snapshot, TargetState},
};
use crate::{
    attribution::{self, GOROUTINE_STACKS, PROFILE_SERVING},
    model::{Advice, Call, Release},
    runtime::Allocator,
};

/// A part of RSS that is worth a sentence.
const NOTABLE: f64 = 5.0;

pub fn verdict(snapshot: &Snapshot) -> String {
    let mut sentences = Vec::new();
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
    if let Some(cgroup) = cgroup(snapshot) {
        sentences.push(cgroup);
    }
    if let Some(ending) = ending(snapshot) {
        sentences.push(ending);
    }
    if let Some(caveat) = caveats(snapshot) {
        sentences.push(caveat);
    }
    format!("Verdict: {}", sentences.join("\n  "))
}

fn share(part: u64, whole: u64) -> String {
    format!("{} ({:.0}%)", Bytes(part), percent(part, whole))
}

/// "RSS 96 MiB: 32 MiB is lazily freed ...; 48 MiB is in use, faulted in by
/// f."
fn composition(snapshot: &Snapshot) -> String {
    let rss = snapshot.rss();
    let lazyfree = snapshot.lazyfree();
    let model = &snapshot.model;
    let mut parts = Vec::new();
    if percent(lazyfree, rss) >= NOTABLE {
        parts.push(format!(
            "{} is memory the program already gave back with MADV_FREE (LazyFree); the kernel \
             takes it back only under memory pressure, so it still counts in RSS",
            share(lazyfree, rss)
        ));
    }
    let in_use = model.in_use.min(rss);
    if in_use > 0 {
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
                        attribution::responsible(&row.frames)
                    )
                } else {
                    format!(", the largest part ({}) under {frame}", Bytes(row.in_use))
                }
            })
            .unwrap_or_default();
        parts.push(format!("{} is in use{holder}", share(in_use, rss)));
    }
    if percent(model.file, rss) >= NOTABLE {
        parts.push(format!(
            "{} is file-backed (program code and mapped files, which the kernel can drop and \
             read back)",
            share(model.file, rss)
        ));
    }
    if percent(model.by_cause.before_attach, rss) >= NOTABLE {
        parts.push(format!(
            "{} was already resident when memtrace attached",
            share(model.by_cause.before_attach, rss)
        ));
    }
    let what = if snapshot.state == TargetState::Running {
        "RSS"
    } else {
        "At the end, RSS"
    };
    if parts.is_empty() {
        format!("{what} {}.", Bytes(rss))
    } else {
        format!("{what} {}: {}.", Bytes(rss), parts.join("; "))
    }
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
        if *bytes == 0 {
            continue;
        }
        parts.push(match how {
            Release::LazyFreeReclaimed => format!(
                "{} of the MADV_FREE memory was taken back by the kernel",
                Bytes(*bytes)
            ),
            Release::Exec => continue,
            Release::Unobserved => format!("{} went with no event memtrace saw", Bytes(*bytes)),
            other => format!("{} with {}", Bytes(*bytes), other.name()),
        });
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
            " {} more is what the program spent answering heap-profile requests (runtime/pprof{}):              not its own growth, and left out of the trend.",
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
        .map(|(who, grown)| format!("{who} ({})", Delta(*grown)))
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
                .map(|function| format!("{} ({})", function.function, Bytes(function.pprof_inuse)))
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
    if snapshot.lost.counters_unreadable {
        caveats.push(
            "the kernel side's loss counters could not be read, so records may have been lost \
             unseen"
                .to_owned(),
        );
    }
    let unexplained = snapshot.unexplained();
    if let Some(kernel) = snapshot.kernel {
        if percent(unexplained, kernel.rss) >= 1.0 {
            caveats.push(format!(
                "{} of RSS is unexplained: resident with no event memtrace saw",
                share(unexplained, kernel.rss)
            ));
        }
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

/// Notes for the end of the report: one per module whose missing frame
/// pointers cut short the stacks of a notable part of RSS.
pub fn notices(snapshot: &Snapshot) -> Vec<String> {
    let mut by_module: Vec<(String, u64, usize)> = Vec::new();
    for row in &snapshot.top_stacks {
        let Some(module) = &row.cut_short_in else {
            continue;
        };
        let bytes = row.in_use + row.lazyfree;
        match by_module.iter_mut().find(|(known, _, _)| known == module) {
            Some(entry) => entry.1 += bytes,
            None => by_module.push((module.clone(), bytes, row.frames.len())),
        }
    }
    by_module
        .into_iter()
        .filter(|(_, bytes, _)| percent(*bytes, snapshot.rss()) >= CUT_SHORT_NOTABLE)
        .map(|(module, bytes, frames)| {
            format!(
                "stacks through {module} stop after {frames} frame{} ({} resident): it looks \
                 built without frame pointers, so their callers are missing; rebuild it with \
                 -fno-omit-frame-pointer for whole stacks",
                if frames == 1 { "" } else { "s" },
                Bytes(bytes),
            )
        })
        .collect()
}
