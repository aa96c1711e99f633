//! The bytes of a capture file, version [`FORMAT_VERSION`]: every number
//! little-endian, every part framed by its length and checked by a CRC-32
//! (docs/capture-format.md).

use super::CaptureError;

/// The first bytes of every capture.
pub const MAGIC: [u8; 8] = *b"MTRCAPT\n";
/// The last bytes of a capture that was ended cleanly.
pub const END_MAGIC: [u8; 8] = *b"MTRCEND\n";
/// The format this memtrace writes, and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;

/// Starts a chunk.
pub const CHUNK_TAG: [u8; 4] = *b"CHNK";
/// Starts the index.
pub const INDEX_TAG: [u8; 4] = *b"INDX";
/// Tag, compressed length, raw length, entries, first and last time, CRC.
pub const CHUNK_HEAD: usize = 4 + 4 + 4 + 4 + 8 + 8 + 4;
/// Kind, time, payload length.
pub const ENTRY_HEAD: usize = 1 + 8 + 4;
/// One chunk's line in the index: offset, first and last time, entries.
pub const INDEX_LINE: usize = 8 + 8 + 8 + 4;
/// Footer offset and end magic.
pub const TRAILER: usize = 8 + 8;
/// The most a chunk holds uncompressed: a reader allocates no more than
/// this for a chunk, whatever its header claims.
pub const MAX_CHUNK_RAW: usize = 64 << 20;
/// The most a header holds, for the same reason.
pub const MAX_HEADER: usize = 1 << 20;

/// What an entry holds. Readers skip kinds they do not know, so kinds can
/// be added without a new format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A note for whoever reports the capture (UTF-8 text), such as the
    /// size limit being reached.
    Note,
    /// One drain of the ring buffer: its records as the kernel wrote them.
    Batch,
    /// An interval's tick: the session reconciled and reported.
    Tick,
    /// A pidfd said a traced process exited.
    Exit,
    /// An answer from /proc, in the order asked.
    Proc,
    /// How the session stopped.
    Stop,
    /// A stack as the table took it: walked by the kernel, or unwound
    /// from a sample with the binaries' tables (gone at report time).
    Stack,
    /// A reading of one of the kernel side's counters (records lost).
    Counter,
    /// What reconciliation takes from the machine once, before recording
    /// starts: the zero page's frame, the LazyFree slack.
    Rules,
    /// The process traced (the primary target; 0 for a cgroup).
    Target,
    /// What naming learnt while recording: a code file's build id or
    /// identity, or the functions at an offset of one (see
    /// `symbolize::Learned`).
    Symbol,
    /// A Go heap profile `--go-pprof` took, as it came.
    Heap,
    /// A piece of a code file's naming parts or of its separate debug
    /// file, which `record --embed-debug` carries (see
    /// `symbolize::embedded`).
    Debug,
    /// A kind this memtrace does not know (from a newer one).
    Unknown(u8),
}

impl Kind {
    pub fn code(self) -> u8 {
        match self {
            Self::Note => 1,
            Self::Batch => 2,
            Self::Tick => 3,
            Self::Exit => 4,
            Self::Proc => 5,
            Self::Stop => 6,
            Self::Stack => 7,
            Self::Counter => 8,
            Self::Rules => 9,
            Self::Target => 10,
            Self::Symbol => 11,
            Self::Heap => 12,
            Self::Debug => 13,
            Self::Unknown(code) => code,
        }
    }

    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Note,
            2 => Self::Batch,
            3 => Self::Tick,
            4 => Self::Exit,
            5 => Self::Proc,
            6 => Self::Stop,
            7 => Self::Stack,
            8 => Self::Counter,
            9 => Self::Rules,
            10 => Self::Target,
            11 => Self::Symbol,
            12 => Self::Heap,
            13 => Self::Debug,
            other => Self::Unknown(other),
        }
    }
}

/// Bytes appended in the capture's encoding.
#[derive(Default)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    pub fn bytes(&mut self, value: &[u8]) {
        self.0.extend_from_slice(value);
    }

    /// A length-prefixed string.
    pub fn text(&mut self, value: &str) {
        self.u32(len32(value.len()));
        self.bytes(value.as_bytes());
    }

    /// An optional string: a byte (1 when present), then a string (empty
    /// when absent).
    pub fn optional_text(&mut self, value: Option<&str>) {
        self.bytes(&[u8::from(value.is_some())]);
        self.text(value.unwrap_or_default());
    }
}

/// Lengths in a capture are 32 bits; callers bound them well below.
pub fn len32(len: usize) -> u32 {
    u32::try_from(len).expect("capture parts are bounded far below 4 GiB")
}

/// Reads the capture's encoding from a byte slice, never past its end:
/// anything short or out of bounds is a [`CaptureError::Corrupt`] at the
/// file offset of the slice's start plus the position reached.
pub struct In<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The file offset of `bytes[0]`, for errors.
    base: u64,
}

impl<'a> In<'a> {
    pub fn new(bytes: &'a [u8], base: u64) -> Self {
        Self { bytes, at: 0, base }
    }

    pub fn offset(&self) -> u64 {
        self.base + self.at as u64
    }

    pub fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], CaptureError> {
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                CaptureError::corrupt(
                    self.offset(),
                    format!(
                        "{what} needs {len} bytes, {} are left",
                        self.bytes.len() - self.at
                    ),
                )
            })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], CaptureError> {
        let bytes = self.take(N, what)?;
        Ok(bytes.try_into().expect("take returns the length asked"))
    }

    pub fn u8(&mut self, what: &str) -> Result<u8, CaptureError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, CaptureError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, CaptureError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn text(&mut self, what: &str) -> Result<String, CaptureError> {
        let at = self.offset();
        let len = self.u32(what)? as usize;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| CaptureError::corrupt(at, format!("{what} is not UTF-8")))
    }

    /// What [`Out::optional_text`] wrote.
    pub fn optional_text(&mut self, what: &str) -> Result<Option<String>, CaptureError> {
        let present = self.u8(what)? != 0;
        let text = self.text(what)?;
        Ok(present.then_some(text))
    }
}

/// A chunk's header, before its compressed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHead {
    pub compressed: u32,
    pub raw: u32,
    pub entries: u32,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl ChunkHead {
    /// The header's fields as the CRC covers them (all but tag and CRC).
    fn fields(&self) -> Out {
        let mut out = Out::default();
        out.u32(self.compressed);
        out.u32(self.raw);
        out.u32(self.entries);
        out.u64(self.first_ns);
        out.u64(self.last_ns);
        out
    }

    /// The CRC-32 of the header's fields and the compressed body.
    pub fn crc(&self, body: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.fields().0);
        hasher.update(body);
        hasher.finalize()
    }

    /// The chunk as written: header, then `body`.
    pub fn encode(&self, body: &[u8]) -> Vec<u8> {
        let mut out = Out::default();
        out.bytes(&CHUNK_TAG);
        out.bytes(&self.fields().0);
        out.u32(self.crc(body));
        out.bytes(body);
        out.0
    }

    /// Reads a header after its tag; returns it and the CRC it claims.
    pub fn decode(input: &mut In<'_>) -> Result<(Self, u32), CaptureError> {
        let head = Self {
            compressed: input.u32("chunk length")?,
            raw: input.u32("chunk length")?,
            entries: input.u32("entry count")?,
            first_ns: input.u64("chunk time")?,
            last_ns: input.u64("chunk time")?,
        };
        Ok((head, input.u32("chunk CRC")?))
    }
}

/// One chunk's line in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexLine {
    /// Where the chunk starts in the file.
    pub offset: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub entries: u32,
}

/// The index (after its tag) and trailer, as written at `offset`.
pub fn encode_index(lines: &[IndexLine], offset: u64) -> Vec<u8> {
    let mut body = Out::default();
    body.u32(len32(lines.len()));
    for line in lines {
        body.u64(line.offset);
        body.u64(line.first_ns);
        body.u64(line.last_ns);
        body.u32(line.entries);
    }
    let mut out = Out::default();
    out.bytes(&INDEX_TAG);
    out.bytes(&body.0);
    out.u32(crc32fast::hash(&body.0));
    out.u64(offset);
    out.bytes(&END_MAGIC);
    out.0
}

/// Bytes an index of `lines` chunks takes, with its tag and trailer.
pub fn index_len(lines: usize) -> u64 {
    (INDEX_TAG.len() + 4 + lines * INDEX_LINE + 4 + TRAILER) as u64
}

/// Decodes the entries of a chunk's uncompressed bytes.
pub fn decode_entries(
    raw: &[u8],
    expected: u32,
    base: u64,
) -> Result<Vec<(Kind, u64, Vec<u8>)>, CaptureError> {
    let mut input = In::new(raw, base);
    let mut entries = Vec::new();
    while !input.is_empty() {
        let kind = Kind::from_code(input.u8("entry kind")?);
        let time = input.u64("entry time")?;
        let len = input.u32("entry length")? as usize;
        entries.push((kind, time, input.take(len, "entry payload")?.to_vec()));
    }
    if entries.len() != expected as usize {
        return Err(CaptureError::corrupt(
            base,
            format!(
                "the chunk says it holds {expected} entries, it holds {}",
                entries.len()
            ),
        ));
    }
    Ok(entries)
}

/// Appends an entry to a chunk's uncompressed bytes.
pub fn encode_entry(out: &mut Vec<u8>, kind: Kind, time_ns: u64, payload: &[u8]) {
    out.push(kind.code());
    out.extend_from_slice(&time_ns.to_le_bytes());
    out.extend_from_slice(&len32(payload.len()).to_le_bytes());
    out.extend_from_slice(payload);
}
