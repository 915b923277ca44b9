//! Magnitude pruning of a materialised model's conv and linear weights (as
//! the paper's authors pruned): the model stays dense, with zeros.

use std::collections::BTreeMap;

use candle_core::{Device, Result, Tensor};

use crate::prune::{global_magnitude_prune, magnitude_prune};

/// Where the pruning threshold is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneScope {
    /// One threshold over all weights together.
    Global,
    /// A threshold per weight tensor.
    Layer,
}

impl rpg_core::names::Named for PruneScope {
    const WHAT: &'static str = "prune scope";
    const ALL: &'static [Self] = &[PruneScope::Global, PruneScope::Layer];

    /// `global` or `layer`.
    fn name(self) -> &'static str {
        match self {
            PruneScope::Global => "global",
            PruneScope::Layer => "layer",
        }
    }
}

rpg_core::named_text_impls!(PruneScope);

/// Zeros the `fraction` of smallest-magnitude values of every conv/linear
/// weight (a tensor named `*weight` of rank 2 or more) in `tensors`; biases
/// and norms are left alone.
pub fn prune_weights(
    tensors: &mut BTreeMap<String, Tensor>,
    fraction: f64,
    scope: PruneScope,
) -> Result<()> {
    let names: Vec<String> = tensors
        .iter()
        .filter(|(n, t)| n.ends_with("weight") && t.rank() >= 2)
        .map(|(n, _)| n.clone())
        .collect();
    let mut values: Vec<Vec<f32>> = names
        .iter()
        .map(|n| tensors[n].flatten_all()?.to_vec1::<f32>())
        .collect::<Result<_>>()?;
    match scope {
        PruneScope::Layer => {
            for v in values.iter_mut() {
                magnitude_prune(v, fraction);
            }
        }
        PruneScope::Global => {
            let mut views: Vec<&mut [f32]> = values.iter_mut().map(|v| &mut v[..]).collect();
            global_magnitude_prune(&mut views, fraction);
        }
    }
    for (name, v) in names.iter().zip(values) {
        let dims = tensors[name].dims().to_vec();
        tensors.insert(name.clone(), Tensor::from_vec(v, dims, &Device::Cpu)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros(t: &Tensor) -> usize {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .filter(|v| **v == 0.0)
            .count()
    }

    #[test]
    fn weights_are_pruned_and_biases_are_not() -> anyhow::Result<()> {
        let mut tensors = BTreeMap::from([
            (
                "a.weight".to_string(),
                Tensor::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu)?,
            ),
            (
                "b.weight".to_string(),
                Tensor::new(&[[10f32, 20.], [30., 40.]], &Device::Cpu)?,
            ),
            (
                "a.bias".to_string(),
                Tensor::new(&[0.5f32, 0.1], &Device::Cpu)?,
            ),
        ]);
        let mut per_layer = tensors.clone();
        prune_weights(&mut tensors, 0.5, PruneScope::Global)?;
        assert_eq!(zeros(&tensors["a.weight"]), 4);
        assert_eq!(zeros(&tensors["b.weight"]), 0);
        assert_eq!(zeros(&tensors["a.bias"]), 0);
        prune_weights(&mut per_layer, 0.5, PruneScope::Layer)?;
        assert_eq!(zeros(&per_layer["a.weight"]), 2);
        assert_eq!(zeros(&per_layer["b.weight"]), 2);
        Ok(())
    }
}
