//! The GPU bundle's script, run on the CPU the way a GPU machine runs it
//! (`QUICK=1`): the self-test, rpg's benchmark and the main job work end to
//! end. (PyTorch's side runs where PyTorch is installed, as on the GPU
//! machines.)

use std::path::Path;
use std::process::Command;

#[test]
fn the_bundle_script_runs_its_steps_on_the_cpu() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let run = Command::new("bash")
        .arg(root.join("xtask/gpu-bundle/run.sh"))
        .arg("cpu")
        .env("RPG", env!("CARGO_BIN_EXE_rpg"))
        .env("OUT", out.path())
        .env("DATA_DIR", root.join("datasets/mnist"))
        .env("QUICK", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("failed steps: "))
        .unwrap_or_default();
    for step in ["selftest", "rpg_bench", "main_job"] {
        assert!(stdout.contains(&format!("== {step}")), "{stdout}");
        assert!(!failed.contains(step), "{step} failed: {stdout}");
    }
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.path().join(name)).unwrap()).unwrap()
    };
    let selftest = read("selftest.out");
    assert!(
        selftest
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["passed"] == true)
    );
    assert_eq!(read("rpg_bench.out").as_array().unwrap().len(), 2);
    assert!(out.path().join("main-job/summary.json").is_file());
    if !failed.is_empty() {
        // Only PyTorch's side may fail, and only where it is not installed.
        let torch = std::fs::read_to_string(out.path().join("torch.txt")).unwrap();
        assert!(torch.contains("No module named"), "{failed}: {stdout}");
    }
}
