//! The engine's source layout, checked: no source file over `MAX_LINES` lines, and no
//! import cycle between its files (a stage imports the shared types, never the wiring
//! in `node.rs`, and never another stage that imports it back).
//!
//! A file's imports are the `crate::` and `super::` paths in its code (comments
//! aside), each resolved to the file of the module it names; a name re-exported by
//! `lib.rs` (`crate::Db`) counts as an import of the module it comes from, and so does a
//! child module named by a relative path (`read_index::ReadQueue`); declaring it
//! (`mod read_index;`) is not. Two directory modules predate the rule
//! (`KNOWN_DIRECTORY_CYCLES`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

// Directory modules whose `mod.rs` and children still import each other (the
// transport's `Inner` and the `StateMachine` trait live in `mod.rs`). To be removed
// once they are split like `raft_stage/`.
const KNOWN_DIRECTORY_CYCLES: &[&str] = &["transport", "state_machine"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, by its module path (`["raft_stage", "membership"]`;
/// `lib.rs` is `[]`).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read the source directory")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 name")
            .to_string();
        if path.is_dir() {
            let mut sub = prefix.to_vec();
            sub.push(name);
            modules(&path, &sub, out);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            let mut module = prefix.to_vec();
            if !(stem == "mod" || (stem == "lib" && prefix.is_empty())) {
                module.push(stem.to_string());
            }
            out.insert(module, path);
        }
    }
}

/// The code of a file without its comments (line comments and doc comments; the
/// engine has no block comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // Not inside a string literal: an even number of quotes before it.
            Some(at) if line[..at].matches('"').count() % 2 == 0 => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths that follow `head` (`crate::`, `super::`) in `code`: each as its
/// segments, a `{a, b::c}` group giving one path per member.
fn paths_after(code: &str, head: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(head) {
        if code[..at].ends_with(':') || code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[at + head.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let segs = segments(member.trim());
                if !segs.is_empty() {
                    out.push(segs);
                }
            }
        } else {
            out.push(segments(rest));
        }
    }
    out
}

fn segments(s: &str) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        segs.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(more) if more.starts_with(is_ident) => rest = more,
            _ => break,
        }
    }
    segs
}

/// The modules `code` declares (`mod x;`, `pub(crate) mod x;`).
fn child_modules(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|line| {
            let line = line.trim();
            let at = line.find("mod ")?;
            let before = line[..at].trim();
            let is_decl = before.is_empty() || before.starts_with("pub");
            let name = line[at + "mod ".len()..].strip_suffix(';')?;
            (is_decl && name.chars().all(is_ident)).then(|| name.to_string())
        })
        .collect()
}

/// The names `lib.rs` re-exports from the crate's own modules, and where from.
fn reexports(lib: &str, mods: &BTreeMap<Vec<String>, PathBuf>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let lib = code(lib);
    for stmt in lib.split(';') {
        let Some(at) = stmt.find("pub use ") else {
            continue;
        };
        let path = stmt[at + "pub use ".len()..].trim();
        let (base, names): (&str, Vec<&str>) = match path.split_once("::{") {
            Some((base, group)) => (base, group.trim_end_matches('}').split(',').collect()),
            None => match path.rsplit_once("::") {
                Some((base, name)) => (base, vec![name]),
                None => continue,
            },
        };
        let base: Vec<String> = base.split("::").map(str::to_string).collect();
        if !mods.contains_key(&base) {
            continue;
        }
        for name in names {
            let name = name.trim();
            if !name.is_empty() {
                out.insert(name.to_string(), base.clone());
            }
        }
    }
    out
}

/// The file a path from `from` names: the longest prefix that is a module.
fn resolve(
    path: &[String],
    mods: &BTreeMap<Vec<String>, PathBuf>,
    exported: &BTreeMap<String, Vec<String>>,
) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| mods.contains_key(m))
        .or_else(|| exported.get(path.first()?).cloned())
}

/// File → the files it imports.
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut mods = BTreeMap::new();
    modules(&src_dir(), &[], &mut mods);
    let lib = std::fs::read_to_string(&mods[&Vec::new()]).expect("read lib.rs");
    let exported = reexports(&lib, &mods);
    let mut graph = BTreeMap::new();
    for (module, path) in &mods {
        let text = code(&std::fs::read_to_string(path).expect("read a source file"));
        let mut to = BTreeSet::new();
        for p in paths_after(&text, "crate::") {
            to.extend(resolve(&p, &mods, &exported));
        }
        // `super::` names the parent module (`a` from `a/b.rs`). Inside an inline
        // `mod tests` it would name the file's own module; those say `super::*`,
        // which names nothing here.
        let parent = module[..module.len().saturating_sub(1)].to_vec();
        for p in paths_after(&text, "super::") {
            if p.is_empty() {
                continue;
            }
            let mut full = parent.clone();
            full.extend(p);
            to.extend(resolve(&full, &mods, &exported));
        }
        // A child module named by a relative path (`read_index::ReadQueue`).
        for child in child_modules(&text) {
            for p in paths_after(&text, &format!("{child}::")) {
                let mut full = module.clone();
                full.push(child.clone());
                full.extend(p);
                to.extend(resolve(&full, &mods, &exported));
            }
        }
        to.remove(module);
        // The crate root only declares modules and re-exports: not a dependency.
        to.remove(&Vec::new());
        graph.insert(module.clone(), to);
    }
    graph
}

/// The strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        found: Vec<Vec<Vec<String>>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.found
}

fn name(module: &[String]) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

#[test]
fn no_import_cycle_between_the_engines_files() {
    let graph = imports();
    let all = cycles(&graph);
    for scc in &all {
        let files: Vec<String> = scc.iter().map(|m| name(m)).collect();
        eprintln!("files that import each other: {}", files.join(", "));
    }
    // Only these directory modules still have a `mod.rs` that uses its children and
    // children that use it back (the trait or the shared `Inner` lives in `mod.rs`);
    // no cycle may reach past one of them, and no other file may be in one.
    let new: Vec<&Vec<Vec<String>>> = all
        .iter()
        .filter(|scc| {
            !KNOWN_DIRECTORY_CYCLES.iter().any(|dir| {
                scc.iter()
                    .all(|m| m.first().map(String::as_str) == Some(*dir))
            })
        })
        .collect();
    assert!(new.is_empty(), "files that import each other: {new:#?}");
    // The rules the cycle check stands for, said directly.
    let node = vec!["node".to_string()];
    let shared = vec!["shared".to_string()];
    for (module, to) in &graph {
        if *module != node && module.first().map(String::as_str) != Some("db") {
            assert!(!to.contains(&node), "{} imports node.rs", name(module));
        }
    }
    assert!(
        graph[&shared]
            .iter()
            .all(|m| !m[0].ends_with("_stage") && m[0] != "supervisor"),
        "shared.rs imports a stage: {:?}",
        graph[&shared]
    );
}

#[test]
fn the_checker_sees_a_cycle_and_resolves_paths() {
    let mut graph = BTreeMap::new();
    let m = |s: &str| vec![s.to_string()];
    graph.insert(m("a"), BTreeSet::from([m("b")]));
    graph.insert(m("b"), BTreeSet::from([m("c")]));
    graph.insert(m("c"), BTreeSet::from([m("a")]));
    graph.insert(m("d"), BTreeSet::from([m("a")]));
    assert_eq!(cycles(&graph), vec![vec![m("a"), m("b"), m("c")]]);
    let text =
        code("use crate::{error::Error, shared};\n// crate::node::Node\nx(crate::budget::B);");
    assert_eq!(
        paths_after(&text, "crate::"),
        vec![
            vec!["error".to_string(), "Error".to_string()],
            m("shared"),
            vec!["budget".to_string(), "B".to_string()],
        ]
    );
}

#[test]
fn no_engine_source_file_is_over_the_line_limit() {
    let mut mods = BTreeMap::new();
    modules(&src_dir(), &[], &mut mods);
    let long: Vec<String> = mods
        .values()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).expect("read").lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}
