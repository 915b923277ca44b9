//! A multi-layer perceptron: input -> 256 -> 256 -> classes by default.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use rpg_kernels::{Linear, linear};

use rpg_kernels::ops::relu;

use crate::ModelConfig;
use crate::onnx::{self, ExportOnnx};
use rpg_onnx::{Attr, Graph};

/// Fully connected layers `fc1..fcK` with ReLU between them.
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

/// Hidden sizes of the default MLP.
pub const DEFAULT_HIDDEN: [usize; 2] = [256, 256];

/// Builds the MLP for a flattened `in_channels * image_size^2` input.
pub fn mlp(cfg: &ModelConfig, vb: VarBuilder<'_>) -> Result<Mlp> {
    let mut sizes = vec![cfg.in_channels * cfg.image_size * cfg.image_size];
    sizes.extend(
        DEFAULT_HIDDEN
            .iter()
            .enumerate()
            .map(|(i, &h)| cfg.out_channels(&format!("fc{}", i + 1), cfg.layer_width(i, h))),
    );
    sizes.push(cfg.num_classes);
    let layers = sizes
        .windows(2)
        .enumerate()
        .map(|(i, w)| linear(w[0], w[1], vb.pp(format!("fc{}", i + 1))))
        .collect::<Result<_>>()?;
    Ok(Mlp { layers })
}

impl ModuleT for Mlp {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let mut x = x.flatten_from(1)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = relu(&x)?;
            }
        }
        Ok(x)
    }
}

impl ExportOnnx for Mlp {
    fn export_onnx(&self, g: &mut Graph, input: &str) -> Result<String> {
        let mut x = g.node("Flatten", &[input], vec![Attr::Int("axis", 1)]);
        for (i, layer) in self.layers.iter().enumerate() {
            x = onnx::linear(g, layer, &x, &format!("fc{}", i + 1))?;
            if i + 1 < self.layers.len() {
                x = onnx::relu(g, &x);
            }
        }
        Ok(x)
    }
}
