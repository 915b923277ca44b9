//! `cargo xtask`: the project's task runner.
//!
//! Deliberately thin: it knows no Candle and no rpg crate. Model work
//! (`train`, `eval`, `models`, `compress`, `export`, `bench`, `sweep`) is forwarded to a release build of the `rpg` binary of `rpg-train`, so heavy
//! code always runs optimised and with the backend the user asked for:
//!
//! ```text
//! cargo xtask train --epochs 3 --features cuda
//!   => cargo run --release -p rpg-train --bin rpg --features cuda -- train --epochs 3
//! ```

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask: tasks of the rpg workspace

USAGE:
    cargo xtask <TASK> [ARGS...] [--features F1,F2]

TASKS forwarded to `rpg` (a release build of crates/rpg-train; `cargo xtask <TASK> --help` explains each):
    train       train an RPG (or dense) model; with no flags: LeNet-5 at 10% DoF on the bundled MNIST
    eval        evaluate a checkpoint on a dataset
    models      list the model zoo with parameter counts and default shared fraction
    compress    prune and quantize a trained model into a small artifact, with a report
    export      write the dense model as safetensors with torchvision/timm names
    bench       training/inference images/s dense vs RPG, generation share, peak memory (--json)
    sweep       train one architecture at a list of DoF ratios: sweep.csv, fit.json, sweep.png

TASKS run here:
    bench-core  criterion benchmark of rpg-core's generate/accumulate kernels (ResNet-18 scale)
    ci          what CI runs: fmt check, clippy -D warnings, the test suite

OPTIONS:
    --features F    cargo features for the rpg build (cuda, cudnn, metal, mkl, accelerate)
    -h, --help      this text
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode> {
    let Some((task, rest)) = args.split_first() else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let (features, rest) = split_features(rest)?;
    match task.as_str() {
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        "train" | "eval" | "models" | "compress" | "export" | "bench" | "sweep" => {
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--quiet",
                "--release",
                "-p",
                "rpg-train",
                "--bin",
                "rpg",
            ]);
            if let Some(features) = &features {
                cmd.args(["--features", features]);
            }
            cmd.arg("--").arg(task).args(&rest);
            status(cmd)
        }
        "bench-core" => {
            let mut cmd = cargo();
            cmd.args(["bench", "-p", "rpg-core", "--bench", "kernels", "--"])
                .args(&rest);
            status(cmd)
        }
        "ci" => {
            let script = project_root().join(".ci/run");
            status(Command::new(script))
        }
        other => bail!("unknown task `{other}`: run `cargo xtask --help` for the list"),
    }
}

/// Pulls `--features X` / `--features=X` out of the arguments.
fn split_features(args: &[String]) -> Result<(Option<String>, Vec<String>)> {
    let mut features: Vec<String> = Vec::new();
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--features" {
            let value = iter
                .next()
                .context("--features needs a value, e.g. --features cuda")?;
            features.push(value.clone());
        } else if let Some(value) = arg.strip_prefix("--features=") {
            features.push(value.to_string());
        } else {
            rest.push(arg.clone());
        }
    }
    let features = (!features.is_empty()).then(|| features.join(","));
    Ok((features, rest))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(project_root());
    cmd
}

fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

fn status(mut cmd: Command) -> Result<ExitCode> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to start {:?}", cmd.get_program()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(code.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn features_are_pulled_out_in_both_spellings() {
        let (features, rest) = split_features(&strings(&[
            "--epochs",
            "2",
            "--features",
            "cuda",
            "--features=mkl",
        ]))
        .unwrap();
        assert_eq!(features.as_deref(), Some("cuda,mkl"));
        assert_eq!(rest, strings(&["--epochs", "2"]));
    }

    #[test]
    fn dangling_features_flag_is_an_error() {
        assert!(split_features(&strings(&["--features"])).is_err());
    }

    #[test]
    fn unknown_task_is_an_error() {
        let err = run(strings(&["trian"])).unwrap_err();
        assert!(err.to_string().contains("unknown task `trian`"));
    }
}
