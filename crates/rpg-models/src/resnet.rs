//! ResNets: the CIFAR family of He et al. (2016, section 4.2; 3 stages of
//! 16/32/64 channels, 3x3 stem, no max-pool) and torchvision's ImageNet
//! ResNet-18/34/50 (optionally with a CIFAR stem). Parameter names follow
//! torchvision (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`,
//! `fc`), so dense exports load in PyTorch and the paper's sharing policy
//! applies by name.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};
use rpg_kernels::{BatchNorm, Conv2d, batch_norm, conv2d_no_bias};
use rpg_kernels::{Linear, linear};

use crate::ModelConfig;
use crate::onnx::{self, ExportOnnx};
use rpg_onnx::Graph;

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder<'_>) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: k / 2,
        stride,
        ..Default::default()
    };
    conv2d_no_bias(cin, cout, k, cfg, vb)
}

fn bn(c: usize, vb: VarBuilder<'_>) -> Result<BatchNorm> {
    batch_norm(c, 1e-5, vb)
}

/// The output channels of the layer `vb` names: `default` unless structured
/// pruning narrowed it.
fn width_of(cfg: &ModelConfig, vb: &VarBuilder<'_>, default: usize) -> usize {
    cfg.out_channels(&vb.prefix(), default)
}

/// A 1x1 projection shortcut (`downsample.0` conv, `downsample.1` BN).
#[derive(Debug)]
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
    name: String,
}

impl Downsample {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            conv: conv(cin, cout, 1, stride, vb.pp("0"))?,
            bn: bn(cout, vb.pp("1"))?,
            name: vb.prefix(),
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }

    fn export_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let name = &self.name;
        let y = onnx::conv(g, &self.conv, x, &format!("{name}.0"))?;
        onnx::batch_norm(g, &self.bn, &y, &format!("{name}.1"))
    }
}

/// Two 3x3 convs (ResNet-18/34 and the CIFAR ResNets).
#[derive(Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    downsample: Option<Downsample>,
    name: String,
}

impl BasicBlock {
    const EXPANSION: usize = 1;

    /// `cin` is the input's channel count, `shape` the block's unpruned
    /// (input, planes), which decides whether it has a projection shortcut.
    fn new(
        cfg: &ModelConfig,
        cin: usize,
        shape: (usize, usize),
        stride: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let (inner, out) = (
            width_of(cfg, &vb.pp("conv1"), shape.1),
            width_of(cfg, &vb.pp("conv2"), shape.1),
        );
        let downsample = (stride != 1 || shape.0 != shape.1)
            .then(|| Downsample::new(cin, out, stride, vb.pp("downsample")))
            .transpose()?;
        Ok(Self {
            conv1: conv(cin, inner, 3, stride, vb.pp("conv1"))?,
            bn1: bn(inner, vb.pp("bn1"))?,
            conv2: conv(inner, out, 3, 1, vb.pp("conv2"))?,
            bn2: bn(out, vb.pp("bn2"))?,
            downsample,
            name: vb.prefix(),
        })
    }

    fn out_channels(&self) -> Result<usize> {
        self.conv2.weight().dim(0)
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        self.bn2
            .forward_add_relu_t(&self.conv2.forward(&y)?, &shortcut, train)
    }
}

/// 1x1 -> 3x3 (stride here, as torchvision's "v1.5") -> 1x1 x4 (ResNet-50).
#[derive(Debug)]
struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<Downsample>,
    name: String,
}

impl Bottleneck {
    const EXPANSION: usize = 4;

    /// As [`BasicBlock::new`].
    fn new(
        cfg: &ModelConfig,
        cin: usize,
        shape: (usize, usize),
        stride: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let (c1, c2, out) = (
            width_of(cfg, &vb.pp("conv1"), shape.1),
            width_of(cfg, &vb.pp("conv2"), shape.1),
            width_of(cfg, &vb.pp("conv3"), shape.1 * Self::EXPANSION),
        );
        let downsample = (stride != 1 || shape.0 != shape.1 * Self::EXPANSION)
            .then(|| Downsample::new(cin, out, stride, vb.pp("downsample")))
            .transpose()?;
        Ok(Self {
            conv1: conv(cin, c1, 1, 1, vb.pp("conv1"))?,
            bn1: bn(c1, vb.pp("bn1"))?,
            conv2: conv(c1, c2, 3, stride, vb.pp("conv2"))?,
            bn2: bn(c2, vb.pp("bn2"))?,
            conv3: conv(c2, out, 1, 1, vb.pp("conv3"))?,
            bn3: bn(out, vb.pp("bn3"))?,
            downsample,
            name: vb.prefix(),
        })
    }

    fn out_channels(&self) -> Result<usize> {
        self.conv3.weight().dim(0)
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        let y = self.bn2.forward_relu_t(&self.conv2.forward(&y)?, train)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        self.bn3
            .forward_add_relu_t(&self.conv3.forward(&y)?, &shortcut, train)
    }
}

#[derive(Debug)]
enum Block {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Block::Basic(b) => b.forward_t(x, train),
            Block::Bottleneck(b) => b.forward_t(x, train),
        }
    }

    /// Conv-BN(-ReLU) stages, then the shortcut and add-ReLU.
    fn export_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let (name, stages, downsample) = match self {
            Block::Basic(b) => (
                &b.name,
                vec![(&b.conv1, &b.bn1, "1"), (&b.conv2, &b.bn2, "2")],
                &b.downsample,
            ),
            Block::Bottleneck(b) => (
                &b.name,
                vec![
                    (&b.conv1, &b.bn1, "1"),
                    (&b.conv2, &b.bn2, "2"),
                    (&b.conv3, &b.bn3, "3"),
                ],
                &b.downsample,
            ),
        };
        let last = stages.len() - 1;
        let mut y = x.to_string();
        for (i, (conv, bn, n)) in stages.into_iter().enumerate() {
            y = onnx::conv(g, conv, &y, &format!("{name}.conv{n}"))?;
            y = onnx::batch_norm(g, bn, &y, &format!("{name}.bn{n}"))?;
            if i < last {
                y = onnx::relu(g, &y);
            }
        }
        let shortcut = match downsample {
            Some(d) => d.export_onnx(g, x)?,
            None => x.to_string(),
        };
        let sum = onnx::add(g, &y, &shortcut);
        Ok(onnx::relu(g, &sum))
    }
}

/// Which block a ResNet stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Two 3x3 convs.
    Basic,
    /// 1x1, 3x3, 1x1 with expansion 4.
    Bottleneck,
}

/// The stem: ImageNet (7x7 stride 2 + 3x3/2 max-pool) or CIFAR (3x3 stride 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stem {
    /// torchvision's 7x7/2 conv, BN, ReLU, 3x3/2 max-pool.
    ImageNet,
    /// 3x3/1 conv, BN, ReLU, no pooling (for 32x32 inputs).
    Cifar,
}

/// A ResNet of any depth in either family.
#[derive(Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    stem: Stem,
    blocks: Vec<Block>,
    fc: Linear,
}

/// Builds a ResNet from stage widths and block counts.
pub fn resnet(
    cfg: &ModelConfig,
    kind: BlockKind,
    stem: Stem,
    widths: &[usize],
    depths: &[usize],
    vb: VarBuilder<'_>,
) -> Result<ResNet> {
    let widths: Vec<usize> = widths.iter().map(|&w| cfg.scaled(w)).collect();
    let stem_width = width_of(cfg, &vb.pp("conv1"), widths[0]);
    let conv1 = match stem {
        Stem::ImageNet => {
            let c = Conv2dConfig {
                padding: 3,
                stride: 2,
                ..Default::default()
            };
            conv2d_no_bias(cfg.in_channels, stem_width, 7, c, vb.pp("conv1"))?
        }
        Stem::Cifar => conv(cfg.in_channels, stem_width, 3, 1, vb.pp("conv1"))?,
    };
    let bn1 = bn(stem_width, vb.pp("bn1"))?;
    let mut blocks = Vec::new();
    // `cin` as built (pruned or not), `unpruned` as published: the latter
    // decides where the projection shortcuts are.
    let (mut cin, mut unpruned) = (stem_width, widths[0]);
    for (stage, (&planes, &depth)) in widths.iter().zip(depths).enumerate() {
        for i in 0..depth {
            let stride = if i == 0 && stage > 0 { 2 } else { 1 };
            let vb = vb.pp(format!("layer{}", stage + 1)).pp(i.to_string());
            let block = match kind {
                BlockKind::Basic => {
                    let b = BasicBlock::new(cfg, cin, (unpruned, planes), stride, vb)?;
                    (cin, unpruned) = (b.out_channels()?, planes * BasicBlock::EXPANSION);
                    Block::Basic(b)
                }
                BlockKind::Bottleneck => {
                    let b = Bottleneck::new(cfg, cin, (unpruned, planes), stride, vb)?;
                    (cin, unpruned) = (b.out_channels()?, planes * Bottleneck::EXPANSION);
                    Block::Bottleneck(b)
                }
            };
            blocks.push(block);
        }
    }
    let fc = linear(cin, cfg.num_classes, vb.pp("fc"))?;
    Ok(ResNet {
        conv1,
        bn1,
        stem,
        blocks,
        fc,
    })
}

/// He et al.'s CIFAR ResNet of depth `6n + 2` (20, 32, 44, 56, 110), with
/// 1x1 projection shortcuts where the shape changes.
pub fn resnet_cifar(cfg: &ModelConfig, depth: usize, vb: VarBuilder<'_>) -> Result<ResNet> {
    let n = (depth - 2) / 6;
    resnet(
        cfg,
        BlockKind::Basic,
        Stem::Cifar,
        &[16, 32, 64],
        &[n, n, n],
        vb,
    )
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = self.bn1.forward_relu_t(&self.conv1.forward(x)?, train)?;
        if self.stem == Stem::ImageNet {
            x = rpg_kernels::ops::max_pool2d(&x, 3, 2, 1)?;
        }
        for block in &self.blocks {
            x = block.forward_t(&x, train)?;
        }
        // Global average pooling (Candle has no adaptive pooling).
        self.fc.forward(&x.mean((2, 3))?)
    }
}

impl ExportOnnx for ResNet {
    fn export_onnx(&self, g: &mut Graph, input: &str) -> Result<String> {
        let x = onnx::conv(g, &self.conv1, input, "conv1")?;
        let x = onnx::batch_norm(g, &self.bn1, &x, "bn1")?;
        let mut x = onnx::relu(g, &x);
        if self.stem == Stem::ImageNet {
            x = onnx::max_pool(g, &x, 3, 2, 1);
        }
        for block in &self.blocks {
            x = block.export_onnx(g, &x)?;
        }
        let pooled = onnx::spatial_mean(g, &x);
        onnx::linear(g, &self.fc, &pooled, "fc")
    }
}
