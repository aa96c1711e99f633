//! The top-N tables of a report: the stacks that hold the most resident
//! bytes, the calls that gave the most back, the stacks that faulted the
//! most in, and the largest mappings, with their frames named.

use std::collections::HashMap;

use super::{
    coverage::gives_back,
    holders::{resident_by_holder, Held, Holder},
};
use crate::{
    intake::{StackEnd, StackId},
    model::{AddressSpace, Backing, Call, CreatedBy, Effect, PAGE_SIZE},
    symbolize::Namer,
};

/// A mapping and what of it is resident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRow {
    pub start: u64,
    pub end: u64,
    pub mapping: String,
    pub created_by: CreatedBy,
    pub stack: Option<StackId>,
    pub resident: u64,
    pub lazyfree: u64,
}

/// A stack and the bytes it accounts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackRow {
    pub stack: Option<StackId>,
    /// Function names, innermost first (`module+0x..` where unknown).
    pub frames: Vec<String>,
    pub in_use: u64,
    pub lazyfree: u64,
    /// How the stack ends (`None` for bytes no stack explains).
    pub end: Option<StackEnd>,
    /// Where a cut stack stops: the module of its outermost frame.
    pub cut_in: Option<String>,
    /// The stack runs through JIT code no perf map names.
    pub unnamed_jit: bool,
}

/// A stack whose resident bytes changed since the first snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrowthRow {
    pub stack: Option<StackId>,
    pub frames: Vec<String>,
    pub grown: i64,
}

/// Faults taken at a stack since attaching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRow {
    pub stack: Option<StackId>,
    pub frames: Vec<String>,
    pub count: u64,
    pub paged_in_bytes: u64,
    /// How the stack ends (`None` for faults with no stack).
    pub end: Option<StackEnd>,
}

/// Bytes a call changed, by the stack that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRow {
    pub call: String,
    pub stack: Option<StackId>,
    pub frames: Vec<String>,
    pub calls: u64,
    pub bytes: u64,
    pub resident_bytes: u64,
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
        let named = namer.named(holder.stack());
        let end = named.as_ref().map(|named| named.end);
        let cut_in = named
            .as_ref()
            .and_then(|named| named.cut_in.as_ref())
            .map(|module| module.path.clone());
        let unnamed_jit = named.as_ref().is_some_and(|named| named.unnamed_jit > 0);
        let frames = holder.names(namer);
        match by_frames.get(&frames) {
            Some(&row) => {
                rows[row].in_use += held.in_use;
                rows[row].lazyfree += held.lazyfree;
            }
            None => {
                by_frames.insert(frames.clone(), rows.len());
                rows.push(StackRow {
                    stack: holder.stack(),
                    frames,
                    in_use: held.in_use,
                    lazyfree: held.lazyfree,
                    end,
                    cut_in,
                    unnamed_jit,
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
        .activity()
        .calls_by_stack
        .iter()
        .filter(|((call, _), _)| match call {
            Call::Madvise(advice) => advice.effect() != Effect::None,
            other => gives_back(*other),
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

/// The `count` stacks that faulted the most bytes in, merged by name like
/// [`top_stacks`].
pub fn top_faults(namer: &mut Namer<'_>, count: usize) -> Vec<FaultRow> {
    let mut faults: Vec<_> = namer
        .model
        .activity()
        .faults_by_stack
        .iter()
        .map(|(&stack, &faults)| (stack, faults))
        .collect();
    faults.sort_by_key(|(stack, faults)| (std::cmp::Reverse(faults.paged_in), *stack));
    let mut rows: Vec<FaultRow> = Vec::new();
    let mut by_frames: HashMap<Vec<String>, usize> = HashMap::new();
    for (stack, faults) in faults {
        let end = namer.named(stack).map(|named| named.end);
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
                    end,
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
