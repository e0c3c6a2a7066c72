//! The engine's source layout, checked: no source file over `MAX_LINES` lines, and no
//! import cycle between its files (a stage imports the shared types, never the wiring
//! in `node.rs`, and never another stage that imports it back).
//!
//! A file's imports are the `crate::`, `self::` and `super::` paths in its code
//! (comments aside), each resolved to the file of the module it names, and so is a
//! child module named by a relative path (`read_index::ReadQueue`); declaring it
//! (`mod read_index;`) is not an import. A name a module re-exports (`pub use`) counts
//! as an import of the module it comes from: `crate::Db` names `db.rs`, and a child's
//! `super::StateMachine` names `state_machine/traits.rs`, not `state_machine/mod.rs`.
//! So a directory's `mod.rs` may declare its children and re-export them, as `lib.rs`
//! does, while the children share what they need through a file of their own; a child
//! that uses something defined in a `mod.rs` which re-exports or uses that child is a
//! cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

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
            if !(stem == "mod" || ((stem == "lib" || stem == "main") && prefix.is_empty())) {
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
/// segments, a `{a, b::c}` group (`x::{a, b::c}`) giving one path per member.
fn paths_after(code: &str, head: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(head) {
        if code[..at].ends_with(':') || code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[at + head.len()..];
        let prefix = segments(rest);
        let group = match prefix.is_empty() {
            true => rest.strip_prefix('{'),
            false => rest[prefix.join("::").len()..].strip_prefix("::{"),
        };
        if let Some(group) = group {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let segs = segments(member.trim());
                if !segs.is_empty() {
                    out.push(prefix.iter().cloned().chain(segs).collect());
                }
            }
        } else {
            out.push(prefix);
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

/// Module → the names it re-exports (`pub use`, `pub(crate) use`) from the crate's
/// own modules, and where from.
type Reexports = BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>;

/// The names `code`, the code of `module`, re-exports from the crate's own modules, and
/// where from: `pub use a::{B, C};` and `pub use self::a::B;` name `module::a`,
/// `pub use crate::a::B;` names `a`, `pub use super::a::B;` names the sibling `a`.
fn reexports(
    module: &[String],
    code: &str,
    mods: &BTreeMap<Vec<String>, PathBuf>,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for stmt in code.split(';') {
        let stmt = stmt.trim();
        let Some(path) = ["pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|head| Some(stmt[stmt.find(head)? + head.len()..].trim()))
        else {
            continue;
        };
        let (base, names): (&str, Vec<&str>) = match path.split_once("::{") {
            Some((base, group)) => (base, group.trim_end_matches('}').split(',').collect()),
            None => match path.rsplit_once("::") {
                Some((base, name)) => (base, vec![name]),
                None => continue,
            },
        };
        let mut segs = base.split("::").map(str::to_string);
        let base: Vec<String> = match segs.next().as_deref() {
            Some("crate") => segs.collect(),
            Some("self") => module.iter().cloned().chain(segs).collect(),
            Some("super") => module[..module.len().saturating_sub(1)]
                .iter()
                .cloned()
                .chain(segs)
                .collect(),
            Some(first) => module
                .iter()
                .cloned()
                .chain(std::iter::once(first.to_string()))
                .chain(segs)
                .collect(),
            None => continue,
        };
        if !mods.contains_key(&base) {
            continue;
        }
        for name in names {
            // `pub use a::B as C;` re-exports `C`.
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if !name.is_empty() {
                out.insert(name.to_string(), base.clone());
            }
        }
    }
    out
}

/// The file a full path (from the crate root) names: the longest prefix that is a
/// module, or, when the name after it is one that module re-exports, the file the
/// name comes from.
fn resolve(
    path: &[String],
    mods: &BTreeMap<Vec<String>, PathBuf>,
    exported: &Reexports,
) -> Option<Vec<String>> {
    let mut path = path.to_vec();
    // Each pass follows one re-export; a chain longer than the module tree is a loop.
    for _ in 0..=mods.len() {
        let module = (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| mods.contains_key(m))?;
        let Some(origin) = path
            .get(module.len())
            .and_then(|name| exported.get(&module)?.get(name))
        else {
            return Some(module);
        };
        path = origin
            .iter()
            .chain(&path[module.len()..])
            .cloned()
            .collect();
    }
    panic!("re-exports that loop: {path:?}");
}

/// File → the files it imports.
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    imports_of(&src_dir())
}

/// File → the files it imports, for the crate whose sources are in `src` (its root
/// `lib.rs` or `main.rs`).
fn imports_of(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut mods = BTreeMap::new();
    modules(src, &[], &mut mods);
    let texts: BTreeMap<&Vec<String>, String> = mods
        .iter()
        .map(|(module, path)| {
            let text = std::fs::read_to_string(path).expect("read a source file");
            (module, code(&text))
        })
        .collect();
    let exported: Reexports = texts
        .iter()
        .map(|(module, text)| ((*module).clone(), reexports(module, text, &mods)))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, text) in &texts {
        let module = *module;
        let mut to = BTreeSet::new();
        for p in paths_after(text, "crate::") {
            to.extend(resolve(&p, &mods, &exported));
        }
        for p in paths_after(text, "self::") {
            let full: Vec<String> = module.iter().cloned().chain(p).collect();
            to.extend(resolve(&full, &mods, &exported));
        }
        // `super::` names the parent module (`a` from `a/b.rs`). Inside an inline
        // `mod tests` it would name the file's own module; those say `super::*`,
        // which names nothing here.
        let parent = module[..module.len().saturating_sub(1)].to_vec();
        for p in paths_after(text, "super::") {
            if p.is_empty() {
                continue;
            }
            let mut full = parent.clone();
            full.extend(p);
            to.extend(resolve(&full, &mods, &exported));
        }
        // A child module named by a relative path (`read_index::ReadQueue`).
        for child in child_modules(text) {
            for p in paths_after(text, &format!("{child}::")) {
                let mut full = module.clone();
                full.push(child.clone());
                full.extend(p);
                to.extend(resolve(&full, &mods, &exported));
            }
        }
        to.remove(module);
        // The crate root only declares modules and re-exports: not a dependency (a
        // name it re-exports resolves to where it comes from).
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
    assert!(all.is_empty(), "files that import each other: {all:#?}");
    // The rules the cycle check stands for, said directly.
    let node = vec!["node".to_string()];
    let shared = vec!["shared".to_string()];
    for (module, to) in &graph {
        // The handle on a node is the one way in: stages never see the wiring.
        if *module != node && module.first().map(String::as_str) != Some("replica") {
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

// The same rule for every other crate of the workspace (the engine's own test above adds
// the engine's particular rules).
#[test]
fn no_import_cycle_between_the_files_of_any_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in [
        "raft-core",
        "fs",
        "wal",
        "snapshot",
        "log-cache",
        "load",
        "cli",
    ] {
        let all = cycles(&imports_of(&root.join(krate).join("src")));
        assert!(
            all.is_empty(),
            "{krate}: files that import each other: {all:#?}"
        );
    }
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
    let text = code(
        "use crate::{error::Error, shared};\n// crate::node::Node\nx(crate::budget::B);\n\
         use crate::transport::{traits::Sink, Error};",
    );
    assert_eq!(
        paths_after(&text, "crate::"),
        vec![
            vec!["error".to_string(), "Error".to_string()],
            m("shared"),
            vec!["budget".to_string(), "B".to_string()],
            vec!["transport".into(), "traits".into(), "Sink".into()],
            vec!["transport".to_string(), "Error".to_string()],
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
