//! Resident bytes by fault stack in Brendan Gregg's folded format: one line
//! per stack, frames outermost first, separated by `;`, then the bytes.
//! Lazily freed bytes are a separate line whose innermost frame is
//! `[lazily freed (MADV_FREE)]`, so flame graphs show them apart. The lines
//! add up to the resident bytes of the model, and no stack appears twice:
//! holders whose frames read the same (one loop faulting from several
//! instructions) are one line. In a profile of several processes (a
//! cgroup), each stack starts at a frame naming its process, so a flame
//! graph shows each process as a tower.

use std::collections::BTreeMap;

use super::Part;
use crate::attribution::resident_by_holder;

pub const LAZYFREE_FRAME: &str = "[lazily freed (MADV_FREE)]";

pub fn folded(parts: &mut [Part<'_>]) -> Vec<String> {
    let several = parts.len() > 1;
    let mut bytes_by_stack: BTreeMap<String, u64> = BTreeMap::new();
    for part in parts.iter_mut() {
        let root = several.then(|| sanitize(&part.root_frame()));
        let namer = &mut part.namer;
        let mut held: Vec<_> = resident_by_holder(namer.model).into_iter().collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        for (holder, held) in held {
            let mut frames: Vec<String> = root.iter().cloned().collect();
            frames.extend(
                holder
                    .names(namer)
                    .into_iter()
                    .rev()
                    .map(|name| sanitize(&name)),
            );
            if held.in_use > 0 {
                *bytes_by_stack.entry(frames.join(";")).or_default() += held.in_use;
            }
            if held.lazyfree > 0 {
                frames.push(LAZYFREE_FRAME.into());
                *bytes_by_stack.entry(frames.join(";")).or_default() += held.lazyfree;
            }
        }
    }
    bytes_by_stack
        .into_iter()
        .map(|(stack, bytes)| format!("{stack} {bytes}"))
        .collect()
}

/// Frame names must not contain the separators of the format.
fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace('\n', " ")
}
