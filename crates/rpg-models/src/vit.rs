//! Vision Transformers with timm's layout and names (`patch_embed.proj`,
//! `cls_token`, `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,
//! mlp.fc1,mlp.fc2}`, `norm`, `head`). ViT-Tiny/16 has 5,717,416 and
//! ViT-Small/16 22,050,664 parameters for 1000 classes at 224x224. Layer
//! norm and softmax use differentiable forms (Candle's fused kernels return
//! no gradient).

use candle_core::{D, Module, ModuleT, Result, Tensor};
use candle_nn::{Conv2dConfig, Init, VarBuilder};
use rpg_kernels::{Conv2d, conv2d};
use rpg_kernels::{Linear, linear};

use crate::ModelConfig;
use crate::onnx::{self, ExportOnnx};
use rpg_onnx::{Attr, Graph};

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
        rpg_kernels::ops::layer_norm(x, &self.weight, &self.bias, LAYER_NORM_EPS)
    }

    /// Layer norm over the last axis, spelled out (candle-onnx has no
    /// `LayerNormalization`).
    fn export_onnx(&self, g: &mut Graph, x: &str, name: &str) -> Result<String> {
        let axes = || vec![Attr::Ints("axes", vec![-1]), Attr::Int("keepdims", 1)];
        let mean = g.node("ReduceMean", &[x], axes());
        let centered = g.node("Sub", &[x, &mean], Vec::new());
        let squared = g.node("Mul", &[&centered, &centered], Vec::new());
        let var = g.node("ReduceMean", &[&squared], axes());
        let eps = g.scalar("eps", LAYER_NORM_EPS as f32);
        let var = g.node("Add", &[&var, &eps], Vec::new());
        let std = g.node("Sqrt", &[&var], Vec::new());
        let normed = g.node("Div", &[&centered, &std], Vec::new());
        let weight = onnx::tensor(g, &format!("{name}.weight"), &self.weight)?;
        let bias = onnx::tensor(g, &format!("{name}.bias"), &self.bias)?;
        let scaled = g.node("Mul", &[&normed, &weight], Vec::new());
        Ok(g.node("Add", &[&scaled, &bias], Vec::new()))
    }
}

/// timm's layer-norm epsilon.
const LAYER_NORM_EPS: f64 = 1e-6;

#[derive(Debug)]
struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    norm2: Norm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    name: String,
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
            name: vb.prefix(),
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

    /// The block on the residual stream `x` as `[batch * tokens, dim]`.
    fn export_onnx(&self, g: &mut Graph, x: &str, tokens: usize) -> Result<String> {
        let name = &self.name;
        let dim = self.proj.weight().dim(0)?;
        let (heads, head_dim) = (self.heads, dim / self.heads);
        let h = self.norm1.export_onnx(g, x, &format!("{name}.norm1"))?;
        let qkv = onnx::linear(g, &self.qkv, &h, &format!("{name}.attn.qkv"))?;
        let qkv = onnx::reshape(
            g,
            &qkv,
            &[-1, tokens as i64, 3, heads as i64, head_dim as i64],
        );
        // [3, batch, heads, tokens, head_dim]
        let qkv = onnx::transpose(g, &qkv, &[2, 0, 3, 1, 4]);
        let mut pick = |i: i64| {
            let index = g.int_scalar("index", i);
            g.node("Gather", &[&qkv, &index], vec![Attr::Int("axis", 0)])
        };
        let (q, k, v) = (pick(0), pick(1), pick(2));
        let scale = g.scalar("scale", (1.0 / (head_dim as f64).sqrt()) as f32);
        let q = g.node("Mul", &[&q, &scale], Vec::new());
        let k_t = onnx::transpose(g, &k, &[0, 1, 3, 2]);
        let scores = g.node("MatMul", &[&q, &k_t], Vec::new());
        let attn = g.node("Softmax", &[&scores], vec![Attr::Int("axis", -1)]);
        let out = g.node("MatMul", &[&attn, &v], Vec::new());
        let out = onnx::transpose(g, &out, &[0, 2, 1, 3]);
        let out = onnx::reshape(g, &out, &[-1, dim as i64]);
        let out = onnx::linear(g, &self.proj, &out, &format!("{name}.attn.proj"))?;
        let x = onnx::add(g, x, &out);
        let h = self.norm2.export_onnx(g, &x, &format!("{name}.norm2"))?;
        let h = onnx::linear(g, &self.fc1, &h, &format!("{name}.mlp.fc1"))?;
        // GELU (erf form): x/2 * (1 + erf(x / sqrt 2)).
        let sqrt2 = g.scalar("sqrt2", std::f32::consts::SQRT_2);
        let scaled = g.node("Div", &[&h, &sqrt2], Vec::new());
        let erf = g.node("Erf", &[&scaled], Vec::new());
        let one = g.scalar("one", 1.0);
        let gate = g.node("Add", &[&erf, &one], Vec::new());
        let half = g.scalar("half", 0.5);
        let halved = g.node("Mul", &[&h, &half], Vec::new());
        let h = g.node("Mul", &[&halved, &gate], Vec::new());
        let h = onnx::linear(g, &self.fc2, &h, &format!("{name}.mlp.fc2"))?;
        Ok(onnx::add(g, &x, &h))
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

impl ExportOnnx for Vit {
    fn export_onnx(&self, g: &mut Graph, input: &str) -> Result<String> {
        let (_, tokens, dim) = self.pos_embed.dims3()?;
        let (tokens_i, dim_i) = (tokens as i64, dim as i64);
        let x = onnx::conv(g, &self.patch_embed, input, "patch_embed.proj")?;
        let x = onnx::reshape(g, &x, &[-1, dim_i, tokens_i - 1]);
        let patches = onnx::transpose(g, &x, &[0, 2, 1]);
        // The class token, repeated over the batch: [batch, 1, dim].
        let shape = g.node("Shape", &[&patches], Vec::new());
        let (starts, ends, axes) = (
            g.ints("starts", &[0]),
            g.ints("ends", &[1]),
            g.ints("axes", &[0]),
        );
        let batch = g.node("Slice", &[&shape, &starts, &ends, &axes], Vec::new());
        let rest = g.ints("shape", &[1, dim_i]);
        let target = g.node("Concat", &[&batch, &rest], vec![Attr::Int("axis", 0)]);
        let cls = onnx::tensor(g, "cls_token", &self.cls_token)?;
        let cls = g.node("Expand", &[&cls, &target], Vec::new());
        let x = g.node("Concat", &[&cls, &patches], vec![Attr::Int("axis", 1)]);
        let pos = onnx::tensor(g, "pos_embed", &self.pos_embed)?;
        let x = onnx::add(g, &x, &pos);
        let mut x = onnx::reshape(g, &x, &[-1, dim_i]);
        for block in &self.blocks {
            x = block.export_onnx(g, &x, tokens)?;
        }
        // Layer norm is per token, so taking the class token first is exact.
        let x = onnx::reshape(g, &x, &[-1, tokens_i, dim_i]);
        let first = g.int_scalar("index", 0);
        let x = g.node("Gather", &[&x, &first], vec![Attr::Int("axis", 1)]);
        let x = self.norm.export_onnx(g, &x, "norm")?;
        onnx::linear(g, &self.head, &x, "head")
    }
}
