//! Save, load, forward: identical logits; mismatched or corrupt files are errors.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module};
use rpg_nn::{Mode, ModelFileError, ParamStore, load_model_file, read_header, save_model_file};

#[test]
fn round_trip_gives_identical_logits_and_mismatches_are_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    let (store, model) = common::rpg_store(50, 4)?;
    // Move away from the initial values so a fresh init would differ.
    let ring = store.ring().unwrap();
    ring.set(&(ring.as_tensor() * 1.5)?)?;
    store.regenerate()?;
    let logits = model.forward(&common::batch()?)?;
    let extra = BTreeMap::from([("epoch".to_string(), "3".to_string())]);
    save_model_file(&path, &store, "tiny", "{}", &extra)?;
    assert!(!dir.path().join("model.safetensors.tmp").exists());

    let header = read_header(&path)?;
    assert_eq!(header.model, "tiny");
    assert_eq!(header.extra["epoch"], "3");

    let (fresh, fresh_model) = common::rpg_store(50, 4)?;
    load_model_file(&path, &fresh, "tiny", "{}")?;
    let reloaded = fresh_model.forward(&common::batch()?)?;
    let diff = (logits - reloaded)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);

    let err = load_model_file(&path, &fresh, "lenet5", "{}").unwrap_err();
    assert!(
        matches!(&err, ModelFileError::WrongModel { found, expected, .. } if found == "tiny" && expected == "lenet5"),
        "{err}"
    );
    let (other_seed, _) = common::rpg_store(50, 5)?;
    let err = load_model_file(&path, &other_seed, "tiny", "{}").unwrap_err();
    assert!(
        matches!(&err, ModelFileError::WrongSpec { difference, .. } if difference == "seed 4 vs 5"),
        "{err}"
    );
    let (other_ring, _) = common::rpg_store(60, 4)?;
    let err = load_model_file(&path, &other_ring, "tiny", "{}").unwrap_err();
    assert!(
        matches!(&err, ModelFileError::WrongSpec { difference, .. } if difference == "ring lengths [50] vs [60]"),
        "{err}"
    );
    let dense = ParamStore::dense(&Device::Cpu, DType::F32, 4);
    common::build(dense.var_builder())?;
    let err = load_model_file(&path, &dense, "tiny", "{}").unwrap_err();
    assert!(
        matches!(
            err,
            ModelFileError::WrongMode {
                found: Mode::Rpg,
                expected: Mode::Dense,
                ..
            }
        ),
        "{err}"
    );
    Ok(())
}

#[test]
fn corrupt_files_are_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    let (store, _) = common::rpg_store(50, 4)?;
    save_model_file(&path, &store, "tiny", "{}", &BTreeMap::new())?;
    let bytes = std::fs::read(&path)?;

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100])?;
    let (fresh, _) = common::rpg_store(50, 4)?;
    let err = load_model_file(&truncated, &fresh, "tiny", "{}").unwrap_err();
    assert!(matches!(err, ModelFileError::Corrupt { .. }), "{err}");

    let mut flipped = bytes.clone();
    flipped[10] ^= 0xff; // inside the JSON header
    let bad = dir.path().join("flipped.safetensors");
    std::fs::write(&bad, &flipped)?;
    let err = load_model_file(&bad, &fresh, "tiny", "{}").unwrap_err();
    assert!(matches!(err, ModelFileError::Corrupt { .. }), "{err}");

    // A changed value anywhere in the data: the checksum catches it.
    let mut edited = bytes.clone();
    let last = edited.len() - 1;
    edited[last] ^= 0x01;
    let bad = dir.path().join("edited.safetensors");
    std::fs::write(&bad, &edited)?;
    let err = read_header(&bad).unwrap_err();
    assert!(
        matches!(err, ModelFileError::ChecksumMismatch { .. }),
        "{err}"
    );

    let missing = dir.path().join("missing.safetensors");
    let err = read_header(&missing).unwrap_err();
    assert!(matches!(err, ModelFileError::Io { .. }), "{err}");
    Ok(())
}
