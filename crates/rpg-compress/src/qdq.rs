//! int8 ONNX in the QDQ form ONNX Runtime turns into its integer kernels
//! (`QLinearConv`, `QLinearAdd`, `QGemm`): batch norms folded into their
//! convs; every conv and fully connected weight int8, symmetric, one scale
//! per output channel; biases int32 at the input scale times the weight
//! scale; every activation uint8 with a scale and zero point from its range
//! over calibration batches, placed after the ReLU that follows a conv or a
//! residual add (so the runtime fuses the ReLU away). Convs reading few
//! channels (a grey-scale stem) stay f32, where int8 would be slower.

use std::collections::{HashMap, HashSet};

use candle_core::Tensor;
use rpg_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_type, data_type,
};

use crate::artifact::CompressError;
use crate::onnx_run::{OnnxRunner, initializer_values};

type Result<T> = std::result::Result<T, CompressError>;

fn node(op: &str, inputs: &[&str], output: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: output.to_string(),
        op_type: op.to_string(),
        attribute: axis
            .map(|i| AttributeProto {
                name: "axis".into(),
                i,
                r#type: attribute_type::INT,
                ..Default::default()
            })
            .into_iter()
            .collect(),
    }
}

/// Folds every `BatchNormalization` that reads a conv's output (and is its
/// only reader) into the conv's weight and bias. Returns how many.
pub fn fold_batch_norm_nodes(graph: &mut GraphProto) -> Result<usize> {
    let readers = readers(graph);
    let mut init: HashMap<String, TensorProto> = graph
        .initializer
        .drain(..)
        .map(|t| (t.name.clone(), t))
        .collect();
    let values = |init: &HashMap<String, TensorProto>, name: &str| -> Result<Vec<f32>> {
        initializer_values(init.get(name).ok_or_else(|| {
            CompressError::Corrupt(format!("batch norm folding: no initializer `{name}`"))
        })?)
    };
    let producer: HashMap<String, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.clone(), i)))
        .collect();
    let mut removed = HashSet::new();
    // (conv, its bias, the batch norm's output it now writes)
    let mut rewired: Vec<(usize, String, String)> = Vec::new();
    for (b, bn) in graph.node.iter().enumerate() {
        if bn.op_type != "BatchNormalization" || bn.input.len() != 5 {
            continue;
        }
        let Some(&c) = producer.get(&bn.input[0]) else {
            continue;
        };
        let conv = &graph.node[c];
        if conv.op_type != "Conv" || readers.get(&bn.input[0]).map_or(0, Vec::len) != 1 {
            continue;
        }
        let eps = bn
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f);
        let (gamma, beta, mean, var) = (
            values(&init, &bn.input[1])?,
            values(&init, &bn.input[2])?,
            values(&init, &bn.input[3])?,
            values(&init, &bn.input[4])?,
        );
        let weight_name = conv.input[1].clone();
        let mut weight = values(&init, &weight_name)?;
        let channels = gamma.len();
        let per = weight.len() / channels.max(1);
        let factor: Vec<f32> = (0..channels)
            .map(|i| gamma[i] / (var[i] + eps).sqrt())
            .collect();
        for (i, row) in weight.chunks_mut(per).enumerate() {
            row.iter_mut().for_each(|w| *w *= factor[i]);
        }
        let old_bias = match conv.input.get(2) {
            Some(name) => values(&init, name)?,
            None => vec![0.0; channels],
        };
        let bias: Vec<f32> = (0..channels)
            .map(|i| beta[i] + (old_bias[i] - mean[i]) * factor[i])
            .collect();
        let dims = init[&weight_name].dims.clone();
        init.insert(
            weight_name.clone(),
            TensorProto::f32(&weight_name, &dims, &weight),
        );
        let bias_name = conv.input.get(2).cloned().unwrap_or_else(|| {
            format!(
                "{}.bias",
                weight_name.strip_suffix(".weight").unwrap_or(&weight_name)
            )
        });
        init.insert(
            bias_name.clone(),
            TensorProto::f32(&bias_name, &[channels as i64], &bias),
        );
        for name in &bn.input[1..] {
            init.remove(name);
        }
        rewired.push((c, bias_name, bn.output[0].clone()));
        removed.insert(b);
    }
    for (c, bias, output) in rewired {
        let conv = &mut graph.node[c];
        conv.input.truncate(2);
        conv.input.push(bias);
        conv.output[0] = output;
    }
    let folded = removed.len();
    let mut i = 0;
    graph.node.retain(|_| {
        i += 1;
        !removed.contains(&(i - 1))
    });
    let mut kept: Vec<TensorProto> = init.into_values().collect();
    kept.sort_by(|a, b| a.name.cmp(&b.name));
    graph.initializer = kept;
    Ok(folded)
}

/// Which nodes read each value.
fn readers(graph: &GraphProto) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in &n.input {
            map.entry(input.clone()).or_default().push(i);
        }
    }
    map
}

/// uint8 scale and zero point covering `[min, max]` (widened to hold 0).
fn activation_params(min: f32, max: f32) -> (f32, u8) {
    let (min, max) = (min.min(0.0), max.max(0.0));
    let scale = if max > min { (max - min) / 255.0 } else { 1.0 };
    let zero = (-min / scale).round_ties_even().clamp(0.0, 255.0) as u8;
    (scale, zero)
}

/// Convs reading fewer channels stay f32: ONNX Runtime's int8 kernels lose
/// to its f32 ones there (LeNet-5's first conv, one input channel: 2.5 ms
/// int8 against a whole f32 forward of 0.56 ms at batch 64).
const MIN_INT8_CONV_INPUTS: i64 = 8;

/// Whether `n` runs in int8: fully connected layers, and convs reading at
/// least [`MIN_INT8_CONV_INPUTS`] channels.
fn runs_in_int8(n: &NodeProto, init: &HashMap<String, TensorProto>) -> bool {
    match n.op_type.as_str() {
        "Gemm" => true,
        "Conv" => {
            let groups = n.int_attribute("group", 1);
            n.input
                .get(1)
                .and_then(|w| init.get(w))
                .and_then(|w| w.dims.get(1))
                .is_some_and(|per_group| per_group * groups >= MIN_INT8_CONV_INPUTS)
        }
        _ => false,
    }
}

/// Operators whose output keeps its input's quantization.
const KEEPS_QUANTIZATION: [&str; 2] = ["MaxPool", "Flatten"];

/// The int8 QDQ form of `model` (an f32 export of a convolutional model),
/// calibrated on `calibration` (batches in the model's input layout).
pub fn quantize_qdq(model: &ModelProto, calibration: &[Tensor]) -> Result<ModelProto> {
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| CompressError::Corrupt("the ONNX model has no graph".into()))?;
    fold_batch_norm_nodes(graph)?;
    if calibration.is_empty() {
        return Err(CompressError::Mismatch(
            "int8 calibration needs at least one batch".into(),
        ));
    }
    // Ranges of every value over the calibration batches.
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    {
        let runner = OnnxRunner::new(graph)?;
        for batch in calibration {
            let mut seen: Vec<(String, f32, f32)> = Vec::new();
            runner.run(batch, |name, t| {
                let (min, max) = (
                    t.flatten_all()
                        .and_then(|t| t.min(0))
                        .and_then(|t| t.to_scalar::<f32>()),
                    t.flatten_all()
                        .and_then(|t| t.max(0))
                        .and_then(|t| t.to_scalar::<f32>()),
                );
                if let (Ok(min), Ok(max)) = (min, max) {
                    seen.push((name.to_string(), min, max));
                }
            })?;
            for (name, min, max) in seen {
                let r = ranges.entry(name).or_insert((min, max));
                *r = (r.0.min(min), r.1.max(max));
            }
        }
    }
    let readers = readers(graph);
    let mut q = Quantizer {
        ranges,
        init: graph
            .initializer
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect(),
        ..Default::default()
    };
    // A value is quantized where a reader takes int8: an int8 conv or fully
    // connected layer, or a residual add. So a ReLU after a conv or an add
    // is followed, not preceded, by the quantization (the runtime fuses
    // it), and what feeds only f32 layers stays f32.
    let wants_int8 = |value: &str, init: &HashMap<String, TensorProto>| -> bool {
        readers.get(value).is_some_and(|r| {
            r.iter().any(|&i| {
                let n = &graph.node[i];
                n.op_type == "Add" || runs_in_int8(n, init)
            })
        })
    };
    for input in &graph.input {
        if wants_int8(&input.name, &q.init) {
            q.quantize_value(&input.name, None);
        }
    }
    for original in &graph.node {
        let mut n = original.clone();
        for input in n.input.iter_mut() {
            if let Some(r) = q.renamed.get(input.as_str()) {
                *input = r.clone();
            }
        }
        if runs_in_int8(original, &q.init) {
            let input_scale = q.params.get(&original.input[0]).map(|p| p.scale);
            q.quantize_weights(&mut n, input_scale)?;
        }
        let output = n.output[0].clone();
        let keeps = KEEPS_QUANTIZATION
            .contains(&n.op_type.as_str())
            .then(|| q.params.get(&original.input[0]).cloned())
            .flatten();
        q.nodes.push(n);
        if wants_int8(&output, &q.init) {
            q.quantize_value(&output, keeps);
        }
    }
    graph
        .initializer
        .retain(|t| !q.replaced_weights.contains(&t.name));
    graph.initializer.extend(q.new_init);
    q.weight_nodes.extend(q.nodes);
    graph.node = q.weight_nodes;
    model.doc_string = format!("{} (int8 QDQ, calibrated by rpg)", model.doc_string);
    Ok(model)
}

/// A value's quantization: its scale and the names of its scale and zero
/// point initializers.
#[derive(Debug, Clone)]
struct Params {
    scale: f32,
    scale_name: String,
    zero_name: String,
}

/// The rewrite in progress.
#[derive(Debug, Default)]
struct Quantizer {
    ranges: HashMap<String, (f32, f32)>,
    init: HashMap<String, TensorProto>,
    new_init: Vec<TensorProto>,
    /// The `DequantizeLinear`s of the weights, first in the graph.
    weight_nodes: Vec<NodeProto>,
    nodes: Vec<NodeProto>,
    params: HashMap<String, Params>,
    /// Value -> its dequantized replacement, for the nodes that read it.
    renamed: HashMap<String, String>,
    replaced_weights: HashSet<String>,
}

impl Quantizer {
    /// Appends `QuantizeLinear` and `DequantizeLinear` after `value`, with
    /// `params` or else ones from its calibrated range, and has its readers
    /// read the dequantized value.
    fn quantize_value(&mut self, value: &str, params: Option<Params>) {
        let p = params.unwrap_or_else(|| {
            let (min, max) = self.ranges.get(value).copied().unwrap_or((0.0, 1.0));
            let (scale, zero) = activation_params(min, max);
            let p = Params {
                scale,
                scale_name: format!("{value}_scale"),
                zero_name: format!("{value}_zero_point"),
            };
            self.new_init
                .push(TensorProto::f32(&p.scale_name, &[], &[scale]));
            self.new_init.push(TensorProto {
                dims: Vec::new(),
                data_type: data_type::UINT8,
                name: p.zero_name.clone(),
                raw_data: vec![zero],
            });
            p
        });
        let (q, dq) = (format!("{value}_quantized"), format!("{value}_dequantized"));
        let (s, z) = (p.scale_name.as_str(), p.zero_name.as_str());
        self.nodes
            .push(node("QuantizeLinear", &[value, s, z], &q, None));
        self.nodes
            .push(node("DequantizeLinear", &[&q, s, z], &dq, None));
        self.renamed.insert(value.to_string(), dq);
        self.params.insert(value.to_string(), p);
    }

    /// Stores `values` as `codes` of `dtype` with per-channel `scales` and
    /// zero points of 0; returns the dequantized value's name.
    fn dequantized(
        &mut self,
        like: &TensorProto,
        dtype: i32,
        codes: Vec<u8>,
        scales: &[f32],
    ) -> String {
        let name = &like.name;
        let (q, s, z, dq) = (
            format!("{name}_quantized"),
            format!("{name}_scale"),
            format!("{name}_zero_point"),
            format!("{name}_dequantized"),
        );
        let channels = scales.len();
        let zero_bytes = if dtype == data_type::INT32 { 4 } else { 1 };
        self.new_init.push(TensorProto {
            dims: like.dims.clone(),
            data_type: dtype,
            name: q.clone(),
            raw_data: codes,
        });
        self.new_init
            .push(TensorProto::f32(&s, &[channels as i64], scales));
        self.new_init.push(TensorProto {
            dims: vec![channels as i64],
            data_type: dtype,
            name: z.clone(),
            raw_data: vec![0; zero_bytes * channels],
        });
        self.weight_nodes
            .push(node("DequantizeLinear", &[&q, &s, &z], &dq, Some(0)));
        self.replaced_weights.insert(name.clone());
        dq
    }

    /// Replaces a conv's or fully connected layer's weight (and its bias,
    /// when its input is quantized) by int8 (int32) codes.
    fn quantize_weights(&mut self, n: &mut NodeProto, input_scale: Option<f32>) -> Result<()> {
        let Some(w) = n.input.get(1).and_then(|w| self.init.get(w)).cloned() else {
            return Ok(());
        };
        let values = initializer_values(&w)?;
        let channels = w.dims.first().copied().unwrap_or(1).max(1) as usize;
        let per = (values.len() / channels).max(1);
        let scales: Vec<f32> = values
            .chunks(per)
            .map(|row| {
                let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                if m > 0.0 { m / 127.0 } else { 1.0 }
            })
            .collect();
        let codes: Vec<u8> = values
            .chunks(per)
            .zip(&scales)
            .flat_map(|(row, &s)| {
                row.iter()
                    .map(move |v| (v / s).round_ties_even().clamp(-127.0, 127.0) as i8 as u8)
            })
            .collect();
        n.input[1] = self.dequantized(&w, data_type::INT8, codes, &scales);
        let bias = n.input.get(2).and_then(|b| self.init.get(b)).cloned();
        if let (Some(input_scale), Some(b)) = (input_scale, bias) {
            let bias_scales: Vec<f32> = scales.iter().map(|s| s * input_scale).collect();
            let codes: Vec<u8> = initializer_values(&b)?
                .iter()
                .zip(&bias_scales)
                .flat_map(|(v, s)| ((v / s).round_ties_even() as i32).to_le_bytes())
                .collect();
            n.input[2] = self.dequantized(&b, data_type::INT32, codes, &bias_scales);
        }
        Ok(())
    }
}
