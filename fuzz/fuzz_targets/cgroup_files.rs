//! A cgroup's memory.stat (v1 and v2) and a process's /proc/PID/cgroup,
//! with the container id read from the path it names: any bytes parse or
//! fail without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::proc::{
    container_id_in_path, parse_cgroup_membership, parse_memory_stat_v1, parse_memory_stat_v2,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_memory_stat_v2(&text);
    let _ = parse_memory_stat_v1(&text, 0);
    if let Some(path) = parse_cgroup_membership(&text) {
        let _ = container_id_in_path(&path);
    }
    let _ = container_id_in_path(&text);
});
