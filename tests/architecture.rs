//! docs/architecture.md stays true: every `src/` file it names exists, every folder of `src/`
//! is named, no file is over 400 lines, and the imports follow its `layers` block — nothing
//! imports a layer above its own, nothing imports its own parent, and no modules import each
//! other in a circle. Test files and models are exempt from the import rules (they may use
//! anything), not from the line limit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LIMIT: usize = 400;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn doc() -> String {
    std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/fs/contents.rs` → `["fs", "contents"]`; `mod.rs`, `lib.rs` name their folder.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn is_test(file: &Path) -> bool {
    let name = file.file_name().unwrap().to_string_lossy();
    name.ends_with("_tests.rs")
        || name.ends_with("_model.rs")
        || matches!(name.as_ref(), "tests.rs" | "model.rs" | "testing.rs")
        || file.components().any(|c| c.as_os_str() == "tests")
}

/// The layer of each top-level module, 0 at the top, from the doc's ```layers block.
fn layers() -> BTreeMap<String, usize> {
    let doc = doc();
    let block = doc.split("```layers\n").nth(1).expect("a ```layers block in the doc");
    let block = block.split("```").next().unwrap();
    let mut rank = BTreeMap::new();
    for (i, line) in block.lines().enumerate() {
        for name in line.split_whitespace() {
            rank.insert(name.to_string(), i);
        }
    }
    rank
}

/// Every `crate::a::b` and `super::x` a line of code names, resolved to the longest module
/// prefix that exists.
fn imports(me: &[String], code: &str, mods: &BTreeSet<Vec<String>>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (keyword, start) in [("crate::", 0usize), ("super::", 1)] {
        let mut rest = code;
        while let Some(i) = rest.find(keyword) {
            let boundary =
                rest[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric() && c != '_');
            let after = &rest[i + keyword.len()..];
            rest = after;
            if !boundary {
                continue;
            }
            let path: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut parts: Vec<String> = if start == 0 {
                Vec::new()
            } else {
                // `super` in `fs/contents.rs` is `fs`; in `fs/mod.rs` (module `fs`), the root.
                me[..me.len().saturating_sub(1)].to_vec()
            };
            parts.extend(path.split("::").filter(|p| !p.is_empty()).map(String::from));
            while !parts.is_empty() && !mods.contains(&parts) {
                parts.pop();
            }
            if !parts.is_empty() {
                out.push(parts);
            }
        }
    }
    out
}

#[test]
fn the_doc_names_every_folder_and_only_files_that_exist() {
    let doc = doc();
    let src = root().join("src");
    let mut named = 0;
    for word in
        doc.split(|c: char| c == '`' || c.is_whitespace() || c == ',' || c == '(' || c == ')')
    {
        let word = word.trim_end_matches(['.', ':']);
        if (word.starts_with("src/") || word.starts_with("fs/")) && word.ends_with(".rs") {
            let path = if word.starts_with("fs/") { src.join(word) } else { root().join(word) };
            assert!(path.is_file(), "docs/architecture.md names {word}, which is gone");
            named += 1;
        }
    }
    assert!(named > 20, "only {named} files named");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = format!("src/{}/", path.file_name().unwrap().to_string_lossy());
            assert!(doc.contains(&name), "docs/architecture.md does not name {name}");
        }
    }
}

#[test]
fn no_file_is_over_the_limit() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > LIMIT).then(|| format!("{} ({lines})", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {LIMIT} lines: {long:?}");
}

#[test]
fn imports_run_down_the_layers_without_circles() {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mods: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let rank = layers();
    let top = |m: &[String]| -> String {
        match m.first().map(String::as_str) {
            None => "main".into(),
            Some(name) => name.into(),
        }
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in files.iter().filter(|f| !is_test(f)) {
        let me = module_of(&src, file);
        let layer = *rank
            .get(&top(&me))
            .unwrap_or_else(|| panic!("{} is in no layer of docs/architecture.md", file.display()));
        for (n, line) in std::fs::read_to_string(file).unwrap().lines().enumerate() {
            if line.contains("#[cfg(test)]") {
                break; // what follows is test code
            }
            let code = line.split("//").next().unwrap();
            for target in imports(&me, code, &mods) {
                if target == me {
                    continue;
                }
                let at = format!("{}:{}", file.display(), n + 1);
                let their = rank.get(&top(&target)).copied().unwrap_or(usize::MAX);
                if their < layer {
                    wrong.push(format!(
                        "{at}: {} imports {} from a higher layer",
                        me.join("::"),
                        target.join("::")
                    ));
                }
                if me.starts_with(&target) {
                    wrong.push(format!(
                        "{at}: {} imports its parent {}",
                        me.join("::"),
                        target.join("::")
                    ));
                }
                edges.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A circle is a path back to where it started.
    for start in edges.keys() {
        let mut stack = vec![start.clone()];
        let mut seen = BTreeSet::new();
        while let Some(m) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                assert!(
                    next != start,
                    "{} is in an import circle (through {})",
                    start.join("::"),
                    m.join("::")
                );
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
    }
}
