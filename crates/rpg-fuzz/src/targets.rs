//! What is fuzzed: every reader of a file a user can hand to `rpg`, each
//! with a valid input made here to mutate (IDX, gzip, CIFAR batches, PNG
//! images, model files with and without their checksum, compressed
//! artifacts, optimizer state, and a run's checkpoint swapped for
//! another's as a resume checks it).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use rpg_compress::{Artifact, Bits, CompressSettings};
use rpg_data::{CifarKind, ImageSet, decode_image, decode_maybe_gz, parse_batch, parse_idx};
use rpg_nn::{ModelFile, ParamGroup};
use rpg_train::TrainConfig;
use rpg_train::config::RingSize;
use rpg_train::optim::{Optimizer, OptimizerConfig, Update};
use rpg_train::setup::{build_for_training, build_from_artifact, build_from_file, model_config};

/// Reads an input (named by the path in errors); it may fail, but never
/// panic or over-allocate.
pub type Reader = Box<dyn Fn(&Path, &[u8])>;

/// A reader and the valid input its mutations start from.
pub struct Target {
    /// Shown in the report.
    pub name: &'static str,
    /// A valid input.
    pub seed: Vec<u8>,
    /// The reader.
    pub read: Reader,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish()
    }
}

fn idx_bytes() -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, 3];
    for d in [4u32, 5, 5] {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend((0..100u8).map(|i| i.wrapping_mul(37)));
    bytes
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes)?;
    Ok(e.finish()?)
}

fn cifar_bytes() -> Vec<u8> {
    let mut bytes = Vec::new();
    for label in [3u8, 7] {
        bytes.push(label);
        bytes.extend((0..3072u32).map(|i| (i % 251) as u8));
    }
    bytes
}

fn png_bytes() -> Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8 * 30, y as u8 * 30, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// A LeNet-5 at 10% DoF, saved as a model file and as an int8 artifact,
/// and the names and shapes of its trainable parameters.
fn model_and_artifact(dir: &Path) -> Result<(Vec<u8>, Vec<u8>, Params)> {
    let cfg = TrainConfig::default();
    let mc = model_config(&cfg, 10, 1, 28)?;
    let built = build_for_training(&cfg, Some(RingSize::Ratio(0.1)), mc.clone(), &Device::Cpu)?;
    let params = built
        .store
        .trainable()
        .into_iter()
        .map(|(name, var)| (name, var.dims().to_vec()))
        .collect();
    let model = dir.join("model.safetensors");
    rpg_nn::save_model_file(
        &model,
        &built.store,
        &mc.name,
        &mc.to_json(),
        &BTreeMap::new(),
    )?;
    let settings = CompressSettings {
        ring_bits: Some(Bits::Eight),
        block: 256,
        f16_scales: true,
        ring_prune: 0.0,
        unshared_int8: true,
    };
    let artifact = dir.join("model.compressed.safetensors");
    Artifact::compress(&built.store, &settings)?.save(&artifact, &mc.name, &mc.to_json())?;
    Ok((std::fs::read(model)?, std::fs::read(artifact)?, params))
}

/// Trainable parameters: name and shape.
type Params = Vec<(String, Vec<usize>)>;

/// Optimizer state of another model (an MLP's): what a run's checkpoint
/// holds when another run's was copied over it.
fn foreign_optimizer_bytes(dir: &Path) -> Result<Vec<u8>> {
    let cfg = TrainConfig {
        model: "mlp".into(),
        ..TrainConfig::default()
    };
    let mc = model_config(&cfg, 10, 1, 28)?;
    let built = build_for_training(&cfg, Some(RingSize::Ratio(0.1)), mc, &Device::Cpu)?;
    let trainable = built.store.trainable();
    let grads: Vec<Tensor> = trainable
        .iter()
        .map(|(_, var)| var.zeros_like())
        .collect::<candle_core::Result<_>>()?;
    let updates: Vec<Update<'_>> = trainable
        .iter()
        .zip(&grads)
        .map(|((name, var), grad)| Update {
            name,
            group: ParamGroup::Ordinary,
            var,
            grad,
            lr: 0.1,
        })
        .collect();
    let mut opt = sgd();
    opt.step(&updates)?;
    let path = dir.join("foreign-optimizer.safetensors");
    opt.save(&path)?;
    Ok(std::fs::read(path)?)
}

/// `bytes` (a model file) as written before checksums: format 1 without
/// `rpg.checksum`, so mutations reach the parsers behind the check.
fn as_unchecked(bytes: &[u8]) -> Result<Vec<u8>> {
    let len = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len])?;
    let meta = header["__metadata__"]
        .as_object_mut()
        .context("no metadata")?;
    meta.remove(rpg_nn::CHECKSUM_KEY);
    meta.insert(
        "rpg.format".into(),
        rpg_nn::FORMAT_WITHOUT_CHECKSUM.to_string().into(),
    );
    let mut text = serde_json::to_vec(&header)?;
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + len..]);
    Ok(out)
}

fn sgd() -> Optimizer {
    Optimizer::new(OptimizerConfig::sgd(0.9, 5e-4))
}

fn optimizer_bytes(dir: &Path) -> Result<Vec<u8>> {
    let var = Var::new(&[1f32, 2., 3.], &Device::Cpu)?;
    let grad = Tensor::new(&[0.5f32, 0.5, 0.5], &Device::Cpu)?;
    let mut opt = sgd();
    opt.step(&[Update {
        name: "w",
        group: ParamGroup::Ordinary,
        var: &var,
        grad: &grad,
        lr: 0.1,
    }])?;
    let path = dir.join("optimizer.safetensors");
    opt.save(&path)?;
    Ok(std::fs::read(path)?)
}

/// Every target, with its seed made in `dir`.
pub fn all(dir: &Path) -> Result<Vec<Target>> {
    let (model, artifact, params) = model_and_artifact(dir)?;
    let unsummed = as_unchecked(&model)?;
    let read_model = |path: &Path, bytes: &[u8]| {
        if let Ok(file) = ModelFile::from_bytes(path, bytes.to_vec()) {
            let _ = build_from_file(&file, &Device::Cpu);
        }
    };
    Ok(vec![
        Target {
            name: "idx",
            seed: idx_bytes(),
            read: Box::new(|path, bytes| {
                let _ = parse_idx(path, bytes);
            }),
        },
        Target {
            name: "idx-gzip",
            seed: gzip(&idx_bytes())?,
            read: Box::new(|path, bytes| {
                let _ = decode_maybe_gz(path, bytes.to_vec()).and_then(|raw| parse_idx(path, &raw));
            }),
        },
        Target {
            name: "cifar",
            seed: cifar_bytes(),
            read: Box::new(|path, bytes| {
                for kind in [CifarKind::Ten, CifarKind::Hundred] {
                    let _ = parse_batch(path, bytes, kind, &mut ImageSet::empty(3, 32, 32));
                }
            }),
        },
        Target {
            name: "image",
            seed: png_bytes()?,
            read: Box::new(|path, bytes| {
                let _ = decode_image(path, bytes);
            }),
        },
        Target {
            name: "model-file",
            seed: model,
            read: Box::new(read_model),
        },
        Target {
            name: "model-file-unsummed",
            seed: unsummed,
            read: Box::new(read_model),
        },
        Target {
            name: "artifact",
            seed: artifact,
            read: Box::new(|path, bytes| {
                let _ = build_from_artifact(path, bytes, &Device::Cpu);
            }),
        },
        Target {
            name: "optimizer",
            seed: optimizer_bytes(dir)?,
            read: Box::new(|path, bytes| {
                let _ = sgd().load_bytes(path, bytes, &Device::Cpu);
            }),
        },
        Target {
            // A resume's checks of the optimizer state in a run's
            // checkpoint, starting from another model's state.
            name: "swapped-checkpoint",
            seed: foreign_optimizer_bytes(dir)?,
            read: Box::new(move |path, bytes| {
                let mut opt = sgd();
                if opt.load_bytes(path, bytes, &Device::Cpu).is_ok() {
                    let _ = opt.check_fits(path, &params);
                }
            }),
        },
    ])
}

/// A scratch directory for the seeds, removed when dropped.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory under the system's temporary directory.
    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("rpg-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
