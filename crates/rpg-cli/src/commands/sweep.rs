//! `rpg sweep`.

use anyhow::{Result, bail};
use rpg_core::PlacementKind;
use rpg_train::TrainConfig;
use rpg_train::sweep::{DEFAULT_RATIOS, SweepPlan, sweep};

use crate::cli::SweepArgs;
use crate::console::Console;

/// Keys a sweep sets per run, with the sweep flag that chooses them.
const PER_RUN_KEYS: [(&str, &str); 5] = [
    ("dof", "--ratios"),
    ("ring", "--ratios"),
    ("placement", "--placements"),
    ("seed", "--seeds"),
    ("dense", "--dense-same-dof"),
];

/// Trains the sweep's runs (reusing finished ones) and prints the table.
pub fn run(args: &SweepArgs) -> Result<()> {
    let per_run = args.options.given_flags(&PER_RUN_KEYS.map(|(key, _)| key));
    if !per_run.is_empty() {
        let mut instead: Vec<&str> = PER_RUN_KEYS.iter().map(|(_, f)| *f).collect();
        instead.dedup();
        bail!(
            "{} cannot be given to sweep: it chooses them per run (use {})",
            per_run.join(", "),
            instead.join(", ")
        );
    }
    let base = match &args.config {
        Some(file) => TrainConfig::from_toml_file(file)?,
        None => TrainConfig::default(),
    }
    .merged(&args.options)?;
    base.validate()?;
    let ratios = if args.ratios.is_empty() {
        DEFAULT_RATIOS.to_vec()
    } else {
        args.ratios.clone()
    };
    if let Some(bad) = ratios.iter().find(|r| !(**r > 0.0 && **r <= 1.0)) {
        bail!("--ratios: {bad} is outside (0, 1]");
    }
    let placements = if args.placements.is_empty() {
        vec![PlacementKind::Paper]
    } else {
        args.placements.clone()
    };
    let plan = SweepPlan {
        out: args
            .out
            .clone()
            .unwrap_or_else(|| format!("runs/sweep-{}-{}", base.model, base.data.dataset).into()),
        base,
        ratios,
        placements,
        seeds: if args.seeds.is_empty() {
            vec![0]
        } else {
            args.seeds.clone()
        },
        dense_same_dof: args.dense_same_dof,
    };
    let rows = sweep(&plan, &mut Console::new())?;
    println!(
        "{:<16} {:>9} {:>10} {:>5} {:>9}",
        "placement", "ratio", "total DoF", "seed", "accuracy"
    );
    for r in &rows {
        println!(
            "{:<16} {:>9} {:>10} {:>5} {:>8.2}%",
            r.placement,
            r.dof_ratio,
            r.total_dof,
            r.seed,
            100.0 * r.test_accuracy
        );
    }
    println!(
        "wrote {}/sweep.csv, fit.json, sweep.png",
        plan.out.display()
    );
    Ok(())
}
