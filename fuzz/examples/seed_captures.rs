//! Writes the `capture_reader` seeds: small captures written by memtrace's
//! own writer, ended cleanly, cut off inside a chunk, and stopped by a size
//! limit, so the fuzzer starts from real layouts.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_captures`

use std::{fs, io, path::Path};

use memtrace::capture::{CaptureWriter, Header, Kind};

fn main() -> io::Result<()> {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/capture_reader");
    fs::create_dir_all(&out)?;
    let complete = capture(None, true);
    fs::write(out.join("complete"), &complete)?;
    fs::write(out.join("cut_off"), &complete[..complete.len() * 2 / 3])?;
    fs::write(out.join("without_index"), capture(None, false))?;
    fs::write(out.join("size_limit"), capture(Some(900), true))?;
    Ok(())
}

/// A capture of a few notes in three chunks.
fn capture(limit: Option<u64>, finish: bool) -> Vec<u8> {
    let header = Header::of_this_machine(vec!["memtrace".into(), "record".into()]);
    let mut bytes = Vec::new();
    let mut writer = CaptureWriter::create(&mut bytes, &header, limit).expect("in memory");
    for time in 0..3u64 {
        let text = format!("note {time}: {}", "resident ".repeat(40));
        writer
            .push(Kind::Note, time * 1_000_000_000, text.as_bytes())
            .expect("in memory");
        writer.flush_chunk().expect("in memory");
    }
    if finish {
        writer.finish().expect("in memory");
    }
    bytes
}
