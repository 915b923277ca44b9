//! `rpg-fuzz`: mutation fuzzing of every file reader on stable Rust.
//!
//! Each execution takes one reader's valid input, mutates it (bit flips,
//! interesting values, huge length fields, truncation, insertion), and
//! reads it. A reader may refuse its input; it may not panic, and no single
//! allocation may exceed 1 GiB (a header claiming 2^60 bytes must not
//! allocate them). Panicking inputs are written to `--crashes` for
//! reproduction, and the run fails.
//!
//! `cargo xtask fuzz` (1 million executions); `cargo xtask fuzz
//! --iterations 20000` is the CI smoke.

mod alloc;
mod mutate;
mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

#[global_allocator]
static ALLOCATOR: alloc::Capped = alloc::Capped;

/// The message of the last panic, captured instead of printed.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

#[derive(Debug)]
struct Args {
    iterations: u64,
    seed: u64,
    crashes: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        iterations: 1_000_000,
        seed: 0,
        crashes: PathBuf::from("target/fuzz-crashes"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--iterations" => args.iterations = value()?.parse().context("--iterations")?,
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            "--crashes" => args.crashes = value()?.into(),
            "-h" | "--help" => {
                println!(
                    "rpg-fuzz [--iterations N (1000000)] [--seed S (0)] [--crashes DIR (target/fuzz-crashes)]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument `{other}` (see --help)"),
        }
    }
    if args.iterations == 0 {
        bail!("--iterations must be positive");
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(0) => ExitCode::SUCCESS,
        Ok(panics) => {
            eprintln!("error: {panics} inputs made a reader panic");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the fuzzer; returns how many inputs panicked.
fn run() -> Result<u64> {
    let args = parse_args()?;
    let scratch = targets::Scratch::new()?;
    let targets = targets::all(&scratch.0)?;
    std::panic::set_hook(Box::new(|info| {
        *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let mut rng = mutate::Rng::new(args.seed);
    let mut runs = vec![0u64; targets.len()];
    let mut panics = Vec::new();
    let started = Instant::now();
    let path = Path::new("fuzzed-input");
    for i in 0..args.iterations {
        let t = (i % targets.len() as u64) as usize;
        let input = mutate::mutate(&targets[t].seed, &mut rng);
        runs[t] += 1;
        if catch_unwind(AssertUnwindSafe(|| (targets[t].read)(path, &input))).is_err() {
            let message = LAST_PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            panics.push((targets[t].name, i, message, input));
        }
        if (i + 1) % (args.iterations / 10).max(1) == 0 {
            eprintln!(
                "{:>3}% {} executions, {} panics, {:.0}/s",
                (i + 1) * 100 / args.iterations,
                i + 1,
                panics.len(),
                (i + 1) as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let _ = std::panic::take_hook();
    for (target, runs) in targets.iter().zip(&runs) {
        println!("{:<20} {runs:>9} executions", target.name);
    }
    println!(
        "{} executions in {:.0} s (seed {}), {} panics",
        args.iterations,
        started.elapsed().as_secs_f64(),
        args.seed,
        panics.len()
    );
    if !panics.is_empty() {
        std::fs::create_dir_all(&args.crashes)
            .with_context(|| format!("creating {}", args.crashes.display()))?;
        for (target, i, message, input) in &panics {
            let file = args.crashes.join(format!("{target}-{i}.bin"));
            std::fs::write(&file, input).with_context(|| format!("writing {}", file.display()))?;
            println!("panic in {target} (input {}): {message}", file.display());
        }
    }
    Ok(panics.len() as u64)
}
