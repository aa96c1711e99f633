//! What grew since the first interval, and who is responsible for it in a
//! sentence. Growth counts in-use bytes: memory given back with
//! `MADV_FREE` is not growth, even while it stays in RSS.

use std::collections::HashMap;

use super::{
    holders::{resident_by_holder, Held, Holder},
    rows::GrowthRow,
};
use crate::{intake::StackId, symbolize::Namer};

/// In-use bytes by the names of the stacks that hold them: a baseline that
/// compares across captures of the same program, where stack ids do not.
pub type NamedBaseline = HashMap<Vec<String>, i64>;

/// The in-use bytes of every holder now, by name.
pub fn in_use_by_names(namer: &mut Namer<'_>) -> NamedBaseline {
    let mut by_names = NamedBaseline::new();
    for (holder, held) in resident_by_holder(namer.model) {
        *by_names.entry(holder.names(namer)).or_default() += held.in_use as i64;
    }
    by_names
}

/// The stacks whose in-use bytes grew since `baseline`, by name, largest
/// first; each row's stack is the one holding the most under that name now.
pub fn growth_from_names(namer: &mut Namer<'_>, baseline: &NamedBaseline) -> Vec<GrowthRow> {
    // Per name: in-use bytes now less then, and the largest holder's
    // (bytes, stack).
    type Row = (i64, Option<(u64, StackId)>);
    let mut by_names: HashMap<Vec<String>, Row> = HashMap::new();
    for (holder, held) in resident_by_holder(namer.model) {
        let row = by_names.entry(holder.names(namer)).or_default();
        row.0 += held.in_use as i64;
        if let Some(stack) = holder.stack() {
            // The largest holder, the lowest id among equals: the same
            // row whatever order the holders come in.
            let candidate = (held.in_use, stack);
            let better = |(bytes, id): (u64, StackId)| {
                candidate.0 > bytes || (candidate.0 == bytes && candidate.1 < id)
            };
            if row.1.is_none_or(better) {
                row.1 = Some(candidate);
            }
        }
    }
    for (frames, bytes) in baseline {
        by_names.entry(frames.clone()).or_default().0 -= bytes;
    }
    let mut rows: Vec<GrowthRow> = by_names
        .into_iter()
        .filter(|(_, (grown, _))| *grown > 0)
        .map(|(frames, (grown, stack))| GrowthRow {
            stack: stack.map(|(_, id)| id),
            frames,
            grown,
        })
        .collect();
    rows.sort_by(|a, b| b.grown.cmp(&a.grown).then_with(|| a.frames.cmp(&b.frames)));
    rows
}

/// The holders whose in-use bytes grew since `baseline` (an earlier
/// [`resident_by_holder`]), merged by name like [`top_stacks`], largest
/// first.
pub fn growth(namer: &mut Namer<'_>, baseline: &HashMap<Holder, Held>) -> Vec<GrowthRow> {
    let now = resident_by_holder(namer.model);
    let mut deltas: HashMap<&Holder, i64> = HashMap::new();
    for (holder, held) in &now {
        *deltas.entry(holder).or_default() += held.in_use as i64;
    }
    for (holder, held) in baseline {
        *deltas.entry(holder).or_default() -= held.in_use as i64;
    }
    let mut deltas: Vec<(&Holder, i64)> = deltas.into_iter().filter(|(_, d)| *d != 0).collect();
    deltas.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut rows: Vec<GrowthRow> = Vec::new();
    let mut by_frames: HashMap<Vec<String>, usize> = HashMap::new();
    for (holder, grown) in deltas {
        let frames = holder.names(namer);
        match by_frames.get(&frames) {
            Some(&row) => rows[row].grown += grown,
            None => {
                by_frames.insert(frames.clone(), rows.len());
                rows.push(GrowthRow {
                    stack: holder.stack(),
                    frames,
                    grown,
                });
            }
        }
    }
    rows.retain(|row| row.grown > 0);
    rows.sort_by_key(|row| std::cmp::Reverse(row.grown));
    rows
}

/// The Go runtime's functions that allocate goroutine stacks: a new
/// goroutine's (`malg`, from `newproc1`) and a grown one's (`newstack`
/// copies it into a larger one).
const GOROUTINE_STACK_MAKERS: [&str; 5] = [
    "runtime.malg",
    "runtime.newproc1",
    "runtime.newstack",
    "runtime.copystack",
    "runtime.stackalloc",
];

/// What a growing stack is put down to in a sentence: goroutine stacks, or
/// the first function that is not the runtime's or the allocator's own.
pub fn responsible(frames: &[String]) -> String {
    if frames
        .iter()
        .any(|frame| GOROUTINE_STACK_MAKERS.contains(&frame.as_str()))
    {
        return GOROUTINE_STACKS.to_owned();
    }
    if serves_profiles(frames) {
        return PROFILE_SERVING.to_owned();
    }
    // A Go program's own code is its main package; the standard library's
    // I/O under it (a read into a fresh buffer) is how, not who.
    if let Some(main) = frames.iter().find(|frame| frame.starts_with("main.")) {
        return main.clone();
    }
    let plumbing = |frame: &&String| {
        ["runtime.", "runtime/", "syscall.", "[", "__", "_int_"]
            .iter()
            .any(|prefix| frame.starts_with(prefix))
            || ["malloc", "calloc", "realloc", "sysmalloc", "mmap64"].contains(&frame.as_str())
    };
    frames
        .iter()
        .find(|frame| !plumbing(frame))
        .or(frames.first())
        .cloned()
        .unwrap_or_else(|| "?".to_owned())
}

pub const GOROUTINE_STACKS: &str = "goroutine stacks (runtime.malg)";

/// What memory a Go program spends writing a profile is put down to: every
/// request for one (memtrace's own `--go-pprof` fetches among them) makes
/// it build and gzip the profile (`runtime/pprof.writeHeapProto`,
/// `compress/flate.NewWriter` under it). Not the program's own growth.
pub const PROFILE_SERVING: &str = "serving heap-profile requests (runtime/pprof)";

/// Whether `frames` were writing a profile for a request.
pub fn serves_profiles(frames: &[String]) -> bool {
    frames
        .iter()
        .any(|frame| frame.starts_with("runtime/pprof."))
}

/// Growth by what is responsible ([`responsible`]), largest first, over
/// all of `rows`.
pub fn growth_by_responsible(rows: &[GrowthRow]) -> Vec<(String, i64)> {
    let mut totals: Vec<(String, i64)> = Vec::new();
    for row in rows {
        let who = responsible(&row.frames);
        match totals.iter_mut().find(|(known, _)| *known == who) {
            Some(total) => total.1 += row.grown,
            None => totals.push((who, row.grown)),
        }
    }
    totals.sort_by_key(|(_, grown)| std::cmp::Reverse(*grown));
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn goroutine_stacks_are_named_as_such() {
        for maker in GOROUTINE_STACK_MAKERS {
            let stack = frames(&["runtime.memclrNoHeapPointers", maker, "main.worker"]);
            assert_eq!(responsible(&stack), GOROUTINE_STACKS, "{maker}");
        }
        let stack = frames(&["runtime.mallocgc", "main.remember", "main.main"]);
        assert_eq!(responsible(&stack), "main.remember");
    }

    #[test]
    fn memory_spent_writing_heap_profiles_is_put_down_to_the_requests() {
        // What a Go program allocates to answer /debug/pprof/heap: the gzip
        // writer under runtime/pprof.writeHeapProto.
        let gzip = frames(&[
            "compress/flate.NewWriter",
            "compress/gzip.(*Writer).Write",
            "runtime/pprof.(*profileBuilder).flush",
            "runtime/pprof.writeHeapProto",
            "runtime/pprof.writeHeapInternal",
            "net/http/pprof.handler.ServeHTTP",
            "main.main",
        ]);
        assert_eq!(responsible(&gzip), PROFILE_SERVING);
        assert!(serves_profiles(&gzip));
        let own = frames(&["runtime.mallocgc", "main.remember", "main.main"]);
        assert_eq!(responsible(&own), "main.remember");
        assert!(!serves_profiles(&own));
    }
}
