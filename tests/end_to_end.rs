//! Train tiny RPG models on subsets of the bundled MNIST: summary fields,
//! eval of the checkpoint, bit-exact resume, stability across DoF.

use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use rpg_data::DataConfig;
use rpg_train::TrainConfig;
use rpg_train::evaluate::{evaluate, load_data};
use rpg_train::setup::build_from_file;

fn tiny(out: &Path) -> TrainConfig {
    TrainConfig {
        data: DataConfig {
            data_dir: Some(rpg_integration::mnist_dir()),
            train_limit: Some(512),
            test_limit: Some(512),
            ..DataConfig::default()
        },
        out: Some(out.to_path_buf()),
        epochs: 1,
        batch_size: 64,
        log_every: 2,
        ..TrainConfig::default()
    }
}

fn ring_of(run: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(run.join("checkpoints/last/model.safetensors"))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    let ring = &tensors[rpg_nn::RING_NAME];
    Ok(ring
        .to_vec1::<f32>()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect())
}

#[test]
fn train_writes_a_complete_run_and_eval_reproduces_its_accuracy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Two epochs of 8 steps: the default warm-up takes the whole first one,
    // so one epoch alone never reaches the learning rate.
    let cfg = TrainConfig {
        epochs: 2,
        ..tiny(dir.path())
    };
    let summary = rpg_train::train(cfg.clone(), None, &mut rpg_train::Silent)?;

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json"))?)?;
    for key in [
        "model",
        "dataset",
        "mode",
        "placement",
        "seed",
        "ring_dof",
        "total_dof",
        "dense_params",
        "dof_ratio",
        "epochs",
        "test_accuracy",
        "test_loss",
        "train_seconds",
        "images_per_second",
        "device",
    ] {
        assert!(!json[key].is_null(), "summary.json lacks `{key}`");
    }
    assert_eq!(json["mode"], "rpg");
    assert_eq!(json["model"], "lenet5");
    assert_eq!(json["dense_params"], 61_706);
    assert!((json["dof_ratio"].as_f64().unwrap() - 0.1).abs() < 1e-4);
    let acc = json["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    // Sixteen steps: only well above chance (0.1) is expected.
    assert!(acc > 0.15, "sixteen steps should beat chance, got {acc}");
    for file in [
        "config.toml",
        "metrics.jsonl",
        "curves.png",
        "checkpoints/best/model.safetensors",
    ] {
        assert!(dir.path().join(file).is_file(), "missing {file}");
    }
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl"))?;
    assert!(metrics.lines().any(|l| l.contains("\"kind\":\"step\"")));
    assert!(metrics.lines().any(|l| l.contains("\"kind\":\"epoch\"")));

    // Reload the checkpoint in a fresh model: the same accuracy.
    let path = dir.path().join("checkpoints/last/model.safetensors");
    let file = rpg_nn::ModelFile::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let built = build_from_file(&file, &Device::Cpu)?;
    let (_, test) = load_data(&cfg)?;
    let result = evaluate(&built, &test, 1000, 1)?;
    assert_eq!(result.accuracy, summary.test_accuracy);
    assert_eq!(result.loss, summary.test_loss);
    Ok(())
}

#[test]
fn a_resumed_run_ends_with_exactly_the_same_ring() -> Result<()> {
    let straight = tempfile::tempdir()?;
    let mut cfg = tiny(straight.path());
    cfg.epochs = 2;
    cfg.data.train_limit = Some(256);
    cfg.data.test_limit = Some(64);
    rpg_train::train(cfg.clone(), None, &mut rpg_train::Silent)?;

    let interrupted = tempfile::tempdir()?;
    let same = TrainConfig {
        out: Some(interrupted.path().to_path_buf()),
        ..cfg.clone()
    };
    // Interrupted after epoch 1 of 2.
    rpg_train::train_until(same.clone(), None, Some(1), &mut rpg_train::Silent)?;
    // Starting again without --resume must refuse to overwrite the run.
    let refused = rpg_train::train(same.clone(), None, &mut rpg_train::Silent).unwrap_err();
    assert!(
        matches!(refused, rpg_train::Error::RunExists { .. }),
        "{refused}"
    );
    assert_eq!(refused.named_settings(), ["resume", "out"]);
    rpg_train::train(same, Some(interrupted.path()), &mut rpg_train::Silent)?;

    // Compare bit patterns (and keep a failure message short).
    let (a, b) = (ring_of(straight.path())?, ring_of(interrupted.path())?);
    let first_difference = a.iter().zip(&b).position(|(x, y)| x != y);
    assert_eq!(
        first_difference, None,
        "rings differ (first differing byte)"
    );
    assert_eq!(a.len(), b.len());
    let metrics = std::fs::read_to_string(interrupted.path().join("metrics.jsonl"))?;
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.contains("\"kind\":\"epoch\""))
            .count(),
        2
    );
    Ok(())
}

#[test]
fn lenet5_trains_without_divergence_at_one_and_hundred_percent_dof() -> Result<()> {
    for dof in [0.01, 1.0] {
        let dir = tempfile::tempdir()?;
        let mut cfg = TrainConfig {
            dof: Some(dof),
            ..tiny(dir.path())
        };
        cfg.data.train_limit = Some(6144);
        let summary = rpg_train::train(cfg, None, &mut rpg_train::Silent)?;
        println!(
            "dof {dof}: test accuracy {} loss {}",
            summary.test_accuracy, summary.test_loss
        );
        assert!(summary.test_loss.is_finite());
        // 96 steps at the default recipe: far from chance (0.1), no divergence.
        assert!(
            summary.test_accuracy > 0.6,
            "dof {dof}: accuracy {}",
            summary.test_accuracy
        );
    }
    Ok(())
}

/// A warm start from the dense export of an RPG model fits the ring back
/// exactly (to rounding): the projected model scores what the RPG model did.
#[test]
fn projecting_a_dense_export_recovers_the_ring() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let first = dir.path().join("first");
    let mut cfg = tiny(&first);
    cfg.data.test_limit = Some(256);
    let trained = rpg_train::train(cfg.clone(), None, &mut rpg_train::Silent)?;
    let dense = dir.path().join("dense.safetensors");
    rpg_train::export::export(&first, &dense, rpg_train::export::ExportFormat::Safetensors)?;
    let warm = TrainConfig {
        out: Some(dir.path().join("warm")),
        init_from: Some(dense),
        ..cfg
    };
    let summary = rpg_train::train(warm, None, &mut rpg_train::Silent)?;
    assert!(summary.projection_error.unwrap() < 1e-6, "{summary:?}");
    assert_eq!(summary.projected_accuracy, Some(trained.test_accuracy));
    Ok(())
}
