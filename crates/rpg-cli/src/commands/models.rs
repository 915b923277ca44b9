//! `rpg models`.

use std::io::Write;

use anyhow::Result;
use rpg_models::MODELS;
use rpg_train::setup::registry;

use super::closed_pipe;

/// Prints the zoo: parameters, default shared fraction, input.
pub fn run() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:>12} {:>8} {:>10}  description",
        "model", "params", "shared", "input"
    )
    .or_else(closed_pipe)?;
    for entry in MODELS {
        let cfg = entry.config(if entry.image_size >= 224 { 1000 } else { 10 });
        let registry = registry(&cfg, &entry.sharing_policy())?;
        let dense = registry.dense_params();
        let shared = registry.shared_params() as f64 / dense as f64;
        writeln!(
            out,
            "{:<16} {:>12} {:>7.1}% {:>10}  {} ({} classes)",
            entry.name,
            dense,
            100.0 * shared,
            format!(
                "{}x{}x{}",
                entry.in_channels, entry.image_size, entry.image_size
            ),
            entry.summary,
            cfg.num_classes
        )
        .or_else(closed_pipe)?;
    }
    Ok(())
}
