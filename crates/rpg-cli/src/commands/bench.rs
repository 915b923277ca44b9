//! `rpg bench`.

use std::process::Command;

use anyhow::{Context, Result, bail};
use rpg_kernels::{KernelBackend, Precision};
use rpg_train::bench::{BenchResult, DEFAULT_CASES, paired_step_ratio, run_case, table};

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
    if args.pair {
        let device = rpg_nn::parse_device(&args.device)?;
        rpg_kernels::set_precision(args.precision);
        let (model, batch) = &cases[0];
        let ratio = paired_step_ratio(model, *batch, args.steps, &device)?;
        println!("{}", serde_json::json!({ "paired_step_ratio": ratio }));
        return Ok(());
    }
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
    let (results, failures) = run_all(&cases, args.steps, &args.device, args.precision, &kernels)?;
    // The rows that ran are printed even when others failed.
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", table(&results));
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} benchmark cases failed:\n{}",
            failures.len(),
            failures.len() + results.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// Runs the cases, each mode in two child processes of this binary
/// (`rpg bench --one ...`, so that each case's peak memory is its own) in
/// the order dense, RPG, RPG, dense, merged by [`BenchResult::merged`],
/// then both modes in one child with their steps interleaved (`rpg bench
/// --pair`, the RPG row's `paired_step_ratio`), once per kernel set in
/// `kernels`: the results, and a line per case that failed.
fn run_all(
    models: &[(String, usize)],
    steps: usize,
    device: &str,
    precision: Precision,
    kernels: &[KernelBackend],
) -> Result<(Vec<BenchResult>, Vec<String>)> {
    let exe = std::env::current_exe().context("finding the rpg binary to run bench cases")?;
    // `rpg bench <what> --model ...` in a child process: its output, or
    // why it failed (the outer error: the child could not be run).
    let child = |what: &[&str], model: &str, batch: usize, kernel: &str| {
        let output = Command::new(&exe)
            .arg("bench")
            .args(what)
            .args(["--model", model, "--batch-size", &batch.to_string()])
            .args(["--steps", &steps.to_string(), "--device", device])
            .args(["--kernels", kernel, "--precision", precision.name()])
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !output.status.success() {
            let why = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Ok::<_, anyhow::Error>(Err(why));
        }
        Ok(Ok(String::from_utf8_lossy(&output.stdout)
            .trim()
            .to_string()))
    };
    // One case in a child process: its result, or why it failed.
    let run_one = |model: &str, batch: usize, mode: &str, kernel: &str| {
        Ok::<_, anyhow::Error>(match child(&["--one", mode], model, batch, kernel)? {
            Ok(line) => Ok(serde_json::from_str::<BenchResult>(&line)
                .with_context(|| format!("benchmark case {model} {mode}: bad output {line}"))?),
            Err(why) => Err(why),
        })
    };
    // Dense and RPG interleaved in one child: RPG's step over dense's.
    let run_pair = |model: &str, batch: usize, kernel: &str| {
        Ok::<_, anyhow::Error>(match child(&["--pair"], model, batch, kernel)? {
            Ok(line) => Ok(serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["paired_step_ratio"].as_f64())
                .with_context(|| format!("benchmark pair {model}: bad output {line}"))?),
            Err(why) => Err(why),
        })
    };
    let (mut results, mut failures) = (Vec::new(), Vec::new());
    for (model, batch) in models {
        for kernel in kernels.iter().map(|k| k.name()) {
            let mut measured: [Vec<BenchResult>; 2] = Default::default();
            let mut failed = [false; 2];
            for mode_index in [0, 1, 1, 0] {
                let mode = MODES[mode_index];
                if failed[mode_index] {
                    continue;
                }
                let case = format!("benchmark case {model} {mode}");
                match run_one(model, *batch, mode, kernel)? {
                    Ok(result) => {
                        eprintln!(
                            "{model:>16} {mode:>5} b{batch} {kernel}: {:.1} train img/s, {:.1} infer img/s",
                            result.train_images_per_second, result.infer_images_per_second
                        );
                        measured[mode_index].push(result);
                    }
                    Err(why) => {
                        eprintln!("{case} ({kernel}) failed: {why}");
                        failures.push(format!("{case} ({kernel}): {why}"));
                        failed[mode_index] = true;
                    }
                }
            }
            let mut merged = Vec::new();
            for (mode_index, runs) in measured.iter().enumerate() {
                if failed[mode_index] || runs.is_empty() {
                    continue;
                }
                let one = BenchResult::merged(runs).with_context(|| {
                    format!(
                        "benchmark case {model} {}: the processes disagree on the case",
                        MODES[mode_index]
                    )
                })?;
                merged.push(one);
            }
            if merged.len() == 2 {
                match run_pair(model, *batch, kernel)? {
                    Ok(ratio) => merged[1].paired_step_ratio = Some(ratio),
                    Err(why) => {
                        eprintln!("benchmark pair {model} ({kernel}) failed: {why}");
                        failures.push(format!("benchmark pair {model} ({kernel}): {why}"));
                    }
                }
            }
            results.extend(merged);
        }
    }
    Ok((results, failures))
}

/// The modes each model is measured in, in the order their rows appear.
const MODES: [&str; 2] = ["dense", "rpg"];
