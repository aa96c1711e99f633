//! Naming stacks and writing profiles for 100k samples (issue 5): blazesym
//! symbolization of 100k distinct stacks in this very binary, and the pprof
//! profile of a model holding 100k stacks, built and gzipped.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use memtrace::{
    export::{pprof, Part},
    intake::{Access, Event, EventKind, Fault, StackId, StackTable},
    model::{
        reconcile::{Busy, Moment, Reading},
        AddressSpace, Backing, PAGE_SIZE,
    },
    proc::ProcessView,
    symbolize::{DebugSources, Library, Namer, Symbolizer},
};

const SAMPLES: u64 = 100_000;
const DEPTH: usize = 8;
/// Distinct code addresses the stacks are made of, as in a real program
/// where many stacks share frames.
const ADDRESSES: u64 = 20_000;

/// This process's mappings, so stacks can point into our own code.
fn own_address_space() -> AddressSpace {
    let view = ProcessView::new(std::process::id());
    let vmas = view.smaps().expect("read our own smaps");
    let mut model = AddressSpace::new();
    model.reconcile(
        Reading {
            vmas: &vmas,
            busy: &Busy::default(),
            moment: Moment::Attach,
            scan_all: false,
            zero_pfn: None,
            lazyfree_slack: 0,
            lazyfree_at_read: &[],
        },
        |_| None,
    );
    model
}

/// `SAMPLES` distinct stacks of addresses inside our executable's code.
fn stacks(model: &AddressSpace) -> StackTable {
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    let (start, end) = model
        .extents()
        .iter()
        .find(|(_, extent)| {
            extent.prot & libc::PROT_EXEC as u32 != 0
                && matches!(&extent.backing, Backing::File { path: Some(path), .. } if path == exe)
        })
        .map(|(start, extent)| (start, extent.end))
        .expect("our code is mapped");
    let span = end - start;
    let address = |n: u64| start + (n.wrapping_mul(2_654_435_761) % span);
    let mut table = StackTable::default();
    for sample in 0..SAMPLES {
        let frames: Vec<u64> = (0..DEPTH as u64)
            .map(|depth| address((sample * 7 + depth * 13) % ADDRESSES))
            .collect();
        table.insert(StackId::new(sample + 1).unwrap(), &frames);
    }
    table
}

/// A model where each of the stacks faulted in one page.
fn with_resident_pages(mut model: AddressSpace) -> AddressSpace {
    for sample in 0..SAMPLES {
        model.apply(&Event {
            tid: 1,
            stack: StackId::new(sample + 1),
            kind: EventKind::Fault(Fault {
                // Pages two apart, so no two stacks share a run.
                address: 0x7e00_0000_0000 + sample * 2 * PAGE_SIZE,
                access: Access::from_bits(Access::WRITE | Access::USER),
            }),
        });
    }
    model
}

fn symbolize(c: &mut Criterion) {
    let model = own_address_space();
    let table = stacks(&model);
    let mut group = c.benchmark_group("profiles");
    group.throughput(Throughput::Elements(SAMPLES));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("symbolize 100k stacks, cold cache", |b| {
        b.iter_batched(
            || Symbolizer::new(std::process::id(), Library::shared(DebugSources::default())),
            |mut symbolizer| {
                for (id, ips) in table.iter() {
                    symbolizer.stack(id, ips, model.extents());
                }
                symbolizer
            },
            BatchSize::LargeInput,
        );
    });
    let model = with_resident_pages(model);
    let mut symbolizer =
        Symbolizer::new(std::process::id(), Library::shared(DebugSources::default()));
    group.bench_function("pprof of 100k samples, built and gzipped", |b| {
        b.iter(|| {
            let mut parts = [Part {
                namer: Namer {
                    stacks: &table,
                    symbolizer: &mut symbolizer,
                    model: &model,
                },
                pid: std::process::id(),
                command: "bench".to_owned(),
                executable: None,
            }];
            let profile = pprof::profile(&mut parts, Duration::from_secs(60));
            memtrace_pprof::encode(&profile)
        });
    });
    group.finish();
}

criterion_group!(benches, symbolize);
criterion_main!(benches);
