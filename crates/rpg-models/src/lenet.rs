//! LeNet-5 (LeCun et al. 1998) in its common modern form: 5x5 convs with
//! 6 and 16 channels, ReLU, 2x2 max-pooling, fully connected 120-84-classes.
//! 61,706 parameters for 10 classes on 28x28 input (the first conv pads by 2).

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use rpg_kernels::ops::{max_pool2d, relu};
use rpg_kernels::{Conv2d, conv2d};
use rpg_kernels::{Linear, linear};

use crate::ModelConfig;
use crate::onnx::{self, ExportOnnx};
use rpg_onnx::{Attr, Graph};

/// LeNet-5.
#[derive(Debug)]
pub struct LeNet5 {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

/// Builds LeNet-5.
pub fn lenet5(cfg: &ModelConfig, vb: VarBuilder<'_>) -> Result<LeNet5> {
    let width = |i, name, default| cfg.out_channels(name, cfg.layer_width(i, default));
    let (c1, c2) = (width(0, "conv1", 6), width(1, "conv2", 16));
    let (f1, f2) = (width(2, "fc1", 120), width(3, "fc2", 84));
    let padded = Conv2dConfig {
        padding: 2,
        ..Default::default()
    };
    // 28 -> conv(pad 2) 28 -> pool 14 -> conv 10 -> pool 5
    let side = ((cfg.image_size + 4 - 4) / 2 - 4) / 2;
    if side == 0 {
        candle_core::bail!(
            "lenet5 needs inputs of at least 12x12, got {0}x{0}",
            cfg.image_size
        );
    }
    Ok(LeNet5 {
        conv1: conv2d(cfg.in_channels, c1, 5, padded, vb.pp("conv1"))?,
        conv2: conv2d(c1, c2, 5, Default::default(), vb.pp("conv2"))?,
        fc1: linear(c2 * side * side, f1, vb.pp("fc1"))?,
        fc2: linear(f1, f2, vb.pp("fc2"))?,
        fc3: linear(f2, cfg.num_classes, vb.pp("fc3"))?,
    })
}

impl ModuleT for LeNet5 {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        // rpg-nn's pool: Candle's max_pool2d backward scales the gradient
        // by 1/4 here (see rpg_kernels::ops::max_pool2d).
        let x = max_pool2d(&relu(&self.conv1.forward(x)?)?, 2, 2, 0)?;
        let x = max_pool2d(&relu(&self.conv2.forward(&x)?)?, 2, 2, 0)?.flatten_from(1)?;
        let x = relu(&self.fc1.forward(&x)?)?;
        let x = relu(&self.fc2.forward(&x)?)?;
        self.fc3.forward(&x)
    }
}

impl ExportOnnx for LeNet5 {
    fn export_onnx(&self, g: &mut Graph, input: &str) -> Result<String> {
        let x = onnx::conv(g, &self.conv1, input, "conv1")?;
        let x = onnx::relu(g, &x);
        let x = onnx::max_pool(g, &x, 2, 2, 0);
        let x = onnx::conv(g, &self.conv2, &x, "conv2")?;
        let x = onnx::relu(g, &x);
        let x = onnx::max_pool(g, &x, 2, 2, 0);
        let x = g.node("Flatten", &[&x], vec![Attr::Int("axis", 1)]);
        let x = onnx::linear(g, &self.fc1, &x, "fc1")?;
        let x = onnx::relu(g, &x);
        let x = onnx::linear(g, &self.fc2, &x, "fc2")?;
        let x = onnx::relu(g, &x);
        onnx::linear(g, &self.fc3, &x, "fc3")
    }
}
