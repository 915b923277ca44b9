//! Building a model and its parameter store, from a training config or from
//! a checkpoint's header.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use candle_core::{DType, Device};
use rpg_core::{
    LayerRegistry, PlacementKind, PlacementVersion, RingSpec, ring_lengths_for_ratio,
    split_ring_budget,
};
use rpg_models::{DynModel, ModelConfig, build_model, model_entry};
use rpg_nn::{
    Mode, ModelFileHeader, ParamStore, SharingPolicy, load_model_file, record_parameters,
};

use crate::config::{RingSize, TrainConfig};

/// A model ready to train or evaluate.
pub struct Built {
    /// The model's configuration (stored in model files).
    pub config: ModelConfig,
    /// Its parameters.
    pub store: ParamStore,
    /// The model.
    pub model: DynModel,
    /// Parameters of the dense model of the same architecture.
    pub dense_params: u64,
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn candle(e: candle_core::Error) -> anyhow::Error {
    anyhow!("{e}")
}

/// The model config for a data set's classes and input.
pub fn model_config(
    cfg: &TrainConfig,
    num_classes: usize,
    channels: usize,
    image_size: usize,
) -> Result<ModelConfig> {
    let entry = model_entry(&cfg.model).map_err(candle)?;
    let mut mc = entry.config(num_classes).with_width(cfg.width);
    mc.in_channels = channels;
    mc.image_size = image_size;
    Ok(mc)
}

/// The sharing policy a config asks for: the model's default, extended by
/// the config's patterns.
pub fn policy(cfg: &TrainConfig) -> Result<SharingPolicy> {
    let mut policy = model_entry(&cfg.model).map_err(candle)?.sharing_policy();
    policy.shared.extend(cfg.share.iter().cloned());
    policy.unshared.extend(cfg.unshare.iter().cloned());
    policy.groups.extend(cfg.local_rings.iter().cloned());
    Ok(policy)
}

/// The trainable parameters a model asks for, in order (one recording pass).
pub fn recorded(mc: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
    record_parameters(|vb| build_model(mc, vb)).map_err(candle)
}

/// Element count of recorded parameters: the dense model's size.
pub fn param_count(params: &[(String, Vec<usize>)]) -> u64 {
    params
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum()
}

/// Records the registry of a model under a policy.
pub fn registry(mc: &ModelConfig, policy: &SharingPolicy) -> Result<LayerRegistry> {
    policy.registry(&recorded(mc)?).map_err(candle)
}

/// Builds the model a training config describes, with fresh parameters.
pub fn build_for_training(
    cfg: &TrainConfig,
    ring: Option<RingSize>,
    mc: ModelConfig,
    device: &Device,
) -> Result<Built> {
    let params = recorded(&mc)?;
    let dense_params = param_count(&params);
    let store = match ring {
        None => ParamStore::dense(device, DType::F32, cfg.seed),
        Some(size) => {
            let registry = policy(cfg)?.registry(&params).map_err(candle)?;
            registry.validate().map_err(|e| anyhow!("{e}"))?;
            let ring_lengths = match size {
                RingSize::Ratio(r) => {
                    ring_lengths_for_ratio(&registry, r).map_err(|e| anyhow!("--dof {r}: {e}"))?
                }
                RingSize::Length(n) => split_ring_budget(&registry, n),
            };
            let spec = RingSpec {
                ring_lengths,
                seed: cfg.seed,
                placement: cfg
                    .placement
                    .parse::<PlacementKind>()
                    .map_err(|e| anyhow!("{e}"))?,
                version: PlacementVersion::V1,
                scale: cfg.scale_rule()?,
            };
            ParamStore::rpg(registry, &spec, device, DType::F32).map_err(candle)?
        }
    };
    let model = build_model(&mc, store.var_builder()).map_err(candle)?;
    Ok(Built {
        config: mc,
        store,
        model,
        dense_params,
    })
}

/// Rebuilds the model a model file was saved from and loads it.
pub fn build_from_file(path: &Path, header: &ModelFileHeader, device: &Device) -> Result<Built> {
    let mc: ModelConfig = serde_json::from_str(&header.model_config)
        .with_context(|| format!("{}: unreadable model configuration", path.display()))?;
    let dense_params = param_count(&recorded(&mc)?);
    let store = match header.mode {
        Mode::Dense => ParamStore::dense(device, DType::F32, header.seed),
        Mode::Rpg => {
            let (Some(registry), Some(spec)) = (&header.registry, &header.spec) else {
                anyhow::bail!(
                    "{}: an rpg model file without spec or registry",
                    path.display()
                );
            };
            ParamStore::rpg(registry.clone(), spec, device, DType::F32).map_err(candle)?
        }
    };
    let model = build_model(&mc, store.var_builder()).map_err(candle)?;
    load_model_file(path, &store, &mc.name, &header.model_config).map_err(candle)?;
    Ok(Built {
        config: mc,
        store,
        model,
        dense_params,
    })
}

/// Rebuilds a model from a compressed artifact (`rpg compress`).
pub fn build_from_artifact(path: &Path, device: &Device) -> Result<Built> {
    let (artifact, _model, model_config) =
        rpg_compress::Artifact::load(path).map_err(|e| anyhow!("{e}"))?;
    let mc: ModelConfig = serde_json::from_str(&model_config)
        .with_context(|| format!("{}: unreadable model configuration", path.display()))?;
    let params = recorded(&mc)?;
    let dense_params = param_count(&params);
    let store = match &artifact.spec {
        None => ParamStore::dense(device, DType::F32, artifact.seed),
        Some(spec) => {
            let registry = rpg_compress::artifact::registry_from_shared(&params, &artifact.shared)
                .map_err(|e| anyhow!("{e}"))?;
            ParamStore::rpg(registry, spec, device, DType::F32).map_err(candle)?
        }
    };
    let model = build_model(&mc, store.var_builder()).map_err(candle)?;
    artifact
        .apply(&store)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Built {
        config: mc,
        store,
        model,
        dense_params,
    })
}

/// Loads a model file or a compressed artifact.
pub fn load_any(path: &Path, device: &Device) -> Result<Built> {
    if rpg_compress::Artifact::is_artifact(path) {
        build_from_artifact(path, device)
    } else {
        let header = rpg_nn::read_header(path).map_err(candle)?;
        build_from_file(path, &header, device)
    }
}
