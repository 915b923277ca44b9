//! Exporting a trained model for other tools: the dense safetensors file
//! (torchvision/timm names, readable by `rpg eval` and `rpg predict`) and
//! the ONNX graph. The work behind `rpg export`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::model_file;
use crate::error::{Error, Result};
use crate::output::{
    check_destination, check_file_path, enclosing_run, refuse_overwrite, write_atomic,
};
use crate::setup::{
    Built, EXPORT_DENSE, EXPORT_FOLDED_BN, EXPORT_KEY, EXPORT_ONNX, NUM_BATCHES_TRACKED, load_any,
};

/// What `rpg export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Dense safetensors, torchvision/timm names and layout.
    Safetensors,
    /// Dense safetensors with every BatchNorm folded into the conv before it.
    SafetensorsFoldedBn,
    /// An ONNX model (opset [`rpg_onnx::OPSET`]), batch dimension dynamic.
    Onnx,
}

/// What `rpg export` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The model's name.
    pub model: String,
    /// Bytes written.
    pub bytes: u64,
    /// Tensors written (initializers, for ONNX).
    pub tensors: usize,
    /// BatchNorms folded into their convs.
    pub folded_batch_norms: usize,
}

/// Writes the model at `checkpoint` (model file, checkpoint or run
/// directory, artifact or dense export) to `out` as `format`.
pub fn export(checkpoint: &Path, out: &Path, format: ExportFormat) -> Result<Export> {
    let path = model_file(checkpoint)?;
    refuse_overwrite("out", out, &[&path])?;
    check_destination("out", out, enclosing_run(&path).as_deref(), false)?;
    check_file_path(out)?;
    let built = load_any(&path, &Device::Cpu)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let (bytes, tensors, folded_batch_norms) = match format {
        ExportFormat::Safetensors => write_dense(&built, out, false)?,
        ExportFormat::SafetensorsFoldedBn => write_dense(&built, out, true)?,
        ExportFormat::Onnx => write_onnx(&built, out)?,
    };
    Ok(Export {
        model: built.config.name.clone(),
        bytes,
        tensors,
        folded_batch_norms,
    })
}

/// Writes `built`'s dense weights as safetensors; returns (bytes, tensors,
/// BatchNorms folded).
pub(crate) fn write_dense(
    built: &Built,
    path: &Path,
    fold_bn: bool,
) -> Result<(u64, usize, usize)> {
    let mut tensors = built.store.materialize()?;
    let folded = if fold_bn {
        rpg_compress::fold_batch_norms(&mut tensors, 1e-5)?
    } else {
        0
    };
    let mut tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    add_num_batches_tracked(&mut tensors)?;
    let format = if fold_bn {
        EXPORT_FOLDED_BN
    } else {
        EXPORT_DENSE
    };
    let layout = if fold_bn {
        "BatchNorms folded into the convs before them (convs have a bias): not torchvision's layout"
    } else {
        "torchvision/timm names"
    };
    let meta = export_metadata(&built.config, format, layout);
    let bytes = safetensors::serialize(&tensors, Some(meta.into_iter().collect()))
        .map_err(|e| Error::Invalid(format!("serialising {}: {e}", path.display())))?;
    let size = bytes.len() as u64;
    write_atomic(path, bytes)?;
    Ok((size, tensors.len(), folded))
}

/// torchvision's state dicts carry an int64 `num_batches_tracked` beside
/// each BatchNorm's running statistics, so ours do too (a strict loader sees
/// the same keys). rpg's batch norm uses a fixed momentum and never reads
/// the count, so it is 0.
fn add_num_batches_tracked(tensors: &mut HashMap<String, Tensor>) -> Result<()> {
    let norms: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean"))
        .map(str::to_string)
        .collect();
    for norm in norms {
        let count = Tensor::new(0i64, &Device::Cpu)?;
        tensors.insert(format!("{norm}.{NUM_BATCHES_TRACKED}"), count);
    }
    Ok(())
}

/// Writes `built` as an ONNX model; returns (bytes, initializers, 0).
fn write_onnx(built: &Built, path: &Path) -> Result<(u64, usize, usize)> {
    let model = onnx_export(built)?;
    let initializers = model.graph.as_ref().map_or(0, |g| g.initializer.len());
    let bytes = rpg_onnx::encode(&model);
    let size = bytes.len() as u64;
    write_atomic(path, bytes)?;
    Ok((size, initializers, 0))
}

/// `built` as the ONNX model `rpg export` writes: the graph and metadata
/// saying what the input and output are.
pub fn onnx_export(built: &Built) -> Result<rpg_onnx::proto::ModelProto> {
    let layout = format!(
        "ONNX opset {}: input `{}` [batch, in_channels, image_size, image_size], normalised as normalize_mean/normalize_std say; output `{}` [batch, num_classes], unnormalised logits",
        rpg_onnx::OPSET,
        rpg_models::ONNX_INPUT,
        rpg_models::ONNX_OUTPUT,
    );
    let meta = export_metadata(&built.config, EXPORT_ONNX, &layout);
    let mut meta: Vec<(String, String)> = meta.into_iter().collect();
    meta.sort();
    Ok(rpg_models::onnx_model(
        built.model.as_ref(),
        &built.config,
        &meta,
    )?)
}

/// What an export says about itself: the model, its input and
/// normalisation, and the layout (safetensors metadata, ONNX
/// `metadata_props`).
fn export_metadata(
    c: &rpg_models::ModelConfig,
    format: &str,
    layout: &str,
) -> HashMap<String, String> {
    let mut meta = HashMap::from([
        (EXPORT_KEY.to_string(), format.to_string()),
        ("model".to_string(), c.name.clone()),
        ("model_config".to_string(), c.to_json()),
        ("num_classes".to_string(), c.num_classes.to_string()),
        ("in_channels".to_string(), c.in_channels.to_string()),
        ("image_size".to_string(), c.image_size.to_string()),
        ("layout".to_string(), layout.to_string()),
    ]);
    if let Some(names) = &c.class_names {
        meta.insert("class_names".into(), serde_json::json!(names).to_string());
    }
    if let Some(n) = &c.normalize {
        let list = |v: &[f32]| v.iter().map(f32::to_string).collect::<Vec<_>>().join(",");
        meta.insert("normalize_mean".into(), list(&n.mean));
        meta.insert("normalize_std".into(), list(&n.std));
    }
    meta
}

#[cfg(test)]
mod tests {
    use candle_core::Tensor;

    use super::*;
    use crate::config::RingSize;
    use crate::config::TrainConfig;
    use crate::setup::build_for_training;

    #[test]
    fn dense_exports_carry_num_batches_tracked_and_read_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let cfg = TrainConfig {
            model: "resnet20".into(),
            ..TrainConfig::default()
        };
        let mc = rpg_models::model_entry("resnet20")?.config(10);
        let built = build_for_training(&cfg, Some(RingSize::Ratio(0.1)), mc, &Device::Cpu)?;
        let path = dir.path().join("dense.safetensors");
        write_dense(&built, &path, false)?;
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let counters: Vec<&String> = tensors
            .keys()
            .filter(|k| k.ends_with(".num_batches_tracked"))
            .collect();
        let norms = tensors
            .keys()
            .filter(|k| k.ends_with(".running_mean"))
            .count();
        assert_eq!(counters.len(), norms);
        let bn1 = &tensors["bn1.num_batches_tracked"];
        assert_eq!((bn1.dtype(), bn1.rank()), (DType::I64, 0));
        // rpg reads its export back (skipping the counters): same logits.
        let back = load_any(&path, &Device::Cpu)?;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu)?;
        let diff = (built.model.forward_t(&x, false)? - back.model.forward_t(&x, false)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
