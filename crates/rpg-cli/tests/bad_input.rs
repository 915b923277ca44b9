//! Bad input and faults, run the way a user runs them: one case per class
//! of defect (issue "Nothing lost, nothing silently wrong"). Every failure
//! is one line naming what is wrong, and nothing outside the failed
//! command's own output changes.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};

use common::*;

/// Every file under `dir` with its bytes, to prove a failed command
/// changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

/// A one-epoch LeNet-5 run on 256 MNIST images, tested on `test_limit`.
fn trained_run(dir: &Path, test_limit: &str) -> PathBuf {
    let run = dir.join("run");
    train_tiny(&run, &["--epochs", "1", "--test-limit", test_limit]);
    run
}

/// Overwrites every value of tensor `name` in a safetensors file with NaN,
/// keeping the header.
fn poison(file: &Path, name: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let offsets = &header[name]["data_offsets"];
    let (start, end) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
    let data = 8 + header_len;
    for chunk in bytes[data + start as usize..data + end as usize].chunks_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn non_finite_parameters_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let model = run.join("checkpoints/last/model.safetensors");
    poison(&model, "rpg.ring");
    // A file of this format without its checksum is refused, so deleting
    // the key cannot skip the check.
    edit_metadata(&model, "rpg.checksum", |_| None);
    fails_with(
        &["eval", "--checkpoint", model.to_str().unwrap()],
        "has no checksum (`rpg.checksum`)",
    );
    // As a file written before checksums (format 1, which may lack one).
    edit_metadata(&model, "rpg.format", |_| Some("1".into()));
    let model_s = model.to_str().unwrap();
    fails_with(&["eval", "--checkpoint", model_s], "`rpg.ring`");
    let out = dir.path().join("small");
    fails_with(
        &[
            "compress",
            "--checkpoint",
            model_s,
            "--out",
            out.to_str().unwrap(),
        ],
        "non-finite",
    );
    assert!(!out.exists(), "a failed compress left {}", out.display());
}

#[test]
fn no_command_writes_over_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let before = snapshot(&run);
    let best = run.join("checkpoints/best/model.safetensors");
    let run_s = run.to_str().unwrap();
    fails_with(
        &[
            "export",
            "--checkpoint",
            run_s,
            "--out",
            best.to_str().unwrap(),
        ],
        "which this command reads",
    );
    let config = run.join("config.toml");
    fails_with(
        &[
            "eval",
            "--checkpoint",
            run_s,
            "--out",
            config.to_str().unwrap(),
        ],
        "which this command reads",
    );
    assert_eq!(snapshot(&run), before);
}

#[test]
fn accuracies_on_other_test_sets_are_not_compared() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "200");
    let best_state = run.join("checkpoints/best/state.json");
    let before = std::fs::read(&best_state).unwrap();
    // 50 images can score higher than 200; best/ must not be replaced.
    let out = rpg_ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        "2",
        "--test-limit",
        "50",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another test set"), "{stderr}");
    assert_eq!(std::fs::read(&best_state).unwrap(), before);
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("checkpoints/last/state.json")).unwrap())
            .unwrap();
    assert_eq!(last["test_set"]["images"], 50);
    assert_eq!(last["best_test_set"]["images"], 200);
    assert_eq!(last["best_epoch"], 1);
}

#[test]
fn a_locked_run_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let lock = File::options()
        .write(true)
        .open(run.join(".rpg.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let before = snapshot(&run);
    fails_with(
        &["train", "--resume", run.to_str().unwrap(), "--epochs", "2"],
        "is in use by another run (process ",
    );
    assert_eq!(snapshot(&run), before);
}

#[test]
fn refused_commands_leave_no_output_behind() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    let empty_s = empty.to_str().unwrap();
    // Data that is not there: found out before the run directory exists.
    fails_with(&["train", "--out", out_s, "--data-dir", empty_s], "missing");
    assert!(!out.exists());
    let run = trained_run(dir.path(), "100");
    fails_with(
        &[
            "compress",
            "--checkpoint",
            run.to_str().unwrap(),
            "--out",
            out_s,
            "--dataset",
            "cifar10",
            "--data-dir",
            empty_s,
        ],
        "missing",
    );
    assert!(!out.exists());
}

#[test]
fn out_of_range_values_are_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let out_s = out.to_str().unwrap();
    let data = mnist();
    let train = |flags: &[&str], needle: &str| {
        let mut args = vec!["train", "--out", out_s, "--train-limit", "64"];
        args.extend(["--data-dir", data.to_str().unwrap()]);
        args.extend(flags);
        fails_with(&args, needle);
        assert!(!out.exists(), "{flags:?} left a run directory");
    };
    train(&["--momentum", "5"], "--momentum 5: must be in [0, 1)");
    train(&["--warmup-epochs=-1"], "--warmup-epochs");
    train(&["--stop-after-epochs", "0"], "--stop-after-epochs");
    train(&["--dof", "-1"], "outside (0, 1]");
    train(
        &["--image-size", "64"],
        "--image-size 64: applies to the folder dataset only",
    );
    train(
        &["--dataset", "folder", "--image-size", "0"],
        "--image-size 0: must be positive",
    );
    train(
        &["--dof", "0.1", "--dense"],
        "--dense and --dof cannot go together",
    );
    train(&["--share", "nothing.*"], "matches no parameter");
    train(&["--share", "["], "only `*` is a wildcard");
    train(&["--share", "*.bias"], "never shared");
    train(&["--unshare", "fc9*"], "matches no parameter");
    train(
        &["--dense", "--share", "fc*"],
        "a dense model shares nothing",
    );

    let run = trained_run(dir.path(), "100");
    let run_s = run.to_str().unwrap();
    let small = dir.path().join("small");
    let small_s = small.to_str().unwrap();
    for (flags, needle) in [
        (&["--prune=-0.5"][..], "--prune -0.5: must be in [0, 1)"),
        (&["--prune", "NaN"][..], "--prune NaN: must be in [0, 1)"),
        (
            &["--latency-runs", "0"][..],
            "--latency-runs 0: must be positive",
        ),
    ] {
        let mut args = vec!["compress", "--checkpoint", run_s, "--out", small_s];
        args.extend(flags);
        fails_with(&args, needle);
        assert!(!small.exists());
    }
    fails_with(
        &["eval", "--checkpoint", run_s, "--batch-size", "0"],
        "--batch-size must be positive",
    );
}

/// Rewrites a safetensors file's header metadata value `key` with `edit`
/// (`None` removes the key).
fn edit_metadata(file: &Path, key: &str, edit: impl Fn(&str) -> Option<String>) {
    let bytes = std::fs::read(file).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let meta = header["__metadata__"].as_object_mut().unwrap();
    let value = meta[key].as_str().unwrap().to_string();
    match edit(&value) {
        Some(new) => meta.insert(key.to_string(), serde_json::Value::String(new)),
        None => meta.remove(key),
    };
    let mut text = serde_json::to_vec(&header).unwrap();
    // The data stays aligned to 8 bytes, as safetensors writes it.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + header_len..]);
    std::fs::write(file, out).unwrap();
}

#[test]
fn a_model_file_edited_by_hand_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let model = run.join("checkpoints/best/model.safetensors");
    // Another seed: it would load and regenerate a different network.
    edit_metadata(&model, "rpg.spec", |spec| {
        Some(spec.replace("\"seed\":0", "\"seed\":1"))
    });
    fails_with(
        &["eval", "--checkpoint", model.to_str().unwrap()],
        "checksum mismatch",
    );
}

#[test]
fn messages_say_what_is_wrong_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "epochs = 2\nepochz = 3\n").unwrap();
    fails_with(
        &["train", "--config", config.to_str().unwrap()],
        "c.toml: unknown field `epochz`",
    );
    let run = trained_run(dir.path(), "100");
    let optimizer = run.join("checkpoints/last/optimizer.safetensors");
    fails_with(
        &["eval", "--checkpoint", optimizer.to_str().unwrap()],
        "is optimizer state, not a model file",
    );
    // A --fold-bn export is for other tools; rpg says so instead of
    // loading convs that lost their BatchNorms.
    let folded = dir.path().join("folded.safetensors");
    rpg_ok(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        folded.to_str().unwrap(),
        "--fold-bn",
    ]);
    fails_with(
        &["eval", "--checkpoint", folded.to_str().unwrap()],
        "export it again without --fold-bn",
    );
}

/// Output into a closed pipe (`rpg models | head -1`) ends the process
/// quietly, as SIGPIPE ends any Unix tool, never with a panic.
#[cfg(unix)]
#[test]
fn a_closed_pipe_is_not_a_panic() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, &["--epochs", "1", "--test-limit", "64"]);
    let out = dir.path().join("model.onnx");
    let export = [
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    for args in [&["models"][..], &export[..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rpg"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {status:?} {stderr}"
        );
    }
    // What it was asked to write was written before it printed.
    assert!(out.is_file());
}

/// A run directory belongs to its run: no command writes into its
/// checkpoints/, over its files, or into another run; a temporary name
/// never collides with an input.
#[test]
fn no_command_writes_into_a_run_it_does_not_own() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let other = dir.path().join("other");
    train_tiny(&other, &["--epochs", "1", "--test-limit", "100"]);
    let (before, other_before) = (snapshot(&run), snapshot(&other));
    let run_s = run.to_str().unwrap();
    let at = |p: &str| run.join(p).to_str().unwrap().to_string();
    for target in [
        at("checkpoints/last/model.safetensors"),
        at("checkpoints/best/state.json"),
        at("config.toml"),
        at("summary.json"),
    ] {
        let needle = if target.contains("checkpoints") {
            "the run's checkpoints/"
        } else {
            "the run's own files"
        };
        fails_with(&["export", "--checkpoint", run_s, "--out", &target], needle);
        fails_with(&["eval", "--checkpoint", run_s, "--out", &target], "--out");
    }
    let foreign = other.join("checkpoints/last/model.safetensors");
    fails_with(
        &[
            "export",
            "--checkpoint",
            run_s,
            "--out",
            foreign.to_str().unwrap(),
        ],
        "another run's directory",
    );
    fails_with(
        &[
            "compress",
            "--checkpoint",
            run_s,
            "--out",
            &at("checkpoints/best"),
        ],
        "the run's checkpoints/",
    );
    fails_with(
        &["train", "--out", &at("nested"), "--epochs", "1"],
        "another run's directory",
    );
    assert_eq!(snapshot(&run), before);
    assert_eq!(snapshot(&other), other_before);
    // The default output of eval is the run's eval-best.json, outside
    // checkpoints/.
    rpg_ok(&["eval", "--checkpoint", run_s, "--test-limit", "50"]);
    assert!(run.join("eval-best.json").is_file());
    // An input whose name ends in .tmp beside the output survives.
    let exports = dir.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    let input = exports.join("x.safetensors.tmp");
    std::fs::copy(run.join("checkpoints/last/model.safetensors"), &input).unwrap();
    let input_bytes = std::fs::read(&input).unwrap();
    let out = exports.join("x.safetensors");
    rpg_ok(&[
        "export",
        "--checkpoint",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&input).unwrap(), input_bytes);
    assert!(out.is_file());
}

/// A checkpoint of another model copied into a run is refused on resume,
/// before anything is written; so is another model's optimizer state.
#[test]
fn a_swapped_checkpoint_is_refused_on_resume_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let mlp = dir.path().join("mlp");
    train_tiny(
        &mlp,
        &["--model", "mlp", "--epochs", "1", "--test-limit", "100"],
    );
    let run_s = run.to_str().unwrap();
    let last = run.join("checkpoints/last");
    let original = snapshot(&last);
    // The MLP's model file in the LeNet-5 run.
    std::fs::copy(
        mlp.join("checkpoints/last/model.safetensors"),
        last.join("model.safetensors"),
    )
    .unwrap();
    let before = snapshot(&run);
    fails_with(
        &["train", "--resume", run_s, "--epochs", "2"],
        "does not belong to the run",
    );
    assert_eq!(snapshot(&run), before, "a refused resume changed the run");
    // The whole checkpoint directory of the other model.
    std::fs::copy(
        mlp.join("checkpoints/last/optimizer.safetensors"),
        last.join("optimizer.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        mlp.join("checkpoints/last/state.json"),
        last.join("state.json"),
    )
    .unwrap();
    fails_with(
        &["train", "--resume", run_s, "--epochs", "2"],
        "holds a `mlp` model, the run trains `lenet5`",
    );
    // Only the optimizer state of the other model.
    for (path, bytes) in &original {
        std::fs::write(path, bytes).unwrap();
    }
    std::fs::copy(
        mlp.join("checkpoints/last/optimizer.safetensors"),
        last.join("optimizer.safetensors"),
    )
    .unwrap();
    fails_with(
        &["train", "--resume", run_s, "--epochs", "2"],
        "belongs to another model's checkpoint",
    );
}

/// A resume that diverges with the settings it was given leaves the run's
/// config.toml as it was, so a plain resume works again.
#[test]
fn a_failed_resume_keeps_the_runs_config() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let run_s = run.to_str().unwrap();
    let config = std::fs::read(run.join("config.toml")).unwrap();
    fails_with(
        &["train", "--resume", run_s, "--epochs", "2", "--lr", "1e30"],
        "training diverged",
    );
    assert_eq!(std::fs::read(run.join("config.toml")).unwrap(), config);
    rpg_ok(&["train", "--resume", run_s, "--epochs", "2"]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    // Accuracies come with the number of images behind them.
    assert_eq!(summary["test_images"], 100);
    assert_eq!(summary["best_test_images"], 100);
}

/// `--init-from` of what is not a dense export says what it is and what
/// to give instead.
#[test]
fn init_from_names_what_the_file_is() {
    let dir = tempfile::tempdir().unwrap();
    let run = trained_run(dir.path(), "100");
    let data = mnist();
    let train = |file: &Path, needle: &str| {
        let out = dir.path().join("warm");
        fails_with(
            &[
                "train",
                "--data-dir",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--init-from",
                file.to_str().unwrap(),
            ],
            needle,
        );
        assert!(!out.exists(), "a refused run left {} behind", out.display());
    };
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a model at all, just some bytes of text").unwrap();
    train(&garbage, "--init-from");
    train(&garbage, "not a safetensors file");
    let onnx = dir.path().join("model.onnx");
    rpg_ok(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        onnx.to_str().unwrap(),
    ]);
    train(&onnx, "an ONNX export cannot be read back");
    let checkpoint = run.join("checkpoints/best/model.safetensors");
    train(
        &checkpoint,
        "not a dense export: write one with `rpg export",
    );
    let folded = dir.path().join("folded.safetensors");
    rpg_ok(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        folded.to_str().unwrap(),
        "--fold-bn",
    ]);
    train(&folded, "BatchNorms folded");
}

/// Sizes and names that cannot work are refused before a run directory
/// exists, naming the flag.
#[test]
fn impossible_sizes_and_names_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    // A two-class image folder of 8x8 PNGs.
    let folder = dir.path().join("folder");
    for split in ["train", "val"] {
        for class in ["a", "b"] {
            let d = folder.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..2u8 {
                image::RgbImage::from_pixel(8, 8, image::Rgb([i * 100, 50, 200]))
                    .save(d.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    let out = dir.path().join("run");
    let train = |size: &str, needle: &str| {
        fails_with(
            &[
                "train",
                "--dataset",
                "folder",
                "--data-dir",
                folder.to_str().unwrap(),
                "--image-size",
                size,
                "--out",
                out.to_str().unwrap(),
            ],
            needle,
        );
        assert!(!out.exists());
    };
    train("1", "--image-size 1: lenet5 cannot take 1x1 images");
    train("100000", "--image-size 100000: must be at most 4096");
    // A name config.toml cannot record is refused as the flag it came in.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = dir.path().join(std::ffi::OsStr::from_bytes(b"run-\xff"));
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_rpg"))
            .arg("train")
            .arg("--data-dir")
            .arg(mnist())
            .arg("--out")
            .arg(&bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains("--out") && stderr.contains("UTF-8"),
            "{stderr}"
        );
        assert!(!stderr.contains("--data-dir"), "{stderr}");
        assert!(!bad.exists());
    }
    // predict on an empty folder names it.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = trained_run(dir.path(), "100");
    fails_with(
        &[
            "predict",
            "--checkpoint",
            run.to_str().unwrap(),
            empty.to_str().unwrap(),
        ],
        &format!("no images to predict in {}", empty.display()),
    );
}
