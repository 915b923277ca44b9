//! `rpg selftest`: one training step of every zoo model, dense and RPG, on
//! a device against the same step on the CPU's reference path (rpg-core's
//! host kernels, this project's CPU ops). Logits, loss and every gradient
//! (the ring's included) must agree. On a GPU this checks every CUDA op the
//! models use; with `--device cpu` the candidate runs RPG on the device
//! tables, so the check means something here too.
//!
//! How close is close enough depends on the case: a deep network with batch
//! norm in training mode, at initialisation, amplifies a rounding-sized
//! change of its input into percent-sized changes of some gradients (values
//! at a ReLU's switch change route; batch norm's gradient grows with depth).
//! So every case is also run on the CPU with its input moved by the
//! precision's rounding (`perturbation`), and a group of results passes when
//! it is within the tolerance or within ten times that self-inflicted noise.
//! A wrong kernel moves a whole group by far more.

use candle_core::{DType, Device, Tensor};
use rpg_kernels::Precision;
use rpg_nn::GenerationPath;
use serde::Serialize;

use crate::config::{DEFAULT_DOF, RingSize, TrainConfig};
use crate::error::Result;
use crate::loss::cross_entropy;
use crate::setup::{Built, build_for_training_on, model_config};

/// One (model, mode) comparison.
#[derive(Debug, Clone, Serialize)]
pub struct SelfTestRow {
    /// Model.
    pub model: String,
    /// `dense` or `rpg`.
    pub mode: String,
    /// The largest difference from the reference, relative to the
    /// reference, over the groups of results (logits, loss, weight
    /// gradients, vector gradients, ring gradient).
    pub worst: f64,
    /// The group `worst` was measured on.
    pub worst_at: String,
    /// The reference's own largest change, in any group, when its input
    /// moves by the precision's rounding: how well conditioned the case is.
    pub noise: f64,
    /// Whether every group is within the tolerance or ten times its noise.
    pub passed: bool,
}

/// Everything a step produces that is compared: (what, values).
fn step(built: &Built, x: &Tensor, y: &Tensor) -> Result<Vec<(String, Tensor)>> {
    built.store.regenerate()?;
    let logits = built.model.forward_t(x, true)?;
    let loss = cross_entropy(&logits, y, 0.0)?;
    let mut out = vec![
        ("logits".to_string(), logits.detach()),
        ("loss".to_string(), loss.detach()),
    ];
    for g in built.store.gradients(&loss.backward()?)? {
        out.push((format!("grad {}", g.name), g.grad));
    }
    Ok(out)
}

/// The input side and batch of a model's check: its own side up to 32
/// pixels, batch 2; models made for larger inputs (ImageNet's 224) run at 64
/// pixels, batch 8. At 32 pixels those end in 1x1 maps where batch norm
/// sees two values per channel, and a rounding-sized change of the input
/// moves their logits and gradients by tens of percent
/// (`tests::rounding_noise_is_small_at_the_checked_sizes`).
pub fn check_input(image_size: usize) -> (usize, usize) {
    if image_size > 32 {
        (64, 8)
    } else {
        (image_size, 2)
    }
}

/// The relative change of the input that stands for a precision's rounding:
/// f32's (2^-24) and TF32's (2^-11) unit roundoff, times 16 for the many
/// roundings of a step.
pub fn perturbation(precision: Precision) -> f32 {
    match precision {
        Precision::F32 => 16.0 * f32::EPSILON / 2.0,
        Precision::Tf32 => 16.0 / 2048.0,
    }
}

/// The fixed input of a check: standard normal values (seeded) and labels
/// `i % classes`.
fn check_batch(batch: usize, channels: usize, side: usize, classes: usize) -> (Vec<f32>, Vec<u32>) {
    let mut rng = rpg_core::rng::Pcg32::new(0, 0);
    let values = (0..batch * channels * side * side)
        .map(|_| rng.next_normal())
        .collect();
    let labels = (0..batch as u32).map(|i| i % classes as u32).collect();
    (values, labels)
}

/// `values`, each moved by a relative `eps`, up and down in turn.
fn perturbed(values: &[f32], eps: f32) -> Vec<f32> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| v * (1.0 + if i % 2 == 0 { eps } else { -eps }))
        .collect()
}

/// The Euclidean norm.
fn norm(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?
        .sqr()?
        .sum_all()?
        .to_scalar::<f64>()?
        .sqrt())
}

/// What a result is compared as part of: the logits, the loss, the ring's
/// gradient, the gradients of weights (2-D and up) or of vectors (biases
/// and norms' parameters).
fn group_of(what: &str, rank: usize) -> &'static str {
    match what {
        "logits" => "logits",
        "loss" => "loss",
        _ if what.contains(rpg_nn::RING_NAME) => "ring gradient",
        _ if rank >= 2 => "weight gradients",
        _ => "vector gradients",
    }
}

/// `||a - b|| / ||b||` over each group's values together, by group. By
/// group rather than by tensor: a value at a ReLU's switch moves a few
/// elements of one tensor by their whole size at any precision; a wrong
/// kernel moves a whole group.
fn differences(
    reference: &[(String, Tensor)],
    candidate: &[(String, Tensor)],
) -> Result<Vec<(&'static str, f64)>> {
    let mut sums: Vec<(&'static str, f64, f64)> = Vec::new();
    for ((what, want), (_, got)) in reference.iter().zip(candidate) {
        let group = group_of(what, want.rank());
        let want = want.to_dtype(DType::F64)?.flatten_all()?;
        let got = got
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?;
        let diff = norm(&(got - &want)?)?.powi(2);
        let scale = norm(&want)?.powi(2);
        match sums.iter_mut().find(|(g, _, _)| *g == group) {
            Some((_, d, s)) => {
                *d += diff;
                *s += scale;
            }
            None => sums.push((group, diff, scale)),
        }
    }
    Ok(sums
        .into_iter()
        .map(|(group, diff, scale)| (group, diff.sqrt() / scale.sqrt().max(1e-12)))
        .collect())
}

/// The largest value of `by_group`, and its group.
fn largest(by_group: &[(&'static str, f64)]) -> (f64, String) {
    by_group
        .iter()
        .fold((0.0, String::new()), |(worst, at), &(group, r)| {
            if r > worst || at.is_empty() {
                (r, group.to_string())
            } else {
                (worst, at)
            }
        })
}

/// One model's check set-up: its config, ring and model config at the
/// checked input size.
struct Case {
    cfg: TrainConfig,
    ring: Option<RingSize>,
    mc: rpg_models::ModelConfig,
    shape: (usize, usize, usize, usize),
}

const CLASSES: usize = 10;

impl Case {
    fn new(name: &str, mode: &str, (side, batch): (usize, usize)) -> Result<Self> {
        let entry = rpg_models::model_entry(name)?;
        let cfg = TrainConfig {
            model: name.to_string(),
            dense: mode == "dense",
            ..TrainConfig::default()
        };
        let ring = (mode == "rpg").then_some(RingSize::Ratio(DEFAULT_DOF));
        let mc = model_config(&cfg, CLASSES, entry.in_channels, side)?;
        Ok(Self {
            cfg,
            ring,
            mc,
            shape: (batch, entry.in_channels, side, side),
        })
    }

    /// One step on `device` over `values` and `labels`.
    fn step(
        &self,
        device: &Device,
        path: GenerationPath,
        values: &[f32],
        labels: &[u32],
    ) -> Result<Vec<(String, Tensor)>> {
        let built = build_for_training_on(&self.cfg, self.ring, self.mc.clone(), device, path)?;
        let x = Tensor::from_slice(values, self.shape, device)?;
        let y = Tensor::from_slice(labels, self.shape.0, device)?;
        step(&built, &x, &y)
    }

    /// The fixed input of this case.
    fn batch(&self) -> (Vec<f32>, Vec<u32>) {
        let (batch, channels, side, _) = self.shape;
        check_batch(batch, channels, side, CLASSES)
    }

    /// The step on the CPU's reference path.
    fn reference(&self) -> Result<Vec<(String, Tensor)>> {
        let (values, labels) = self.batch();
        self.step(&Device::Cpu, GenerationPath::HostKernels, &values, &labels)
    }

    /// The reference's own change, by group, when its input moves by `eps`.
    fn noise(&self, reference: &[(String, Tensor)], eps: f32) -> Result<Vec<(&'static str, f64)>> {
        let (values, labels) = self.batch();
        let moved = self.step(
            &Device::Cpu,
            GenerationPath::HostKernels,
            &perturbed(&values, eps),
            &labels,
        )?;
        differences(reference, &moved)
    }
}

/// Compares one training step of each of `models` (dense and RPG at 10%
/// DoF) on `device` with the CPU reference, at `precision` (which sets the
/// rounding the noise is measured with; the caller sets the device's).
pub fn selftest(
    device: &Device,
    models: &[&str],
    tolerance: f64,
    precision: Precision,
) -> Result<Vec<SelfTestRow>> {
    let mut rows = Vec::new();
    for &name in models {
        let size = check_input(rpg_models::model_entry(name)?.image_size);
        for mode in ["dense", "rpg"] {
            let case = Case::new(name, mode, size)?;
            let (values, labels) = case.batch();
            let reference = case.reference()?;
            let candidate = case.step(device, GenerationPath::DeviceTables, &values, &labels)?;
            let found = differences(&reference, &candidate)?;
            let noise = case.noise(&reference, perturbation(precision))?;
            let within = found.iter().all(|(group, r)| {
                let own = noise.iter().find(|(g, _)| g == group).map_or(0.0, |n| n.1);
                *r <= tolerance.max(10.0 * own)
            });
            let (worst, worst_at) = largest(&found);
            rows.push(SelfTestRow {
                model: name.to_string(),
                mode: mode.to_string(),
                worst,
                worst_at,
                noise: largest(&noise).0,
                passed: within && reference.len() == candidate.len(),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conditioning behind the sizes: on ImageNet's ResNet-18 f32-sized
    /// rounding of the input moves a step's results by well under a percent
    /// at the checked size (so ten times it still catches a wrong kernel),
    /// and by ten times more at 32 pixels and batch 2 (1x1 maps, two values
    /// per batch-norm channel).
    #[test]
    fn rounding_noise_is_small_at_the_checked_sizes() {
        let eps = perturbation(Precision::F32);
        let noise = |size| {
            let case = Case::new("resnet18", "dense", size).unwrap();
            largest(&case.noise(&case.reference().unwrap(), eps).unwrap())
        };
        let (checked, at) = noise(check_input(224));
        assert!(checked < 1e-2, "at the checked size: {checked} in {at}");
        let (cramped, at) = noise((32, 2));
        assert!(
            cramped > 10.0 * checked,
            "32 px, batch 2: {cramped} in {at}, checked {checked}"
        );
    }

    /// A candidate that differs in one group by more than tolerance and
    /// noise allow fails; the same step passes.
    #[test]
    fn a_changed_group_fails_and_an_equal_step_passes() {
        let case = Case::new("lenet5", "rpg", check_input(28)).unwrap();
        let reference = case.reference().unwrap();
        let same = differences(&reference, &reference).unwrap();
        assert!(same.iter().all(|(_, r)| *r == 0.0));
        let mut wrong = reference.clone();
        let ring = wrong
            .iter_mut()
            .find(|(w, _)| w.contains(rpg_nn::RING_NAME))
            .unwrap();
        ring.1 = (&ring.1 * 1.01).unwrap();
        let (worst, at) = largest(&differences(&reference, &wrong).unwrap());
        assert_eq!(at, "ring gradient");
        assert!((worst - 0.01).abs() < 1e-6, "{worst}");
    }

    #[test]
    fn the_cpu_device_tables_pass_against_the_host_kernels() {
        let rows = selftest(&Device::Cpu, &["lenet5"], 1e-3, Precision::F32).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.passed), "{rows:?}");
    }
}
