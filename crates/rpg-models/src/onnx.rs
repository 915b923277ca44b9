//! ONNX export: each zoo model appends its inference graph (eval-mode batch
//! norm, weights as they are now: generated ones materialised) to an
//! [`rpg_onnx::Graph`], with initializers under the model's parameter names.
//!
//! Operators are chosen so that ONNX Runtime and candle-onnx both run the
//! graph: layer norm and GELU are spelled out (`ReduceMean`, `Erf`), and
//! ViT's class token is expanded to the batch through `Shape`/`Slice`.

use candle_core::{DType, Result, Tensor};
use rpg_kernels::Linear;
use rpg_kernels::{BatchNorm, Conv2d};
use rpg_onnx::{Attr, Dim, Graph, OnnxError};

use crate::ModelConfig;

/// A model that can write itself as an ONNX graph.
pub trait ExportOnnx {
    /// Appends the inference graph reading `input` (NCHW, f32) and returns
    /// the name of the logits value.
    fn export_onnx(&self, graph: &mut Graph, input: &str) -> Result<String>;
}

/// The name of the graph's input.
pub const ONNX_INPUT: &str = "input";
/// The name of the graph's output.
pub const ONNX_OUTPUT: &str = "logits";

/// The ONNX model of `model` (built for `cfg`): input `input`
/// `[batch, C, H, W]`, output `logits` `[batch, classes]`, batch dynamic;
/// `metadata` goes into the file's `metadata_props`.
pub fn onnx_model(
    model: &dyn ExportOnnx,
    cfg: &ModelConfig,
    metadata: &[(String, String)],
) -> Result<rpg_onnx::proto::ModelProto> {
    let mut g = Graph::new(&cfg.name);
    let batch = Dim::Dynamic("batch");
    let input = g
        .input(
            ONNX_INPUT,
            &[
                batch.clone(),
                Dim::Fixed(cfg.in_channels),
                Dim::Fixed(cfg.image_size),
                Dim::Fixed(cfg.image_size),
            ],
        )
        .map_err(onnx_error)?;
    let logits = model.export_onnx(&mut g, &input)?;
    g.output(&logits, ONNX_OUTPUT, &[batch, Dim::Fixed(cfg.num_classes)])
        .map_err(onnx_error)?;
    let doc = format!(
        "{} exported by rpg {}: dense weights (generated ones materialised), inference mode",
        cfg.name,
        env!("CARGO_PKG_VERSION")
    );
    Ok(g.into_model(("rpg", env!("CARGO_PKG_VERSION")), &doc, metadata))
}

fn onnx_error(e: OnnxError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// `t` as an initializer called `name`.
pub(crate) fn tensor(g: &mut Graph, name: &str, t: &Tensor) -> Result<String> {
    let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    g.initializer(name, t.dims(), &data).map_err(onnx_error)
}

/// A convolution (`{name}.weight`, optional `{name}.bias`).
pub(crate) fn conv(g: &mut Graph, layer: &Conv2d, x: &str, name: &str) -> Result<String> {
    let w = layer.weight();
    let (_, _, kh, kw) = w.dims4()?;
    let weight = tensor(g, &format!("{name}.weight"), w)?;
    let mut inputs = vec![x.to_string(), weight];
    if let Some(b) = layer.bias() {
        inputs.push(tensor(g, &format!("{name}.bias"), b)?);
    }
    let c = layer.config();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(g.node(
        "Conv",
        &inputs,
        vec![
            Attr::sizes("kernel_shape", &[kh, kw]),
            Attr::sizes("strides", &[c.stride, c.stride]),
            Attr::sizes("pads", &[c.padding; 4]),
            Attr::sizes("dilations", &[c.dilation, c.dilation]),
            Attr::Int("group", c.groups as i64),
        ],
    ))
}

/// Batch norm with its running statistics (`{name}.weight`, `.bias`,
/// `.running_mean`, `.running_var`).
pub(crate) fn batch_norm(g: &mut Graph, layer: &BatchNorm, x: &str, name: &str) -> Result<String> {
    let bn = layer.inner();
    let mean = bn.running_mean();
    let (scale, shift) = match bn.weight_and_bias() {
        Some((w, b)) => (w.clone(), b.clone()),
        None => (mean.ones_like()?, mean.zeros_like()?),
    };
    let scale = tensor(g, &format!("{name}.weight"), &scale)?;
    let shift = tensor(g, &format!("{name}.bias"), &shift)?;
    let mean = tensor(g, &format!("{name}.running_mean"), mean)?;
    let var = tensor(g, &format!("{name}.running_var"), bn.running_var())?;
    Ok(g.node(
        "BatchNormalization",
        &[x, &scale, &shift, &mean, &var],
        vec![Attr::Float("epsilon", bn.eps() as f32)],
    ))
}

/// A fully connected layer on `[rows, in]`: `Gemm` with the weight in
/// PyTorch's `[out, in]` layout.
pub(crate) fn linear(g: &mut Graph, layer: &Linear, x: &str, name: &str) -> Result<String> {
    let weight = tensor(g, &format!("{name}.weight"), layer.weight())?;
    let mut inputs = vec![x.to_string(), weight];
    match layer.bias() {
        Some(b) => inputs.push(tensor(g, &format!("{name}.bias"), b)?),
        None => {
            let out = layer.weight().dim(0)?;
            inputs.push(tensor(
                g,
                &format!("{name}.bias"),
                &Tensor::zeros(out, DType::F32, &candle_core::Device::Cpu)?,
            )?)
        }
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(g.node("Gemm", &inputs, vec![Attr::Int("transB", 1)]))
}

/// `ReLU`.
pub(crate) fn relu(g: &mut Graph, x: &str) -> String {
    g.node("Relu", &[x], Vec::new())
}

/// Elementwise sum.
pub(crate) fn add(g: &mut Graph, a: &str, b: &str) -> String {
    g.node("Add", &[a, b], Vec::new())
}

/// Max pooling, square window.
pub(crate) fn max_pool(g: &mut Graph, x: &str, k: usize, stride: usize, pad: usize) -> String {
    g.node(
        "MaxPool",
        &[x],
        vec![
            Attr::sizes("kernel_shape", &[k, k]),
            Attr::sizes("strides", &[stride, stride]),
            Attr::sizes("pads", &[pad; 4]),
        ],
    )
}

/// `[N, C, H, W]` -> `[N, C]` by averaging (global average pooling).
pub(crate) fn spatial_mean(g: &mut Graph, x: &str) -> String {
    g.node(
        "ReduceMean",
        &[x],
        vec![Attr::Ints("axes", vec![2, 3]), Attr::Int("keepdims", 0)],
    )
}

/// `x` reshaped; `-1` infers a dimension (the batch, here).
pub(crate) fn reshape(g: &mut Graph, x: &str, shape: &[i64]) -> String {
    let shape = g.ints("shape", shape);
    g.node("Reshape", &[x, &shape], Vec::new())
}

/// `x` with its axes permuted.
pub(crate) fn transpose(g: &mut Graph, x: &str, perm: &[i64]) -> String {
    g.node("Transpose", &[x], vec![Attr::Ints("perm", perm.to_vec())])
}
