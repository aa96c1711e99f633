//! madvise advice: names, and what each does to resident memory.

use std::fmt;

/// A `madvise`/`process_madvise` advice value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Advice(pub i32);

/// What an advice does to the resident pages of its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// The pages leave RSS at once (the next touch faults in a fresh page).
    Release,
    /// Anonymous pages become lazily freed: still in RSS until the kernel
    /// needs memory, or in use again if written.
    LazyFree,
    /// The kernel is asked to reclaim the pages now; which ones it could is
    /// seen in /proc afterwards.
    Reclaim,
    /// The pages are faulted in by the call, for reading or writing.
    Populate { write: bool },
    /// No change to which pages are resident.
    None,
}

/// (value, name, effect) for every advice Linux defines.
const ADVICES: &[(i32, &str, Effect)] = &[
    (0, "MADV_NORMAL", Effect::None),
    (1, "MADV_RANDOM", Effect::None),
    (2, "MADV_SEQUENTIAL", Effect::None),
    (3, "MADV_WILLNEED", Effect::None),
    (4, "MADV_DONTNEED", Effect::Release),
    (8, "MADV_FREE", Effect::LazyFree),
    (9, "MADV_REMOVE", Effect::Release),
    (10, "MADV_DONTFORK", Effect::None),
    (11, "MADV_DOFORK", Effect::None),
    (12, "MADV_MERGEABLE", Effect::None),
    (13, "MADV_UNMERGEABLE", Effect::None),
    (14, "MADV_HUGEPAGE", Effect::None),
    (15, "MADV_NOHUGEPAGE", Effect::None),
    (16, "MADV_DONTDUMP", Effect::None),
    (17, "MADV_DODUMP", Effect::None),
    (18, "MADV_WIPEONFORK", Effect::None),
    (19, "MADV_KEEPONFORK", Effect::None),
    (20, "MADV_COLD", Effect::None),
    (21, "MADV_PAGEOUT", Effect::Reclaim),
    (22, "MADV_POPULATE_READ", Effect::Populate { write: false }),
    (23, "MADV_POPULATE_WRITE", Effect::Populate { write: true }),
    (24, "MADV_DONTNEED_LOCKED", Effect::Release),
    (25, "MADV_COLLAPSE", Effect::None),
    (100, "MADV_HWPOISON", Effect::None),
    (101, "MADV_SOFT_OFFLINE", Effect::None),
    (102, "MADV_GUARD_INSTALL", Effect::Release),
    (103, "MADV_GUARD_REMOVE", Effect::None),
];

impl Advice {
    pub const DONTNEED: Self = Self(4);
    pub const FREE: Self = Self(8);
    pub const PAGEOUT: Self = Self(21);

    fn entry(self) -> Option<&'static (i32, &'static str, Effect)> {
        ADVICES.iter().find(|(value, _, _)| *value == self.0)
    }

    /// The name from the kernel headers, or `None` for a value Linux does not
    /// define.
    pub fn name(self) -> Option<&'static str> {
        self.entry().map(|(_, name, _)| *name)
    }

    pub fn effect(self) -> Effect {
        self.entry().map_or(Effect::None, |(_, _, effect)| *effect)
    }
}

impl fmt::Display for Advice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "MADV_{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advice_prints_its_name_and_unknown_values_still_print() {
        for (value, name, _) in ADVICES {
            assert_eq!(Advice(*value).to_string(), *name);
        }
        assert_eq!(Advice(77).to_string(), "MADV_77");
        assert_eq!(Advice(77).effect(), Effect::None);
    }

    #[test]
    fn free_is_lazy_and_dontneed_releases() {
        assert_eq!(Advice::FREE.effect(), Effect::LazyFree);
        assert_eq!(Advice::DONTNEED.effect(), Effect::Release);
    }
}
