//! The payloads of the capture entries the session writes, each encoded
//! and decoded side by side: the recorder and the report share one spelling
//! of the format (`docs/capture-format.md` describes it). Decoding reads
//! bytes anyone may hand over: anything short or malformed is `None`, never
//! a panic.

use std::io::{self, Read as _};

use memtrace_common::Counter;

use crate::intake::{StackEnd, StackId};

/// A drain's records (kind `batch`), each as its length and bytes.
#[derive(Default)]
pub struct Batch {
    pub bytes: Vec<u8>,
    pub records: u64,
}

impl Batch {
    pub fn add(&mut self, record: &[u8]) {
        let len = u32::try_from(record.len()).expect("ring-buffer records are small");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(record);
        self.records += 1;
    }

    /// The records in a batch's bytes; bytes that do not divide into
    /// records give those they hold whole.
    pub fn records(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
        std::iter::from_fn(move || {
            let (len, rest) = bytes.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let record = rest.get(..len)?;
            bytes = &rest[len..];
            Some(record)
        })
    }
}

/// Answers longer than this are kept zstd-compressed.
const PACK_ABOVE: usize = 64 << 10;

/// Packed answers are at most this large unpacked: what the recorder packs
/// is bounded (pagemap is read in chunks), and a hostile frame must not
/// unpack to all of memory.
const MAX_UNPACKED: u64 = 256 << 20;

/// An answer from /proc (kind `proc`): the process, the question, and the
/// bytes or the error.
#[derive(Debug)]
pub struct ProcAnswer {
    pub pid: u32,
    pub question: String,
    pub answer: io::Result<Vec<u8>>,
}

impl ProcAnswer {
    pub fn encode(pid: u32, question: &str, answer: &io::Result<Vec<u8>>) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&pid.to_le_bytes());
        payload.extend_from_slice(&(question.len() as u32).to_le_bytes());
        payload.extend_from_slice(question.as_bytes());
        match answer {
            // Pagemap answers run to 8 bytes a page, mostly zeros: packed.
            Ok(bytes) if bytes.len() > PACK_ABOVE => match zstd::bulk::compress(bytes, 1) {
                Ok(packed) => {
                    payload.push(2);
                    payload.extend_from_slice(&packed);
                }
                Err(_) => {
                    payload.push(0);
                    payload.extend_from_slice(bytes);
                }
            },
            Ok(bytes) => {
                payload.push(0);
                payload.extend_from_slice(bytes);
            }
            Err(err) => {
                payload.push(1);
                payload.extend_from_slice(&err.raw_os_error().unwrap_or(0).to_le_bytes());
            }
        }
        payload
    }

    pub fn decode(payload: &[u8]) -> Option<Self> {
        let pid = u32_at(payload, 0)?;
        let len = u32_at(payload, 4)? as usize;
        let question = std::str::from_utf8(payload.get(8..8usize.checked_add(len)?)?).ok()?;
        let rest = payload.get(8 + len..)?;
        let (&status, bytes) = rest.split_first()?;
        let answer = match status {
            0 => Ok(bytes.to_vec()),
            2 => Ok(unpack(bytes)?),
            _ => Err(io::Error::from_raw_os_error(i32::from_le_bytes(
                bytes.get(..4)?.try_into().ok()?,
            ))),
        };
        Some(Self {
            pid,
            question: question.to_owned(),
            answer,
        })
    }
}

fn unpack(packed: &[u8]) -> Option<Vec<u8>> {
    let mut unpacked = Vec::new();
    zstd::stream::read::Decoder::new(packed)
        .ok()?
        .take(MAX_UNPACKED)
        .read_to_end(&mut unpacked)
        .ok()?;
    Some(unpacked)
}

/// A stack as the session's table took it (kind `stack`): walked by the
/// kernel (no sample) or unwound from a sample; how it ends when known.
#[derive(Debug, PartialEq, Eq)]
pub struct StackEntry {
    pub id: StackId,
    pub sample: Option<StackId>,
    pub frames: Vec<u64>,
    pub end: Option<StackEnd>,
}

impl StackEntry {
    pub fn encode(
        id: StackId,
        sample: Option<StackId>,
        frames: &[u64],
        end: Option<StackEnd>,
    ) -> Vec<u8> {
        let end = end.map(|end| end.to_string()).unwrap_or_default();
        let mut payload = Vec::with_capacity(24 + end.len() + frames.len() * 8);
        payload.extend_from_slice(&id.key().to_le_bytes());
        payload.extend_from_slice(&sample.map_or(0, StackId::key).to_le_bytes());
        payload.extend_from_slice(&(end.len() as u32).to_le_bytes());
        payload.extend_from_slice(end.as_bytes());
        payload.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        for frame in frames {
            payload.extend_from_slice(&frame.to_le_bytes());
        }
        payload
    }

    pub fn decode(payload: &[u8]) -> Option<Self> {
        let id = StackId::new(u64_at(payload, 0)?)?;
        let sample = StackId::new(u64_at(payload, 8)?);
        let end_len = u32_at(payload, 16)? as usize;
        let end = std::str::from_utf8(payload.get(20..20usize.checked_add(end_len)?)?).ok()?;
        let at = 20 + end_len;
        let count = u32_at(payload, at)? as usize;
        let frames = payload
            .get(at + 4..)?
            .chunks_exact(8)
            .take(count)
            .filter_map(|word| Some(u64::from_le_bytes(word.try_into().ok()?)))
            .collect();
        Some(Self {
            id,
            sample,
            frames,
            end: StackEnd::parse(end),
        })
    }

    /// Whether the entry's stack was unwound from a sample, read from its
    /// bytes alone.
    pub fn is_unwound(payload: &[u8]) -> bool {
        u64_at(payload, 8).is_some_and(|sample| sample != 0)
    }
}

/// A reading of one of the kernel side's counters (kind `counter`); `None`
/// when it could not be read.
#[derive(Debug, PartialEq, Eq)]
pub struct CounterReading {
    /// `memtrace_common::Counter`, as its number.
    pub counter: u32,
    pub value: Option<u64>,
}

impl CounterReading {
    pub fn encode(counter: Counter, value: Option<u64>) -> Vec<u8> {
        let mut payload = Vec::with_capacity(13);
        payload.extend_from_slice(&(counter as u32).to_le_bytes());
        payload.push(u8::from(value.is_none()));
        payload.extend_from_slice(&value.unwrap_or(0).to_le_bytes());
        payload
    }

    pub fn decode(payload: &[u8]) -> Option<Self> {
        let (counter, &unread, value) = (u32_at(payload, 0)?, payload.get(4)?, u64_at(payload, 5)?);
        Some(Self {
            counter,
            value: (unread == 0).then_some(value),
        })
    }
}

/// What reconciliation took from the machine before recording began (kind
/// `rules`): the zero page's frame (none: unknown) and the LazyFree slack.
pub fn encode_rules(zero_pfn: Option<u64>, lazyfree_slack: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(17);
    payload.push(u8::from(zero_pfn.is_some()));
    payload.extend_from_slice(&zero_pfn.unwrap_or(0).to_le_bytes());
    payload.extend_from_slice(&lazyfree_slack.to_le_bytes());
    payload
}

/// The zero page's frame and the LazyFree slack [`encode_rules`] wrote.
pub fn decode_rules(payload: &[u8]) -> Option<(Option<u64>, u64)> {
    let (&known, zero_pfn, lazyfree_slack) =
        (payload.first()?, u64_at(payload, 1)?, u64_at(payload, 9)?);
    Some(((known != 0).then_some(zero_pfn), lazyfree_slack))
}

/// A process's PID (kind `exit`; kind `target` begins with one, followed
/// by the cgroup's description when it is 0).
pub fn encode_pid(pid: u32, then: &[u8]) -> Vec<u8> {
    let mut payload = pid.to_le_bytes().to_vec();
    payload.extend_from_slice(then);
    payload
}

/// The PID a payload begins with, and what follows it.
pub fn decode_pid(payload: &[u8]) -> Option<(u32, &[u8])> {
    Some((u32_at(payload, 0)?, payload.get(4..)?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_batch_counts_its_whole_records() {
        let mut batch = Batch::default();
        for record in [&b"abc"[..], b"", b"defgh"] {
            batch.add(record);
        }
        assert_eq!(batch.records, 3);
        let records: Vec<&[u8]> = Batch::records(&batch.bytes).collect();
        assert_eq!(records, [&b"abc"[..], b"", b"defgh"]);
        assert_eq!(
            Batch::records(&batch.bytes[..batch.bytes.len() - 1]).count(),
            2
        );
    }

    #[test]
    fn a_proc_answer_reads_back_as_written() {
        let read = ProcAnswer::decode(&ProcAnswer::encode(
            7,
            "smaps",
            &Ok(b"7f00-7f01 rw-p".to_vec()),
        ))
        .unwrap();
        assert_eq!((read.pid, read.question.as_str()), (7, "smaps"));
        assert_eq!(read.answer.unwrap(), b"7f00-7f01 rw-p");
        // An error: its number.
        let failed = Err(io::Error::from_raw_os_error(libc::ESRCH));
        let read = ProcAnswer::decode(&ProcAnswer::encode(7, "stat", &failed)).unwrap();
        assert_eq!(read.answer.unwrap_err().raw_os_error(), Some(libc::ESRCH));
        // A long one is packed, and unpacks whole.
        let pagemap = vec![0u8; 3 * PACK_ABOVE];
        let payload = ProcAnswer::encode(7, "pagemap 0-1536", &Ok(pagemap.clone()));
        assert!(payload.len() < PACK_ABOVE);
        assert_eq!(
            ProcAnswer::decode(&payload).unwrap().answer.unwrap(),
            pagemap
        );
    }

    #[test]
    fn a_stack_reads_back_with_its_sample_and_end() {
        let id = StackId::new(0x11).unwrap();
        let sample = StackId::new(0x22);
        let end = Some(StackEnd::Cut(crate::intake::CutReason::BadUnwind));
        let payload = StackEntry::encode(id, sample, &[0x401000, 0x402000], end);
        assert!(StackEntry::is_unwound(&payload));
        assert_eq!(
            StackEntry::decode(&payload).unwrap(),
            StackEntry {
                id,
                sample,
                frames: vec![0x401000, 0x402000],
                end,
            }
        );
        let walked = StackEntry::encode(id, None, &[0x401000], None);
        assert!(!StackEntry::is_unwound(&walked));
    }

    #[test]
    fn counters_rules_and_pids_read_back_as_written() {
        let reading = CounterReading::decode(&CounterReading::encode(Counter::LostFaults, Some(9)));
        assert_eq!(
            reading,
            Some(CounterReading {
                counter: Counter::LostFaults as u32,
                value: Some(9)
            })
        );
        let unread = CounterReading::decode(&CounterReading::encode(Counter::LostFaults, None));
        assert_eq!(unread.unwrap().value, None);
        assert_eq!(
            decode_rules(&encode_rules(Some(0x1234), 253_952)),
            Some((Some(0x1234), 253_952))
        );
        assert_eq!(decode_rules(&encode_rules(None, 0)), Some((None, 0)));
        assert_eq!(decode_pid(&encode_pid(42, b"cg")), Some((42, &b"cg"[..])));
    }

    proptest! {
        /// Entries come from a file anyone may hand over: any bytes decode
        /// to something or to nothing, never to a panic.
        #[test]
        fn any_payload_decodes_or_is_skipped(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ProcAnswer::decode(&payload);
            let _ = StackEntry::decode(&payload);
            let _ = StackEntry::is_unwound(&payload);
            let _ = CounterReading::decode(&payload);
            let _ = decode_rules(&payload);
            let _ = decode_pid(&payload);
        }
    }
}
