//! Data-parallel training over MPI, run the way a user runs it: `mpirun -np
//! 2 rpg train ...` on this machine's cores (`--oversubscribe`, one thread a
//! rank). Built only with the `mpi` feature, which CI tests (.ci/run).
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// `mpirun` with `apps` (each `(processes, args of rpg)`), one thread a
/// rank, allowed as root (CI runs as root).
fn mpirun(apps: &[(usize, Vec<String>)]) -> Output {
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1");
    for (i, (n, args)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["--oversubscribe", "-x", "RAYON_NUM_THREADS", "-np"])
            .arg(n.to_string())
            .args(args);
    }
    cmd.output()
        .expect("run mpirun (install an MPI: libopenmpi-dev openmpi-bin)")
}

fn rpg_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [env!("CARGO_BIN_EXE_rpg"), "train", "--out"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(out.to_str().unwrap().into());
    args.extend(["--data-dir".into(), mnist().to_str().unwrap().into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Two ranks of batch 32 take the steps one process of batch 64 takes: the
/// same samples per step, gradients averaged. The sums run in another order
/// (each rank's mean, then the mean of the two), so the rings agree to
/// rounding, not bit for bit.
#[test]
fn two_ranks_train_as_one_process_with_the_same_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = [
        "--epochs",
        "1",
        "--train-limit",
        "512",
        "--test-limit",
        "200",
    ];
    let solo = dir.path().join("solo");
    let mut args = rpg_args(&solo, &recipe);
    args.extend(["--batch-size".into(), "64".into()]);
    ok(&mpirun(&[(1, args)]));
    let duo = dir.path().join("duo");
    let mut args = rpg_args(&duo, &recipe);
    args.extend(["--batch-size".into(), "32".into()]);
    ok(&mpirun(&[(2, args)]));
    assert_trained_alike(&solo, &duo);
    let (s, d) = (summary(&solo), summary(&duo));
    assert_eq!(s["test_images"], 200);
    assert_eq!(d["test_images"], 200);
    let accuracy = |v: &serde_json::Value| v["test_accuracy"].as_f64().unwrap();
    assert!((accuracy(&s) - accuracy(&d)).abs() <= 0.01, "{s} vs {d}");
}

/// Ranks that would train different things refuse before any step, every
/// one of them, and write nothing.
#[test]
fn ranks_with_different_seeds_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let recipe = [
        "--epochs",
        "1",
        "--train-limit",
        "128",
        "--test-limit",
        "100",
    ];
    let mut a = rpg_args(&run, &recipe);
    a.extend(["--seed".into(), "0".into()]);
    let mut b = rpg_args(&run, &recipe);
    b.extend(["--seed".into(), "1".into()]);
    let out = mpirun(&[(1, a), (1, b)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 1 of 2 has another configuration or data"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!run.join("checkpoints").exists());
}

/// A rank killed mid-run ends the whole job, promptly, and the last
/// checkpoint written stays readable.
#[test]
fn a_killed_rank_ends_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let recipe = [
        "--epochs",
        "5",
        "--train-limit",
        "20000",
        "--test-limit",
        "100",
    ];
    let mut killed = vec![
        "timeout".to_string(),
        "-s".into(),
        "KILL".into(),
        "3".into(),
    ];
    killed.extend(rpg_args(&run, &recipe));
    let started = Instant::now();
    let out = mpirun(&[(1, rpg_args(&run, &recipe)), (1, killed)]);
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the job took {:?} to end",
        started.elapsed()
    );
    if run.join("checkpoints/last").is_dir() {
        rpg_ok(&[
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--test-limit",
            "50",
        ]);
    }
}

/// A checkpoint does not depend on the number of ranks: a two-rank run
/// resumes with one process, and a one-process run with two ranks.
#[test]
fn runs_resume_across_world_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = [
        "--train-limit",
        "256",
        "--test-limit",
        "100",
        "--batch-size",
        "32",
    ];
    let duo = dir.path().join("duo");
    let mut args = rpg_args(&duo, &recipe);
    args.extend(["--epochs".into(), "1".into()]);
    ok(&mpirun(&[(2, args)]));
    rpg_ok(&["train", "--resume", duo.to_str().unwrap(), "--epochs", "2"]);
    assert_eq!(summary(&duo)["epochs"], 2);
    let solo = dir.path().join("solo");
    train_tiny(&solo, &["--epochs", "1", "--test-limit", "100"]);
    let resume = vec![
        env!("CARGO_BIN_EXE_rpg").to_string(),
        "train".into(),
        "--resume".into(),
        solo.to_str().unwrap().into(),
        "--epochs".into(),
        "2".into(),
    ];
    ok(&mpirun(&[(2, resume)]));
    assert_eq!(summary(&solo)["epochs"], 2);
}

/// Ctrl-C reaches every rank through mpirun and stops the job promptly.
#[test]
fn ctrl_c_stops_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let recipe = [
        "--epochs",
        "5",
        "--train-limit",
        "20000",
        "--test-limit",
        "100",
    ];
    let mut cmd = Command::new("mpirun");
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .args(["--oversubscribe", "-x", "RAYON_NUM_THREADS", "-np", "2"])
        .args(rpg_args(&run, &recipe))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut job = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // Safety: signalling a child process this test started.
    unsafe { libc::kill(job.id() as libc::pid_t, libc::SIGINT) };
    let interrupted = Instant::now();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            interrupted.elapsed() < Duration::from_secs(60),
            "the job still runs a minute after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    if run.join("checkpoints/last").is_dir() {
        rpg_ok(&[
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--test-limit",
            "50",
        ]);
    }
}
