//! A container, found by its id or name: its cgroup is what memtrace
//! traces.
//!
//! Every runtime names the container's cgroup directory after the
//! container's id (podman `libpod-ID`, docker `docker-ID` or `/docker/ID`,
//! containerd `cri-containerd-ID`, CRI-O `crio-ID`, each with `.scope`
//! under systemd), so an id, or its first characters, is found by walking
//! the hierarchy without asking anyone. A name is the runtime's own: the
//! runtimes installed are asked for the id it stands for.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::{Cgroup, CgroupError, Mounts};

/// A container and its memory cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The runtime's id (64 hex digits).
    pub id: String,
    /// The name it was asked for by, when that was a name.
    pub name: Option<String>,
    /// The runtime that named it, when one was asked.
    pub runtime: Option<&'static str>,
    pub cgroup: Cgroup,
}

/// Runtimes asked for a name's id, in this order, and how.
const RUNTIMES: [(&str, &[&str]); 4] = [
    ("podman", &["container", "inspect", "--format", "{{.Id}}"]),
    ("docker", &["container", "inspect", "--format", "{{.Id}}"]),
    ("nerdctl", &["container", "inspect", "--format", "{{.ID}}"]),
    ("crictl", &["ps", "--quiet", "--name"]),
];

/// How long a runtime may take to answer (a daemon that is down can hang).
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(5);

/// Directory depth searched below the hierarchy's root: Kubernetes puts
/// containers at `/kubepods.slice/kubepods-burstable.slice/…pod….slice/`.
const MAX_DEPTH: usize = 8;

/// Shortest id prefix taken as an id rather than a name.
const MIN_ID_PREFIX: usize = 4;

/// The container `given` names: an id or the start of one, else a name a
/// runtime knows.
pub fn resolve_container(given: &str) -> Result<Container, CgroupError> {
    let mounts = Mounts::read();
    let roots = roots(&mounts);
    let as_id = given.len() >= MIN_ID_PREFIX && given.bytes().all(|b| b.is_ascii_hexdigit());
    if as_id {
        if let Some(found) = find_by_id(&mounts, &roots, given, None, None)? {
            return Ok(found);
        }
    }
    let mut asked = Vec::new();
    for (runtime, args) in RUNTIMES {
        let Some(program) = on_path(runtime) else {
            continue;
        };
        asked.push(runtime);
        let Some(id) = ask(&program, args, given) else {
            continue;
        };
        if let Some(found) = find_by_id(&mounts, &roots, &id, Some(given), Some(runtime))? {
            return Ok(found);
        }
        return Err(CgroupError::Container(format!(
            "{runtime} says container {given} is {id}, but no cgroup of that id exists: \
             is it running?"
        )));
    }
    let runtimes = if asked.is_empty() {
        "no container runtime (podman, docker, nerdctl, crictl) is installed to ask for names"
            .to_owned()
    } else {
        format!("and {} do not know it", asked.join(", "))
    };
    Err(CgroupError::Container(format!(
        "no running container {given}: no cgroup is named for it, {runtimes}"
    )))
}

/// The hierarchies to search: v2 first (where tasks are tested), then v1's
/// memory controller.
fn roots(mounts: &Mounts) -> Vec<PathBuf> {
    [&mounts.v2, &mounts.v1_memory]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
}

/// The one container whose id starts with `prefix`; an error if several
/// do.
fn find_by_id(
    mounts: &Mounts,
    roots: &[PathBuf],
    prefix: &str,
    name: Option<&str>,
    runtime: Option<&'static str>,
) -> Result<Option<Container>, CgroupError> {
    let prefix = prefix.to_ascii_lowercase();
    for root in roots {
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        search(root, 0, &mut |dir, id| {
            if id.starts_with(&prefix) && !found.iter().any(|(seen, _)| seen == id) {
                found.push((id.to_owned(), dir.to_owned()));
            }
        });
        match found.len() {
            0 => continue,
            1 => {
                let (id, dir) = found.remove(0);
                let relative = format!("/{}", dir.strip_prefix(root).unwrap_or(&dir).display());
                let cgroup = Cgroup::at(mounts, &relative).ok_or_else(|| {
                    CgroupError::Container(format!(
                        "container {id} has a cgroup at {} but no memory controller there",
                        dir.display()
                    ))
                })?;
                return Ok(Some(Container {
                    id,
                    name: name.map(str::to_owned),
                    runtime,
                    cgroup,
                }));
            }
            _ => {
                return Err(CgroupError::Container(format!(
                    "{prefix} is the start of several containers' ids ({}): give more of it",
                    found
                        .iter()
                        .map(|(id, _)| &id[..12])
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        }
    }
    Ok(None)
}

/// Calls `visit` with every directory under `dir` named for a container,
/// and that container's id. A container's own sub-cgroups are not
/// searched.
fn search(dir: &Path, depth: usize, visit: &mut dyn FnMut(&Path, &str)) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            continue;
        }
        let path = entry.path();
        match entry.file_name().to_str().and_then(container_id) {
            Some(id) => visit(&path, id),
            None => search(&path, depth + 1, visit),
        }
    }
}

/// The id of the container a cgroup path (`/machine.slice/libpod-ID.scope`,
/// `/docker/ID`, a pod's nested scopes) is of: the innermost directory
/// that names one.
pub fn container_id_in_path(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(container_id)
}

/// The container id a cgroup directory's name holds, in any runtime's
/// layout; conmon's and other helpers' cgroups are not the container's.
fn container_id(name: &str) -> Option<&str> {
    let name = name.strip_suffix(".scope").unwrap_or(name);
    if name.contains("conmon") {
        return None;
    }
    let id = [
        "libpod-",
        "docker-",
        "cri-containerd-",
        "crio-",
        "containerd-",
    ]
    .iter()
    .find_map(|prefix| name.strip_prefix(prefix))
    .unwrap_or(name);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The runtime's answer for `given`: one id, or `None` when it does not
/// know it (or does not answer in time).
fn ask(program: &Path, args: &[&str], given: &str) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .arg(given)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + RUNTIME_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let output = child.wait_with_output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut ids = text
        .split_whitespace()
        .filter(|word| word.len() >= MIN_ID_PREFIX && word.bytes().all(|b| b.is_ascii_hexdigit()));
    let id = ids.next()?.to_ascii_lowercase();
    // A name that matches several (crictl matches by pattern) is not one.
    ids.next().is_none().then_some(id)
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "45eae9c15f399f68fdbc25b893434097883407d04188624d98dd00e23efe0703";

    #[test]
    fn every_runtimes_layout_names_the_id() {
        for name in [
            format!("libpod-{ID}"),
            format!("libpod-{ID}.scope"),
            format!("docker-{ID}.scope"),
            ID.to_owned(),
            format!("cri-containerd-{ID}.scope"),
            format!("crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&name), Some(ID), "{name}");
        }
        for name in [
            format!("libpod-conmon-{ID}.scope"),
            "libpod_parent".to_owned(),
            "system.slice".to_owned(),
            format!("libpod-{}", &ID[..12]),
        ] {
            assert_eq!(container_id(&name), None, "{name}");
        }
    }

    #[test]
    fn ids_are_found_by_their_start_and_ambiguity_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let other = format!("{}ff", &ID[..62]);
        for dir in [
            format!("libpod_parent/libpod-{ID}"),
            format!("libpod_parent/libpod-{other}"),
            format!("libpod_parent/libpod-conmon-{ID}"),
        ] {
            fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let mut seen = Vec::new();
        search(root.path(), 0, &mut |dir, id| {
            seen.push((id.to_owned(), dir.file_name().unwrap().to_owned()));
        });
        seen.sort();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].0, ID);
        let mounts = Mounts::default();
        let roots = [root.path().to_owned()];
        let err = find_by_id(&mounts, &roots, &ID[..8], None, None).unwrap_err();
        assert!(err.to_string().contains("several"), "{err}");
    }
}
