//! Structured pruning: remove whole output channels (smallest L1 norm) and
//! the inputs of the next layer that read them, giving a physically smaller
//! dense model; and BatchNorm folding for materialised exports.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use rpg_nn::PrunableLayer;

use crate::artifact::CompressError;

type Result<T> = std::result::Result<T, CompressError>;

fn get<'a>(tensors: &'a BTreeMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    tensors
        .get(name)
        .ok_or_else(|| CompressError::Mismatch(format!("structured pruning: no tensor `{name}`")))
}

/// Output channels to keep: the `ceil((1 - fraction) * out)` of largest L1
/// norm (at least one), in their original order.
pub fn channels_to_keep(weight: &Tensor, fraction: f64) -> Result<Vec<u32>> {
    let out = weight.dim(0)?;
    let norms: Vec<f32> = weight
        .abs()?
        .flatten_from(1)?
        .sum(1)?
        .to_dtype(DType::F32)?
        .to_vec1()?;
    let keep = (((1.0 - fraction.clamp(0.0, 1.0)) * out as f64).ceil() as usize).clamp(1, out);
    let mut order: Vec<usize> = (0..out).collect();
    order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
    let mut kept: Vec<u32> = order[..keep].iter().map(|&i| i as u32).collect();
    kept.sort_unstable();
    Ok(kept)
}

/// Prunes `fraction` of the output channels of every layer in `layers`
/// (in order), slicing the next layers' inputs to match. Returns the new
/// output widths.
pub fn prune_channels(
    tensors: &mut BTreeMap<String, Tensor>,
    layers: &[PrunableLayer],
    fraction: f64,
) -> Result<Vec<usize>> {
    let mut widths = Vec::with_capacity(layers.len());
    for layer in layers {
        let weight = get(tensors, &layer.weight)?.clone();
        let keep = channels_to_keep(&weight, fraction)?;
        let index = Tensor::new(keep.as_slice(), &Device::Cpu)?;
        tensors.insert(layer.weight.clone(), weight.index_select(&index, 0)?);
        if let Some(bias) = &layer.bias {
            let b = get(tensors, bias)?.index_select(&index, 0)?;
            tensors.insert(bias.clone(), b);
        }
        let per = layer.next_inputs_per_channel.max(1) as u32;
        let inputs: Vec<u32> = keep.iter().flat_map(|&c| c * per..(c + 1) * per).collect();
        let next = get(tensors, &layer.next)?;
        if next.dim(1)? != weight.dim(0)? * per as usize {
            return Err(CompressError::Mismatch(format!(
                "`{}` reads {} inputs but `{}` gives {} channels x {per}",
                layer.next,
                next.dim(1)?,
                layer.weight,
                weight.dim(0)?
            )));
        }
        let sliced = next.index_select(&Tensor::new(inputs.as_slice(), &Device::Cpu)?, 1)?;
        tensors.insert(layer.next.clone(), sliced);
        widths.push(keep.len());
    }
    Ok(widths)
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
    use candle_core::Module;

    use super::*;

    #[test]
    fn pruned_chain_equals_the_masked_dense_chain() -> Result<()> {
        // fc1 (6 <- 4) -> relu -> fc2 (3 <- 6): pruning fc1's outputs is the
        // same as zeroing them when the pruned channels are exactly zero.
        let dev = Device::Cpu;
        let w1 = Tensor::new(
            &[
                [1f32, 0., 0., 0.],
                [0., 0., 0., 0.],
                [0., 2., 0., 0.],
                [0., 0., 0., 0.],
                [0., 0., 3., 0.],
                [0., 0., 0., 0.],
            ],
            &dev,
        )?;
        let b1 = Tensor::new(&[0.1f32, 0.0, 0.2, 0.0, 0.3, 0.0], &dev)?;
        let w2 = Tensor::arange(0f32, 18., &dev)?.reshape((3, 6))?;
        let mut t = BTreeMap::from([
            ("fc1.weight".to_string(), w1.clone()),
            ("fc1.bias".to_string(), b1.clone()),
            ("fc2.weight".to_string(), w2.clone()),
        ]);
        let layers = [PrunableLayer {
            weight: "fc1.weight".into(),
            bias: Some("fc1.bias".into()),
            next: "fc2.weight".into(),
            next_inputs_per_channel: 1,
        }];
        assert_eq!(prune_channels(&mut t, &layers, 0.5)?, vec![3]);
        let x = Tensor::new(&[[1f32, 2., 3., 4.]], &dev)?;
        let dense = candle_nn::Linear::new(w2, None)
            .forward(&candle_nn::Linear::new(w1, Some(b1)).forward(&x)?.relu()?)?;
        let l1 = candle_nn::Linear::new(t["fc1.weight"].clone(), Some(t["fc1.bias"].clone()));
        let pruned = candle_nn::Linear::new(t["fc2.weight"].clone(), None)
            .forward(&l1.forward(&x)?.relu()?)?;
        assert_eq!(dense.to_vec2::<f32>()?, pruned.to_vec2::<f32>()?);
        Ok(())
    }

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
