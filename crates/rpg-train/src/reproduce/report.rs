//! The report: a table per experiment and a verdict per claim, each with
//! the rule that decided it, written as markdown with PNG plots.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::plots::{Series, chart};
use super::stats::{MeanSd, epochs_to_reach, fit_line, welch_p};
use super::{ReproducePlan, Results, RunRow};
use crate::error::{Error, Result};
use crate::output::write_atomic;

/// A claim's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Holds,
    DoesNotHold,
    Mixed,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Holds => "**holds**",
            Verdict::DoesNotHold => "**does not hold**",
            Verdict::Mixed => "**mixed**",
        })
    }
}

/// Significant wins and losses of RPG against the others (Welch, p < 0.05).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    wins: usize,
    losses: usize,
    ties: usize,
}

impl Tally {
    /// Counts one comparison where larger `ours` is better.
    fn add(&mut self, ours: &[f64], theirs: &[f64]) -> Option<f64> {
        let p = welch_p(ours, theirs);
        let (a, b) = (MeanSd::of(ours), MeanSd::of(theirs));
        match (p, a, b) {
            (Some(p), Some(a), Some(b)) if p < 0.05 => {
                if a.mean > b.mean {
                    self.wins += 1
                } else {
                    self.losses += 1
                }
            }
            _ => self.ties += 1,
        }
        p
    }

    /// Holds with no loss and wins in at least half; fails with more
    /// losses than wins; mixed otherwise.
    fn verdict(&self) -> Verdict {
        let n = self.wins + self.losses + self.ties;
        if self.losses == 0 && n > 0 && 2 * self.wins >= n {
            Verdict::Holds
        } else if self.losses > self.wins {
            Verdict::DoesNotHold
        } else {
            Verdict::Mixed
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} significantly better, {} significantly worse, {} within noise",
            self.wins, self.losses, self.ties
        )
    }
}

fn pct(m: Option<MeanSd>) -> String {
    match m {
        Some(m) if m.n > 1 => format!("{:.2} ± {:.2}", 100.0 * m.mean, 100.0 * m.sd),
        Some(m) => format!("{:.2}", 100.0 * m.mean),
        None => "–".into(),
    }
}

fn p_text(p: Option<f64>) -> String {
    p.map_or("–".into(), |p| format!("{p:.3}"))
}

/// The rows of one cell.
fn select<'a>(
    runs: &'a [RunRow],
    dataset: &str,
    model: &str,
    arm: &str,
    ratio: f64,
) -> Vec<&'a RunRow> {
    runs.iter()
        .filter(|r| r.dataset == dataset && r.model == model && r.arm == arm && r.ratio == ratio)
        .collect()
}

fn accuracies(rows: &[&RunRow]) -> Vec<f64> {
    rows.iter().map(|r| r.accuracy).collect()
}

/// Writes the report and its plots.
pub(super) fn write(plan: &ReproducePlan, results: &Results) -> Result<()> {
    std::fs::create_dir_all(&plan.plots).map_err(Error::io(&plan.plots))?;
    let combos: Vec<(String, String)> = results
        .runs
        .iter()
        .map(|r| (r.dataset.clone(), r.model.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let plot_link = |name: &str| -> String {
        let rel = pathdiff(
            &plan.plots,
            plan.report.parent().unwrap_or(std::path::Path::new(".")),
        );
        format!("![{name}]({}/{name})", rel.trim_end_matches('/'))
    };
    let mut body = String::new();
    let mut verdicts: Vec<(&str, Verdict, String)> = Vec::new();

    // 1. Log-linear.
    let mut log_linear = Vec::new();
    writeln!(body, "## 1. Accuracy against DoF\n").ok();
    writeln!(body, "Claim: test accuracy grows log-linearly with the degrees of freedom. Per data set and model, RPG (paper placement) at every ratio and the dense model (ratio 1), every seed a point; the line is accuracy (points) against ln(DoF). Rule: **holds** where R² ≥ 0.9 and the slope's 95% interval excludes 0, **does not hold** where R² < 0.7 or the interval includes 0, **mixed** between.\n").ok();
    for (dataset, model) in &combos {
        let mut rows: Vec<&RunRow> = results
            .runs
            .iter()
            .filter(|r| {
                &r.dataset == dataset && &r.model == model && (r.arm == "paper" || r.arm == "dense")
            })
            .collect();
        rows.sort_by_key(|r| r.dof);
        let xs: Vec<f64> = rows.iter().map(|r| (r.dof as f64).ln()).collect();
        let ys: Vec<f64> = rows.iter().map(|r| 100.0 * r.accuracy).collect();
        let fit = fit_line(&xs, &ys);
        writeln!(body, "### {dataset}, {model}\n\n| DoF ratio | DoF | accuracy % (mean ± sd) | seeds |\n|---|---|---|---|").ok();
        let ratios: BTreeSet<u64> = rows.iter().map(|r| r.ratio.to_bits()).collect();
        let mut ratio_list: Vec<f64> = ratios.into_iter().map(f64::from_bits).collect();
        ratio_list.sort_by(f64::total_cmp);
        let mut means = Vec::new();
        for ratio in &ratio_list {
            let cell: Vec<&RunRow> = rows.iter().copied().filter(|r| r.ratio == *ratio).collect();
            let m = MeanSd::of(&accuracies(&cell));
            let dof = cell.first().map_or(0, |r| r.dof);
            writeln!(body, "| {ratio} | {dof} | {} | {} |", pct(m), cell.len()).ok();
            if let Some(m) = m {
                means.push(((dof as f64).ln(), 100.0 * m.mean));
            }
        }
        let verdict = match fit {
            Some(f) if f.r2 >= 0.9 && (f.slope_ci[0] > 0.0 || f.slope_ci[1] < 0.0) => {
                Verdict::Holds
            }
            Some(f) if f.r2 < 0.7 || (f.slope_ci[0] <= 0.0 && f.slope_ci[1] >= 0.0) => {
                Verdict::DoesNotHold
            }
            Some(_) => Verdict::Mixed,
            None => Verdict::Mixed,
        };
        if let Some(f) = fit {
            writeln!(body, "\nFit: {:.2} points per unit of ln(DoF) (95% interval {:.2} to {:.2}), R² = {:.3} over {} runs: {verdict}.\n", f.slope, f.slope_ci[0], f.slope_ci[1], f.r2, f.n).ok();
        }
        let name = format!("dof-{dataset}-{model}.png");
        let mut series = vec![
            Series {
                name: "runs".into(),
                points: xs.iter().copied().zip(ys.iter().copied()).collect(),
                line: false,
            },
            Series {
                name: "mean".into(),
                points: means,
                line: true,
            },
        ];
        if let Some(f) = fit {
            let (lo, hi) = (
                xs.first().copied().unwrap_or(0.0),
                xs.last().copied().unwrap_or(1.0),
            );
            series.push(Series {
                name: "fit".into(),
                points: vec![
                    (lo, f.slope * lo + f.intercept),
                    (hi, f.slope * hi + f.intercept),
                ],
                line: true,
            });
        }
        chart(
            &plan.plots.join(&name),
            &format!("{dataset}, {model}: accuracy against DoF"),
            "ln(DoF)",
            "test accuracy %",
            &series,
        )?;
        writeln!(body, "{}\n", plot_link(&name)).ok();
        log_linear.push(verdict);
    }
    verdicts.push((
        "Accuracy grows log-linearly with DoF",
        overall(&log_linear),
        format!(
            "{} of {} data set and model pairs hold",
            log_linear.iter().filter(|v| **v == Verdict::Holds).count(),
            log_linear.len()
        ),
    ));

    // 2. Equal DoF.
    let mut tally = Tally::default();
    writeln!(
        body,
        "## 2. Equal DoF: RPG against other ways to spend d parameters\n"
    )
    .ok();
    writeln!(body, "At DoF d: RPG (paper placement); hashed placement (HashedNets: every weight's entry and sign drawn independently); naive placement (even sampling, no permutation, no signs); the same architecture made narrower until it has about d parameters; the dense model magnitude-pruned to about d of its weights and fine-tuned for one epoch (pruned again after: `rpg compress` fine-tunes without a mask, so at 98% sparsity the second pruning undoes most of the fine-tuning; a masked fine-tune would be the stronger baseline, and the pruned column is its lower bound). p: Welch's two-sided t-test of RPG against each. Rule: **holds** with no significant loss and significant wins in at least half the comparisons, **does not hold** with more losses than wins, **mixed** otherwise.\n").ok();
    writeln!(body, "| data, model | d (ratio) | RPG | hashed (p) | naive (p) | narrow (p) | pruned (p) |\n|---|---|---|---|---|---|---|").ok();
    for (dataset, model) in &combos {
        let ratios: BTreeSet<u64> = results
            .runs
            .iter()
            .filter(|r| &r.dataset == dataset && &r.model == model && r.arm == "narrow")
            .map(|r| r.ratio.to_bits())
            .collect();
        for ratio in ratios.into_iter().map(f64::from_bits) {
            let ours = accuracies(&select(&results.runs, dataset, model, "paper", ratio));
            let mut cells = vec![pct(MeanSd::of(&ours))];
            for arm in ["hashed", "naive", "narrow", "pruned"] {
                let theirs = accuracies(&select(&results.runs, dataset, model, arm, ratio));
                let p = tally.add(&ours, &theirs);
                cells.push(format!("{} ({})", pct(MeanSd::of(&theirs)), p_text(p)));
            }
            writeln!(
                body,
                "| {dataset}, {model} | {ratio} | {} |",
                cells.join(" | ")
            )
            .ok();
        }
    }
    writeln!(body, "\nRPG: {}: {}.\n", tally.describe(), tally.verdict()).ok();
    verdicts.push((
        "RPG is the better way to spend d parameters",
        tally.verdict(),
        tally.describe(),
    ));

    // 3. Convergence.
    let mut conv = Tally::default();
    writeln!(body, "## 3. Convergence\n").ok();
    writeln!(body, "Test accuracy after each epoch (mean over seeds) and the epochs (interpolated) each run takes to reach 95% and 99% of its own final accuracy, for RPG at the focus ratio, the dense model and the narrow model of the same DoF. Fewer epochs is better; the verdict counts Welch comparisons of epochs to 95% and to 99% (RPG against dense and against narrow) with the rule of section 2.\n").ok();
    for (dataset, model) in &combos {
        let Some(focus) = focus_ratio(plan, model) else {
            continue;
        };
        writeln!(body, "| data, model | arm | accuracy % after each epoch | epochs to 95% | epochs to 99% |\n|---|---|---|---|---|").ok();
        let mut series = Vec::new();
        let mut reach: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
        for (arm, ratio) in [("paper", focus), ("dense", 1.0), ("narrow", focus)] {
            let rows = select(&results.runs, dataset, model, arm, ratio);
            let epochs = rows.iter().map(|r| r.curve.len()).min().unwrap_or(0);
            let mean_curve: Vec<f64> = (0..epochs)
                .map(|e| rows.iter().map(|r| r.curve[e]).sum::<f64>() / rows.len() as f64)
                .collect();
            let to = |q: f64| -> Vec<f64> {
                rows.iter()
                    .filter_map(|r| epochs_to_reach(&r.curve, q * r.accuracy))
                    .collect()
            };
            let (r95, r99) = (to(0.95), to(0.99));
            let fmt = |v: &[f64]| {
                MeanSd::of(v).map_or("–".into(), |m| format!("{:.2} ± {:.2}", m.mean, m.sd))
            };
            writeln!(
                body,
                "| {dataset}, {model} | {arm} {ratio} | {} | {} | {} |",
                mean_curve
                    .iter()
                    .map(|a| format!("{:.2}", 100.0 * a))
                    .collect::<Vec<_>>()
                    .join(", "),
                fmt(&r95),
                fmt(&r99)
            )
            .ok();
            series.push(Series {
                name: format!("{arm} {ratio}"),
                points: mean_curve
                    .iter()
                    .enumerate()
                    .map(|(i, a)| ((i + 1) as f64, 100.0 * a))
                    .collect(),
                line: true,
            });
            reach.push((r95, r99));
        }
        // Fewer epochs is better: compare negated.
        let neg = |v: &[f64]| v.iter().map(|x| -x).collect::<Vec<f64>>();
        for other in &reach[1..] {
            conv.add(&neg(&reach[0].0), &neg(&other.0));
            conv.add(&neg(&reach[0].1), &neg(&other.1));
        }
        let name = format!("convergence-{dataset}-{model}.png");
        chart(
            &plan.plots.join(&name),
            &format!("{dataset}, {model}: test accuracy per epoch"),
            "epoch",
            "test accuracy %",
            &series,
        )?;
        writeln!(body, "\n{}\n", plot_link(&name)).ok();
    }
    writeln!(
        body,
        "RPG converges faster: {}: {}.\n",
        conv.describe(),
        conv.verdict()
    )
    .ok();
    verdicts.push(("RPG converges faster", conv.verdict(), conv.describe()));

    // 4. Out of distribution.
    let mut ood = Tally::default();
    writeln!(body, "## 4. Out of distribution\n").ok();
    writeln!(body, "The same models on the test set rotated and with Gaussian pixel noise (`rpg_data::Shift`, deterministic). Since the in-distribution accuracies differ, the comparison is of the **drop** (in-distribution minus shifted, points; smaller is better), RPG against dense and against narrow, with the rule of section 2.\n").ok();
    writeln!(
        body,
        "| data, model | arm | in distribution | {} |\n|---|---|---|{}",
        results.shifts.join(" | "),
        "---|".repeat(results.shifts.len())
    )
    .ok();
    for (dataset, model) in &combos {
        let Some(focus) = focus_ratio(plan, model) else {
            continue;
        };
        let mut drops: Vec<Vec<Vec<f64>>> = Vec::new();
        for (arm, ratio) in [("paper", focus), ("dense", 1.0), ("narrow", focus)] {
            let rows: Vec<&RunRow> = select(&results.runs, dataset, model, arm, ratio)
                .into_iter()
                .filter(|r| r.shifted.len() == results.shifts.len())
                .collect();
            let per_shift: Vec<Vec<f64>> = (0..results.shifts.len())
                .map(|s| rows.iter().map(|r| r.accuracy - r.shifted[s]).collect())
                .collect();
            let cells: Vec<String> = (0..results.shifts.len())
                .map(|s| {
                    let acc: Vec<f64> = rows.iter().map(|r| r.shifted[s]).collect();
                    let drop = MeanSd::of(&per_shift[s])
                        .map_or("–".into(), |m| format!("{:.1}", 100.0 * m.mean));
                    format!("{} (drop {drop})", pct(MeanSd::of(&acc)))
                })
                .collect();
            writeln!(
                body,
                "| {dataset}, {model} | {arm} {ratio} | {} | {} |",
                pct(MeanSd::of(&accuracies(&rows))),
                cells.join(" | ")
            )
            .ok();
            drops.push(per_shift);
        }
        let neg = |v: &[f64]| v.iter().map(|x| -x).collect::<Vec<f64>>();
        for other in &drops[1..] {
            for s in 0..results.shifts.len() {
                ood.add(&neg(&drops[0][s]), &neg(&other[s]));
            }
        }
    }
    writeln!(
        body,
        "\nRPG degrades less under shift: {}: {}.\n",
        ood.describe(),
        ood.verdict()
    )
    .ok();
    verdicts.push((
        "RPG degrades less out of distribution",
        ood.verdict(),
        ood.describe(),
    ));

    // 5. Compression.
    writeln!(body, "## 5. Compression after training\n").ok();
    writeln!(body, "`rpg compress` of the RPG models at the focus ratio (no fine-tuning). Rule: **holds** where the int8 ring loses at most 0.5 point and half the ring pruned plus int8 at most 1 point, on every data set and model; **does not hold** where int8 alone loses more than 1 point anywhere; **mixed** otherwise.\n").ok();
    writeln!(body, "| data, model | setting | bytes (dense f32) | accuracy % before | after | lost (points) |\n|---|---|---|---|---|---|").ok();
    let mut comp = Verdict::Holds;
    let mut worst: std::collections::BTreeMap<String, f64> = Default::default();
    for (dataset, model) in &combos {
        let settings: Vec<String> = results
            .compressed
            .iter()
            .filter(|c| &c.dataset == dataset && &c.model == model)
            .map(|c| c.setting.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for setting in settings {
            let rows: Vec<_> = results
                .compressed
                .iter()
                .filter(|c| &c.dataset == dataset && &c.model == model && c.setting == setting)
                .collect();
            let before: Vec<f64> = rows.iter().map(|c| c.accuracy_before).collect();
            let after: Vec<f64> = rows.iter().map(|c| c.accuracy_after).collect();
            let lost = 100.0
                * (MeanSd::of(&before).map_or(0.0, |m| m.mean)
                    - MeanSd::of(&after).map_or(0.0, |m| m.mean));
            let (bytes, dense) = rows.first().map_or((0, 0), |c| (c.bytes, c.dense_bytes));
            writeln!(
                body,
                "| {dataset}, {model} | {setting} | {bytes} ({dense}) | {} | {} | {lost:.2} |",
                pct(MeanSd::of(&before)),
                pct(MeanSd::of(&after))
            )
            .ok();
            let w = worst.entry(setting.clone()).or_insert(f64::MIN);
            *w = w.max(lost);
            if setting == "int8 ring" && lost > 1.0 {
                comp = Verdict::DoesNotHold;
            } else if comp == Verdict::Holds
                && ((setting == "int8 ring" && lost > 0.5)
                    || (setting.contains("pruned + int8") && lost > 1.0))
            {
                comp = Verdict::Mixed;
            }
        }
    }
    if results.compressed.is_empty() {
        comp = Verdict::Mixed;
    }
    verdicts.push((
        "A trained RPG model can be pruned and quantized",
        comp,
        format!(
            "largest loss over the data sets and models, points: {}",
            worst
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    ));

    let mut doc = String::new();
    writeln!(doc, "# Results\n").ok();
    writeln!(doc, "Every number on this page was produced by `{}` (the runs, the plots and the raw figures in `results.json` beside the plots are regenerated by it; nothing here is typed by hand). Data: {}. Seeds: {:?}. Accuracies are on the test sets{}.\n", plan.command, plan.datasets.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>().join(", "), plan.seeds, plan.test_limit.map_or(String::new(), |n| format!(" (first {n} images)"))).ok();
    writeln!(
        doc,
        "## Verdicts\n\n| claim | verdict | evidence |\n|---|---|---|"
    )
    .ok();
    for (claim, verdict, evidence) in &verdicts {
        writeln!(doc, "| {claim} | {verdict} | {evidence} |").ok();
    }
    writeln!(doc, "\nWhat would change them: {} seeds per cell detect only differences of a few standard deviations (more seeds narrow the tests); MNIST-like data saturate near the top, where log-linear growth must bend (CIFAR- or ImageNet-scale data, as in the paper, are not available offline here); the short schedules favour whatever learns fastest.\n", plan.seeds.len()).ok();
    writeln!(doc, "## The grid\n\n| model | width | epochs | training images | DoF ratios | equal-DoF ratios | focus ratio |\n|---|---|---|---|---|---|---|").ok();
    for a in &plan.archs {
        writeln!(
            doc,
            "| {} | {} | {} | {} | {:?} | {:?} | {} |",
            a.model,
            a.width,
            a.epochs,
            a.train_limit.map_or("all".into(), |n| n.to_string()),
            a.ratios,
            a.baseline_ratios,
            a.focus_ratio
        )
        .ok();
    }
    writeln!(doc, "\nThe recipe is the trainer's default (SGD, lr 0.05, momentum 0.9, cosine, weight decay 5e-4, batch 128) with one warm-up epoch for every arm.\n").ok();
    writeln!(doc, "Why this grid: the full job must fit in about two hours on two CPU cores. LeNet-5 (no batch norm) trains an epoch of 60,000 images in a few seconds, so it gets every image and the widest sweep, down to 0.5% DoF (below that its 236 unshared biases leave the ring nothing). ResNet-20 (batch norm) at half width costs about twenty times more per image (about 1,600 against 30,000 images per second here), so it runs at half width on a share of the training images for fewer epochs; its batch norm parameters are unshared, which puts its smallest feasible ratio near 3%. The equal-DoF comparisons, curves, shifted test sets and compression use the focus ratio, where RPG is the paper's typical setting. Training time summed over the {} runs: {:.0} minutes (evaluations, pruning and compression come on top).\n", results.runs.iter().filter(|r| r.seconds > 0.0).count(), results.runs.iter().map(|r| r.seconds).sum::<f64>() / 60.0).ok();
    doc.push_str(&body);
    write_atomic(&plan.report, doc)
}

/// The ratio at which RPG, dense and narrow are compared: the plan's
/// focus ratio of `model`.
fn focus_ratio(plan: &ReproducePlan, model: &str) -> Option<f64> {
    plan.archs
        .iter()
        .find(|a| a.model == model)
        .map(|a| a.focus_ratio)
}

/// The overall verdict of per-pair verdicts.
fn overall(each: &[Verdict]) -> Verdict {
    if !each.is_empty() && each.iter().all(|v| *v == Verdict::Holds) {
        Verdict::Holds
    } else if !each.is_empty() && each.iter().all(|v| *v == Verdict::DoesNotHold) {
        Verdict::DoesNotHold
    } else {
        Verdict::Mixed
    }
}

/// `path` relative to `base` where it lies below it, else as given.
fn pathdiff(path: &std::path::Path, base: &std::path::Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}
