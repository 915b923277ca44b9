//! Data-parallel training over TCP, as torchrun starts it: each process
//! gets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`
//! (here set by the test, as `torchrun --no-python --nproc-per-node 2 rpg
//! train ...` sets them). The default build: no MPI needed.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A port nobody listens on now (MASTER_PORT; rpg listens on the next).
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 65000 && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
}

/// Rank `rank` of `world`, training into `out` with `extra` flags.
fn rank(rank: usize, world: usize, port: u16, out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rpg"))
        .args(["train", "--out", out.to_str().unwrap(), "--data-dir"])
        .arg(mnist())
        .args(extra)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("RAYON_NUM_THREADS", "1")
        .env("RPG_COLLECTIVE_TIMEOUT", "60")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Two ranks of batch 32 train as one process of batch 64 (the samples of
/// each step are the same; the means are taken in another order).
#[test]
fn two_ranks_over_tcp_train_as_one_process() {
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
    let mut args = recipe.to_vec();
    args.extend(["--batch-size", "64"]);
    train_tiny_exact(&solo, &args);
    let duo = dir.path().join("duo");
    let port = free_port();
    let mut args = recipe.to_vec();
    args.extend(["--batch-size", "32"]);
    let children: Vec<Child> = (0..2).map(|r| rank(r, 2, port, &duo, &args)).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_trained_alike(&solo, &duo);
}

/// `rpg train` with exactly these flags (no train limit of its own).
fn train_tiny_exact(out: &Path, args: &[&str]) {
    let mut all = vec!["train", "--out", out.to_str().unwrap()];
    let data = mnist();
    all.extend(["--data-dir", data.to_str().unwrap()]);
    all.extend(args);
    rpg_ok(&all);
}

/// A rank that dies ends the other with an error naming it, promptly; one
/// with another seed is refused by both before any step.
#[test]
fn a_dead_rank_or_another_seed_stops_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let port = free_port();
    // Long enough that the root cannot finish before the leaf is killed
    // (5 epochs took about 3 s once LeNet-5 got faster, and the root then
    // ended cleanly, failing the test); the kill ends it after 3 s anyway.
    let long = [
        "--epochs",
        "500",
        "--train-limit",
        "20000",
        "--test-limit",
        "100",
    ];
    let root = rank(0, 2, port, &run, &long);
    let mut leaf = rank(1, 2, port, &run, &long);
    std::thread::sleep(Duration::from_secs(3));
    leaf.kill().unwrap();
    leaf.wait().unwrap();
    let killed_at = Instant::now();
    let out = root.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // The status too: a rank ended by a signal writes nothing.
    assert!(
        stderr.contains("rank 1 is gone"),
        "{:?}: {stderr}",
        out.status
    );
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "{:?}",
        killed_at.elapsed()
    );

    let other = dir.path().join("other");
    let port = free_port();
    let short = [
        "--epochs",
        "1",
        "--train-limit",
        "128",
        "--test-limit",
        "100",
    ];
    let a = rank(0, 2, port, &other, &[&short[..], &["--seed", "0"]].concat());
    let b = rank(1, 2, port, &other, &[&short[..], &["--seed", "1"]].concat());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("another configuration or data"), "{stderr}");
    }
    assert!(!other.join("checkpoints").exists());
}

/// Only `rpg train` runs as several processes: the ranks of another
/// command would each write the same outputs.
#[test]
fn other_commands_refuse_to_run_as_ranks() {
    let out = Command::new(env!("CARGO_BIN_EXE_rpg"))
        .args(["sweep", "--ratios", "0.1"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("only `rpg train` runs as several processes"),
        "{stderr}"
    );
}
