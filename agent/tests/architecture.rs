//! The shape of the code, checked: the rules `docs/architecture.md` states.
//!
//! - no import cycle between the agent's top-level modules;
//! - no source file outside tests over 900 lines;
//! - no benchmark code in the product library;
//! - every top-level module is on the architecture page.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

const MAX_LINES: usize = 900;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ is in the repository")
        .to_path_buf()
}

/// `.rs` files below `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn is_test_file(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == "tests.rs")
        || p.components().any(|c| c.as_os_str() == "tests")
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests { .. }`.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level module → the top-level modules it names through `crate::`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        if is_test_file(file.strip_prefix(src).unwrap()) {
            continue;
        }
        let rel = file.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let deps = graph.entry(top.clone()).or_default();
        // `crate::name` anywhere, and `use crate::{a, b::c, ..}` groups.
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find("};").unwrap_or(group.len())];
                let mut depth = 0;
                let mut start = true;
                let mut name = String::new();
                for ch in group.chars() {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            start = true;
                            continue;
                        }
                        _ => {}
                    }
                    if depth == 0 && start {
                        if ch.is_alphanumeric() || ch == '_' {
                            name.push(ch);
                        } else if !name.is_empty() {
                            deps.insert(std::mem::take(&mut name));
                            start = false;
                        }
                    }
                }
                if !name.is_empty() {
                    deps.insert(name);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                deps.insert(name);
            }
        }
        deps.remove(&top);
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A cycle in the graph, if any, as the path around it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        path.push(n.to_string());
        for d in &graph[n] {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = path.iter().position(|p| p == d).unwrap();
                    let mut cycle = path[from..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_import_cycle_between_the_agents_modules() {
    let graph = module_graph(&repo().join("agent/src"));
    assert!(graph.len() > 10, "modules found: {graph:?}");
    assert!(
        graph["agent"].contains("workload") && graph["report"].contains("event"),
        "the graph reader finds imports: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between top-level modules: {}\nthe graph: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(find_cycle(&g).unwrap().len(), 4);
}

#[test]
fn no_source_file_outside_tests_is_over_900_lines() {
    let root = repo();
    let mut long = Vec::new();
    for dir in [
        "agent/src",
        "probe-common/src",
        "probe-ebpf/src",
        "xtask/src",
        "bench/src",
    ] {
        for f in rust_files(&root.join(dir)) {
            if is_test_file(f.strip_prefix(&root).unwrap()) {
                continue;
            }
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            if n > MAX_LINES {
                long.push(format!(
                    "{} ({n} lines)",
                    f.strip_prefix(&root).unwrap().display()
                ));
            }
        }
    }
    assert!(long.is_empty(), "split these by idea: {long:?}");
}

#[test]
fn no_benchmark_code_in_the_product_library() {
    let lib = std::fs::read_to_string(repo().join("agent/src/lib.rs")).unwrap();
    for line in lib.lines().filter(|l| l.starts_with("pub mod")) {
        assert!(
            !line.contains("bench"),
            "benchmark code in the product: {line}"
        );
    }
    let main = std::fs::read_to_string(repo().join("agent/src/main.rs")).unwrap();
    assert!(
        !main.contains("bench_support") && !main.contains("BenchHold"),
        "a benchmark command in the product binary"
    );
}

#[test]
fn every_module_is_on_the_architecture_page() {
    let page = std::fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let lib = std::fs::read_to_string(repo().join("agent/src/lib.rs")).unwrap();
    for m in lib.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
        let m = m.trim_end_matches(';');
        assert!(
            page.contains(&format!("`{m}/`"))
                || page.contains(&format!("`{m}.rs`"))
                || page.contains(&format!("`{m}/")),
            "docs/architecture.md does not name module `{m}`"
        );
    }
}
