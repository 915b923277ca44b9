//! The `rpg` command line (`cargo xtask <task>` runs it in release mode).

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use rpg_kernels::KernelBackend;
use rpg_models::MODELS;
use rpg_train::cli::{Cli, Command, EvalArgs};
use rpg_train::compress::{check_fits, model_file, test_config};
use rpg_train::setup::{load_any, registry};
use rpg_train::trainer::{evaluate, load_test_data};

fn main() -> ExitCode {
    rpg_train::allocator::retain_freed_memory();
    rpg_train::threads::shorten_candle_worker_spin();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: clap's first line, and where to look for more.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see --help)");
            return ExitCode::from(2);
        }
    };
    // The whole command runs on this thread's kernel choice.
    let _kernels = cli.kernels.scope();
    let result = match cli.command {
        Command::Train(args) => args.resolve().and_then(|cfg| {
            rpg_train::train_until(cfg, args.resume.as_deref(), args.stop_after_epochs).map(|_| ())
        }),
        Command::Eval(args) => eval(&args),
        Command::Models => models(),
        Command::Compress(args) => rpg_train::compress::compress(&args),
        Command::Export(args) => rpg_train::compress::export(&args),
        Command::Bench(args) => bench(&args, cli.kernels),
        Command::Sweep(args) => sweep(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the first line of each cause (Candle appends a
            // backtrace on later lines when RUST_BACKTRACE is set).
            let causes: Vec<String> = e
                .chain()
                .map(|c| {
                    c.to_string()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .filter(|c| !c.is_empty())
                .collect();
            eprintln!("error: {}", causes.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn eval(args: &EvalArgs) -> Result<()> {
    let path = model_file(&args.checkpoint)?;
    let cfg = test_config(&path, &args.data)?;
    let device = rpg_nn::parse_device(&args.device).map_err(|e| anyhow!("{e}"))?;
    let built = load_any(&path, &device)?;
    let test = load_test_data(&cfg)?;
    check_fits(&path, &built, &test)?;
    let result = evaluate(&built, &test, args.batch_size, 2)?;
    println!(
        "{}: {} on {} ({} images): accuracy {:.4}, loss {:.4}{}",
        path.display(),
        built.config.name,
        cfg.dataset,
        result.samples,
        result.accuracy,
        result.loss,
        if test.num_classes > 10 {
            format!(", top-5 {:.4}", result.top5)
        } else {
            String::new()
        }
    );
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| path.with_file_name("eval.json"));
    let json = serde_json::json!({
        "checkpoint": path,
        "model": built.config.name,
        "dataset": cfg.dataset,
        "samples": result.samples,
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "test_top5": result.top5,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn models() -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let result = (|| -> std::io::Result<()> {
        writeln!(
            out,
            "{:<16} {:>12} {:>8} {:>10}  description",
            "model", "params", "shared", "input"
        )?;
        for entry in MODELS {
            let cfg = entry.config(if entry.image_size >= 224 { 1000 } else { 10 });
            let registry =
                registry(&cfg, &entry.sharing_policy()).map_err(std::io::Error::other)?;
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
            )?;
        }
        Ok(())
    })();
    match result {
        // A closed pipe (`rpg models | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn bench(args: &rpg_train::cli::BenchArgs, kernels: KernelBackend) -> Result<()> {
    use rpg_train::bench::{DEFAULT_CASES, run_all, run_case, table};
    if args.steps == 0 || args.batch_size == Some(0) {
        anyhow::bail!("--steps and --batch-size must be positive");
    }
    let cases: Vec<(String, usize)> = match &args.model {
        Some(m) => {
            rpg_models::model_entry(m).map_err(|e| anyhow!("{e}"))?;
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
        let device = rpg_nn::parse_device(&args.device).map_err(|e| anyhow!("{e}"))?;
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
    let results = run_all(&cases, args.steps, &args.device, &kernels)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", table(&results));
    }
    Ok(())
}

fn sweep(args: &rpg_train::cli::SweepArgs) -> Result<()> {
    use rpg_train::sweep::{DEFAULT_RATIOS, SweepPlan};
    let mut base = match &args.config {
        Some(file) => rpg_train::TrainConfig::from_toml_file(file)?,
        None => rpg_train::TrainConfig::default(),
    };
    if let Some(m) = &args.model {
        base.model = m.clone();
    }
    if let Some(d) = &args.dataset {
        base.dataset = d.clone();
    }
    if args.data_dir.is_some() {
        base.data_dir = args.data_dir.clone();
    }
    if let Some(e) = args.epochs {
        base.epochs = e;
    }
    if args.train_limit.is_some() {
        base.train_limit = args.train_limit;
    }
    if args.test_limit.is_some() {
        base.test_limit = args.test_limit;
    }
    base.validate()?;
    let ratios = if args.ratios.is_empty() {
        DEFAULT_RATIOS.to_vec()
    } else {
        args.ratios.clone()
    };
    if let Some(bad) = ratios.iter().find(|r| !(**r > 0.0 && **r <= 1.0)) {
        anyhow::bail!("--ratios: {bad} is outside (0, 1]");
    }
    let placements = if args.placements.is_empty() {
        vec!["paper".to_string()]
    } else {
        args.placements.clone()
    };
    for p in &placements {
        p.parse::<rpg_core::PlacementKind>()
            .map_err(|e| anyhow!("{e}"))?;
    }
    let plan = SweepPlan {
        out: args
            .out
            .clone()
            .unwrap_or_else(|| format!("runs/sweep-{}-{}", base.model, base.dataset).into()),
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
    let rows = rpg_train::sweep::sweep(&plan)?;
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
