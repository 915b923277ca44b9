//! `rpg export`.

use anyhow::{Result, bail};
use rpg_train::export::{ExportFormat, export};

use crate::cli::{ExportArgs, ExportFileFormat};

/// The format asked for, else the one `--out`'s extension names.
fn format(args: &ExportArgs) -> Result<ExportFormat> {
    let onnx_name = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let file_format = args.format.unwrap_or(if onnx_name {
        ExportFileFormat::Onnx
    } else {
        ExportFileFormat::Safetensors
    });
    Ok(match (file_format, args.fold_bn) {
        (ExportFileFormat::Safetensors, false) => ExportFormat::Safetensors,
        (ExportFileFormat::Safetensors, true) => ExportFormat::SafetensorsFoldedBn,
        (ExportFileFormat::Onnx, false) => ExportFormat::Onnx,
        (ExportFileFormat::Onnx, true) => bail!(
            "--fold-bn applies to safetensors exports; ONNX runtimes fold BatchNorm themselves: drop --fold-bn, or export with --format safetensors"
        ),
    })
}

/// Writes the dense model as safetensors or ONNX.
pub fn run(args: &ExportArgs) -> Result<()> {
    let format = format(args)?;
    let export = export(&args.checkpoint, &args.out, format)?;
    let onnx = format!(
        "ONNX opset {}, input `{}` [batch, C, H, W], output `{}`",
        rpg_onnx::OPSET,
        rpg_models::ONNX_INPUT,
        rpg_models::ONNX_OUTPUT
    );
    let what = match format {
        ExportFormat::Safetensors => "f32 safetensors, torchvision/timm names",
        ExportFormat::SafetensorsFoldedBn => {
            println!(
                "folded {} BatchNorm layers into their convs",
                export.folded_batch_norms
            );
            "f32 safetensors, BatchNorms folded"
        }
        ExportFormat::Onnx => &onnx,
    };
    println!(
        "wrote {} ({} tensors of {}, {} bytes, {what})",
        args.out.display(),
        export.tensors,
        export.model,
        export.bytes
    );
    Ok(())
}
