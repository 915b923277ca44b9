//! A small ONNX interpreter on Candle (CPU) for the operators the zoo's
//! convolutional exports use and their quantized (QDQ) forms: what
//! calibrates an int8 export (the range of every value) and gives rpg's own
//! logits of it, which ONNX Runtime's int8 kernels are checked against.
//! Attention models use operators it does not run; they get a clear error.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rpg_onnx::proto::{GraphProto, NodeProto, TensorProto, data_type};

use crate::artifact::CompressError;

type Result<T> = std::result::Result<T, CompressError>;

fn unsupported(what: String) -> CompressError {
    CompressError::Mismatch(what)
}

/// The values of an initializer as f32 (integers are exact up to 2^24).
pub fn initializer_values(t: &TensorProto) -> Result<Vec<f32>> {
    let raw = &t.raw_data;
    let values: Vec<f32> = match t.data_type {
        data_type::FLOAT => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        data_type::UINT8 => raw.iter().map(|&b| f32::from(b)).collect(),
        data_type::INT8 => raw.iter().map(|&b| f32::from(b as i8)).collect(),
        data_type::INT32 => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        data_type::INT64 => raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => {
            return Err(unsupported(format!(
                "initializer `{}` has ONNX data type {other}, which rpg does not read",
                t.name
            )));
        }
    };
    let expected: i64 = t.dims.iter().product();
    if values.len() as i64 != expected {
        return Err(CompressError::Corrupt(format!(
            "initializer `{}` holds {} values for dims {:?}",
            t.name,
            values.len(),
            t.dims
        )));
    }
    Ok(values)
}

/// The integer range of a quantized type.
pub(crate) fn code_range(dtype: i32) -> (f32, f32) {
    match dtype {
        data_type::UINT8 => (0.0, 255.0),
        data_type::INT8 => (-128.0, 127.0),
        _ => (i32::MIN as f32, i32::MAX as f32),
    }
}

/// An ONNX graph ready to run.
#[derive(Debug)]
pub struct OnnxRunner<'a> {
    graph: &'a GraphProto,
    constants: HashMap<&'a str, (Tensor, i32)>,
}

impl<'a> OnnxRunner<'a> {
    /// Reads `graph`'s initializers.
    pub fn new(graph: &'a GraphProto) -> Result<Self> {
        let mut constants = HashMap::new();
        for t in &graph.initializer {
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            let values = Tensor::from_vec(initializer_values(t)?, dims, &Device::Cpu)?;
            constants.insert(t.name.as_str(), (values, t.data_type));
        }
        Ok(Self { graph, constants })
    }

    /// Runs the graph on `input` (its one input) and returns its first
    /// output; `observe` sees every node's output by name, and the input.
    pub fn run(&self, input: &Tensor, mut observe: impl FnMut(&str, &Tensor)) -> Result<Tensor> {
        let mut values: HashMap<&str, Tensor> = HashMap::new();
        let name = self
            .graph
            .input
            .first()
            .map(|i| i.name.as_str())
            .ok_or_else(|| CompressError::Corrupt("the ONNX graph has no input".into()))?;
        let input = input.to_dtype(DType::F32)?;
        observe(name, &input);
        values.insert(name, input);
        for node in &self.graph.node {
            let args = node
                .input
                .iter()
                .map(|i| match values.get(i.as_str()) {
                    Some(v) => Ok(v.clone()),
                    None => self
                        .constants
                        .get(i.as_str())
                        .map(|c| c.0.clone())
                        .ok_or_else(|| {
                            CompressError::Corrupt(format!(
                                "`{}` reads `{i}`, which nothing defines",
                                node.name
                            ))
                        }),
                })
                .collect::<Result<Vec<Tensor>>>()?;
            let out = self.apply(node, &args)?;
            let output = node.output.first().ok_or_else(|| {
                CompressError::Corrupt(format!("node `{}` has no output", node.name))
            })?;
            observe(output, &out);
            values.insert(output.as_str(), out);
        }
        let output = self
            .graph
            .output
            .first()
            .ok_or_else(|| CompressError::Corrupt("the ONNX graph has no output".into()))?;
        values
            .remove(output.name.as_str())
            .ok_or_else(|| CompressError::Corrupt(format!("nothing computes `{}`", output.name)))
    }

    /// The element type of a quantization node's zero point (its third
    /// input), which sets the codes' range.
    fn zero_point_type(&self, node: &NodeProto) -> i32 {
        node.input
            .get(2)
            .and_then(|z| self.constants.get(z.as_str()))
            .map_or(data_type::UINT8, |c| c.1)
    }

    fn apply(&self, node: &NodeProto, args: &[Tensor]) -> Result<Tensor> {
        let arg = |i: usize| {
            args.get(i).ok_or_else(|| {
                CompressError::Corrupt(format!(
                    "`{}` ({}) lacks input {i}",
                    node.name, node.op_type
                ))
            })
        };
        let x = arg(0)?;
        Ok(match node.op_type.as_str() {
            "Conv" => {
                let w = arg(1)?;
                let pads = node.ints_attribute("pads");
                let strides = node.ints_attribute("strides");
                let dilations = node.ints_attribute("dilations");
                let same = |v: &[i64], d: i64| {
                    if v.iter().all(|&p| p == *v.first().unwrap_or(&d)) {
                        Ok(*v.first().unwrap_or(&d) as usize)
                    } else {
                        Err(unsupported(format!(
                            "`{}`: asymmetric conv attributes {v:?}",
                            node.name
                        )))
                    }
                };
                let y = x.conv2d(
                    w,
                    same(pads, 0)?,
                    same(strides, 1)?,
                    same(dilations, 1)?,
                    node.int_attribute("group", 1) as usize,
                )?;
                match args.get(2) {
                    Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?,
                    None => y,
                }
            }
            "BatchNormalization" => {
                let eps = f64::from(node.float_attribute("epsilon", 1e-5));
                let c = x.dim(1)?;
                let shape = |t: &Tensor| t.reshape((1, c, 1, 1));
                let (scale, shift, mean, var) = (arg(1)?, arg(2)?, arg(3)?, arg(4)?);
                let inv = (scale / (var + eps)?.sqrt()?)?;
                x.broadcast_sub(&shape(mean)?)?
                    .broadcast_mul(&shape(&inv)?)?
                    .broadcast_add(&shape(shift)?)?
            }
            "Relu" => x.relu()?,
            "Clip" => {
                let bound = |i: usize| -> Result<Option<f32>> {
                    match args.get(i) {
                        Some(t) => Ok(Some(t.flatten_all()?.to_vec1::<f32>()?[0])),
                        None => Ok(None),
                    }
                };
                let low = bound(1)?.unwrap_or(f32::MIN);
                let high = bound(2)?.unwrap_or(f32::MAX);
                x.clamp(low, high)?
            }
            "Add" => x.broadcast_add(arg(1)?)?,
            "MaxPool" => {
                let first =
                    |name, d: i64| *node.ints_attribute(name).first().unwrap_or(&d) as usize;
                rpg_kernels::ops::max_pool2d(
                    x,
                    first("kernel_shape", 1),
                    first("strides", 1),
                    first("pads", 0),
                )?
            }
            "ReduceMean" => {
                let axes = node.ints_attribute("axes");
                if axes != [2, 3] {
                    return Err(unsupported(format!(
                        "`{}`: ReduceMean over {axes:?}",
                        node.name
                    )));
                }
                if node.int_attribute("keepdims", 1) == 0 {
                    x.mean((2, 3))?
                } else {
                    x.mean_keepdim(3)?.mean_keepdim(2)?
                }
            }
            "GlobalAveragePool" => x.mean_keepdim(3)?.mean_keepdim(2)?,
            "Flatten" => x.flatten_from(node.int_attribute("axis", 1) as usize)?,
            "Gemm" => {
                let w = arg(1)?;
                let w = if node.int_attribute("transB", 0) == 1 {
                    w.t()?
                } else {
                    w.clone()
                };
                let y = x.matmul(&w)?;
                match args.get(2) {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                }
            }
            "Identity" => x.clone(),
            "QuantizeLinear" => {
                let (low, high) = code_range(self.zero_point_type(node));
                let (scale, zero) = self.quantization(node, x, args)?;
                let codes = x.broadcast_div(&scale)?;
                let rounded: Vec<f32> = codes
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .into_iter()
                    .map(f32::round_ties_even)
                    .collect();
                Tensor::from_vec(rounded, x.shape(), &Device::Cpu)?
                    .broadcast_add(&zero)?
                    .clamp(low, high)?
            }
            "DequantizeLinear" => {
                let (scale, zero) = self.quantization(node, x, args)?;
                x.broadcast_sub(&zero)?.broadcast_mul(&scale)?
            }
            op => {
                return Err(unsupported(format!(
                    "operator {op} (`{}`) is not one rpg runs for int8 export: only convolutional models (conv, batch norm, ReLU, add, pooling, fully connected) are supported",
                    node.name
                )));
            }
        })
    }

    /// A quantization node's scale and zero point, shaped to broadcast
    /// against `x` (per tensor, or per slice along its `axis`).
    fn quantization(
        &self,
        node: &NodeProto,
        x: &Tensor,
        args: &[Tensor],
    ) -> Result<(Tensor, Tensor)> {
        let scale = args
            .get(1)
            .ok_or_else(|| CompressError::Corrupt(format!("`{}` has no scale", node.name)))?;
        let zero = match args.get(2) {
            Some(z) => z.clone(),
            None => scale.zeros_like()?,
        };
        if scale.elem_count() == 1 {
            return Ok((scale.flatten_all()?, zero.flatten_all()?));
        }
        let axis = node.int_attribute("axis", 1) as usize;
        let mut shape = vec![1; x.rank()];
        *shape.get_mut(axis).ok_or_else(|| {
            CompressError::Corrupt(format!(
                "`{}`: axis {axis} of a rank-{} value",
                node.name,
                x.rank()
            ))
        })? = scale.elem_count();
        Ok((scale.reshape(shape.clone())?, zero.reshape(shape)?))
    }
}
