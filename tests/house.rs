//! The house rules that the compiler cannot check: library crates name no
//! command-line flag (the binary maps config keys to flags), and only the
//! binary depends on clap, anyhow (outside tests) and indicatif.

use std::path::{Path, PathBuf};

const LIBRARIES: [&str; 8] = [
    "rpg-core",
    "rpg-kernels",
    "rpg-nn",
    "rpg-data",
    "rpg-models",
    "rpg-compress",
    "rpg-onnx",
    "rpg-train",
];

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates")
        .join(name)
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

/// `--word` inside a string literal of a line, other than cargo's
/// `--features`.
fn flag_in_string(line: &str) -> Option<String> {
    let mut in_string = false;
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'-' if in_string && line[i..].starts_with("--") => {
                let word: String = line[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '-')
                    .collect();
                // A flag starts with a letter (`|---|` is a table rule).
                if word.starts_with(|c: char| c.is_ascii_lowercase()) && word != "features" {
                    return Some(format!("--{word}"));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[test]
fn no_library_string_names_a_flag() {
    let mut found = Vec::new();
    for name in LIBRARIES {
        let mut files = Vec::new();
        rust_files(&crate_dir(name).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                // Unit tests sit at the end of a file; they may spell flags.
                if line.starts_with("#[cfg(test)]") {
                    break;
                }
                if line.trim_start().starts_with("//") {
                    continue;
                }
                if let Some(flag) = flag_in_string(line) {
                    found.push(format!("{}:{}: {flag}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "library strings name flags (name the config key instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_sees_flags_in_strings_only() {
    assert_eq!(
        flag_in_string(r#"bail!("lower --lr now")"#).as_deref(),
        Some("--lr")
    );
    assert_eq!(flag_in_string("let x = a --b;"), None);
    assert_eq!(flag_in_string(r#""|---|---|""#), None);
    assert_eq!(flag_in_string(r#""rebuild with `--features cuda`""#), None);
    assert_eq!(
        flag_in_string(r#""a \" --quoted""#).as_deref(),
        Some("--quoted")
    );
}

#[test]
fn only_the_binary_depends_on_clap_anyhow_and_indicatif() {
    for name in LIBRARIES {
        let manifest = std::fs::read_to_string(crate_dir(name).join("Cargo.toml")).unwrap();
        let mut section = String::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line.to_string();
                continue;
            }
            if section != "[dependencies]" {
                continue;
            }
            for banned in ["clap", "anyhow", "indicatif"] {
                assert!(
                    !line.starts_with(&format!("{banned} "))
                        && !line.starts_with(&format!("{banned}.")),
                    "{name} depends on {banned}: only rpg-cli may"
                );
            }
        }
    }
}

/// The top-level module a `crate::` path names: `crate::setup::Built` is
/// `setup`; `crate::Error`, re-exported at the root, is the module it is
/// re-exported from.
fn module_of(path: &str, reexports: &std::collections::HashMap<String, String>) -> String {
    let first: String = path
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    reexports.get(&first).cloned().unwrap_or(first)
}

/// `name -> module` for every `pub use module::{names}` of a crate root.
fn root_reexports(root: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for statement in root.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        for name in names.split(|c: char| "{}, \n".contains(c)) {
            let name = name.rsplit(" as ").next().unwrap_or(name).trim();
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                out.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    out
}

/// For each top-level module of a crate, the modules it uses (outside
/// comments and its unit tests).
fn module_graph(
    name: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = crate_dir(name).join("src");
    let root = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let reexports = root_reexports(&root);
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph = std::collections::BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let uses: &mut std::collections::BTreeSet<String> = graph.entry(top.clone()).or_default();
        for line in text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")) {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let module = module_of(&line[at + "crate::".len()..], &reexports);
                if !module.is_empty() && module != top {
                    uses.insert(module);
                }
            }
        }
    }
    graph
}

/// No two modules of a crate use each other, directly or around a circle.
/// `error.rs` is the one sink: it wraps every subsystem's error, which in
/// turn returns the crate's `Result`.
#[test]
fn no_crate_has_an_import_circle() {
    for name in LIBRARIES {
        let graph = module_graph(name);
        // Depth-first search for a back edge.
        fn visit(
            node: &str,
            graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
            state: &mut std::collections::HashMap<String, u8>,
            stack: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            state.insert(node.to_string(), 1);
            stack.push(node.to_string());
            if node != "error" {
                for next in graph.get(node).into_iter().flatten() {
                    if !graph.contains_key(next) {
                        continue;
                    }
                    match state.get(next.as_str()) {
                        Some(1) => {
                            let at = stack.iter().position(|s| s == next).unwrap();
                            let mut circle = stack[at..].to_vec();
                            circle.push(next.clone());
                            return Some(circle);
                        }
                        None => {
                            if let Some(circle) = visit(next, graph, state, stack) {
                                return Some(circle);
                            }
                        }
                        _ => {}
                    }
                }
            }
            stack.pop();
            state.insert(node.to_string(), 2);
            None
        }
        let mut state = std::collections::HashMap::new();
        for node in graph.keys() {
            if !state.contains_key(node.as_str()) {
                let circle = visit(node, &graph, &mut state, &mut Vec::new());
                assert!(circle.is_none(), "{name}: import circle {circle:?}");
            }
        }
    }
}
