//! Vision Transformers with timm's layout and names (`patch_embed.proj`,
//! `cls_token`, `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,
//! mlp.fc1,mlp.fc2}`, `norm`, `head`). ViT-Tiny/16 has 5,717,416 and
//! ViT-Small/16 22,050,664 parameters for 1000 classes at 224x224. Layer
//! norm and softmax use differentiable forms (Candle's fused kernels return
//! no gradient).

use candle_core::{D, Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, Init, Linear, VarBuilder, linear};
use rpg_kernels::{Conv2d, conv2d};

use crate::ModelConfig;

/// Width, depth and heads of a ViT.
#[derive(Debug, Clone, Copy)]
pub struct VitShape {
    /// Embedding width.
    pub dim: usize,
    /// Transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Patch side.
    pub patch: usize,
}

/// timm's `vit_tiny_patch16_224`.
pub const TINY: VitShape = VitShape {
    dim: 192,
    depth: 12,
    heads: 3,
    patch: 16,
};
/// timm's `vit_small_patch16_224`.
pub const SMALL: VitShape = VitShape {
    dim: 384,
    depth: 12,
    heads: 6,
    patch: 16,
};

#[derive(Debug)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(dim: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rpg_kernels::ops::layer_norm(x, &self.weight, &self.bias, 1e-6)
    }
}

#[derive(Debug)]
struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    fn new(dim: usize, heads: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            norm1: Norm::new(dim, vb.pp("norm1"))?,
            qkv: linear(dim, 3 * dim, vb.pp("attn").pp("qkv"))?,
            proj: linear(dim, dim, vb.pp("attn").pp("proj"))?,
            norm2: Norm::new(dim, vb.pp("norm2"))?,
            fc1: linear(dim, 4 * dim, vb.pp("mlp").pp("fc1"))?,
            fc2: linear(4 * dim, dim, vb.pp("mlp").pp("fc2"))?,
            heads,
        })
    }

    fn attention(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, t, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * (1.0 / (hd as f64).sqrt()))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let attn = candle_nn::ops::softmax(&q.matmul(&k.t()?)?, D::Minus1)?;
        let out = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.proj.forward(&out)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.attention(&self.norm1.forward(x)?)?)?;
        let h = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        x + h
    }
}

/// A Vision Transformer classifying by its class token.
#[derive(Debug)]
pub struct Vit {
    patch_embed: Conv2d,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
}

/// Builds a ViT of `shape` for `cfg`'s input (patch side from `shape`).
pub fn vit(cfg: &ModelConfig, shape: VitShape, vb: VarBuilder<'_>) -> Result<Vit> {
    let dim =
        ((shape.dim as f64 * cfg.width / shape.heads as f64).round() as usize).max(1) * shape.heads;
    if !cfg.image_size.is_multiple_of(shape.patch) {
        candle_core::bail!(
            "ViT input {} is not a multiple of the patch size {}",
            cfg.image_size,
            shape.patch
        );
    }
    let tokens = (cfg.image_size / shape.patch).pow(2) + 1;
    let pe = Conv2dConfig {
        stride: shape.patch,
        ..Default::default()
    };
    let trunc = Init::Randn {
        mean: 0.0,
        stdev: 0.02,
    };
    Ok(Vit {
        patch_embed: conv2d(
            cfg.in_channels,
            dim,
            shape.patch,
            pe,
            vb.pp("patch_embed").pp("proj"),
        )?,
        cls_token: vb.get_with_hints((1, 1, dim), "cls_token", trunc)?,
        pos_embed: vb.get_with_hints((1, tokens, dim), "pos_embed", trunc)?,
        blocks: (0..shape.depth)
            .map(|i| Block::new(dim, shape.heads, vb.pp("blocks").pp(i.to_string())))
            .collect::<Result<_>>()?,
        norm: Norm::new(dim, vb.pp("norm"))?,
        head: linear(dim, cfg.num_classes, vb.pp("head"))?,
    })
}

impl ModuleT for Vit {
    fn forward_t(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let x = self
            .patch_embed
            .forward(x)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let b = x.dim(0)?;
        let cls = self
            .cls_token
            .broadcast_as((b, 1, self.cls_token.dim(2)?))?;
        let mut x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.pos_embed)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let x = self.norm.forward(&x)?;
        self.head.forward(&x.narrow(1, 0, 1)?.squeeze(1)?)
    }
}
