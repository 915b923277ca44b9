//! Batches on background threads.
//!
//! The order of an epoch and every random augmentation are pure functions
//! of (seed, epoch, position), drawn from `rpg_core`'s frozen generator: a
//! resumed run sees exactly the data an uninterrupted one would, whatever
//! the number of worker threads. Workers take batches round-robin and the
//! iterator collects them in order, so the model never waits on a batch a
//! worker could already have made.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rpg_core::rng::{Pcg32, SplitMix64, StreamPurpose};

use crate::dataset::{Augment, Dataset, ImageSet, Samples};
use crate::error::Result;
use crate::folder;

/// How to iterate over a data set for one epoch.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle with this seed (None: in order).
    pub shuffle_seed: Option<u64>,
    /// Epoch number (selects the order and the augmentations).
    pub epoch: u64,
    /// Apply the data set's augmentation.
    pub augment: bool,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Batches each worker may prepare ahead.
    pub prefetch: usize,
    /// This process's share of a data-parallel run: [`Shard::ALL`] for one
    /// process.
    pub shard: Shard,
}

/// Which samples of each epoch's order a process of a data-parallel run
/// reads: positions `rank`, `rank + world`, `rank + 2 world`, ... of the
/// shuffled order, the same count for every rank. The last `len % world`
/// positions of the order are left out that epoch (a different few each
/// epoch, as the order is reshuffled), as PyTorch's `DistributedSampler`
/// with `drop_last` does. Augmentations follow the global position, so a
/// sample is augmented alike whatever the number of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This process's rank.
    pub rank: usize,
    /// Processes in the run.
    pub world: usize,
    /// Leave out the remainder so every rank reads as many samples
    /// (training, whose steps all ranks take together); without it the
    /// shards cover every sample (evaluation, whose counts are summed).
    pub even: bool,
}

impl Shard {
    /// One process reading everything.
    pub const ALL: Shard = Shard {
        rank: 0,
        world: 1,
        even: true,
    };

    /// Rank `rank` of `world` processes taking the same number of samples.
    pub fn even(rank: usize, world: usize) -> Self {
        Self {
            rank,
            world,
            even: true,
        }
    }

    /// Rank `rank` of `world` processes covering every sample together.
    pub fn covering(rank: usize, world: usize) -> Self {
        Self {
            rank,
            world,
            even: false,
        }
    }

    /// The positions of an order of `n` samples this shard reads.
    pub fn positions(self, n: usize) -> Vec<usize> {
        if self.world <= 1 {
            return (0..n).collect();
        }
        let end = if self.even {
            n / self.world * self.world
        } else {
            n
        };
        (self.rank..end).step_by(self.world).collect()
    }
}

/// A normalised batch, `size x channels x side x side`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Pixels, channel-first.
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<u32>,
    /// Samples in the batch.
    pub size: usize,
    /// Channels.
    pub channels: usize,
    /// Side.
    pub side: usize,
}

/// The batches of one epoch, in order.
#[derive(Debug)]
pub struct BatchLoader {
    receivers: Vec<Receiver<Result<Batch>>>,
    next: usize,
    total: usize,
}

/// The sample order of an epoch.
pub fn epoch_order(n: usize, shuffle_seed: Option<u64>, epoch: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    if let Some(seed) = shuffle_seed {
        Pcg32::for_stream(seed, StreamPurpose::Data, epoch as u32).shuffle(&mut order);
    }
    order
}

impl BatchLoader {
    /// Starts the workers for one epoch.
    pub fn new(dataset: Arc<Dataset>, opts: LoaderOptions) -> Self {
        let order = Arc::new(epoch_order(dataset.len(), opts.shuffle_seed, opts.epoch));
        let positions = Arc::new(opts.shard.positions(order.len()));
        let batch = opts.batch_size.max(1);
        let total = if opts.drop_last {
            positions.len() / batch
        } else {
            positions.len().div_ceil(batch)
        };
        let workers = opts.workers.max(1).min(total.max(1));
        let mut receivers = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(opts.prefetch.max(1));
            receivers.push(rx);
            let (dataset, order, opts) = (dataset.clone(), order.clone(), opts.clone());
            let positions = positions.clone();
            std::thread::spawn(move || {
                work(w, workers, total, &dataset, (&order, &positions), &opts, tx)
            });
        }
        Self {
            receivers,
            next: 0,
            total,
        }
    }

    /// Batches in this epoch.
    pub fn len(&self) -> usize {
        self.total
    }

    /// True when there are no batches.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Iterator for BatchLoader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        rx.recv().ok()
    }
}

fn work(
    worker: usize,
    workers: usize,
    total: usize,
    dataset: &Dataset,
    (order, positions): (&[u32], &[usize]),
    opts: &LoaderOptions,
    tx: SyncSender<Result<Batch>>,
) {
    let size = opts.batch_size.max(1);
    for b in (worker..total).step_by(workers) {
        let mine = &positions[b * size..((b + 1) * size).min(positions.len())];
        let batch = make_batch(dataset, order, mine, opts);
        // A closed channel means the consumer stopped early: just exit.
        if tx.send(batch).is_err() {
            return;
        }
    }
}

fn sample_rng(opts: &LoaderOptions, position: usize) -> Pcg32 {
    let seed = opts.shuffle_seed.unwrap_or(0) ^ opts.epoch.rotate_left(32) ^ position as u64;
    Pcg32::new(SplitMix64::new(seed).next_u64(), 6 << 32)
}

fn make_batch(
    ds: &Dataset,
    order: &[u32],
    positions: &[usize],
    opts: &LoaderOptions,
) -> Result<Batch> {
    let (c, side) = (ds.channels, ds.image_size);
    let per_image = c * side * side;
    let mut images = vec![0f32; positions.len() * per_image];
    let mut labels = Vec::with_capacity(positions.len());
    for (slot, &position) in positions.iter().enumerate() {
        let index = order[position] as usize;
        let out = &mut images[slot * per_image..(slot + 1) * per_image];
        let mut rng = sample_rng(opts, position);
        match &ds.samples {
            Samples::Memory(set) => {
                let augment = if opts.augment {
                    ds.augment
                } else {
                    Augment::None
                };
                memory_sample(set, index, augment, &mut rng, out);
                labels.push(set.labels[index]);
            }
            Samples::Folder(set) => {
                let img = folder::decode(&set.paths[index])?;
                folder_sample(&img, side, opts.augment, &mut rng, out);
                labels.push(set.labels[index]);
            }
        }
        normalise(out, c, &ds.mean, &ds.std);
    }
    Ok(Batch {
        images,
        labels,
        size: positions.len(),
        channels: c,
        side,
    })
}

/// Pixels to [0, 1], then per-channel `(x - mean) / std`.
fn normalise(out: &mut [f32], channels: usize, mean: &[f32], std: &[f32]) {
    let plane = out.len() / channels;
    for (ch, values) in out.chunks_mut(plane).enumerate() {
        let (m, s) = (mean[ch % mean.len()], std[ch % std.len()]);
        for v in values {
            *v = (*v / 255.0 - m) / s;
        }
    }
}

/// Copies one in-memory image (as raw 0..255 floats), cropping and flipping
/// when asked. Padding reads as 0, as in torchvision's padded crop.
fn memory_sample(set: &ImageSet, index: usize, augment: Augment, rng: &mut Pcg32, out: &mut [f32]) {
    let (c, h, w) = (set.channels, set.height, set.width);
    let src = &set.images[index * set.image_len()..(index + 1) * set.image_len()];
    let (dy, dx, flip, pad) = match augment {
        Augment::CropFlip { pad } => {
            let span = 2 * pad as u32 + 1;
            (
                rng.below(span) as isize,
                rng.below(span) as isize,
                rng.below(2) == 1,
                pad as isize,
            )
        }
        _ => (0, 0, false, 0),
    };
    for ch in 0..c {
        for y in 0..h {
            let sy = y as isize + dy - pad;
            for x in 0..w {
                let xx = if flip { w - 1 - x } else { x };
                let sx = xx as isize + dx - pad;
                let inside = sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w;
                out[(ch * h + y) * w + x] = if inside {
                    f32::from(src[(ch * h + sy as usize) * w + sx as usize])
                } else {
                    0.0
                };
            }
        }
    }
}

/// Train: random-resized crop + flip. Eval: resize the short side to
/// `side * 256 / 224` and take the centre crop (the ImageNet protocol).
fn folder_sample(
    img: &image::RgbImage,
    side: usize,
    augment: bool,
    rng: &mut Pcg32,
    out: &mut [f32],
) {
    use image::imageops::{FilterType, crop_imm, flip_horizontal, resize};
    let (w, h) = img.dimensions();
    let s = side as u32;
    let processed = if augment {
        let area = f64::from(w * h);
        let mut region = None;
        for _ in 0..10 {
            let target = area * (0.08 + 0.92 * f64::from(rng.next_f32()));
            let log_ratio =
                (0.75f64).ln() + ((4.0f64 / 3.0).ln() - (0.75f64).ln()) * f64::from(rng.next_f32());
            let ratio = log_ratio.exp();
            let cw = (target * ratio).sqrt().round() as u32;
            let ch = (target / ratio).sqrt().round() as u32;
            if cw > 0 && ch > 0 && cw <= w && ch <= h {
                region = Some((rng.below(w - cw + 1), rng.below(h - ch + 1), cw, ch));
                break;
            }
        }
        let (x0, y0, cw, ch) = region.unwrap_or_else(|| {
            let m = w.min(h);
            ((w - m) / 2, (h - m) / 2, m, m)
        });
        let cropped = resize(
            &crop_imm(img, x0, y0, cw, ch).to_image(),
            s,
            s,
            FilterType::Triangle,
        );
        if rng.below(2) == 1 {
            flip_horizontal(&cropped)
        } else {
            cropped
        }
    } else {
        let short = (side * 256 / 224) as u32;
        let (nw, nh) = if w <= h {
            (
                short,
                (f64::from(h) * f64::from(short) / f64::from(w)).round() as u32,
            )
        } else {
            (
                (f64::from(w) * f64::from(short) / f64::from(h)).round() as u32,
                short,
            )
        };
        let resized = resize(img, nw.max(s), nh.max(s), FilterType::Triangle);
        let (rw, rh) = resized.dimensions();
        crop_imm(&resized, (rw - s) / 2, (rh - s) / 2, s, s).to_image()
    };
    for (i, px) in processed.pixels().enumerate() {
        for ch in 0..3 {
            out[ch * side * side + i] = f32::from(px.0[ch]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_set(n: usize) -> Arc<Dataset> {
        let mut set = ImageSet::empty(1, 4, 4);
        for i in 0..n {
            set.images.extend((0..16).map(|p| (i * 16 + p) as u8));
            set.labels.push(i as u32 % 3);
        }
        Arc::new(Dataset {
            name: "tiny".into(),
            samples: Samples::Memory(set),
            num_classes: 3,
            channels: 1,
            image_size: 4,
            mean: vec![0.0],
            std: vec![1.0],
            augment: Augment::CropFlip { pad: 1 },
            class_names: None,
        })
    }

    fn opts(workers: usize, epoch: u64) -> LoaderOptions {
        LoaderOptions {
            batch_size: 3,
            shuffle_seed: Some(9),
            epoch,
            augment: true,
            drop_last: false,
            workers,
            prefetch: 2,
            shard: Shard::ALL,
        }
    }

    #[test]
    fn every_sample_once_per_epoch_and_same_at_any_worker_count() {
        let ds = tiny_set(10);
        let one: Vec<Batch> = BatchLoader::new(ds.clone(), opts(1, 0))
            .map(|b| b.unwrap())
            .collect();
        let three: Vec<Batch> = BatchLoader::new(ds.clone(), opts(3, 0))
            .map(|b| b.unwrap())
            .collect();
        assert_eq!(one, three);
        assert_eq!(one.len(), 4);
        assert_eq!(one.last().unwrap().size, 1);
        let mut seen: Vec<u32> = epoch_order(10, Some(9), 0);
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_ne!(epoch_order(10, Some(9), 0), epoch_order(10, Some(9), 1));
        let other_epoch: Vec<Batch> = BatchLoader::new(ds, opts(1, 1))
            .map(|b| b.unwrap())
            .collect();
        assert_ne!(one, other_epoch);
    }

    /// Two shards of batch 2 read, step for step, the samples one process
    /// reads in batches of 4, augmented alike; the odd sample out of 11 is
    /// left out by both shards.
    #[test]
    fn shards_split_each_global_batch_and_have_equal_counts() {
        let ds = tiny_set(11);
        let one: Vec<Batch> = BatchLoader::new(
            ds.clone(),
            LoaderOptions {
                batch_size: 4,
                ..opts(1, 3)
            },
        )
        .map(|b| b.unwrap())
        .collect();
        let shard = |rank| -> Vec<Batch> {
            BatchLoader::new(
                ds.clone(),
                LoaderOptions {
                    batch_size: 2,
                    shard: Shard::even(rank, 2),
                    ..opts(2, 3)
                },
            )
            .map(|b| b.unwrap())
            .collect()
        };
        let (a, b) = (shard(0), shard(1));
        assert_eq!((a.len(), b.len()), (3, 3));
        assert_eq!(a.last().unwrap().size, 1);
        let samples = |batch: &Batch| -> Vec<(u32, Vec<u32>)> {
            let per = batch.images.len() / batch.size;
            (0..batch.size)
                .map(|i| {
                    let pixels = batch.images[i * per..(i + 1) * per]
                        .iter()
                        .map(|v| v.to_bits())
                        .collect();
                    (batch.labels[i], pixels)
                })
                .collect()
        };
        for step in 0..2 {
            let mut both = samples(&a[step]);
            both.extend(samples(&b[step]));
            let mut single = samples(&one[step]);
            both.sort();
            single.sort();
            assert_eq!(both, single, "step {step}");
        }
        assert_eq!(Shard::even(1, 3).positions(11), vec![1, 4, 7]);
        assert_eq!(Shard::covering(1, 3).positions(11), vec![1, 4, 7, 10]);
    }

    #[test]
    fn unaugmented_in_order_batches_are_the_normalised_pixels() {
        let ds = tiny_set(2);
        let o = LoaderOptions {
            shuffle_seed: None,
            augment: false,
            ..opts(1, 0)
        };
        let b = BatchLoader::new(ds, o).next().unwrap().unwrap();
        assert_eq!(b.labels, vec![0, 1]);
        assert_eq!(b.images[17], 17.0 / 255.0);
    }

    #[test]
    fn crop_flip_keeps_pixels_from_the_image_or_padding() {
        let ds = tiny_set(1);
        let Samples::Memory(set) = &ds.samples else {
            unreachable!()
        };
        let mut rng = Pcg32::new(1, 1);
        let mut out = vec![0.0; 16];
        for _ in 0..20 {
            memory_sample(set, 0, Augment::CropFlip { pad: 1 }, &mut rng, &mut out);
            assert!(out.iter().all(|&v| v == 0.0 || (0.0..16.0).contains(&v)));
        }
    }

    #[test]
    fn folder_samples_have_the_requested_side() {
        let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let mut out = vec![0.0; 3 * 16 * 16];
        let mut rng = Pcg32::new(2, 2);
        folder_sample(&img, 16, true, &mut rng, &mut out);
        folder_sample(&img, 16, false, &mut rng, &mut out);
        assert!(out.iter().any(|&v| v > 0.0));
    }
}
