//! Building a valid profile from stacks and values.

use std::collections::HashMap;
use std::fmt;

use crate::proto;
use crate::strings::StringTable;

/// Builds a [`proto::Profile`] that is valid by construction.
///
/// The builder interns everything the format stores by reference: strings go
/// into the string table once (with `""` at index 0), functions are shared by
/// name, system name and file, and mappings and locations are shared when
/// added twice. Mapping, location and function ids start at 1 and have no gaps.
///
/// Inputs that would make an invalid profile, such as a sample with the wrong
/// number of values, are rejected with a [`BuildError`] and leave the builder
/// unchanged.
///
/// # Examples
///
/// ```
/// use memtrace_pprof::{LineSpec, LocationSpec, MappingSpec, ProfileBuilder};
///
/// let mut builder = ProfileBuilder::new(&[("resident_space", "bytes"), ("faults", "count")]);
/// let binary = builder.mapping(MappingSpec {
///     start: 0x40_0000,
///     limit: 0x50_0000,
///     file: "/usr/bin/app",
///     build_id: "4f1c0ffee",
///     has_functions: true,
///     ..MappingSpec::default()
/// });
/// let allocate = builder.location(LocationSpec {
///     address: 0x40_1234,
///     mapping: Some(binary),
///     lines: &[LineSpec { function: "main.allocate", line: Some(12), ..LineSpec::default() }],
/// })?;
/// builder.sample(&[allocate], &[8192, 2], &[])?;
///
/// let profile = builder.build();
/// assert_eq!(profile.string_table[0], "");
/// assert_eq!(profile.sample.len(), 1);
/// # Ok::<(), memtrace_pprof::BuildError>(())
/// ```
#[derive(Debug)]
pub struct ProfileBuilder {
    /// Everything but the string table, which `strings` holds until `build`.
    profile: proto::Profile,
    strings: StringTable,
    /// Function ids by their name, system name and file (string indexes).
    functions: HashMap<(i64, i64, i64), u64>,
    /// Mapping ids by the mapping's content (with `id` left at 0).
    mappings: HashMap<proto::Mapping, MappingId>,
    /// Ids of locations that have an address, by (mapping id, address): an
    /// address stands for the same frame however often it is seen.
    addressed_locations: HashMap<(u64, u64), LocationId>,
    /// Ids of locations known only by their lines, by (mapping id, lines).
    symbolic_locations: HashMap<(u64, Vec<proto::Line>), LocationId>,
}

/// A mapping added with [`ProfileBuilder::mapping`].
///
/// Only meaningful to the builder that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MappingId(u64);

/// A location added with [`ProfileBuilder::location`].
///
/// Only meaningful to the builder that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LocationId(u64);

impl MappingId {
    /// The id as written in the profile's `Mapping.id`.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl LocationId {
    /// The id as written in the profile's `Location.id`.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MappingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for LocationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A region of the address space backed by one file, for
/// [`ProfileBuilder::mapping`].
///
/// The `has_*` flags say what the locations in this mapping already carry;
/// pprof tools only try to symbolize what is missing, so set them when the
/// locations are fully symbolized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingSpec<'a> {
    /// First address of the region.
    pub start: u64,
    /// First address past the region.
    pub limit: u64,
    /// Offset in `file` that `start` maps.
    pub offset: u64,
    /// Path of the mapped file, or a pseudo name such as `[heap]`.
    pub file: &'a str,
    /// Build id of the file (typically the hex GNU build id), or "".
    pub build_id: &'a str,
    /// The locations name their functions.
    pub has_functions: bool,
    /// The locations name their source files.
    pub has_filenames: bool,
    /// The locations carry line numbers.
    pub has_line_numbers: bool,
    /// The locations list their inlined frames.
    pub has_inline_frames: bool,
}

/// One stack frame, for [`ProfileBuilder::location`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocationSpec<'a> {
    /// Instruction address, or 0 for a frame known only by its lines.
    pub address: u64,
    /// The mapping `address` lies in, if known.
    pub mapping: Option<MappingId>,
    /// The source lines the address stands for, innermost first: more than
    /// one line means the later functions had the earlier ones inlined.
    pub lines: &'a [LineSpec<'a>],
}

/// A source position in a [`LocationSpec`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineSpec<'a> {
    /// Human-readable (demangled) function name.
    pub function: &'a str,
    /// Name as the binary spells it (mangled), when it differs.
    pub system_name: Option<&'a str>,
    /// Source file.
    pub file: Option<&'a str>,
    /// Line number in `file`.
    pub line: Option<i64>,
}

/// Extra context attached to a sample.
///
/// pprof ignores a label that carries nothing: a string label with an empty
/// value, or a numeric label of 0 without a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label<'a> {
    /// A label with a string value, e.g. `thread = "worker-1"`.
    Str {
        /// What the label describes.
        key: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// A label with a numeric value, e.g. `bytes = 4096` in unit `bytes`.
    Num {
        /// What the label describes.
        key: &'a str,
        /// Its value.
        value: i64,
        /// Unit of `value`, such as `bytes`, if it has one.
        unit: Option<&'a str>,
    },
}

/// Why [`ProfileBuilder`] refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A sample did not have exactly one value per sample type.
    #[error("a sample has {got} values but the profile has {expected} sample types")]
    ValueCount {
        /// Number of sample types of the profile.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A location id was not made by this builder.
    #[error("location id {0} does not belong to this profile")]
    UnknownLocation(LocationId),
    /// A mapping id was not made by this builder.
    #[error("mapping id {0} does not belong to this profile")]
    UnknownMapping(MappingId),
    /// The default sample type named none of the profile's sample types.
    #[error("{0:?} is not one of the profile's sample types")]
    UnknownSampleType(String),
}

impl ProfileBuilder {
    /// Starts a profile whose samples carry one value per entry of
    /// `sample_types`, each given as `(type, unit)` such as
    /// `("inuse_space", "bytes")`.
    pub fn new(sample_types: &[(&str, &str)]) -> Self {
        let mut builder = Self {
            profile: proto::Profile::default(),
            strings: StringTable::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            addressed_locations: HashMap::new(),
            symbolic_locations: HashMap::new(),
        };
        builder.profile.sample_type = sample_types
            .iter()
            .map(|&(type_name, unit)| builder.value_type(type_name, unit))
            .collect();
        builder
    }

    /// Makes `type_name` the sample type tools show when not told which.
    ///
    /// Without it, pprof tools show the last sample type.
    pub fn default_sample_type(&mut self, type_name: &str) -> Result<&mut Self, BuildError> {
        // Looked up rather than interned so that a refused name leaves no
        // unused string behind.
        let index = self
            .strings
            .get(type_name)
            .filter(|&index| self.profile.sample_type.iter().any(|t| t.r#type == index))
            .ok_or_else(|| BuildError::UnknownSampleType(type_name.to_owned()))?;
        self.profile.default_sample_type = index;
        Ok(self)
    }

    /// Records that one sampling event stands for `value` units of
    /// `(type_name, unit)`, e.g. one heap sample per 512 KiB of `space` in
    /// `bytes`.
    pub fn period(&mut self, type_name: &str, unit: &str, value: i64) -> &mut Self {
        self.profile.period_type = Some(self.value_type(type_name, unit));
        self.profile.period = value;
        self
    }

    /// Sets when the profile was taken, in nanoseconds since the Unix epoch.
    pub fn time_nanos(&mut self, nanos: i64) -> &mut Self {
        self.profile.time_nanos = nanos;
        self
    }

    /// Sets how long the profile covers, in nanoseconds.
    pub fn duration_nanos(&mut self, nanos: i64) -> &mut Self {
        self.profile.duration_nanos = nanos;
        self
    }

    /// Adds a free-form note that pprof tools show with the profile.
    pub fn comment(&mut self, text: &str) -> &mut Self {
        let index = self.strings.intern(text);
        self.profile.comment.push(index);
        self
    }

    /// Adds a mapping, or returns the id of an identical one added before.
    pub fn mapping(&mut self, spec: MappingSpec<'_>) -> MappingId {
        let content = proto::Mapping {
            id: 0,
            memory_start: spec.start,
            memory_limit: spec.limit,
            file_offset: spec.offset,
            filename: self.strings.intern(spec.file),
            build_id: self.strings.intern(spec.build_id),
            has_functions: spec.has_functions,
            has_filenames: spec.has_filenames,
            has_line_numbers: spec.has_line_numbers,
            has_inline_frames: spec.has_inline_frames,
        };
        if let Some(&id) = self.mappings.get(&content) {
            return id;
        }
        let id = MappingId(next_id(self.profile.mapping.len()));
        self.profile.mapping.push(proto::Mapping {
            id: id.0,
            ..content
        });
        self.mappings.insert(content, id);
        id
    }

    /// Adds a stack frame, or returns the id of the same frame added before.
    ///
    /// A frame with an address is the same frame as an earlier one with the
    /// same mapping and address, and keeps the lines it was first given: an
    /// address always stands for the same code. A frame without an address is
    /// the same as an earlier one with the same mapping and lines.
    ///
    /// # Errors
    ///
    /// [`BuildError::UnknownMapping`] if `spec.mapping` came from another
    /// builder.
    pub fn location(&mut self, spec: LocationSpec<'_>) -> Result<LocationId, BuildError> {
        let mapping_id = match spec.mapping {
            None => 0,
            Some(mapping) if self.owns_mapping(mapping) => mapping.0,
            Some(mapping) => return Err(BuildError::UnknownMapping(mapping)),
        };
        if spec.address != 0 {
            let key = (mapping_id, spec.address);
            if let Some(&id) = self.addressed_locations.get(&key) {
                return Ok(id);
            }
            let lines = self.lines(spec.lines);
            let id = self.push_location(mapping_id, spec.address, lines);
            self.addressed_locations.insert(key, id);
            Ok(id)
        } else {
            let key = (mapping_id, self.lines(spec.lines));
            if let Some(&id) = self.symbolic_locations.get(&key) {
                return Ok(id);
            }
            let id = self.push_location(mapping_id, 0, key.1.clone());
            self.symbolic_locations.insert(key, id);
            Ok(id)
        }
    }

    /// Adds a sample: `stack` is the frames leaf first, `values` has one value
    /// per sample type in the order given to [`ProfileBuilder::new`].
    ///
    /// # Errors
    ///
    /// [`BuildError::ValueCount`] if `values` does not have one value per
    /// sample type, [`BuildError::UnknownLocation`] if a location id came
    /// from another builder.
    pub fn sample(
        &mut self,
        stack: &[LocationId],
        values: &[i64],
        labels: &[Label<'_>],
    ) -> Result<(), BuildError> {
        let expected = self.profile.sample_type.len();
        if values.len() != expected {
            return Err(BuildError::ValueCount {
                expected,
                got: values.len(),
            });
        }
        if let Some(&foreign) = stack.iter().find(|&&id| !self.owns_location(id)) {
            return Err(BuildError::UnknownLocation(foreign));
        }
        let label = labels.iter().map(|label| self.label(label)).collect();
        self.profile.sample.push(proto::Sample {
            location_id: stack.iter().map(|id| id.0).collect(),
            value: values.to_vec(),
            label,
        });
        Ok(())
    }

    /// Finishes the profile.
    pub fn build(self) -> proto::Profile {
        proto::Profile {
            string_table: self.strings.into_vec(),
            ..self.profile
        }
    }

    fn value_type(&mut self, type_name: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.strings.intern(type_name),
            unit: self.strings.intern(unit),
        }
    }

    fn lines(&mut self, specs: &[LineSpec<'_>]) -> Vec<proto::Line> {
        specs
            .iter()
            .map(|spec| proto::Line {
                function_id: self.function(spec),
                line: spec.line.unwrap_or(0),
                column: 0,
            })
            .collect()
    }

    fn function(&mut self, spec: &LineSpec<'_>) -> u64 {
        let key = (
            self.strings.intern(spec.function),
            self.strings.intern(spec.system_name.unwrap_or("")),
            self.strings.intern(spec.file.unwrap_or("")),
        );
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let (name, system_name, filename) = key;
        let id = next_id(self.profile.function.len());
        self.profile.function.push(proto::Function {
            id,
            name,
            system_name,
            filename,
            start_line: 0,
        });
        self.functions.insert(key, id);
        id
    }

    fn label(&mut self, label: &Label<'_>) -> proto::Label {
        match *label {
            Label::Str { key, value } => proto::Label {
                key: self.strings.intern(key),
                str: self.strings.intern(value),
                num: 0,
                num_unit: 0,
            },
            Label::Num { key, value, unit } => proto::Label {
                key: self.strings.intern(key),
                str: 0,
                num: value,
                num_unit: self.strings.intern(unit.unwrap_or("")),
            },
        }
    }

    fn push_location(
        &mut self,
        mapping_id: u64,
        address: u64,
        lines: Vec<proto::Line>,
    ) -> LocationId {
        let id = LocationId(next_id(self.profile.location.len()));
        self.profile.location.push(proto::Location {
            id: id.0,
            mapping_id,
            address,
            line: lines,
            is_folded: false,
        });
        id
    }

    /// Ids are dense from 1, so an id is ours exactly when it is in range;
    /// that keeps every id a built profile refers to defined.
    fn owns_mapping(&self, id: MappingId) -> bool {
        (1..=self.profile.mapping.len() as u64).contains(&id.0)
    }

    fn owns_location(&self, id: LocationId) -> bool {
        (1..=self.profile.location.len() as u64).contains(&id.0)
    }
}

/// The id of the next entry of a table holding `len` entries: ids start at 1
/// because 0 means "none" in the format.
fn next_id(len: usize) -> u64 {
    len as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::validate;

    fn frame<'a>(lines: &'a [LineSpec<'a>]) -> LocationSpec<'a> {
        LocationSpec {
            lines,
            ..LocationSpec::default()
        }
    }

    fn line(function: &str) -> LineSpec<'_> {
        LineSpec {
            function,
            ..LineSpec::default()
        }
    }

    #[test]
    fn string_table_starts_empty_and_holds_each_string_once() {
        let mut builder =
            ProfileBuilder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        builder.comment("bytes");
        let profile = builder.build();

        assert_eq!(
            profile.string_table,
            ["", "alloc_space", "bytes", "inuse_space"]
        );
        let names: Vec<_> = profile
            .sample_type
            .iter()
            .map(|t| profile.string_table[t.r#type as usize].as_str())
            .collect();
        assert_eq!(names, ["alloc_space", "inuse_space"]);
        assert_eq!(profile.comment, [2]);
    }

    #[test]
    fn functions_are_shared_by_name_system_name_and_file() {
        let mut builder = ProfileBuilder::new(&[("space", "bytes")]);
        let in_a = LineSpec {
            file: Some("a.go"),
            ..line("f")
        };
        let in_b = LineSpec {
            file: Some("b.go"),
            ..line("f")
        };
        let mangled = LineSpec {
            system_name: Some("_Z1fv"),
            ..in_a
        };
        let at_other_line = LineSpec {
            line: Some(7),
            ..in_a
        };
        for lines in [[in_a], [in_b], [mangled], [at_other_line], [in_a]] {
            builder.location(frame(&lines)).unwrap();
        }
        let profile = builder.build();

        let ids: Vec<u64> = profile.function.iter().map(|f| f.id).collect();
        assert_eq!(ids, [1, 2, 3], "a.go, b.go and mangled are distinct");
        let function_of = |location: usize| profile.location[location].line[0].function_id;
        assert_eq!(
            function_of(3),
            function_of(0),
            "a line number is no new function"
        );
        assert_eq!(profile.location[3].line[0].line, 7);
    }

    #[test]
    fn mappings_are_shared_when_identical_and_ids_are_dense() {
        let mut builder = ProfileBuilder::new(&[("space", "bytes")]);
        let binary = MappingSpec {
            start: 0x1000,
            limit: 0x2000,
            file: "/bin/app",
            build_id: "abc",
            ..MappingSpec::default()
        };
        let libc = MappingSpec {
            file: "/lib/libc.so.6",
            ..binary
        };
        let first = builder.mapping(binary);
        let second = builder.mapping(libc);
        assert_eq!(builder.mapping(binary), first);
        assert_eq!((first.get(), second.get()), (1, 2));
        let profile = builder.build();
        assert_eq!(profile.mapping.len(), 2);
        assert_eq!(
            profile.string_table[profile.mapping[1].filename as usize],
            "/lib/libc.so.6"
        );
        assert_eq!(
            profile.string_table[profile.mapping[1].build_id as usize],
            "abc"
        );
    }

    #[test]
    fn addressed_locations_are_shared_by_mapping_and_address() {
        let mut builder = ProfileBuilder::new(&[("space", "bytes")]);
        let binary = builder.mapping(MappingSpec {
            file: "/bin/app",
            ..MappingSpec::default()
        });
        let f = [line("f")];
        let other = [line("other")];
        let mapped = |address, lines| LocationSpec {
            address,
            mapping: Some(binary),
            lines,
        };
        let first = builder.location(mapped(0x10, &f)).unwrap();
        let again = builder.location(mapped(0x10, &other)).unwrap();
        let unmapped = builder
            .location(LocationSpec {
                address: 0x10,
                mapping: None,
                lines: &f,
            })
            .unwrap();
        let next = builder.location(mapped(0x20, &f)).unwrap();

        assert_eq!(again, first, "an address stands for the same frame");
        assert_eq!((first.get(), unmapped.get(), next.get()), (1, 2, 3));
        let profile = builder.build();
        assert_eq!(
            profile.function.len(),
            1,
            "the repeated address's lines are ignored"
        );
        assert_eq!(profile.location[0].mapping_id, binary.get());
        assert_eq!(profile.location[1].mapping_id, 0);
    }

    #[test]
    fn locations_without_address_are_shared_by_lines() {
        let mut builder = ProfileBuilder::new(&[("space", "bytes")]);
        let inlined = [line("inner"), line("outer")];
        let first = builder.location(frame(&inlined)).unwrap();
        let again = builder.location(frame(&inlined)).unwrap();
        let outer_only = builder.location(frame(&inlined[1..])).unwrap();

        assert_eq!(again, first);
        assert_ne!(outer_only, first);
        let profile = builder.build();
        assert_eq!(profile.location.len(), 2);
        assert_eq!(profile.location[0].line.len(), 2);
    }

    #[test]
    fn samples_keep_stack_order_values_and_labels() {
        let mut builder = ProfileBuilder::new(&[("space", "bytes"), ("faults", "count")]);
        let leaf = builder.location(frame(&[line("leaf")])).unwrap();
        let root = builder.location(frame(&[line("root")])).unwrap();
        let labels = [
            Label::Str {
                key: "thread",
                value: "main",
            },
            Label::Num {
                key: "size",
                value: 4096,
                unit: Some("bytes"),
            },
        ];
        builder.sample(&[leaf, root], &[4096, 1], &labels).unwrap();
        let profile = builder.build();

        let sample = &profile.sample[0];
        assert_eq!(sample.location_id, [leaf.get(), root.get()]);
        assert_eq!(sample.value, [4096, 1]);
        let string = |index: i64| profile.string_table[index as usize].as_str();
        let thread = &sample.label[0];
        assert_eq!((string(thread.key), string(thread.str)), ("thread", "main"));
        let size = &sample.label[1];
        assert_eq!(
            (string(size.key), size.str, size.num, string(size.num_unit)),
            ("size", 0, 4096, "bytes")
        );
    }

    #[test]
    fn wrong_value_count_is_an_error_and_adds_nothing() {
        let mut builder = ProfileBuilder::new(&[("space", "bytes"), ("faults", "count")]);
        let leaf = builder.location(frame(&[line("leaf")])).unwrap();

        let err = builder.sample(&[leaf], &[1], &[]).unwrap_err();
        assert_eq!(
            err,
            BuildError::ValueCount {
                expected: 2,
                got: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "a sample has 1 values but the profile has 2 sample types"
        );
        assert!(builder.build().sample.is_empty());
    }

    #[test]
    fn ids_from_another_builder_are_refused() {
        let mut other = ProfileBuilder::new(&[("space", "bytes")]);
        let foreign_mapping = other.mapping(MappingSpec::default());
        let foreign_location = other.location(frame(&[line("f")])).unwrap();

        let mut builder = ProfileBuilder::new(&[("space", "bytes")]);
        let err = builder
            .location(LocationSpec {
                mapping: Some(foreign_mapping),
                ..frame(&[line("f")])
            })
            .unwrap_err();
        assert_eq!(err, BuildError::UnknownMapping(foreign_mapping));
        let err = builder.sample(&[foreign_location], &[1], &[]).unwrap_err();
        assert_eq!(err, BuildError::UnknownLocation(foreign_location));
        let profile = builder.build();
        assert!(profile.location.is_empty() && profile.sample.is_empty());
    }

    #[test]
    fn default_sample_type_must_be_a_sample_type() {
        let mut builder =
            ProfileBuilder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")]);
        assert_eq!(
            builder.default_sample_type("bytes").unwrap_err(),
            BuildError::UnknownSampleType("bytes".to_owned()),
            "a unit is not a sample type"
        );
        assert!(builder.default_sample_type("missing").is_err());
        builder.default_sample_type("inuse_space").unwrap();
        let profile = builder.build();
        assert_eq!(
            profile.string_table[profile.default_sample_type as usize],
            "inuse_space"
        );
        assert!(!profile.string_table.iter().any(|s| s == "missing"));
    }

    #[test]
    fn profile_wide_fields_are_set() {
        let mut builder = ProfileBuilder::new(&[("inuse_space", "bytes")]);
        builder
            .period("space", "bytes", 512 * 1024)
            .time_nanos(1_700_000_000_000_000_000)
            .duration_nanos(5_000_000_000)
            .comment("from memtrace");
        let profile = builder.build();

        let string = |index: i64| profile.string_table[index as usize].as_str();
        let period_type = profile.period_type.unwrap();
        assert_eq!(
            (string(period_type.r#type), string(period_type.unit)),
            ("space", "bytes")
        );
        assert_eq!(profile.period, 512 * 1024);
        assert_eq!(profile.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(profile.duration_nanos, 5_000_000_000);
        assert_eq!(string(profile.comment[0]), "from memtrace");
    }

    #[test]
    fn built_profiles_pass_validation() {
        let mut builder = ProfileBuilder::new(&[("space", "bytes")]);
        let binary = builder.mapping(MappingSpec {
            file: "/bin/app",
            has_functions: true,
            ..MappingSpec::default()
        });
        let leaf = builder
            .location(LocationSpec {
                address: 0x42,
                mapping: Some(binary),
                lines: &[line("inlined"), line("caller")],
            })
            .unwrap();
        let unsymbolized = builder
            .location(LocationSpec {
                address: 0x43,
                ..LocationSpec::default()
            })
            .unwrap();
        builder
            .sample(
                &[leaf, unsymbolized],
                &[1],
                &[Label::Num {
                    key: "n",
                    value: 1,
                    unit: None,
                }],
            )
            .unwrap();
        builder.default_sample_type("space").unwrap();
        assert_eq!(validate(&builder.build()), Ok(()));
    }
}
