//! The ONNX interpreter against Candle's models, batch norm folding, and the
//! int8 QDQ export against the f32 one.

mod common;

use candle_core::{DType, Device};
use common::{batch, config, logits, weights};
use rpg_compress::{OnnxRunner, fold_batch_norm_nodes, quantize_qdq};
use rpg_models::{ModelConfig, build_model, onnx_model};
use rpg_nn::ParamStore;
use rpg_onnx::proto::ModelProto;

fn exported(cfg: &ModelConfig) -> anyhow::Result<ModelProto> {
    let store = ParamStore::dense(&Device::Cpu, DType::F32, 0);
    let model = build_model(cfg, store.var_builder())?;
    store.assign(&weights(cfg)?)?;
    Ok(onnx_model(model.as_ref(), cfg, &[])?)
}

fn run(model: &ModelProto, cfg: &ModelConfig) -> anyhow::Result<Vec<f32>> {
    let graph = model.graph.as_ref().unwrap();
    let out = OnnxRunner::new(graph)?.run(&batch(cfg)?, |_, _| {})?;
    Ok(out.flatten_all()?.to_vec1()?)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn largest(a: &[f32]) -> f32 {
    a.iter().fold(1e-3f32, |m, v| m.max(v.abs()))
}

#[test]
fn the_interpreter_and_folding_reproduce_the_models_logits() -> anyhow::Result<()> {
    for (name, size, width) in [
        ("lenet5", 28, 1.0),
        ("resnet20", 8, 1.0),
        ("resnet18", 32, 0.125),
        ("mobilenet_v2", 32, 0.5),
    ] {
        let cfg = config(name, size, width);
        let want = logits(&cfg, &weights(&cfg)?)?;
        let mut model = exported(&cfg)?;
        let got = run(&model, &cfg)?;
        assert!(
            max_diff(&want, &got) <= 1e-4 * largest(&want),
            "{name}: {want:?} vs {got:?}"
        );
        let graph = model.graph.as_mut().unwrap();
        let folded = fold_batch_norm_nodes(graph)?;
        assert_eq!(folded > 0, name != "lenet5", "{name}");
        assert!(graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
        let got = run(&model, &cfg)?;
        assert!(
            max_diff(&want, &got) <= 1e-4 * largest(&want),
            "{name} folded: {want:?} vs {got:?}"
        );
    }
    Ok(())
}

#[test]
fn the_int8_export_stays_close_to_the_f32_one() -> anyhow::Result<()> {
    for (name, size, width) in [
        ("lenet5", 28, 1.0),
        ("resnet20", 8, 1.0),
        ("mobilenet_v2", 32, 0.5),
    ] {
        let cfg = config(name, size, width);
        let model = exported(&cfg)?;
        let want = run(&model, &cfg)?;
        let int8 = quantize_qdq(&model, &[batch(&cfg)?])?;
        let graph = int8.graph.as_ref().unwrap();
        let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
        let layers = graph
            .node
            .iter()
            .filter(|n| matches!(n.op_type.as_str(), "Conv" | "Gemm"))
            .count();
        // Every weight is int8 behind a DequantizeLinear; activations are
        // quantized once each.
        assert!(
            count("DequantizeLinear") > layers + count("QuantizeLinear"),
            "{name}"
        );
        assert!(
            graph
                .initializer
                .iter()
                .any(|t| t.data_type == rpg_onnx::proto::data_type::INT8)
        );
        let got = run(&int8, &cfg)?;
        assert_ne!(want, got, "{name}: quantization changes the logits");
        assert!(
            max_diff(&want, &got) <= 0.05 * largest(&want),
            "{name}: f32 {want:?} vs int8 {got:?}"
        );
    }
    Ok(())
}
