//! MobileNetV2 (Sandler et al. 2018) with torchvision's layout and names
//! (`features.N.conv.M`, `classifier.1`): 3,504,872 parameters for 1000
//! classes at width 1. The classifier's dropout is left out so training
//! stays deterministic (it has no parameters). Depthwise convs run through
//! Candle's grouped conv, which is slow on CPU.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use rpg_kernels::{BatchNorm, Conv2d, batch_norm, conv2d_no_bias};
use rpg_kernels::{Linear, linear};

use crate::ModelConfig;
use crate::onnx::{self, ExportOnnx};
use rpg_onnx::Graph;

/// torchvision's `_make_divisible(v, 8)`.
fn make_divisible(v: f64) -> usize {
    let rounded = (((v + 4.0) as usize) / 8 * 8).max(8);
    if (rounded as f64) < 0.9 * v {
        rounded + 8
    } else {
        rounded
    }
}

/// Conv, BatchNorm and (optionally) ReLU6: torchvision's `Conv2dNormActivation`.
#[derive(Debug)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
    relu6: bool,
    conv_name: String,
    bn_name: String,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
        relu6: bool,
        conv_vb: VarBuilder<'_>,
        bn_vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: (k - 1) / 2,
            stride,
            groups,
            ..Default::default()
        };
        Ok(Self {
            conv_name: conv_vb.prefix(),
            bn_name: bn_vb.prefix(),
            conv: conv2d_no_bias(cin, cout, k, cfg, conv_vb)?,
            bn: batch_norm(cout, 1e-5, bn_vb)?,
            relu6,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn.forward_t(&self.conv.forward(x)?, train)?;
        if self.relu6 {
            rpg_kernels::ops::relu6(&y)
        } else {
            Ok(y)
        }
    }

    fn export_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let y = onnx::conv(g, &self.conv, x, &self.conv_name)?;
        let y = onnx::batch_norm(g, &self.bn, &y, &self.bn_name)?;
        if self.relu6 {
            let (low, high) = (g.scalar("zero", 0.0), g.scalar("six", 6.0));
            Ok(g.node("Clip", &[&y, &low, &high], Vec::new()))
        } else {
            Ok(y)
        }
    }
}

#[derive(Debug)]
struct InvertedResidual {
    layers: Vec<ConvBn>,
    residual: bool,
}

impl InvertedResidual {
    /// `cin` is the input's channel count as built, `unpruned` the
    /// block's published (input, output) widths, which decide the residual.
    fn new(
        cfg: &ModelConfig,
        cin: usize,
        unpruned: (usize, usize),
        stride: usize,
        expand: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        // The depthwise conv keeps its input's channels: pruning narrows
        // the expansion conv before it, and this follows.
        let mut hidden = cin;
        let mut layers = Vec::new();
        let mut idx = 0;
        if expand != 1 {
            let v = vb.pp(idx.to_string());
            hidden = cfg.out_channels(&v.pp("0").prefix(), unpruned.0 * expand);
            layers.push(ConvBn::new(
                cin,
                hidden,
                1,
                1,
                1,
                true,
                v.pp("0"),
                v.pp("1"),
            )?);
            idx += 1;
        }
        let v = vb.pp(idx.to_string());
        layers.push(ConvBn::new(
            hidden,
            hidden,
            3,
            stride,
            hidden,
            true,
            v.pp("0"),
            v.pp("1"),
        )?);
        // Pointwise-linear conv and its BN sit flat in the Sequential.
        let project = vb.pp((idx + 1).to_string());
        let cout = cfg.out_channels(&project.prefix(), unpruned.1);
        layers.push(ConvBn::new(
            hidden,
            cout,
            1,
            1,
            1,
            false,
            project,
            vb.pp((idx + 2).to_string()),
        )?);
        Ok(Self {
            layers,
            residual: stride == 1 && unpruned.0 == unpruned.1,
        })
    }

    fn out_channels(&self) -> Result<usize> {
        match self.layers.last() {
            Some(l) => l.conv.weight().dim(0),
            None => candle_core::bail!("an inverted residual block without layers"),
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for layer in &self.layers {
            y = layer.forward_t(&y, train)?;
        }
        if self.residual { y + x } else { Ok(y) }
    }

    fn export_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let mut y = x.to_string();
        for layer in &self.layers {
            y = layer.export_onnx(g, &y)?;
        }
        Ok(if self.residual {
            onnx::add(g, &y, x)
        } else {
            y
        })
    }
}

/// MobileNetV2.
#[derive(Debug)]
pub struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    head: ConvBn,
    classifier: Linear,
}

/// (expansion, channels, repeats, stride) of each stage.
const SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Builds MobileNetV2 at `cfg.width`.
pub fn mobilenet_v2(cfg: &ModelConfig, vb: VarBuilder<'_>) -> Result<MobileNetV2> {
    let features = vb.pp("features");
    let mut unpruned = make_divisible(32.0 * cfg.width);
    let mut cin = cfg.out_channels(&features.pp("0").pp("0").prefix(), unpruned);
    let stem = ConvBn::new(
        cfg.in_channels,
        cin,
        3,
        2,
        1,
        true,
        features.pp("0").pp("0"),
        features.pp("0").pp("1"),
    )?;
    let mut blocks = Vec::new();
    let mut index = 1;
    for (t, c, n, s) in SETTINGS {
        let cout = make_divisible(c as f64 * cfg.width);
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let block = InvertedResidual::new(
                cfg,
                cin,
                (unpruned, cout),
                stride,
                t,
                features.pp(index.to_string()),
            )?;
            cin = block.out_channels()?;
            unpruned = cout;
            blocks.push(block);
            index += 1;
        }
    }
    let head_vb = features.pp(index.to_string());
    let last = cfg.out_channels(
        &head_vb.pp("0").prefix(),
        make_divisible(1280.0 * cfg.width.max(1.0)),
    );
    let head = ConvBn::new(cin, last, 1, 1, 1, true, head_vb.pp("0"), head_vb.pp("1"))?;
    let classifier = linear(last, cfg.num_classes, vb.pp("classifier").pp("1"))?;
    Ok(MobileNetV2 {
        stem,
        blocks,
        head,
        classifier,
    })
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.stem.forward_t(x, train)?;
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        let x = self.head.forward_t(&x, train)?.mean((2, 3))?;
        self.classifier.forward(&x)
    }
}

impl ExportOnnx for MobileNetV2 {
    fn export_onnx(&self, g: &mut Graph, input: &str) -> Result<String> {
        let mut x = self.stem.export_onnx(g, input)?;
        for block in &self.blocks {
            x = block.export_onnx(g, &x)?;
        }
        let x = self.head.export_onnx(g, &x)?;
        let pooled = onnx::spatial_mean(g, &x);
        onnx::linear(g, &self.classifier, &pooled, "classifier.1")
    }
}

#[cfg(test)]
mod tests {
    use super::make_divisible;

    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(make_divisible(32.0), 32);
        assert_eq!(make_divisible(16.0 * 0.5), 8);
        assert_eq!(make_divisible(24.0 * 0.75), 24);
        assert_eq!(make_divisible(1280.0), 1280);
        assert_eq!(make_divisible(5.0), 8);
    }
}
