//! Who holds the resident bytes: the model's pages grouped by the stack that
//! brought them in, or, for pages no stack explains, by why and where they
//! are.

use std::collections::HashMap;

use crate::{
    intake::StackId,
    model::{AddressSpace, Cause, PageUse, PAGE_SIZE},
    symbolize::Namer,
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

impl Holder {
    /// The frames shown for the holder: its stack's names, or its label.
    pub fn names(&self, namer: &mut Namer<'_>) -> Vec<String> {
        match self {
            Self::Stack(stack) => namer.names(Some(*stack)),
            other => vec![other.label().unwrap_or_default()],
        }
    }

    /// The stack, for holders that have one.
    pub fn stack(&self) -> Option<StackId> {
        match self {
            Self::Stack(stack) => Some(*stack),
            _ => None,
        }
    }
}

/// In-use bytes faulted in by stacks that were writing a profile for a
/// request (see [`super::growth::PROFILE_SERVING`]).
pub fn in_use_serving_profiles(namer: &mut Namer<'_>) -> u64 {
    resident_by_holder(namer.model)
        .into_iter()
        .filter(|(holder, _)| matches!(holder, Holder::Stack(_)))
        .filter(|(holder, _)| super::growth::serves_profiles(&holder.names(namer)))
        .map(|(_, held)| held.in_use)
        .sum()
}

/// For each of `functions`, the resident bytes faulted in by stacks that
/// pass through it.
pub fn resident_under(namer: &mut Namer<'_>, functions: &[&str]) -> Vec<u64> {
    let mut totals = vec![0; functions.len()];
    for (holder, held) in resident_by_holder(namer.model) {
        if !matches!(holder, Holder::Stack(_)) {
            continue;
        }
        let names = holder.names(namer);
        for (total, function) in totals.iter_mut().zip(functions) {
            if names.iter().any(|name| name == function) {
                *total += held.resident();
            }
        }
    }
    totals
}
