//! Running the `rpg` binary the way a user does, shared by the CLI tests.
// Each test file uses its own share of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist")
}

pub fn rpg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rpg"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run rpg")
}

/// Runs `rpg` and fails the test, with its stderr, unless it succeeded.
pub fn rpg_ok(args: &[&str]) -> Output {
    let out = rpg(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails unless the command failed with exactly one line on stderr that
/// contains `needle`.
pub fn fails_with(args: &[&str], needle: &str) {
    let out = rpg(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: `{needle}` not in {stderr}"
    );
}

/// `train --device device` fails with `needle` and leaves no run directory.
pub fn device_is_refused_before_the_run_directory(device: &str, needle: &str) {
    let runs = tempfile::tempdir().unwrap();
    let run = runs.path().join("run");
    let out = run.to_str().unwrap();
    fails_with(&["train", "--device", device, "--out", out], needle);
    assert!(!run.exists(), "a refused run left {out} behind");
}

/// Trains a tiny run on the bundled MNIST through the CLI into `run`,
/// with `extra` flags; panics with stderr when it fails.
pub fn train_tiny(run: &Path, extra: &[&str]) {
    let data = mnist();
    let mut args = vec![
        "train",
        "--out",
        run.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend(["--train-limit", "256", "--batch-size", "64"]);
    args.extend(extra);
    rpg_ok(&args);
}

/// `rpg eval` of `model` on the first `limit` bundled MNIST test images,
/// written to `out` and returned as JSON.
pub fn eval_on_mnist(model: &Path, limit: usize, out: &Path) -> serde_json::Value {
    let data = mnist();
    let limit = limit.to_string();
    rpg_ok(&[
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--test-limit",
        &limit,
        "--out",
        out.to_str().unwrap(),
    ]);
    serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}
