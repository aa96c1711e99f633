//! One push window of a target: the profile of the last interval, as the
//! gzipped pprof bytes Pyroscope and Parca ingest.
//!
//! The input is memtrace's cumulative profile ([`crate::export::pprof`]):
//! resident and lazily freed bytes now, released bytes and faults since
//! attaching. A window turns that into what continuous profilers store:
//!
//! - `inuse_space`/bytes: resident bytes still in use (resident minus
//!   lazily freed), a gauge — the name memory profiles use, so Pyroscope
//!   and Parca show it as the memory profile it is;
//! - `lazyfree_space`/bytes: resident bytes given back with `MADV_FREE`, a
//!   gauge;
//! - `released_space`/bytes and `faults`/count: what happened during the
//!   window only (the difference from the previous window), so adding
//!   windows over a time range gives the total over that range.
//!
//! The profile's time is the window's end (when the gauges were read) and
//! its duration is 0: Parca marks a profile with a duration as a delta
//! profile and would then show the gauges as rates. The window's span goes
//! in a comment and in the legacy `/ingest` request's `from`/`until`.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_pprof::{
    proto::{self, Profile},
    Label, LineSpec, LocationId, LocationSpec, MappingSpec, ProfileBuilder,
};

use super::labels::SeriesLabels;

/// The cumulative profile's sample types a window is made from.
const INPUT_TYPES: [&str; 4] = [
    "resident_space",
    "lazyfree_space",
    "released_space",
    "faults",
];

/// A window's sample types, in the order of their values.
pub const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("inuse_space", "bytes"),
    ("lazyfree_space", "bytes"),
    ("released_space", "bytes"),
    ("faults", "count"),
];

/// Pyroscope's cap on samples per profile; a window keeps the largest
/// stacks and sums the rest into one `[other stacks]` sample, so totals
/// stay right.
pub const MAX_SAMPLES: usize = 16_000;

/// The frame that stands for the stacks left out of a crowded window.
const OTHER_STACKS: &str = "[other stacks]";

/// One target's profile over one window, ready to push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub labels: SeriesLabels,
    /// When the window began: the previous window's end, or attaching.
    pub start: SystemTime,
    /// When the window ended and its gauges were read.
    pub end: SystemTime,
    /// The profile, gzipped profile.proto.
    pub profile: Vec<u8>,
}

/// Why a cumulative profile could not be made into a window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the profile has no `{0}` sample type")]
    MissingSampleType(&'static str),
    #[error("the profile refers to {0}, which it does not hold")]
    DanglingReference(String),
}

/// Makes one target's windows from its cumulative profiles, remembering
/// the counters of the previous window to take differences.
#[derive(Debug)]
pub struct Windower {
    labels: SeriesLabels,
    /// The end of the previous window (attaching, before the first).
    last_end: SystemTime,
    /// Released bytes and faults of each stack at the previous window, by a
    /// hash of the stack and labels; only stacks with a count are kept.
    previous: HashMap<u64, [i64; 2]>,
}

impl Windower {
    /// Windows of the target labelled `labels`, traced since `attached`.
    pub fn new(labels: SeriesLabels, attached: SystemTime) -> Self {
        Self {
            labels,
            last_end: attached,
            previous: HashMap::new(),
        }
    }

    /// The window from the previous one (or attaching) to `end`, given the
    /// target's cumulative profile at `end`.
    ///
    /// A counter lower than at the previous window means the counts
    /// started over (a new model): the window takes the new count whole.
    ///
    /// # Errors
    ///
    /// A [`WindowError`] if `cumulative` lacks one of memtrace's sample
    /// types or refers to a location, mapping, function or string it does
    /// not hold. The previous window's counters are kept then.
    pub fn window(&mut self, cumulative: &Profile, end: SystemTime) -> Result<Window, WindowError> {
        let columns = input_columns(cumulative)?;
        let stacks = merged_stacks(cumulative, columns)?;
        let mut counters = HashMap::new();
        let mut rows: Vec<Row> = stacks
            .into_iter()
            .map(|stack| {
                let [resident, lazyfree, released, faults] = stack.values;
                let counts = [released, faults];
                let before = self.previous.get(&stack.key).copied().unwrap_or([0, 0]);
                if counts != [0, 0] {
                    counters.insert(stack.key, counts);
                }
                let delta = |now: i64, then: i64| if now >= then { now - then } else { now };
                Row {
                    sample: Some(stack.sample),
                    values: [
                        resident.saturating_sub(lazyfree).max(0),
                        lazyfree,
                        delta(released, before[0]),
                        delta(faults, before[1]),
                    ],
                }
            })
            .filter(|row| row.values != [0; 4])
            .collect();
        fold_smallest(&mut rows, MAX_SAMPLES);

        let start = self.last_end;
        let profile = build(cumulative, &rows, start, end)?;
        self.previous = counters;
        self.last_end = end;
        Ok(Window {
            labels: self.labels.clone(),
            start,
            end,
            profile: memtrace_pprof::encode(&profile),
        })
    }
}

/// A sample of the window: where its stack and labels are in the
/// cumulative profile (None for the folded `[other stacks]`), and its
/// values in [`SAMPLE_TYPES`] order.
struct Row {
    sample: Option<usize>,
    values: [i64; 4],
}

/// The stacks of the cumulative profile, each once: samples with the same
/// stack and labels are summed.
struct Stack {
    key: u64,
    /// The first sample with this stack.
    sample: usize,
    /// Values in [`INPUT_TYPES`] order.
    values: [i64; 4],
}

/// Where each of [`INPUT_TYPES`] is among the profile's sample types.
fn input_columns(profile: &Profile) -> Result<[usize; 4], WindowError> {
    let mut columns = [0; 4];
    for (column, name) in columns.iter_mut().zip(INPUT_TYPES) {
        *column = profile
            .sample_type
            .iter()
            .position(|value_type| string(profile, value_type.r#type) == Some(name))
            .ok_or(WindowError::MissingSampleType(name))?;
    }
    Ok(columns)
}

fn merged_stacks(profile: &Profile, columns: [usize; 4]) -> Result<Vec<Stack>, WindowError> {
    let locations: HashMap<u64, &proto::Location> =
        profile.location.iter().map(|l| (l.id, l)).collect();
    let mut stacks: Vec<Stack> = Vec::new();
    let mut by_key: HashMap<u64, usize> = HashMap::new();
    for (n, sample) in profile.sample.iter().enumerate() {
        let key = stack_key(profile, &locations, sample)?;
        let mut values = [0; 4];
        for (value, &column) in values.iter_mut().zip(&columns) {
            *value = *sample.value.get(column).ok_or_else(|| {
                WindowError::DanglingReference(format!("value {column} of sample {n}"))
            })?;
        }
        match by_key.get(&key) {
            Some(&at) => {
                let merged = &mut stacks[at].values;
                for (sum, value) in merged.iter_mut().zip(values) {
                    *sum = sum.saturating_add(value);
                }
            }
            None => {
                by_key.insert(key, stacks.len());
                stacks.push(Stack {
                    key,
                    sample: n,
                    values,
                });
            }
        }
    }
    Ok(stacks)
}

/// A hash of what identifies a sample across profiles: its frames (file,
/// address and lines, not the ids, which differ from profile to profile)
/// and its labels.
fn stack_key(
    profile: &Profile,
    locations: &HashMap<u64, &proto::Location>,
    sample: &proto::Sample,
) -> Result<u64, WindowError> {
    let mut hasher = DefaultHasher::new();
    for id in &sample.location_id {
        let location = locations
            .get(id)
            .ok_or_else(|| WindowError::DanglingReference(format!("location {id}")))?;
        location.address.hash(&mut hasher);
        if location.mapping_id != 0 {
            let mapping = mapping(profile, location.mapping_id)?;
            text(profile, mapping.filename)?.hash(&mut hasher);
        }
        for line in &location.line {
            let function = function(profile, line.function_id)?;
            text(profile, function.name)?.hash(&mut hasher);
            text(profile, function.filename)?.hash(&mut hasher);
            line.line.hash(&mut hasher);
        }
        // Ends the frame, so frames cannot run into each other.
        u8::MAX.hash(&mut hasher);
    }
    for label in &sample.label {
        text(profile, label.key)?.hash(&mut hasher);
        text(profile, label.str)?.hash(&mut hasher);
        label.num.hash(&mut hasher);
        text(profile, label.num_unit)?.hash(&mut hasher);
    }
    Ok(hasher.finish())
}

/// Keeps the `max - 1` largest rows and sums the others into one
/// `[other stacks]` row, when there are more than `max`.
fn fold_smallest(rows: &mut Vec<Row>, max: usize) {
    if rows.len() <= max {
        return;
    }
    // Largest first: in-use bytes, then lazily freed, released, faults.
    rows.sort_by_key(|row| std::cmp::Reverse(row.values));
    let mut other = [0i64; 4];
    for row in rows.drain(max - 1..) {
        for (sum, value) in other.iter_mut().zip(row.values) {
            *sum = sum.saturating_add(value);
        }
    }
    rows.push(Row {
        sample: None,
        values: other,
    });
}

/// The window's profile: `rows`' stacks and labels copied from `source`.
fn build(
    source: &Profile,
    rows: &[Row],
    start: SystemTime,
    end: SystemTime,
) -> Result<Profile, WindowError> {
    let mut builder = ProfileBuilder::new(&SAMPLE_TYPES);
    builder
        .default_sample_type("inuse_space")
        .expect("inuse_space is a sample type");
    let span = end.duration_since(start).unwrap_or_default();
    builder
        .period("space", "bytes", 1)
        .time_nanos(unix_nanos(end))
        .comment(&format!(
            "memtrace window: inuse_space and lazyfree_space are resident at the profile's \
             time; released_space and faults are over the {:.1} s before it",
            span.as_secs_f64()
        ));
    let mut copier = Copier {
        source,
        builder,
        locations: HashMap::new(),
        mappings: HashMap::new(),
    };
    for row in rows {
        let Some(n) = row.sample else {
            let other = copier
                .builder
                .location(LocationSpec {
                    address: 0,
                    mapping: None,
                    lines: &[LineSpec {
                        function: OTHER_STACKS,
                        ..LineSpec::default()
                    }],
                })
                .expect("no mapping given");
            copier
                .builder
                .sample(&[other], &row.values, &[])
                .expect("a location of this builder and one value per sample type");
            continue;
        };
        let sample = &source.sample[n];
        let stack = sample
            .location_id
            .iter()
            .map(|&id| copier.location(id))
            .collect::<Result<Vec<_>, _>>()?;
        let labels = sample
            .label
            .iter()
            .map(|label| -> Result<Label<'_>, WindowError> {
                let key = text(source, label.key)?;
                Ok(if label.str != 0 {
                    Label::Str {
                        key,
                        value: text(source, label.str)?,
                    }
                } else {
                    let unit = text(source, label.num_unit)?;
                    Label::Num {
                        key,
                        value: label.num,
                        unit: (!unit.is_empty()).then_some(unit),
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        copier
            .builder
            .sample(&stack, &row.values, &labels)
            .expect("locations of this builder and one value per sample type");
    }
    Ok(copier.builder.build())
}

/// Copies locations and mappings from one profile into a builder, once
/// each.
struct Copier<'a> {
    source: &'a Profile,
    builder: ProfileBuilder,
    locations: HashMap<u64, LocationId>,
    mappings: HashMap<u64, memtrace_pprof::MappingId>,
}

impl Copier<'_> {
    fn location(&mut self, id: u64) -> Result<LocationId, WindowError> {
        if let Some(&copied) = self.locations.get(&id) {
            return Ok(copied);
        }
        let source = self.source;
        let location = source
            .location
            .iter()
            .find(|location| location.id == id)
            .ok_or_else(|| WindowError::DanglingReference(format!("location {id}")))?;
        let mapping = match location.mapping_id {
            0 => None,
            mapping_id => Some(self.mapping(mapping_id)?),
        };
        let lines = location
            .line
            .iter()
            .map(|line| -> Result<LineSpec<'_>, WindowError> {
                let function = function(source, line.function_id)?;
                let system_name = text(source, function.system_name)?;
                let file = text(source, function.filename)?;
                Ok(LineSpec {
                    function: text(source, function.name)?,
                    system_name: (!system_name.is_empty()).then_some(system_name),
                    file: (!file.is_empty()).then_some(file),
                    line: (line.line != 0).then_some(line.line),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let copied = self
            .builder
            .location(LocationSpec {
                address: location.address,
                mapping,
                lines: &lines,
            })
            .expect("the mapping comes from this builder");
        self.locations.insert(id, copied);
        Ok(copied)
    }

    fn mapping(&mut self, id: u64) -> Result<memtrace_pprof::MappingId, WindowError> {
        if let Some(&copied) = self.mappings.get(&id) {
            return Ok(copied);
        }
        let mapping = mapping(self.source, id)?;
        let copied = self.builder.mapping(MappingSpec {
            start: mapping.memory_start,
            limit: mapping.memory_limit,
            offset: mapping.file_offset,
            file: text(self.source, mapping.filename)?,
            build_id: text(self.source, mapping.build_id)?,
            has_functions: mapping.has_functions,
            has_filenames: mapping.has_filenames,
            has_line_numbers: mapping.has_line_numbers,
            has_inline_frames: mapping.has_inline_frames,
        });
        self.mappings.insert(id, copied);
        Ok(copied)
    }
}

fn string(profile: &Profile, index: i64) -> Option<&str> {
    usize::try_from(index)
        .ok()
        .and_then(|index| profile.string_table.get(index))
        .map(String::as_str)
}

fn text(profile: &Profile, index: i64) -> Result<&str, WindowError> {
    string(profile, index).ok_or_else(|| WindowError::DanglingReference(format!("string {index}")))
}

fn mapping(profile: &Profile, id: u64) -> Result<&proto::Mapping, WindowError> {
    profile
        .mapping
        .iter()
        .find(|mapping| mapping.id == id)
        .ok_or_else(|| WindowError::DanglingReference(format!("mapping {id}")))
}

fn function(profile: &Profile, id: u64) -> Result<&proto::Function, WindowError> {
    profile
        .function
        .iter()
        .find(|function| function.id == id)
        .ok_or_else(|| WindowError::DanglingReference(format!("function {id}")))
}

/// Nanoseconds since the Unix epoch, as profile.proto's `time_nanos`.
pub fn unix_nanos(time: SystemTime) -> i64 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use memtrace_pprof::{decode, DecodeLimits, ProfileView};

    use super::*;
    use crate::export::push::labels::TargetLabels;

    const PAGE: i64 = 4096;

    /// A cumulative profile as memtrace writes it: `(frames leaf first,
    /// [resident, lazyfree, released, faults])` per sample.
    fn cumulative(samples: &[(&[&str], [i64; 4])]) -> Profile {
        let mut builder = ProfileBuilder::new(&[
            ("resident_space", "bytes"),
            ("lazyfree_space", "bytes"),
            ("released_space", "bytes"),
            ("faults", "count"),
        ]);
        let binary = builder.mapping(MappingSpec {
            start: 0x40_0000,
            limit: 0x50_0000,
            file: "/usr/bin/app",
            build_id: "abc123",
            has_functions: true,
            ..MappingSpec::default()
        });
        for (frames, values) in samples {
            let stack: Vec<_> = frames
                .iter()
                .map(|&function| {
                    builder
                        .location(LocationSpec {
                            // One address per function name.
                            address: function.bytes().fold(0x40_0000, |address, b| {
                                (address * 31 + u64::from(b)) % 0x10_0000 + 0x40_0000
                            }),
                            mapping: Some(binary),
                            lines: &[LineSpec {
                                function,
                                ..LineSpec::default()
                            }],
                        })
                        .unwrap()
                })
                .collect();
            builder.sample(&stack, values, &[]).unwrap();
        }
        builder.build()
    }

    fn windower() -> Windower {
        let labels = SeriesLabels::new(&TargetLabels {
            service_name: "app".into(),
            host: "h".into(),
            pid: 1,
            command: "app".into(),
            ..TargetLabels::default()
        })
        .unwrap();
        Windower::new(labels, UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    /// The window's values by stack (functions joined leaf first).
    fn values(window: &Window) -> Vec<(String, Vec<i64>)> {
        let profile = decode(&window.profile, &DecodeLimits::default()).unwrap();
        let view = ProfileView::new(&profile);
        let mut by_stack: HashMap<String, Vec<i64>> = HashMap::new();
        for (n, (name, _)) in SAMPLE_TYPES.iter().enumerate() {
            for (stack, value) in view.stacks(name).unwrap() {
                by_stack
                    .entry(stack.join(";"))
                    .or_insert_with(|| vec![0; 4])[n] += value;
            }
        }
        let mut rows: Vec<_> = by_stack.into_iter().collect();
        rows.sort();
        rows
    }

    #[test]
    fn gauges_stay_and_counters_become_differences() {
        let mut windower = windower();
        let first = windower
            .window(
                &cumulative(&[
                    (&["touch", "main"], [10 * PAGE, 4 * PAGE, 0, 10]),
                    (
                        &["madvise(MADV_DONTNEED)", "free", "main"],
                        [0, 0, 8 * PAGE, 0],
                    ),
                ]),
                at(60),
            )
            .unwrap();
        assert_eq!((first.start, first.end), (at(0), at(60)));
        assert_eq!(
            values(&first),
            [
                (
                    "madvise(MADV_DONTNEED);free;main".into(),
                    vec![0, 0, 8 * PAGE, 0]
                ),
                ("touch;main".into(), vec![6 * PAGE, 4 * PAGE, 0, 10]),
            ]
        );

        let second = windower
            .window(
                &cumulative(&[
                    (&["touch", "main"], [12 * PAGE, 4 * PAGE, 0, 13]),
                    (
                        &["madvise(MADV_DONTNEED)", "free", "main"],
                        [0, 0, 8 * PAGE, 0],
                    ),
                    (&["grow", "main"], [PAGE, 0, 0, 1]),
                ]),
                at(120),
            )
            .unwrap();
        assert_eq!((second.start, second.end), (at(60), at(120)));
        assert_eq!(
            values(&second),
            [
                ("grow;main".into(), vec![PAGE, 0, 0, 1]),
                ("touch;main".into(), vec![8 * PAGE, 4 * PAGE, 0, 3]),
            ],
            "the release happened in the first window only"
        );
    }

    #[test]
    fn a_counter_that_went_down_started_over() {
        let mut windower = windower();
        windower
            .window(&cumulative(&[(&["f"], [PAGE, 0, 0, 100])]), at(60))
            .unwrap();
        let after_restart = windower
            .window(&cumulative(&[(&["f"], [PAGE, 0, 0, 7])]), at(120))
            .unwrap();
        assert_eq!(values(&after_restart), [("f".into(), vec![PAGE, 0, 0, 7])]);
    }

    #[test]
    fn samples_with_the_same_stack_are_summed() {
        let mut windower = windower();
        let window = windower
            .window(
                &cumulative(&[(&["f"], [PAGE, 0, 0, 1]), (&["f"], [PAGE, 0, 0, 2])]),
                at(60),
            )
            .unwrap();
        let profile = decode(&window.profile, &DecodeLimits::default()).unwrap();
        assert_eq!(profile.sample.len(), 1);
        assert_eq!(profile.sample[0].value, [2 * PAGE, 0, 0, 3]);
    }

    #[test]
    fn profile_wide_fields_describe_the_window() {
        let mut windower = windower();
        let window = windower
            .window(&cumulative(&[(&["f"], [PAGE, 0, 0, 1])]), at(60))
            .unwrap();
        let profile = decode(&window.profile, &DecodeLimits::default()).unwrap();
        let string = |index: i64| profile.string_table[index as usize].as_str();
        let types: Vec<_> = profile
            .sample_type
            .iter()
            .map(|t| (string(t.r#type), string(t.unit)))
            .collect();
        assert_eq!(types, SAMPLE_TYPES);
        assert_eq!(string(profile.default_sample_type), "inuse_space");
        assert_eq!(profile.time_nanos, unix_nanos(at(60)));
        assert_eq!(
            profile.duration_nanos, 0,
            "a duration makes Parca see a delta profile"
        );
        let period = profile.period_type.unwrap();
        assert_eq!(
            (string(period.r#type), string(period.unit)),
            ("space", "bytes")
        );
        assert!(string(profile.comment[0]).contains("over the 60.0 s before it"));
        // Parca's rule: every id is its position in its list plus one.
        for (n, location) in profile.location.iter().enumerate() {
            assert_eq!(location.id, n as u64 + 1);
        }
    }

    #[test]
    fn a_crowded_window_folds_its_smallest_stacks() {
        let mut rows: Vec<Row> = (0..6)
            .map(|n| Row {
                sample: Some(n),
                values: [(n as i64 + 1) * PAGE, 0, 0, 1],
            })
            .collect();
        fold_smallest(&mut rows, 4);
        let kept: Vec<_> = rows.iter().map(|row| (row.sample, row.values[0])).collect();
        assert_eq!(
            kept,
            [
                (Some(5), 6 * PAGE),
                (Some(4), 5 * PAGE),
                (Some(3), 4 * PAGE),
                (None, (1 + 2 + 3) * PAGE),
            ]
        );
        assert_eq!(rows[3].values[3], 3, "the folded faults add up");
    }

    #[test]
    fn a_crowded_profile_keeps_its_totals() {
        let names: Vec<String> = (0..5).map(|n| format!("f{n}")).collect();
        let frames: Vec<[&str; 1]> = names.iter().map(|name| [name.as_str()]).collect();
        let samples: Vec<(&[&str], [i64; 4])> = frames
            .iter()
            .map(|frame| (frame.as_slice(), [PAGE, 0, 0, 1]))
            .collect();
        let source = cumulative(&samples);
        let mut rows: Vec<Row> = (0..5)
            .map(|n| Row {
                sample: Some(n),
                values: [PAGE, 0, 0, 1],
            })
            .collect();
        fold_smallest(&mut rows, 2);
        let profile = build(&source, &rows, at(0), at(60)).unwrap();
        let view = ProfileView::new(&profile);
        assert_eq!(profile.sample.len(), 2);
        assert_eq!(view.total("inuse_space"), Some(5 * PAGE));
        assert_eq!(view.total("faults"), Some(5));
    }

    #[test]
    fn a_profile_without_memtraces_sample_types_is_refused() {
        let mut builder = ProfileBuilder::new(&[("inuse_space", "bytes")]);
        builder.comment("not memtrace's");
        let err = windower().window(&builder.build(), at(60)).unwrap_err();
        assert_eq!(err, WindowError::MissingSampleType("resident_space"));
    }
}
