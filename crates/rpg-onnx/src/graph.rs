//! A graph under construction: initializers, nodes, one input and output.

use std::collections::HashSet;

use prost::Message;

use crate::error::OnnxError;
use crate::proto::{
    AttributeProto, DimensionProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto, attribute_type, data_type,
};

/// The `ai.onnx` operator set every exported graph declares. 17 keeps
/// `ReduceMean`'s axes an attribute, which every runtime we test reads.
pub const OPSET: i64 = 17;

/// The IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 8;

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A size given at run time, named (for example `batch`).
    Dynamic(&'static str),
}

/// A node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// An int64.
    Int(&'static str, i64),
    /// A list of int64.
    Ints(&'static str, Vec<i64>),
    /// A float.
    Float(&'static str, f32),
}

impl Attr {
    /// A list attribute from sizes.
    pub fn sizes(name: &'static str, values: &[usize]) -> Self {
        Attr::Ints(name, values.iter().map(|&v| v as i64).collect())
    }

    fn proto(self) -> AttributeProto {
        match self {
            Attr::Int(name, i) => AttributeProto {
                name: name.to_string(),
                i,
                r#type: attribute_type::INT,
                ..Default::default()
            },
            Attr::Ints(name, ints) => AttributeProto {
                name: name.to_string(),
                ints,
                r#type: attribute_type::INTS,
                ..Default::default()
            },
            Attr::Float(name, f) => AttributeProto {
                name: name.to_string(),
                f,
                r#type: attribute_type::FLOAT,
                ..Default::default()
            },
        }
    }
}

/// An ONNX graph being built. Values are named by strings: initializer
/// names, the input's name, and generated `op_N` names for node outputs.
#[derive(Debug, Default)]
pub struct Graph {
    name: String,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    names: HashSet<String>,
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => DimensionProto {
                dim_value: Some(*n as i64),
                dim_param: None,
            },
            Dim::Dynamic(p) => DimensionProto {
                dim_value: None,
                dim_param: Some(p.to_string()),
            },
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

impl Graph {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn claim(&mut self, name: &str) -> Result<String, OnnxError> {
        if self.names.insert(name.to_string()) {
            Ok(name.to_string())
        } else {
            Err(OnnxError::DuplicateName(name.to_string()))
        }
    }

    /// A fresh value name starting with `hint`.
    fn fresh(&mut self, hint: &str) -> String {
        let mut n = self.names.len();
        loop {
            let name = format!("{hint}_{n}");
            if self.names.insert(name.clone()) {
                return name;
            }
            n += 1;
        }
    }

    /// Declares an f32 graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> Result<String, OnnxError> {
        let name = self.claim(name)?;
        self.inputs.push(value_info(&name, dims));
        Ok(name)
    }

    /// Declares `value` an f32 graph output (renamed to `name` by an
    /// `Identity` node, so outputs have stable names).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) -> Result<(), OnnxError> {
        let name = self.claim(name)?;
        self.nodes.push(NodeProto {
            input: vec![value.to_string()],
            output: vec![name.clone()],
            name: name.clone(),
            op_type: "Identity".to_string(),
            attribute: Vec::new(),
        });
        self.outputs.push(value_info(&name, dims));
        Ok(())
    }

    /// An f32 constant named `name` (a weight, under its parameter name).
    pub fn initializer(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[f32],
    ) -> Result<String, OnnxError> {
        let expected: usize = dims.iter().product();
        if expected != data.len() {
            return Err(OnnxError::DataLength {
                name: name.to_string(),
                expected,
                got: data.len(),
            });
        }
        let name = self.claim(name)?;
        let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
        self.initializers.push(TensorProto::f32(&name, &dims, data));
        Ok(name)
    }

    /// An f32 scalar constant (shape `[]`), for arithmetic with broadcasting.
    pub fn scalar(&mut self, hint: &str, value: f32) -> String {
        let name = self.fresh(hint);
        self.initializers
            .push(TensorProto::f32(&name, &[], &[value]));
        name
    }

    /// A 1-D int64 constant (shapes, axes, pads).
    pub fn ints(&mut self, hint: &str, values: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// An int64 scalar constant (shape `[]`), such as a `Gather` index.
    pub fn int_scalar(&mut self, hint: &str, value: i64) -> String {
        let name = self.fresh(hint);
        self.initializers.push(TensorProto {
            dims: Vec::new(),
            data_type: data_type::INT64,
            name: name.clone(),
            raw_data: value.to_le_bytes().to_vec(),
        });
        name
    }

    /// Appends an `op` node with one output and returns that output's name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<Attr>) -> String {
        let output = self.fresh(&op.to_ascii_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.to_string(),
            attribute: attrs.into_iter().map(Attr::proto).collect(),
        });
        output
    }

    /// Nodes so far.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The finished model: this graph, [`OPSET`], producer and metadata.
    pub fn into_model(
        self,
        producer: (&str, &str),
        doc: &str,
        metadata: &[(String, String)],
    ) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: producer.0.to_string(),
            producer_version: producer.1.to_string(),
            doc_string: doc.to_string(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: self.name,
                initializer: self.initializers,
                doc_string: String::new(),
                input: self.inputs,
                output: self.outputs,
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        }
    }
}

/// The serialised model (the bytes of a `.onnx` file).
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initializer_checks_length_and_names_are_unique() {
        let mut g = Graph::new("t");
        assert!(matches!(
            g.initializer("w", &[2, 3], &[0.0; 5]),
            Err(OnnxError::DataLength {
                expected: 6,
                got: 5,
                ..
            })
        ));
        g.initializer("w", &[2], &[1.0, 2.0]).unwrap();
        assert!(matches!(
            g.initializer("w", &[1], &[1.0]),
            Err(OnnxError::DuplicateName(n)) if n == "w"
        ));
    }

    #[test]
    fn model_round_trips_through_prost() {
        let mut g = Graph::new("t");
        let x = g
            .input("x", &[Dim::Dynamic("batch"), Dim::Fixed(4)])
            .unwrap();
        let w = g.initializer("w", &[3, 4], &[0.5; 12]).unwrap();
        let y = g.node("Gemm", &[&x, &w], vec![Attr::Int("transB", 1)]);
        g.output(&y, "logits", &[Dim::Dynamic("batch"), Dim::Fixed(3)])
            .unwrap();
        let model = g.into_model(("rpg", "0"), "", &[("k".into(), "v".into())]);
        let bytes = encode(&model);
        let back = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, model);
        let graph = back.graph.unwrap();
        assert_eq!(graph.node[0].op_type, "Gemm");
        assert_eq!(graph.output[0].name, "logits");
        assert_eq!(graph.initializer[0].raw_data.len(), 48);
        assert_eq!(back.opset_import[0].version, OPSET);
    }
}
