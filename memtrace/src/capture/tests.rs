//! Captures written and read back: whole, cut off at any byte, with any
//! byte changed, over a size limit, and from a newer memtrace (proptest).

use proptest::prelude::*;

use super::*;

fn header() -> Header {
    Header {
        memtrace_version: "0.1.0".into(),
        kernel_release: "6.1.0-test".into(),
        page_size: 4096,
        host_name: "host".into(),
        realtime_ns: 1_700_000_000_000_000_000,
        boottime_ns: 5_000_000_000,
        monotonic_ns: 4_000_000_000,
        command: vec!["memtrace".into(), "record".into(), "-o".into(), "x".into()],
    }
}

/// Entries, as pushed: kind code, time, payload.
type Pushes = Vec<(u8, u64, Vec<u8>)>;

/// A capture of `pushes`, a chunk flushed after each entry `flush_after`
/// says; `finish`: ended cleanly.
fn capture(pushes: &Pushes, flush_after: &[bool], finish: bool, limit: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = CaptureWriter::create(&mut out, &header(), limit).unwrap();
    for (n, (kind, time, payload)) in pushes.iter().enumerate() {
        writer.push(Kind::from_code(*kind), *time, payload).unwrap();
        if flush_after.get(n).copied().unwrap_or(false) {
            writer.flush_chunk().unwrap();
        }
    }
    if finish {
        writer.finish().unwrap();
    } else {
        writer.flush_chunk().unwrap();
    }
    out
}

/// Every entry of a capture, and how it ends.
fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Entry>, Ending), CaptureError> {
    let mut reader = CaptureReader::open(bytes)?;
    let mut entries = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        entries.extend(chunk.entries);
    }
    let ending = reader.ending().cloned().expect("read to the end");
    Ok((reader.header().clone(), entries, ending))
}

fn as_entries(pushes: &Pushes) -> Vec<Entry> {
    pushes
        .iter()
        .map(|(kind, time_ns, payload)| Entry {
            kind: Kind::from_code(*kind),
            time_ns: *time_ns,
            payload: payload.clone(),
        })
        .collect()
}

fn pushes() -> impl Strategy<Value = (Pushes, Vec<bool>)> {
    (
        prop::collection::vec(
            (
                1u8..8,
                0u64..1 << 40,
                prop::collection::vec(any::<u8>(), 0..300),
            ),
            0..40,
        ),
        prop::collection::vec(any::<bool>(), 0..40),
    )
}

/// Where the header ends in a capture of [`header`].
fn header_len() -> usize {
    let mut out = Vec::new();
    CaptureWriter::create(&mut out, &header(), None).unwrap();
    out.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_capture_reads_back_as_written((pushes, flushes) in pushes()) {
        let bytes = capture(&pushes, &flushes, true, None);
        let (read_header, entries, ending) = read_all(&bytes).unwrap();
        prop_assert_eq!(read_header, header());
        prop_assert_eq!(entries, as_entries(&pushes));
        prop_assert_eq!(ending, Ending::Complete);
    }

    #[test]
    fn a_capture_cut_off_anywhere_reads_to_its_last_whole_chunk(
        (pushes, flushes) in pushes(),
        finish in any::<bool>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = capture(&pushes, &flushes, finish, None);
        let cut = cut.index(bytes.len() + 1);
        let result = read_all(&bytes[..cut]);
        if cut < header_len() {
            prop_assert!(result.is_err(), "a cut header is an error");
            return Ok(());
        }
        let (_, entries, ending) = result.unwrap();
        // What was read is what was written, as far as it goes.
        let written = as_entries(&pushes);
        prop_assert_eq!(&entries[..], &written[..entries.len()]);
        match ending {
            Ending::Complete => {
                prop_assert!(finish && cut == bytes.len());
                prop_assert_eq!(entries.len(), written.len());
            }
            Ending::CutOff(cut_off) => {
                prop_assert!(!finish || cut < bytes.len());
                prop_assert_eq!(cut_off.size, cut as u64);
                prop_assert!(cut_off.whole_to <= cut_off.size);
                prop_assert_eq!(
                    cut_off.last_ns,
                    entries.iter().map(|entry| entry.time_ns).max()
                );
                // Only what follows the last whole chunk is lost.
                let whole = capture(&pushes, &flushes, false, None);
                let (_, kept, _) = read_all(&whole[..cut_off.whole_to as usize]).unwrap();
                prop_assert_eq!(kept, entries);
            }
        }
    }

    #[test]
    fn any_byte_changed_is_an_error_never_a_panic(
        (pushes, flushes) in pushes(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = capture(&pushes, &flushes, true, None);
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        prop_assert!(read_all(&bytes).is_err(), "byte {} changed, read anyway", at);
    }

    #[test]
    fn a_size_limit_is_kept_and_noted(
        (pushes, flushes) in pushes(),
        room in 0u64..4000,
    ) {
        let limit = header_len() as u64 + 700 + room;
        let bytes = capture(&pushes, &flushes, true, Some(limit));
        prop_assert!(bytes.len() as u64 <= limit, "{} bytes over a {} limit", bytes.len(), limit);
        let (_, entries, ending) = read_all(&bytes).unwrap();
        prop_assert_eq!(ending, Ending::Complete);
        let written = as_entries(&pushes);
        let said = format!("size limit of {limit} bytes");
        let reached = entries.last().is_some_and(|entry| {
            entry.kind == Kind::Note && String::from_utf8_lossy(&entry.payload).contains(&said)
        });
        if reached {
            // What came before the note is what was written, as far as it went.
            let kept = entries.len() - 1;
            prop_assert!(kept < written.len());
            prop_assert_eq!(&entries[..kept], &written[..kept]);
        } else {
            prop_assert_eq!(&entries, &written);
        }
        // A capture with room to spare for the note and the index is whole.
        let unlimited = capture(&pushes, &flushes, true, None);
        if unlimited.len() as u64 + 1100 <= limit {
            prop_assert!(!reached);
        }
    }
}

#[test]
fn a_newer_format_is_refused_by_its_version() {
    let mut bytes = capture(&vec![(1, 5, b"x".to_vec())], &[], true, None);
    bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    // The rest of a newer capture may be laid out anyhow.
    bytes.truncate(12);
    let err = read_all(&bytes).unwrap_err();
    assert!(
        matches!(err, CaptureError::Newer { found, supported: FORMAT_VERSION } if found == FORMAT_VERSION + 1),
        "{err}"
    );
}

#[test]
fn anything_else_is_not_a_capture() {
    assert!(matches!(
        read_all(b"").unwrap_err(),
        CaptureError::NotACapture
    ));
    assert!(matches!(
        read_all(b"\x7fELF\x02\x01\x01\0").unwrap_err(),
        CaptureError::NotACapture
    ));
    assert!(matches!(
        read_all(b"MTRC").unwrap_err(),
        CaptureError::Corrupt { .. }
    ));
}

#[test]
fn a_limit_too_small_for_a_header_and_index_is_refused() {
    let err = CaptureWriter::create(Vec::new(), &header(), Some(100)).err();
    assert!(matches!(
        err,
        Some(CaptureError::LimitTooSmall { limit: 100, .. })
    ));
}

#[test]
fn an_entry_larger_than_a_chunk_is_refused() {
    let mut writer = CaptureWriter::create(Vec::new(), &header(), None).unwrap();
    let huge = vec![0; format::MAX_CHUNK_RAW];
    assert!(matches!(
        writer.push(Kind::Note, 0, &huge),
        Err(CaptureError::EntryTooLarge { .. })
    ));
}

#[test]
fn entries_past_the_limit_are_dropped_and_counted() {
    let mut writer = CaptureWriter::create(Vec::new(), &header(), Some(4096)).unwrap();
    // Incompressible: each chunk takes its whole size.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = || {
        (0..500)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>()
    };
    let mut dropped = 0;
    for time in 0..20 {
        if writer.push(Kind::Note, time, &noise()).unwrap() == Pushed::Dropped {
            dropped += 1;
        }
        writer.flush_chunk().unwrap();
    }
    let written = writer.finish().unwrap();
    assert!(written.limit_reached);
    assert!(written.bytes <= 4096, "{written:?}");
    // The entry whose chunk met the limit was taken in, then left out.
    assert_eq!(written.dropped, dropped + 1);
    assert!(dropped > 10, "{written:?}");
}
