//! `rpg predict`.

use std::io::Write;

use anyhow::Result;
use rpg_train::checkpoint::model_file;
use rpg_train::predict::predict;
use rpg_train::setup::load_any;

use super::closed_pipe;
use crate::cli::PredictArgs;

/// Prints the top classes of every input.
pub fn run(args: &PredictArgs) -> Result<()> {
    let path = model_file(&args.checkpoint)?;
    let device = rpg_nn::parse_device(&args.device)?;
    let built = load_any(&path, &device)?;
    let predictions = predict(&built, &args.inputs, args.top_k)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for p in &predictions {
        let top: Vec<String> = p
            .top
            .iter()
            .map(|s| {
                let label = s.name.clone().unwrap_or_else(|| s.class.to_string());
                format!("{label} {:.1}%", 100.0 * s.probability)
            })
            .collect();
        writeln!(out, "{}: {}", p.input, top.join(", ")).or_else(closed_pipe)?;
    }
    Ok(())
}
