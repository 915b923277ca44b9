//! The compressed artifact: one safetensors file from which the model is
//! rebuilt. It holds the ring (optionally pruned: a bitmap and the kept
//! values; optionally quantized: codes and per-block scales), the unshared
//! tensors (concatenated in the parameter store's order, optionally int8
//! with one scale per tensor), and in its header the model, its
//! configuration, the seed, the ring spec, which parameters are shared
//! (`rpg.shared`: one character per recorded parameter, `-` for unshared or
//! the ring group's digit) and the settings. The placement is regenerated
//! from seed and spec, as for every model file (`docs/format.md`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rpg_core::{LayerInfo, LayerRegistry, RingSpec};
use rpg_nn::{ParamStore, RING_NAME};

use crate::prune::{Sparse, magnitude_prune};
use crate::quantize::{Bits, Quantized, quantize, quantize_f16_scales};

/// Layout version of compressed artifacts.
pub const ARTIFACT_FORMAT: &str = "compressed-1";

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// A Candle error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a valid artifact.
    #[error("{0}")]
    Corrupt(String),
    /// The artifact does not fit the model.
    #[error("{0}")]
    Mismatch(String),
}

type Result<T> = std::result::Result<T, CompressError>;

/// How to compress.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressSettings {
    /// Ring code width (None: keep f32).
    pub ring_bits: Option<Bits>,
    /// Values per quantization block of the ring.
    pub block: usize,
    /// Store scales in f16 instead of f32.
    pub f16_scales: bool,
    /// Fraction of ring entries to prune by magnitude.
    pub ring_prune: f64,
    /// Quantize unshared tensors to 8 bits (one scale per tensor).
    pub unshared_int8: bool,
}

impl Default for CompressSettings {
    fn default() -> Self {
        Self {
            ring_bits: Some(Bits::Eight),
            block: 256,
            f16_scales: true,
            ring_prune: 0.0,
            unshared_int8: true,
        }
    }
}

impl CompressSettings {
    fn to_json(&self) -> String {
        serde_json::json!({
            "ring_bits": self.ring_bits.map(Bits::count),
            "block": self.block,
            "f16_scales": self.f16_scales,
            "ring_prune": self.ring_prune,
            "unshared_int8": self.unshared_int8,
        })
        .to_string()
    }

    fn from_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| CompressError::Corrupt(format!("bad settings: {e}")))?;
        let bits = match v["ring_bits"].as_u64() {
            None => None,
            Some(b) => Some(
                Bits::from_count(b as u32)
                    .ok_or_else(|| CompressError::Corrupt(format!("ring_bits {b}")))?,
            ),
        };
        Ok(Self {
            ring_bits: bits,
            block: v["block"].as_u64().unwrap_or(256) as usize,
            f16_scales: v["f16_scales"].as_bool().unwrap_or(false),
            ring_prune: v["ring_prune"].as_f64().unwrap_or(0.0),
            unshared_int8: v["unshared_int8"].as_bool().unwrap_or(false),
        })
    }
}

/// Values stored either as f32 or quantized.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorStorage {
    /// Plain f32.
    F32(Vec<f32>),
    /// Quantized codes and scales.
    Quant(Quantized),
}

impl TensorStorage {
    fn dequantize(&self) -> Vec<f32> {
        match self {
            TensorStorage::F32(v) => v.clone(),
            TensorStorage::Quant(q) => q.dequantize(),
        }
    }
}

/// The ring: optional bitmap of kept entries, and the kept values.
#[derive(Debug, Clone, PartialEq)]
pub struct RingStorage {
    /// Bitmap of non-zero entries (when pruned).
    pub mask: Option<Vec<u8>>,
    /// The kept values (all values when there is no mask).
    pub values: TensorStorage,
    /// Ring length.
    pub len: usize,
}

/// A compressed model.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// Ring spec (None for a dense model).
    pub spec: Option<RingSpec>,
    /// Seed.
    pub seed: u64,
    /// `rpg.shared` (see the module docs).
    pub shared: String,
    /// The ring.
    pub ring: Option<RingStorage>,
    /// Unshared tensors (or, for a dense model, every tensor), concatenated.
    pub unshared: Vec<TensorStorage>,
    /// Settings used.
    pub settings: CompressSettings,
}

/// `rpg.shared` for a registry of recorded parameters.
pub fn shared_string(registry: &LayerRegistry) -> String {
    registry
        .layers()
        .iter()
        .map(|l| {
            if l.shared {
                char::from_digit(l.group as u32 % 36, 36).unwrap_or('0')
            } else {
                '-'
            }
        })
        .collect()
}

/// Rebuilds a registry from recorded `(name, shape)` parameters and `rpg.shared`.
pub fn registry_from_shared(
    params: &[(String, Vec<usize>)],
    shared: &str,
) -> Result<LayerRegistry> {
    if shared.chars().count() != params.len() {
        return Err(CompressError::Mismatch(format!(
            "the artifact describes {} parameters but the model has {}: it is for another model",
            shared.chars().count(),
            params.len()
        )));
    }
    let mut registry = LayerRegistry::new();
    for ((name, shape), c) in params.iter().zip(shared.chars()) {
        let group =
            if c == '-' {
                None
            } else {
                Some(c.to_digit(36).ok_or_else(|| {
                    CompressError::Corrupt(format!("bad rpg.shared character `{c}`"))
                })? as usize)
            };
        registry
            .push(LayerInfo {
                name: name.clone(),
                shape: shape.clone(),
                shared: group.is_some(),
                group: group.unwrap_or(0),
            })
            .map_err(|e| CompressError::Corrupt(e.to_string()))?;
    }
    Ok(registry)
}

fn quantize_with(values: &[f32], bits: Bits, block: usize, f16_scales: bool) -> Quantized {
    if f16_scales {
        quantize_f16_scales(values, bits, block)
    } else {
        quantize(values, bits, block)
    }
}

impl Artifact {
    /// Compresses a store's parameters (ring and persistent tensors).
    pub fn compress(store: &ParamStore, settings: &CompressSettings) -> Result<Self> {
        let ring = match store.ring() {
            None => None,
            Some(ring) => {
                let mut values = ring.as_tensor().to_vec1::<f32>()?;
                let len = values.len();
                let mask = if settings.ring_prune > 0.0 {
                    magnitude_prune(&mut values, settings.ring_prune);
                    let sparse = Sparse::from_dense(&values);
                    values = sparse.values;
                    Some(sparse.mask)
                } else {
                    None
                };
                let values = match settings.ring_bits {
                    Some(bits) => TensorStorage::Quant(quantize_with(
                        &values,
                        bits,
                        settings.block,
                        settings.f16_scales,
                    )),
                    None => TensorStorage::F32(values),
                };
                Some(RingStorage { mask, values, len })
            }
        };
        let mut unshared = Vec::new();
        for var in store.persistent().values() {
            let values = var
                .as_tensor()
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            unshared.push(if settings.unshared_int8 {
                let len = values.len();
                TensorStorage::Quant(quantize_with(
                    &values,
                    Bits::Eight,
                    len,
                    settings.f16_scales,
                ))
            } else {
                TensorStorage::F32(values)
            });
        }
        Ok(Self {
            spec: store.placement().map(|p| p.spec().clone()),
            seed: store.seed(),
            shared: store.registry().map(shared_string).unwrap_or_default(),
            ring,
            unshared,
            settings: settings.clone(),
        })
    }

    /// The ring as f32 (pruned entries zero).
    pub fn ring_values(&self) -> Option<Vec<f32>> {
        let ring = self.ring.as_ref()?;
        let kept = ring.values.dequantize();
        Some(match &ring.mask {
            None => kept,
            Some(mask) => Sparse {
                mask: mask.clone(),
                values: kept,
                len: ring.len,
            }
            .to_dense(),
        })
    }

    /// Loads the compressed values into a store built for the same model
    /// and spec (the in-memory compressed model).
    pub fn apply(&self, store: &ParamStore) -> Result<()> {
        let persistent = store.persistent();
        if persistent.len() != self.unshared.len() {
            return Err(CompressError::Mismatch(format!(
                "the artifact holds {} unshared tensors but the model has {}",
                self.unshared.len(),
                persistent.len()
            )));
        }
        let mut tensors = BTreeMap::new();
        for ((name, var), stored) in persistent.iter().zip(&self.unshared) {
            let values = stored.dequantize();
            if values.len() != var.elem_count() {
                return Err(CompressError::Mismatch(format!(
                    "`{name}` has {} values in the artifact but {} in the model",
                    values.len(),
                    var.elem_count()
                )));
            }
            tensors.insert(
                name.clone(),
                Tensor::from_vec(values, var.dims(), &Device::Cpu)?,
            );
        }
        if let Some(ring) = self.ring_values() {
            let len = ring.len();
            tensors.insert(
                RING_NAME.to_string(),
                Tensor::from_vec(ring, len, &Device::Cpu)?,
            );
        }
        store.assign(&tensors)?;
        Ok(())
    }

    /// Writes the artifact (atomically) and returns its size in bytes.
    pub fn save(&self, path: &Path, model: &str, model_config: &str) -> Result<u64> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        let scales = |s: &[f32]| -> Result<Tensor> {
            let t = Tensor::from_slice(s, s.len(), &Device::Cpu)?;
            Ok(if self.settings.f16_scales {
                t.to_dtype(DType::F16)?
            } else {
                t
            })
        };
        let mut push = |prefix: &str, storage: &TensorStorage| -> Result<()> {
            match storage {
                TensorStorage::F32(v) => tensors.push((
                    format!("{prefix}.values"),
                    Tensor::from_slice(v, v.len(), &Device::Cpu)?,
                )),
                TensorStorage::Quant(q) => {
                    tensors.push((
                        format!("{prefix}.codes"),
                        Tensor::from_slice(&q.codes, q.codes.len(), &Device::Cpu)?,
                    ));
                    tensors.push((format!("{prefix}.scales"), scales(&q.scales)?));
                }
            }
            Ok(())
        };
        if let Some(ring) = &self.ring {
            push("ring", &ring.values)?;
        }
        // Unshared tensors: one concatenated buffer (codes or values) and one scale per tensor.
        let all_quant = self
            .unshared
            .iter()
            .all(|u| matches!(u, TensorStorage::Quant(_)));
        if all_quant && !self.unshared.is_empty() {
            let mut codes = Vec::new();
            let mut tensor_scales = Vec::new();
            for u in &self.unshared {
                if let TensorStorage::Quant(q) = u {
                    codes.extend_from_slice(&q.codes);
                    tensor_scales.extend_from_slice(&q.scales);
                }
            }
            push(
                "unshared",
                &TensorStorage::Quant(Quantized {
                    len: codes.len(),
                    codes,
                    scales: tensor_scales,
                    bits: Bits::Eight,
                    block: 1,
                }),
            )?;
        } else if !self.unshared.is_empty() {
            let values: Vec<f32> = self
                .unshared
                .iter()
                .flat_map(TensorStorage::dequantize)
                .collect();
            push("unshared", &TensorStorage::F32(values))?;
        }
        if let Some(mask) = self.ring.as_ref().and_then(|r| r.mask.as_ref()) {
            tensors.push((
                "ring.mask".into(),
                Tensor::from_slice(mask, mask.len(), &Device::Cpu)?,
            ));
        }
        let mut meta = HashMap::from([
            ("rpg.format".to_string(), ARTIFACT_FORMAT.to_string()),
            ("rpg.model".to_string(), model.to_string()),
            ("rpg.model_config".to_string(), model_config.to_string()),
            ("rpg.seed".to_string(), self.seed.to_string()),
            ("rpg.compress".to_string(), self.settings.to_json()),
            ("rpg.sizes".to_string(), self.sizes_string()),
        ]);
        if let (Some(spec), Some(ring)) = (&self.spec, &self.ring) {
            meta.insert(
                "rpg.spec".into(),
                serde_json::to_string(spec).map_err(|e| CompressError::Corrupt(e.to_string()))?,
            );
            meta.insert("rpg.shared".into(), self.shared.clone());
            meta.insert("rpg.ring_len".into(), ring.len.to_string());
        }
        let bytes = safetensors::serialize(tensors, Some(meta))
            .map_err(|e| CompressError::Corrupt(format!("serialising {}: {e}", path.display())))?;
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| CompressError::Io { path, source }
        };
        rpg_nn::durable::write_atomic(path, bytes).map_err(io(path))?;
        std::fs::metadata(path)
            .map(|m| m.len())
            .map_err(|source| CompressError::Io {
                path: path.display().to_string(),
                source,
            })
    }

    /// Element count of each unshared tensor, comma-separated (to split the
    /// concatenated buffer on load).
    fn sizes_string(&self) -> String {
        self.unshared
            .iter()
            .map(|u| match u {
                TensorStorage::F32(v) => v.len(),
                TensorStorage::Quant(q) => q.len,
            })
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Reads an artifact; returns it with the model name and configuration.
    pub fn load(path: &Path) -> Result<(Self, String, String)> {
        let bytes = std::fs::read(path).map_err(|source| CompressError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_bytes(path, &bytes)
    }

    /// [`Artifact::load`] of bytes read already (`path` names them in
    /// errors).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<(Self, String, String)> {
        let corrupt = |what: String| {
            CompressError::Corrupt(format!(
                "{} is not a valid compressed rpg artifact ({what}): it may be truncated or corrupt",
                path.display()
            ))
        };
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let meta = metadata.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| corrupt(format!("no `{k}` in its header")))
        };
        if get("rpg.format")? != ARTIFACT_FORMAT {
            return Err(corrupt(format!(
                "format {}, expected {ARTIFACT_FORMAT}",
                get("rpg.format")?
            )));
        }
        let settings = CompressSettings::from_json(&get("rpg.compress")?)?;
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| corrupt(e.to_string()))?;
        let f32s = |name: &str| -> Result<Option<Vec<f32>>> {
            tensors
                .get(name)
                .map(|t| t.to_dtype(DType::F32)?.to_vec1::<f32>())
                .transpose()
                .map_err(Into::into)
        };
        let u8s = |name: &str| -> Result<Option<Vec<u8>>> {
            tensors
                .get(name)
                .map(|t| t.to_vec1::<u8>())
                .transpose()
                .map_err(Into::into)
        };
        let spec: Option<RingSpec> = meta
            .get("rpg.spec")
            .map(|s| serde_json::from_str(s).map_err(|e| corrupt(format!("bad spec: {e}"))))
            .transpose()?;
        let ring = match &spec {
            None => None,
            Some(_) => {
                let len: usize = get("rpg.ring_len")?
                    .parse()
                    .map_err(|_| corrupt("bad rpg.ring_len".into()))?;
                let mask = u8s("ring.mask")?;
                let kept = match &mask {
                    Some(m) => {
                        if m.len() != len.div_ceil(8) {
                            return Err(corrupt("ring mask length".into()));
                        }
                        m.iter().map(|b| b.count_ones() as usize).sum()
                    }
                    None => len,
                };
                let values = match (
                    settings.ring_bits,
                    u8s("ring.codes")?,
                    f32s("ring.scales")?,
                    f32s("ring.values")?,
                ) {
                    (Some(bits), Some(codes), Some(scales), _) => {
                        if codes.len() != Quantized::code_bytes(kept, bits)
                            || scales.len() != kept.div_ceil(settings.block.max(1))
                        {
                            return Err(corrupt(
                                "ring codes or scales have the wrong length".into(),
                            ));
                        }
                        TensorStorage::Quant(Quantized {
                            codes,
                            scales,
                            len: kept,
                            bits,
                            block: settings.block.max(1),
                        })
                    }
                    (None, _, _, Some(values)) if values.len() == kept => {
                        TensorStorage::F32(values)
                    }
                    _ => {
                        return Err(corrupt(
                            "ring tensors missing or of the wrong length".into(),
                        ));
                    }
                };
                Some(RingStorage { mask, values, len })
            }
        };
        let sizes: Vec<usize> = get("rpg.sizes")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| corrupt("bad rpg.sizes".into())))
            .collect::<Result<_>>()?;
        let total: usize = sizes.iter().sum();
        let mut unshared = Vec::with_capacity(sizes.len());
        if settings.unshared_int8 && total > 0 {
            let codes =
                u8s("unshared.codes")?.ok_or_else(|| corrupt("no unshared.codes".into()))?;
            let scales =
                f32s("unshared.scales")?.ok_or_else(|| corrupt("no unshared.scales".into()))?;
            if codes.len() != total || scales.len() != sizes.len() {
                return Err(corrupt(
                    "unshared codes or scales have the wrong length".into(),
                ));
            }
            let mut offset = 0;
            for (i, &n) in sizes.iter().enumerate() {
                unshared.push(TensorStorage::Quant(Quantized {
                    codes: codes[offset..offset + n].to_vec(),
                    scales: vec![scales[i]],
                    len: n,
                    bits: Bits::Eight,
                    block: n.max(1),
                }));
                offset += n;
            }
        } else if total > 0 {
            let values =
                f32s("unshared.values")?.ok_or_else(|| corrupt("no unshared.values".into()))?;
            if values.len() != total {
                return Err(corrupt("unshared values have the wrong length".into()));
            }
            let mut offset = 0;
            for &n in &sizes {
                unshared.push(TensorStorage::F32(values[offset..offset + n].to_vec()));
                offset += n;
            }
        }
        let artifact = Self {
            spec,
            seed: get("rpg.seed")?
                .parse()
                .map_err(|_| corrupt("bad rpg.seed".into()))?,
            shared: meta.get("rpg.shared").cloned().unwrap_or_default(),
            ring,
            unshared,
            settings,
        };
        Ok((artifact, get("rpg.model")?, get("rpg.model_config")?))
    }

    /// True when `path` holds a compressed artifact (not a model file).
    pub fn is_artifact(path: &Path) -> bool {
        std::fs::read(path)
            .ok()
            .is_some_and(|bytes| Self::is_artifact_bytes(&bytes))
    }

    /// True when a file's bytes are a compressed artifact.
    pub fn is_artifact_bytes(bytes: &[u8]) -> bool {
        safetensors::SafeTensors::read_metadata(bytes)
            .ok()
            .is_some_and(|(_, m)| {
                m.metadata()
                    .as_ref()
                    .and_then(|m| m.get("rpg.format"))
                    .is_some_and(|f| f == ARTIFACT_FORMAT)
            })
    }
}
