//! The GPU bundle's script, run on the CPU the way a GPU machine runs it
//! (`QUICK=1`): the self-test, rpg's benchmark and the main job work end to
//! end, the library search finds PyTorch's CUDA wheels, the step limits fit
//! the time budget, and everything comes back in one archive. (PyTorch's
//! side runs where PyTorch is installed, as on the GPU machines.)

use std::path::Path;
use std::process::Command;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_bundle_script_runs_its_steps_on_the_cpu_and_returns_one_archive() {
    let root = root();
    let out = tempfile::tempdir().unwrap();
    // PyTorch's wheels as they lie in site-packages: nvidia/<package>/lib.
    let wheels = tempfile::tempdir().unwrap();
    for package in ["cudnn", "cu13"] {
        std::fs::create_dir_all(wheels.path().join(package).join("lib")).unwrap();
    }
    let run = Command::new("bash")
        .arg(root.join("xtask/gpu-bundle/run.sh"))
        .arg("cpu")
        .env("RPG", env!("CARGO_BIN_EXE_rpg"))
        .env("OUT", out.path())
        .env("DATA_DIR", root.join("datasets/mnist"))
        .env("NVIDIA_ROOTS", wheels.path())
        .env("QUICK", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("failed steps: "))
        .unwrap_or_default();
    for step in [
        "selftest_f32",
        "main_job",
        "data_parallel",
        "rpg_bench",
        "selftest_tf32",
    ] {
        assert!(stdout.contains(&format!("== {step}")), "{stdout}");
        assert!(!failed.contains(step), "{step} failed: {stdout}");
    }
    // Exactly one file comes back.
    let back: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(back, ["results.tar.xz"], "{stdout}");
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xJf")
        .arg(out.path().join("results.tar.xz"))
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    let at = |name: &str| unpacked.path().join(name);
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(at(name)).unwrap()).unwrap()
    };
    for selftest in ["selftest_f32.out", "selftest_tf32.out"] {
        let rows = read(selftest);
        assert!(rows.as_array().unwrap().iter().all(|r| r["passed"] == true));
    }
    assert_eq!(read("rpg_bench.out").as_array().unwrap().len(), 2);
    assert!(at("main-job/summary.json").is_file());
    // Two ranks on one device train as one process with their global batch
    // (NCCL's runs need CUDA and are skipped here).
    let (two, one) = (
        read("host_two_ranks/summary.json"),
        read("one_process/summary.json"),
    );
    assert_eq!(two["test_accuracy"], one["test_accuracy"]);
    assert!(!at("nccl_two_ranks").exists());
    assert!(at("ldd.txt").is_file() && !at("rpg").exists());
    let path = std::fs::read_to_string(at("library-path.txt")).unwrap();
    for package in ["cudnn", "cu13"] {
        let lib = wheels.path().join(package).join("lib");
        assert!(path.lines().any(|l| Path::new(l) == lib), "{path}");
    }
    if !failed.is_empty() {
        // Only PyTorch's side may fail, and only where it is not installed.
        let torch = std::fs::read_to_string(at("torch.txt")).unwrap();
        assert!(torch.contains("No module named"), "{failed}: {stdout}");
    }
}

/// The steps' limits add up to the script's budget at most, so one call
/// on a GPU machine (10 minutes, start and packing included) finishes.
#[test]
fn the_step_limits_fit_the_time_budget() {
    let script = std::fs::read_to_string(root().join("xtask/gpu-bundle/run.sh")).unwrap();
    let budget: u64 = script
        .lines()
        .find_map(|l| l.strip_prefix("budget="))
        .and_then(|v| v.trim().parse().ok())
        .expect("a budget= line");
    let limits: Vec<u64> = script
        .lines()
        .filter_map(|l| l.strip_prefix("step "))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert!(limits.len() >= 5, "{limits:?}");
    let total: u64 = limits.iter().sum();
    assert!(
        total <= budget,
        "steps take up to {total}s, over the {budget}s budget"
    );
    assert!(
        budget <= 7 * 60,
        "a budget of {budget}s leaves no room in a 10-minute call"
    );
}
