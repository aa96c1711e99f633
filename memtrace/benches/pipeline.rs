//! The agent's per-event cost: a ring-buffer record decoded and applied to
//! the address-space model, as `Session::drain` does for every record.
//!
//! The stream is a fault storm as the kernel side writes it: per round, an
//! mmap of 64 MiB, a fault per 4 KiB page, then MADV_FREE of half and a
//! munmap. The goal (issue 7) is 2 million events a second on one core.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use memtrace::{
    intake::{decode, StackTable},
    session::Tracker,
};
use memtrace_common::{
    bytes_of, fault_bits, FaultRecord, RecordHeader, RecordKind, SyscallOp, SyscallRecord,
};

const BASE: u64 = 0x7f00_0000_0000;
const REGION: u64 = 64 << 20;
const PAGE: u64 = 4096;
const ROUNDS: u64 = 4;

fn header(kind: RecordKind, detail: u8, stack: u64) -> RecordHeader {
    RecordHeader {
        stack,
        ..RecordHeader::new(kind, 100, 101, detail)
    }
}

fn bytes<T: aya::Pod>(record: &T) -> Vec<u8> {
    bytes_of(record).to_vec()
}

fn syscall(op: SyscallOp, ret: i64, args: [u64; 6]) -> Vec<u8> {
    bytes(&SyscallRecord {
        header: header(RecordKind::Syscall, op as u8, 7),
        ret,
        args,
    })
}

/// The records of `ROUNDS` rounds of the storm.
fn storm() -> Vec<Vec<u8>> {
    let mut records = Vec::new();
    for round in 0..ROUNDS {
        let base = BASE + round * REGION;
        records.push(syscall(
            SyscallOp::Mmap,
            base as i64,
            [0, REGION, 3, 0x22, u64::MAX, 0],
        ));
        for page in 0..REGION / PAGE {
            // Sampled stacks: a few distinct ids, as from a loop.
            let stack = 1 + page / 64 % 4;
            records.push(bytes(&FaultRecord {
                header: header(
                    RecordKind::Fault,
                    fault_bits::WRITE | fault_bits::USER,
                    stack,
                ),
                address: base + page * PAGE,
            }));
        }
        records.push(syscall(
            SyscallOp::Madvise,
            0,
            [base, REGION / 2, 8, 0, 0, 0],
        ));
        records.push(syscall(SyscallOp::Munmap, 0, [base, REGION, 0, 0, 0, 0]));
    }
    records
}

/// The worst case for the page runs: faults all over a 1 GiB mapping in a
/// scrambled order, from many stacks, so no two neighbouring pages share a
/// run until most of the region is resident.
fn scattered() -> Vec<Vec<u8>> {
    const SPAN: u64 = 1 << 30;
    let pages = SPAN / PAGE;
    let mut records = vec![syscall(
        SyscallOp::Mmap,
        BASE as i64,
        [0, SPAN, 3, 0x22, u64::MAX, 0],
    )];
    for n in 0..(REGION / PAGE) * ROUNDS {
        // A multiplicative hash visits pages in a scrambled order.
        let page = n.wrapping_mul(2_654_435_761) % pages;
        records.push(bytes(&FaultRecord {
            header: header(
                RecordKind::Fault,
                fault_bits::WRITE | fault_bits::USER,
                1 + n % 97,
            ),
            address: BASE + page * PAGE,
        }));
    }
    records
}

fn decode_and_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    group.sample_size(20);
    for (name, records) in [
        ("decode + model update, fault storm", storm()),
        ("decode + model update, scattered faults", scattered()),
    ] {
        group.throughput(Throughput::Elements(records.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || (Tracker::default(), StackTable::default()),
                |(mut tracker, mut stacks)| {
                    for record in &records {
                        let decoded = decode(record).expect("valid record");
                        stacks.saw(decoded.event.stack);
                        tracker.ingest(&decoded);
                    }
                    (tracker, stacks)
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, decode_and_apply);
criterion_main!(benches);
