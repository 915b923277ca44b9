//! `rpg export`.

use anyhow::Result;

use crate::cli::ExportArgs;

/// Writes the dense model as safetensors.
pub fn run(args: &ExportArgs) -> Result<()> {
    let export = rpg_train::compress::export(&args.checkpoint, &args.out, args.fold_bn)?;
    if args.fold_bn {
        println!(
            "folded {} BatchNorm layers into their convs",
            export.folded_batch_norms
        );
    }
    println!(
        "wrote {} ({} tensors of {}, {} bytes, f32, torchvision/timm names)",
        args.out.display(),
        export.tensors,
        export.model,
        export.bytes
    );
    Ok(())
}
