//! Output files, written so that nothing is lost or half-written (through
//! `rpg_nn::durable`: whole, synced, renamed into place, the directory
//! synced); a command never writes over one of its inputs; what a failed
//! command started is removed again.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// The files a run needs beside `checkpoints/`: no command but the run's
/// own writes over them.
pub const RUN_FILES: [&str; 5] = [
    "config.toml",
    "summary.json",
    "metrics.jsonl",
    "curves.png",
    ".rpg.lock",
];

/// `path` made absolute without requiring it to exist: its nearest
/// existing ancestor resolved (links included), the rest appended.
fn absolute(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut base = path.as_path();
    loop {
        if let Ok(real) = base.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                base = parent;
            }
            _ => return path,
        }
    }
}

/// The run directory `path` is in (or is): the nearest directory at or
/// above it that holds a run's `config.toml` and `checkpoints/`.
pub fn enclosing_run(path: &Path) -> Option<PathBuf> {
    absolute(path)
        .ancestors()
        .find(|d| d.join("config.toml").is_file() && d.join("checkpoints").is_dir())
        .map(Path::to_path_buf)
}

/// Refuses an output (the value of the setting `key`) that lies in a run
/// directory other than `own` (the run the command works on, if any), in
/// any run's `checkpoints/` (replaced at the run's next save), or on one of
/// [`RUN_FILES`]; a directory output may not be a run's own directory
/// either. A run directory belongs to its run.
pub fn check_destination(
    key: &'static str,
    output: &Path,
    own: Option<&Path>,
    directory: bool,
) -> Result<()> {
    let Some(run) = enclosing_run(output) else {
        return Ok(());
    };
    let target = absolute(output);
    let inside = |why: &'static str| {
        Err(Error::InsideRun {
            key,
            output: output.to_path_buf(),
            run: run.clone(),
            why,
        })
    };
    if own.map(absolute).as_deref() != Some(run.as_path()) {
        return inside("another run's directory");
    }
    if target.starts_with(run.join("checkpoints")) {
        return inside("the run's checkpoints/, which the run replaces at its next save");
    }
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if target.parent() == Some(run.as_path()) && RUN_FILES.contains(&name) {
        return inside("the run's own files");
    }
    if directory && target == run {
        return inside("the run's directory itself (give a folder of its own)");
    }
    Ok(())
}

/// Refuses an output path that names a directory (its temporary file would
/// land inside it, and the rename would fail).
pub fn check_file_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::invalid_setting(
            "out",
            path.display(),
            "is a directory: give the path of a file to write",
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably
/// (`rpg_nn::durable::write_atomic`).
pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    // durable refuses a directory itself, naming it.
    rpg_nn::durable::write_atomic(path, bytes).map_err(Error::io(path))
}

/// Writes `value` as pretty JSON to `path`, atomically and durably.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, json)
}

/// Refuses to write `output` (the value of the setting `key`) when it is
/// one of `inputs`: the same file under any name.
pub fn refuse_overwrite(key: &'static str, output: &Path, inputs: &[&Path]) -> Result<()> {
    let Ok(out) = output.canonicalize() else {
        // Not there yet: it cannot be an existing input.
        return Ok(());
    };
    for input in inputs {
        if input.canonicalize().is_ok_and(|i| i == out) {
            return Err(Error::OverwritesInput {
                key,
                output: output.to_path_buf(),
                input: input.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// An output directory and the files a command writes into it, removed
/// again unless the command [`finish`](NewOutputs::finish)es: the whole
/// directory when the command created it, else only its own files.
#[derive(Debug)]
pub struct NewOutputs {
    dir: PathBuf,
    created: bool,
    files: Vec<PathBuf>,
    finished: bool,
}

impl NewOutputs {
    /// Creates `dir` (and its parents) if needed.
    pub fn create(dir: &Path) -> Result<Self> {
        let created = !dir.exists();
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            created,
            files: Vec::new(),
            finished: false,
        })
    }

    /// `dir/name`, removed on failure.
    pub fn file(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        self.files.push(path.clone());
        path
    }

    /// The command succeeded: keep everything.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for NewOutputs {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Best effort: the command is failing already, and its error is
        // the one to report.
        if self.created {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            for f in &self.files {
                let _ = if f.is_dir() {
                    std::fs::remove_dir_all(f)
                } else {
                    std::fs::remove_file(f)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_json_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("summary.json");
        write_json(&path, &serde_json::json!({ "a": 1 })).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back["a"], 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/x.json");
        assert!(matches!(write_json(&missing, &1), Err(Error::Io { .. })));
    }

    #[test]
    fn an_output_that_is_an_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("model.safetensors");
        std::fs::write(&input, b"x").unwrap();
        let same = dir.path().join(".").join("model.safetensors");
        assert!(matches!(
            refuse_overwrite("out", &same, &[&input]),
            Err(Error::OverwritesInput { .. })
        ));
        let other = dir.path().join("dense.safetensors");
        refuse_overwrite("out", &other, &[&input]).unwrap();
    }

    #[test]
    fn unfinished_outputs_are_removed_and_others_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs.txt");
        std::fs::write(&theirs, b"keep").unwrap();
        {
            let mut outputs = NewOutputs::create(dir.path()).unwrap();
            std::fs::write(outputs.file("ours.txt"), b"x").unwrap();
        }
        assert!(theirs.is_file() && !dir.path().join("ours.txt").exists());
        let fresh = dir.path().join("fresh");
        {
            let mut outputs = NewOutputs::create(&fresh).unwrap();
            std::fs::write(outputs.file("a.txt"), b"x").unwrap();
        }
        assert!(!fresh.exists());
        let mut outputs = NewOutputs::create(&fresh).unwrap();
        std::fs::write(outputs.file("a.txt"), b"x").unwrap();
        outputs.finish();
        assert!(fresh.join("a.txt").is_file());
    }
}
