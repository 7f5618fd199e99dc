//! The crate's layering, checked: the top-level modules of `src/` (a
//! folder counts as one module) import each other without a cycle, so each
//! part can be read, tested and replaced from the bottom up. Doc comments
//! and test modules do not count; `main.rs` and `lib.rs` sit on top.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module -> the modules its code names as `crate::x`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in walkdir::WalkDir::new(&src).into_iter().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let rel = p.strip_prefix(&src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        let name = rel.to_string_lossy();
        let test_file =
            name.ends_with("_tests.rs") || name.contains("/tests/") || name.ends_with("/tests.rs");
        if top == "main" || top == "lib" || test_file {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        let deps = g.entry(top.clone()).or_default();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            // A test module: a declaration (`mod tests;`, its file is a
            // test file) is skipped; an inline one comes last in the file.
            if line.starts_with("#[cfg(test)]") {
                let item = lines.by_ref().find(|l| !l.trim_start().starts_with("#["));
                if item.is_some_and(|l| l.trim_end().ends_with(';')) {
                    continue;
                }
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let name: String = code[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let module = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
                if module && name != top {
                    deps.insert(name);
                }
            }
            // `use crate::{a, b::c}`
            if let Some(rest) = code.trim_start().strip_prefix("use crate::{") {
                for part in rest.split([',', '}']) {
                    let name = part.trim().split("::").next().unwrap_or("").to_string();
                    if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && name != top {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    g
}

/// A cycle through `start`, if there is one.
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in g.get(&node).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let g = graph();
    assert!(g.len() > 10, "too few modules found: {g:?}");
    let cycles: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_from(&g, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_pure_parts_do_no_io_of_the_peer() {
    let g = graph();
    let pure = [
        "names",
        "proto",
        "timestamp",
        "limits",
        "display",
        "error",
        "cli",
        "placement",
    ];
    let io = [
        "peer", "server", "client", "session", "shell", "sync", "folder",
    ];
    for p in pure {
        let deps = g.get(p).cloned().unwrap_or_default();
        let bad: Vec<&String> = deps.iter().filter(|d| io.contains(&d.as_str())).collect();
        assert!(bad.is_empty(), "{p} imports {bad:?}");
    }
}
