//! Artifact round trips: the file gives the same logits as the in-memory
//! compressed model; corrupt files are errors.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use rpg_compress::artifact::registry_from_shared;
use rpg_compress::{Artifact, Bits, CompressSettings};
use rpg_core::RingSpec;
use rpg_nn::{ParamStore, SharingPolicy, record_parameters};

struct Net(Vec<candle_nn::Linear>);

fn build(vb: VarBuilder<'_>) -> candle_core::Result<Net> {
    Ok(Net(vec![
        candle_nn::linear(16, 32, vb.pp("fc1"))?,
        candle_nn::linear(32, 32, vb.pp("fc2"))?,
        candle_nn::linear(32, 4, vb.pp("fc3"))?,
    ]))
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.0[0].forward(x)?.relu()?;
        let h = self.0[1].forward(&h)?.relu()?;
        self.0[2].forward(&h)
    }
}

fn store() -> anyhow::Result<(ParamStore, Net)> {
    let registry = SharingPolicy::all_weights().registry(&record_parameters(build)?)?;
    let store = ParamStore::rpg(
        registry,
        &RingSpec::global(300, 3),
        &Device::Cpu,
        DType::F32,
    )?;
    let net = build(store.var_builder())?;
    Ok((store, net))
}

fn input() -> candle_core::Result<Tensor> {
    Tensor::from_vec(
        (0..64).map(|i| (i as f32 * 0.37).sin()).collect(),
        (4, 16),
        &Device::Cpu,
    )
}

#[test]
fn file_round_trip_equals_the_in_memory_compressed_model() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for settings in [
        CompressSettings::default(),
        CompressSettings {
            ring_bits: Some(Bits::Four),
            ring_prune: 0.3,
            f16_scales: false,
            block: 64,
            ..CompressSettings::default()
        },
        CompressSettings {
            ring_bits: None,
            unshared_int8: false,
            ..CompressSettings::default()
        },
    ] {
        let (store, net) = store()?;
        let dense_logits = net.forward(&input()?)?;
        let artifact = Artifact::compress(&store, &settings)?;
        artifact.apply(&store)?;
        let compressed_logits = net.forward(&input()?)?;
        let drift = (&dense_logits - &compressed_logits)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        if settings == CompressSettings::default() {
            // int8 with per-block scales moves logits by a few percent at most.
            let scale = dense_logits.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                drift < 0.05 * scale,
                "int8 moved logits by {drift} (max logit {scale})"
            );
        }
        if settings.ring_prune > 0.0 {
            let ring = artifact.ring_values().unwrap();
            let zeros = ring.iter().filter(|v| **v == 0.0).count();
            assert!(zeros >= 90, "{zeros} of 300 ring entries pruned");
        }

        let path = dir.path().join("a.safetensors");
        let bytes = artifact.save(&path, "net", "{}")?;
        assert_eq!(bytes, std::fs::metadata(&path)?.len());
        let (loaded, model, config) = Artifact::load(&path)?;
        assert_eq!((model.as_str(), config.as_str()), ("net", "{}"));
        let registry = registry_from_shared(&record_parameters(build)?, &loaded.shared)?;
        let fresh = ParamStore::rpg(
            registry,
            loaded.spec.as_ref().unwrap(),
            &Device::Cpu,
            DType::F32,
        )?;
        let fresh_net = build(fresh.var_builder())?;
        loaded.apply(&fresh)?;
        let reloaded = fresh_net.forward(&input()?)?;
        let diff = (&compressed_logits - &reloaded)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{settings:?}");
    }
    Ok(())
}

#[test]
fn corrupt_artifacts_are_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _) = store()?;
    let path = dir.path().join("a.safetensors");
    Artifact::compress(&store, &CompressSettings::default())?.save(&path, "net", "{}")?;
    let bytes = std::fs::read(&path)?;
    let truncated = dir.path().join("t.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10])?;
    assert!(
        Artifact::load(&truncated)
            .unwrap_err()
            .to_string()
            .contains("truncated or corrupt")
    );
    let mut flipped = bytes.clone();
    flipped[12] ^= 0x55;
    let bad = dir.path().join("f.safetensors");
    std::fs::write(&bad, &flipped)?;
    assert!(Artifact::load(&bad).is_err());
    assert!(Artifact::is_artifact(&path) && !Artifact::is_artifact(&bad));
    // The shared map must fit the model.
    assert!(
        registry_from_shared(&record_parameters(build)?, "00")
            .unwrap_err()
            .to_string()
            .contains("another model")
    );
    Ok(())
}
