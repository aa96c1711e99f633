//! Resident, lazily freed and released bytes by stack as a pprof profile.
//!
//! Sample types, all four in every sample:
//! - `resident_space`/bytes: resident now, by the stack that faulted it in;
//! - `lazyfree_space`/bytes: the part of it given back with `MADV_FREE`;
//! - `released_space`/bytes: bytes the stack's call took out of RSS (with
//!   the call as the innermost frame, such as `madvise(MADV_DONTNEED)`);
//! - `faults`/count: faults taken at the stack since attaching.
//!
//! Resident pages no stack explains appear under one labelled frame (e.g.
//! `[resident before attach: /usr/lib/libc.so.6]`), so the samples add up to
//! RSS.

use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use memtrace_pprof::{
    proto::Profile, Label, LineSpec, LocationId, LocationSpec, MappingId, MappingSpec,
    ProfileBuilder,
};

use crate::{
    attribution::{resident_by_holder, Holder},
    intake::StackId,
    model::{Backing, Call, Effect},
    symbolize::{Frame, Namer},
};

use super::Part;

const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("resident_space", "bytes"),
    ("lazyfree_space", "bytes"),
    ("released_space", "bytes"),
    ("faults", "count"),
];

/// The profile of the processes `parts` name, traced for `elapsed`. Each
/// sample carries its process's `pid` and `command` as labels, so a profile
/// of a cgroup can be split or filtered by process (`go tool pprof -tags`,
/// `-tagfocus`).
pub fn profile(parts: &mut [Part<'_>], elapsed: Duration) -> Profile {
    let mut builder = ProfileBuilder::new(&SAMPLE_TYPES);
    builder
        .default_sample_type("resident_space")
        .expect("resident_space is a sample type");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    builder
        .time_nanos(i64::try_from(now.saturating_sub(elapsed).as_nanos()).unwrap_or(i64::MAX))
        .duration_nanos(i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .comment("memtrace: resident bytes by the stack that faulted them in");
    let mut labels = HashMap::new();
    for part in parts.iter_mut() {
        // Addresses are per process: mappings and code locations too.
        let mut writer = Writer {
            builder,
            mappings: HashMap::new(),
            locations: labels,
        };
        writer.process(part);
        builder = writer.builder;
        labels = writer.locations;
    }
    builder.build()
}

impl Writer {
    fn process(&mut self, part: &mut Part<'_>) {
        let namer = &mut part.namer;
        let pid = i64::from(part.pid);
        let process = [
            Label::Num {
                key: "pid",
                value: pid,
                unit: None,
            },
            Label::Str {
                key: "command",
                value: &part.command,
            },
        ];
        // pprof takes the first mapping for the program itself.
        if let Some(executable) = &part.executable {
            let main = namer.model.extents().iter().find(|(_, extent)| {
                extent.prot & libc::PROT_EXEC as u32 != 0
                    && matches!(&extent.backing, Backing::File { path: Some(path), .. } if path == executable)
            });
            if let Some((start, _)) = main {
                self.mapping(namer, start);
            }
        }

        let faults = &namer.model.activity().faults_by_stack.clone();
        let mut held: Vec<(Holder, _)> = resident_by_holder(namer.model).into_iter().collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        let mut with_resident = std::collections::HashSet::new();
        for (holder, held) in &held {
            let stack = match holder {
                Holder::Stack(stack) => {
                    with_resident.insert(Some(*stack));
                    self.stack(namer, Some(*stack))
                }
                Holder::NoStack => {
                    with_resident.insert(None);
                    self.label_frame(&holder.label().unwrap_or_default())
                }
                other => self.label_frame(&other.label().unwrap_or_default()),
            };
            let fault_count = match holder {
                Holder::Stack(stack) => faults.get(&Some(*stack)).map_or(0, |f| f.count),
                Holder::NoStack => faults.get(&None).map_or(0, |f| f.count),
                _ => 0,
            };
            self.sample(
                &stack,
                [held.resident(), held.lazyfree, 0, fault_count],
                &process,
            );
        }
        // Faults of stacks whose pages are all gone.
        let mut gone: Vec<_> = faults
            .iter()
            .filter(|(stack, _)| !with_resident.contains(*stack))
            .collect();
        gone.sort_by_key(|(stack, _)| **stack);
        for (&stack, faults) in gone {
            let frames = match stack {
                Some(_) => self.stack(namer, stack),
                None => self.label_frame("[no stack]"),
            };
            self.sample(&frames, [0, 0, 0, faults.count], &process);
        }
        // What calls took out of RSS, by their stacks.
        let mut releases: Vec<_> = namer
            .model
            .activity()
            .calls_by_stack
            .iter()
            .filter(|((call, _), stats)| stats.resident_bytes > 0 && releases_memory(*call))
            .map(|(&(call, stack), stats)| (call, stack, stats.resident_bytes))
            .collect();
        releases.sort();
        for (call, stack, bytes) in releases {
            let mut frames = vec![self.label_frame(&call_frame(call))[0]];
            frames.extend(self.stack(namer, stack));
            let name = call.name();
            let mut labels = process.to_vec();
            labels.push(Label::Str {
                key: "call",
                value: &name,
            });
            self.sample(&frames, [0, 0, bytes, 0], &labels);
        }
    }
}

/// The innermost frame of a release sample: the call itself.
fn call_frame(call: Call) -> String {
    match call {
        Call::Madvise(advice) => format!("madvise({advice})"),
        other => other.name(),
    }
}

fn releases_memory(call: Call) -> bool {
    match call {
        Call::Munmap | Call::Mremap | Call::Brk => true,
        Call::Madvise(advice) => matches!(advice.effect(), Effect::Release | Effect::Reclaim),
        // MADV_FREE does not release; its bytes are in lazyfree_space.
        Call::Mmap => false,
    }
}

struct Writer {
    builder: ProfileBuilder,
    mappings: HashMap<u64, MappingId>,
    locations: HashMap<String, LocationId>,
}

impl Writer {
    fn sample(&mut self, stack: &[LocationId], values: [u64; 4], labels: &[Label<'_>]) {
        let values = values.map(|value| i64::try_from(value).unwrap_or(i64::MAX));
        self.builder
            .sample(stack, &values, labels)
            .expect("locations come from this builder and values match the sample types");
    }

    /// A frame that stands for something other than code.
    fn label_frame(&mut self, label: &str) -> Vec<LocationId> {
        if let Some(&location) = self.locations.get(label) {
            return vec![location];
        }
        let location = self
            .builder
            .location(LocationSpec {
                address: 0,
                mapping: None,
                lines: &[LineSpec {
                    function: label,
                    ..LineSpec::default()
                }],
            })
            .expect("no mapping given");
        self.locations.insert(label.to_owned(), location);
        vec![location]
    }

    fn stack(&mut self, namer: &mut Namer<'_>, stack: Option<StackId>) -> Vec<LocationId> {
        let frames = namer.frames(stack);
        if frames.is_empty() {
            let label = match stack {
                Some(stack) => format!("[stack {stack} not read]"),
                None => "[no stack]".into(),
            };
            return self.label_frame(&label);
        }
        frames
            .iter()
            .map(|frame| self.location(namer, frame))
            .collect()
    }

    fn location(&mut self, namer: &mut Namer<'_>, frame: &Frame) -> LocationId {
        let mapping = self.mapping(namer, frame.address);
        let lines: Vec<LineSpec<'_>> = frame
            .functions
            .iter()
            .map(|function| LineSpec {
                function: &function.name,
                system_name: None,
                file: function.file.as_deref(),
                line: function.line.map(i64::from),
            })
            .collect();
        self.builder
            .location(LocationSpec {
                address: frame.address,
                mapping,
                lines: &lines,
            })
            .expect("mappings come from this builder")
    }

    /// The mapping (extent) holding `address`, for file-backed code.
    fn mapping(&mut self, namer: &mut Namer<'_>, address: u64) -> Option<MappingId> {
        let (start, extent) = namer.model.extents().find(address)?;
        if let Some(&mapping) = self.mappings.get(&start) {
            return Some(mapping);
        }
        let Backing::File {
            path: Some(path),
            offset,
        } = &extent.backing
        else {
            return None;
        };
        let build_id = namer.symbolizer.build_id(path).unwrap_or_default();
        let mapping = self.builder.mapping(MappingSpec {
            start,
            limit: extent.end,
            offset: *offset,
            file: path,
            build_id: &build_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mappings.insert(start, mapping);
        Some(mapping)
    }
}
