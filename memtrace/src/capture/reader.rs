//! Reads a capture chunk by chunk. A file cut off anywhere reads up to its
//! last whole chunk and then says where it ends; bytes that cannot be what
//! a writer wrote are [`CaptureError::Corrupt`], never a panic.

use std::{fmt, io::Read};

use super::{
    format::{
        decode_entries, ChunkHead, In, IndexLine, Kind, CHUNK_HEAD, CHUNK_TAG, END_MAGIC,
        FORMAT_VERSION, INDEX_LINE, INDEX_TAG, MAGIC, MAX_CHUNK_RAW, MAX_HEADER, TRAILER,
    },
    CaptureError, Header,
};

/// The most `raw` bytes take compressed (zstd's `ZSTD_COMPRESSBOUND`).
fn compress_bound(raw: u32) -> usize {
    let raw = raw as usize;
    let small = if raw < 128 << 10 {
        ((128 << 10) - raw) >> 11
    } else {
        0
    };
    raw + (raw >> 8) + small
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// From the header's monotonic clock reading.
    pub time_ns: u64,
    pub payload: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Where the chunk starts in the file.
    pub offset: u64,
    pub entries: Vec<Entry>,
}

/// How the capture ended, once it is read to its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// With its index: recording ended cleanly.
    Complete,
    CutOff(CutOff),
}

/// Where a capture without its index ends (killed, or the disk was full).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutOff {
    /// Bytes of the file.
    pub size: u64,
    /// The whole chunks read, which end at byte `whole_to`.
    pub chunks: u64,
    pub whole_to: u64,
    /// The time of the last entry read.
    pub last_ns: Option<u64>,
    /// What the file ends in.
    pub inside: &'static str,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Complete => f.write_str("the capture is complete"),
            Self::CutOff(cut) => {
                write!(
                    f,
                    "the capture was cut off {}: its {} bytes hold {} whole chunks, to byte {}",
                    cut.inside, cut.size, cut.chunks, cut.whole_to
                )?;
                match cut.last_ns {
                    Some(ns) => write!(f, ", the last entry at {:.3} s", ns as f64 / 1e9),
                    None => f.write_str(", no entries"),
                }
            }
        }
    }
}

pub struct CaptureReader<R: Read> {
    input: R,
    offset: u64,
    header: Header,
    /// The chunks read, as the index should list them.
    read: Vec<IndexLine>,
    last_ns: Option<u64>,
    ending: Option<Ending>,
}

/// What a read of up to `len` bytes found.
enum Fill {
    Whole(Vec<u8>),
    /// The file ended after these bytes.
    Short(Vec<u8>),
}

impl<R: Read> CaptureReader<R> {
    /// Reads the capture's header; fails on anything but a capture of a
    /// format this memtrace reads.
    pub fn open(mut input: R) -> Result<Self, CaptureError> {
        let mut offset = 0;
        match fill(&mut input, &mut offset, MAGIC.len())? {
            Fill::Whole(magic) if magic == MAGIC => {}
            Fill::Short(start) if !start.is_empty() && MAGIC.starts_with(&start) => {
                return Err(ends_in_header(offset))
            }
            _ => return Err(CaptureError::NotACapture),
        }
        // The version first: a newer format may lay out the rest anyhow.
        let Fill::Whole(version) = fill(&mut input, &mut offset, 2)? else {
            return Err(ends_in_header(offset));
        };
        let version = u16::from_le_bytes([version[0], version[1]]);
        if version > FORMAT_VERSION {
            return Err(CaptureError::Newer {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if version == 0 {
            return Err(CaptureError::corrupt(8, "format version 0"));
        }
        let Fill::Whole(len) = fill(&mut input, &mut offset, 4)? else {
            return Err(ends_in_header(offset));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes asked")) as usize;
        if len > MAX_HEADER {
            return Err(CaptureError::corrupt(
                10,
                format!("a header of {len} bytes (at most {MAX_HEADER})"),
            ));
        }
        let body_at = offset;
        let Fill::Whole(body) = fill(&mut input, &mut offset, len + 4)? else {
            return Err(ends_in_header(offset));
        };
        let (body, crc) = body.split_at(len);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&version.to_le_bytes());
        hasher.update(&(len as u32).to_le_bytes());
        hasher.update(body);
        if hasher.finalize().to_le_bytes() != crc {
            return Err(CaptureError::corrupt(
                body_at,
                "the header's CRC does not match",
            ));
        }
        let header = Header::decode(&mut In::new(body, body_at))?;
        Ok(Self {
            input,
            offset,
            header,
            read: Vec::new(),
            last_ns: None,
            ending: None,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// How the capture ends, once [`Self::next_chunk`] returned `None`.
    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    /// The next whole chunk; `None` at the end of the capture, clean or
    /// cut off (see [`Self::ending`]).
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, CaptureError> {
        if self.ending.is_some() {
            return Ok(None);
        }
        let start = self.offset;
        let tag = match fill(&mut self.input, &mut self.offset, CHUNK_TAG.len())? {
            Fill::Whole(tag) => tag,
            Fill::Short(tail) if tail.is_empty() => {
                return self.cut_off(start, "without its index")
            }
            Fill::Short(_) => return self.cut_off(start, "inside a chunk"),
        };
        if tag == INDEX_TAG {
            self.read_index(start)?;
            return Ok(None);
        }
        if tag != CHUNK_TAG {
            return Err(CaptureError::corrupt(
                start,
                "neither a chunk nor the index starts here",
            ));
        }
        let Fill::Whole(head) = fill(&mut self.input, &mut self.offset, CHUNK_HEAD - 4)? else {
            return self.cut_off(start, "inside a chunk");
        };
        let (head, crc) = ChunkHead::decode(&mut In::new(&head, start + 4))?;
        if head.raw as usize > MAX_CHUNK_RAW || head.compressed as usize > compress_bound(head.raw)
        {
            return Err(CaptureError::corrupt(
                start,
                format!(
                    "a chunk of {} bytes ({} uncompressed), larger than any written",
                    head.compressed, head.raw
                ),
            ));
        }
        let body = match fill(&mut self.input, &mut self.offset, head.compressed as usize)? {
            Fill::Whole(body) => body,
            // A file that ends with its trailer was not cut off: the
            // length is wrong.
            Fill::Short(tail) if tail.ends_with(&END_MAGIC) => {
                return Err(CaptureError::corrupt(
                    start,
                    "the chunk's length runs past the capture's end",
                ))
            }
            Fill::Short(_) => return self.cut_off(start, "inside a chunk"),
        };
        if head.crc(&body) != crc {
            return Err(CaptureError::corrupt(
                start,
                "the chunk's CRC does not match",
            ));
        }
        let raw = zstd::bulk::decompress(&body, head.raw as usize)
            .map_err(|err| CaptureError::corrupt(start, format!("the chunk's zstd: {err}")))?;
        if raw.len() != head.raw as usize {
            return Err(CaptureError::corrupt(
                start,
                format!(
                    "the chunk says it is {} bytes uncompressed, it is {}",
                    head.raw,
                    raw.len()
                ),
            ));
        }
        let entries: Vec<Entry> = decode_entries(&raw, head.entries, start)?
            .into_iter()
            .map(|(kind, time_ns, payload)| Entry {
                kind,
                time_ns,
                payload,
            })
            .collect();
        self.read.push(IndexLine {
            offset: start,
            first_ns: head.first_ns,
            last_ns: head.last_ns,
            entries: head.entries,
        });
        if head.entries > 0 {
            self.last_ns = Some(
                self.last_ns
                    .map_or(head.last_ns, |last| last.max(head.last_ns)),
            );
        }
        Ok(Some(Chunk {
            offset: start,
            entries,
        }))
    }

    /// Checks the index (its tag read, at `start`) against the chunks read,
    /// and that nothing follows it.
    fn read_index(&mut self, start: u64) -> Result<(), CaptureError> {
        let Fill::Whole(count) = fill(&mut self.input, &mut self.offset, 4)? else {
            return self.cut_off(start, "inside its index").map(drop);
        };
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes asked")) as usize;
        if count != self.read.len() {
            return Err(CaptureError::corrupt(
                start,
                format!(
                    "the index lists {count} chunks, the capture holds {}",
                    self.read.len()
                ),
            ));
        }
        let Fill::Whole(rest) = fill(
            &mut self.input,
            &mut self.offset,
            count * INDEX_LINE + 4 + TRAILER,
        )?
        else {
            return self.cut_off(start, "inside its index").map(drop);
        };
        let mut input = In::new(&rest, start + 8);
        let mut lines = Vec::with_capacity(count);
        for _ in 0..count {
            lines.push(IndexLine {
                offset: input.u64("index")?,
                first_ns: input.u64("index")?,
                last_ns: input.u64("index")?,
                entries: input.u32("index")?,
            });
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&(count as u32).to_le_bytes());
        hasher.update(&rest[..count * INDEX_LINE]);
        if hasher.finalize() != input.u32("index CRC")? {
            return Err(CaptureError::corrupt(
                start,
                "the index's CRC does not match",
            ));
        }
        if lines != self.read {
            return Err(CaptureError::corrupt(
                start,
                "the index does not list the chunks the capture holds",
            ));
        }
        if input.u64("index offset")? != start || input.take(8, "end magic")? != END_MAGIC {
            return Err(CaptureError::corrupt(
                start,
                "the capture's trailer is not the one written",
            ));
        }
        if let Fill::Whole(_) = fill(&mut self.input, &mut self.offset, 1)? {
            return Err(CaptureError::corrupt(
                self.offset - 1,
                "bytes follow the capture's end",
            ));
        }
        self.ending = Some(Ending::Complete);
        Ok(())
    }

    fn cut_off(
        &mut self,
        whole_to: u64,
        inside: &'static str,
    ) -> Result<Option<Chunk>, CaptureError> {
        self.ending = Some(Ending::CutOff(CutOff {
            size: self.offset,
            chunks: self.read.len() as u64,
            whole_to,
            last_ns: self.last_ns,
            inside,
        }));
        Ok(None)
    }
}

/// Reads `len` bytes, or as many as the file still has, advancing `offset`.
/// The buffer grows with what arrives, so a length read from a corrupt file
/// costs no more memory than the file has.
fn fill(input: &mut impl Read, offset: &mut u64, len: usize) -> Result<Fill, CaptureError> {
    let mut bytes = Vec::new();
    let got = input
        .take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(CaptureError::Read)?;
    *offset += got as u64;
    Ok(if got == len {
        Fill::Whole(bytes)
    } else {
        Fill::Short(bytes)
    })
}

fn ends_in_header(offset: u64) -> CaptureError {
    CaptureError::corrupt(offset, "the capture ends inside its header")
}
