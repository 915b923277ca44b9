//! `rpg models`.

use std::io::Write;

use anyhow::Result;
use rpg_models::MODELS;
use rpg_train::setup::registry;

use super::closed_pipe;
use crate::cli::ModelsArgs;

/// MB (10^6 bytes) of `floats` f32 values.
fn megabytes(floats: u64) -> f64 {
    floats as f64 * 4.0 / 1e6
}

/// Per model: the f32 values one data-parallel step all-reduces, dense DDP
/// against RPG at 10% and 1% DoF (ring lengths as training resolves them).
fn exchange() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<16} {:>14} {:>14} {:>8} {:>14} {:>8}",
        "model", "dense DDP MB", "RPG 10% MB", "x less", "RPG 1% MB", "x less"
    )
    .or_else(closed_pipe)?;
    for entry in MODELS {
        let cfg = entry.config(if entry.image_size >= 224 { 1000 } else { 10 });
        let registry = registry(&cfg, &entry.sharing_policy())?;
        let dense = registry.dense_params();
        let rpg = |ratio: f64| {
            rpg_core::ring_lengths_for_ratio(&registry, ratio).map(|rings| {
                rings.iter().map(|&n| n as u64).sum::<u64>() + registry.unshared_params()
            })
        };
        let cell = |ratio: f64| match rpg(ratio) {
            Ok(floats) => format!(
                "{:>14.3} {:>7.1}x",
                megabytes(floats),
                dense as f64 / floats as f64
            ),
            Err(_) => format!("{:>14} {:>8}", "infeasible", "-"),
        };
        writeln!(
            out,
            "{:<16} {:>14.3} {} {}",
            entry.name,
            megabytes(dense),
            cell(0.1),
            cell(0.01)
        )
        .or_else(closed_pipe)?;
    }
    Ok(())
}

/// Prints the zoo: parameters, default shared fraction, input (or, with
/// `--exchange`, what a data-parallel step all-reduces).
pub fn run(args: &ModelsArgs) -> Result<()> {
    if args.exchange {
        return exchange();
    }
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
