//! Test-set evaluation, and the data a run is trained and tested on.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use rpg_models::ModelConfig;

use crate::config::TrainConfig;
use crate::data::{Batch, BatchLoader, Dataset, LoaderOptions, Split};
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
    built.store.regenerate()?;
    let device = built.store.device().clone();
    let loader = BatchLoader::new(
        data.clone(),
        LoaderOptions {
            batch_size,
            shuffle_seed: None,
            epoch: 0,
            augment: false,
            drop_last: false,
            workers,
            prefetch: 2,
        },
    );
    let (mut loss_sum, mut top1, mut top5, mut n) = (0f64, 0usize, 0usize, 0usize);
    for batch in loader {
        let batch = batch?;
        let (x, y) = to_tensors(&batch, &device)?;
        let logits = built.model.forward_t(&x, false)?.detach();
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
    let dir = cfg.data_dir();
    let mut data =
        crate::data::load_split(&cfg.dataset, &dir, cfg.image_size.unwrap_or(224), split)?;
    if let Some(values) = &cfg.normalize {
        data.set_normalize(values)
            .map_err(|e| Error::Invalid(format!("--normalize: {e}")))?;
    }
    let limit = match split {
        Split::Train => cfg.train_limit,
        Split::Test => cfg.test_limit,
    };
    if let Some(n) = limit {
        data.truncate(n);
    }
    if data.is_empty() {
        return Err(Error::EmptySplit { dir });
    }
    Ok(Arc::new(data))
}

/// The test split of `cfg`'s data set (the training split is not read).
pub fn load_test_data(cfg: &TrainConfig) -> Result<Arc<Dataset>> {
    load_split(cfg, Split::Test)
}

/// The test split of `cfg`'s data set, normalised as `model` was trained
/// (when its file records it), so a model is tested on the inputs it knows.
pub fn load_test_data_for(cfg: &TrainConfig, model: &ModelConfig) -> Result<Arc<Dataset>> {
    let mut data = Arc::unwrap_or_clone(load_test_data(cfg)?);
    if let Some(n) = &model.normalize {
        data.mean.clone_from(&n.mean);
        data.std.clone_from(&n.std);
    }
    Ok(Arc::new(data))
}

/// Both splits of `cfg`'s data set, with the config's limits; their images
/// must have one shape.
pub fn load_data(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Arc<Dataset>)> {
    let (train, test) = (
        load_split(cfg, Split::Train)?,
        load_split(cfg, Split::Test)?,
    );
    let shape = |d: &Dataset| (d.channels, d.image_size);
    if shape(&train) != shape(&test) {
        let show = |(c, s): (usize, usize)| format!("{c}x{s}x{s}");
        return Err(Error::Invalid(format!(
            "{}: the training images are {} but the test images are {}: both splits must have one image size",
            cfg.data_dir().display(),
            show(shape(&train)),
            show(shape(&test))
        )));
    }
    Ok((train, test))
}
