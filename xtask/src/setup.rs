//! `cargo xtask setup`: everything building, testing and running memtrace
//! needs, checked and installed step by step.
//!
//! Each step checks first and acts only on what is missing, so running set-up
//! again is quick and changes nothing. Each prints one line: what it found,
//! or what it did.

use std::{
    env,
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{privilege::Privilege, process, workspace};

/// The LLVM major bpf-linker is built against. It must be the nightly's own
/// LLVM major, or linking the eBPF object fails in obscure ways
/// (bpf-linker#426). The package names and paths below say 22 as well.
const LLVM_MAJOR: u32 = 22;
const LLVM_BIN_DIR: &str = "/usr/lib/llvm-22/bin";

/// LLVM 22 and the libraries bpf-linker links against; gcc and binutils for
/// the C test workloads; Go for the Go workloads and `go tool pprof`;
/// bpftrace and perf as the peers memtrace is compared with; bpftool to
/// inspect loaded programs; tmux to drive the live screen in its tests; for
/// `cargo xtask test-kernel`, the distribution's kernel (Debian 12's is 6.1,
/// with BTF), qemu to boot it, a static busybox for virtme-ng's guest, and
/// Python's venv to install virtme-ng in; debuginfod, and servers nobody here
/// wrote (with their load generators), for the whole-stack tests; Prometheus,
/// which the metrics tests scrape with; podman and runc, which run the
/// container tests' containers (with the static busybox in their image).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "gcc",
    "gcc-multilib",
    "binutils",
    "golang-go",
    "bpftrace",
    "linux-perf",
    "bpftool",
    "tmux",
    "linux-image-amd64",
    "qemu-system-x86",
    "busybox-static",
    "python3-venv",
    "debuginfod",
    "nginx",
    "apache2-utils",
    "postgresql",
    "redis-server",
    "prometheus",
    "podman",
    "runc",
];

/// `cargo install` arguments for bpf-linker built against LLVM 22; `--force`
/// replaces one built against another LLVM.
const BPF_LINKER_INSTALL: &[&str] = &[
    "install",
    "bpf-linker",
    "--version",
    "0.13.0",
    "--no-default-features",
    "--features",
    "llvm-22",
    "--force",
];
/// `cargo install` arguments for cargo-fuzz, which `cargo xtask fuzz` runs
/// on the nightly toolchain.
const CARGO_FUZZ_INSTALL: &[&str] = &["install", "cargo-fuzz", "--version", "0.13.2", "--locked"];
const TRACEFS: &str = "/sys/kernel/tracing";
/// virtme-ng boots a kernel in qemu over this machine's own filesystem, for
/// `cargo xtask test-kernel`. It comes from PyPI, into its own virtual
/// environment in the target directory (Debian's Python refuses `pip
/// install` outside one).
const VIRTME_NG_VERSION: &str = "1.42";
const VIRTME_NG_DIR: &str = "virtme-ng";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only report what is missing.
    Check,
    /// Install what is missing.
    Install,
}

/// What a step's check found.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Nothing to do; the text says what was found.
    Ready(String),
    /// Missing, and the step can install it; the text says what is missing.
    Missing(String),
    /// Missing, but set-up cannot do it from here and nothing depends on it
    /// yet; the text says what to do by hand.
    Manual(String),
}

/// One set-up step: a check, and what installs what the check found missing.
struct Step {
    name: String,
    check: fn(Privilege) -> Result<State>,
    install: fn(Privilege) -> Result<()>,
    /// How the installation is done, with a warning when it is slow.
    how: &'static str,
}

/// The steps in the order they depend on each other: bpf-linker needs the
/// LLVM 22 packages, rust-src needs the nightly.
fn steps() -> Vec<Step> {
    vec![
        Step {
            name: "apt packages".into(),
            check: check_apt_packages,
            install: install_apt_packages,
            how: "installing with apt-get",
        },
        Step {
            name: "nightly toolchain".into(),
            check: check_nightly,
            install: install_nightly,
            how: "installing with rustup",
        },
        Step {
            name: "rust-src on nightly".into(),
            check: check_rust_src,
            install: install_rust_src,
            how: "installing with rustup",
        },
        Step {
            name: format!("bpf-linker (LLVM {LLVM_MAJOR})"),
            check: check_bpf_linker,
            install: install_bpf_linker,
            how: "installing with cargo install (a couple of minutes on 2 cores)",
        },
        Step {
            name: "cargo-fuzz".into(),
            check: check_cargo_fuzz,
            install: install_cargo_fuzz,
            how: "installing with cargo install (about a minute)",
        },
        Step {
            name: format!("virtme-ng {VIRTME_NG_VERSION} (PyPI)"),
            check: check_virtme_ng,
            install: install_virtme_ng,
            how: "installing with pip into a virtual environment",
        },
        Step {
            name: "tracefs".into(),
            check: check_tracefs,
            install: mount_tracefs,
            how: "mounting",
        },
    ]
}

pub fn run(mode: Mode) -> Result<()> {
    let privilege = Privilege::detect()?;
    let mut unfinished = Vec::new();
    for step in steps() {
        if !run_step(&step, mode, privilege).with_context(|| failure_help(&step.name))? {
            unfinished.push(step.name);
        }
    }
    if mode == Mode::Check && !unfinished.is_empty() {
        bail!(
            "setup --check: not ready: {}; run `cargo xtask setup`",
            unfinished.join(", ")
        );
    }
    Ok(())
}

/// Runs one step and prints its line; returns whether the step is done.
fn run_step(step: &Step, mode: Mode, privilege: Privilege) -> Result<bool> {
    print_now(&format!("setup: {} ... ", step.name));
    let outcome = check_and_install(step, mode, privilege);
    if outcome.is_err() {
        println!("failed");
    }
    outcome
}

/// The rest of the step's line: what the check found and, when installing,
/// what was done about it.
fn check_and_install(step: &Step, mode: Mode, privilege: Privilege) -> Result<bool> {
    let missing = match ((step.check)(privilege)?, mode) {
        (State::Ready(found), _) => {
            println!("ok ({found})");
            return Ok(true);
        }
        // Not a failure when installing (nothing needs it yet), but not
        // ready either when asked to check.
        (State::Manual(todo), _) => {
            println!("not done: {todo}");
            return Ok(mode == Mode::Install);
        }
        (State::Missing(missing), Mode::Check) => {
            println!("{missing}");
            return Ok(false);
        }
        (State::Missing(missing), Mode::Install) => missing,
    };
    print_now(&format!("{missing}; {} ... ", step.how));
    (step.install)(privilege)?;
    match (step.check)(privilege)? {
        State::Ready(found) => println!("done ({found})"),
        State::Missing(still) | State::Manual(still) => {
            bail!("still missing after installing: {still}")
        }
    }
    Ok(true)
}

/// Prints without a newline and shows it at once, so a slow step's line says
/// what it is doing while it does it.
fn print_now(text: &str) {
    print!("{text}");
    // A failed flush only delays the text; nothing to recover.
    let _ = io::stdout().flush();
}

/// What to tell the user when a step fails: which step, and how to do the
/// whole set-up by hand.
fn failure_help(step: &str) -> String {
    format!(
        "setup could not finish `{step}`. To set up by hand, as root on Debian or Ubuntu:\n\
         \x20   apt-get update && apt-get install -y {packages}\n\
         \x20   rustup toolchain install nightly && rustup component add rust-src --toolchain nightly\n\
         \x20   PATH={LLVM_BIN_DIR}:$PATH cargo {bpf_linker} --locked\n\
         \x20   cargo {cargo_fuzz}\n\
         \x20   python3 -m venv target/{VIRTME_NG_DIR} && \
         target/{VIRTME_NG_DIR}/bin/pip install virtme-ng=={VIRTME_NG_VERSION}\n\
         \x20   mount -t tracefs nodev {TRACEFS}\n\
         and make sure ~/.cargo/bin is on PATH",
        packages = APT_PACKAGES.join(" "),
        bpf_linker = BPF_LINKER_INSTALL.join(" "),
        cargo_fuzz = CARGO_FUZZ_INSTALL.join(" "),
    )
}

fn check_apt_packages(_: Privilege) -> Result<State> {
    if workspace::find_on_path("dpkg-query").is_none() {
        return Ok(State::Missing(
            "no dpkg-query: not a Debian or Ubuntu system".into(),
        ));
    }
    let missing = missing_apt_packages()?;
    Ok(if missing.is_empty() {
        State::Ready(format!("{} packages installed", APT_PACKAGES.len()))
    } else {
        State::Missing(format!("not installed: {}", missing.join(" ")))
    })
}

fn missing_apt_packages() -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in APT_PACKAGES {
        // dpkg-query fails for packages it has never heard of: not installed.
        let status = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", package])
            .output()
            .context("cannot run dpkg-query")?;
        if !is_installed_status(&String::from_utf8_lossy(&status.stdout)) {
            missing.push(package);
        }
    }
    Ok(missing)
}

/// Reads dpkg's `${Status}` ("want flag status"): removed packages whose
/// configuration files remain say `deinstall ok config-files`.
fn is_installed_status(status: &str) -> bool {
    status.split_whitespace().nth(2) == Some("installed")
}

fn install_apt_packages(privilege: Privilege) -> Result<()> {
    if workspace::find_on_path("apt-get").is_none() {
        bail!("no apt-get: automatic set-up supports Debian and Ubuntu only");
    }
    let missing = missing_apt_packages()?;
    process::captured(&mut apt_get(privilege, &["update"])?)?;
    let install = [&["install", "-y"][..], &missing].concat();
    process::captured(&mut apt_get(privilege, &install)?)?;
    Ok(())
}

/// apt-get as root, never asking questions (sudo resets the environment, so
/// the variable goes through `env`).
fn apt_get(privilege: Privilege, args: &[&str]) -> Result<Command> {
    let mut command = privilege.command("env").context("apt-get needs root")?;
    command
        .args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
        .args(args);
    Ok(command)
}

fn check_nightly(_: Privilege) -> Result<State> {
    if workspace::find_on_path("rustup").is_none() {
        bail!("rustup not found: install Rust with rustup (https://rustup.rs)");
    }
    let toolchains = process::captured(Command::new("rustup").args(["toolchain", "list"]))?;
    if !has_nightly(&toolchains) {
        return Ok(State::Missing("not installed".into()));
    }
    let version =
        process::captured(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))?;
    match llvm_major_of_rustc(&version) {
        Some(LLVM_MAJOR) => Ok(State::Ready(format!(
            "{}, LLVM {LLVM_MAJOR}",
            version.lines().next().unwrap_or("nightly")
        ))),
        other => bail!(
            "the nightly toolchain uses LLVM {}, but bpf-linker is built against LLVM {LLVM_MAJOR}; \
             they must match: install a nightly whose `rustc -vV` says LLVM version {LLVM_MAJOR}",
            other.map_or("(unknown)".into(), |major| major.to_string())
        ),
    }
}

/// Whether `rustup toolchain list` shows a nightly (`nightly-<host>`, with
/// markers such as `(default)` after it).
fn has_nightly(toolchains: &str) -> bool {
    toolchains
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| name == "nightly" || name.starts_with("nightly-"))
}

/// The LLVM major from `rustc -vV` (`LLVM version: 22.1.2`).
fn llvm_major_of_rustc(verbose_version: &str) -> Option<u32> {
    verbose_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))?
        .trim()
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// This machine image cannot download toolchains, so the nightly must ship
/// with it; elsewhere rustup installs it.
fn install_nightly(_: Privilege) -> Result<()> {
    process::captured(Command::new("rustup").args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
    ]))
    .context(
        "cannot install the nightly toolchain (is the network to static.rust-lang.org reachable?)",
    )?;
    Ok(())
}

fn check_rust_src(_: Privilege) -> Result<State> {
    let Some(installed) = process::probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ])) else {
        return Ok(State::Missing(
            "cannot list the nightly's components".into(),
        ));
    };
    Ok(if has_component(&installed, "rust-src") {
        State::Ready("installed".into())
    } else {
        State::Missing("not installed".into())
    })
}

/// Whether `rustup component list --installed` lists `component` by its bare
/// name, as it lists target-independent components such as rust-src.
fn has_component(installed: &str, component: &str) -> bool {
    installed
        .lines()
        .any(|line| line.split_whitespace().next() == Some(component))
}

fn install_rust_src(_: Privilege) -> Result<()> {
    process::captured(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))?;
    Ok(())
}

fn check_bpf_linker(_: Privilege) -> Result<State> {
    let Some(path) = workspace::find_on_path("bpf-linker") else {
        return Ok(State::Missing("not found on PATH".into()));
    };
    let Some(version) = process::probe(Command::new(&path).arg("--version")) else {
        return Ok(State::Missing(format!(
            "`{} --version` fails",
            path.display()
        )));
    };
    let version = version.trim();
    // ldd fails on static binaries; what it printed still tells.
    let ldd = Command::new("ldd")
        .arg(&path)
        .output()
        .map_or(String::new(), |output| {
            String::from_utf8_lossy(&output.stdout).into_owned()
        });
    Ok(match linked_llvm_major(&ldd) {
        Some(LLVM_MAJOR) => State::Ready(format!("{version}, libLLVM {LLVM_MAJOR}")),
        Some(other) => State::Missing(format!("{version} is built against LLVM {other}")),
        None => State::Ready(format!("{version}, LLVM linked statically")),
    })
}

/// The LLVM major of the libLLVM that ldd lists, named `libLLVM.so.22.1`,
/// `libLLVM.so.22` or `libLLVM-22.so`; `None` when no libLLVM is linked.
fn linked_llvm_major(ldd: &str) -> Option<u32> {
    let library = ldd
        .split_whitespace()
        .find_map(|word| word.strip_prefix("libLLVM"))?;
    let version = library
        .strip_prefix(".so.")
        .or_else(|| library.strip_prefix('-'))?;
    let digits = version
        .find(|c: char| !c.is_ascii_digit())
        .map_or(version, |end| &version[..end]);
    digits.parse().ok()
}

/// Tries `--locked` first (the dependency versions bpf-linker was released
/// with), then without, in case a locked dependency no longer builds here.
fn install_bpf_linker(_: Privilege) -> Result<()> {
    let Err(locked_failure) = process::captured(&mut bpf_linker_install(true)) else {
        return Ok(());
    };
    print_now("failed with --locked, retrying without it ... ");
    process::captured(&mut bpf_linker_install(false)).with_context(|| {
        format!("{locked_failure:#}\nretried without --locked, which failed too:")
    })?;
    Ok(())
}

/// The install command (cargo install reads only the user's cargo
/// configuration, not this workspace's, so its rustflags do not apply).
fn bpf_linker_install(locked: bool) -> Command {
    let mut cargo = workspace::cargo();
    cargo
        .env("PATH", path_with_llvm_first())
        .args(BPF_LINKER_INSTALL);
    if locked {
        cargo.arg("--locked");
    }
    cargo
}

/// PATH with LLVM 22's tools first, so bpf-linker's build finds
/// `llvm-config` for LLVM 22 and not another installed LLVM.
fn path_with_llvm_first() -> String {
    match env::var("PATH") {
        Ok(path) if !path.is_empty() => format!("{LLVM_BIN_DIR}:{path}"),
        _ => LLVM_BIN_DIR.into(),
    }
}

/// cargo-fuzz as the nightly toolchain runs it (`cargo +nightly fuzz`).
fn check_cargo_fuzz(_: Privilege) -> Result<State> {
    let version = process::probe(Command::new("rustup").args([
        "run",
        "nightly",
        "cargo",
        "fuzz",
        "--version",
    ]));
    Ok(match version {
        Some(version) => State::Ready(version.trim().into()),
        None => State::Missing("not installed".into()),
    })
}

fn install_cargo_fuzz(_: Privilege) -> Result<()> {
    process::captured(workspace::cargo().args(CARGO_FUZZ_INSTALL))?;
    Ok(())
}

/// Where virtme-ng's programs are (`vng`, and the `virtme-run` it calls).
pub fn virtme_ng_bin() -> Result<PathBuf> {
    Ok(workspace::target_dir()?.join(VIRTME_NG_DIR).join("bin"))
}

fn check_virtme_ng(_: Privilege) -> Result<State> {
    let vng = virtme_ng_bin()?.join("vng");
    Ok(
        match process::probe(Command::new(&vng).arg("--version")).as_deref() {
            Some(version) if is_virtme_ng(version) => State::Ready(vng.display().to_string()),
            Some(other) => State::Missing(format!("{} is {}", vng.display(), other.trim())),
            None => State::Missing(format!("no {}", vng.display())),
        },
    )
}

/// Whether `vng --version` says it is the version set-up installs.
fn is_virtme_ng(version: &str) -> bool {
    version.trim() == format!("virtme-ng {VIRTME_NG_VERSION}")
}

fn install_virtme_ng(_: Privilege) -> Result<()> {
    let bin = virtme_ng_bin()?;
    let environment = bin.parent().context("virtme-ng's directory")?;
    process::captured(
        Command::new("python3")
            .args(["-m", "venv"])
            .arg(environment),
    )?;
    process::captured(Command::new(bin.join("pip")).args([
        "install",
        "--quiet",
        &format!("virtme-ng=={VIRTME_NG_VERSION}"),
    ]))?;
    Ok(())
}

/// Classic tracepoints attach through tracefs. memtrace mounts it itself when
/// run as root, so without root this is advice, not a failure.
fn check_tracefs(privilege: Privilege) -> Result<State> {
    let mounted = Path::new(TRACEFS).join("events").is_dir();
    Ok(tracefs_state(mounted, privilege))
}

fn tracefs_state(mounted: bool, privilege: Privilege) -> State {
    if mounted {
        State::Ready(format!("mounted at {TRACEFS}"))
    } else if privilege == Privilege::Root {
        State::Missing("not mounted".into())
    } else {
        State::Manual(format!(
            "not mounted; as root run `mount -t tracefs nodev {TRACEFS}` \
             (memtrace mounts it itself when run as root)"
        ))
    }
}

fn mount_tracefs(privilege: Privilege) -> Result<()> {
    process::captured(
        privilege
            .command("mount")?
            .args(["-t", "tracefs", "nodev", TRACEFS]),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_dpkg_status_counts() {
        assert!(is_installed_status("install ok installed"));
        assert!(!is_installed_status("deinstall ok config-files"));
        assert!(!is_installed_status("install ok half-configured"));
        assert!(!is_installed_status(""));
    }

    #[test]
    fn nightly_is_found_among_toolchains() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(has_nightly("nightly (default)\n"));
        assert!(!has_nightly(
            "stable-x86_64-unknown-linux-gnu (active, default)\n"
        ));
        assert!(!has_nightly("my-nightly-x86_64-unknown-linux-gnu\n"));
    }

    #[test]
    fn llvm_major_is_read_from_rustc_verbose_version() {
        let version = "rustc 1.97.0-nightly (abcdef 2026-04-01)\nbinary: rustc\n\
                       host: x86_64-unknown-linux-gnu\nrelease: 1.97.0-nightly\nLLVM version: 22.1.2\n";
        assert_eq!(llvm_major_of_rustc(version), Some(22));
        assert_eq!(llvm_major_of_rustc("rustc 1.97.0\n"), None);
    }

    #[test]
    fn components_match_by_their_bare_name() {
        let installed =
            "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(installed, "rust-src"));
        assert!(!has_component(installed, "rust"));
        assert!(!has_component(
            "rust-docs-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
    }

    #[test]
    fn llvm_major_is_read_from_ldd_output() {
        let debian = "\tlinux-vdso.so.1 (0x00007f0c22957000)\n\
                      \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007f0c19600000)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1941e000)\n";
        assert_eq!(linked_llvm_major(debian), Some(22));
        assert_eq!(
            linked_llvm_major("\tlibLLVM-21.so => /usr/lib/libLLVM-21.so (0x1)\n"),
            Some(21)
        );
        assert_eq!(
            linked_llvm_major("\tlibLLVM.so.23 => /usr/lib/libLLVM.so.23 (0x1)\n"),
            Some(23)
        );
        assert_eq!(linked_llvm_major("\tstatically linked\n"), None);
        assert_eq!(linked_llvm_major(""), None);
    }

    #[test]
    fn virtme_ng_is_the_pinned_version() {
        assert!(is_virtme_ng("virtme-ng 1.42\n"));
        assert!(!is_virtme_ng("virtme-ng 1.41\n"));
        assert!(!is_virtme_ng(""));
    }

    #[test]
    fn tracefs_is_mounted_by_root_and_left_as_advice_otherwise() {
        assert!(matches!(
            tracefs_state(true, Privilege::Sudo),
            State::Ready(_)
        ));
        assert_eq!(
            tracefs_state(false, Privilege::Root),
            State::Missing("not mounted".into())
        );
        for user in [Privilege::Sudo, Privilege::None] {
            assert!(matches!(
                tracefs_state(false, user),
                State::Manual(todo) if todo.contains("mount -t tracefs nodev /sys/kernel/tracing")
            ));
        }
    }

    #[test]
    fn bpf_linker_is_installed_for_llvm_22_with_llvm_22_tools_first() {
        let install = bpf_linker_install(true);
        let line = process::describe(&install);
        assert!(line.ends_with(
            "install bpf-linker --version 0.13.0 --no-default-features --features llvm-22 --force --locked"
        ));
        assert!(!process::describe(&bpf_linker_install(false)).contains("--locked"));
        assert!(path_with_llvm_first().starts_with("/usr/lib/llvm-22/bin"));
    }

    #[test]
    fn failure_help_gives_every_manual_step() {
        let help = failure_help("bpf-linker (LLVM 22)");
        assert!(help.contains("`bpf-linker (LLVM 22)`"));
        assert!(help.contains("apt-get install -y llvm-22-dev libpolly-22-dev"));
        assert!(help.contains("rustup component add rust-src --toolchain nightly"));
        assert!(help.contains(
            "PATH=/usr/lib/llvm-22/bin:$PATH cargo install bpf-linker --version 0.13.0 \
             --no-default-features --features llvm-22 --force --locked"
        ));
        assert!(help.contains("mount -t tracefs nodev /sys/kernel/tracing"));
        assert!(help.contains("cargo install cargo-fuzz --version 0.13.2 --locked"));
        assert!(help.contains(
            "python3 -m venv target/virtme-ng && target/virtme-ng/bin/pip install virtme-ng==1.42"
        ));
        assert!(help.contains("linux-image-amd64 qemu-system-x86 busybox-static python3-venv"));
        assert!(help.contains("prometheus podman runc"));
    }
}
