//! What naming learns, so a capture can carry it to another machine.
//!
//! A capture is reported later, often where the traced binaries are not:
//! a laptop, a rebuilt host, a container image long gone. While recording,
//! the [`Library`](super::Library) tells the recorder every code file it
//! identifies (by build id, or by the file itself) and every offset it
//! names; `memtrace report` recalls them before playing, so stacks are named
//! from what the recording machine's own files and debug information said,
//! and a file at the same path on the reporting machine is read only when
//! it is the same file.

use crate::capture::{CaptureError, In, Kind, Out};

use super::{embedded::Piece, Function, Module};

/// One thing the library learnt while recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// The file process `pid` knows as `module.path`, identified by its
    /// build id or, without one, by its identity on the recording machine;
    /// with whether the recording could read it (stacks through code it
    /// could not read end for that reason, wherever they are reported).
    File { pid: u32, module: Module },
    /// The functions at `offset` of the file known as `key` (its build id
    /// or identity), innermost first.
    Names {
        key: String,
        offset: u64,
        functions: Vec<Function>,
    },
    /// A piece of what naming reads of a code file, embedded
    /// (`record --embed-debug`).
    Embedded(Piece),
}

const FILE: u8 = 0;
const NAMES: u8 = 1;

/// Inlined functions one offset may stand for, at most, when read back: a
/// bound on what a hostile capture makes the reader allocate.
const MAX_FUNCTIONS: u32 = 1024;

impl Learned {
    /// The kind of capture entry it is written as.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Embedded(_) => Kind::Debug,
            Self::File { .. } | Self::Names { .. } => Kind::Symbol,
        }
    }

    /// What a capture entry of `kind` says was learnt: `None` for the
    /// kinds that do not say.
    pub fn read(kind: Kind, payload: &[u8], base: u64) -> Option<Result<Self, CaptureError>> {
        match kind {
            Kind::Symbol => Some(Self::decode(payload, base)),
            Kind::Debug => Some(Piece::decode(payload, base).map(Self::Embedded)),
            _ => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Out::default();
        match self {
            Self::Embedded(piece) => return piece.encode(),
            Self::File { pid, module } => {
                out.bytes(&[FILE]);
                out.u32(*pid);
                out.text(&module.path);
                out.optional_text(module.build_id.as_deref());
                out.optional_text(module.identity.as_deref());
                out.bytes(&[u8::from(module.readable)]);
            }
            Self::Names {
                key,
                offset,
                functions,
            } => {
                out.bytes(&[NAMES]);
                out.text(key);
                out.u64(*offset);
                out.u32(u32::try_from(functions.len()).unwrap_or(u32::MAX));
                for function in functions {
                    out.text(&function.name);
                    out.optional_text(function.file.as_deref());
                    out.bytes(&[u8::from(function.line.is_some())]);
                    out.u32(function.line.unwrap_or(0));
                }
            }
        }
        out.0
    }

    /// Reads back a symbol entry [`Learned::encode`] wrote; `base` is the
    /// payload's offset, for errors.
    fn decode(payload: &[u8], base: u64) -> Result<Self, CaptureError> {
        let mut input = In::new(payload, base);
        let learned = match input.u8("what was learnt")? {
            FILE => Self::File {
                pid: input.u32("pid")?,
                module: Module {
                    path: input.text("path")?,
                    build_id: input.optional_text("build id")?,
                    identity: input.optional_text("file identity")?,
                    readable: input.u8("readable")? != 0,
                },
            },
            NAMES => {
                let key = input.text("file key")?;
                let offset = input.u64("offset")?;
                let count = input.u32("function count")?;
                if count > MAX_FUNCTIONS {
                    return Err(CaptureError::Corrupt {
                        offset: input.offset(),
                        detail: format!("{count} functions at one offset"),
                    });
                }
                let functions = (0..count)
                    .map(|_| {
                        let name = input.text("function name")?;
                        let file = input.optional_text("source file")?;
                        let has_line = input.u8("line flag")? != 0;
                        let line = input.u32("line")?;
                        Ok(Function {
                            name,
                            file,
                            line: has_line.then_some(line),
                        })
                    })
                    .collect::<Result<_, CaptureError>>()?;
                Self::Names {
                    key,
                    offset,
                    functions,
                }
            }
            other => {
                return Err(CaptureError::Corrupt {
                    offset: base,
                    detail: format!("unknown symbol entry {other}"),
                })
            }
        };
        Ok(learned)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::symbolize::embedded::Part;

    #[test]
    fn what_is_learnt_reads_back_as_written() {
        let learned = [
            Learned::File {
                pid: 42,
                module: Module {
                    path: "/usr/lib/libc.so.6".into(),
                    build_id: Some("0a1b2c".into()),
                    identity: None,
                    readable: true,
                },
            },
            Learned::File {
                pid: 43,
                module: Module {
                    path: "/srv/goserver".into(),
                    build_id: None,
                    identity: Some("file 803:1a2b 4096 1700000000.5".into()),
                    readable: false,
                },
            },
            Learned::Names {
                key: "0a1b2c".into(),
                offset: 0x2f1a0,
                functions: vec![
                    Function {
                        name: "inlined_helper".into(),
                        file: Some("src/helper.c".into()),
                        line: Some(12),
                    },
                    Function {
                        name: "make_buffer".into(),
                        file: None,
                        line: None,
                    },
                ],
            },
            Learned::Embedded(Piece {
                key: "0a1b2c".into(),
                part: Part::DebugFile,
                size: 3,
                offset: 0,
                bytes: vec![1, 2, 3],
            }),
        ];
        for learned in learned {
            let read = Learned::read(learned.kind(), &learned.encode(), 0);
            assert_eq!(read.unwrap().unwrap(), learned);
        }
    }

    proptest! {
        /// Symbol entries come from a file anyone may hand over.
        #[test]
        fn any_bytes_decode_or_fail_without_panicking(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Learned::read(Kind::Symbol, &payload, 0);
        }
    }
}
