//! `rpg predict`: a trained model's top classes for images a user gives: PNG
//! or JPEG files, folders of them, or IDX image files (MNIST's format). The
//! input size, channels and normalisation come from the model (recorded in
//! its file), so the user never has to know them.
//!
//! Preprocessing follows evaluation: images are converted to the model's
//! channels (grey for one channel); models of 64x64 or smaller inputs (MNIST,
//! CIFAR) take the image resized to their side, larger ones the ImageNet
//! protocol (short side to `side * 256 / 224`, centre crop).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::D;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::evaluate::to_tensors;
use crate::setup::Built;
use rpg_data::{
    Augment, BatchLoader, Dataset, FolderSet, ImageSet, LoaderOptions, Samples, is_image, read_idx,
};

/// One class of a prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scored {
    /// The label.
    pub class: usize,
    /// Its name, where the model records class names.
    pub name: Option<String>,
    /// Softmax probability.
    pub probability: f32,
}

/// The top classes of one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The file (and, for an IDX file, `#index`).
    pub input: String,
    /// Best first.
    pub top: Vec<Scored>,
}

/// The image files of `paths`: files as given, folders' images (sorted,
/// recursively), IDX files as themselves.
fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(Error::io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out)?;
            } else if is_image(&path) {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut out)?;
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(Error::Invalid(format!(
                "{}: no such file or folder",
                path.display()
            )));
        }
    }
    if out.is_empty() {
        let given: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Invalid(format!(
            "no images to predict in {}: give PNG/JPEG files, folders of them, or IDX files",
            given.join(", ")
        )));
    }
    Ok(out)
}

fn is_idx(path: &Path) -> bool {
    let name = path.to_string_lossy();
    name.contains("idx3-ubyte") || name.ends_with(".idx")
}

/// Decodes `files` into one data set the model can read, with a name per
/// sample.
fn inputs(built: &Built, files: &[PathBuf]) -> Result<(Dataset, Vec<String>)> {
    let c = &built.config;
    let (channels, side) = (c.in_channels, c.image_size);
    let (mean, std) = match &c.normalize {
        Some(n) => (n.mean.clone(), n.std.clone()),
        None => {
            return Err(Error::Invalid(format!(
                "this {} model file predates recorded input normalisation; retrain it, or evaluate it with `rpg eval` on its data set",
                c.name
            )));
        }
    };
    let mut names = Vec::new();
    let samples = if side > 64 && channels == 3 && files.iter().all(|f| !is_idx(f)) {
        // Large RGB inputs: decoded by the loader with the ImageNet protocol.
        names.extend(files.iter().map(|f| f.display().to_string()));
        Samples::Folder(FolderSet {
            classes: Vec::new(),
            paths: files.to_vec(),
            labels: vec![0; files.len()],
        })
    } else {
        let mut set = ImageSet::empty(channels, side, side);
        for file in files {
            if is_idx(file) {
                let array = read_idx(file)?;
                let [n, h, w] = array.dims[..] else {
                    return Err(Error::Invalid(format!(
                        "{}: an IDX image file holds [N, H, W], this one {:?}",
                        file.display(),
                        array.dims
                    )));
                };
                if channels != 1 {
                    return Err(Error::Invalid(format!(
                        "{}: IDX images are grey, but {} takes {channels} channels",
                        file.display(),
                        c.name
                    )));
                }
                for i in 0..n {
                    let pixels = array.data[i * h * w..(i + 1) * h * w].to_vec();
                    let img = image::GrayImage::from_raw(w as u32, h as u32, pixels)
                        .expect("the IDX array holds h * w bytes per image");
                    push_image(&mut set, &image::DynamicImage::ImageLuma8(img), side);
                    names.push(format!("{}#{i}", file.display()));
                }
            } else {
                let bytes = std::fs::read(file).map_err(Error::io(file))?;
                let img = image::load_from_memory(&bytes).map_err(|e| {
                    Error::Invalid(format!("{}: cannot decode image: {e}", file.display()))
                })?;
                push_image(&mut set, &img, side);
                names.push(file.display().to_string());
            }
        }
        Samples::Memory(set)
    };
    let dataset = Dataset {
        name: "inputs".into(),
        samples,
        num_classes: c.num_classes,
        channels,
        image_size: side,
        mean,
        std,
        augment: Augment::None,
        class_names: c.class_names.clone(),
    };
    Ok((dataset, names))
}

/// Appends an image resized to `side` x `side` in the set's channels.
fn push_image(set: &mut ImageSet, img: &image::DynamicImage, side: usize) {
    use image::imageops::FilterType;
    let resized = img.resize_exact(side as u32, side as u32, FilterType::Triangle);
    if set.channels == 1 {
        set.images.extend_from_slice(resized.to_luma8().as_raw());
    } else {
        // Channel-first, as every set is stored.
        let rgb = resized.to_rgb8();
        for ch in 0..3 {
            set.images.extend(rgb.pixels().map(|p| p.0[ch]));
        }
    }
    set.labels.push(0);
}

/// The `top_k` classes of every image in `paths` (files, folders, IDX
/// files).
pub fn predict(built: &Built, paths: &[PathBuf], top_k: usize) -> Result<Vec<Prediction>> {
    if top_k == 0 {
        return Err(Error::invalid_setting("top_k", 0, "must be positive"));
    }
    let files = image_files(paths)?;
    let (dataset, names) = inputs(built, &files)?;
    let class_names = dataset.class_names.clone();
    built.store.regenerate()?;
    let device = built.store.device().clone();
    let loader = BatchLoader::new(
        Arc::new(dataset),
        LoaderOptions {
            batch_size: 64,
            shuffle_seed: None,
            epoch: 0,
            augment: false,
            drop_last: false,
            workers: crate::config::TrainConfig::default().workers,
            prefetch: 2,
            shard: rpg_data::Shard::ALL,
        },
    );
    let mut out = Vec::new();
    for batch in loader {
        let batch = batch?;
        let (x, _) = to_tensors(&batch, &device)?;
        let logits = built.model.forward_t(&x, false)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        for row in probs {
            if row.iter().any(|p| !p.is_finite()) {
                return Err(Error::NonFiniteOutput {
                    first_image: out.len(),
                });
            }
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let top = order
                .into_iter()
                .take(top_k)
                .map(|class| Scored {
                    class,
                    name: class_names.as_ref().and_then(|n| n.get(class).cloned()),
                    probability: row[class],
                })
                .collect();
            out.push(Prediction {
                input: names[out.len()].clone(),
                top,
            });
        }
    }
    Ok(out)
}
