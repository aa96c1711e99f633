//! Capture files (`memtrace record`): what a trace consumed, written as it
//! goes so it can be reported later, elsewhere.
//!
//! A capture is append-only: a header, then independently decodable
//! zstd-compressed chunks of typed entries, each chunk checked by its
//! CRC-32, then an index of the chunks written when recording ends
//! cleanly. A capture cut off anywhere (SIGKILL, a full disk) still reads up
//! to its last whole chunk, and the reader says where it ends. The layout is
//! documented, versioned, in `docs/capture-format.md`.

mod format;
mod header;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use std::io;

pub use format::{In, Kind, Out, FORMAT_VERSION};
pub use header::Header;
pub use reader::{CaptureReader, Chunk, CutOff, Ending, Entry};
pub use writer::{CaptureWriter, Pushed, Written};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("not a memtrace capture: it does not start with the capture magic")]
    NotACapture,
    /// Written by a newer memtrace, in a format this one does not know.
    #[error(
        "the capture is format version {found}, newer than this memtrace reads (up to \
         {supported}): report it with a newer memtrace"
    )]
    Newer { found: u16, supported: u16 },
    #[error("corrupt capture at byte {offset}: {detail}")]
    Corrupt { offset: u64, detail: String },
    #[error("cannot read the capture: {0}")]
    Read(#[source] io::Error),
    #[error("cannot write the capture: {0}")]
    Write(#[source] io::Error),
    #[error("a capture entry of {len} bytes is larger than a chunk holds ({max} bytes)")]
    EntryTooLarge { len: usize, max: usize },
    #[error("a size limit of {limit} bytes cannot hold a capture's header and index ({needed} bytes at least)")]
    LimitTooSmall { limit: u64, needed: u64 },
}

impl CaptureError {
    fn corrupt(offset: u64, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            offset,
            detail: detail.into(),
        }
    }
}
