//! `cargo xtask vendor-check`: the vendored candle-core is the published
//! 0.11.1 plus `backprop.diff`, nothing else. The published crate is
//! fetched by cargo (which checks it against the registry's checksum) and
//! its SHA-256 is compared with the one recorded in `SHA256SUMS`; the diff
//! is applied to a copy of its source, and every vendored file must equal
//! that copy, or, for the manifest cut down to the library target, the
//! hash recorded for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The vendored crate, relative to the project root.
const VENDORED: &str = "vendor/candle-core";
/// The published version it is made from.
const VERSION: &str = "0.11.1";
/// Files of the vendored directory that are ours, not the crate's.
const OURS: [&str; 3] = ["PATCHED.md", "backprop.diff", "SHA256SUMS"];

/// Runs the check; `cargo` runs cargo.
pub fn check(root: &Path, cargo: fn() -> Command) -> Result<()> {
    let vendored = root.join(VENDORED);
    let sums = read_sums(&vendored.join("SHA256SUMS"))?;
    let recorded = |name: &str| {
        sums.iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h.clone())
            .with_context(|| format!("{VENDORED}/SHA256SUMS records no hash for {name}"))
    };
    let work = std::env::temp_dir().join(format!("rpg-vendor-check-{}", std::process::id()));
    let _cleanup = Cleanup(work.clone());
    let published = fetch_published(&work, cargo)?;
    let crate_hash = sha256(&published)?;
    let expected = recorded(&format!("candle-core-{VERSION}.crate"))?;
    if crate_hash != expected {
        bail!(
            "{}: SHA-256 {crate_hash}, but {VENDORED}/SHA256SUMS records {expected} for the published crate",
            published.display()
        );
    }
    let source = work.join("published");
    std::fs::create_dir_all(&source)?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&published)
        .args(["--strip-components=1", "-C"])
        .arg(&source))?;
    run(Command::new("patch")
        .args(["--quiet", "-p1", "-d"])
        .arg(&source)
        .arg("-i")
        .arg(vendored.join("backprop.diff")))?;
    let mut checked = 0;
    for file in files(&vendored)? {
        let rel = file.strip_prefix(&vendored)?.to_string_lossy().into_owned();
        if OURS.contains(&rel.as_str()) {
            continue;
        }
        if rel == "Cargo.toml" {
            let hash = sha256(&file)?;
            let expected = recorded("Cargo.toml")?;
            if hash != expected {
                bail!(
                    "{VENDORED}/Cargo.toml changed: SHA-256 {hash}, recorded {expected} (the published manifest without its example, test and bench targets); \
                     update SHA256SUMS only with a reviewed change"
                );
            }
        } else {
            let theirs = source.join(&rel);
            let same = std::fs::read(&theirs).ok() == Some(std::fs::read(&file)?);
            if !same {
                bail!(
                    "{VENDORED}/{rel} differs from the published candle-core {VERSION} with backprop.diff applied: \
                     put the change into backprop.diff (and PATCHED.md), or restore the file"
                );
            }
        }
        checked += 1;
    }
    println!(
        "ok: {VENDORED} is candle-core {VERSION} (SHA-256 {crate_hash}) plus backprop.diff: {checked} files checked"
    );
    Ok(())
}

/// `name  hash` pairs of a sha256sum-style file (`hash  name`).
fn read_sums(path: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (hash, name) = l.split_once("  ")?;
            Some((name.trim().to_string(), hash.trim().to_string()))
        })
        .collect())
}

/// The published `.crate`, fetched by cargo into its cache (verified
/// against the registry index's checksum).
fn fetch_published(work: &Path, cargo: fn() -> Command) -> Result<PathBuf> {
    let project = work.join("fetch");
    std::fs::create_dir_all(project.join("src"))?;
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\ncandle-core = \"={VERSION}\"\n\n[workspace]\n"
        ),
    )?;
    std::fs::write(project.join("src/lib.rs"), "")?;
    let mut fetch = cargo();
    fetch.arg("fetch").current_dir(&project);
    fetch.env_remove("CARGO_TARGET_DIR");
    run(&mut fetch)?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let name = format!("candle-core-{VERSION}.crate");
    for index in std::fs::read_dir(home.join("registry/cache"))? {
        let candidate = index?.path().join(&name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cargo fetched candle-core {VERSION}, but {name} is not in {}/registry/cache",
        home.display()
    )
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(files(&path)?);
        } else {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("running sha256sum")?;
    if !out.status.success() {
        bail!("sha256sum {} failed", path.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Removes the work directory when the check ends, however it ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
