//! `cargo xtask layers`: checks that memtrace's modules import only
//! downward along the data flow, and that no files import each other in a
//! circle.
//!
//! The layers are declared here, lowest first; a module may use modules of
//! lower layers only, never one of its own layer or above. Imports are read
//! from the source as text: `use` declarations (with their brace groups) and
//! `crate::`/`memtrace::` paths anywhere in the code. A module's `mod.rs`
//! naming its own children (`mod x;`, `pub use x::Y`) is structure, not
//! data flow, and is not counted as an import.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::workspace;

/// memtrace's top-level modules from the bottom up. Modules in one layer
/// are siblings and must not use each other.
pub const LAYERS: &[&[&str]] = &[
    &["machine"],
    &[
        "cli",
        "capture",
        "safe_file",
        "kernel",
        "intake",
        "runtime",
        "gopprof",
        "elf",
    ],
    &["model"],
    &["proc"],
    &["symbolize", "unwind"],
    &["attribution"],
    &["report", "export"],
    &["session"],
    &["agent"],
    &["exit"],
    &["demo"],
    &["main"],
];

pub fn run() -> Result<()> {
    let src = workspace::root().join("memtrace/src");
    let files = read_tree(&src)?;
    let problems = check(&files);
    if problems.is_empty() {
        println!(
            "layers: {} files of memtrace/src import only downward, with no circles",
            files.len()
        );
        return Ok(());
    }
    for problem in &problems {
        eprintln!("layers: {problem}");
    }
    bail!("{} import(s) break memtrace's layering", problems.len())
}

/// Every `.rs` file under `src`, by its path relative to `src`.
fn read_tree(src: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                files.insert(path.strip_prefix(src)?.to_path_buf(), text);
            }
        }
    }
    Ok(files)
}

/// What breaks the layering of `files` (relative path → source).
pub fn check(files: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&Path, BTreeSet<PathBuf>> = BTreeMap::new();
    for (file, text) in files {
        // The crate root only declares the modules.
        if file == Path::new("lib.rs") {
            continue;
        }
        let from = top_module(file);
        let Some(from_layer) = layer_of(&from) else {
            problems.push(format!(
                "{}: module `{from}` has no layer in xtask/src/layers.rs",
                file.display()
            ));
            continue;
        };
        for path in imported_paths(text) {
            let target = resolve(file, &path, files);
            let Some(target) = target else { continue };
            let to = top_module(&target);
            if to != from {
                match layer_of(&to) {
                    Some(to_layer) if to_layer < from_layer => {}
                    _ => problems.push(format!(
                        "{}: `{}` uses `{to}`, which is not below `{from}`",
                        file.display(),
                        path.join("::")
                    )),
                }
            }
            if target != *file && !is_own_child(file, &target) {
                edges.entry(file.as_path()).or_default().insert(target);
            }
        }
    }
    problems.extend(circles(&edges));
    problems.sort();
    problems.dedup();
    problems
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file belongs to (`lib.rs` belongs to none).
fn top_module(file: &Path) -> String {
    let first = file
        .components()
        .next()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// Whether `target` is a module inside the module that `file` (a `mod.rs`)
/// defines.
fn is_own_child(file: &Path, target: &Path) -> bool {
    file.file_name().is_some_and(|name| name == "mod.rs")
        && file.parent().is_some_and(|dir| target.starts_with(dir))
}

/// The module path of a file: `report/verdict.rs` → `[report, verdict]`.
fn module_path(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    parts
}

/// The file a path used in `file` leads to: the longest prefix of the
/// absolute module path that is a file in the tree.
fn resolve(file: &Path, path: &[String], files: &BTreeMap<PathBuf, String>) -> Option<PathBuf> {
    let mut absolute: Vec<String> = match path.first().map(String::as_str) {
        Some("crate" | "memtrace") => Vec::new(),
        Some("super") => {
            let mut here = module_path(file);
            for part in path.iter().take_while(|part| *part == "super") {
                let _ = part;
                here.pop();
            }
            here
        }
        Some("self") => module_path(file),
        _ => return None,
    };
    absolute.extend(
        path.iter()
            .skip_while(|part| matches!(part.as_str(), "crate" | "memtrace" | "super" | "self"))
            .filter(|part| part.as_str() != "self")
            .cloned(),
    );
    (1..=absolute.len()).rev().find_map(|len| {
        let prefix = absolute[..len].join("/");
        [format!("{prefix}.rs"), format!("{prefix}/mod.rs")]
            .into_iter()
            .map(PathBuf::from)
            .find(|candidate| files.contains_key(candidate))
    })
}

/// Every path `text` uses that starts at the crate root or a parent module:
/// those in `use` declarations, with brace groups expanded, and `crate::`
/// paths written inline.
pub fn imported_paths(text: &str) -> Vec<Vec<String>> {
    let code = strip_comments(text);
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = find_word(rest, "use") {
        let after = &rest[at + 3..];
        let Some(end) = after.find(';') else { break };
        expand(&after[..end], &mut Vec::new(), &mut paths);
        rest = &after[end..];
    }
    for root in ["crate::", "memtrace::"] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(root) {
            let starts_word = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            let tail: String = rest[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if starts_word {
                let path: Vec<String> = tail
                    .split("::")
                    .filter(|part| !part.is_empty())
                    .map(str::to_owned)
                    .collect();
                if path.len() > 1 {
                    paths.push(path);
                }
            }
            rest = &rest[at + root.len()..];
        }
    }
    paths.retain(|path| {
        path.first()
            .is_some_and(|first| matches!(first.as_str(), "crate" | "memtrace" | "super" | "self"))
    });
    paths
}

/// Expands one `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    let (head, group) = match tree.find('{') {
        Some(open) if tree.ends_with('}') => (&tree[..open], Some(&tree[open + 1..tree.len() - 1])),
        _ => (tree, None),
    };
    let depth = prefix.len();
    prefix.extend(
        head.split("::")
            .map(|part| part.split(" as ").next().unwrap_or(part).trim())
            .filter(|part| !part.is_empty() && *part != "pub" && *part != "*")
            .map(str::to_owned),
    );
    match group {
        Some(group) => {
            for item in split_top_level(group) {
                expand(item, prefix, out);
            }
        }
        None if prefix.len() > depth || !prefix.is_empty() => out.push(prefix.clone()),
        None => {}
    }
    prefix.truncate(depth);
}

/// Splits a brace group's items on the commas outside nested braces.
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items.retain(|item| !item.trim().is_empty());
    items
}

/// `word` as a whole word at the start of a statement (after a newline,
/// `;`, `{`, `}` or `pub`/`pub(crate)`).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find(word) {
        let at = from + found;
        let before = text[..at].trim_end();
        let after = text[at + word.len()..].chars().next();
        let starts = before.is_empty()
            || before.ends_with([';', '{', '}', ']'])
            || before.ends_with("pub")
            || before.ends_with(')');
        if starts && after.is_some_and(char::is_whitespace) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The code without comments and string literals' contents, so neither
/// can look like an import.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                out.push('"');
                let mut escaped = false;
                for c in chars.by_ref() {
                    if !escaped && c == '"' {
                        break;
                    }
                    escaped = !escaped && c == '\\';
                }
                out.push('"');
            }
            other => out.push(other),
        }
    }
    out
}

/// Each circle among `edges` (file → files it uses), once.
fn circles(edges: &BTreeMap<&Path, BTreeSet<PathBuf>>) -> Vec<String> {
    let mut found = BTreeSet::new();
    for &start in edges.keys() {
        let mut stack = vec![(start.to_path_buf(), vec![start.to_path_buf()])];
        let mut seen = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(at.as_path()).into_iter().flatten() {
                if next == start {
                    let mut circle: Vec<String> =
                        trail.iter().map(|p| p.display().to_string()).collect();
                    // One name per circle, whichever file it was found from.
                    let first = circle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, p)| *p)
                        .map(|(i, _)| i);
                    circle.rotate_left(first.unwrap_or(0));
                    found.insert(circle.join(" → "));
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
        .into_iter()
        .map(|circle| format!("files import each other in a circle: {circle} → back"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> BTreeMap<PathBuf, String> {
        files
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
            .collect()
    }

    #[test]
    fn use_trees_are_expanded() {
        let paths = imported_paths(
            "use std::fmt;\nuse super::{format::{Bytes, Delta}, history::Trend};\n\
             pub(crate) use crate::model::Call as C;\nfn f() { crate::proc::read(); }",
        );
        let joined: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
        assert!(
            joined.contains(&"super::format::Bytes".to_owned()),
            "{joined:?}"
        );
        assert!(
            joined.contains(&"super::history::Trend".to_owned()),
            "{joined:?}"
        );
        assert!(
            joined.contains(&"crate::model::Call".to_owned()),
            "{joined:?}"
        );
        assert!(
            joined.contains(&"crate::proc::read".to_owned()),
            "{joined:?}"
        );
        assert!(!joined.iter().any(|p| p.starts_with("std")), "{joined:?}");
    }

    #[test]
    fn comments_and_strings_are_not_imports() {
        let paths = imported_paths("// use crate::session::X;\nlet s = \"crate::session::Y\";");
        assert!(paths.is_empty(), "{paths:?}");
    }

    #[test]
    fn an_import_upward_is_reported() {
        let files = tree(&[
            ("model/mod.rs", "use crate::report::Snapshot;"),
            ("report/mod.rs", "use crate::model::AddressSpace;"),
        ]);
        let problems = check(&files);
        assert!(
            problems.iter().any(|problem| problem
                .starts_with("model/mod.rs: `crate::report::Snapshot` uses `report`")),
            "{problems:?}"
        );
        assert!(
            !problems
                .iter()
                .any(|problem| problem.starts_with("report/")),
            "{problems:?}"
        );
    }

    #[test]
    fn siblings_in_one_layer_may_not_use_each_other() {
        let files = tree(&[
            ("export/pprof.rs", "use crate::report::attribution::Namer;"),
            ("report/mod.rs", ""),
        ]);
        assert_eq!(check(&files).len(), 1);
    }

    #[test]
    fn a_circle_between_two_files_is_reported() {
        let files = tree(&[
            ("report/history.rs", "use super::snapshot::Snapshot;"),
            ("report/snapshot.rs", "use super::history::Trend;"),
            ("report/mod.rs", "pub mod history;\npub mod snapshot;"),
        ]);
        let problems = check(&files);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("circle"), "{problems:?}");
    }

    #[test]
    fn a_mod_rs_re_exporting_its_children_is_no_circle() {
        let files = tree(&[
            (
                "symbolize/mod.rs",
                "mod namer;\npub use namer::Namer;\npub struct Symbolizer;",
            ),
            ("symbolize/namer.rs", "use super::Symbolizer;"),
        ]);
        assert!(check(&files).is_empty(), "{:?}", check(&files));
    }

    #[test]
    fn memtrace_itself_is_layered() {
        let src = workspace::root().join("memtrace/src");
        let problems = check(&read_tree(&src).unwrap());
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
