//! `rpg compress`.

use anyhow::Result;
use rpg_train::compress::{CompressPlan, compress};

use crate::cli::CompressArgs;
use crate::console::Console;

/// The library's plan for the flags.
fn plan(args: &CompressArgs) -> CompressPlan {
    CompressPlan {
        checkpoint: args.checkpoint.clone(),
        out: args.out.clone(),
        config: args.config(),
        data: args.data.to_test_data(),
    }
}

/// Compresses and prints the report.
pub fn run(args: &CompressArgs) -> Result<()> {
    let report = compress(&plan(args), &mut Console::new())?;
    println!(
        "{} -> {}",
        report.checkpoint.display(),
        report.artifact.display()
    );
    let line = |label: &str, value: String| println!("  {label:<28} {value:>12}");
    line("dense f32 file (bytes)", report.dense_f32_bytes.to_string());
    line("artifact (bytes)", report.artifact_bytes.to_string());
    line("size ratio", format!("{:.1}x", report.size_ratio));
    line(
        "accuracy before",
        format!("{:.2}%", 100.0 * report.accuracy_before),
    );
    for s in &report.steps {
        line(
            &format!("after {}", s.step),
            format!("{:.2}%", 100.0 * s.accuracy),
        );
    }
    line(
        "accuracy of the artifact",
        format!("{:.2}%", 100.0 * report.accuracy_after),
    );
    println!(
        "  {:<28} {:>5.2} / {:.2} ms",
        "latency b1 / b64 before", report.latency_before_ms[0], report.latency_before_ms[1]
    );
    println!(
        "  {:<28} {:>5.2} / {:.2} ms",
        "latency b1 / b64 after", report.latency_after_ms[0], report.latency_after_ms[1]
    );
    if let Some(onnx) = &report.onnx {
        line(
            "ONNX f32 (bytes, accuracy)",
            format!("{}, {:.2}%", onnx.f32_bytes, 100.0 * onnx.f32_accuracy),
        );
        line(
            "ONNX int8 QDQ",
            format!("{}, {:.2}%", onnx.int8_bytes, 100.0 * onnx.int8_accuracy),
        );
        println!(
            "  {:<28} {} and {} ({} calibration images)",
            "ONNX files",
            onnx.f32_file.display(),
            onnx.int8_file.display(),
            onnx.calibration_images
        );
    }
    println!(
        "  report: {}",
        args.out.join("compress_report.json").display()
    );
    Ok(())
}
