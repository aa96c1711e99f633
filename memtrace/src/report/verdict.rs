//! The verdict: what RSS is made of, in plain language, and what would
//! change it. Every sentence comes from something observed; a sentence
//! whose facts are missing is left out, never guessed.

use super::{
    format::{percent, Bytes, Delta},
    history::Trend,
    snapshot::{Snapshot, TargetState},
};
use crate::model::{Advice, Call, Release};

/// A part of RSS that is worth a sentence.
const NOTABLE: f64 = 5.0;

pub fn verdict(snapshot: &Snapshot, _stacks_known: usize) -> String {
    let mut sentences = Vec::new();
    sentences.push(composition(snapshot));
    if let Some(advice) = advice(snapshot) {
        sentences.push(advice);
    }
    if let Some(given_back) = given_back(snapshot) {
        sentences.push(given_back);
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
                format!(
                    ", the largest part ({}) faulted in by {}",
                    Bytes(row.in_use),
                    row.frames.first().map_or("?", String::as_str)
                )
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
    let go = snapshot
        .top_stacks
        .iter()
        .map(|row| &row.frames)
        .chain(snapshot.top_calls.iter().map(|row| &row.frames))
        .any(|frames| frames.iter().any(|frame| frame.starts_with("runtime.")));
    Some(if go {
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

/// "Given back since attaching: 32 MiB with MADV_FREE (still in RSS), 16 MiB
/// with MADV_DONTNEED, 16 MiB with munmap."
fn given_back(snapshot: &Snapshot) -> Option<String> {
    let counters = &snapshot.counters;
    let mut parts = Vec::new();
    let free = counters.call_stats(Call::Madvise(Advice::FREE));
    if free.resident_bytes > 0 {
        parts.push(format!(
            "{} with MADV_FREE (stays in RSS until reclaimed)",
            Bytes(free.resident_bytes)
        ));
    }
    for (how, bytes) in &counters.released {
        if *bytes == 0 {
            continue;
        }
        parts.push(match how {
            Release::LazyFreeReclaimed => format!(
                "{} of the MADV_FREE memory was taken back by the kernel",
                Bytes(*bytes)
            ),
            Release::Exec => continue,
            other => format!("{} with {}", Bytes(*bytes), other.name()),
        });
    }
    (!parts.is_empty()).then(|| format!("Given back since attaching: {}.", parts.join(", ")))
}

/// Whether memory grows, and who grows it.
fn trend(snapshot: &Snapshot) -> Option<String> {
    match snapshot.trend {
        Trend::Growing { bytes_per_minute } => {
            let growers: Vec<String> = snapshot
                .growth
                .iter()
                .take(3)
                .map(|row| {
                    format!(
                        "{} ({})",
                        row.frames.first().map_or("?", String::as_str),
                        Delta(row.grown)
                    )
                })
                .collect();
            let who = if growers.is_empty() {
                String::new()
            } else {
                format!(
                    "; what grew most since the first interval: {}",
                    growers.join(", ")
                )
            };
            Some(format!(
                "In-use memory kept growing, at {}/min: a leak suspect{who}.",
                Delta(bytes_per_minute as i64)
            ))
        }
        Trend::Sawtooth { cycles } => Some(format!(
            "Memory rises and falls ({cycles} cycles seen): the pattern of a garbage-collected \
             heap, not a leak."
        )),
        Trend::Steady | Trend::Unknown => None,
    }
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
    let unexplained = snapshot.unexplained();
    if let Some(kernel) = snapshot.kernel {
        if percent(unexplained, kernel.rss) >= 1.0 {
            caveats.push(format!(
                "{} of RSS is unexplained: resident with no event memtrace saw",
                share(unexplained, kernel.rss)
            ));
        }
    }
    (!caveats.is_empty()).then(|| format!("Note: {}.", caveats.join("; ")))
}
