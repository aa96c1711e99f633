//! Property: whatever stacks and values go into a profile come back out of
//! encode → decode unchanged.

use std::collections::BTreeSet;

use memtrace_pprof::{
    decode, encode, DecodeLimits, Label, LineSpec, LocationSpec, MappingSpec, ProfileBuilder,
    ProfileView,
};
use proptest::prelude::*;

/// A random profile: sample types, a pool of function names, and samples
/// whose stacks index into that pool.
#[derive(Debug, Clone)]
struct Case {
    sample_types: Vec<(String, String)>,
    functions: Vec<String>,
    /// Whether frames get addresses (deduplicated by address) or are known
    /// by their lines only (deduplicated by lines).
    addressed: bool,
    samples: Vec<CaseSample>,
}

#[derive(Debug, Clone)]
struct CaseSample {
    /// Indexes into `Case::functions`, leaf first.
    stack: Vec<usize>,
    values: Vec<i64>,
    labels: Vec<(String, String)>,
}

fn case() -> impl Strategy<Value = Case> {
    let sample_types = prop::collection::btree_set("[a-z_]{1,12}", 1..=4);
    let functions = prop::collection::vec("\\PC{0,24}", 1..8);
    (sample_types, functions, any::<bool>()).prop_flat_map(|(types, functions, addressed)| {
        let type_count = types.len();
        let function_count = functions.len();
        let sample = (
            prop::collection::vec(0..function_count, 0..12),
            // Small enough that no sum of 32 samples overflows.
            prop::collection::vec(-(1i64 << 40)..(1i64 << 40), type_count),
            prop::collection::vec(("[a-z]{1,8}", "\\PC{1,8}"), 0..3),
        )
            .prop_map(|(stack, values, labels)| CaseSample {
                stack,
                values,
                labels,
            });
        let types = with_units(types);
        prop::collection::vec(sample, 0..32).prop_map(move |samples| Case {
            sample_types: types.clone(),
            functions: functions.clone(),
            addressed,
            samples,
        })
    })
}

/// Gives each sample type a unit, alternating as Go heap profiles do.
fn with_units(types: BTreeSet<String>) -> Vec<(String, String)> {
    types
        .into_iter()
        .zip(["count", "bytes"].into_iter().cycle())
        .map(|(name, unit)| (name, unit.to_owned()))
        .collect()
}

fn build(case: &Case) -> memtrace_pprof::proto::Profile {
    let types: Vec<(&str, &str)> = case
        .sample_types
        .iter()
        .map(|(name, unit)| (name.as_str(), unit.as_str()))
        .collect();
    let mut builder = ProfileBuilder::new(&types);
    let mapping = builder.mapping(MappingSpec {
        start: 0x1000,
        limit: 0x10_0000,
        file: "/bin/prop",
        build_id: "cafe",
        has_functions: true,
        ..MappingSpec::default()
    });
    let locations: Vec<_> = case
        .functions
        .iter()
        .enumerate()
        .map(|(index, function)| {
            let lines = [LineSpec {
                function,
                ..LineSpec::default()
            }];
            let spec = if case.addressed {
                LocationSpec {
                    address: 0x1000 + 16 * index as u64,
                    mapping: Some(mapping),
                    lines: &lines,
                }
            } else {
                LocationSpec {
                    lines: &lines,
                    ..LocationSpec::default()
                }
            };
            builder.location(spec).unwrap()
        })
        .collect();
    for sample in &case.samples {
        let stack: Vec<_> = sample.stack.iter().map(|&i| locations[i]).collect();
        let labels: Vec<_> = sample
            .labels
            .iter()
            .map(|(key, value)| Label::Str { key, value })
            .collect();
        builder.sample(&stack, &sample.values, &labels).unwrap();
    }
    builder.build()
}

proptest! {
    #[test]
    fn encode_then_decode_keeps_stacks_and_totals(case in case()) {
        let built = build(&case);
        let decoded = decode(&encode(&built), &DecodeLimits::default()).unwrap();
        prop_assert_eq!(&decoded, &built);

        let view = ProfileView::new(&decoded);
        for (index, (type_name, _)) in case.sample_types.iter().enumerate() {
            let expected_total: i64 = case.samples.iter().map(|s| s.values[index]).sum();
            prop_assert_eq!(view.total(type_name), Some(expected_total));

            let stacks: Vec<(Vec<String>, i64)> = view
                .stacks(type_name)
                .unwrap()
                .map(|(frames, value)| (frames.into_iter().map(String::from).collect(), value))
                .collect();
            let expected: Vec<(Vec<String>, i64)> = case
                .samples
                .iter()
                .map(|s| {
                    let frames = s.stack.iter().map(|&f| case.functions[f].clone()).collect();
                    (frames, s.values[index])
                })
                .collect();
            prop_assert_eq!(stacks, expected);
        }
    }
}
