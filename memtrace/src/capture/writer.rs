//! Writes a capture as it goes: entries gather into a chunk, which is
//! compressed and written whole, so whatever stops the writer leaves every
//! chunk before it readable.

use std::io::Write;

use super::{
    format::{
        encode_entry, encode_index, index_len, len32, ChunkHead, IndexLine, Kind, Out, CHUNK_HEAD,
        ENTRY_HEAD, FORMAT_VERSION, MAGIC, MAX_CHUNK_RAW,
    },
    CaptureError, Header,
};

/// A chunk is written once its entries reach this many bytes (or when the
/// caller flushes it): big enough to compress well, small enough that a
/// kill loses little.
const CHUNK_TARGET: usize = 1 << 20;
/// zstd's level: fast, and most of the gain of higher ones on records.
const LEVEL: i32 = 3;
/// Room kept under a size limit for the note that says it was reached.
const NOTE_ROOM: u64 = (CHUNK_HEAD + ENTRY_HEAD + 512) as u64;

/// Whether an entry went into the capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Taken in; its chunk is still left out if writing it would pass the
    /// limit ([`Written::dropped`] counts every entry left out).
    Kept,
    /// The size limit was reached: the entry, and every later one, is left
    /// out.
    Dropped,
}

/// What was written, for the rate said at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes of the file.
    pub bytes: u64,
    /// Bytes of the entries before compression.
    pub raw_bytes: u64,
    pub entries: u64,
    pub chunks: u64,
    /// Entries left out once the size limit was reached.
    pub dropped: u64,
    /// The size limit was reached.
    pub limit_reached: bool,
}

pub struct CaptureWriter<W: Write> {
    out: W,
    pending: Vec<u8>,
    pending_entries: u32,
    /// Times of the pending chunk's first and last entries.
    span: Option<(u64, u64)>,
    index: Vec<IndexLine>,
    limit: Option<u64>,
    written: Written,
}

impl<W: Write> CaptureWriter<W> {
    /// Starts a capture on `out` with `header`; with `limit`, the file
    /// stays within that many bytes.
    pub fn create(mut out: W, header: &Header, limit: Option<u64>) -> Result<Self, CaptureError> {
        let fields = header.encode();
        let mut start = Out::default();
        start.bytes(&MAGIC);
        let mut checked = Out::default();
        checked.u16(FORMAT_VERSION);
        checked.u32(len32(fields.len()));
        checked.bytes(&fields);
        start.bytes(&checked.0);
        start.u32(crc32fast::hash(&checked.0));
        if let Some(limit) = limit {
            let needed = start.0.len() as u64 + NOTE_ROOM + index_len(1);
            if limit < needed {
                return Err(CaptureError::LimitTooSmall { limit, needed });
            }
        }
        out.write_all(&start.0).map_err(CaptureError::Write)?;
        Ok(Self {
            out,
            pending: Vec::new(),
            pending_entries: 0,
            span: None,
            index: Vec::new(),
            limit,
            written: Written {
                bytes: start.0.len() as u64,
                ..Written::default()
            },
        })
    }

    /// Adds an entry of `kind` at `time_ns` (from the header's monotonic
    /// clock reading).
    pub fn push(
        &mut self,
        kind: Kind,
        time_ns: u64,
        payload: &[u8],
    ) -> Result<Pushed, CaptureError> {
        let len = ENTRY_HEAD + payload.len();
        if len > MAX_CHUNK_RAW {
            return Err(CaptureError::EntryTooLarge {
                len: payload.len(),
                max: MAX_CHUNK_RAW - ENTRY_HEAD,
            });
        }
        if self.written.limit_reached {
            self.written.dropped += 1;
            return Ok(Pushed::Dropped);
        }
        if self.pending.len() + len > MAX_CHUNK_RAW {
            self.flush_chunk()?;
        }
        encode_entry(&mut self.pending, kind, time_ns, payload);
        self.pending_entries += 1;
        self.span = Some(match self.span {
            Some((first, last)) => (first, last.max(time_ns)),
            None => (time_ns, time_ns),
        });
        if self.pending.len() >= CHUNK_TARGET {
            self.flush_chunk()?;
        }
        // The entry may have been the one that met the limit.
        Ok(if self.written.limit_reached {
            Pushed::Dropped
        } else {
            Pushed::Kept
        })
    }

    /// Writes the pending entries as a chunk now (at each interval, so a
    /// kill loses at most one interval). If the chunk would take the file
    /// past its limit, a note saying so is written instead and the capture
    /// takes nothing more.
    pub fn flush_chunk(&mut self) -> Result<(), CaptureError> {
        let Some((first_ns, last_ns)) = self.span.take() else {
            return Ok(());
        };
        let raw = std::mem::take(&mut self.pending);
        let entries = std::mem::take(&mut self.pending_entries);
        let chunk = self.chunk(&raw, entries, first_ns, last_ns)?;
        let Some(limit) = self.limit else {
            return self.write_chunk(&chunk, &raw, entries, first_ns, last_ns);
        };
        let after = self.written.bytes + chunk.len() as u64;
        if after + NOTE_ROOM + index_len(self.index.len() + 2) <= limit {
            return self.write_chunk(&chunk, &raw, entries, first_ns, last_ns);
        }
        self.written.limit_reached = true;
        self.written.dropped += u64::from(entries);
        let text = format!(
            "the capture reached its size limit of {limit} bytes at {:.3} s: what followed \
             was not recorded",
            first_ns as f64 / 1e9
        );
        let mut note = Vec::new();
        encode_entry(&mut note, Kind::Note, first_ns, text.as_bytes());
        let chunk = self.chunk(&note, 1, first_ns, first_ns)?;
        self.write_chunk(&chunk, &note, 1, first_ns, first_ns)
    }

    fn chunk(
        &self,
        raw: &[u8],
        entries: u32,
        first_ns: u64,
        last_ns: u64,
    ) -> Result<Vec<u8>, CaptureError> {
        let body = zstd::bulk::compress(raw, LEVEL).map_err(CaptureError::Write)?;
        let head = ChunkHead {
            compressed: len32(body.len()),
            raw: len32(raw.len()),
            entries,
            first_ns,
            last_ns,
        };
        Ok(head.encode(&body))
    }

    fn write_chunk(
        &mut self,
        chunk: &[u8],
        raw: &[u8],
        entries: u32,
        first_ns: u64,
        last_ns: u64,
    ) -> Result<(), CaptureError> {
        self.out.write_all(chunk).map_err(CaptureError::Write)?;
        self.out.flush().map_err(CaptureError::Write)?;
        self.index.push(IndexLine {
            offset: self.written.bytes,
            first_ns,
            last_ns,
            entries,
        });
        self.written.bytes += chunk.len() as u64;
        self.written.raw_bytes += raw.len() as u64;
        self.written.entries += u64::from(entries);
        self.written.chunks += 1;
        Ok(())
    }

    /// What was written so far.
    pub fn written(&self) -> Written {
        self.written
    }

    /// Writes the last chunk and the index: the capture ends cleanly.
    pub fn finish(mut self) -> Result<Written, CaptureError> {
        self.flush_chunk()?;
        let index = encode_index(&self.index, self.written.bytes);
        self.out.write_all(&index).map_err(CaptureError::Write)?;
        self.out.flush().map_err(CaptureError::Write)?;
        self.written.bytes += index.len() as u64;
        Ok(self.written)
    }
}
