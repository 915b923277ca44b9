//! `reproduce` end to end on tiny data: every experiment runs, the report
//! has a verdict per claim and its plots, and a second call reuses every
//! finished task instead of training again.

use std::path::Path;

use rpg_data::{DatasetKind, Shift};
use rpg_train::reproduce::{Arch, ReproducePlan, reproduce};

fn tiny_plan(dir: &Path) -> ReproducePlan {
    let mnist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
    let full = ReproducePlan::full(dir.join("runs"), dir.join("results.md"), dir.join("plots"));
    ReproducePlan {
        datasets: vec![(DatasetKind::Mnist, Some(mnist))],
        archs: vec![
            Arch {
                epochs: 2,
                train_limit: Some(256),
                ratios: vec![0.05, 0.1],
                baseline_ratios: vec![0.1],
                ..full.archs[0].clone()
            },
            Arch {
                width: 0.25,
                epochs: 1,
                train_limit: Some(64),
                ratios: vec![0.1, 0.3],
                baseline_ratios: vec![0.1],
                ..full.archs[1].clone()
            },
        ],
        seeds: vec![0, 1],
        test_limit: Some(100),
        shifts: vec![Shift::Rotate(30.0)],
        command: "the test".into(),
        ..full
    }
}

#[test]
fn every_experiment_runs_and_the_report_has_its_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let plan = tiny_plan(dir.path());
    let results = reproduce(&plan, &mut rpg_train::Silent).unwrap();
    for arm in ["dense", "paper", "hashed", "naive", "narrow", "pruned"] {
        for model in ["lenet5", "resnet20"] {
            let n = results
                .runs
                .iter()
                .filter(|r| r.arm == arm && r.model == model)
                .count();
            assert!(n >= 2, "{arm} {model}: {n} runs");
        }
    }
    // Curves per epoch, shifted accuracies on the compared models.
    let paper = results
        .runs
        .iter()
        .find(|r| r.arm == "paper" && r.model == "lenet5" && r.ratio == 0.1)
        .unwrap();
    assert_eq!(paper.curve.len(), 2);
    assert_eq!(paper.shifted.len(), 1);
    assert_eq!(results.compressed.len(), 2 * 2 * 4);
    let report = std::fs::read_to_string(&plan.report).unwrap();
    for claim in [
        "log-linearly",
        "better way to spend d parameters",
        "converges faster",
        "out of distribution",
        "pruned and quantized",
    ] {
        let line = report
            .lines()
            .find(|l| l.starts_with('|') && l.contains(claim))
            .unwrap_or_else(|| panic!("no verdict row for {claim}:\n{report}"));
        assert!(
            ["**holds**", "**does not hold**", "**mixed**"]
                .iter()
                .any(|v| line.contains(v)),
            "{line}"
        );
    }
    for plot in ["dof-mnist-lenet5.png", "convergence-mnist-resnet20.png"] {
        assert!(plan.plots.join(plot).is_file(), "{plot}");
    }
    // Everything is reused the second time: same numbers, no new training.
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let summary = plan
        .out
        .join("mnist/lenet5-w1/paper-dof0.1-seed0/summary.json");
    let before = stamp(&summary);
    let again = reproduce(&plan, &mut rpg_train::Silent).unwrap();
    assert_eq!(again.runs, results.runs);
    assert_eq!(again.compressed, results.compressed);
    assert_eq!(stamp(&summary), before);
}
