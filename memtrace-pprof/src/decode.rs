//! Reading profiles from untrusted bytes.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use prost::Message;

use crate::proto::Profile;
use crate::validate::validate;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Bounds on what [`decode`] accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest protobuf accepted, in bytes, after decompression.
    ///
    /// Guards against gzip bombs: a few KiB of gzip can expand to gigabytes.
    pub max_decompressed_bytes: u64,
}

impl Default for DecodeLimits {
    /// 256 MiB: well above real heap profiles, well below the memory of the
    /// machines memtrace runs on.
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Why [`decode`] rejected its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is neither gzip nor a protobuf message.
    #[error("not a pprof profile: the input is neither gzip nor protobuf")]
    NotGzipOrProtobuf,
    /// The protobuf (after decompression) is larger than the limit.
    #[error("profile is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },
    /// The input is damaged: a broken gzip stream, or gzip around something
    /// that is not a protobuf message.
    #[error("malformed profile: {0}")]
    Malformed(String),
    /// The input is a well-formed protobuf, but not a consistent profile.
    #[error("invalid profile: {0}")]
    Invalid(String),
}

/// Decodes a profile from gzipped or raw protobuf bytes and checks that it
/// is consistent.
///
/// The two forms are told apart by the gzip magic number. A profile that
/// passes is safe to read: every string index is in range, every id it
/// refers to exists, and every sample has one value per sample type.
///
/// This is a pure function of its arguments: no I/O, no global state.
///
/// # Errors
///
/// * [`DecodeError::NotGzipOrProtobuf`] for empty input, or input that is
///   neither gzip nor protobuf;
/// * [`DecodeError::TooLarge`] when the protobuf, decompressed, would exceed
///   `limits.max_decompressed_bytes`;
/// * [`DecodeError::Malformed`] for a broken gzip stream or gzip around
///   something that is not protobuf;
/// * [`DecodeError::Invalid`] for a protobuf that is not a consistent
///   profile.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Profile, DecodeError> {
    let profile = if bytes.starts_with(&GZIP_MAGIC) {
        let protobuf = gunzip(bytes, limits.max_decompressed_bytes)?;
        Profile::decode(protobuf.as_slice())
            .map_err(|err| DecodeError::Malformed(format!("gzip content: {err}")))?
    } else {
        // Go's pprof rejects empty input too, though it is a valid (empty)
        // protobuf message.
        if bytes.is_empty() {
            return Err(DecodeError::NotGzipOrProtobuf);
        }
        if bytes.len() as u64 > limits.max_decompressed_bytes {
            return Err(DecodeError::TooLarge {
                limit: limits.max_decompressed_bytes,
            });
        }
        Profile::decode(bytes).map_err(|_| DecodeError::NotGzipOrProtobuf)?
    };
    validate(&profile).map_err(DecodeError::Invalid)?;
    Ok(profile)
}

/// Decompresses `gzipped`, refusing to produce more than `limit` bytes.
fn gunzip(gzipped: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut protobuf = Vec::new();
    // Multi-member streams are accepted, as Go's gzip reader does. Reading
    // one byte past the limit tells "exactly at the limit" from "over it"
    // while never inflating more than limit + 1 bytes, however much the
    // input claims.
    MultiGzDecoder::new(gzipped)
        .take(limit.saturating_add(1))
        .read_to_end(&mut protobuf)
        .map_err(|err| DecodeError::Malformed(format!("gzip: {err}")))?;
    if protobuf.len() as u64 > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(protobuf)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;
    use crate::{encode, LineSpec, LocationSpec, MappingSpec, ProfileBuilder};

    fn sample_profile() -> Profile {
        let mut builder = ProfileBuilder::new(&[("resident_space", "bytes"), ("faults", "count")]);
        let binary = builder.mapping(MappingSpec {
            start: 0x1000,
            limit: 0x9000,
            file: "/bin/app",
            build_id: "b1d",
            has_functions: true,
            ..MappingSpec::default()
        });
        let leaf = builder
            .location(LocationSpec {
                address: 0x1234,
                mapping: Some(binary),
                lines: &[LineSpec {
                    function: "main.allocate",
                    file: Some("main.go"),
                    line: Some(10),
                    ..LineSpec::default()
                }],
            })
            .unwrap();
        builder.sample(&[leaf], &[4096, 1], &[]).unwrap();
        builder.time_nanos(1).comment("test");
        builder.build()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(bytes).unwrap();
        gzip.finish().unwrap()
    }

    fn decode_default(bytes: &[u8]) -> Result<Profile, DecodeError> {
        decode(bytes, &DecodeLimits::default())
    }

    #[test]
    fn round_trips_through_gzip() {
        let profile = sample_profile();
        let bytes = encode(&profile);
        assert!(bytes.starts_with(&GZIP_MAGIC));
        assert_eq!(decode_default(&bytes), Ok(profile));
    }

    #[test]
    fn reads_raw_protobuf() {
        let profile = sample_profile();
        assert_eq!(decode_default(&profile.encode_to_vec()), Ok(profile));
    }

    #[test]
    fn reads_multi_member_gzip() {
        // Go's gzip reader accepts concatenated gzip members; so do we.
        let protobuf = sample_profile().encode_to_vec();
        let (head, tail) = protobuf.split_at(protobuf.len() / 2);
        let bytes = [gzip(head), gzip(tail)].concat();
        assert_eq!(decode_default(&bytes), Ok(sample_profile()));
    }

    #[test]
    fn garbage_is_neither_gzip_nor_protobuf() {
        for garbage in [&b"hello, this is not a profile"[..], b"", &[0xff; 64]] {
            assert_eq!(
                decode_default(garbage),
                Err(DecodeError::NotGzipOrProtobuf),
                "{garbage:?}"
            );
        }
        assert_eq!(
            DecodeError::NotGzipOrProtobuf.to_string(),
            "not a pprof profile: the input is neither gzip nor protobuf"
        );
    }

    #[test]
    fn truncated_gzip_is_malformed() {
        let bytes = encode(&sample_profile());
        let err = decode_default(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("malformed profile: gzip: "),
            "{err}"
        );
    }

    #[test]
    fn gzip_around_something_else_is_malformed() {
        let err = decode_default(&gzip(b"hello, this is not a profile")).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        // 16 MiB of zeros compresses to about 16 KiB.
        let bomb = gzip(&vec![0; 16 << 20]);
        let limits = DecodeLimits {
            max_decompressed_bytes: 1 << 20,
        };
        assert_eq!(
            decode(&bomb, &limits),
            Err(DecodeError::TooLarge { limit: 1 << 20 })
        );
        assert_eq!(
            DecodeError::TooLarge { limit: 1 << 20 }.to_string(),
            "profile is larger than the limit of 1048576 bytes"
        );
    }

    #[test]
    fn gigabyte_bomb_stops_at_the_default_limit() {
        // 1 GiB of zeros as 1024 gzip members of 1 MiB each: about 1 MiB of
        // input, cheap to build.
        let member = gzip(&vec![0; 1 << 20]);
        let bomb = member.repeat(1024);
        assert_eq!(
            decode_default(&bomb),
            Err(DecodeError::TooLarge { limit: 256 << 20 })
        );
    }

    #[test]
    fn limit_is_inclusive_for_gzip_and_raw() {
        let profile = sample_profile();
        let protobuf = profile.encode_to_vec();
        let exact = DecodeLimits {
            max_decompressed_bytes: protobuf.len() as u64,
        };
        let one_less = DecodeLimits {
            max_decompressed_bytes: protobuf.len() as u64 - 1,
        };
        for bytes in [encode(&profile), protobuf] {
            assert_eq!(decode(&bytes, &exact).as_ref(), Ok(&profile));
            assert!(matches!(
                decode(&bytes, &one_less),
                Err(DecodeError::TooLarge { .. })
            ));
        }
    }

    /// Decodes `profile` after `damage`, expecting it to be rejected as
    /// invalid with a message containing `expected`.
    fn assert_invalid(damage: impl FnOnce(&mut Profile), expected: &str) {
        let mut profile = sample_profile();
        damage(&mut profile);
        match decode_default(&encode(&profile)) {
            Err(DecodeError::Invalid(message)) => {
                assert!(message.contains(expected), "{message:?} lacks {expected:?}")
            }
            other => panic!("expected Invalid({expected:?}), got {other:?}"),
        }
    }

    #[test]
    fn sample_with_wrong_value_count_is_invalid() {
        assert_invalid(
            |p| p.sample[0].value.push(7),
            "sample 0 has 3 values but the profile has 2 sample types",
        );
        let err = DecodeError::Invalid("sample 0 has 3 values".to_owned());
        assert_eq!(err.to_string(), "invalid profile: sample 0 has 3 values");
    }

    #[test]
    fn out_of_range_string_index_is_invalid() {
        assert_invalid(
            |p| p.function[0].name = 999,
            "function 1 name is string 999, but the string table has",
        );
        assert_invalid(
            |p| p.sample_type[1].unit = -1,
            "sample type unit is string -1",
        );
        assert_invalid(|p| p.comment.push(1 << 40), "comment is string");
    }

    #[test]
    fn string_table_must_start_empty() {
        assert_invalid(
            |p| p.string_table[0] = "x".to_owned(),
            "does not start with the empty string",
        );
        assert_invalid(
            |p| p.string_table.clear(),
            "does not start with the empty string",
        );
    }

    #[test]
    fn dangling_ids_are_invalid() {
        assert_invalid(
            |p| p.sample[0].location_id.push(42),
            "sample 0 refers to location 42",
        );
        assert_invalid(
            |p| p.location[0].line[0].function_id = 42,
            "location 1 refers to function 42",
        );
        assert_invalid(
            |p| p.location[0].mapping_id = 42,
            "location 1 refers to mapping 42",
        );
    }

    #[test]
    fn zero_and_repeated_ids_are_invalid() {
        assert_invalid(|p| p.mapping[0].id = 0, "a mapping has id 0");
        assert_invalid(
            |p| {
                let copy = p.function[0];
                p.function.push(copy);
            },
            "two functions have id 1",
        );
    }
}
