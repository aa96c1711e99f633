//! Who holds the resident bytes, and who gave memory back: the model's pages
//! and call counters grouped by stack (or, for pages no stack explains, by
//! why and where they are), with stacks named by the symbolizer.

use std::collections::HashMap;

use super::snapshot::{CallRow, FaultRow, GrowthRow, RangeRow, StackRow};
use crate::{
    intake::{StackId, StackTable},
    model::{AddressSpace, Backing, Call, Cause, Effect, PageUse, PAGE_SIZE},
    symbolize::{Frame, Symbolizer},
};

/// What resident bytes are put down to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Holder {
    /// The stack of the fault (or populating call) that brought them in.
    Stack(StackId),
    /// A fault whose stack could not be walked, or stacks were off.
    NoStack,
    /// Resident before memtrace attached, in this mapping.
    BeforeAttach(String),
    /// Set up by `execve`, in this mapping.
    Exec(String),
    /// Found in /proc with no event that explains it, in this mapping.
    Unobserved(String),
}

impl Holder {
    /// The frame shown for holders that have no stack.
    pub fn label(&self) -> Option<String> {
        match self {
            Self::Stack(_) => None,
            Self::NoStack => Some("[no stack]".into()),
            Self::BeforeAttach(mapping) => Some(format!("[resident before attach: {mapping}]")),
            Self::Exec(mapping) => Some(format!("[set up by execve: {mapping}]")),
            Self::Unobserved(mapping) => Some(format!("[unexplained: {mapping}]")),
        }
    }
}

/// Resident bytes of one holder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub in_use: u64,
    pub lazyfree: u64,
    /// Pages (of either kind) the holder's faults brought in.
    pub pages: u64,
}

impl Held {
    pub fn resident(&self) -> u64 {
        self.in_use + self.lazyfree
    }
}

/// Resident bytes by holder.
pub fn resident_by_holder(model: &AddressSpace) -> HashMap<Holder, Held> {
    let mut held: HashMap<Holder, Held> = HashMap::new();
    let mut add = |holder: Holder, page_use: PageUse, pages: u64| {
        let entry = held.entry(holder).or_default();
        let bytes = pages * PAGE_SIZE;
        entry.pages += pages;
        match page_use {
            PageUse::InUse => entry.in_use += bytes,
            PageUse::LazyFree => entry.lazyfree += bytes,
            PageUse::ZeroPage => {}
        }
    };
    for (start, extent) in model.extents().iter() {
        let mapping = extent.backing.to_string();
        let pages = start / PAGE_SIZE..extent.end / PAGE_SIZE;
        for (range, state) in model.pages().runs_in(pages) {
            if !state.page_use.resident() {
                continue;
            }
            let holder = match (state.origin.stack, state.origin.cause) {
                (Some(stack), _) => Holder::Stack(stack),
                (None, Cause::BeforeAttach) => Holder::BeforeAttach(mapping.clone()),
                (None, Cause::Exec) => Holder::Exec(mapping.clone()),
                (None, Cause::Unobserved) => Holder::Unobserved(mapping.clone()),
                (None, _) => Holder::NoStack,
            };
            add(holder, state.page_use, range.end - range.start);
        }
    }
    held
}

/// Names the frames of `holder`: symbolized for stacks, a label otherwise.
pub struct Namer<'a> {
    pub stacks: &'a StackTable,
    pub symbolizer: &'a mut Symbolizer,
    pub model: &'a AddressSpace,
}

impl Namer<'_> {
    pub fn frames(&mut self, stack: Option<StackId>) -> Vec<Frame> {
        let Some(stack) = stack else {
            return Vec::new();
        };
        match self.stacks.get(stack) {
            Some(ips) => self
                .symbolizer
                .stack(stack, ips, self.model.extents())
                .to_vec(),
            None => Vec::new(),
        }
    }

    pub fn names(&mut self, stack: Option<StackId>) -> Vec<String> {
        let frames = self.frames(stack);
        if frames.is_empty() {
            return vec![match stack {
                Some(stack) => format!("[stack {stack} not read]"),
                None => "[no stack]".into(),
            }];
        }
        frames.iter().flat_map(Frame::names).collect()
    }

    pub fn holder_names(&mut self, holder: &Holder) -> Vec<String> {
        match holder {
            Holder::Stack(stack) => self.names(Some(*stack)),
            other => vec![other.label().unwrap_or_default()],
        }
    }
}

/// The `count` stacks with the most resident bytes. Stacks that differ only
/// in addresses within the same functions (a loop faulting from several
/// instructions) are one row, under the id of the largest.
pub fn top_stacks(namer: &mut Namer<'_>, count: usize) -> Vec<StackRow> {
    let mut held: Vec<(Holder, Held)> = resident_by_holder(namer.model).into_iter().collect();
    held.sort_by(|a, b| b.1.resident().cmp(&a.1.resident()).then(a.0.cmp(&b.0)));
    let mut rows: Vec<StackRow> = Vec::new();
    let mut by_frames: HashMap<Vec<String>, usize> = HashMap::new();
    for (holder, held) in held {
        let cut_short_in = match holder {
            Holder::Stack(stack) => crate::symbolize::cut_short_in(&namer.frames(Some(stack)))
                .map(|module| module.path.clone()),
            _ => None,
        };
        let frames = namer.holder_names(&holder);
        match by_frames.get(&frames) {
            Some(&row) => {
                rows[row].in_use += held.in_use;
                rows[row].lazyfree += held.lazyfree;
            }
            None => {
                by_frames.insert(frames.clone(), rows.len());
                rows.push(StackRow {
                    stack: match holder {
                        Holder::Stack(stack) => Some(stack),
                        _ => None,
                    },
                    frames,
                    in_use: held.in_use,
                    lazyfree: held.lazyfree,
                    cut_short_in,
                });
            }
        }
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.in_use + row.lazyfree));
    rows.truncate(count);
    rows
}

/// The `count` calls (by stack) that changed the most resident bytes:
/// releases and `MADV_FREE` first.
pub fn top_calls(namer: &mut Namer<'_>, count: usize) -> Vec<CallRow> {
    let mut calls: Vec<_> = namer
        .model
        .counters()
        .calls_by_stack
        .iter()
        .filter(|((call, _), _)| match call {
            Call::Munmap | Call::Mremap | Call::Brk => true,
            Call::Madvise(advice) => advice.effect() != Effect::None,
            Call::Mmap => false,
        })
        .map(|(&(call, stack), &stats)| (call, stack, stats))
        .collect();
    calls.sort_by(|a, b| {
        b.2.resident_bytes
            .cmp(&a.2.resident_bytes)
            .then(b.2.bytes.cmp(&a.2.bytes))
            .then((a.0, a.1).cmp(&(b.0, b.1)))
    });
    calls
        .into_iter()
        .take(count)
        .map(|(call, stack, stats)| CallRow {
            call: call.name(),
            stack,
            frames: namer.names(stack),
            calls: stats.calls,
            bytes: stats.bytes,
            resident_bytes: stats.resident_bytes,
        })
        .collect()
}

/// The holders whose resident bytes grew since `baseline` (an earlier
/// [`resident_by_holder`]), merged by name like [`top_stacks`], largest
/// first.
pub fn growth(namer: &mut Namer<'_>, baseline: &HashMap<Holder, Held>) -> Vec<GrowthRow> {
    let now = resident_by_holder(namer.model);
    let mut deltas: HashMap<&Holder, i64> = HashMap::new();
    for (holder, held) in &now {
        *deltas.entry(holder).or_default() += held.resident() as i64;
    }
    for (holder, held) in baseline {
        *deltas.entry(holder).or_default() -= held.resident() as i64;
    }
    let mut deltas: Vec<(&Holder, i64)> = deltas.into_iter().filter(|(_, d)| *d != 0).collect();
    deltas.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut rows: Vec<GrowthRow> = Vec::new();
    let mut by_frames: HashMap<Vec<String>, usize> = HashMap::new();
    for (holder, grown) in deltas {
        let frames = namer.holder_names(holder);
        match by_frames.get(&frames) {
            Some(&row) => rows[row].grown += grown,
            None => {
                by_frames.insert(frames.clone(), rows.len());
                rows.push(GrowthRow {
                    stack: match holder {
                        Holder::Stack(stack) => Some(*stack),
                        _ => None,
                    },
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

/// What a growing stack is put down to in a sentence: goroutine stacks, or
/// the first function that is not the runtime's or the allocator's own.
pub fn responsible(frames: &[String]) -> String {
    if frames.iter().any(|frame| frame == "runtime.malg") {
        return GOROUTINE_STACKS.to_owned();
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

/// For each of `functions`, the resident bytes faulted in by stacks that
/// pass through it.
pub fn resident_under(namer: &mut Namer<'_>, functions: &[&str]) -> Vec<u64> {
    let mut totals = vec![0; functions.len()];
    for (holder, held) in resident_by_holder(namer.model) {
        if !matches!(holder, Holder::Stack(_)) {
            continue;
        }
        let names = namer.holder_names(&holder);
        for (total, function) in totals.iter_mut().zip(functions) {
            if names.iter().any(|name| name == function) {
                *total += held.resident();
            }
        }
    }
    totals
}

/// The `count` stacks that faulted the most bytes in, merged by name like
/// [`top_stacks`].
pub fn top_faults(namer: &mut Namer<'_>, count: usize) -> Vec<FaultRow> {
    let mut faults: Vec<_> = namer
        .model
        .counters()
        .faults_by_stack
        .iter()
        .map(|(&stack, &faults)| (stack, faults))
        .collect();
    faults.sort_by_key(|(stack, faults)| (std::cmp::Reverse(faults.paged_in), *stack));
    let mut rows: Vec<FaultRow> = Vec::new();
    let mut by_frames: HashMap<Vec<String>, usize> = HashMap::new();
    for (stack, faults) in faults {
        let frames = namer.names(stack);
        let paged_in_bytes = faults.paged_in * PAGE_SIZE;
        match by_frames.get(&frames) {
            Some(&row) => {
                rows[row].count += faults.count;
                rows[row].paged_in_bytes += paged_in_bytes;
            }
            None => {
                by_frames.insert(frames.clone(), rows.len());
                rows.push(FaultRow {
                    stack,
                    frames,
                    count: faults.count,
                    paged_in_bytes,
                });
            }
        }
    }
    rows.sort_by_key(|row| std::cmp::Reverse(row.paged_in_bytes));
    rows.truncate(count);
    rows
}

/// The `count` mappings with the most resident bytes.
pub fn top_ranges(model: &AddressSpace, count: usize) -> Vec<RangeRow> {
    let mut rows: Vec<RangeRow> = model
        .extents()
        .iter()
        .map(|(start, extent)| {
            let (resident, _, lazyfree) =
                model.resident_in(start / PAGE_SIZE..extent.end / PAGE_SIZE);
            RangeRow {
                start,
                end: extent.end,
                mapping: match &extent.backing {
                    Backing::File { .. } | Backing::Shmem { .. } | Backing::Special(_) => {
                        extent.backing.to_string()
                    }
                    other => format!("{other} {}", prot_string(extent.prot, extent.shared)),
                },
                created_by: extent.created_by,
                stack: extent.stack,
                resident,
                lazyfree,
            }
        })
        .filter(|row| row.resident > 0)
        .collect();
    rows.sort_by(|a, b| b.resident.cmp(&a.resident).then(a.start.cmp(&b.start)));
    rows.truncate(count);
    rows
}

fn prot_string(prot: u32, shared: bool) -> String {
    let bit = |flag: i32, c: char| if prot & flag as u32 != 0 { c } else { '-' };
    [
        bit(libc::PROT_READ, 'r'),
        bit(libc::PROT_WRITE, 'w'),
        bit(libc::PROT_EXEC, 'x'),
        if shared { 's' } else { 'p' },
    ]
    .iter()
    .collect()
}
