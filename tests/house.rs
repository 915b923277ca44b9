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
                if !word.is_empty() && word != "features" {
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
