//! `cargo xtask`: the project's task runner.
//!
//! Deliberately thin: it knows no Candle and no rpg crate. Model work
//! (`train`, `eval`, `predict`, `models`, `compress`, `export`, `bench`, `sweep`, `selftest`) is forwarded to a release build of the `rpg` binary (crate `rpg-cli`), so heavy
//! code always runs optimised and with the backend the user asked for:
//!
//! ```text
//! cargo xtask train --epochs 3 --features cuda
//!   => cargo run --release -p rpg-cli --bin rpg --features cuda -- train --epochs 3
//! ```

mod cuda;
mod vendor;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const HELP: &str = "\
cargo xtask: tasks of the rpg workspace

USAGE:
    cargo xtask <TASK> [ARGS...] [--features F1,F2]

TASKS forwarded to `rpg` (a release build of crates/rpg-cli; `cargo xtask <TASK> --help` explains each):
    train       train an RPG (or dense) model; with no flags: LeNet-5 at 10% DoF on the bundled MNIST;
                --nproc N: N data-parallel ranks on this machine through mpirun (the `mpi` build)
    eval        evaluate a checkpoint on a dataset
    predict     top classes of your own images (PNG/JPEG files, folders, IDX files)
    models      list the model zoo with parameter counts and default shared fraction
    compress    prune and quantize a trained model into a small artifact, with a report
    export      write the dense model as safetensors (torchvision/timm names) or ONNX (--format onnx)
    bench       training/inference images/s dense vs RPG, generation share, peak memory (--json);
                --against-pytorch [--runs N]: PyTorch's same benchmark alternately in the same run
                (installed from PyPI into .venv-pytorch/ on first use), ratios per row;
                timed steps: --steps, else 200 for the MNIST models and 10 for the ResNets
    sweep       train one architecture at a list of DoF ratios: sweep.csv, fit.json, sweep.png
    selftest    one training step of every zoo model on a device against the CPU reference
    reproduce   the paper's claims on MNIST and Fashion-MNIST (apt-get install dataset-fashion-mnist),
                three seeds: DoF sweep, equal-DoF baselines, convergence, shifted test sets,
                compression; writes docs/results.md (a verdict per claim) and docs/results/*.png;
                resumable (runs/reproduce/); --quick: a reduced grid in minutes, report in its out dir

TASKS run here:
    bench-core  criterion benchmark of rpg-core's generate/accumulate kernels (ResNet-18 scale)
    gpu-bundle  write target/gpu-bundle/ (what fits beside the project's files in a GPU machine's
                64 MB copy): the stripped, xz-packed CUDA build of rpg, run.sh and PyTorch's
                benchmark; on a GPU machine `bash run.sh` runs the f32 self-test, the main job and
                rpg bench against PyTorch in about 7 minutes and packs the results into one file
                (docs/cuda.md; --binary PATH packs another build)
    onnx-check  export lenet5, resnet20, resnet18, mobilenet_v2 and vit_tiny to ONNX and run them in
                ONNX Runtime (PyPI, into .venv-onnx/ on first use) against rpg's logits, and the
                convolutional ones as int8 QDQ on ONNX Runtime's integer kernels (--models A,B)
    fuzz        mutation-fuzz every file reader (IDX, gzip, CIFAR, images, model files, artifacts,
                optimizer state): 1 million executions, no panic, no allocation over 1 GiB
                (--iterations N, --seed S; panicking inputs land in target/fuzz-crashes/)
    data fashion-mnist  install Fashion-MNIST from Debian (apt-get install dataset-fashion-mnist, as
                root) into /usr/share/datasets/fashion-mnist/, which rpg reads when
                datasets/fashion-mnist/ is absent; says what to run where it cannot
    vendor-check  the vendored candle-core is the published 0.11.1 (its SHA-256 recorded in
                vendor/candle-core/SHA256SUMS) plus backprop.diff, file for file
    ci          what CI runs: fmt check, clippy -D warnings, the test suite
    cuda-toolchain  install the pinned CUDA 13.0 compiler and libraries from PyPI into
                .cuda-toolchain/ (project-local, 1.6 GB with cuDNN), plus libcuda and libnccl link stubs; no GPU needed
    cuda-build  build target/cuda/release/rpg with --features cudnn,nccl (CUDA, cuDNN convolutions, NCCL)
                against that toolchain (or a system CUDA when CUDA_ROOT is set); the binary runs on
                machines with an NVIDIA driver and cuDNN 9

OPTIONS:
    --features F    cargo features for the rpg build (cuda, cudnn, metal, mkl, accelerate)
    -h, --help      this text
";

/// What `cargo xtask bench` adds to `rpg bench`.
const BENCH_HELP: &str = "cargo xtask bench [--features F] [FLAGS]: builds rpg (release) and runs `rpg bench FLAGS`.
xtask's own flags:
    --against-pytorch   PyTorch's same benchmark alternately in the same run (installed from PyPI into .venv-pytorch/ on first use)
    --runs N            with --against-pytorch: alternating runs per model [default: 3]
    --features F        cargo features for the rpg build (cuda, cudnn, metal, mkl, accelerate)
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
        "bench" if rest.iter().any(|a| a == "-h" || a == "--help") => {
            // xtask's own flags first; `rpg bench --help` lists the rest.
            println!("{BENCH_HELP}");
            let mut help = rpg_cargo("run", features.as_deref())?;
            help.args(["--quiet", "--", "bench", "--help"]);
            status(help)
        }
        "train"
            if rest
                .iter()
                .any(|a| a == "--nproc" || a.starts_with("--nproc=")) =>
        {
            train_ranks(&rest, features.as_deref())
        }
        "bench" if rest.iter().any(|a| a == "--against-pytorch") => {
            against_pytorch(&rest, features.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        "train" | "eval" | "predict" | "models" | "compress" | "export" | "bench" | "sweep"
        | "selftest" | "reproduce" => {
            let features = features.as_deref();
            if features.is_some_and(is_cuda) && !cuda::driver_available() {
                // A CUDA build links the driver library; without it the
                // binary cannot even start. Build, then say so.
                let mut build = rpg_cargo("build", features)?;
                build.arg("--quiet");
                if status(build)? != ExitCode::SUCCESS {
                    bail!("the CUDA build failed");
                }
                bail!(
                    "built {CUDA_TARGET_DIR}/release/rpg with CUDA, but this machine has no NVIDIA driver \
                     (libcuda.so.1 not found), so it cannot run here; run without --features cuda, \
                     or copy the binary to a GPU machine (docs/cuda.md)"
                );
            }
            // The build shows its progress (a fresh clone compiles for
            // several minutes); the run itself is quiet.
            eprintln!("building rpg (release) if needed; the first build takes several minutes...");
            if status(rpg_cargo("build", features)?)? != ExitCode::SUCCESS {
                bail!("building rpg failed (see above)");
            }
            let mut cmd = rpg_cargo("run", features)?;
            cmd.arg("--quiet").arg("--").arg(task).args(&rest);
            status(cmd)
        }
        "cuda-toolchain" => {
            cuda::install(&project_root(), cargo)?;
            let root = cuda::cuda_root(&project_root());
            println!("CUDA_ROOT={}", root.display());
            Ok(ExitCode::SUCCESS)
        }
        "cuda-build" => {
            // cuDNN serves the convolutions (forward and both gradients);
            // NCCL exchanges data-parallel gradients between GPUs.
            let features = match &features {
                Some(f) => format!("cudnn,nccl,{f}"),
                None => "cudnn,nccl".to_string(),
            };
            let mut cmd = rpg_cargo("build", Some(&features))?;
            cmd.args(&rest);
            status(cmd)
        }
        "gpu-bundle" => {
            gpu_bundle(&rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "onnx-check" => {
            onnx_check(&rest)?;
            Ok(ExitCode::SUCCESS)
        }
        "data" => data(&rest),
        "vendor-check" => {
            vendor::check(&project_root(), cargo)?;
            Ok(ExitCode::SUCCESS)
        }
        "fuzz" => {
            let mut cmd = cargo();
            cmd.args(["run", "--release", "--quiet", "-p", "rpg-fuzz", "--"])
                .args(&rest);
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

/// The models `rpg bench` and `train_step.py` run when none is given.
const BENCH_MODELS: [&str; 4] = ["mlp", "lenet5", "resnet20", "resnet18_cifar"];

/// `cargo xtask bench --against-pytorch [--runs N] [bench flags]`: runs
/// `rpg bench --json` and `benches/pytorch/train_step.py` alternately, N
/// times each (default 3), on this machine's cores, then prints ours /
/// PyTorch per row (`benches/pytorch/compare.py`). The two sides of a
/// ratio are measured one model at a time, back to back, and which side
/// goes first alternates: this machine's speed drifts over minutes, so a
/// ratio whose sides were minutes apart measured the drift as much as the
/// code.
fn against_pytorch(args: &[String], features: Option<&str>) -> Result<()> {
    let root = project_root();
    let mut runs = 3usize;
    let mut bench_args = Vec::new();
    let mut torch_args = Vec::new();
    let mut models: Vec<String> = BENCH_MODELS.iter().map(|m| m.to_string()).collect();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--against-pytorch" => {}
            "--runs" => {
                runs = iter
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .context("--runs takes a positive number")?;
            }
            "--model" => {
                let value = iter.next().context("--model needs a value")?;
                models = vec![value.clone()];
            }
            "--batch-size" | "--steps" | "--device" => {
                let value = iter
                    .next()
                    .with_context(|| format!("{arg} needs a value"))?;
                bench_args.extend([arg.clone(), value.clone()]);
                torch_args.extend([arg.clone(), value.clone()]);
            }
            other => {
                bail!("`{other}` is not a flag of bench --against-pytorch (see cargo xtask --help)")
            }
        }
    }
    let steps_given = bench_args.iter().any(|a| a == "--steps");
    let python = python_venv(
        &root.join(".venv-pytorch"),
        &["torch", "numpy"],
        "torch",
        "PyTorch (about 3 GB, once)",
    )?;
    if status(rpg_cargo("build", features)?)? != ExitCode::SUCCESS {
        bail!("building rpg failed (see above)");
    }
    let rpg = if features.is_some_and(is_cuda) {
        root.join(CUDA_TARGET_DIR).join("release/rpg")
    } else {
        root.join("target/release/rpg")
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = root.join("target/bench-vs-pytorch");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut files = Vec::new();
    for run in 1..=runs {
        let (mut ours_files, mut theirs_files) = (Vec::new(), Vec::new());
        for (index, model) in models.iter().enumerate() {
            let ours = out.join(format!("rpg-{run}-{model}.json"));
            let theirs = out.join(format!("pytorch-{run}-{model}.json"));
            let steps = (!steps_given).then(|| ["--steps", default_steps(model)]);
            let mut ours_command = Command::new(&rpg);
            ours_command.args(["bench", "--json", "--model", model]);
            ours_command.args(&bench_args).args(steps.iter().flatten());
            let mut theirs_command = Command::new(&python);
            theirs_command.arg(root.join("benches/pytorch/train_step.py"));
            theirs_command.args(["--threads", &threads.to_string(), "--model", model]);
            theirs_command
                .args(&torch_args)
                .args(steps.iter().flatten());
            let mut sides = [
                (ours_command, &ours, "rpg bench".to_string()),
                (
                    theirs_command,
                    &theirs,
                    format!("PyTorch ({threads} threads)"),
                ),
            ];
            if (run + index) % 2 == 0 {
                sides.reverse();
            }
            for (command, path, what) in sides {
                eprintln!("run {run}/{runs}, {model}: {what}");
                run_to_file(command, path, &what)?;
            }
            ours_files.push(ours.display().to_string());
            theirs_files.push(theirs.display().to_string());
        }
        files.extend([ours_files.join(","), theirs_files.join(",")]);
    }
    let compare = Command::new(&python)
        .arg(root.join("benches/pytorch/compare.py"))
        .args(&files)
        .status()
        .context("running compare.py")?;
    if !compare.success() {
        bail!("compare.py failed");
    }
    println!("(raw results in {})", out.display());
    Ok(())
}

/// Timed steps per case, both sides, unless `--steps` is given: half a
/// second of steps or more. The MLP's step is 3 ms, so a median of 10
/// swung between 0.90 and 1.18 of PyTorch's in two sets of one day; with
/// 200, 1.42 and 1.71 (2026-12-01). The ResNets' steps are 0.3-1 s.
fn default_steps(model: &str) -> &'static str {
    match model {
        "mlp" | "lenet5" => "200",
        _ => "10",
    }
}

/// Runs `command` and writes its standard output to `path`; `what` names
/// it if it fails.
fn run_to_file(mut command: Command, path: &std::path::Path, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    std::fs::write(path, &output.stdout).with_context(|| format!("writing {}", path.display()))
}

/// `cargo xtask data fashion-mnist`: Debian's package, where apt-get can
/// install it (as root); otherwise what to run.
fn data(args: &[String]) -> Result<ExitCode> {
    const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";
    match args {
        [name] if name == "fashion-mnist" => {}
        _ => bail!(
            "usage: cargo xtask data fashion-mnist (MNIST is bundled in datasets/mnist; \
             CIFAR: datasets/README.md)"
        ),
    }
    if std::path::Path::new(SYSTEM_DIR).is_dir() {
        println!("Fashion-MNIST is installed in {SYSTEM_DIR}");
        return Ok(ExitCode::SUCCESS);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root || Command::new("apt-get").arg("--version").output().is_err() {
        bail!(
            "installing Fashion-MNIST needs Debian's apt-get as root: run \
             `sudo apt-get install dataset-fashion-mnist`, or put the four IDX files in \
             datasets/fashion-mnist/ (datasets/README.md)"
        );
    }
    let apt_get = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args);
        status(cmd)
    };
    let install = [
        "install",
        "-y",
        "--no-install-recommends",
        "dataset-fashion-mnist",
    ];
    if apt_get(&install)? != ExitCode::SUCCESS {
        // The package lists may be stale.
        apt_get(&["update"])?;
        if apt_get(&install)? != ExitCode::SUCCESS {
            bail!("apt-get could not install dataset-fashion-mnist");
        }
    }
    println!("Fashion-MNIST installed in {SYSTEM_DIR}");
    Ok(ExitCode::SUCCESS)
}

/// A project-local virtual environment at `venv` holding `packages` from
/// PyPI (installed on first use, when `import module` fails); returns its
/// python.
fn python_venv(
    venv: &std::path::Path,
    packages: &[&str],
    module: &str,
    what: &str,
) -> Result<std::path::PathBuf> {
    let python = venv.join("bin/python");
    let has_module = || {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_module() {
        return Ok(python);
    }
    println!("installing {what} from PyPI into {}...", venv.display());
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(venv)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        bail!(
            "python3 -m venv {} failed: is Python 3 with venv installed?",
            venv.display()
        );
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .status()
        .context("running pip")?;
    if !pip.success() || !has_module() {
        bail!(
            "pip could not install {} into {}; is PyPI reachable?",
            packages.join(" "),
            venv.display()
        );
    }
    Ok(python)
}

/// What `cargo xtask onnx-check` checks by default: the issue's five.
const ONNX_CHECK_MODELS: &str = "lenet5,resnet20,resnet18,mobilenet_v2,vit_tiny";

/// `cargo xtask onnx-check [--models A,B]`: RPG model files and rpg's
/// logits from the onnx_fixtures example, `rpg export` of each to ONNX,
/// then ONNX Runtime (PyPI, in .venv-onnx/) runs every graph and compares
/// (`benches/onnx/check_onnxruntime.py`).
fn onnx_check(args: &[String]) -> Result<()> {
    let models = match args {
        [] => ONNX_CHECK_MODELS.to_string(),
        [flag, models] if flag == "--models" => models.clone(),
        _ => bail!("usage: cargo xtask onnx-check [--models MODEL[,MODEL...]]"),
    };
    let root = project_root();
    let python = python_venv(
        &root.join(".venv-onnx"),
        &["onnxruntime==1.32.0", "numpy"],
        "onnxruntime",
        "ONNX Runtime",
    )?;
    let out = root.join("target/onnx-check");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    eprintln!("building rpg and the onnx_fixtures example (release) if needed...");
    let mut build = rpg_cargo("build", None)?;
    build.args(["--example", "onnx_fixtures"]);
    if status(build)? != ExitCode::SUCCESS {
        bail!("building rpg failed (see above)");
    }
    let fixtures = Command::new(root.join("target/release/examples/onnx_fixtures"))
        .arg(&out)
        .arg(&models)
        .status()
        .context("running onnx_fixtures")?;
    if !fixtures.success() {
        bail!("onnx_fixtures failed (see above)");
    }
    let mut dirs = Vec::new();
    for model in models.split(',') {
        let dir = out.join(model);
        let export = Command::new(root.join("target/release/rpg"))
            .arg("export")
            .arg("--checkpoint")
            .arg(dir.join("model.safetensors"))
            .arg("--out")
            .arg(dir.join("model.onnx"))
            .status()
            .context("running rpg export")?;
        if !export.success() {
            bail!("rpg export --format onnx failed for {model} (see above)");
        }
        dirs.push(dir);
    }
    let check = Command::new(&python)
        .arg(root.join("benches/onnx/check_onnxruntime.py"))
        .args(&dirs)
        .status()
        .context("running check_onnxruntime.py")?;
    if !check.success() {
        bail!("ONNX Runtime does not reproduce rpg's logits (see above)");
    }
    Ok(())
}

/// What a GPU machine's copy of the working tree may hold in all: the
/// files git tracks (or would), and the carried bundle.
const TRAVEL_LIMIT: u64 = 64 * 1024 * 1024;

/// Room kept free below [`TRAVEL_LIMIT`] for what changes before the call.
const TRAVEL_MARGIN: u64 = 1024 * 1024;

/// Bytes of the files that travel with the working tree: tracked ones and
/// untracked ones git does not ignore.
fn travelling_bytes(root: &std::path::Path) -> Result<u64> {
    let listed = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output()
        .context("running git ls-files (the bundle's room depends on what travels)")?;
    if !listed.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&listed.stderr).trim()
        );
    }
    Ok(listed
        .stdout
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .filter_map(|name| {
            std::fs::metadata(root.join(String::from_utf8_lossy(name).as_ref())).ok()
        })
        .map(|m| m.len())
        .sum())
}

/// `cargo xtask gpu-bundle [--binary PATH]`: packs the CUDA binary (or
/// PATH), run.sh and PyTorch's benchmark into target/gpu-bundle/.
fn gpu_bundle(args: &[String]) -> Result<()> {
    let root = project_root();
    let binary = match args {
        [] => root.join(CUDA_TARGET_DIR).join("release/rpg"),
        [flag, path] if flag == "--binary" => path.into(),
        _ => bail!("usage: cargo xtask gpu-bundle [--binary PATH]"),
    };
    if !binary.is_file() {
        bail!(
            "{} does not exist: build it with `cargo xtask cuda-toolchain && cargo xtask cuda-build`, or give --binary PATH",
            binary.display()
        );
    }
    let out = root.join("target/gpu-bundle");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let stripped = out.join("rpg");
    std::fs::copy(&binary, &stripped).with_context(|| format!("copying {}", binary.display()))?;
    // Debug info is most of the binary; without `strip` it is packed as is.
    let _ = Command::new("strip").arg(&stripped).status();
    let packed = Command::new("xz")
        .args(["-9", "-T0", "-f"])
        .arg(&stripped)
        .status()
        .context("running xz (install it, e.g. `apt-get install xz-utils`)")?;
    if !packed.success() {
        bail!("xz failed on {}", stripped.display());
    }
    for (from, to) in [
        ("xtask/gpu-bundle/run.sh", "run.sh"),
        ("xtask/gpu-bundle/data_parallel.sh", "data_parallel.sh"),
        ("benches/pytorch/train_step.py", "train_step.py"),
        ("benches/pytorch/compare.py", "compare.py"),
    ] {
        std::fs::copy(root.join(from), out.join(to)).with_context(|| format!("copying {from}"))?;
    }
    let size: u64 = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    let sources = travelling_bytes(&root)?;
    let room = TRAVEL_LIMIT.saturating_sub(sources + TRAVEL_MARGIN);
    if size > room {
        bail!(
            "the bundle is {size} bytes, but a GPU machine's copy holds {TRAVEL_LIMIT} bytes in all \
             and the project's files take {sources}: {room} bytes are left (strip the binary, \
             or remove large untracked files)"
        );
    }
    println!(
        "wrote {} ({:.1} MB; with the project's {:.1} MB, {:.1} MB of the {:.0} MB a GPU machine's copy holds): \
         carry it to the GPU machine and run `bash target/gpu-bundle/run.sh cuda` from the repository root; \
         the results come back as one file, OUT/results.tar.xz",
        out.display(),
        size as f64 / 1e6,
        sources as f64 / 1e6,
        (size + sources) as f64 / 1e6,
        TRAVEL_LIMIT as f64 / 1e6
    );
    Ok(())
}

fn is_cuda(features: &str) -> bool {
    features.contains("cuda") || features.contains("cudnn")
}

/// `cargo <verb>` of the release `rpg` binary with `features`. A CUDA build
/// needs nvcc, gets the toolchain's environment, and has its own target dir:
/// switching features back and forth would otherwise rebuild Candle each time.
fn rpg_cargo(verb: &str, features: Option<&str>) -> Result<Command> {
    let mut cmd = cargo();
    cmd.args([verb, "--release", "-p", "rpg-cli", "--bin", "rpg"]);
    if let Some(features) = features {
        cmd.args(["--features", features]);
        if is_cuda(features) {
            require_nvcc()?;
            cmd.args(["--target-dir", CUDA_TARGET_DIR]);
            cuda::apply_env(&mut cmd, &project_root());
        }
    }
    Ok(cmd)
}

/// Target directory of CUDA builds.
const CUDA_TARGET_DIR: &str = "target/cuda";

fn require_nvcc() -> Result<()> {
    if !cuda::nvcc_available(&project_root()) {
        bail!(
            "the cuda feature needs nvcc to build: run `cargo xtask cuda-toolchain` once \
             (installs CUDA 13.0 from PyPI into {}/), or set CUDA_ROOT and PATH to a CUDA install",
            cuda::TOOLCHAIN_DIR
        );
    }
    Ok(())
}

/// Pulls `--features X` / `--features=X` out of the arguments.
/// `cargo xtask train --nproc N [flags]`: N ranks of a data-parallel run on
/// this machine, through `mpirun` (the `mpi` build of rpg): each rank's
/// lines are prefixed with its rank, and one rank failing stops them all.
fn train_ranks(args: &[String], features: Option<&str>) -> Result<ExitCode> {
    let mut nproc = None;
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let value = if arg == "--nproc" {
            Some(
                iter.next()
                    .context("--nproc needs a number of processes")?
                    .clone(),
            )
        } else {
            arg.strip_prefix("--nproc=").map(str::to_string)
        };
        match value {
            Some(v) => {
                nproc = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .with_context(|| {
                            format!("--nproc {v}: give a positive number of processes")
                        })?,
                )
            }
            None => rest.push(arg.clone()),
        }
    }
    let nproc = nproc.expect("called with --nproc");
    if Command::new("mpirun").arg("--version").output().is_err() {
        bail!(
            "--nproc runs the ranks with mpirun, which is not installed: \
             `apt-get install libopenmpi-dev openmpi-bin libclang-dev` (docs/distributed.md)"
        );
    }
    let features = match features {
        Some(f) if f.split(',').any(|x| x == "mpi") => f.to_string(),
        Some(f) => format!("mpi,{f}"),
        None => "mpi".to_string(),
    };
    eprintln!("building rpg (release, features {features}) if needed...");
    if status(rpg_cargo("build", Some(&features))?)? != ExitCode::SUCCESS {
        bail!("building rpg with MPI failed (see above; it needs an MPI and libclang)");
    }
    let dir = if is_cuda(&features) {
        CUDA_TARGET_DIR
    } else {
        "target"
    };
    let binary = project_root().join(dir).join("release/rpg");
    let mut cmd = Command::new("mpirun");
    cmd.current_dir(project_root())
        // As root (containers, CI) OpenMPI wants to be told.
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .args(["--oversubscribe", "--tag-output", "-np"])
        .arg(nproc.to_string())
        .arg(binary)
        .arg("train")
        .args(&rest);
    status(cmd)
}

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
