//! What the traced program runs on: its Go toolchain and runtime settings,
//! and its malloc implementation.
//!
//! The verdict's advice depends on it. Freed Go heap leaves RSS according to
//! `GOGC`, `GOMEMLIMIT` and `GODEBUG=madvdontneed`; freed C heap according
//! to the allocator (glibc keeps it in arenas, jemalloc and mimalloc purge
//! on timers). [`detect`] gathers all of it for a live process; the pieces
//! are pure functions of bytes so they can be tested and fuzzed on their own.
//!
//! - [`parse_go_buildinfo`]: Go version and main module of an executable;
//! - [`read_go_settings`] / [`parse_go_settings`]: the Go variables of a
//!   process's environment, and nothing else of it;
//! - [`allocators`] / [`allocator_symbols`]: allocators from mapped library
//!   names and from an executable's own symbols.

mod alloc;
mod gobuild;
mod goenv;

use std::fs::File;
use std::io::Read;

pub use alloc::{allocator_symbols, allocators, Allocator};
pub use gobuild::{parse_go_buildinfo, GoBuildInfo};
pub use goenv::{parse_go_settings, read_go_settings, GoSettings};

/// Executables larger than this are not read: [`detect`] then reports what
/// the mappings alone tell.
pub const MAX_EXECUTABLE_BYTES: u64 = 256 << 20;

/// What a process runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// The Go build information, if the executable is a Go program.
    pub go: Option<GoBuildInfo>,
    /// The Go variables of its environment; read only for Go programs.
    pub go_settings: GoSettings,
    /// The allocators it maps or links in, sorted.
    pub allocators: Vec<Allocator>,
}

impl RuntimeInfo {
    /// As `KEY=VALUE` entries separated by NULs (like an environment
    /// block), for /proc's tape: a capture keeps the facts, not the
    /// executable they were read from.
    pub fn to_entries(&self) -> Vec<u8> {
        let mut entries: Vec<String> = Vec::new();
        if let Some(go) = &self.go {
            entries.push(format!("go.version={}", go.version));
            entries.extend(go.path.iter().map(|path| format!("go.path={path}")));
            entries.extend(go.module.iter().map(|module| format!("go.module={module}")));
        }
        let settings = &self.go_settings;
        for (key, value) in [
            ("GOGC", &settings.gogc),
            ("GOMEMLIMIT", &settings.gomemlimit),
            ("GODEBUG", &settings.godebug),
        ] {
            entries.extend(value.iter().map(|value| format!("{key}={value}")));
        }
        entries.extend(
            self.allocators
                .iter()
                .map(|allocator| format!("allocator={allocator}")),
        );
        entries.join("\0").into_bytes()
    }

    /// What [`Self::to_entries`] wrote; entries it does not know are
    /// skipped.
    pub fn from_entries(bytes: &[u8]) -> Self {
        let mut info = Self::default();
        let mut go = GoBuildInfo {
            version: String::new(),
            path: None,
            module: None,
        };
        for entry in bytes.split(|&byte| byte == 0) {
            let entry = String::from_utf8_lossy(entry);
            let Some((key, value)) = entry.split_once('=') else {
                continue;
            };
            let value = value.to_owned();
            match key {
                "go.version" => go.version = value,
                "go.path" => go.path = Some(value),
                "go.module" => go.module = Some(value),
                "GOGC" => info.go_settings.gogc = Some(value),
                "GOMEMLIMIT" => info.go_settings.gomemlimit = Some(value),
                "GODEBUG" => info.go_settings.godebug = Some(value),
                "allocator" => info
                    .allocators
                    .extend(Allocator::ALL.into_iter().find(|a| a.to_string() == value)),
                _ => {}
            }
        }
        info.go = (!go.version.is_empty()).then_some(go);
        info
    }
}

/// Finds out what process `pid` runs on, from its executable (through
/// `/proc/PID/exe`, so it works across mount namespaces), its environment
/// and `mapped_paths`, the file names of its mappings.
///
/// Blocking: reads the whole executable, up to [`MAX_EXECUTABLE_BYTES`].
/// Never fails: whatever cannot be read (the process exited, the executable
/// is too large) just leaves its part empty.
pub fn detect(pid: u32, mapped_paths: &[String]) -> RuntimeInfo {
    let executable = read_executable(pid);
    let go = executable.as_deref().and_then(parse_go_buildinfo);
    let go_settings = match go {
        Some(_) => read_go_settings(pid).unwrap_or_default(),
        None => GoSettings::default(),
    };
    let mut allocators = allocators(mapped_paths.iter().map(String::as_str));
    if let Some(executable) = &executable {
        allocators.extend(allocator_symbols(executable));
        allocators.sort_unstable();
        allocators.dedup();
    }
    RuntimeInfo {
        go,
        go_settings,
        allocators,
    }
}

/// The bytes of the process's executable, unless it is unreadable or larger
/// than [`MAX_EXECUTABLE_BYTES`].
fn read_executable(pid: u32) -> Option<Vec<u8>> {
    let file = File::open(format!("/proc/{pid}/exe")).ok()?;
    let length = file.metadata().ok()?.len();
    if length > MAX_EXECUTABLE_BYTES {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(length).ok()?);
    // The file may grow while it is read; the limit still holds.
    file.take(MAX_EXECUTABLE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    use memtrace_tests::running::Running;

    use object::{Object, ObjectSection, ObjectSymbol};

    /// A C program built from `source`; returns the temporary directory
    /// (to keep it alive) and the program.
    fn c_program(source: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.c"), source).unwrap();
        let output = Command::new("gcc")
            .current_dir(dir.path())
            .args(["-O1", "-o", "program", "main.c"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let program = dir.path().join("program");
        (dir, program)
    }

    /// A real Go program: the goheap test workload (module
    /// `memtrace.test/workloads`, built offline with the local toolchain).
    fn go_program() -> &'static Path {
        &memtrace_tests::workloads::ensure_built().unwrap().goheap
    }

    #[test]
    fn a_real_go_binary_has_its_version_and_module() {
        let info = parse_go_buildinfo(&std::fs::read(go_program()).unwrap()).unwrap();
        assert!(info.version.starts_with("go1.19."), "{info:?}");
        assert_eq!(info.path.as_deref(), Some("memtrace.test/workloads/goheap"));
        assert_eq!(info.module.as_deref(), Some("memtrace.test/workloads"));
    }

    /// A Go 1.19 binary rewritten to the pre-1.18 layout: the header points
    /// at the `runtime.buildVersion` and `runtime.modinfo` string headers,
    /// which the linker still emits.
    #[test]
    fn a_real_go_binary_in_the_pointer_format_gives_the_same_answer() {
        let mut elf = std::fs::read(go_program()).unwrap();
        let inline = parse_go_buildinfo(&elf).unwrap();

        let (version_at, modinfo_at, header_at) = {
            let file = object::File::parse(&*elf).unwrap();
            let symbol = |name: &str| {
                file.symbols()
                    .find(|symbol| symbol.name() == Ok(name))
                    .unwrap()
                    .address()
            };
            let section = file.section_by_name(".go.buildinfo").unwrap();
            (
                symbol("runtime.buildVersion"),
                symbol("runtime.modinfo"),
                section.file_range().unwrap().0 as usize,
            )
        };

        elf[header_at + 15] = 0; // little-endian, pointers
        elf[header_at + 16..header_at + 24].copy_from_slice(&version_at.to_le_bytes());
        elf[header_at + 24..header_at + 32].copy_from_slice(&modinfo_at.to_le_bytes());
        assert_eq!(parse_go_buildinfo(&elf), Some(inline));
    }

    /// Truncated anywhere, or with its header bytes changed, a real Go
    /// binary gives an answer or none, never a panic.
    #[test]
    fn damaged_real_go_binaries_never_panic() {
        let elf = std::fs::read(go_program()).unwrap();
        let header_at = {
            let file = object::File::parse(&*elf).unwrap();
            let section = file.section_by_name(".go.buildinfo").unwrap();
            section.file_range().unwrap().0 as usize
        };
        for cut in (0..elf.len())
            .step_by(elf.len() / 500)
            .chain(header_at..header_at + 200)
        {
            let _ = parse_go_buildinfo(&elf[..cut]);
        }
        for at in header_at..header_at + 64 {
            for value in [0, 1, 2, 4, 8, 0x7f, 0x80, 0xff] {
                let mut damaged = elf.clone();
                damaged[at] = value;
                let _ = parse_go_buildinfo(&damaged);
            }
        }
    }

    #[test]
    fn a_c_binary_is_not_go_and_uses_glibc() {
        let (_dir, program) =
            c_program("#include <stdlib.h>\nint main(void) { free(malloc(1)); return 0; }\n");
        let elf = std::fs::read(program).unwrap();
        assert_eq!(parse_go_buildinfo(&elf), None);
        // malloc is imported, not defined: no allocator of its own.
        assert_eq!(allocator_symbols(&elf), []);
    }

    #[test]
    fn a_c_binary_defining_mallocx_links_jemalloc() {
        let (_dir, program) = c_program(
            "#include <stddef.h>\n\
             void *mallocx(size_t size, int flags) { (void)size; (void)flags; return 0; }\n\
             int main(void) { return mallocx(1, 0) != 0; }\n",
        );
        let elf = std::fs::read(program).unwrap();
        assert_eq!(allocator_symbols(&elf), [Allocator::Jemalloc]);
    }

    fn mapped_paths(pid: u32) -> Vec<String> {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap()
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5).map(str::to_owned))
            .collect()
    }

    #[test]
    fn a_live_go_process_is_detected_with_its_settings_only() {
        const SECRET: &str = "s3cr3t-token-value";
        let mut running = Running::start(
            go_program(),
            &["-alloc-mib", "1", "-hold", "30s"],
            &[
                ("GOGC", "400"),
                ("GODEBUG", "madvdontneed=0"),
                ("SERVICE_PASSWORD", SECRET),
            ],
        );
        // Wait until the runtime is up and running main.
        running.wait_for("allocated", Duration::from_secs(30));

        let pid = running.pid();
        let info = detect(pid, &mapped_paths(pid));
        let go = info.go.as_ref().unwrap();
        assert!(go.version.starts_with("go1.19."), "{go:?}");
        assert_eq!(go.module.as_deref(), Some("memtrace.test/workloads"));
        assert_eq!(go.path.as_deref(), Some("memtrace.test/workloads/goheap"));
        assert_eq!(info.go_settings.gogc.as_deref(), Some("400"));
        assert_eq!(info.go_settings.gomemlimit, None);
        assert_eq!(info.go_settings.madvdontneed(), Some(false));
        // Static, CGO_ENABLED=0: Go's own allocator, no malloc at all.
        assert_eq!(info.allocators, []);
        assert!(!format!("{info:?}").contains(SECRET));
    }

    #[test]
    fn a_live_c_process_is_detected_by_its_mappings() {
        let running = Running::start("sleep", &["30"], &[("GOGC", "10")]);
        let pid = running.pid();
        // sleep maps libc once the dynamic loader has run.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut maps = mapped_paths(pid);
        while !maps.iter().any(|path| path.contains("libc.so")) {
            assert!(Instant::now() < deadline, "libc never mapped");
            std::thread::sleep(Duration::from_millis(10));
            maps = mapped_paths(pid);
        }
        let info = detect(pid, &maps);
        assert_eq!(
            info,
            RuntimeInfo {
                go: None,
                go_settings: GoSettings::default(),
                allocators: vec![Allocator::Glibc],
            }
        );
    }

    #[test]
    fn a_missing_process_yields_only_what_the_mappings_say() {
        let info = detect(u32::MAX, &["/usr/lib/libjemalloc.so.2".to_owned()]);
        assert_eq!(
            info,
            RuntimeInfo {
                allocators: vec![Allocator::Jemalloc],
                ..RuntimeInfo::default()
            }
        );
    }

    #[test]
    fn the_facts_read_back_as_written() {
        let info = RuntimeInfo {
            go: Some(GoBuildInfo {
                version: "go1.22.1".into(),
                path: Some("example.com/server".into()),
                module: None,
            }),
            go_settings: GoSettings {
                gogc: Some("200".into()),
                gomemlimit: None,
                godebug: Some("madvdontneed=1,gctrace=1".into()),
            },
            allocators: vec![Allocator::Glibc, Allocator::Jemalloc],
        };
        assert_eq!(RuntimeInfo::from_entries(&info.to_entries()), info);
        assert_eq!(
            RuntimeInfo::from_entries(&RuntimeInfo::default().to_entries()),
            RuntimeInfo::default()
        );
    }
}
