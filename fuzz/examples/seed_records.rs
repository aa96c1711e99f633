//! Writes the `decode_record` seeds: one valid ring-buffer record of every
//! kind and detail value, laid out by the very structs the kernel side
//! fills (memtrace-common), so the fuzzer starts from real layouts.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_records`

use std::{fs, io, path::Path};

use memtrace_common::{
    bytes_of, config::MAX_IOVECS, fault_bits, rss_member, FaultRecord, IoVec, LifecycleKind, LifecycleRecord,
    ProcessMadviseRecord, ReclaimRecord, RecordHeader, RecordKind, SyscallOp, SyscallRecord,
};

fn main() -> io::Result<()> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/decode_record");
    fs::create_dir_all(&out)?;
    for (name, record) in records() {
        fs::write(out.join(name), record)?;
    }
    Ok(())
}

fn records() -> Vec<(String, Vec<u8>)> {
    let mut records = Vec::new();
    for (name, bits) in [
        ("read", fault_bits::USER),
        ("write", fault_bits::USER | fault_bits::WRITE),
        (
            "cow",
            fault_bits::USER | fault_bits::WRITE | fault_bits::PROTECTION,
        ),
        ("exec", fault_bits::USER | fault_bits::INSTRUCTION),
    ] {
        let record = FaultRecord {
            header: header(RecordKind::Fault, bits),
            address: 0x7f12_3456_7000,
        };
        records.push((format!("fault-{name}"), bytes_of(&record).to_vec()));
    }
    let mmap = [0, 1 << 20, 3, 0x22, u64::MAX, 0];
    for (name, op, args, ret) in [
        ("mmap", SyscallOp::Mmap, mmap, 0x7f00_0000_0000),
        ("mmap-failed", SyscallOp::Mmap, mmap, -12),
        (
            "munmap",
            SyscallOp::Munmap,
            [0x7f00_0000_0000, 1 << 20, 0, 0, 0, 0],
            0,
        ),
        (
            "mremap",
            SyscallOp::Mremap,
            [0x7f00_0000_0000, 1 << 20, 2 << 20, 1, 0, 0],
            0x7f10_0000_0000,
        ),
        (
            "brk",
            SyscallOp::Brk,
            [0x5600_0002_1000, 0, 0, 0, 0, 0],
            0x5600_0002_1000,
        ),
        (
            "madvise",
            SyscallOp::Madvise,
            [0x7f00_0000_0000, 1 << 20, 8, 0, 0, 0],
            0,
        ),
    ] {
        let record = SyscallRecord {
            header: header(RecordKind::Syscall, op as u8),
            ret,
            args,
        };
        records.push((format!("syscall-{name}"), bytes_of(&record).to_vec()));
    }
    let mut iov = [IoVec::default(); MAX_IOVECS];
    iov[0] = IoVec {
        base: 0x7f00_0000_0000,
        len: 1 << 20,
    };
    iov[1] = IoVec {
        base: 0x7f00_0020_0000,
        len: 4096,
    };
    let record = ProcessMadviseRecord {
        header: header(RecordKind::ProcessMadvise, 0),
        ret: (1 << 20) + 4096,
        pidfd: 3,
        advice: 21, // MADV_PAGEOUT
        vlen: 2,
        iov,
    };
    records.push(("process-madvise".into(), bytes_of(&record).to_vec()));
    for member in [
        rss_member::FILE_PAGES,
        rss_member::ANON_PAGES,
        rss_member::SWAP_ENTS,
        rss_member::SHMEM_PAGES,
    ] {
        let record = ReclaimRecord {
            header: header(RecordKind::Reclaim, 0),
            actor_pid: 42,
            member,
        };
        records.push((format!("reclaim-{member}"), bytes_of(&record).to_vec()));
    }
    for kind in [
        LifecycleKind::Exec,
        LifecycleKind::Exit,
        LifecycleKind::Fork,
        LifecycleKind::OomVictim,
    ] {
        let record = LifecycleRecord {
            header: header(RecordKind::Lifecycle, kind as u8),
            other_pid: 1235,
            _pad: 0,
            rss_kib: [524_288, 2048, 0],
        };
        records.push((
            format!("lifecycle-{kind:?}").to_lowercase(),
            bytes_of(&record).to_vec(),
        ));
    }
    records
}

fn header(kind: RecordKind, detail: u8) -> RecordHeader {
    RecordHeader {
        stack: 0x1234_5678,
        ..RecordHeader::new(kind, 1234, 1236, detail)
    }
}
