//! rust_chains: a release build of Rust (no frame pointers, no debug info)
//! whose memory comes from two call chains through `Vec` and `Box`:
//!
//! ```text
//! main -> load_catalog -> filled_vec    24 MiB (a Vec<u8>)
//! main -> build_index  -> filled_box    16 MiB (a Box<[u64]>)
//! ```
//!
//! Both are large enough that glibc's malloc maps them, and both are filled
//! with a non-zero value, so every page is faulted in by the fill.
//!
//! ```text
//! rust_chains [--wait] [--hold SECS]
//! ```
//!
//! With `--wait` it prints `waiting` and waits for a line on stdin before
//! allocating. Then it prints `{"pid":P,"load_catalog":B,"build_index":B}`
//! and `ready`, and sleeps SECS seconds (or until killed) holding it all.

use std::{
    hint::black_box,
    io::{BufRead, Write},
    time::Duration,
};

const MIB: usize = 1 << 20;

#[inline(never)]
fn filled_vec(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    bytes.resize(len, 0x5a);
    black_box(bytes)
}

#[inline(never)]
fn filled_box(words: usize) -> Box<[u64]> {
    black_box(vec![0x1111_2222_3333_4444_u64; words].into_boxed_slice())
}

#[inline(never)]
fn load_catalog() -> Vec<u8> {
    black_box(filled_vec(24 * MIB))
}

#[inline(never)]
fn build_index() -> Box<[u64]> {
    black_box(filled_box(16 * MIB / size_of::<u64>()))
}

fn usage() -> ! {
    eprintln!("usage: rust_chains [--wait] [--hold SECS]");
    std::process::exit(2)
}

fn main() {
    let mut wait = false;
    let mut hold: Option<f64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wait" => wait = true,
            "--hold" => {
                let secs = args.next().and_then(|text| text.parse::<f64>().ok());
                match secs {
                    Some(secs) if secs >= 0.0 && secs.is_finite() => hold = Some(secs),
                    _ => usage(),
                }
            }
            _ => usage(),
        }
    }
    let mut stdout = std::io::stdout();
    if wait {
        writeln!(stdout, "waiting").and_then(|()| stdout.flush()).ok();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).ok();
    }

    let catalog = load_catalog();
    let index = build_index();

    writeln!(
        stdout,
        "{{\"pid\":{},\"load_catalog\":{},\"build_index\":{}}}\nready",
        std::process::id(),
        catalog.len(),
        size_of_val(&*index),
    )
    .and_then(|()| stdout.flush())
    .ok();
    match hold {
        Some(secs) => std::thread::sleep(Duration::from_secs_f64(secs)),
        None => loop {
            std::thread::park();
        },
    }
    black_box((catalog, index));
}
