//! Ring-buffer records to [`Event`]s.
//!
//! Records come from our own kernel programs, but the agent still treats them
//! as outside input: a record of the wrong size or an unknown kind is an
//! error the caller counts, never a panic.

use memtrace_common::{
    config::{MAX_IOVECS, MAX_STACK_COPY, STACK_COPY_PIECE},
    stack_key, FaultRecord, LifecycleKind, LifecycleRecord, ProcessMadviseRecord, ReclaimRecord,
    RecordHeader, RecordKind, StackSampleRecord, SyscallOp, SyscallRecord, CLONE_VM,
};

use super::event::{
    syscall_result, Access, Event, EventKind, Fault, Madvise, Mmap, Mremap, OomKill,
    ProcessMadvise, RssMember, StackId, StackSample,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is too short for a {what}")]
    Truncated { what: &'static str, len: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("unknown {what} {value}")]
    UnknownValue { what: &'static str, value: u64 },
}

/// A decoded record: the process it is about, and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub tgid: u32,
    pub event: Event,
}

pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let header: RecordHeader = read(bytes, "record header")?;
    let kind = RecordKind::from_u8(header.kind).ok_or(DecodeError::UnknownKind(header.kind))?;
    let kind = match kind {
        RecordKind::Fault => {
            let record: FaultRecord = read(bytes, "fault record")?;
            EventKind::Fault(Fault {
                address: record.address,
                access: Access::from_bits(header.detail),
            })
        }
        RecordKind::Syscall => syscall(&read(bytes, "syscall record")?)?,
        RecordKind::ProcessMadvise => {
            let record: ProcessMadviseRecord = read(bytes, "process_madvise record")?;
            let recorded = record.vlen.min(MAX_IOVECS as u64) as usize;
            EventKind::ProcessMadvise(ProcessMadvise {
                pidfd: record.pidfd,
                advice: record.advice,
                ranges: record.iov[..recorded]
                    .iter()
                    .map(|iov| (iov.base, iov.len))
                    .collect(),
                truncated: record.vlen > MAX_IOVECS as u64,
                result: syscall_result(record.ret),
            })
        }
        RecordKind::Reclaim => {
            let record: ReclaimRecord = read(bytes, "reclaim record")?;
            EventKind::ForeignRssChange {
                member: RssMember::from_raw(record.member).ok_or(DecodeError::UnknownValue {
                    what: "RSS member",
                    value: record.member.into(),
                })?,
                actor_pid: record.actor_pid,
            }
        }
        RecordKind::Lifecycle => lifecycle(&read(bytes, "lifecycle record")?)?,
        RecordKind::StackSample => stack_sample(bytes)?,
    };
    Ok(Decoded {
        tgid: header.tgid,
        event: Event {
            tid: header.tid,
            stack: StackId::new(header.stack),
            kind,
        },
    })
}

fn syscall(record: &SyscallRecord) -> Result<EventKind, DecodeError> {
    let op = SyscallOp::from_u8(record.header.detail).ok_or(DecodeError::UnknownValue {
        what: "syscall",
        value: record.header.detail.into(),
    })?;
    let [a0, a1, a2, a3, a4, a5] = record.args;
    let result = syscall_result(record.ret);
    Ok(match op {
        SyscallOp::Mmap => EventKind::Mmap(Mmap {
            hint: a0,
            len: a1,
            prot: a2 as u32,
            flags: a3 as u32,
            fd: a4 as i32,
            offset: a5,
            result,
        }),
        SyscallOp::Munmap => EventKind::Munmap {
            addr: a0,
            len: a1,
            result,
        },
        SyscallOp::Mremap => EventKind::Mremap(Mremap {
            old_addr: a0,
            old_len: a1,
            new_len: a2,
            flags: a3 as u32,
            result,
        }),
        // brk never fails: it returns the (possibly unchanged) break.
        SyscallOp::Brk => EventKind::Brk {
            requested: a0,
            result: record.ret as u64,
        },
        SyscallOp::Madvise => EventKind::Madvise(Madvise {
            addr: a0,
            len: a1,
            advice: a2 as i32,
            result,
        }),
        // The kernel side sends these as their own record kind.
        SyscallOp::ProcessMadvise => {
            return Err(DecodeError::UnknownValue {
                what: "syscall record op",
                value: op as u64,
            })
        }
    })
}

fn lifecycle(record: &LifecycleRecord) -> Result<EventKind, DecodeError> {
    let kind = LifecycleKind::from_u8(record.header.detail).ok_or(DecodeError::UnknownValue {
        what: "lifecycle kind",
        value: record.header.detail.into(),
    })?;
    let [anon, file, shmem] = record.rss_kib;
    Ok(match kind {
        LifecycleKind::Exec => EventKind::Exec,
        LifecycleKind::Exit => EventKind::Exit,
        LifecycleKind::Fork => EventKind::Fork {
            child: record.other_pid,
            shares_memory: record.flags & CLONE_VM != 0,
        },
        LifecycleKind::ThreadExit => EventKind::ThreadExit,
        LifecycleKind::Found => EventKind::Found,
        LifecycleKind::OomVictim => EventKind::OomVictim(OomKill {
            anon_bytes: anon.saturating_mul(1024),
            file_bytes: file.saturating_mul(1024),
            shmem_bytes: shmem.saturating_mul(1024),
        }),
    })
}

/// A stack sample: its fixed part, then the stack bytes it says it holds.
fn stack_sample(bytes: &[u8]) -> Result<EventKind, DecodeError> {
    let record: StackSampleRecord = read(bytes, "stack sample record")?;
    let stack = &bytes[size_of::<StackSampleRecord>()..];
    let len = record.len as usize;
    if len > stack.len() || len > MAX_STACK_COPY + STACK_COPY_PIECE {
        return Err(DecodeError::Truncated {
            what: "stack sample's stack",
            len: stack.len(),
        });
    }
    if record.header.stack & stack_key::SAMPLE_BIT == 0 {
        return Err(DecodeError::UnknownValue {
            what: "stack sample id",
            value: record.header.stack,
        });
    }
    Ok(EventKind::StackSample(StackSample {
        id: record.header.stack,
        ip: record.ip,
        sp: record.sp,
        bp: record.bp,
        start: record.sp & !(STACK_COPY_PIECE as u64 - 1),
        bytes: stack[..len].to_vec(),
    }))
}

/// Copies a plain-data record out of `bytes` (ring-buffer data is only
/// 8-byte aligned, and may be shorter than claimed if corrupt).
fn read<T: aya::Pod>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Truncated {
            what,
            len: bytes.len(),
        });
    }
    // SAFETY: `T: Pod` is plain data valid for any bit pattern, and the
    // length was checked above.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use memtrace_common::{bytes_of, fault_bits, IoVec, NO_STACK};

    fn header(kind: RecordKind, detail: u8) -> RecordHeader {
        RecordHeader {
            stack: 42,
            ..RecordHeader::new(kind, 100, 101, detail)
        }
    }

    #[test]
    fn decodes_a_fault() {
        let record = FaultRecord {
            header: header(RecordKind::Fault, fault_bits::WRITE | fault_bits::USER),
            address: 0x7f00_0000_1234,
        };
        let decoded = decode(bytes_of(&record)).unwrap();
        assert_eq!(decoded.tgid, 100);
        assert_eq!(decoded.event.tid, 101);
        assert_eq!(decoded.event.stack, StackId::new(42));
        let EventKind::Fault(fault) = decoded.event.kind else {
            panic!("not a fault: {decoded:?}");
        };
        assert_eq!(fault.address, 0x7f00_0000_1234);
        assert!(fault.access.write() && fault.access.user() && !fault.access.protection());
    }

    #[test]
    fn decodes_a_failed_munmap_and_a_high_mmap_address() {
        let munmap = SyscallRecord {
            header: header(RecordKind::Syscall, SyscallOp::Munmap as u8),
            ret: -22,
            args: [0x1000, 4096, 0, 0, 0, 0],
        };
        let decoded = decode(bytes_of(&munmap)).unwrap();
        assert_eq!(
            decoded.event.kind,
            EventKind::Munmap {
                addr: 0x1000,
                len: 4096,
                result: Err(super::super::event::Errno(22))
            }
        );
        let mmap = SyscallRecord {
            header: header(RecordKind::Syscall, SyscallOp::Mmap as u8),
            ret: 0xffff_8000_0000_0000_u64 as i64,
            args: [0, 4096, 3, 0x22, u64::MAX, 0],
        };
        let EventKind::Mmap(mmap) = decode(bytes_of(&mmap)).unwrap().event.kind else {
            panic!("not an mmap");
        };
        assert_eq!(mmap.result, Ok(0xffff_8000_0000_0000));
        assert_eq!(mmap.fd, -1);
    }

    #[test]
    fn process_madvise_keeps_the_recorded_ranges_and_says_when_it_has_not_all() {
        let mut iov = [IoVec::default(); MAX_IOVECS];
        iov[0] = IoVec {
            base: 0x1000,
            len: 0x2000,
        };
        let record = ProcessMadviseRecord {
            header: header(RecordKind::ProcessMadvise, SyscallOp::ProcessMadvise as u8),
            ret: 0x2000,
            pidfd: 3,
            advice: 21,
            vlen: MAX_IOVECS as u64 + 1,
            iov,
        };
        let EventKind::ProcessMadvise(call) = decode(bytes_of(&record)).unwrap().event.kind else {
            panic!("not process_madvise");
        };
        assert_eq!(call.ranges.len(), MAX_IOVECS);
        assert_eq!(call.ranges[0], (0x1000, 0x2000));
        assert!(call.truncated);
    }

    #[test]
    fn no_stack_key_is_none() {
        let mut record = FaultRecord {
            header: header(RecordKind::Fault, 0),
            address: 0,
        };
        record.header.stack = NO_STACK;
        assert_eq!(decode(bytes_of(&record)).unwrap().event.stack, None);
    }

    #[test]
    fn bad_records_are_errors() {
        assert!(matches!(
            decode(&[1, 2, 3]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut bad = header(RecordKind::Fault, 0);
        bad.kind = 99;
        assert_eq!(decode(bytes_of(&bad)), Err(DecodeError::UnknownKind(99)));
        // A fault header without its address.
        let header = header(RecordKind::Fault, 0);
        let short = bytes_of(&header);
        assert!(matches!(decode(short), Err(DecodeError::Truncated { .. })));
    }
}
