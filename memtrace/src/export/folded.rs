//! Resident bytes by fault stack in Brendan Gregg's folded format: one line
//! per stack, frames outermost first, separated by `;`, then the bytes.
//! Lazily freed bytes are a separate line whose innermost frame is
//! `[lazily freed (MADV_FREE)]`, so flame graphs show them apart. The lines
//! add up to the resident bytes of the model.

use crate::{attribution::resident_by_holder, symbolize::Namer};

pub const LAZYFREE_FRAME: &str = "[lazily freed (MADV_FREE)]";

pub fn folded(namer: &mut Namer<'_>) -> Vec<String> {
    let mut held: Vec<_> = resident_by_holder(namer.model).into_iter().collect();
    held.sort_by(|a, b| a.0.cmp(&b.0));
    let mut lines = Vec::new();
    for (holder, held) in held {
        let mut frames: Vec<String> = holder
            .names(namer)
            .into_iter()
            .rev()
            .map(|name| sanitize(&name))
            .collect();
        if held.in_use > 0 {
            lines.push(format!("{} {}", frames.join(";"), held.in_use));
        }
        if held.lazyfree > 0 {
            frames.push(LAZYFREE_FRAME.into());
            lines.push(format!("{} {}", frames.join(";"), held.lazyfree));
        }
    }
    lines
}

/// Frame names must not contain the separators of the format.
fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace('\n', " ")
}
