//! Writing profiles in the gzipped form pprof tools read.

use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::proto::Profile;

/// Encodes `profile` as gzipped protobuf, the form `go tool pprof` reads and
/// `/debug/pprof/heap` serves.
pub fn encode(profile: &Profile) -> Vec<u8> {
    let mut gzipped = Vec::new();
    write_to(profile, &mut gzipped).expect("writing into a Vec cannot fail");
    gzipped
}

/// Writes `profile` to `writer` as gzipped protobuf, like [`encode`].
///
/// # Errors
///
/// Any error `writer` returns.
pub fn write_to(profile: &Profile, writer: impl Write) -> io::Result<()> {
    let mut gzip = GzEncoder::new(writer, Compression::default());
    gzip.write_all(&profile.encode_to_vec())?;
    gzip.finish()?;
    Ok(())
}
