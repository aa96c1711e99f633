//! Read-only analysis of a profile by sample type name.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use crate::proto::{Function, Location, Profile, Sample};

/// Answers questions about a profile in terms of names rather than ids and
/// string indexes.
///
/// Sample types are chosen by name, e.g. `"inuse_space"` in a Go heap
/// profile, whose sample types are `alloc_objects`/count,
/// `alloc_space`/bytes, `inuse_objects`/count and `inuse_space`/bytes.
///
/// Frames are named by function; a frame with no source lines (an address
/// nobody symbolized) is named by its address in hex, as pprof does.
///
/// The view is meant for profiles from [`decode`](crate::decode) or
/// [`ProfileBuilder`](crate::ProfileBuilder), which are consistent. On a
/// profile assembled by hand, a dangling reference does not panic: a missing
/// location contributes no frame and a missing string or function reads as
/// "".
///
/// # Examples
///
/// ```
/// use memtrace_pprof::{LineSpec, LocationSpec, ProfileBuilder, ProfileView};
///
/// let mut builder = ProfileBuilder::new(&[("inuse_space", "bytes")]);
/// let grow = builder.location(LocationSpec {
///     lines: &[LineSpec { function: "main.grow", ..LineSpec::default() }],
///     ..LocationSpec::default()
/// })?;
/// let main = builder.location(LocationSpec {
///     lines: &[LineSpec { function: "main.main", ..LineSpec::default() }],
///     ..LocationSpec::default()
/// })?;
/// builder.sample(&[grow, main], &[100], &[])?;
/// builder.sample(&[main], &[20], &[])?;
/// let profile = builder.build();
///
/// let view = ProfileView::new(&profile);
/// assert_eq!(view.total("inuse_space"), Some(120));
/// let top = view.function_totals("inuse_space").unwrap();
/// assert_eq!((top[0].function.as_str(), top[0].flat, top[0].cum), ("main.grow", 100, 100));
/// assert_eq!((top[1].function.as_str(), top[1].flat, top[1].cum), ("main.main", 20, 120));
/// # Ok::<(), memtrace_pprof::BuildError>(())
/// ```
#[derive(Debug)]
pub struct ProfileView<'a> {
    profile: &'a Profile,
    locations: HashMap<u64, &'a Location>,
    functions: HashMap<u64, &'a Function>,
}

/// How much of a sample type one function accounts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionTotal {
    /// The function's name.
    pub function: String,
    /// Sum over the samples whose leaf frame is this function: what the
    /// function itself holds.
    pub flat: i64,
    /// Sum over the samples with this function anywhere in the stack: what
    /// the function and its callees hold. Recursion counts a sample once.
    pub cum: i64,
}

impl<'a> ProfileView<'a> {
    /// Indexes `profile` for lookups.
    pub fn new(profile: &'a Profile) -> Self {
        Self {
            profile,
            locations: profile.location.iter().map(|l| (l.id, l)).collect(),
            functions: profile.function.iter().map(|f| (f.id, f)).collect(),
        }
    }

    /// The position in each sample's values of the sample type named
    /// `type_name`, if the profile has one.
    pub fn sample_type_index(&self, type_name: &str) -> Option<usize> {
        self.profile
            .sample_type
            .iter()
            .position(|sample_type| self.string(sample_type.r#type) == type_name)
    }

    /// The sum of `type_name` over all samples, or `None` if the profile has
    /// no such sample type.
    ///
    /// Saturates rather than overflowing on absurd values.
    pub fn total(&self, type_name: &str) -> Option<i64> {
        let index = self.sample_type_index(type_name)?;
        Some(self.profile.sample.iter().fold(0, |total, sample| {
            total.saturating_add(value(sample, index))
        }))
    }

    /// Each sample's stack as function names, leaf first, with its value of
    /// `type_name`; `None` if the profile has no such sample type.
    ///
    /// Inlined frames appear as frames of their own, innermost first, as in
    /// pprof's output.
    pub fn stacks(
        &self,
        type_name: &str,
    ) -> Option<impl Iterator<Item = (Vec<Cow<'a, str>>, i64)> + '_> {
        let index = self.sample_type_index(type_name)?;
        Some(
            self.profile
                .sample
                .iter()
                .map(move |sample| (self.frames(sample), value(sample, index))),
        )
    }

    /// Flat and cumulative totals of `type_name` per function, largest flat
    /// first (then largest cumulative, then by name); `None` if the profile
    /// has no such sample type.
    ///
    /// This is the table `go tool pprof -top` prints.
    pub fn function_totals(&self, type_name: &str) -> Option<Vec<FunctionTotal>> {
        let index = self.sample_type_index(type_name)?;
        let mut totals: HashMap<Cow<'a, str>, (i64, i64)> = HashMap::new();
        for sample in &self.profile.sample {
            let value = value(sample, index);
            let frames = self.frames(sample);
            if let Some(leaf) = frames.first() {
                let (flat, _) = totals.entry(leaf.clone()).or_default();
                *flat = flat.saturating_add(value);
            }
            // A recursive function is on the stack several times but holds
            // the sample's value once.
            let mut counted = HashSet::new();
            for frame in frames.iter().filter(|&frame| counted.insert(frame)) {
                let (_, cum) = totals.entry(frame.clone()).or_default();
                *cum = cum.saturating_add(value);
            }
        }
        let mut totals: Vec<FunctionTotal> = totals
            .into_iter()
            .map(|(function, (flat, cum))| FunctionTotal {
                function: function.into_owned(),
                flat,
                cum,
            })
            .collect();
        totals.sort_by(|a, b| {
            b.flat
                .cmp(&a.flat)
                .then(b.cum.cmp(&a.cum))
                .then_with(|| a.function.cmp(&b.function))
        });
        Some(totals)
    }

    /// The frames of `sample`, leaf first.
    fn frames(&self, sample: &Sample) -> Vec<Cow<'a, str>> {
        let mut frames = Vec::with_capacity(sample.location_id.len());
        for location in sample
            .location_id
            .iter()
            .filter_map(|id| self.locations.get(id))
        {
            if location.line.is_empty() {
                frames.push(Cow::Owned(format!("{:#x}", location.address)));
            }
            for line in &location.line {
                let name = self
                    .functions
                    .get(&line.function_id)
                    .map_or("", |function| self.string(function.name));
                frames.push(Cow::Borrowed(name));
            }
        }
        frames
    }

    fn string(&self, index: i64) -> &'a str {
        usize::try_from(index)
            .ok()
            .and_then(|index| self.profile.string_table.get(index))
            .map_or("", String::as_str)
    }
}

/// The value at `index` of `sample`, or 0 if it has none (only possible in a
/// profile that was not validated).
fn value(sample: &Sample, index: usize) -> i64 {
    sample.value.get(index).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LineSpec, LocationSpec, MappingSpec, ProfileBuilder};

    fn line(function: &str) -> LineSpec<'_> {
        LineSpec {
            function,
            ..LineSpec::default()
        }
    }

    /// Two sample types; stacks main→grow (inlined into main.loop), a
    /// recursive walk, and an unsymbolized frame.
    fn profile() -> Profile {
        let mut builder =
            ProfileBuilder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        let binary = builder.mapping(MappingSpec {
            file: "/bin/app",
            ..MappingSpec::default()
        });
        let mut at = |address, lines: &[LineSpec<'_>]| {
            builder
                .location(LocationSpec {
                    address,
                    mapping: Some(binary),
                    lines,
                })
                .unwrap()
        };
        let grow_inlined = at(0x10, &[line("main.grow"), line("main.loop")]);
        let main = at(0x20, &[line("main.main")]);
        let walk = at(0x30, &[line("main.walk")]);
        let unknown = at(0x40, &[]);
        builder
            .sample(&[grow_inlined, main], &[300, 100], &[])
            .unwrap();
        builder
            .sample(&[walk, walk, walk, main], &[50, 40], &[])
            .unwrap();
        builder.sample(&[unknown, main], &[7, 7], &[]).unwrap();
        builder.build()
    }

    #[test]
    fn sample_types_are_found_by_name() {
        let profile = profile();
        let view = ProfileView::new(&profile);
        assert_eq!(view.sample_type_index("alloc_space"), Some(0));
        assert_eq!(view.sample_type_index("inuse_space"), Some(1));
        assert_eq!(view.sample_type_index("bytes"), None);
    }

    #[test]
    fn totals_sum_one_sample_type() {
        let profile = profile();
        let view = ProfileView::new(&profile);
        assert_eq!(view.total("alloc_space"), Some(357));
        assert_eq!(view.total("inuse_space"), Some(147));
        assert_eq!(view.total("missing"), None);
    }

    #[test]
    fn stacks_list_inlined_and_unsymbolized_frames_leaf_first() {
        let profile = profile();
        let view = ProfileView::new(&profile);
        let stacks: Vec<_> = view.stacks("inuse_space").unwrap().collect();
        assert_eq!(
            stacks,
            [
                (vec!["main.grow", "main.loop", "main.main"], 100),
                (vec!["main.walk", "main.walk", "main.walk", "main.main"], 40),
                (vec!["0x40", "main.main"], 7),
            ]
            .map(|(frames, value)| (
                frames.into_iter().map(Cow::Borrowed).collect::<Vec<_>>(),
                value
            ))
        );
        assert!(view.stacks("missing").is_none());
    }

    #[test]
    fn function_totals_count_recursion_once_and_sort_by_flat() {
        let profile = profile();
        let view = ProfileView::new(&profile);
        let totals: Vec<_> = view
            .function_totals("inuse_space")
            .unwrap()
            .into_iter()
            .map(|t| (t.function, t.flat, t.cum))
            .collect();
        let expected = [
            ("main.grow", 100, 100),
            ("main.walk", 40, 40),
            ("0x40", 7, 7),
            ("main.main", 0, 147),
            ("main.loop", 0, 100),
        ];
        assert_eq!(
            totals,
            expected.map(|(f, flat, cum)| (f.to_owned(), flat, cum))
        );
        assert!(view.function_totals("missing").is_none());
    }

    #[test]
    fn dangling_references_read_as_empty_instead_of_panicking() {
        let mut profile = profile();
        profile.sample[0].location_id.push(999);
        profile.location[0].line[0].function_id = 999;
        profile.sample[1].value.clear();
        profile.function[1].name = 999;
        let view = ProfileView::new(&profile);
        let stacks: Vec<_> = view.stacks("inuse_space").unwrap().collect();
        assert_eq!(stacks[0].0, ["", "", "main.main"]);
        assert_eq!(stacks[1].1, 0);
    }
}
