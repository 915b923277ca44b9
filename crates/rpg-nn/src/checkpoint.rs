//! The model file: ring(s) + unshared tensors + seed + spec, in one
//! safetensors file whose header metadata says what model it belongs to.
//! `docs/format.md` lists the keys. Writes are atomic and durable (`durable::write_atomic`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rpg_core::{LayerRegistry, RingSpec};

use crate::mode::Mode;
use crate::model_file_error::ModelFileError;
use crate::store::{ParamStore, RING_NAME};

type Result<T> = std::result::Result<T, ModelFileError>;

/// Version of the model-file layout (not of the placement) that this build
/// writes. Format 2 is format 1 with the checksum required.
pub const FORMAT_VERSION: u32 = 2;

/// The format whose files may lack a checksum: those written before
/// 2026-11-28 had none, and still load (without the check).
pub const FORMAT_WITHOUT_CHECKSUM: u32 = 1;

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFileHeader {
    /// Layout version.
    pub format: u32,
    /// Dense or RPG.
    pub mode: Mode,
    /// Model name, e.g. `lenet5`.
    pub model: String,
    /// The model's configuration (opaque JSON from the caller).
    pub model_config: String,
    /// Seed of initialisation and placement.
    pub seed: u64,
    /// Ring spec (RPG mode).
    pub spec: Option<RingSpec>,
    /// Registry the placement was computed from (RPG mode).
    pub registry: Option<LayerRegistry>,
    /// Other metadata the caller stored (e.g. the trainer's epoch).
    pub extra: BTreeMap<String, String>,
}

/// Metadata key of the checksum over the file's other metadata and tensors.
pub const CHECKSUM_KEY: &str = "rpg.checksum";

/// `sha256:<hex>` over a model file's metadata (sorted, without the
/// checksum itself) and tensors (sorted by name: name, dtype, shape, bytes),
/// so that any edit of the header or the data is caught on load. Computed
/// from the tensors being saved, and from the views of a file being read.
fn checksum<'a, V: safetensors::View>(
    meta: impl IntoIterator<Item = (&'a String, &'a String)>,
    tensors: impl IntoIterator<Item = (&'a str, V)>,
) -> String {
    use sha2::{Digest, Sha256};
    let meta: BTreeMap<&String, &String> = meta
        .into_iter()
        .filter(|(k, _)| *k != CHECKSUM_KEY)
        .collect();
    let mut hash = Sha256::new();
    for (k, v) in meta {
        for field in [k.as_bytes(), v.as_bytes()] {
            hash.update((field.len() as u64).to_le_bytes());
            hash.update(field);
        }
    }
    let mut tensors: Vec<(&str, V)> = tensors.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (name, view) in tensors {
        let header = format!("{name}|{:?}|{:?}", view.dtype(), view.shape());
        hash.update((header.len() as u64).to_le_bytes());
        hash.update(header.as_bytes());
        let data = view.data();
        hash.update((data.len() as u64).to_le_bytes());
        hash.update(&data);
    }
    format!("sha256:{:x}", hash.finalize())
}

/// The checksum of a serialised model file's bytes (see [`checksum`]).
fn file_checksum(path: &Path, bytes: &[u8]) -> Result<String> {
    let corrupt = |e: safetensors::SafeTensorError| ModelFileError::Corrupt {
        path: path.to_path_buf(),
        what: e.to_string(),
    };
    let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes).map_err(corrupt)?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    let tensors = safetensors::SafeTensors::deserialize(bytes).map_err(corrupt)?;
    let views = tensors.tensors();
    Ok(checksum(
        &meta,
        views.iter().map(|(name, view)| (name.as_str(), view)),
    ))
}

/// Writes the store's model file atomically.
pub fn save_model_file(
    path: &Path,
    store: &ParamStore,
    model: &str,
    model_config: &str,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let mut meta: HashMap<String, String> =
        extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert("rpg.format".into(), FORMAT_VERSION.to_string());
    meta.insert("rpg.mode".into(), store.mode().name().into());
    meta.insert("rpg.model".into(), model.into());
    meta.insert("rpg.model_config".into(), model_config.into());
    meta.insert("rpg.seed".into(), store.seed().to_string());
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    if let (Some(placement), Some(registry), Some(ring)) =
        (store.placement(), store.registry(), store.ring())
    {
        let spec = serde_json::to_string(placement.spec()).map_err(candle_core::Error::wrap)?;
        meta.insert("rpg.spec".into(), spec);
        meta.insert(
            "rpg.registry".into(),
            serde_json::to_string(registry).map_err(candle_core::Error::wrap)?,
        );
        tensors.push((RING_NAME.into(), ring.as_tensor().to_device(&Device::Cpu)?));
    }
    for (name, var) in store.persistent() {
        tensors.push((name, var.as_tensor().to_device(&Device::Cpu)?));
    }
    let sum = checksum(&meta, tensors.iter().map(|(n, t)| (n.as_str(), t)));
    meta.insert(CHECKSUM_KEY.into(), sum);
    let bytes = safetensors::serialize(tensors, Some(meta))
        .map_err(|e| candle_core::Error::Msg(format!("serialising {}: {e}", path.display())))?;
    crate::durable::write_atomic(path, bytes).map_err(|source| ModelFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ModelFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_header(path: &Path, bytes: &[u8]) -> Result<ModelFileHeader> {
    let corrupt = |what: String| ModelFileError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    let get = |key: &str| {
        meta.get(key)
            .cloned()
            .ok_or_else(|| corrupt(format!("no `{key}` in its header")))
    };
    if !meta.contains_key("rpg.format") && meta.contains_key("kind") && meta.contains_key("steps") {
        return Err(ModelFileError::OptimizerState {
            path: path.to_path_buf(),
        });
    }
    let format: u32 = get("rpg.format")?
        .parse()
        .map_err(|_| corrupt("bad rpg.format".into()))?;
    if !(FORMAT_WITHOUT_CHECKSUM..=FORMAT_VERSION).contains(&format) {
        return Err(ModelFileError::Format {
            path: path.to_path_buf(),
            found: format,
            newest: FORMAT_VERSION,
        });
    }
    match meta.get(CHECKSUM_KEY) {
        Some(stored) if *stored != file_checksum(path, bytes)? => {
            return Err(ModelFileError::ChecksumMismatch {
                path: path.to_path_buf(),
            });
        }
        // Only files of the first format may lack it (written before
        // checksums existed); deleting the key must not skip the check.
        None if format != FORMAT_WITHOUT_CHECKSUM => {
            return Err(ModelFileError::MissingChecksum {
                path: path.to_path_buf(),
                format,
            });
        }
        _ => {}
    }
    let mode = match get("rpg.mode")?.as_str() {
        "dense" => Mode::Dense,
        "rpg" => Mode::Rpg,
        other => return Err(corrupt(format!("unknown mode `{other}`"))),
    };
    let (spec, registry) = if mode == Mode::Rpg {
        let spec = serde_json::from_str(&get("rpg.spec")?)
            .map_err(|e| corrupt(format!("bad spec: {e}")))?;
        let registry = serde_json::from_str(&get("rpg.registry")?)
            .map_err(|e| corrupt(format!("bad registry: {e}")))?;
        (Some(spec), Some(registry))
    } else {
        (None, None)
    };
    let extra = meta
        .iter()
        .filter(|(k, _)| !k.starts_with("rpg."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(ModelFileHeader {
        format,
        mode,
        model: get("rpg.model")?,
        model_config: get("rpg.model_config")?,
        seed: get("rpg.seed")?
            .parse()
            .map_err(|_| corrupt("bad rpg.seed".into()))?,
        spec,
        registry,
        extra,
    })
}

/// A model file read into memory once: its header, and its tensors ready to
/// load into a store.
#[derive(Debug, Clone)]
pub struct ModelFile {
    path: PathBuf,
    bytes: Vec<u8>,
    header: ModelFileHeader,
}

impl ModelFile {
    /// Reads and checks a model file's header.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_bytes(path, read_bytes(path)?)
    }

    /// A model file whose bytes were read already (`path` names it in
    /// errors).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let header = parse_header(path, &bytes)?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            header,
        })
    }

    /// The header: which model to build, and its spec.
    pub fn header(&self) -> &ModelFileHeader {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name and shape of every tensor the file holds, read from its
    /// header (no tensor data is touched).
    pub fn tensor_shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&self.bytes).map_err(|e| {
            ModelFileError::Corrupt {
                path: self.path.clone(),
                what: e.to_string(),
            }
        })?;
        Ok(metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.shape.clone()))
            .collect())
    }

    /// Loads the tensors into a store built for `model` with
    /// `model_config`. Fails, naming the mismatch, when the file is for
    /// another model, config, mode, spec, seed or placement version.
    pub fn load_into(&self, store: &ParamStore, model: &str, model_config: &str) -> Result<()> {
        load_checked(
            &self.path,
            &self.bytes,
            &self.header,
            store,
            model,
            model_config,
        )
    }
}

/// Reads a model file's header (to decide which model to build).
pub fn read_header(path: &Path) -> Result<ModelFileHeader> {
    ModelFile::read(path).map(|f| f.header)
}

/// Loads a model file into a store built for `model` with `model_config`
/// (see [`ModelFile::load_into`]).
pub fn load_model_file(
    path: &Path,
    store: &ParamStore,
    model: &str,
    model_config: &str,
) -> Result<ModelFileHeader> {
    let file = ModelFile::read(path)?;
    file.load_into(store, model, model_config)?;
    Ok(file.header)
}

fn load_checked(
    path: &Path,
    bytes: &[u8],
    header: &ModelFileHeader,
    store: &ParamStore,
    model: &str,
    model_config: &str,
) -> Result<()> {
    let path = path.to_path_buf();
    if header.model != model {
        return Err(ModelFileError::WrongModel {
            path,
            found: header.model.clone(),
            expected: model.into(),
        });
    }
    if header.model_config != model_config {
        return Err(ModelFileError::WrongConfig {
            path,
            model: model.into(),
            found: header.model_config.clone(),
            expected: model_config.into(),
        });
    }
    if header.mode != store.mode() {
        return Err(ModelFileError::WrongMode {
            path,
            found: header.mode,
            expected: store.mode(),
        });
    }
    if let (Some(file_spec), Some(placement)) = (&header.spec, store.placement()) {
        let spec = placement.spec();
        let mismatch = if file_spec.seed != spec.seed {
            Some(format!("seed {} vs {}", file_spec.seed, spec.seed))
        } else if file_spec.version != spec.version {
            Some(format!(
                "placement version {:?} vs {:?}",
                file_spec.version, spec.version
            ))
        } else if file_spec.placement != spec.placement {
            Some(format!(
                "placement {} vs {}",
                file_spec.placement, spec.placement
            ))
        } else if file_spec.ring_lengths != spec.ring_lengths {
            Some(format!(
                "ring lengths {:?} vs {:?}",
                file_spec.ring_lengths, spec.ring_lengths
            ))
        } else if file_spec.scale != spec.scale {
            Some(format!(
                "scale rule {:?} vs {:?}",
                file_spec.scale, spec.scale
            ))
        } else {
            None
        };
        if let Some(difference) = mismatch {
            return Err(ModelFileError::WrongSpec { path, difference });
        }
        if header.registry.as_ref() != store.registry() {
            return Err(ModelFileError::WrongRegistry { path });
        }
    }
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| {
        ModelFileError::Corrupt {
            path: path.clone(),
            what: format!("cannot read tensors: {e}"),
        }
    })?;
    store
        .assign(&tensors.into_iter().collect())
        .map_err(|source| ModelFileError::Tensors { path, source })
}
