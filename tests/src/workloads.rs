//! Builds and locates the workload programs in `tests/workloads/`.
//!
//! Integration tests and the benchmark harness run small programs whose
//! memory behaviour is known exactly (see `tests/workloads/README.md` for
//! each program's command line and output). [`ensure_built`] compiles them
//! with gcc and Go into [`build_dir`] and returns their paths:
//!
//! ```no_run
//! let workloads = memtrace_tests::workloads::ensure_built()?;
//! let status = std::process::Command::new(&workloads.memops)
//!     .args(["map", "A", "64M", ";", "touch", "A", "0", "64M"])
//!     .status()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Building happens once per process, and concurrent test processes
//! serialise on a lock file in the build directory. Each build step is
//! skipped when its outputs are newer than its sources and were made by the
//! same commands, so only the first caller after a change pays for it.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

/// Paths of the built workload programs.
#[derive(Debug)]
pub struct Workloads {
    /// Interpreter of memory-operation scripts (`map A 64M ; touch A 0 64M ; ...`).
    pub memops: PathBuf,
    /// `memops` built as a 32-bit program (compat syscalls).
    pub memops32: PathBuf,
    /// `memops` linked statically, for container images without a libc.
    pub memops_static: PathBuf,
    /// Fills memory, gives part back with MADV_FREE, then grows until the
    /// memory limit kills it; linked statically, for containers.
    pub pressure: PathBuf,
    /// Starts many threads, then forks a child that touches memory.
    pub many_threads: PathBuf,
    /// Benchmark: map, fault in and unmap a region per round.
    pub fault_storm: PathBuf,
    /// Benchmark: many small MADV_FREE / MADV_DONTNEED calls.
    pub madvise_storm: PathBuf,
    /// Benchmark: small mmap / touch / munmap cycles.
    pub mmap_churn: PathBuf,
    /// `fault_storm` built `-O2 -fomit-frame-pointer`: the same work, in
    /// code whose stacks must be unwound from tables.
    pub fault_storm_nofp: PathBuf,
    /// `mmap_churn` built `-O2 -fomit-frame-pointer`.
    pub mmap_churn_nofp: PathBuf,
    /// Benchmark neighbour: one-byte reads and writes, like `dd bs=1`.
    pub syscall_storm: PathBuf,
    /// Benchmark attach target: dlopens many small libraries (copies in its
    /// own directory) and waits.
    pub many_libs: PathBuf,
    /// Known allocation call sites, built with `-g` and frame pointers.
    pub alloc_sites: PathBuf,
    /// `alloc_sites` with every symbol stripped (build id kept).
    pub alloc_sites_stripped: PathBuf,
    /// `alloc_sites` at `-O2` without frame pointers or debug info.
    pub alloc_sites_nofp: PathBuf,
    /// Two call chains through the same fault site, touched alternately.
    pub twin_paths: PathBuf,
    /// A 4 TiB PROT_NONE reservation with part of it churned.
    pub reservation: PathBuf,
    /// One position-dependent program built under two names for its fault
    /// site, so both put that code at the same address.
    pub same_place_first: PathBuf,
    pub same_place_second: PathBuf,
    /// Go heap growth and release through the Go scavenger.
    pub goheap: PathBuf,
    /// Go HTTP server leaking a goroutine and ticker per request.
    pub tickerleak: PathBuf,
    /// Go HTTP server retaining every request body.
    pub reqleak: PathBuf,
    /// Go allocation-churn benchmark.
    pub gochurn: PathBuf,
    /// Go heap growing until something kills it.
    pub leaker: PathBuf,
    /// Three call chains through one allocating function, `-O2` without
    /// frame pointers or debug info.
    pub nofp_chains: PathBuf,
    /// Threads that allocate, `-O2` without frame pointers.
    pub nofp_threads: PathBuf,
    /// One non-leaf faulting function called from three callers at the same
    /// depth, `-O2` without frame pointers.
    pub shared_fault: PathBuf,
    /// `shared_fault` with every symbol stripped.
    pub shared_fault_stripped: PathBuf,
    /// A program allocating inside `libsplit.so`, whose debug info is split
    /// off into [`Workloads::split_debug_dir`].
    pub split_user: PathBuf,
    /// `libsplit.so` itself: symbols, no debug info, a `.gnu_debuglink`.
    pub libsplit: PathBuf,
    /// A debug directory holding only `.build-id/xx/yyyy.debug` for
    /// `libsplit.so`.
    pub split_debug_dir: PathBuf,
    /// A Rust release build (no frame pointers) allocating through Vec and Box.
    pub rust_chains: PathBuf,
    /// The class path holding `Hot`, a Java program whose JIT-compiled
    /// method allocates (`java -cp java_classes Hot`).
    pub java_classes: PathBuf,
    /// `hot.js`, a JavaScript program whose JIT-compiled function allocates
    /// (run from the sources: nothing to build).
    pub node_hot: PathBuf,
}

impl Workloads {
    fn in_dir(dir: &Path) -> Self {
        Self {
            memops: dir.join("memops"),
            memops32: dir.join("memops32"),
            memops_static: dir.join("memops_static"),
            pressure: dir.join("pressure"),
            many_threads: dir.join("many_threads"),
            fault_storm: dir.join("fault_storm"),
            madvise_storm: dir.join("madvise_storm"),
            mmap_churn: dir.join("mmap_churn"),
            fault_storm_nofp: dir.join("fault_storm_nofp"),
            mmap_churn_nofp: dir.join("mmap_churn_nofp"),
            syscall_storm: dir.join("syscall_storm"),
            many_libs: dir.join("many_libs/many_libs"),
            alloc_sites: dir.join("alloc_sites"),
            alloc_sites_stripped: dir.join("alloc_sites_stripped"),
            alloc_sites_nofp: dir.join("alloc_sites_nofp"),
            twin_paths: dir.join("twin_paths"),
            reservation: dir.join("reservation"),
            same_place_first: dir.join("same_place_first"),
            same_place_second: dir.join("same_place_second"),
            goheap: dir.join("goheap"),
            tickerleak: dir.join("tickerleak"),
            reqleak: dir.join("reqleak"),
            gochurn: dir.join("gochurn"),
            leaker: dir.join("leaker"),
            nofp_chains: dir.join("nofp_chains"),
            nofp_threads: dir.join("nofp_threads"),
            shared_fault: dir.join("shared_fault"),
            shared_fault_stripped: dir.join("shared_fault_stripped"),
            split_user: dir.join("split/split_user"),
            libsplit: dir.join("split/libsplit.so"),
            split_debug_dir: dir.join("split/debug"),
            rust_chains: dir.join("rust_chains"),
            java_classes: dir.join("java"),
            node_hot: source_dir().join("js/hot.js"),
        }
    }
}

/// Why building the workloads failed.
#[derive(Debug)]
pub enum BuildError {
    /// A build tool is not installed.
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    /// A build command ran and failed.
    CommandFailed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    /// A file operation on the build directory or the sources failed.
    Io { action: String, source: io::Error },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingTool { tool, package } => write!(
                f,
                "building the test workloads needs `{tool}`; install it with `apt-get install -y {package}`"
            ),
            Self::CommandFailed { command, status, stderr } => {
                write!(f, "`{command}` failed ({status}):\n{stderr}")
            }
            Self::Io { action, source } => write!(f, "{action}: {source}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> BuildError {
    let action = action.into();
    move |source| BuildError::Io { action, source }
}

/// The line of `splitlib.c` whose store faults, which the source marks.
pub fn split_fault_line() -> usize {
    let source = include_str!("../workloads/c/splitlib.c");
    1 + source
        .lines()
        .position(|line| line.contains("/* fault line */"))
        .expect("splitlib.c marks its fault line")
}

/// Directory the workloads are built into: `<target dir>/workloads`.
///
/// The target directory is `$CARGO_TARGET_DIR` when set (a relative one is
/// taken relative to the workspace root, where cargo is normally run), and
/// the workspace's `target/` otherwise.
pub fn build_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    };
    target.join("workloads")
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads")
}

/// Builds every workload (at most once per process) and returns their paths.
///
/// Safe to call from many tests and many test processes at once. A failed
/// build is not remembered: the next call tries again and reports its own
/// error.
pub fn ensure_built() -> Result<&'static Workloads, BuildError> {
    static BUILT: OnceLock<Workloads> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());

    if let Some(workloads) = BUILT.get() {
        return Ok(workloads);
    }
    let _building = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(workloads) = BUILT.get() {
        return Ok(workloads);
    }
    let workloads = build_all(&source_dir(), &build_dir())?;
    Ok(BUILT.get_or_init(|| workloads))
}

/// Warnings are errors: the workloads are ours and must compile cleanly.
const WARNINGS: &[&str] = &["-Wall", "-Wextra", "-Werror"];
/// memops keeps one frame per operation (`op_free`, `op_map`, ...) on every
/// stack, so no sibling-call optimisation may replace a frame. Built "with
/// frame pointers" means in leaf functions too, as distributions that build
/// with frame pointers do: gcc otherwise leaves them out of leaves, and a
/// walk that starts in a leaf loses its caller.
const MEMOPS_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-fno-optimize-sibling-calls",
];
/// The same, as a 32-bit program.
const MEMOPS32_FLAGS: &[&str] = &[
    "-m32",
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-fno-optimize-sibling-calls",
];
/// memops' flags, linked statically: container images hold no libc.
const STATIC_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-static",
];
const THREADS_FLAGS: &[&str] = &["-O1", "-g", "-pthread"];
const BENCH_FLAGS: &[&str] = &[
    "-O2",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
];
const SYMBOLS_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-Wl,--build-id",
];
const NO_FRAME_POINTER_FLAGS: &[&str] = &["-O2", "-fomit-frame-pointer", "-Wl,--build-id"];
/// `same_place`: position-dependent (`-no-pie`), so every build's code sits
/// at the same fixed addresses; each build names its fault site.
const SAME_PLACE_FIRST_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-no-pie",
    "-DSITE=same_place_first_site",
];
const SAME_PLACE_SECOND_FLAGS: &[&str] = &[
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-no-pie",
    "-DSITE=same_place_second_site",
];

/// One C program: `main_source` plus the headers it includes, relative to
/// the workloads source directory.
struct CProgram {
    name: &'static str,
    main_source: &'static str,
    headers: &'static [&'static str],
    flags: &'static [&'static str],
    strip: bool,
}

const C_PROGRAMS: &[CProgram] = &[
    CProgram {
        name: "memops",
        main_source: "c/memops.c",
        headers: &[],
        flags: MEMOPS_FLAGS,
        strip: false,
    },
    CProgram {
        name: "memops32",
        main_source: "c/memops.c",
        headers: &[],
        flags: MEMOPS32_FLAGS,
        strip: false,
    },
    CProgram {
        name: "memops_static",
        main_source: "c/memops.c",
        headers: &[],
        flags: STATIC_FLAGS,
        strip: false,
    },
    CProgram {
        name: "pressure",
        main_source: "c/pressure.c",
        headers: &[],
        flags: STATIC_FLAGS,
        strip: false,
    },
    CProgram {
        name: "many_threads",
        main_source: "c/many_threads.c",
        headers: &[],
        flags: THREADS_FLAGS,
        strip: false,
    },
    CProgram {
        name: "fault_storm",
        main_source: "c/fault_storm.c",
        headers: &["c/bench.h"],
        flags: BENCH_FLAGS,
        strip: false,
    },
    CProgram {
        name: "madvise_storm",
        main_source: "c/madvise_storm.c",
        headers: &["c/bench.h"],
        flags: BENCH_FLAGS,
        strip: false,
    },
    CProgram {
        name: "mmap_churn",
        main_source: "c/mmap_churn.c",
        headers: &["c/bench.h"],
        flags: BENCH_FLAGS,
        strip: false,
    },
    CProgram {
        name: "fault_storm_nofp",
        main_source: "c/fault_storm.c",
        headers: &["c/bench.h"],
        flags: NO_FRAME_POINTER_FLAGS,
        strip: false,
    },
    CProgram {
        name: "mmap_churn_nofp",
        main_source: "c/mmap_churn.c",
        headers: &["c/bench.h"],
        flags: NO_FRAME_POINTER_FLAGS,
        strip: false,
    },
    CProgram {
        name: "syscall_storm",
        main_source: "c/syscall_storm.c",
        headers: &["c/bench.h"],
        flags: BENCH_FLAGS,
        strip: false,
    },
    CProgram {
        name: "alloc_sites",
        main_source: "c/alloc_sites.c",
        headers: &[],
        flags: SYMBOLS_FLAGS,
        strip: false,
    },
    CProgram {
        name: "alloc_sites_stripped",
        main_source: "c/alloc_sites.c",
        headers: &[],
        flags: SYMBOLS_FLAGS,
        strip: true,
    },
    CProgram {
        name: "twin_paths",
        main_source: "c/twin_paths.c",
        headers: &[],
        flags: SYMBOLS_FLAGS,
        strip: false,
    },
    CProgram {
        name: "reservation",
        main_source: "c/reservation.c",
        headers: &["c/bench.h"],
        flags: BENCH_FLAGS,
        strip: false,
    },
    CProgram {
        name: "same_place_first",
        main_source: "c/same_place.c",
        headers: &[],
        flags: SAME_PLACE_FIRST_FLAGS,
        strip: false,
    },
    CProgram {
        name: "same_place_second",
        main_source: "c/same_place.c",
        headers: &[],
        flags: SAME_PLACE_SECOND_FLAGS,
        strip: false,
    },
    CProgram {
        name: "alloc_sites_nofp",
        main_source: "c/alloc_sites.c",
        headers: &[],
        flags: NO_FRAME_POINTER_FLAGS,
        strip: false,
    },
    CProgram {
        name: "nofp_chains",
        main_source: "c/nofp_chains.c",
        headers: &["c/stacks.h"],
        flags: NO_FRAME_POINTER_FLAGS,
        strip: false,
    },
    CProgram {
        name: "nofp_threads",
        main_source: "c/nofp_threads.c",
        headers: &["c/stacks.h"],
        flags: NO_FRAME_POINTER_FLAGS,
        strip: false,
    },
    CProgram {
        name: "shared_fault",
        main_source: "c/shared_fault.c",
        headers: &["c/stacks.h"],
        flags: NO_FRAME_POINTER_FLAGS,
        strip: false,
    },
    CProgram {
        name: "shared_fault_stripped",
        main_source: "c/shared_fault.c",
        headers: &["c/stacks.h"],
        flags: NO_FRAME_POINTER_FLAGS,
        strip: true,
    },
];

/// The Go programs: one `package main` per directory of the Go module.
const GO_PROGRAMS: &[&str] = &["goheap", "tickerleak", "reqleak", "gochurn", "leaker"];

fn build_all(sources: &Path, out: &Path) -> Result<Workloads, BuildError> {
    fs::create_dir_all(out).map_err(io_error(format!("creating {}", out.display())))?;
    let lock_path = out.join(".lock");
    let lock =
        File::create(&lock_path).map_err(io_error(format!("creating {}", lock_path.display())))?;
    // Released when `lock` is dropped, at the end of this function.
    lock.lock()
        .map_err(io_error(format!("locking {}", lock_path.display())))?;

    for program in C_PROGRAMS {
        build_c(sources, out, program)?;
    }
    build_go(&sources.join("go"), out)?;
    build_split_debug(sources, out)?;
    build_many_libs(sources, out)?;
    build_rust(&sources.join("rust"), out)?;
    build_java(&sources.join("java"), out)?;
    Ok(Workloads::in_dir(out))
}

fn build_c(sources: &Path, out: &Path, program: &CProgram) -> Result<(), BuildError> {
    let output = out.join(program.name);
    // Build under a temporary name and rename at the end: a program that is
    // running keeps its old file, and a failed build leaves no half-written one.
    let partial = out.join(format!("{}.partial", program.name));
    let main_source = sources.join(program.main_source);

    let mut gcc = Command::new("gcc");
    gcc.args(program.flags)
        .args(WARNINGS)
        .arg("-o")
        .arg(&partial)
        .arg(&main_source);
    let mut commands = vec![gcc];
    if program.strip {
        let mut strip = Command::new("strip");
        strip.arg("--strip-all").arg(&partial);
        commands.push(strip);
    }

    let step = Step {
        stamp: out.join(format!("{}.stamp", program.name)),
        recipe: recipe(&commands),
        sources: std::iter::once(main_source)
            .chain(program.headers.iter().map(|header| sources.join(header)))
            .collect(),
    };
    if step.is_fresh()? {
        return Ok(());
    }
    for command in &mut commands {
        run(command)?;
    }
    rename(&partial, &output)?;
    step.mark_done()
}

fn build_go(module: &Path, out: &Path) -> Result<(), BuildError> {
    let partial_dir = out.join("go.partial");
    let mut go = Command::new("go");
    go.current_dir(module)
        .arg("build")
        // A trailing slash makes `go build` put one binary per package here.
        .arg("-o")
        .arg(format!("{}/", partial_dir.display()))
        .args(GO_PROGRAMS.iter().map(|name| format!("./{name}")))
        // Build offline and only from this module: never download a
        // toolchain or a module, and ignore any go.work or `go env -w` settings.
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOWORK", "off")
        .env("GOENV", "off")
        .env("GOCACHE", out.join("go-cache"))
        .env("GOPATH", out.join("go-path"))
        // Static binaries that need no C toolchain and no libc symbols.
        .env("CGO_ENABLED", "0");

    let step = Step {
        stamp: out.join("go.stamp"),
        recipe: recipe(std::slice::from_ref(&go)),
        sources: files_under(module)?,
    };
    if step.is_fresh()? {
        return Ok(());
    }
    run(&mut go)?;
    for name in GO_PROGRAMS {
        rename(&partial_dir.join(name), &out.join(name))?;
    }
    step.mark_done()
}

/// The split-debug library: debug info, to be split off; no frame pointers.
const SPLIT_LIBRARY_FLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fomit-frame-pointer",
    "-fPIC",
    "-shared",
    "-Wl,--build-id",
];

/// `libsplit.so` with its debug info split off the way distributions ship
/// it, and `split_user` linked against it, all in `out/split/`:
/// `objcopy --only-keep-debug` copies the debug info into a file of its own,
/// `strip --strip-debug` takes it out of the library (its symbol table
/// stays), and `objcopy --add-gnu-debuglink` records the debug file's name
/// and checksum. The debug file then goes to `debug/.build-id/xx/yyyy.debug`
/// and nowhere else, so nothing finds it by the debuglink's name next to the
/// library: only a debug directory (or a debuginfod server) gives it.
fn build_split_debug(sources: &Path, out: &Path) -> Result<(), BuildError> {
    let partial = partial_directory(out, "split");
    let library = partial.join("libsplit.so");
    let debug_file = partial.join("libsplit.debug");

    let mut gcc_library = Command::new("gcc");
    gcc_library
        .args(SPLIT_LIBRARY_FLAGS)
        .args(WARNINGS)
        .arg("-o")
        .arg(&library)
        .arg(sources.join("c/splitlib.c"));
    let mut keep_debug = Command::new("objcopy");
    keep_debug
        .arg("--only-keep-debug")
        .arg(&library)
        .arg(&debug_file);
    let mut strip_debug = Command::new("strip");
    strip_debug.arg("--strip-debug").arg(&library);
    let mut debuglink = Command::new("objcopy");
    debuglink
        .arg(format!("--add-gnu-debuglink={}", debug_file.display()))
        .arg(&library);
    let mut gcc_user = Command::new("gcc");
    gcc_user
        .args(NO_FRAME_POINTER_FLAGS)
        .args(WARNINGS)
        .arg("-o")
        .arg(partial.join("split_user"))
        .arg(sources.join("c/split_user.c"))
        .arg("-L")
        .arg(&partial)
        .args(["-lsplit", "-Wl,-rpath,$ORIGIN"]);
    let mut commands = [gcc_library, keep_debug, strip_debug, debuglink, gcc_user];
    let recipe = recipe(&commands);
    let sources =
        ["c/splitlib.c", "c/split_user.c", "c/stacks.h"].map(|source| sources.join(source));
    build_directory(out, "split", &mut commands, recipe, &sources, |partial| {
        let build_id = build_id(&library)?;
        let in_debug_dir = partial
            .join("debug/.build-id")
            .join(&build_id[..2])
            .join(format!("{}.debug", &build_id[2..]));
        let parent = in_debug_dir.parent().expect("a file in a directory");
        fs::create_dir_all(parent).map_err(io_error(format!("creating {}", parent.display())))?;
        rename(&debug_file, &in_debug_dir)
    })
}

/// A build step whose output is the directory `out/NAME`: `commands` build
/// into `out/NAME.partial` (created empty for them), `finish` completes it,
/// and only then does it replace `out/NAME`, so a failed build leaves no
/// half-made directory. Skipped when its stamp is fresh for `recipe` and
/// `sources`.
fn build_directory(
    out: &Path,
    name: &str,
    commands: &mut [Command],
    recipe: String,
    sources: &[PathBuf],
    finish: impl FnOnce(&Path) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let step = Step {
        stamp: out.join(format!("{name}.stamp")),
        recipe,
        sources: sources.to_vec(),
    };
    if step.is_fresh()? {
        return Ok(());
    }
    let partial = partial_directory(out, name);
    remove_dir(&partial)?;
    fs::create_dir_all(&partial).map_err(io_error(format!("creating {}", partial.display())))?;
    for command in commands {
        run(command)?;
    }
    finish(&partial)?;
    let done = out.join(name);
    remove_dir(&done)?;
    rename(&partial, &done)?;
    step.mark_done()
}

/// Where [`build_directory`] builds `out/NAME`.
fn partial_directory(out: &Path, name: &str) -> PathBuf {
    out.join(format!("{name}.partial"))
}

/// How many copies of `tiny_lib.so` `many_libs` can load.
const MANY_LIBS_COPIES: usize = 100;

/// `many_libs` and the libraries it loads, all in `out/many_libs/`: one
/// small library built once and copied [`MANY_LIBS_COPIES`] times as
/// `lib000.so`, `lib001.so`, ... (files of their own, which the dynamic
/// loader maps one by one, as it would distinct libraries).
fn build_many_libs(sources: &Path, out: &Path) -> Result<(), BuildError> {
    let partial = partial_directory(out, "many_libs");
    let library = partial.join("tiny_lib.so");
    let mut gcc_library = Command::new("gcc");
    gcc_library
        .args(["-O2", "-fPIC", "-shared"])
        .args(WARNINGS)
        .arg("-o")
        .arg(&library)
        .arg(sources.join("c/tiny_lib.c"));
    let mut gcc_program = Command::new("gcc");
    gcc_program
        .args(BENCH_FLAGS)
        .args(WARNINGS)
        .arg("-o")
        .arg(partial.join("many_libs"))
        .arg(sources.join("c/many_libs.c"));
    let mut commands = [gcc_library, gcc_program];
    let recipe = recipe(&commands) + &format!("copies: {MANY_LIBS_COPIES}\n");
    let sources = ["c/tiny_lib.c", "c/many_libs.c", "c/bench.h"].map(|source| sources.join(source));
    build_directory(
        out,
        "many_libs",
        &mut commands,
        recipe,
        &sources,
        |partial| {
            for copy in 0..MANY_LIBS_COPIES {
                let to = partial.join(format!("lib{copy:03}.so"));
                fs::copy(&library, &to).map_err(io_error(format!(
                    "copying {} to {}",
                    library.display(),
                    to.display()
                )))?;
            }
            Ok(())
        },
    )
}

/// The GNU build id of an ELF file, in hex, as `readelf -n` prints it.
fn build_id(file: &Path) -> Result<String, BuildError> {
    let mut readelf = Command::new("readelf");
    readelf.arg("-n").arg(file);
    let notes = run(&mut readelf)?;
    notes
        .lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: "))
        .filter(|id| id.len() > 2 && id.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .map(str::to_owned)
        .ok_or_else(|| BuildError::Io {
            action: format!("reading the build id of {}", file.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, "readelf -n shows none"),
        })
}

/// Removes a directory and everything in it, if it is there.
fn remove_dir(dir: &Path) -> Result<(), BuildError> {
    match fs::remove_dir_all(dir) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(io_error(format!("removing {}", dir.display()))(error))
        }
        _ => Ok(()),
    }
}

/// The Rust workload, built as `cargo build --release` builds any crate:
/// offline, from its own lock file (it has no dependencies), and without the
/// frame pointers this workspace's `.cargo/config.toml` asks for in its own
/// code (an empty `CARGO_ENCODED_RUSTFLAGS` takes precedence over it).
fn build_rust(krate: &Path, out: &Path) -> Result<(), BuildError> {
    let target = out.join("rust-target");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--release", "--offline", "--locked", "--quiet"])
        .arg("--manifest-path")
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .env("CARGO_ENCODED_RUSTFLAGS", "");

    let step = Step {
        stamp: out.join("rust_chains.stamp"),
        recipe: recipe(std::slice::from_ref(&cargo)),
        sources: files_under(krate)?,
    };
    if step.is_fresh()? {
        return Ok(());
    }
    run(&mut cargo)?;
    let partial = out.join("rust_chains.partial");
    let built = target.join("release/rust_chains");
    fs::copy(&built, &partial).map_err(io_error(format!(
        "copying {} to {}",
        built.display(),
        partial.display()
    )))?;
    rename(&partial, &out.join("rust_chains"))?;
    step.mark_done()
}

/// The Java workload's classes, into `out/java/`.
fn build_java(sources: &Path, out: &Path) -> Result<(), BuildError> {
    let partial = out.join("java.partial");
    let mut javac = Command::new("javac");
    javac.arg("-d").arg(&partial).arg(sources.join("Hot.java"));
    let step = Step {
        stamp: out.join("java.stamp"),
        recipe: recipe(std::slice::from_ref(&javac)),
        sources: files_under(sources)?,
    };
    if step.is_fresh()? {
        return Ok(());
    }
    remove_dir(&partial)?;
    run(&mut javac)?;
    let done = out.join("java");
    remove_dir(&done)?;
    rename(&partial, &done)?;
    step.mark_done()
}

/// A build step's record: its stamp file holds the recipe (the commands it
/// ran) and is written after the outputs, so its mtime says when they were made.
struct Step {
    stamp: PathBuf,
    recipe: String,
    sources: Vec<PathBuf>,
}

impl Step {
    /// True when the stamp holds the same recipe and is newer than every source.
    fn is_fresh(&self) -> Result<bool, BuildError> {
        let Ok(recorded) = fs::read_to_string(&self.stamp) else {
            return Ok(false);
        };
        if recorded != self.recipe {
            return Ok(false);
        }
        let built = modified(&self.stamp)?;
        for source in &self.sources {
            if modified(source)? >= built {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn mark_done(&self) -> Result<(), BuildError> {
        fs::write(&self.stamp, &self.recipe)
            .map_err(io_error(format!("writing {}", self.stamp.display())))
    }
}

fn modified(path: &Path) -> Result<SystemTime, BuildError> {
    fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .map_err(io_error(format!(
            "reading the modification time of {}",
            path.display()
        )))
}

fn rename(from: &Path, to: &Path) -> Result<(), BuildError> {
    fs::rename(from, to).map_err(io_error(format!(
        "renaming {} to {}",
        from.display(),
        to.display()
    )))
}

/// Every file below `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(io_error(format!("listing {}", dir.display())))?;
        for entry in entries {
            let path = entry
                .map_err(io_error(format!("listing {}", dir.display())))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}

fn recipe(commands: &[Command]) -> String {
    commands
        .iter()
        .map(|command| describe(command) + "\n")
        .collect()
}

/// The command as a shell-like line, with the environment it sets.
fn describe(command: &Command) -> String {
    let env = command.get_envs().map(|(key, value)| {
        format!(
            "{}={}",
            key.to_string_lossy(),
            value.unwrap_or_default().to_string_lossy()
        )
    });
    let words = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy);
    env.chain(words.map(String::from))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The build tools, each with the Debian package that provides it.
const TOOLS: &[(&str, &str)] = &[
    ("gcc", "gcc"),
    ("strip", "binutils"),
    ("go", "golang-go"),
    ("objcopy", "binutils"),
    ("readelf", "binutils"),
    ("javac", "openjdk-17-jdk-headless"),
];

/// Runs a build command; returns what it printed on stdout.
pub(crate) fn run(command: &mut Command) -> Result<String, BuildError> {
    let output = command.output().map_err(|source| {
        let program = command.get_program();
        match TOOLS.iter().find(|(tool, _)| program == *tool) {
            Some(&(tool, package)) if source.kind() == io::ErrorKind::NotFound => {
                BuildError::MissingTool { tool, package }
            }
            _ => BuildError::Io {
                action: format!("running {}", program.to_string_lossy()),
                source,
            },
        }
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(BuildError::CommandFailed {
            command: describe(command),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Child, ChildStdout, Output, Stdio};
    use std::thread;
    use std::time::{Duration, Instant};

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn workloads() -> &'static Workloads {
        ensure_built().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Runs `program` with stdin closed; kills it and fails after TIMEOUT.
    fn run_program(program: &Path, args: &[&str]) -> Output {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", program.display()));
        // Drain both pipes while waiting, so a chatty program cannot block.
        let drain = |mut pipe: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                pipe.read_to_end(&mut bytes).map(|_| bytes)
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        let status = wait_with_timeout(&mut child, program);
        Output {
            status,
            stdout: stdout.join().unwrap().unwrap(),
            stderr: stderr.join().unwrap().unwrap(),
        }
    }

    fn wait_with_timeout(child: &mut Child, program: &Path) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("{} ran longer than {TIMEOUT:?}", program.display());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs a program that must succeed and returns its stdout lines.
    fn run_ok(program: &Path, args: &[&str]) -> Vec<String> {
        let output = run_program(program, args);
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "{} {args:?}: {}\nstdout:\n{stdout}\nstderr:\n{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout.lines().map(String::from).collect()
    }

    /// The number after `"key":` in a one-line JSON object.
    fn json_number(line: &str, key: &str) -> f64 {
        let pattern = format!("\"{key}\":");
        let start = line
            .find(&pattern)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + pattern.len();
        let digits: String = line[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+'))
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number in {line}"))
    }

    /// The line of a JSON-lines output whose "event" is `event`.
    fn event<'a>(lines: &'a [String], event: &str) -> &'a str {
        let tag = format!("{{\"event\":\"{event}\"");
        lines
            .iter()
            .find(|line| line.starts_with(&tag))
            .unwrap_or_else(|| panic!("no {event} event in {lines:#?}"))
    }

    /// Splits a script written with spaces into memops arguments.
    fn script(text: &str) -> Vec<&str> {
        text.split_whitespace().collect()
    }

    #[test]
    fn build_is_skipped_when_up_to_date() {
        let first = workloads();
        let stamp = build_dir().join("memops.stamp");
        let before = modified(&stamp).unwrap();
        build_all(&source_dir(), &build_dir()).unwrap();
        assert_eq!(modified(&stamp).unwrap(), before, "memops was rebuilt");
        assert!(first.memops.starts_with(build_dir()));
    }

    #[test]
    fn memops_prints_op_lines_and_report() {
        let memops = &workloads().memops;
        let lines = run_ok(
            memops,
            &script(
                "map A 4M ; touch A 0 4M ; free A 0 2M ; dontneed A 2M 1M ; unmap A 3M 1M ; \
                 process_madvise A 0 1M 20 ; advise A 0 4K 10 ; report",
            ),
        );
        assert!(lines[0].starts_with("pid "), "{lines:#?}");
        let expected = [
            ("op 0 map A addr=0x", "len=4194304 ret=0"),
            ("op 1 touch A addr=0x", "len=4194304 ret=1024"),
            ("op 2 free A addr=0x", "len=2097152 ret=0"),
            ("op 3 dontneed A addr=0x", "len=1048576 ret=0"),
            ("op 4 unmap A addr=0x", "len=1048576 ret=0"),
            ("op 5 process_madvise A addr=0x", "len=1048576 ret=1048576"),
            ("op 6 advise A addr=0x", "len=4096 ret=0"),
        ];
        for (line, (start, end)) in lines[1..].iter().zip(expected) {
            assert!(
                line.starts_with(start) && line.ends_with(end),
                "{line:?} is not {start}...{end}"
            );
        }
        assert_eq!(
            lines[8],
            r#"{"mapped":4194304,"touched_pages":1024,"touched_bytes":4194304,"madvise":{"MADV_FREE":2097152,"MADV_DONTNEED":1048576,"MADV_DONTFORK":4096},"process_madvise":{"MADV_COLD":1048576},"unmapped":1048576}"#
        );
        assert_eq!(lines[9], "op 7 report - addr=0x0 len=0 ret=0");
        assert_eq!(lines.len(), 10);
    }

    #[test]
    fn memops_regions_move_and_align() {
        let memops = &workloads().memops;
        let lines = run_ok(
            memops,
            &script(
                "map H 4M huge populate ; map S 1M shared ; touch S 0 1M read ; remap S 2M move ; \
                 brk +1M ; brk -1M ; malloc M 1M ; mfree M ; fork_touch H 0 4M ; hold 0.01 ; wait",
            ),
        );
        let huge = &lines[1];
        let addr = u64::from_str_radix(
            huge.split("addr=0x")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap(),
            16,
        )
        .unwrap();
        assert_eq!(
            addr % (2 << 20),
            0,
            "huge region is not 2 MiB aligned: {huge}"
        );
        assert!(huge.ends_with("reserved_len=6291456"), "{huge}");
        assert!(
            lines[4].starts_with("op 3 remap S") && lines[4].contains(" from=0x"),
            "{}",
            lines[4]
        );
        assert!(
            lines[4].contains("len=2097152 ret=0 from=0x")
                && lines[4].ends_with("from_len=1048576")
        );
        assert!(
            lines[5].starts_with("op 4 brk - addr=0x") && lines[5].ends_with("len=1048576 ret=0")
        );
        assert!(lines[9].starts_with("op 8 fork_touch H") && lines[9].contains(" child="));
        // stdin is closed, so `wait` sees EOF at once and says so.
        assert!(lines[11].starts_with("op 10 wait -") && lines[11].ends_with("ret=1"));
    }

    #[test]
    fn memops_exec_runs_a_new_script_in_the_same_process() {
        let memops = &workloads().memops;
        let path = memops.to_str().unwrap();
        let lines = run_ok(
            memops,
            &[
                "map", "A", "1M", ";", "exec", path, "report", ";", "hold", "0",
            ],
        );
        assert_eq!(lines[0], lines[3], "exec must keep the pid: {lines:#?}");
        assert!(lines[2].starts_with("op 1 exec - "));
        assert!(lines[4].starts_with(r#"{"mapped":0,"#), "{lines:#?}");
        assert_eq!(lines[6], "op 1 hold - addr=0x0 len=0 ret=0");
    }

    #[test]
    fn memops_rejects_malformed_scripts_before_running_anything() {
        let memops = &workloads().memops;
        for bad in [
            "mapp A 1M",
            "map A",
            "map A 1X",
            "map A 1M ; touch B 0 1M",
            "map A 1M ; touch A 512K 1M",
            "map A 1M ; map A 1M",
            "map A 1M file",
            "map A 1M file /tmp/x huge",
            "malloc M 1M ; mfree M ; touch M 0 1",
            "map A 1M ; mfree A",
            "hold soon",
            "advise",
        ] {
            let output = run_program(memops, &script(bad));
            assert_eq!(output.status.code(), Some(2), "{bad:?}");
            assert!(
                output.stdout.is_empty(),
                "{bad:?} ran: {}",
                String::from_utf8_lossy(&output.stdout)
            );
            let stderr = String::from_utf8(output.stderr).unwrap();
            assert!(
                stderr.starts_with("memops: malformed script: ") && stderr.lines().count() == 1,
                "{stderr}"
            );
        }
    }

    #[test]
    fn memops_exits_3_when_a_syscall_fails() {
        let output = run_program(
            &workloads().memops,
            &script("map A 1M file /nonexistent/dir/file"),
        );
        assert_eq!(output.status.code(), Some(3));
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            stderr,
            "memops: op 0 map: open failed: No such file or directory\n"
        );
    }

    /// Reads one kB field of /proc/PID/smaps_rollup.
    fn smaps_rollup_kib(pid: u32, field: &str) -> u64 {
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
        let line = rollup
            .lines()
            .find(|line| line.starts_with(&format!("{field}:")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn read_line(stdout: &mut BufReader<ChildStdout>) -> String {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line
    }

    /// The kernel agrees with what memops says it did: MADV_FREE leaves the
    /// pages resident but lazily freed, MADV_DONTNEED drops them.
    #[test]
    fn memops_memory_shows_in_smaps_rollup() {
        let mut child = Command::new(&workloads().memops)
            .args(script(
                "map A 32M ; touch A 0 32M ; free A 0 16M ; dontneed A 16M 8M ; wait",
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        for _ in 0..5 {
            read_line(&mut stdout); // pid and ops 0 to 3; op 4 waits for stdin
        }
        let (rss, lazy_free) = (
            smaps_rollup_kib(child.id(), "Rss"),
            smaps_rollup_kib(child.id(), "LazyFree"),
        );
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(read_line(&mut stdout).starts_with("op 4 wait - "));
        assert!(child.wait().unwrap().success());

        // The kernel marks pages lazily free through a per-CPU batch of up to
        // 31 folios, so a few of them may not be counted yet.
        let batch_kib = 31 * 4;
        assert!(
            ((16 << 10) - batch_kib..=16 << 10).contains(&lazy_free),
            "LazyFree {lazy_free} kB"
        );
        // 24 MiB stay resident, plus the program's own few MiB of text and libc.
        assert!((24 << 10..28 << 10).contains(&rss), "Rss {rss} kB");
    }

    #[test]
    fn benchmarks_report_seconds_and_operations() {
        let w = workloads();
        let cases: [(&Path, &[&str], f64); 6] = [
            (
                &w.fault_storm,
                &["--mib", "4", "--rounds", "2", "--warmup", "1"],
                2.0 * 1024.0,
            ),
            (
                &w.fault_storm_nofp,
                &["--mib", "4", "--rounds", "2", "--warmup", "1"],
                2.0 * 1024.0,
            ),
            (
                &w.mmap_churn_nofp,
                &["--ops", "1000", "--kib", "64", "--warmup", "10"],
                1000.0,
            ),
            (
                &w.syscall_storm,
                &["--ops", "1000", "--warmup", "10"],
                2000.0,
            ),
            (
                &w.madvise_storm,
                &[
                    "--mib",
                    "4",
                    "--rounds",
                    "2",
                    "--chunk-kib",
                    "64",
                    "--warmup",
                    "1",
                ],
                2.0 * 64.0,
            ),
            (
                &w.mmap_churn,
                &["--ops", "1000", "--kib", "64", "--warmup", "10"],
                1000.0,
            ),
        ];
        for (program, args, operations) in cases {
            let lines = run_ok(program, args);
            let last = lines.last().unwrap();
            assert_eq!(json_number(last, "operations"), operations, "{last}");
            assert!(json_number(last, "seconds") > 0.0, "{last}");
        }
        let usage = run_program(&w.fault_storm, &["--mbi", "4"]);
        assert_eq!(usage.status.code(), Some(2));
    }

    #[test]
    fn many_libs_maps_each_library_it_loads() {
        let w = workloads();
        let mappings = |libs: &str| {
            let lines = run_ok(&w.many_libs, &["--libs", libs]);
            let last = lines.last().unwrap();
            assert_eq!(
                json_number(last, "operations"),
                libs.parse::<f64>().unwrap()
            );
            json_number(last, "mappings")
        };
        let (none, ten) = (mappings("0"), mappings("10"));
        // Each copy is a library of its own: text, read-only data, relro and
        // writable data, four mappings or more.
        assert!(
            ten >= none + 40.0,
            "{none} mappings, {ten} with 10 libraries"
        );
        assert_eq!(
            run_program(&w.many_libs, &["--libs", "1001"]).status.code(),
            Some(2)
        );
    }

    #[test]
    fn benchmark_wait_prints_ready_first() {
        let lines = run_ok(
            &workloads().mmap_churn,
            &["--ops", "10", "--warmup", "0", "--wait"],
        );
        assert_eq!(lines[0], "ready");
        assert_eq!(json_number(&lines[1], "operations"), 10.0);
    }

    #[test]
    fn alloc_sites_report_exact_totals_in_every_build() {
        let w = workloads();
        for program in [&w.alloc_sites, &w.alloc_sites_stripped, &w.alloc_sites_nofp] {
            let lines = run_ok(program, &["--hold", "0"]);
            assert_eq!(lines.len(), 2, "{lines:#?}");
            assert_eq!(json_number(&lines[0], "load_catalog"), (24 << 20) as f64);
            assert_eq!(json_number(&lines[0], "build_index"), (16 << 20) as f64);
            assert_eq!(json_number(&lines[0], "handle_request"), (8 << 20) as f64);
            assert_eq!(json_number(&lines[0], "total"), (48 << 20) as f64);
            assert_eq!(lines[1], "ready");
        }
        let contains = |program: &Path, needle: &[u8]| {
            fs::read(program)
                .unwrap()
                .windows(needle.len())
                .any(|window| window == needle)
        };
        // Symbol names end in NUL; the JSON keys in the format string do not.
        assert!(contains(&w.alloc_sites, b"load_catalog\0"));
        assert!(!contains(&w.alloc_sites_stripped, b"load_catalog\0"));
        assert!(contains(&w.alloc_sites_stripped, b".note.gnu.build-id"));
    }

    #[test]
    fn goheap_allocates_then_releases() {
        let lines = run_ok(
            &workloads().goheap,
            &["-alloc-mib", "16", "-hold", "0s", "-pprof", "127.0.0.1:0"],
        );
        assert!(event(&lines, "pprof").starts_with(r#"{"event":"pprof","addr":"127.0.0.1:"#));
        let allocated = event(&lines, "allocated");
        assert_eq!(json_number(allocated, "alloc_bytes"), (16 << 20) as f64);
        assert!(
            json_number(allocated, "HeapAlloc") >= (16 << 20) as f64,
            "{allocated}"
        );
        let released = event(&lines, "released");
        assert!(
            json_number(released, "HeapAlloc") < (4 << 20) as f64,
            "{released}"
        );
        assert!(
            json_number(released, "HeapReleased") >= (16 << 20) as f64,
            "{released}"
        );
    }

    #[test]
    fn goheap_rejects_non_loopback_pprof_addresses() {
        let output = run_program(&workloads().goheap, &["-pprof", "0.0.0.0:0", "-hold", "0s"]);
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("only loopback"));
    }

    #[test]
    fn tickerleak_leaks_a_goroutine_per_request() {
        let lines = run_ok(&workloads().tickerleak, &["-requests", "20", "-hold", "0s"]);
        let done = event(&lines, "requests_done");
        assert_eq!(json_number(done, "requests"), 20.0);
        assert_eq!(json_number(done, "errors"), 0.0);
        assert!(json_number(done, "goroutines") >= 20.0, "{done}");
    }

    #[test]
    fn reqleak_remembers_every_body() {
        let lines = run_ok(
            &workloads().reqleak,
            &["-requests", "20", "-body-kib", "64", "-hold", "0s"],
        );
        let done = event(&lines, "requests_done");
        assert_eq!(json_number(done, "errors"), 0.0);
        assert_eq!(json_number(done, "remembered_bytes"), (20 << 16) as f64);
    }

    #[test]
    fn gochurn_reports_seconds_and_operations() {
        let lines = run_ok(
            &workloads().gochurn,
            &["-iterations", "10000", "-warmup", "1000"],
        );
        let last = lines.last().unwrap();
        assert_eq!(json_number(last, "operations"), 10000.0);
        assert!(json_number(last, "seconds") > 0.0);
    }

    #[test]
    fn whole_stack_workloads_report_exact_totals() {
        let w = workloads();
        const MIB: f64 = (1 << 20) as f64;
        let lines = run_ok(&w.nofp_chains, &["--hold", "0"]);
        assert_eq!(lines[1], "ready", "{lines:#?}");
        let chains: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        for (chain, faulted, released) in [
            ("load_cache", 24, 4),
            ("warm_index", 16, 2),
            ("rebuild", 8, 1),
        ] {
            let bytes = |key: &str| chains[chain][key].as_f64().unwrap();
            assert_eq!(bytes("faulted"), faulted as f64 * MIB, "{chain}");
            assert_eq!(bytes("released"), released as f64 * MIB, "{chain}");
            assert_eq!(bytes("resident"), (faulted - released) as f64 * MIB);
        }
        let lines = run_ok(&w.nofp_threads, &["--hold", "0"]);
        assert_eq!(json_number(&lines[0], "reader_main"), 8.0 * MIB);
        assert_eq!(json_number(&lines[0], "writer_main"), 12.0 * MIB);
        for program in [&w.shared_fault, &w.shared_fault_stripped] {
            let lines = run_ok(program, &["--hold", "0"]);
            assert_eq!(json_number(&lines[0], "pages"), 12288.0);
            for caller in ["from_parser", "from_loader", "from_cache"] {
                assert_eq!(json_number(&lines[0], caller), 4096.0, "{caller}");
            }
        }
        let lines = run_ok(&w.split_user, &["--hold", "0"]);
        assert_eq!(json_number(&lines[0], "split_fill"), 32.0 * MIB);
        let lines = run_ok(&w.rust_chains, &["--hold", "0"]);
        assert_eq!(json_number(&lines[0], "load_catalog"), 24.0 * MIB);
        assert_eq!(json_number(&lines[0], "build_index"), 16.0 * MIB);
        assert_eq!(lines[1], "ready");
        for program in [&w.nofp_chains, &w.rust_chains] {
            assert_eq!(
                run_program(program, &["--hold", "soon"]).status.code(),
                Some(2)
            );
        }
    }

    /// `--wait` holds the allocation back until a line arrives.
    #[test]
    fn whole_stack_workloads_wait_for_a_line_before_allocating() {
        let mut child = Command::new(&workloads().nofp_chains)
            .args(["--wait", "--hold", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        assert_eq!(read_line(&mut stdout), "waiting\n");
        let before = smaps_rollup_kib(child.id(), "Rss");
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        assert!(read_line(&mut stdout).starts_with("{\"pid\":"));
        assert!(child.wait().unwrap().success());
        assert!(
            before < 8 << 10,
            "allocated before the line: Rss {before} kB"
        );
    }

    /// The names of an ELF file's sections, from `readelf -SW`.
    fn sections(file: &Path) -> Vec<String> {
        let output = Command::new("readelf")
            .arg("-SW")
            .arg(file)
            .output()
            .unwrap();
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .filter_map(|line| {
                Some(
                    line.split(']')
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_split_library_has_symbols_and_its_debug_info_only_in_the_build_id_directory() {
        let w = workloads();
        let library = sections(&w.libsplit);
        for wanted in [
            ".symtab",
            ".gnu_debuglink",
            ".eh_frame",
            ".note.gnu.build-id",
        ] {
            assert!(
                library.iter().any(|name| name == wanted),
                "{wanted}: {library:?}"
            );
        }
        assert!(
            !library.iter().any(|name| name.starts_with(".debug_")),
            "{library:?}"
        );
        let id = build_id(&w.libsplit).unwrap();
        let debug_file = w
            .split_debug_dir
            .join(".build-id")
            .join(&id[..2])
            .join(format!("{}.debug", &id[2..]));
        let debug = sections(&debug_file);
        assert!(debug.iter().any(|name| name == ".debug_line"), "{debug:?}");
        assert_eq!(build_id(&debug_file).unwrap(), id);
        // Nowhere to be found by the debuglink's own name.
        let split_dir = w.libsplit.parent().unwrap();
        assert!(!split_dir.join("libsplit.debug").exists());
        assert!(!w.split_debug_dir.join("libsplit.debug").exists());
    }

    /// Whether `function`'s code in `program` starts by setting up a frame
    /// pointer (`push %rbp; mov %rsp,%rbp`).
    fn keeps_frame_pointer(program: &Path, function: &str) -> bool {
        let output = Command::new("objdump")
            .args(["-d", "--no-show-raw-insn", "-C"])
            .arg(program)
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let start = text
            .find(&format!("<{function}>:"))
            .unwrap_or_else(|| panic!("no {function} in {}", program.display()));
        let body: Vec<&str> = text[start..].lines().skip(1).take(3).collect();
        body.iter().any(|line| line.ends_with("push   %rbp"))
            && body.iter().any(|line| line.ends_with("mov    %rsp,%rbp"))
    }

    #[test]
    fn the_whole_stack_workloads_keep_no_frame_pointers() {
        let w = workloads();
        assert!(!keeps_frame_pointer(&w.nofp_chains, "make_buffer"));
        assert!(!keeps_frame_pointer(&w.fault_storm_nofp, "run_round"));
        assert!(!keeps_frame_pointer(&w.mmap_churn_nofp, "run_op"));
        assert!(!keeps_frame_pointer(&w.shared_fault, "touch_page"));
        assert!(!keeps_frame_pointer(
            &w.rust_chains,
            "rust_chains::load_catalog"
        ));
        // The check itself: alloc_sites is built with frame pointers.
        assert!(keeps_frame_pointer(&w.alloc_sites, "load_catalog"));
    }
}
