//! `memtrace report --contents FILE`: reads a capture `memtrace record`
//! wrote, whole or cut off, and says what it holds and where it ends.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs::File,
    io::BufReader,
    path::Path,
};

use super::{
    entries::{decode_pid, Batch, StackEntry},
    SessionError,
};
use crate::{
    capture::{CaptureError, CaptureReader, Ending, Header, Kind},
    intake::{decode, EventKind},
    symbolize::Learned,
};

/// What a capture holds, counted entry by entry.
#[derive(Default)]
struct Contents {
    records: u64,
    /// Per process: records of events, and stack samples.
    by_process: BTreeMap<u32, (u64, u64)>,
    /// Records that do not decode.
    undecodable: u64,
    batches: u64,
    /// Stacks walked by the kernel, and unwound from samples.
    stacks_walked: u64,
    stacks_unwound: u64,
    ticks: u64,
    proc_answers: u64,
    counter_readings: u64,
    /// Code files identified and offsets named while recording.
    files_identified: u64,
    offsets_named: u64,
    /// Files embedded for naming (`--embed-debug`), and their bytes.
    files_embedded: u64,
    embedded_bytes: u64,
    /// Go heap profiles (`--go-pprof`).
    heap_profiles: u64,
    exits: BTreeSet<u32>,
    stop: Option<String>,
    notes: Vec<String>,
    /// Entries of kinds a newer memtrace wrote.
    unknown: u64,
    last_ns: u64,
}

impl Contents {
    fn count(&mut self, record: &[u8]) {
        self.records += 1;
        let Ok(decoded) = decode(record) else {
            self.undecodable += 1;
            return;
        };
        let (events, samples) = self.by_process.entry(decoded.tgid).or_default();
        match decoded.event.kind {
            EventKind::StackSample(_) => *samples += 1,
            _ => *events += 1,
        }
    }
}

/// The capture at `path`, its header read.
pub(super) fn open_capture(path: &Path) -> Result<CaptureReader<BufReader<File>>, SessionError> {
    let read = || {
        let file = File::open(path).map_err(CaptureError::Read)?;
        CaptureReader::open(BufReader::new(file))
    };
    read().map_err(|source| SessionError::Capture {
        path: path.to_owned(),
        source,
    })
}

/// The text `memtrace report` prints for the capture at `path`.
pub fn report(path: &Path) -> Result<String, SessionError> {
    let capture_error = |source| SessionError::Capture {
        path: path.to_owned(),
        source,
    };
    let mut reader = open_capture(path)?;
    let mut contents = Contents::default();
    while let Some(chunk) = reader.next_chunk().map_err(capture_error)? {
        for entry in chunk.entries {
            contents.last_ns = contents.last_ns.max(entry.time_ns);
            match entry.kind {
                Kind::Batch => {
                    contents.batches += 1;
                    for record in Batch::records(&entry.payload) {
                        contents.count(record);
                    }
                }
                Kind::Tick => contents.ticks += 1,
                Kind::Stack if StackEntry::is_unwound(&entry.payload) => {
                    contents.stacks_unwound += 1;
                }
                Kind::Stack => contents.stacks_walked += 1,
                Kind::Proc => contents.proc_answers += 1,
                Kind::Counter => contents.counter_readings += 1,
                Kind::Heap => contents.heap_profiles += 1,
                Kind::Symbol | Kind::Debug => match Learned::read(entry.kind, &entry.payload, 0) {
                    Some(Ok(Learned::File { .. })) => contents.files_identified += 1,
                    Some(Ok(Learned::Names { .. })) => contents.offsets_named += 1,
                    Some(Ok(Learned::Embedded(piece))) => {
                        contents.files_embedded += u64::from(piece.offset == 0);
                        contents.embedded_bytes += piece.bytes.len() as u64;
                    }
                    Some(Err(_)) | None => contents.unknown += 1,
                },
                // For the replay: nothing to count.
                Kind::Rules | Kind::Target => {}
                Kind::Exit => {
                    if let Some((pid, _)) = decode_pid(&entry.payload) {
                        contents.exits.insert(pid);
                    }
                }
                Kind::Stop => contents.stop = Some(text(&entry.payload)),
                Kind::Note => contents.notes.push(text(&entry.payload)),
                Kind::Unknown(_) => contents.unknown += 1,
            }
        }
    }
    let ending = reader.ending().expect("read to the end").clone();
    Ok(describe(path, reader.header(), &contents, &ending))
}

fn describe(path: &Path, header: &Header, contents: &Contents, ending: &Ending) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "capture {}: recorded {} on {} (kernel {}, {}-byte pages) by memtrace {}",
        path.display(),
        utc(header.realtime_ns),
        header.host_name,
        header.kernel_release,
        header.page_size,
        header.memtrace_version
    );
    let _ = writeln!(out, "command: {}", header.command.join(" "));
    let exits = if contents.exits.is_empty() {
        String::new()
    } else {
        let pids: Vec<String> = contents.exits.iter().map(u32::to_string).collect();
        format!(", exits of pid {}", pids.join(", "))
    };
    let _ = writeln!(
        out,
        "{:.3} s: {} records in {} drains, {} interval ticks, {} answers from /proc, {} kernel \
         counter readings, {} Go heap profiles{exits}",
        contents.last_ns as f64 / 1e9,
        contents.records,
        contents.batches,
        contents.ticks,
        contents.proc_answers,
        contents.counter_readings,
        contents.heap_profiles,
    );
    let _ = writeln!(
        out,
        "stacks: {} walked by the kernel, {} unwound from samples; names: {} code files \
         identified, {} offsets named, {} files embedded ({} bytes before compression)",
        contents.stacks_walked,
        contents.stacks_unwound,
        contents.files_identified,
        contents.offsets_named,
        contents.files_embedded,
        contents.embedded_bytes
    );
    for (pid, (events, samples)) in &contents.by_process {
        let _ = writeln!(
            out,
            "pid {pid}: {events} event records, {samples} stack samples"
        );
    }
    if contents.undecodable > 0 {
        let _ = writeln!(out, "{} records do not decode", contents.undecodable);
    }
    if let Some(stop) = &contents.stop {
        let _ = writeln!(out, "stopped: {stop}");
    }
    if contents.unknown > 0 {
        let _ = writeln!(
            out,
            "{} entries of kinds a newer memtrace wrote were skipped",
            contents.unknown
        );
    }
    for note in &contents.notes {
        let _ = writeln!(out, "note: {note}");
    }
    let _ = writeln!(out, "{ending}");
    out
}

fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// `ns` since the epoch as a UTC date and time.
fn utc(ns: u64) -> String {
    let seconds = ns / 1_000_000_000;
    let (days, day_seconds) = (seconds / 86_400, seconds % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        day_seconds / 3600,
        day_seconds / 60 % 60,
        day_seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_798_761_599_000_000_000), "2026-12-31 23:59:59 UTC");
    }
}
