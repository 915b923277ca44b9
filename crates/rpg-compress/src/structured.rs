//! Structured pruning: remove whole channel groups (smallest L1 norm, see
//! [`crate::channel_groups`]) from every tensor that writes or reads them,
//! giving a physically smaller dense model; and BatchNorm folding for
//! materialised exports.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use crate::PruneScope;
use crate::artifact::CompressError;
use crate::channel_groups::{ChannelGroup, tensor};

type Result<T> = std::result::Result<T, CompressError>;

fn get<'a>(tensors: &'a BTreeMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    tensor(tensors, name)
}

/// L1 importance of each channel of `group`: the sum over its producers
/// of the absolute values of the channel's rows.
pub fn channel_importance(
    tensors: &BTreeMap<String, Tensor>,
    group: &ChannelGroup,
) -> Result<Vec<f32>> {
    let mut total = vec![0f32; group.channels];
    for producer in &group.producers {
        let norms: Vec<f32> = tensor(tensors, producer)?
            .abs()?
            .flatten_from(1)?
            .sum(1)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        for (t, n) in total.iter_mut().zip(norms) {
            *t += n;
        }
    }
    Ok(total)
}

/// How channel pruning chooses what goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelPruning {
    /// Fraction of the prunable channels removed.
    pub fraction: f64,
    /// `Layer`: each group loses `fraction` of its channels; `Global`: the
    /// channels of lowest importance relative to their group's mean go,
    /// wherever they are.
    pub scope: PruneScope,
    /// Kept channels per group are rounded up to a multiple of this (the
    /// vector width the kernels like); 1 keeps the exact count.
    pub round_to: usize,
}

/// Kept channel counts per group, at least one each.
fn kept_counts(importance: &[Vec<f32>], how: &ChannelPruning) -> Vec<usize> {
    let fraction = how.fraction.clamp(0.0, 1.0);
    let mut keep: Vec<usize> = match how.scope {
        PruneScope::Layer => importance
            .iter()
            .map(|imp| ((1.0 - fraction) * imp.len() as f64).ceil() as usize)
            .collect(),
        PruneScope::Global => {
            let mut scored: Vec<(f32, usize, usize)> = Vec::new();
            for (g, imp) in importance.iter().enumerate() {
                let mean = imp.iter().sum::<f32>() / imp.len().max(1) as f32;
                let mean = if mean > 0.0 { mean } else { 1.0 };
                scored.extend(imp.iter().enumerate().map(|(c, &v)| (v / mean, g, c)));
            }
            scored.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
            let mut keep: Vec<usize> = importance.iter().map(Vec::len).collect();
            let mut to_remove = (fraction * scored.len() as f64).floor() as usize;
            for &(_, g, _) in &scored {
                if to_remove == 0 {
                    break;
                }
                if keep[g] > 1 {
                    keep[g] -= 1;
                    to_remove -= 1;
                }
            }
            keep
        }
    };
    for (k, imp) in keep.iter_mut().zip(importance) {
        let round = how.round_to.max(1);
        *k = (k.div_ceil(round) * round).clamp(1, imp.len());
    }
    keep
}

/// The `keep` channels of largest importance, in their original order.
fn strongest(importance: &[f32], keep: usize) -> Vec<u32> {
    let mut order: Vec<usize> = (0..importance.len()).collect();
    order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]).then(a.cmp(&b)));
    let mut kept: Vec<u32> = order[..keep].iter().map(|&i| i as u32).collect();
    kept.sort_unstable();
    kept
}

/// Removes channels group by group: every member tensor of a group is
/// sliced alike, so the result is a physically smaller model computing what
/// the original computes with the removed channels silenced. Returns the
/// new output channels of every narrowed layer, by layer name.
pub fn prune_channel_groups(
    tensors: &mut BTreeMap<String, Tensor>,
    groups: &[ChannelGroup],
    how: &ChannelPruning,
) -> Result<BTreeMap<String, usize>> {
    let importance = groups
        .iter()
        .map(|g| channel_importance(tensors, g))
        .collect::<Result<Vec<_>>>()?;
    let keep = kept_counts(&importance, how);
    let mut channels = BTreeMap::new();
    for ((group, imp), &count) in groups.iter().zip(&importance).zip(&keep) {
        let kept = strongest(imp, count);
        for m in &group.members {
            let per = m.per_channel.max(1) as u32;
            let rows: Vec<u32> = kept.iter().flat_map(|&c| c * per..(c + 1) * per).collect();
            let index = Tensor::new(rows.as_slice(), &Device::Cpu)?;
            let sliced = tensor(tensors, &m.tensor)?.index_select(&index, m.axis)?;
            tensors.insert(m.tensor.clone(), sliced);
        }
        for layer in &group.layers {
            channels.insert(layer.clone(), kept.len());
        }
    }
    Ok(channels)
}

/// Folds every BatchNorm `P.bnK` / `P.downsample.1` into the conv before it
/// (`P.convK` / `P.downsample.0`), torchvision ResNet naming: the conv gets
/// `w * g / sqrt(v + eps)` and a bias `b - m * g / sqrt(v + eps)`, and the
/// BatchNorm's tensors are removed. Returns how many were folded.
pub fn fold_batch_norms(tensors: &mut BTreeMap<String, Tensor>, eps: f64) -> Result<usize> {
    let bns: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".running_mean").map(str::to_string))
        .collect();
    let mut folded = 0;
    for bn in bns {
        let conv = if let Some(prefix) = bn.strip_suffix("downsample.1") {
            format!("{prefix}downsample.0")
        } else if let Some((prefix, k)) = bn
            .rsplit_once(".bn")
            .or_else(|| bn.strip_prefix("bn").map(|k| ("", k)))
        {
            if prefix.is_empty() {
                format!("conv{k}")
            } else {
                format!("{prefix}.conv{k}")
            }
        } else {
            continue;
        };
        let Some(w) = tensors.get(&format!("{conv}.weight")).cloned() else {
            continue;
        };
        let g = get(tensors, &format!("{bn}.weight"))?.clone();
        let b = get(tensors, &format!("{bn}.bias"))?.clone();
        let m = get(tensors, &format!("{bn}.running_mean"))?.clone();
        let v = get(tensors, &format!("{bn}.running_var"))?.clone();
        let factor = (g / (v + eps)?.sqrt()?)?;
        let shape: Vec<usize> = std::iter::once(w.dim(0)?)
            .chain(std::iter::repeat_n(1, w.rank() - 1))
            .collect();
        let new_w = w.broadcast_mul(&factor.reshape(shape)?)?;
        let old_bias = tensors.get(&format!("{conv}.bias")).cloned();
        let mut new_b = (b - (m * &factor)?)?;
        if let Some(ob) = old_bias {
            new_b = (new_b + (ob * &factor)?)?;
        }
        tensors.insert(format!("{conv}.weight"), new_w);
        tensors.insert(format!("{conv}.bias"), new_b);
        for suffix in ["weight", "bias", "running_mean", "running_var"] {
            tensors.remove(&format!("{bn}.{suffix}"));
        }
        folded += 1;
    }
    Ok(folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_matches_conv_then_batch_norm() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[[[1f32]], [[2.]]], [[[0.5]], [[-1.]]]], &dev)?; // (2, 2, 1, 1)
        let mut t = BTreeMap::from([
            ("layer1.0.conv1.weight".to_string(), w.clone()),
            (
                "layer1.0.bn1.weight".to_string(),
                Tensor::new(&[2f32, 0.5], &dev)?,
            ),
            (
                "layer1.0.bn1.bias".to_string(),
                Tensor::new(&[0.1f32, -0.2], &dev)?,
            ),
            (
                "layer1.0.bn1.running_mean".to_string(),
                Tensor::new(&[0.3f32, 1.0], &dev)?,
            ),
            (
                "layer1.0.bn1.running_var".to_string(),
                Tensor::new(&[4f32, 0.25], &dev)?,
            ),
        ]);
        assert_eq!(fold_batch_norms(&mut t, 0.0)?, 1);
        assert_eq!(t.len(), 2);
        let x = Tensor::new(&[[[[1f32]], [[1.]]]], &dev)?;
        let conv = x.conv2d(&w, 0, 1, 1, 1)?.flatten_all()?.to_vec1::<f32>()?; // [3, -0.5]
        let want = [
            2.0 * (conv[0] - 0.3) / 2.0 + 0.1,
            0.5 * (conv[1] - 1.0) / 0.5 - 0.2,
        ];
        let folded = x
            .conv2d(&t["layer1.0.conv1.weight"], 0, 1, 1, 1)?
            .broadcast_add(&t["layer1.0.conv1.bias"].reshape((1, 2, 1, 1))?)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for (a, b) in folded.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{folded:?} vs {want:?}");
        }
        Ok(())
    }
}
