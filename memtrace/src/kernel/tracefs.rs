//! Where the classic tracepoints' fields are on the running kernel, from
//! their `format` files.
//!
//! A classic tracepoint's record is laid out by the kernel version that
//! defines it: a fixed `comm[16]` or a `__data_loc` string before the field
//! memtrace wants moves it, and fields come and go between versions (6.1's
//! `sched_process_exit` has no `group_dead`, its `mark_victim` no RSS). So
//! the offsets are read here and handed to the programs, never assumed.

use std::path::Path;

use memtrace_common::{KernelLayout, FIELD_ABSENT};

use super::KernelError;

/// A field of a tracepoint's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The field `name` in the text of a `format` file, if the tracepoint has
/// one. Lines look like
/// `field:pid_t pid;<TAB>offset:24;<TAB>size:4;<TAB>signed:1;`.
pub fn find_field(format: &str, name: &str) -> Option<Field> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        // The name is the declaration's last word, less any array suffix.
        let declared = declaration.rsplit([' ', '\t']).next()?;
        let declared = declared.split('[').next()?;
        if declared != name {
            return None;
        }
        let mut number = |key: &str| -> Option<u32> {
            parts
                .find_map(|part| part.strip_prefix(key))?
                .trim()
                .parse()
                .ok()
        };
        let offset = number("offset:")?;
        let size = number("size:")?;
        Some(Field { offset, size })
    })
}

/// The tracepoint fields the programs read, from the format files under
/// `tracefs` (the structure members are for BTF to say). A field every
/// kernel has is required (its absence means the tracepoint is not what
/// memtrace expects); one that only newer kernels have may be absent.
pub fn tracepoint_layout(tracefs: &Path) -> Result<KernelLayout, KernelError> {
    let format = |category: &str, name: &str| -> Result<String, KernelError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        std::fs::read_to_string(&path).map_err(|err| KernelError::TracepointFormat {
            tracepoint: format!("{category}:{name}"),
            detail: format!("cannot read {}: {err}", path.display()),
        })
    };
    let exit = format("sched", "sched_process_exit")?;
    let newtask = format("task", "task_newtask")?;
    let oom = format("oom", "mark_victim")?;
    // Only the per-syscall hook reads it, and only that hook needs it.
    let syscall_exit = format("syscalls", "sys_exit_mmap").unwrap_or_default();
    let required =
        |text: &str, tracepoint: &str, name: &str, size: u32| match find_field(text, name) {
            Some(field) if field.size == size => Ok(field.offset),
            Some(field) => Err(KernelError::TracepointFormat {
                tracepoint: tracepoint.to_owned(),
                detail: format!("field {name} is {} bytes, expected {size}", field.size),
            }),
            None => Err(KernelError::TracepointFormat {
                tracepoint: tracepoint.to_owned(),
                detail: format!("it has no field {name}"),
            }),
        };
    let optional = |text: &str, name: &str, size: u32| {
        find_field(text, name)
            .filter(|field| field.size == size)
            .map_or(FIELD_ABSENT, |field| field.offset)
    };
    Ok(KernelLayout {
        exit_group_dead: optional(&exit, "group_dead", 1),
        newtask_pid: required(&newtask, "task:task_newtask", "pid", 4)?,
        newtask_clone_flags: required(&newtask, "task:task_newtask", "clone_flags", 8)?,
        oom_pid: required(&oom, "oom:mark_victim", "pid", 4)?,
        oom_anon_rss: optional(&oom, "anon_rss", 8),
        oom_file_rss: optional(&oom, "file_rss", 8),
        oom_shmem_rss: optional(&oom, "shmem_rss", 8),
        task_pagefault_disabled: FIELD_ABSENT,
        syscall_exit_ret: optional(&syscall_exit, "ret", 8),
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sched:sched_process_exit` as Linux 6.18 lays it out.
    const EXIT_6_18: &str = "name: sched_process_exit\nID: 318\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:int prio;\toffset:28;\tsize:4;\tsigned:1;\n\
\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\n\
print fmt: \"comm=%s pid=%d prio=%d group_dead=%s\"";

    /// `oom:mark_victim` as Linux 6.1 lays it out: no RSS fields.
    const OOM_6_1: &str = "name: mark_victim\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";

    #[test]
    fn fields_are_found_by_name_with_their_offsets() {
        assert_eq!(
            find_field(EXIT_6_18, "group_dead"),
            Some(Field {
                offset: 32,
                size: 1
            })
        );
        assert_eq!(
            find_field(EXIT_6_18, "pid"),
            Some(Field {
                offset: 24,
                size: 4
            })
        );
        assert_eq!(
            find_field(EXIT_6_18, "comm"),
            Some(Field {
                offset: 8,
                size: 16
            })
        );
        // `common_pid` is not `pid`.
        assert_eq!(
            find_field(OOM_6_1, "pid"),
            Some(Field { offset: 8, size: 4 })
        );
        assert_eq!(find_field(OOM_6_1, "anon_rss"), None);
    }

    #[test]
    fn garbage_finds_nothing() {
        for text in [
            "",
            "field:",
            "field:int pid;\toffset:x;\tsize:4;",
            ";;;\n\u{0}",
        ] {
            assert_eq!(find_field(text, "pid"), None, "{text:?}");
        }
    }

    #[test]
    fn this_kernels_formats_are_read() {
        // The integration machines mount tracefs (memtrace mounts it too).
        let tracefs = Path::new("/sys/kernel/tracing");
        if !tracefs.join("events").is_dir() {
            super::super::preflight::ensure_tracefs().expect("tracefs");
        }
        let fields = tracepoint_layout(tracefs).expect("this kernel's formats");
        assert_ne!(fields.newtask_pid, FIELD_ABSENT);
        assert_ne!(fields.newtask_clone_flags, FIELD_ABSENT);
        assert_ne!(fields.oom_pid, FIELD_ABSENT);
    }
}
