//! The `rpg` binary: bad input ends in one line on stderr and a non-zero
//! exit, never a panic; a small train + eval round trip through the CLI.

mod common;

use common::*;

#[test]
fn bad_flags_and_combinations_are_one_line_errors() {
    fails_with(
        &["train", "--model", "resnet9000"],
        "choose one of mlp, lenet5",
    );
    fails_with(&["train", "--dof", "0"], "outside (0, 1]");
    fails_with(
        &["train", "--dof", "0.1", "--dense"],
        "--dense and --dof cannot go together",
    );
    device_is_refused_before_the_run_directory("tpu", "unknown device `tpu`");
    fails_with(&["train", "--epochz", "3"], "unexpected argument");
    fails_with(&["train", "--lr", "fast"], "invalid value");
    fails_with(&["train", "--dataset", "svhn"], "unknown dataset `svhn`");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().to_str().unwrap();
    fails_with(
        &["train", "--data-dir", empty, "--out", empty],
        "train-images-idx3-ubyte[.gz]",
    );
    fails_with(
        &["train", "--resume", empty],
        "no checkpoint to resume from",
    );
    fails_with(&["eval", "--checkpoint", empty], "no model file");
    let bogus = dir.path().join("model.safetensors");
    std::fs::write(&bogus, b"definitely not safetensors").unwrap();
    fails_with(
        &["eval", "--checkpoint", bogus.to_str().unwrap()],
        "not a valid rpg model file",
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_names_it() {
    device_is_refused_before_the_run_directory("cuda:0", "--features cuda");
}

#[test]
fn train_then_eval_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    train_tiny(&run, &["--epochs", "1", "--test-limit", "200"]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();

    rpg_ok(&["eval", "--checkpoint", run_s, "--test-limit", "200"]);
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval-best.json")).unwrap())
            .unwrap();
    assert_eq!(eval["test_accuracy"], summary["test_accuracy"]);
    assert_eq!(eval["samples"], 200);

    // A resumed run may not change what is trained.
    fails_with(
        &["train", "--resume", run_s, "--model", "mlp"],
        "cannot change when resuming",
    );
    fails_with(&["train", "--resume", run_s], "give a larger --epochs");
    // The models table lists the zoo.
    let out = rpg(&["models"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("resnet18") && table.contains("11689512"),
        "{table}"
    );
}

#[test]
fn divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // One good epoch of two, then resume with an absurd learning rate.
    train_tiny(
        &run,
        &[
            "--epochs",
            "2",
            "--stop-after-epochs",
            "1",
            "--test-limit",
            "64",
        ],
    );
    let before = std::fs::read(run.join("checkpoints/last/model.safetensors")).unwrap();
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let config = config.replace("lr = 0.05", "lr = 1e30");
    assert!(config.contains("lr = 1e30"), "{config}");
    std::fs::write(run.join("config.toml"), config).unwrap();
    fails_with(
        &["train", "--resume", run.to_str().unwrap()],
        "training diverged",
    );
    let after = std::fs::read(run.join("checkpoints/last/model.safetensors")).unwrap();
    assert_eq!(before, after, "the last good checkpoint was overwritten");
}

#[test]
fn compress_then_eval_the_artifact_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, &["--epochs", "1", "--test-limit", "300"]);
    let out = dir.path().join("compressed");
    let args = [
        "compress",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    rpg_ok(
        &[
            &args[..],
            &[
                "--quant",
                "int4",
                "--prune-ring",
                "0.2",
                "--latency-runs",
                "1",
            ],
        ]
        .concat(),
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compress_report.json")).unwrap())
            .unwrap();
    for key in [
        "artifact_bytes",
        "dense_f32_bytes",
        "size_ratio",
        "accuracy_before",
        "accuracy_after",
    ] {
        assert!(report[key].is_number(), "report lacks {key}");
    }
    assert!(report["size_ratio"].as_f64().unwrap() > 20.0, "{report}");
    assert_eq!(report["steps"].as_array().unwrap().len(), 3);

    // eval loads the artifact and reproduces the report's accuracy.
    let artifact = out.join("model.compressed.safetensors");
    let eval_json = dir.path().join("eval.json");
    let data = mnist();
    let args = [
        "eval",
        "--checkpoint",
        artifact.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    rpg_ok(
        &[
            &args[..],
            &["--test-limit", "300", "--out", eval_json.to_str().unwrap()],
        ]
        .concat(),
    );
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&eval_json).unwrap()).unwrap();
    assert_eq!(eval["test_accuracy"], report["accuracy_after"]);

    // A damaged artifact is a clear error.
    let mut bytes = std::fs::read(&artifact).unwrap();
    bytes.truncate(bytes.len() - 7);
    let broken = dir.path().join("broken.safetensors");
    std::fs::write(&broken, bytes).unwrap();
    fails_with(
        &["eval", "--checkpoint", broken.to_str().unwrap()],
        "not a valid",
    );

    // Export: every tensor of the dense model under torchvision-style names.
    let dense = dir.path().join("dense.safetensors");
    rpg_ok(&[
        "export",
        "--checkpoint",
        artifact.to_str().unwrap(),
        "--out",
        dense.to_str().unwrap(),
    ]);
    let tensors = candle_core::safetensors::load(&dense, &candle_core::Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    assert_eq!(names.len(), 10, "{names:?}");
    assert_eq!(tensors["conv1.weight"].dims(), &[6, 1, 5, 5]);
    assert_eq!(tensors["fc3.weight"].dims(), &[10, 84]);
    // The export describes itself, and eval reads it: the artifact's accuracy.
    let header = std::fs::read(&dense).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&header).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["model"], "lenet5");
    assert_eq!(
        (meta["num_classes"].as_str(), meta["image_size"].as_str()),
        ("10", "28")
    );
    assert!(meta.contains_key("normalize_mean"), "{meta:?}");
    let dense_eval = eval_on_mnist(&dense, 300, &dir.path().join("dense-eval.json"));
    assert_eq!(dense_eval["test_accuracy"], report["accuracy_after"]);
    // Files are created readable by others, as the umask allows (not 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let reference = dir.path().join("reference.txt");
        std::fs::write(&reference, b"x").unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for file in [
            &dense,
            &artifact,
            &run.join("checkpoints/last/model.safetensors"),
        ] {
            assert_eq!(mode(file), mode(&reference), "{}", file.display());
        }
        let optimizer = run.join("checkpoints/last/optimizer.safetensors");
        assert_eq!(mode(&optimizer), mode(&reference));
    }
}

/// `rpg export --format onnx` (or an `.onnx` name): a graph that an
/// independent runtime (candle-onnx) runs to our logits, describing itself.
#[test]
fn onnx_export_runs_elsewhere_to_our_logits() {
    use candle_core::{Device, Tensor};
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, &["--epochs", "1", "--test-limit", "100"]);
    let onnx = dir.path().join("lenet.onnx");
    let checkpoint = run.to_str().unwrap();
    let export = ["export", "--checkpoint", checkpoint, "--out"];
    let out = rpg_ok(&[&export[..], &[onnx.to_str().unwrap()]].concat());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ONNX opset"));
    let proto =
        candle_onnx::onnx::ModelProto::decode(std::fs::read(&onnx).unwrap().as_slice()).unwrap();
    let meta: std::collections::HashMap<_, _> = proto
        .metadata_props
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(meta["rpg.export"], "onnx");
    assert_eq!(meta["model"], "lenet5");
    assert!(meta.contains_key("normalize_mean"), "{meta:?}");

    let model_file = run.join("checkpoints/best/model.safetensors");
    let built = rpg_train::setup::load_any(&model_file, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 1, 28, 28), &Device::Cpu).unwrap();
    let ours = built.model.forward_t(&x, false).unwrap();
    let inputs = std::collections::HashMap::from([("input".to_string(), x)]);
    let theirs = candle_onnx::simple_eval(&proto, inputs).unwrap()["logits"].clone();
    let diff = (ours - theirs)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap();
    let diff = diff.max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-4, "ONNX logits differ by {diff}");

    // An explicit --format wins over the name; --fold-bn is for safetensors.
    let named = dir.path().join("graph.bin");
    let args = [&export[..], &[named.to_str().unwrap(), "--format", "onnx"]].concat();
    rpg_ok(&args);
    assert_eq!(
        std::fs::read(&named).unwrap(),
        std::fs::read(&onnx).unwrap()
    );
    let args = [&export[..], &["x.onnx", "--fold-bn"]].concat();
    fails_with(&args, "--fold-bn applies to safetensors exports");
}

#[test]
fn structured_and_unstructured_pruning_produce_loadable_dense_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, &["--epochs", "1", "--test-limit", "200"]);
    for (flags, widths) in [
        (
            &["--prune-channels", "0.5", "--finetune-epochs", "1"][..],
            Some([3, 8, 60, 42]),
        ),
        (&["--prune", "0.6", "--prune-scope", "layer"][..], None),
    ] {
        let out = dir.path().join(format!("c{}", flags.len()));
        let report = compress_report(&run, &out, flags);
        let acc = report["accuracy_after"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        if flags.contains(&"--finetune-epochs") {
            // Fine-tuning trains on the run's training data (256 images at
            // batch 64: 4 steps), not on the single image evaluation loads.
            let config = std::fs::read_to_string(out.join("finetune/config.toml")).unwrap();
            assert!(config.contains("train_limit = 256"), "{config}");
            let metrics = std::fs::read_to_string(out.join("finetune/metrics.jsonl")).unwrap();
            assert!(metrics.contains("\"step\":4"), "{metrics}");
        }
        // The artifact is a dense model of the pruned shape, loadable by export.
        let dense = out.join("check.safetensors");
        let artifact = out.join("model.compressed.safetensors");
        rpg_ok(&[
            "export",
            "--checkpoint",
            artifact.to_str().unwrap(),
            "--out",
            dense.to_str().unwrap(),
        ]);
        let tensors = candle_core::safetensors::load(&dense, &candle_core::Device::Cpu).unwrap();
        match widths {
            Some([c1, c2, f1, f2]) => {
                assert_eq!(tensors["conv1.weight"].dims(), &[c1, 1, 5, 5]);
                assert_eq!(tensors["conv2.weight"].dims(), &[c2, c1, 5, 5]);
                assert_eq!(tensors["fc2.weight"].dims(), &[f2, f1]);
            }
            None => {
                // Per-layer 60% magnitude pruning, int8 round trip keeps zeros.
                let w = tensors["fc1.weight"]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let zeros = w.iter().filter(|v| **v == 0.0).count() as f64 / w.len() as f64;
                assert!(zeros >= 0.6, "fc1 sparsity {zeros}");
            }
        }
    }
    fails_with(
        &[
            "compress",
            "--checkpoint",
            run.to_str().unwrap(),
            "--out",
            dir.path().to_str().unwrap(),
            "--prune",
            "1.5",
        ],
        "must be in [0, 1)",
    );
}

/// `rpg compress` of `run` into `out` with `flags`; the report.
fn compress_report(
    run: &std::path::Path,
    out: &std::path::Path,
    flags: &[&str],
) -> serde_json::Value {
    let args = [
        "compress",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--latency-runs",
        "1",
    ];
    rpg_ok(&[&args[..], flags].concat());
    serde_json::from_str(&std::fs::read_to_string(out.join("compress_report.json")).unwrap())
        .unwrap()
}

#[test]
fn a_resnet_is_channel_pruned_across_its_residual_groups_quantization_aware_tuned_and_exported_as_int8_onnx()
 {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(
        &run,
        &[
            "--model",
            "resnet20",
            "--width",
            "0.5",
            "--epochs",
            "1",
            "--test-limit",
            "100",
        ],
    );
    // Channel pruning: each residual stage loses half its channels as one
    // group, and the pruned model exports.
    let pruned = dir.path().join("pruned");
    let report = compress_report(
        &run,
        &pruned,
        &[
            "--prune-channels",
            "0.5",
            "--finetune-epochs",
            "1",
            "--onnx-int8",
            "--calibration-images",
            "32",
        ],
    );
    let dense = dir.path().join("pruned.safetensors");
    rpg_ok(&[
        "export",
        "--checkpoint",
        pruned
            .join("model.compressed.safetensors")
            .to_str()
            .unwrap(),
        "--out",
        dense.to_str().unwrap(),
    ]);
    let tensors = candle_core::safetensors::load(&dense, &candle_core::Device::Cpu).unwrap();
    assert_eq!(tensors["conv1.weight"].dims(), &[4, 1, 3, 3]);
    assert_eq!(tensors["layer1.2.conv2.weight"].dims(), &[4, 4, 3, 3]);
    assert_eq!(
        tensors["layer2.0.downsample.0.weight"].dims(),
        &[8, 4, 1, 1]
    );
    assert_eq!(tensors["layer3.1.conv1.weight"].dims(), &[16, 16, 3, 3]);
    assert_eq!(tensors["fc.weight"].dims(), &[10, 16]);
    // Its int8 ONNX export, calibrated and tested by rpg.
    let onnx = &report["onnx"];
    assert_eq!(onnx["calibration_images"], 32);
    for key in ["f32_accuracy", "int8_accuracy"] {
        assert!((0.0..=1.0).contains(&onnx[key].as_f64().unwrap()), "{onnx}");
    }
    assert!(onnx["int8_bytes"].as_u64().unwrap() < onnx["f32_bytes"].as_u64().unwrap());
    assert!(pruned.join("model.int8.onnx").is_file());

    // Quantization-aware fine-tuning before int4: a step of its own.
    let qat = dir.path().join("qat");
    let report = compress_report(
        &run,
        &qat,
        &["--quant", "int4", "--qat", "--finetune-epochs", "1"],
    );
    let steps = report["steps"].as_array().unwrap();
    assert!(
        steps[0]["step"]
            .as_str()
            .unwrap()
            .starts_with("quantization-aware"),
        "{steps:?}"
    );
    assert!(qat.join("finetune/metrics.jsonl").is_file());
    // Its control: as much fine-tuning in full precision, then int4.
    let tuned = dir.path().join("tuned");
    let report = compress_report(&run, &tuned, &["--quant", "int4", "--finetune-epochs", "1"]);
    let steps = report["steps"].as_array().unwrap();
    assert!(
        steps[0]["step"]
            .as_str()
            .unwrap()
            .starts_with("fine-tuning"),
        "{steps:?}"
    );
    let args = ["compress", "--checkpoint", run.to_str().unwrap(), "--out"];
    fails_with(
        &[
            &args[..],
            &[dir.path().join("x").to_str().unwrap(), "--qat"],
        ]
        .concat(),
        "needs at least one epoch of fine-tuning",
    );
}

#[test]
fn bench_json_has_one_object_per_model_mode_and_kernel_set() {
    let out = rpg_ok(&[
        "bench",
        "--model",
        "lenet5",
        "--batch-size",
        "16",
        "--steps",
        "1",
        "--json",
        "--compare-kernels",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let expected = [
        ("dense", "native"),
        ("rpg", "native"),
        ("dense", "candle"),
        ("rpg", "candle"),
    ];
    for (row, (mode, kernels)) in rows.iter().zip(expected) {
        assert_eq!(row["mode"], mode);
        assert_eq!(row["kernels"], kernels);
        assert_eq!(row["batch_size"], 16);
        // Two processes of one timed step each, merged.
        assert_eq!(row["steps"], 2);
        // The RPG row carries RPG's step over dense's, measured interleaved.
        let paired = row["paired_step_ratio"].as_f64();
        if mode == "rpg" {
            assert!(paired.is_some_and(|r| r.is_finite() && r > 0.0), "{row}");
        } else {
            assert_eq!(paired, None, "{row}");
        }
        for key in [
            "train_images_per_second",
            "infer_images_per_second",
            "generation_share",
            "peak_rss_bytes",
        ] {
            assert!(
                row[key].as_f64().is_some_and(|v| v >= 0.0),
                "{key} in {row}"
            );
        }
    }
    assert!(rows[1]["generation_share"].as_f64().unwrap() > 0.0);
    assert!(rows[1]["phase_seconds"]["ring_gradient"].as_f64().unwrap() > 0.0);
    fails_with(&["bench", "--model", "resnet9000"], "unknown model");
}

#[test]
fn sweep_writes_csv_fit_and_plot_and_does_not_redo_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let data = mnist();
    let args = [
        "sweep",
        "--ratios",
        "1,0.1,0.002",
        "--placements",
        "paper",
        "--dense-same-dof",
        "--epochs",
        "1",
        "--train-limit",
        "128",
        "--test-limit",
        "64",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let first = rpg_ok(&args);
    // 0.002 is below LeNet-5's smallest feasible ratio: reported, skipped.
    assert!(String::from_utf8_lossy(&first.stderr).contains("smallest ratio"));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert!(
        rows.iter().any(|r| r.starts_with("dense,1,61706,")),
        "{csv}"
    );
    assert_eq!(
        rows.iter().filter(|r| r.starts_with("paper,")).count(),
        2,
        "{csv}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with("dense-same-dof,0.1,")),
        "{csv}"
    );
    let fit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fit.json")).unwrap()).unwrap();
    assert!(
        fit["paper"]["accuracy_vs_ln_dof"]["slope"].is_number(),
        "{fit}"
    );
    assert!(out.join("sweep.png").is_file());

    let summary = out.join("runs/paper-dof0.1-seed0/summary.json");
    let before = std::fs::metadata(&summary).unwrap().modified().unwrap();
    rpg_ok(&args);
    assert_eq!(
        std::fs::metadata(&summary).unwrap().modified().unwrap(),
        before,
        "a finished run was redone"
    );
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap(), csv);
    // The same directory with another recipe is refused, not silently reused.
    let mut other = args.to_vec();
    other[7] = "2"; // --epochs 2
    fails_with(&other, "another configuration");
}

/// The device check runs end to end on the CPU (RPG on the device tables
/// against the host kernels), and fails when a difference exceeds the
/// tolerance.
#[test]
fn selftest_compares_a_device_with_the_cpu_reference() {
    let out = rpg_ok(&[
        "selftest",
        "--device",
        "cpu",
        "--model",
        "lenet5,resnet20",
        "--json",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["passed"] == true), "{rows:?}");
    // ResNet-20's ring gradient sums in another order on the tables: a
    // difference far below its own rounding noise, which every row reports.
    let rpg = rows
        .iter()
        .find(|r| r["model"] == "resnet20" && r["mode"] == "rpg")
        .unwrap();
    let (worst, noise) = (
        rpg["worst"].as_f64().unwrap(),
        rpg["noise"].as_f64().unwrap(),
    );
    assert!(worst > 0.0 && worst < noise, "{rpg}");
    fails_with(
        &["selftest", "--device", "cpu", "--tolerance", "0"],
        "--tolerance must be positive",
    );
}

/// `predict` reads the model's own input size and normalisation: on MNIST's
/// test images it agrees with `eval`, and a PNG of an image gets the same
/// answer as the image in the IDX file.
#[test]
fn predict_agrees_with_eval_and_reads_png_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    train_tiny(&run, &["--epochs", "1", "--test-limit", "100"]);
    let run_s = run.to_str().unwrap();
    let images = mnist().join("t10k-images-idx3-ubyte.gz");
    let out = rpg_ok(&[
        "predict",
        "--checkpoint",
        run_s,
        images.to_str().unwrap(),
        "--top-k",
        "3",
        "--json",
    ]);
    let predictions: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let predictions = predictions.as_array().unwrap();
    assert_eq!(predictions.len(), 10_000);
    assert_eq!(predictions[0]["top"].as_array().unwrap().len(), 3);
    let labels = std::fs::read(mnist().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let labels = {
        use std::io::Read;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&labels[..])
            .read_to_end(&mut raw)
            .unwrap();
        raw[8..].to_vec()
    };
    let correct = predictions
        .iter()
        .zip(&labels)
        .filter(|(p, l)| p["top"][0]["class"] == u64::from(**l))
        .count();
    let eval = eval_on_mnist(&run, 10_000, &dir.path().join("eval.json"));
    assert_eq!(
        correct as f64 / 10_000.0,
        eval["test_accuracy"].as_f64().unwrap()
    );

    // The first test image as a PNG file, in a folder: the same answer.
    let mut raw = Vec::new();
    {
        use std::io::Read;
        let bytes = std::fs::read(&images).unwrap();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
    }
    let pixels = raw[16..16 + 28 * 28].to_vec();
    let folder = dir.path().join("pngs");
    std::fs::create_dir(&folder).unwrap();
    image::GrayImage::from_raw(28, 28, pixels)
        .unwrap()
        .save(folder.join("seven.png"))
        .unwrap();
    let out = rpg_ok(&[
        "predict",
        "--model",
        run_s,
        folder.to_str().unwrap(),
        "--json",
    ]);
    let png: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(png[0]["top"][0]["class"], predictions[0]["top"][0]["class"]);
    fails_with(
        &[
            "predict",
            "--model",
            run_s,
            "--top-k",
            "0",
            folder.to_str().unwrap(),
        ],
        "--top-k 0: must be positive",
    );
}
