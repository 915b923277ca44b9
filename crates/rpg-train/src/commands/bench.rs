//! `rpg bench`.

use anyhow::{Result, bail};
use rpg_kernels::KernelBackend;
use rpg_train::bench::{DEFAULT_CASES, run_all, run_case, table};

use crate::cli::BenchArgs;

/// Runs the cases (each in a child process) and prints the table or JSON;
/// with `--one`, runs one case here and prints it as JSON.
pub fn run(args: &BenchArgs, kernels: KernelBackend) -> Result<()> {
    if args.steps == 0 || args.batch_size == Some(0) {
        bail!("--steps and --batch-size must be positive");
    }
    let cases: Vec<(String, usize)> = match &args.model {
        Some(m) => {
            rpg_models::model_entry(m)?;
            let default = DEFAULT_CASES
                .iter()
                .find(|(n, _)| n == m)
                .map_or(32, |(_, b)| *b);
            vec![(m.clone(), args.batch_size.unwrap_or(default))]
        }
        None => DEFAULT_CASES
            .iter()
            .map(|(m, b)| (m.to_string(), args.batch_size.unwrap_or(*b)))
            .collect(),
    };
    if let Some(mode) = &args.one {
        let device = rpg_nn::parse_device(&args.device)?;
        rpg_kernels::set_precision(args.precision);
        let (model, batch) = &cases[0];
        let result = run_case(model, mode, *batch, args.steps, &device)?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    let kernels = if args.compare_kernels {
        KernelBackend::ALL.to_vec()
    } else {
        vec![kernels]
    };
    let results = run_all(&cases, args.steps, &args.device, args.precision, &kernels)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", table(&results));
    }
    Ok(())
}
