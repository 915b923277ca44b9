//! `rpg reproduce`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use rpg_data::DatasetKind;
use rpg_train::reproduce::{ReproducePlan, reproduce};

use crate::cli::ReproduceArgs;
use crate::console::Console;

/// Runs the grid (reusing finished tasks) and writes the report.
pub fn run(args: &ReproduceArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(if args.quick {
            "runs/reproduce-quick"
        } else {
            "runs/reproduce"
        })
    });
    let (report, plots) = if args.quick {
        (out.join("results.md"), out.join("plots"))
    } else {
        (
            PathBuf::from("docs/results.md"),
            PathBuf::from("docs/results"),
        )
    };
    let report = args.report.clone().unwrap_or(report);
    let plots = args.plots.clone().unwrap_or(plots);
    let mut plan = if args.quick {
        ReproducePlan {
            command: "cargo xtask reproduce --quick".into(),
            ..ReproducePlan::quick(out, report, plots)
        }
    } else {
        ReproducePlan::full(out, report, plots)
    };
    for (kind, dir) in &mut plan.datasets {
        *dir = match kind {
            DatasetKind::Mnist => args.mnist_dir.clone(),
            DatasetKind::FashionMnist => args.fashion_mnist_dir.clone(),
            _ => None,
        };
    }
    let results = reproduce(&plan, &mut Console::new())
        .with_context(|| format!("reproducing into {}", plan.out.display()))?;
    println!(
        "{} runs, {} compressions: report in {}, plots in {}, raw results in {}",
        results.runs.len(),
        results.compressed.len(),
        plan.report.display(),
        plan.plots.display(),
        plan.out.join("results.json").display()
    );
    Ok(())
}
