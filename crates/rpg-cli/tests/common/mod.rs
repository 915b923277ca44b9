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

/// The ring of a run's last checkpoint, as f32 values.
pub fn ring(run: &Path) -> Vec<f32> {
    let bytes = std::fs::read(run.join("checkpoints/last/model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = tensors.tensor("rpg.ring").unwrap();
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The largest difference, relative to the largest value, over every
/// tensor of two runs' last model files (the ring and the unshared tensors).
pub fn model_difference(a: &Path, b: &Path) -> f32 {
    let read = |run: &Path| std::fs::read(run.join("checkpoints/last/model.safetensors")).unwrap();
    let (a, b) = (read(a), read(b));
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let mut names = a.names();
    names.sort();
    assert_eq!(names.len(), b.names().len());
    let mut worst = 0f32;
    for name in names {
        let values = |t: &safetensors::SafeTensors<'_>| -> Vec<f32> {
            t.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let (x, y) = (values(&a), values(&b));
        let scale = x.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        let diff = x
            .iter()
            .zip(&y)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        worst = worst.max(diff / scale);
    }
    worst
}

/// The epoch's training loss a run recorded (over every rank's share).
pub fn train_loss(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last = text
        .lines()
        .rfind(|l| l.contains("\"kind\":\"epoch\""))
        .unwrap();
    let record: serde_json::Value = serde_json::from_str(last).unwrap();
    record["train_loss"].as_f64().unwrap()
}

/// Fails unless two runs trained alike: rings, every tensor and the epoch's
/// training loss within 1e-5 of their largest values (two ranks sum in
/// another order than one process, so rounding, not bit for bit).
pub fn assert_trained_alike(a: &Path, b: &Path) {
    let (x, y) = (ring(a), ring(b));
    assert_eq!(x.len(), y.len());
    let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    // Measured 2026-12-02 over MPI: 1.6e-7 of the largest value.
    assert!(worst <= 1e-5 * scale, "rings differ by {worst} of {scale}");
    let tensors = model_difference(a, b);
    assert!(
        tensors <= 1e-5,
        "tensors differ by {tensors} of their largest values"
    );
    let (l1, l2) = (train_loss(a), train_loss(b));
    assert!(
        (l1 - l2).abs() <= 1e-5 * l1.abs(),
        "training losses {l1} and {l2}"
    );
}
