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
    println!(
        "  report: {}",
        args.out.join("compress_report.json").display()
    );
    Ok(())
}
