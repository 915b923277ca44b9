//! Test-set evaluation, the data a run is trained and tested on, and which
//! data a stored model is tested on (shared by eval, compress and resume).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use rpg_models::ModelConfig;

use rpg_data::{Batch, BatchLoader, Dataset, DatasetKind, LoaderOptions, Split};

use crate::checkpoint::run_config;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::loss::{correct_counts, cross_entropy};
use crate::setup::Built;

/// Test-set figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy (fraction).
    pub accuracy: f64,
    /// Top-5 accuracy.
    pub top5: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// Sums of loss x size, top-1 and top-5 correct counts and images over
/// `shard` of `data`, in batches of `batch_size` read by `workers`, with
/// `forward` giving each batch's logits: any model, or a graph run another
/// way (the int8 ONNX export).
pub fn test_sums(
    data: &Arc<Dataset>,
    device: &Device,
    (batch_size, workers): (usize, usize),
    shard: rpg_data::Shard,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<(f64, usize, usize, usize)> {
    let loader = in_order(data, (batch_size, workers), shard);
    let (mut loss_sum, mut top1, mut top5, mut n) = (0f64, 0usize, 0usize, 0usize);
    for batch in loader {
        let batch = batch?;
        let (x, y) = to_tensors(&batch, device)?;
        let logits = forward(&x)?;
        let loss = f64::from(cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()?);
        if !loss.is_finite() {
            return Err(Error::NonFiniteOutput { first_image: n });
        }
        loss_sum += loss * batch.size as f64;
        let (a, b) = correct_counts(&logits, &batch.labels)?;
        top1 += a;
        top5 += b;
        n += batch.size;
    }
    Ok((loss_sum, top1, top5, n))
}

/// `shard` of `data` in its stored order, whole, unaugmented: how
/// evaluation (and int8 calibration) reads a data set.
pub fn in_order(
    data: &Arc<Dataset>,
    (batch_size, workers): (usize, usize),
    shard: rpg_data::Shard,
) -> BatchLoader {
    BatchLoader::new(
        data.clone(),
        LoaderOptions {
            batch_size,
            shuffle_seed: None,
            epoch: 0,
            augment: false,
            drop_last: false,
            workers,
            prefetch: 2,
            shard,
        },
    )
}

/// A batch as tensors on `device`: images `[N, C, H, W]` and labels `[N]`.
pub fn to_tensors(batch: &Batch, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let x = Tensor::from_slice(
        &batch.images,
        (batch.size, batch.channels, batch.side, batch.side),
        device,
    )?;
    let y = Tensor::from_slice(&batch.labels, batch.size, device)?;
    Ok((x, y))
}

/// Evaluates a model (weights regenerated first) on a data set.
pub fn evaluate(
    built: &Built,
    data: &Arc<Dataset>,
    batch_size: usize,
    workers: usize,
) -> Result<EvalResult> {
    evaluate_across(built, data, batch_size, workers, &crate::distributed::Solo)
}

/// [`evaluate`] with the test set split over the ranks of `comm`, each
/// evaluating its share and the sums added: the same counts as one process.
pub fn evaluate_across(
    built: &Built,
    data: &Arc<Dataset>,
    batch_size: usize,
    workers: usize,
    comm: &dyn crate::distributed::Collective,
) -> Result<EvalResult> {
    let shard = rpg_data::Shard::covering(comm.rank(), comm.world());
    built.store.regenerate()?;
    let device = built.store.device().clone();
    let forward = |x: &Tensor| Ok(built.model.forward_t(x, false)?.detach());
    let (mut loss_sum, mut top1, mut top5, mut n) =
        test_sums(data, &device, (batch_size, workers), shard, forward)?;
    if comm.world() > 1 {
        let mut sums = [loss_sum, top1 as f64, top5 as f64, n as f64];
        comm.sum_f64(&mut sums)?;
        loss_sum = sums[0];
        (top1, top5, n) = (sums[1] as usize, sums[2] as usize, sums[3] as usize);
    }
    if n == 0 {
        return Err(Error::EmptyTestSet);
    }
    Ok(EvalResult {
        loss: loss_sum / n as f64,
        accuracy: top1 as f64 / n as f64,
        top5: top5 as f64 / n as f64,
        samples: n,
    })
}

/// One split of `cfg`'s data set with the config's limit; the other split
/// is not read.
pub fn load_split(cfg: &TrainConfig, split: Split) -> Result<Arc<Dataset>> {
    Ok(Arc::new(cfg.data.load_split(split)?))
}

/// The test split of `cfg`'s data set (the training split is not read).
pub fn load_test_data(cfg: &TrainConfig) -> Result<Arc<Dataset>> {
    load_split(cfg, Split::Test)
}

/// The test split of `cfg`'s data set, normalised as `model` was trained
/// (when its file records it), so a model is tested on the inputs it knows.
pub fn load_test_data_for(cfg: &TrainConfig, model: &ModelConfig) -> Result<Arc<Dataset>> {
    load_split_for(cfg, Split::Test, model)
}

/// A split of `cfg`'s data set, normalised as `model` was trained.
pub fn load_split_for(
    cfg: &TrainConfig,
    split: Split,
    model: &ModelConfig,
) -> Result<Arc<Dataset>> {
    let mut data = Arc::unwrap_or_clone(load_split(cfg, split)?);
    if let Some(n) = &model.normalize {
        data.mean.clone_from(&n.mean);
        data.std.clone_from(&n.std);
    }
    Ok(Arc::new(data))
}

/// Both splits of `cfg`'s data set, with the config's limits; their images
/// must have one shape.
pub fn load_data(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Arc<Dataset>)> {
    let (train, test) = cfg.data.load()?;
    Ok((Arc::new(train), Arc::new(test)))
}

/// The normalisation of `data`, as a model records it.
pub fn normalization(data: &Dataset) -> rpg_models::Normalize {
    rpg_models::Normalize {
        mean: data.mean.clone(),
        std: data.std.clone(),
    }
}

/// Which test data a stored model is evaluated on; unset fields come from
/// the run's config.toml, else the defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestData {
    /// Data set.
    pub dataset: Option<DatasetKind>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
}

/// The data configuration for testing the model at `model`: the run's
/// config.toml (when the model sits in a run directory), then `data`.
pub fn test_config(model: &Path, data: &TestData) -> Result<TrainConfig> {
    let mut cfg = run_config(model)?.unwrap_or_default();
    if let Some(d) = data.dataset {
        if d != cfg.data.dataset {
            cfg.data.data_dir = None;
        }
        cfg.data.dataset = d;
    }
    if data.data_dir.is_some() {
        cfg.data.data_dir = data.data_dir.clone();
    }
    if data.test_limit.is_some() {
        cfg.data.test_limit = data.test_limit;
    }
    Ok(cfg)
}

/// Fails when a model cannot read a data set (classes, channels or image
/// size differ).
pub fn check_fits(path: &Path, built: &Built, data: &Dataset) -> Result<()> {
    let c = &built.config;
    let model = (c.num_classes, c.in_channels, c.image_size);
    let images = (data.num_classes, data.channels, data.image_size);
    if model != images {
        let show = |(classes, channels, size): (usize, usize, usize)| {
            format!("{classes} classes, {channels}x{size}x{size} images")
        };
        return Err(Error::ModelDoesNotFitData {
            path: path.to_path_buf(),
            model: show(model),
            dataset: data.name.clone(),
            data: show(images),
        });
    }
    Ok(())
}
