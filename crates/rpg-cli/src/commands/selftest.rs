//! `rpg selftest`.

use anyhow::{Result, bail};
use rpg_kernels::Precision;
use rpg_models::MODELS;
use rpg_train::selftest::selftest;

use crate::cli::SelftestArgs;

/// Runs the comparison and prints a row per model and mode; fails when any
/// row is outside the tolerance.
pub fn run(args: &SelftestArgs) -> Result<()> {
    let tolerance = args.tolerance.unwrap_or(match args.precision {
        Precision::F32 => 1e-3,
        Precision::Tf32 => 2e-2,
    });
    if tolerance.is_nan() || tolerance <= 0.0 {
        bail!("--tolerance must be positive, got {tolerance}");
    }
    let device = rpg_nn::parse_device(&args.device)?;
    rpg_kernels::set_precision(args.precision);
    let models: Vec<&str> = if args.model.is_empty() {
        MODELS.iter().map(|m| m.name).collect()
    } else {
        args.model.iter().map(String::as_str).collect()
    };
    let rows = selftest(&device, &models, tolerance, args.precision)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<16} {:<6} {:>12}  {:<18} {:>12}  result",
            "model", "mode", "worst diff", "in", "own noise"
        );
        for r in &rows {
            println!(
                "{:<16} {:<6} {:>12.3e}  {:<18} {:>12.3e}  {}",
                r.model,
                r.mode,
                r.worst,
                r.worst_at,
                r.noise,
                if r.passed { "ok" } else { "FAILED" }
            );
        }
    }
    let failed = rows.iter().filter(|r| !r.passed).count();
    if failed > 0 {
        bail!(
            "{failed} of {} cases differ from the CPU reference by more than {} (or ten times the case's own noise) on {}",
            rows.len(),
            tolerance,
            args.device
        );
    }
    Ok(())
}
