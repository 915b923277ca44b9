//! Building a model and its parameter store, from a training config or from
//! a checkpoint's header.

use std::path::Path;

use candle_core::{DType, Device};
use rpg_core::{
    LayerRegistry, PlacementVersion, RingSpec, ring_lengths_for_ratio, split_ring_budget,
};
use rpg_models::{DynModel, ModelConfig, build_model, model_entry};
use rpg_nn::{GenerationPath, Mode, ModelFile, ParamStore, SharingPolicy, record_parameters};

use crate::config::{ConfigError, RingSize, TrainConfig};
use crate::error::{Error, Result};

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

/// The model config for a data set's classes and input.
pub fn model_config(
    cfg: &TrainConfig,
    num_classes: usize,
    channels: usize,
    image_size: usize,
) -> Result<ModelConfig> {
    let entry = model_entry(&cfg.model)?;
    let mut mc = entry.config(num_classes).with_width(cfg.width);
    mc.in_channels = channels;
    mc.image_size = image_size;
    Ok(mc)
}

/// The sharing policy a config asks for: the model's default, extended by
/// the config's patterns.
pub fn policy(cfg: &TrainConfig) -> Result<SharingPolicy> {
    let mut policy = model_entry(&cfg.model)?.sharing_policy();
    policy.shared.extend(cfg.share.iter().cloned());
    policy.unshared.extend(cfg.unshare.iter().cloned());
    policy.groups.extend(cfg.local_rings.iter().cloned());
    Ok(policy)
}

/// The trainable parameters a model asks for, in order (one recording pass).
pub fn recorded(mc: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
    Ok(record_parameters(|vb| build_model(mc, vb))?)
}

/// Element count of recorded parameters: the dense model's size.
pub fn param_count(params: &[(String, Vec<usize>)]) -> u64 {
    // Saturating: a corrupt shape must not wrap to a small count.
    params
        .iter()
        .map(|(_, s)| s.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64)))
        .fold(0u64, u64::saturating_add)
}

/// Records the registry of a model under a policy.
pub fn registry(mc: &ModelConfig, policy: &SharingPolicy) -> Result<LayerRegistry> {
    Ok(policy.registry(&recorded(mc)?)?)
}

/// Refuses sharing patterns that would be silently ignored: any with a
/// dense model, a pattern that uses glob syntax other than `*`, matches no
/// parameter, or (`--share`) matches only parameters that cannot be shared.
fn check_patterns(cfg: &TrainConfig, dense: bool, params: &[(String, Vec<usize>)]) -> Result<()> {
    let settings = [
        ("share", &cfg.share),
        ("unshare", &cfg.unshare),
        ("local_rings", &cfg.local_rings),
    ];
    let names = || {
        params
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (key, patterns) in settings {
        for pattern in patterns {
            let invalid =
                |why: String| Err(Error::invalid_setting(key, format!("'{pattern}'"), why));
            if dense {
                return Err(ConfigError::Conflict(rpg_core::ConflictingSettings {
                    first: key,
                    second: "dense",
                    reason: "a dense model shares nothing; drop one of them".into(),
                })
                .into());
            }
            if let Some(c) = pattern.chars().find(|c| "[]?{}!".contains(*c)) {
                return invalid(format!(
                    "`{c}` is not pattern syntax here: only `*` is a wildcard (e.g. 'layer1.*')"
                ));
            }
            let matched: Vec<&(String, Vec<usize>)> = params
                .iter()
                .filter(|(n, _)| rpg_nn::glob_match(pattern, n))
                .collect();
            if matched.is_empty() {
                return invalid(format!(
                    "matches no parameter of {} (its parameters: {})",
                    cfg.model,
                    names()
                ));
            }
            if key == "share" && matched.iter().all(|(_, shape)| shape.len() < 2) {
                return invalid(
                    "matches only one-dimensional parameters (biases, norms), which are never shared"
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// Builds the model a training config describes, with fresh parameters.
pub fn build_for_training(
    cfg: &TrainConfig,
    ring: Option<RingSize>,
    mc: ModelConfig,
    device: &Device,
) -> Result<Built> {
    let path = GenerationPath::for_device(device, DType::F32);
    build_for_training_on(cfg, ring, mc, device, path)
}

/// [`build_for_training`] with RPG generation on the given path.
pub fn build_for_training_on(
    cfg: &TrainConfig,
    ring: Option<RingSize>,
    mc: ModelConfig,
    device: &Device,
    path: GenerationPath,
) -> Result<Built> {
    let params = recorded(&mc)?;
    check_patterns(cfg, ring.is_none(), &params)?;
    let dense_params = param_count(&params);
    let store = match ring {
        None => ParamStore::dense(device, DType::F32, cfg.seed),
        Some(size) => {
            let registry = policy(cfg)?.registry(&params)?;
            registry.validate()?;
            let ring_lengths = match size {
                RingSize::Ratio(ratio) => ring_lengths_for_ratio(&registry, ratio)
                    .map_err(|source| Error::DofRatio { ratio, source })?,
                RingSize::Length(n) => split_ring_budget(&registry, n),
            };
            let spec = RingSpec {
                ring_lengths,
                seed: cfg.seed,
                placement: cfg.placement,
                version: PlacementVersion::V1,
                scale: cfg.ring_scale,
            };
            ParamStore::rpg_with(registry, &spec, device, DType::F32, path)?
        }
    };
    let model = build_model(&mc, store.var_builder())?;
    Ok(Built {
        config: mc,
        store,
        model,
        dense_params,
    })
}

/// The model configuration a model file or artifact stores.
fn stored_config(path: &Path, json: &str) -> Result<ModelConfig> {
    serde_json::from_str(json).map_err(|source| Error::ModelConfig {
        path: path.to_path_buf(),
        source,
    })
}

/// The most parameters a stored model may declare: far above the zoo's
/// largest, far below what a corrupt header could ask a machine to allocate.
pub const MAX_STORED_PARAMS: u64 = 1 << 31;

/// Refuses a stored configuration that declares more than
/// [`MAX_STORED_PARAMS`] parameters, before they are allocated.
fn check_size(path: &Path, params: &[(String, Vec<usize>)]) -> Result<()> {
    let count = param_count(params);
    if count > MAX_STORED_PARAMS {
        return Err(Error::Invalid(format!(
            "{}: its model configuration asks for {count} parameters, more than {MAX_STORED_PARAMS}: the file is damaged or edited",
            path.display()
        )));
    }
    Ok(())
}

/// Checks, before anything is allocated, that a model file holds the model
/// its configuration describes: its parameter count is sane, its registry
/// lists the model's parameters, and every stored tensor has their shape.
fn check_file_matches(file: &ModelFile, params: &[(String, Vec<usize>)]) -> Result<()> {
    let (path, header) = (file.path(), file.header());
    let mismatch = |what: String| {
        Err(Error::Invalid(format!(
            "{}: {what}: the file does not hold the model its configuration describes (damaged or edited?)",
            path.display()
        )))
    };
    check_size(path, params)?;
    let stored = file.tensor_shapes()?;
    let registry = header.registry.as_ref();
    for (name, shape) in params {
        if let Some(layer) = registry.and_then(|r| r.get(name)) {
            if layer.shape != *shape {
                return mismatch(format!(
                    "the registry gives `{name}` shape {:?}, the model {shape:?}",
                    layer.shape
                ));
            }
            if layer.shared {
                continue;
            }
        } else if registry.is_some() {
            return mismatch(format!("`{name}` is missing from the registry"));
        }
        match stored.get(name) {
            Some(s) if s == shape => {}
            Some(s) => {
                return mismatch(format!(
                    "tensor `{name}` has shape {s:?}, the model needs {shape:?}"
                ));
            }
            None => return mismatch(format!("tensor `{name}` is missing")),
        }
    }
    if let Some(r) = registry
        && r.layers().len() != params.len()
    {
        return mismatch(format!(
            "the registry lists {} parameters, the model has {}",
            r.layers().len(),
            params.len()
        ));
    }
    Ok(())
}

/// Rebuilds the model a model file was saved from and loads it.
pub fn build_from_file(file: &ModelFile, device: &Device) -> Result<Built> {
    let (path, header) = (file.path(), file.header());
    let mc = stored_config(path, &header.model_config)?;
    let params = recorded(&mc)?;
    check_file_matches(file, &params)?;
    let dense_params = param_count(&params);
    let store = match (header.mode, &header.registry, &header.spec) {
        (Mode::Dense, _, _) => ParamStore::dense(device, DType::F32, header.seed),
        (Mode::Rpg, Some(registry), Some(spec)) => {
            ParamStore::rpg(registry.clone(), spec, device, DType::F32)?
        }
        (Mode::Rpg, _, _) => {
            return Err(Error::Invalid(format!(
                "{}: an rpg model file without spec or registry",
                path.display()
            )));
        }
    };
    let model = build_model(&mc, store.var_builder())?;
    file.load_into(&store, &mc.name, &header.model_config)?;
    Ok(Built {
        config: mc,
        store,
        model,
        dense_params,
    })
}

/// Rebuilds a model from a compressed artifact (`rpg compress`) whose bytes
/// were read already.
pub fn build_from_artifact(path: &Path, bytes: &[u8], device: &Device) -> Result<Built> {
    let (artifact, _model, model_config) = rpg_compress::Artifact::from_bytes(path, bytes)?;
    let mc = stored_config(path, &model_config)?;
    let params = recorded(&mc)?;
    check_size(path, &params)?;
    let dense_params = param_count(&params);
    let store = match &artifact.spec {
        None => ParamStore::dense(device, DType::F32, artifact.seed),
        Some(spec) => {
            let registry = rpg_compress::artifact::registry_from_shared(&params, &artifact.shared)?;
            ParamStore::rpg(registry, spec, device, DType::F32)?
        }
    };
    let model = build_model(&mc, store.var_builder())?;
    artifact.apply(&store).map_err(|source| Error::Artifact {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Built {
        config: mc,
        store,
        model,
        dense_params,
    })
}

/// Metadata key that marks a dense export (`rpg export`), and its values.
pub const EXPORT_KEY: &str = "rpg.export";
/// See [`EXPORT_KEY`]: torchvision's layout, which rpg reads back.
pub const EXPORT_DENSE: &str = "dense";
/// See [`EXPORT_KEY`]: BatchNorms folded into the convs (`--fold-bn`).
pub const EXPORT_FOLDED_BN: &str = "dense-folded-bn";
/// See [`EXPORT_KEY`]: an ONNX model (in its `metadata_props`).
pub const EXPORT_ONNX: &str = "onnx";
/// The per-BatchNorm counter torchvision's state dicts carry; dense exports
/// write it and reading them skips it.
pub const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";

/// The metadata of a dense export (`rpg export`), if `bytes` are one.
fn export_metadata(bytes: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).ok()?;
    let meta = metadata.metadata().clone()?;
    meta.contains_key(EXPORT_KEY).then_some(meta)
}

/// Rebuilds a dense model from its export (`rpg export`, without
/// `--fold-bn`; `meta` is its metadata): the model configuration it
/// records and every tensor.
fn build_from_export(
    path: &Path,
    bytes: &[u8],
    meta: &std::collections::HashMap<String, String>,
    device: &Device,
) -> Result<Built> {
    if meta.get(EXPORT_KEY).map(String::as_str) == Some(EXPORT_FOLDED_BN) {
        return Err(Error::FoldedExport {
            path: path.to_path_buf(),
        });
    }
    let config = meta.get("model_config").ok_or_else(|| {
        Error::Invalid(format!(
            "{}: a dense export without its model configuration",
            path.display()
        ))
    })?;
    let mc = stored_config(path, config)?;
    let params = recorded(&mc)?;
    check_size(path, &params)?;
    let store = ParamStore::dense(device, DType::F32, 0);
    let model = build_model(&mc, store.var_builder())?;
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)?;
    let suffix = format!(".{NUM_BATCHES_TRACKED}");
    store.assign(
        &tensors
            .into_iter()
            .filter(|(name, _)| !name.ends_with(&suffix))
            .collect(),
    )?;
    Ok(Built {
        dense_params: param_count(&params),
        config: mc,
        store,
        model,
    })
}

/// Loads a model file, a compressed artifact or a dense export, reading
/// the file once.
pub fn load_any(path: &Path, device: &Device) -> Result<Built> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    if rpg_compress::Artifact::is_artifact_bytes(&bytes) {
        build_from_artifact(path, &bytes, device)
    } else if let Some(meta) = export_metadata(&bytes) {
        build_from_export(path, &bytes, &meta, device)
    } else {
        build_from_file(&ModelFile::from_bytes(path, bytes)?, device)
    }
}
